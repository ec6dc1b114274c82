"""`tpe sale` over the cellular module, every piece a separate process: the card through a real
pcscd (vpcd), `tpe sim modem` (Quectel dialect on a pty), `tpe sim host` on loopback; the
configuration has [host], [modem] on the pty the simulator printed and [links] order =
["cellular"], so the only way to the host is the module's socket.

TEST KEYS only: the test PKI is made in tmp by `make_test_pki`; the DUKPT keys are the
simulator's (sim/host/*.toml); the SIM PIN is the simulated SIM's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sim_processes import SimProcess, sale, write_config
from sim_processes import sim_host as start_sim_host

from sim.card.profile import load_profile
from sim.host.ledger import Ledger
from sim.host.test_pki import TestPki, make_test_pki

pytestmark = pytest.mark.pcscd
SIM_PIN = "4321"  # the simulated SIM's PIN (a test value)
APN = "internet.test"


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[tuple[SimProcess, SimProcess, TestPki, Path]]:
    pki = make_test_pki(tmp_path / "pki")
    ledger = tmp_path / "ledger.sqlite3"
    host = start_sim_host(pki, ledger)
    modem = SimProcess(["modem", "--dialect", "quectel", "--rtt", "40", "--pin", SIM_PIN, "--apn", APN,
                   "--technology", "4G", "--signal", "-75"], "ok modem quectel on ")
    try:
        yield host, modem, pki, ledger
    finally:
        modem.stop()
        host.stop()


def modem_config(tmp_path: Path, host: SimProcess, pki: TestPki, modem: SimProcess, pin: str) -> Path:
    """[host] on the host simulator, [modem] on the pty the modem simulator printed, no other link."""
    return write_config(tmp_path, host.port, pki, f"""
[modem]
port = "{modem.banner.rpartition(" on ")[2]}"
dialect = "quectel"
sim_pin = "{pin}"
apn = "{APN}"
registration_timeout = 10

[links]
order = ["cellular"]
""")


def test_tpe_sale_approved_online_over_tpe_sim_modem(pcscd_daemon, server, sims, tmp_path: Path) -> None:
    host, modem, pki, ledger = sims
    config = modem_config(tmp_path, host, pki, modem, SIM_PIN)
    server("visa_cda_online")
    result = sale(pcscd_daemon, "100.00", "--pin", "1234", "--json", "--config", str(config),
                  "--reader", "Virtual PCD", timeout=90)
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
    config = modem_config(tmp_path, host, pki, modem, SIM_PIN)
    server("visa_cda_online")
    result = sale(pcscd_daemon, "100.00", "--pin", "1234", "--config", str(config), timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Route       cellular (4G, -75 dBm, TestNet)" in result.stdout


def test_a_wrong_sim_pin_is_a_clear_error_and_not_tried_twice(pcscd_daemon, server, sims,
                                                               tmp_path: Path) -> None:
    host, modem, pki, ledger = sims
    config = modem_config(tmp_path, host, pki, modem, "9999")
    server("visa_cda_online")
    result = sale(pcscd_daemon, "100.00", "--pin", "1234", "--config", str(config), timeout=90)
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
