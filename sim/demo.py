"""`make demo`: the terminal against its simulators, on this machine, with nothing else running.

Until the touchscreen firmware exists: starts a private pcscd and the acquirer host simulator
(`tpe sim host`, TLS on loopback with a test PKI), serves simulated cards through the vpcd
driver and runs `tpe card read` and `tpe sale` on them, as a technician would at the bench.
Sales go over ISO 8583 with DUKPT MACs to the host, which verifies PINs and ARQCs and books
them; its ledger is printed at the end.
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
    ("visa_cda_online", ("sale", "42.50", "--pin", "1234"), 0),
    ("offline_approving", ("sale", "12.00"), 0),
    ("cb_visa_cobadged", ("sale", "30.00", "--pin", "1234"), 0),
    ("dda_offline_pin", ("sale", "80.00", "--pin", "1234"), 0),
    ("mastercard_cda", ("sale", "100.00", "--pin", "9999"), 5),
    ("declining_card", ("sale", "20.00", "--pin", "1234"), 5),
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
    work = daemon.workdir
    ledger = work / "host-ledger.sqlite3"
    host = subprocess.Popen([*tpe, "sim", "host", "--listen", "127.0.0.1:0", "--pki", str(work / "pki"),
                             "--ledger", str(ledger)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        assert host.stdout is not None
        banner = host.stdout.readline().strip()
        if not banner.startswith("ok host listening on "):
            print(f"demo: the host simulator did not start: {banner}", file=sys.stderr)
            return 1
        config = _terminal_config(work, int(banner.rsplit(":", 1)[1]))
        print(f"pcscd started (pid {daemon.pid}), virtual reader on vpcd port {daemon.vpcd_port}")
        print(f"$ tpe sim host --listen 127.0.0.1:0 --pki PKI --ledger LEDGER\n  {banner}\n")
        for profile, command, expected in STEPS:
            if command[0] == "sale":
                command = (*command, "--config", str(config))
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
        print("$ tpe sim host ledger --ledger LEDGER")
        booked = subprocess.run([*tpe, "sim", "host", "ledger", "--ledger", str(ledger)], cwd=ROOT,
                                text=True, capture_output=True, timeout=60)
        print(booked.stdout + booked.stderr)
        print("Any PC/SC program can use this reader while pcscd runs: PCSCLITE_CSOCK_NAME=<socket> "
              "pcsc_scan (see README, 'Simulators').")
    finally:
        host.terminate()
        host.wait(10)
        daemon.stop()
    return 0


def _terminal_config(work: Path, port: int) -> Path:
    """The packaged terminal configuration plus a [host] section for the simulator."""
    from sim.host.server import load_or_make_pki

    pki = load_or_make_pki(work / "pki")
    text = (ROOT / "firmware" / "defaults" / "terminal.toml").read_text()
    text += (f'\n[host]\naddress = "127.0.0.1"\nport = {port}\nserver_name = "localhost"\n'
             f'ca_file = "{pki.host_ca_cert}"\ncert_file = "{pki.terminal_cert}"\n'
             f'key_file = "{pki.terminal_key}"\nacquirer_id = "12345"\ntimeout = 5.0\n')
    path = work / "terminal.toml"
    path.write_text(text)
    return path


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
