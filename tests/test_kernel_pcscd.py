"""The kernel on a real pcscd: a subset of the scenario matrix, and `tpe sale` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scenario_matrix import Case, cases, check, run_case

from firmware import driver
from firmware.reader import PcscReader, ReaderError
from sim import pcscd
from sim.card.profile import load_profile
from sim.inprocess import fresh_card

pytestmark = pytest.mark.pcscd
TPE = [sys.executable, "-m", "firmware.cli"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("case", [c for c in cases() if c.pcscd], ids=lambda c: c.name)
def test_scenario_through_pcscd(pcscd_daemon, serve_card, case: Case) -> None:
    card = fresh_card(case.profile)
    serve_card(card)
    reader = PcscReader()
    try:
        session = reader.connect_when_ready(pcscd.reader_name(0), 10)
        try:
            fulfil = driver.card_sender(session.transmit, session.protocol, errors=(ReaderError,))
            run, prompt = run_case(case, card, fulfil)
        finally:
            session.disconnect()
    finally:
        reader.close()
    check(case, run, prompt)


def sale(daemon: pcscd.PrivatePcscd, *args: str,
         verbose: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    # the packaged configuration has no [host]: these sales go to the scripted issuer
    issuer = () if "--no-host" in args else ("--scripted-issuer",)
    return subprocess.run([*TPE, *verbose, "sale", *args, *issuer], env=daemon.client_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_tpe_sale_approved_online_with_scripted_issuer(pcscd_daemon, server) -> None:
    server("visa_cda_online")
    result = sale(pcscd_daemon, "100.00", "--pin", "1234", "--json", "--reader", "Virtual PCD")
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["kind"] == "approved_online"
    assert out["amount"] == 10000 and out["currency"] == 978
    assert (out["first_cryptogram_type"], out["cryptogram_type"]) == ("ARQC", "TC")
    assert out["authorizer"].startswith("SCRIPTED AUTHORIZER")
    assert out["prompts"] == ["confirm_amount", "enter_online_pin"]
    pan = load_profile("visa_cda_online").applications[0].pan
    assert pan not in result.stdout + result.stderr
    assert out["pan_masked"] == pan[:6] + "******" + pan[-4:]


def test_tpe_sale_logs_decisions_but_no_card_data(pcscd_daemon, server) -> None:
    server("dda_offline_pin")
    result = sale(pcscd_daemon, "80.00", "--pin", "1234", verbose=("-vv",))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kernel: selected A0000000031010" in result.stderr
    assert "APDU VERIFY" in result.stderr and "sale: approved_online" in result.stderr
    app = load_profile("dda_offline_pin").applications[0]
    for secret in (app.pan, app.pan[-10:], "241234FF"):  # PAN, its tail, the plaintext PIN block
        assert secret not in result.stdout + result.stderr


def test_tpe_sale_text_output_says_who_authorized(pcscd_daemon, server) -> None:
    server("sda_only")
    result = sale(pcscd_daemon, "12,50")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SCRIPTED AUTHORIZER" in result.stdout
    assert "APPROVED ONLINE" in result.stdout
    assert "Amount      12.50 EUR" in result.stdout
    assert "Signature   required on the receipt" in result.stdout


def test_tpe_sale_no_host_and_declines(pcscd_daemon, server) -> None:
    s = server("visa_cda_online")
    unable = sale(pcscd_daemon, "100", "--pin", "1234", "--no-host", "--json")
    assert unable.returncode == 5
    assert json.loads(unable.stdout)["kind"] == "declined_unable_online"
    assert s.command("profile declining_card") == "ok profile declining_card"
    declined = sale(pcscd_daemon, "100", "--pin", "1234", "--json")
    assert declined.returncode == 5
    assert json.loads(declined.stdout)["reason"] == "card_declines"


def test_tpe_sale_refuses_bad_amounts_and_configs(pcscd_daemon, tmp_path: Path) -> None:
    for amount in ("12.345", "-1", "abc", "1e20"):
        result = sale(pcscd_daemon, amount)
        assert result.returncode == 2 and "usage error" in result.stderr, amount
    bad = tmp_path / "terminal.toml"
    bad.write_text("[terminal]\nbogus = 1\n")
    result = sale(pcscd_daemon, "1.00", "--config", str(bad))
    assert result.returncode == 2 and "terminal.toml" in result.stderr and "bogus" in result.stderr


def test_tpe_sale_without_card_is_a_reader_error(pcscd_daemon) -> None:
    result = sale(pcscd_daemon, "1.00", "--wait", "0.5", "--json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["error"] == "reader"
