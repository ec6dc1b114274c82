"""`tpe sale` over the cellular module, every piece a separate process: the card through a real
pcscd (vpcd), `tpe sim modem` (Quectel dialect on a pty), `tpe sim host` on loopback; the
configuration has [host], [modem] on the pty the simulator printed and [links] order =
["cellular"], so the only way to the host is the module's socket.

TEST KEYS only: the test PKI is made in tmp by `make_test_pki`; the DUKPT keys are the
simulator's (sim/host/*.toml); the SIM PIN is the simulated SIM's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim import pcscd
from sim.card.profile import load_profile
from sim.host.ledger import Ledger
from sim.host.test_pki import TestPki, make_test_pki

pytestmark = pytest.mark.pcscd
TPE = [sys.executable, "-m", "firmware.cli"]
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "firmware" / "defaults" / "terminal.toml"
SIM_PIN = "4321"  # the simulated SIM's PIN (a test value)
APN = "internet.test"


class Child:
    """A `tpe sim ...` child process with a banner line, driven on stdin, stopped by its PID."""

    def __init__(self, args: list[str], banner: str) -> None:
        self.process = subprocess.Popen([*TPE, "sim", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.process.stdout is not None
        self.banner = self.process.stdout.readline().strip()
        if not self.banner.startswith(banner):
            self.stop()
            pytest.fail(f"tpe sim {args[0]} did not start: {self.banner!r}")

    def command(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[tuple[Child, Child, TestPki, Path]]:
    pki = make_test_pki(tmp_path / "pki")
    ledger = tmp_path / "ledger.sqlite3"
    host = Child(["host", "--listen", "127.0.0.1:0", "--pki", str(pki.folder), "--ledger", str(ledger)],
                 "ok host listening on ")
    modem = Child(["modem", "--dialect", "quectel", "--rtt", "40", "--pin", SIM_PIN, "--apn", APN,
                   "--technology", "4G", "--signal", "-75"], "ok modem quectel on ")
    try:
        yield host, modem, pki, ledger
    finally:
        modem.stop()
        host.stop()


def write_config(tmp_path: Path, host_port: int, pki: TestPki, modem_path: str, pin: str) -> Path:
    path = tmp_path / "terminal.toml"
    path.write_text(DEFAULT_CONFIG.read_text() + f"""
[host]
address = "127.0.0.1"
port = {host_port}
server_name = "localhost"
ca_file = "pki/{pki.host_ca_cert.name}"
cert_file = "pki/{pki.terminal_cert.name}"
key_file = "pki/{pki.terminal_key.name}"
acquirer_id = "12345"
timeout = 10

[modem]
port = "{modem_path}"
dialect = "quectel"
sim_pin = "{pin}"
apn = "{APN}"
registration_timeout = 10

[links]
order = ["cellular"]

[state]
folder = "state"
""")
    return path


def sale(daemon: pcscd.PrivatePcscd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TPE, "-v", "sale", *args], env=daemon.client_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=90, stdin=subprocess.DEVNULL)


def test_tpe_sale_approved_online_over_tpe_sim_modem(pcscd_daemon, server, sims, tmp_path: Path) -> None:
    host, modem, pki, ledger = sims
    modem_path = modem.banner.rpartition(" on ")[2]
    config = write_config(tmp_path, int(host.banner.rpartition(":")[2]), pki, modem_path, SIM_PIN)
    server("visa_cda_online")
    result = sale(pcscd_daemon, "100.00", "--pin", "1234", "--json", "--config", str(config),
                  "--reader", "Virtual PCD")
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["kind"] == "approved_online"
    assert out["issuer_authentication"] == "passed"
    assert out["host"]["response_code"] == "00"
    route = out["route"]
    assert route["route"] == "cellular"
    assert route["details"]["technology"] == "4G" and route["details"]["operator"] == "TestNet"
    assert route["details"]["signal_dbm"] == -75  # +CSQ 19: -113 + 2 * 19 (27.007, 8.5)
    assert route["links"] == {"cellular": {"up": True, "cause": None}}
    # the bytes went over the simulated radio
    status = modem.command("status")
    assert status.startswith("ok status") and "registration=home" in status
    app = load_profile("visa_cda_online").applications[0]
    assert app.pan not in result.stdout + result.stderr
    assert SIM_PIN not in result.stdout + result.stderr  # the SIM PIN is never logged
    assert host.command("quit") == "ok host stopped"
    host.process.wait(10)
    with Ledger(ledger) as book:
        (entry,) = book.entries()
    assert entry.approved and not entry.reversed and entry.amount == 10000
    assert entry.rrn == out["host_reference"]


def test_tpe_sale_text_names_the_cellular_route(pcscd_daemon, server, sims, tmp_path: Path) -> None:
    host, modem, pki, _ledger = sims
    modem_path = modem.banner.rpartition(" on ")[2]
    config = write_config(tmp_path, int(host.banner.rpartition(":")[2]), pki, modem_path, SIM_PIN)
    server("visa_cda_online")
    result = sale(pcscd_daemon, "100.00", "--pin", "1234", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Route       cellular (4G, -75 dBm, TestNet)" in result.stdout


def test_a_wrong_sim_pin_is_a_clear_error_and_not_tried_twice(pcscd_daemon, server, sims,
                                                               tmp_path: Path) -> None:
    host, modem, pki, ledger = sims
    modem_path = modem.banner.rpartition(" on ")[2]
    config = write_config(tmp_path, int(host.banner.rpartition(":")[2]), pki, modem_path, "9999")
    server("visa_cda_online")
    result = sale(pcscd_daemon, "100.00", "--pin", "1234", "--config", str(config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "tpe: host error: cellular module (quectel) on" in result.stderr
    assert "SIM PIN" in result.stderr and "9999" not in result.stdout + result.stderr
    # the SIM is not blocked (three wrong tries would want the PUK): the PIN was not tried again
    assert "sim=pin" in modem.command("status")
    assert host.command("quit") == "ok host stopped"
    host.process.wait(10)
    with Ledger(ledger) as book:
        assert book.entries() == []
