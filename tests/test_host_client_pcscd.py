"""`tpe sale` end to end: the card through a real pcscd (vpcd), the authorization over TLS on
loopback to `tpe sim host`, both as subprocesses, with a configuration file written here.

TEST KEYS only: the test PKI is made in tmp by `make_test_pki`; the DUKPT keys are the
simulator's (sim/host/*.toml).
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


@pytest.fixture
def sim_host(tmp_path: Path) -> Iterator[tuple[SimProcess, TestPki, Path]]:
    pki = make_test_pki(tmp_path / "pki")
    ledger = tmp_path / "ledger.sqlite3"
    host = start_sim_host(pki, ledger)
    yield host, pki, ledger
    host.stop()


def test_tpe_sale_approved_online_by_tpe_sim_host(pcscd_daemon, server, sim_host, tmp_path: Path) -> None:
    host, pki, ledger = sim_host
    config = write_config(tmp_path, host.port, pki)
    server("visa_cda_online")
    result = sale(pcscd_daemon, "100.00", "--pin", "1234", "--json", "--config", str(config),
                  "--reader", "Virtual PCD")
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["kind"] == "approved_online"
    assert (out["first_cryptogram_type"], out["cryptogram_type"]) == ("ARQC", "TC")
    assert out["issuer_authentication"] == "passed"
    assert out["authorizer"] == f"acquirer host 127.0.0.1:{host.port}"
    assert out["prompts"] == ["confirm_amount", "enter_online_pin"]
    assert out["host"]["response_code"] == "00" and out["host"]["reversals"] == []
    app = load_profile("visa_cda_online").applications[0]
    assert app.pan not in result.stdout + result.stderr
    assert host.command("quit") == "ok host stopped"
    host.process.wait(10)
    with Ledger(ledger) as book:
        (entry,) = book.entries()
    assert entry.approved and not entry.reversed and entry.amount == 10000 and entry.currency == 978
    assert entry.rrn == out["host_reference"] and int(entry.stan) == out["host"]["stan"]
    assert (tmp_path / "state" / "host.sqlite3").is_file()  # the terminal's state went where configured


def test_tpe_sale_text_shows_the_host_answer_and_the_reversal(pcscd_daemon, server, sim_host,
                                                              tmp_path: Path) -> None:
    host, pki, ledger = sim_host
    config = write_config(tmp_path, host.port, pki)
    config.write_text(config.read_text().replace("timeout = 10", "timeout = 1"))
    server("visa_cda_online")
    assert host.command("drop") == "ok drop 1"  # the 0200 is booked, its answer lost
    result = sale(pcscd_daemon, "100.00", "--pin", "1234", "--config", str(config))
    assert result.returncode in (0, 5), result.stdout + result.stderr
    assert f"acquirer host 127.0.0.1:{host.port}" in result.stdout
    assert "Host link   no answer within 1 s" in result.stdout
    assert "Reversal    0400 of STAN 000001 (reason 68): acknowledged (00)" in result.stdout
    assert host.command("quit") == "ok host stopped"
    host.process.wait(10)
    with Ledger(ledger) as book:
        (entry,) = book.entries()
    assert entry.reversed


def test_tpe_sale_wrong_pin_and_issuer_decline_through_the_host(pcscd_daemon, server, sim_host,
                                                                tmp_path: Path) -> None:
    host, pki, ledger = sim_host
    config = write_config(tmp_path, host.port, pki)
    server("visa_cda_online")
    wrong = sale(pcscd_daemon, "100.00", "--pin", "9999", "--json", "--config", str(config))
    assert wrong.returncode == 5, wrong.stdout + wrong.stderr
    out = json.loads(wrong.stdout)
    assert (out["kind"], out["reason"]) == ("declined_online", "issuer_declined")
    assert out["host"]["response_code"] == "55"
    assert out["cryptogram_type"] == "AAC"
    assert host.command("decline 1 05").startswith("ok")
    good_pin = ("100.00", "--pin", "1234", "--json", "--config", str(config))
    declined = json.loads(sale(pcscd_daemon, *good_pin).stdout)
    assert (declined["kind"], declined["host"]["response_code"]) == ("declined_online", "05")
    approved = json.loads(sale(pcscd_daemon, *good_pin).stdout)
    assert approved["kind"] == "approved_online"
    assert host.command("quit") == "ok host stopped"
    host.process.wait(10)
    with Ledger(ledger) as book:
        entries = book.entries()
    assert [e.response_code for e in entries] == ["55", "05", "00"]
    assert [e.approved for e in entries] == [False, False, True]


def test_an_unacknowledged_reversal_is_repeated_before_the_next_sale_and_booked_once(
        pcscd_daemon, server, sim_host, tmp_path: Path) -> None:
    host, pki, ledger = sim_host
    config = write_config(tmp_path, host.port, pki)
    config.write_text(config.read_text().replace("timeout = 10", "timeout = 1"))
    server("visa_cda_online")
    assert host.command("drop 2") == "ok drop 2"  # the 0200's answer and the 0400's answer are lost
    first = sale(pcscd_daemon, "100.00", "--pin", "1234", "--config", str(config))
    assert "Reversal    0400 of STAN 000001" in first.stdout, first.stdout + first.stderr
    assert "acknowledged" not in first.stdout
    second = sale(pcscd_daemon, "50.00", "--pin", "1234", "--json", "--config", str(config))
    out = json.loads(second.stdout)
    assert out["kind"] == "approved_online", second.stdout + second.stderr
    assert [r["mti"] for r in out["host"]["reversals"]] == ["0401"]
    assert host.command("quit") == "ok host stopped"
    host.process.wait(10)
    with Ledger(ledger) as book:
        entries = book.entries()
    # the first sale booked once and reversed once (0400 then its repeat 0401), the second booked
    assert len(entries) == 2 and entries[0].reversed and not entries[1].reversed
    assert entries[1].approved and entries[1].amount == 5000
