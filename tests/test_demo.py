"""`make demo` without a display (what CI and a fresh clone see): the firmware plays its scripted
sale through pcscd, the modem and the host simulators, and leaves a screenshot of every screen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.pcscd


def test_the_demo_plays_a_sale_and_writes_every_screen() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-m", "sim.demo"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "screen APPROVED 42.50 EUR" in out
    assert "TOTAL                  42,50 EUR" in out and "Signature" in out  # the receipt
    assert "0200 STAN 000001" in out and " 00 " in out  # booked by the host
    assert "4761739001010010" not in out  # the PAN never printed in clear
    # the back office's view, through the demo's broker: the terminal stopped, its last figures kept
    assert "TPE-DEMO-01              offline" in out and '"cause": "stopped"' in out
    assert '"ticket": {"seq": 1' in out and 'last_payment     "' in out
    shots = sorted(p.name for p in (ROOT / "out" / "demo").glob("*.png"))
    assert {"idle", "askpin", "outcome", "askreceipt"} <= {name.split("-", 1)[1][:-4] for name in shots}
