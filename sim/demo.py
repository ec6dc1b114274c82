"""`make demo`: the terminal against its simulators, on this machine, with nothing else running.

Until the transaction firmware exists: starts a private pcscd, serves simulated cards through
the vpcd driver and runs `tpe card read` on each, as a technician would at the bench.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sim import pcscd

PROFILES = ("visa_cda_online", "cb_visa_cobadged", "t0_only", "language_de")
ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    try:
        daemon = pcscd.start()
    except pcscd.PcscdError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    tpe = [sys.executable, "-m", "firmware.cli"]
    env = daemon.client_env()
    try:
        print(f"pcscd started (pid {daemon.pid}), virtual reader on vpcd port {daemon.vpcd_port}\n")
        for profile in PROFILES:
            server = subprocess.Popen(
                [*tpe, "sim", "card", "serve", "--profile", profile, "--port", str(daemon.vpcd_port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
            try:
                assert server.stdout is not None
                print(f"$ tpe sim card serve --profile {profile}\n  {server.stdout.readline().strip()}")
                print("$ tpe card read")
                started = time.monotonic()
                result = subprocess.run([*tpe, "card", "read"], env=env, cwd=ROOT, text=True,
                                        capture_output=True, timeout=60)
                print(result.stdout + result.stderr, end="")
                print(f"  ({time.monotonic() - started:.2f} s)\n")
                if result.returncode != 0:
                    return result.returncode
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
