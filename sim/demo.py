"""`make demo`: the terminal against its simulators, on this machine, with nothing else running.

Starts a private pcscd serving the simulated card through the vpcd driver, the acquirer host
simulator (`tpe sim host`, TLS on loopback with a test PKI) and the cellular modem simulator
(`tpe sim modem`, a Quectel module on a pty over which the sale travels), then the firmware
itself, `tpe run`: in a window when a display exists (key an amount, present the card, type
PIN 1234, close the window to stop); otherwise headless, where it plays a scripted sale
(amount, card, PIN, approval, receipt), writes a screenshot of every screen to `out/demo/` and
the receipt to the console. The terminal reports to the fleet's broker (`tpe sim broker`,
mosquitto with TLS and per-device ACL); the host's ledger and the back office's view of the
terminal (`tpe fleet list` and `show`) are printed at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sim import pcscd

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "out" / "demo"
SERIAL = "TPE-DEMO-01"  # the demo terminal's serial on the fleet broker
PROFILE = "visa_cda_online"  # a Visa card with CDA and online PIN 1234 (sim/card/profiles)
SCRIPT = """\
# the scripted sale of `make demo` without a display (firmware/ui_script.py)
then = "stop"
language = "fr"

[[sale]]
amount = 4250
pin = "1234"
receipt = "done"
"""


def _start(tpe: list[str], args: list[str], banner: str, env: dict[str, str] | None = None) -> tuple[
        subprocess.Popen[str], str]:
    process = subprocess.Popen([*tpe, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               cwd=ROOT, env=env)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith(banner):
        process.terminate()
        process.wait(10)
        raise RuntimeError(f"tpe {args[0]} {args[1]} did not start: {line or 'no answer'}")
    print(f"$ tpe {' '.join(args[:2])} ...\n  {line}")
    return process, line


def main() -> int:
    try:
        daemon = pcscd.start()
    except pcscd.PcscdError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    tpe = [sys.executable, "-m", "firmware.cli"]
    env = daemon.client_env()
    # the terminal's state (payments, queue, journal, keys) goes away with the daemon's folder
    env["XDG_STATE_HOME"] = str(daemon.workdir / "state")
    work = daemon.workdir
    ledger = work / "host-ledger.sqlite3"
    started: list[subprocess.Popen[str]] = []
    try:
        print(f"pcscd started (pid {daemon.pid}), virtual reader on vpcd port {daemon.vpcd_port}")
        host, banner = _start(tpe, ["sim", "host", "--listen", "127.0.0.1:0", "--pki", str(work / "pki"),
                                    "--ledger", str(ledger)], "ok host listening on ")
        started.append(host)
        modem, modem_banner = _start(tpe, ["sim", "modem", "--dialect", "quectel", "--rtt", "80",
                                           "--technology", "4G"], "ok modem ")
        started.append(modem)
        card, _ = _start(tpe, ["sim", "card", "serve", "--profile", PROFILE, "--port", str(daemon.vpcd_port)],
                         "ok serving ")
        started.append(card)
        broker, broker_banner = _start(tpe, ["sim", "broker", "--folder", str(work / "fleet")],
                                       "ok broker listening on ")
        started.append(broker)
        broker_port = int(broker_banner.split("127.0.0.1:")[1].split()[0])
        config = _terminal_config(work, int(banner.rsplit(":", 1)[1]), modem_banner.rsplit(" on ", 1)[1],
                                  broker_port)
        if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
            print("\nThe terminal opens in a window: key an amount, OK, then PIN 1234 on the card's "
                  "screens. Close the window to stop.\n")
            result = subprocess.run([*tpe, "run", "--config", str(config)], env=env, cwd=ROOT)
        else:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            for old in SCREENSHOTS.glob("*.png"):
                old.unlink()
            script = work / "demo-sale.toml"
            script.write_text(SCRIPT)
            print(f"\nNo display: a scripted sale of 42.50 EUR, PIN 1234; each screen in {SCREENSHOTS}\n")
            print("$ tpe run --config terminal.toml --script demo-sale.toml --screenshots out/demo")
            headless = env | {"SDL_VIDEODRIVER": "dummy"}
            result = subprocess.run([*tpe, "run", "--config", str(config), "--script", str(script),
                                     "--screenshots", str(SCREENSHOTS)], env=headless, cwd=ROOT, timeout=300,
                                    stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            print(f"demo: tpe run exited {result.returncode}", file=sys.stderr)
            return result.returncode
        print("\n$ tpe sim host ledger --ledger LEDGER")
        booked = subprocess.run([*tpe, "sim", "host", "ledger", "--ledger", str(ledger)], cwd=ROOT,
                                text=True, capture_output=True, timeout=60)
        print(booked.stdout + booked.stderr)
        _back_office(tpe, work, broker_port)
        print("Any PC/SC program can use this reader while pcscd runs: PCSCLITE_CSOCK_NAME=<socket> "
              "pcsc_scan (see README, 'Simulators').")
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(10)
        daemon.stop()
    return 0


def _back_office(tpe: list[str], work: Path, broker_port: int) -> None:
    """What the back office sees of the demo terminal once it stopped: its last status and
    telemetry, retained on the broker."""
    from sim.fleet.pki import BACK_OFFICE, make_fleet_pki

    pki = make_fleet_pki(work / "fleet" / "pki")
    cert, key = pki.client(BACK_OFFICE)
    office = ["fleet", "--broker", f"127.0.0.1:{broker_port}", "--ca", str(pki.ca_cert),
              "--cert", str(cert), "--key", str(key), "--timeout", "10"]
    for command in (["list"], ["show", SERIAL]):
        print(f"$ tpe fleet ... {' '.join(command)}")
        shown = subprocess.run([*tpe, *office, *command], cwd=ROOT, text=True, capture_output=True,
                               timeout=60)
        print(shown.stdout + shown.stderr)


def _terminal_config(work: Path, port: int, modem_port: str, broker_port: int) -> Path:
    """The packaged terminal configuration plus the simulators: [host], the module on its pty as
    the only link, so that the sale travels over AT sockets, and the fleet's broker."""
    from sim.fleet.pki import make_fleet_pki
    from sim.host.server import load_or_make_pki

    fleet = make_fleet_pki(work / "fleet" / "pki")
    pki = load_or_make_pki(work / "pki")
    text = (ROOT / "firmware" / "defaults" / "terminal.toml").read_text()
    text += (f'\n[host]\naddress = "127.0.0.1"\nport = {port}\nserver_name = "localhost"\n'
             f'ca_file = "{pki.host_ca_cert}"\ncert_file = "{pki.terminal_cert}"\n'
             f'key_file = "{pki.terminal_key}"\nacquirer_id = "12345"\ntimeout = 10.0\n'
             f'\n[modem]\nport = "{modem_port}"\ndialect = "quectel"\napn = "internet.test"\n'
             f'\n[links]\norder = ["cellular"]\n'
             # a reserved example domain: the QR code shows where an e-receipt service would answer
             f'\n[receipt]\nurl = "https://receipts.example/{{terminal}}/{{ticket}}?s={{extract}}"\n'
             f"\n{fleet.section(SERIAL, broker_port)}")
    path = work / "terminal.toml"
    path.write_text(text)
    return path


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
