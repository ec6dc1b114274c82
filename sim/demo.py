"""`make demo`: the terminal against its simulators, on this machine, with nothing else running.

Until the touchscreen firmware exists: starts a private pcscd, serves simulated cards through
the vpcd driver and runs `tpe card read` and `tpe sale` on them, as a technician would at the
bench. Sales are authorized by the scripted issuer (`--scripted-issuer`, simulator test keys),
and say so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sim import pcscd

# (card profile, tpe command, exit status expected: 0 approved, 5 declined)
STEPS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("visa_cda_online", ("card", "read"), 0),
    ("visa_cda_online", ("sale", "42.50", "--pin", "1234", "--scripted-issuer"), 0),
    ("offline_approving", ("sale", "12.00", "--scripted-issuer"), 0),
    ("cb_visa_cobadged", ("sale", "30.00", "--pin", "1234", "--scripted-issuer"), 0),
    ("dda_offline_pin", ("sale", "80.00", "--pin", "1234", "--scripted-issuer"), 0),
    ("declining_card", ("sale", "20.00", "--pin", "1234", "--scripted-issuer"), 5),
    ("mastercard_cda", ("sale", "100.00", "--pin", "1234", "--no-host"), 5),
)
ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    try:
        daemon = pcscd.start()
    except pcscd.PcscdError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    tpe = [sys.executable, "-m", "firmware.cli"]
    env = daemon.client_env()
    # the terminal's durable state (STAN, DUKPT registers) goes away with the daemon's folder
    env["XDG_STATE_HOME"] = str(daemon.workdir / "state")
    try:
        print(f"pcscd started (pid {daemon.pid}), virtual reader on vpcd port {daemon.vpcd_port}\n")
        for profile, command, expected in STEPS:
            server = subprocess.Popen(
                [*tpe, "sim", "card", "serve", "--profile", profile, "--port", str(daemon.vpcd_port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
            try:
                assert server.stdout is not None
                print(f"$ tpe sim card serve --profile {profile}\n  {server.stdout.readline().strip()}")
                print(f"$ tpe {' '.join(command)}")
                started = time.monotonic()
                result = subprocess.run([*tpe, *command], env=env, cwd=ROOT, text=True,
                                        capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
                print(result.stdout + result.stderr, end="")
                print(f"  (exit {result.returncode}, {time.monotonic() - started:.2f} s)\n")
                if result.returncode != expected:
                    print(f"demo: expected exit {expected}", file=sys.stderr)
                    return result.returncode or 1
            finally:
                server.terminate()
                server.wait(10)
        print("Any PC/SC program can use this reader while pcscd runs: PCSCLITE_CSOCK_NAME=<socket> "
              "pcsc_scan (see README, 'Simulators').")
    finally:
        daemon.stop()
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
