"""`tpe saf status`: what waits for the host, read from the encrypted queue in the state folder."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

from firmware.keystore import Keystore
from firmware.saf_queue import FILE_NAME, SafQueue

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "firmware" / "defaults" / "terminal.toml"


def tpe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def config_with_state(tmp_path: Path) -> Path:
    path = tmp_path / "terminal.toml"
    path.write_text(DEFAULT_CONFIG.read_text() + '\n[state]\nfolder = "state"\n')
    return path


def test_status_counts_and_sums_what_waits(tmp_path: Path) -> None:
    config = config_with_state(tmp_path)
    state = tmp_path / "state"
    queue = SafQueue(state / FILE_NAME, Keystore.open(state))
    at = datetime.datetime(2026, 11, 26, 9, 30, tzinfo=datetime.UTC)
    queue.add("advice", {"stan": 1}, amount=1250, currency=978, created=at)
    queue.add("advice", {"stan": 2}, amount=800, currency=978, created=at + datetime.timedelta(minutes=5))
    queue.add("reversal", {"stan": 3}, amount=4000, currency=978, created=at + datetime.timedelta(minutes=9))
    result = tpe("saf", "status", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["count"] == 3
    assert status["amount_per_currency"] == {"EUR": 2050}  # offline approvals, not reversals
    assert status["oldest"].startswith("2026-11-26T09:30")
    text = tpe("saf", "status", "--config", str(config)).stdout
    assert "Waiting     3" in text and "Amount      20.50 EUR" in text


def test_status_of_an_empty_queue(tmp_path: Path) -> None:
    result = tpe("saf", "status", "--json", "--config", str(config_with_state(tmp_path)))
    assert json.loads(result.stdout) == {"count": 0, "oldest": None, "amount_per_currency": {}}


def test_a_damaged_queue_is_a_clear_error_and_kept_aside(tmp_path: Path) -> None:
    config = config_with_state(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_bytes(b"this is not a database" * 100)
    result = tpe("saf", "status", "--config", str(config))
    assert result.returncode == 6 and "store error" in result.stderr
    assert any(p.name.startswith(f"{FILE_NAME}.damaged-") for p in state.iterdir())
