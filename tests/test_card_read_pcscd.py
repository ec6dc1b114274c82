"""`tpe card read` through a real pcscd, the card served by `tpe sim card serve` (vpcd)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim import pcscd
from sim.card.profile import load_profile

pytestmark = pytest.mark.pcscd
TPE = [sys.executable, "-m", "firmware.cli"]
ROOT = Path(__file__).resolve().parent.parent


def card_read(daemon: pcscd.PrivatePcscd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TPE, "card", "read", *args], env=daemon.client_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def expected_masked_pan(profile: str) -> str:
    pan = load_profile(profile).applications[0].pan
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


@pytest.mark.parametrize("profile,protocol", [("visa_cda_online", "T=1"), ("t0_only", "T=0"),
                                              ("mastercard_cda", "T=1")])
def test_card_read_json(pcscd_daemon, server, profile: str, protocol: str) -> None:
    s = server(profile)
    assert s.banner.startswith(f"ok serving {profile} ({protocol})")
    result = card_read(pcscd_daemon, "--json", "--reader", "Virtual PCD")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["protocol"] == protocol
    assert report["pan_masked"] == expected_masked_pan(profile)
    assert report["aid"] == load_profile(profile).applications[0].aid.hex().upper()
    assert report["expiry"] and report["aip"] and report["afl"] and report["cvm_list"]["rules"]
    for key in ("label", "preferred_name", "pan_sequence_number", "effective", "issuer_country",
                "language", "ca_public_key_index", "application_usage_control"):
        assert key in report
    # The full PAN never leaves the terminal's read.
    assert load_profile(profile).applications[0].pan not in result.stdout + result.stderr


def test_cobadged_card_lists_both_brands(pcscd_daemon, server) -> None:
    server("cb_visa_cobadged")
    report = json.loads(card_read(pcscd_daemon, "--json").stdout)
    assert {a["scheme"] for a in report["applications"]} == {"CB", "Visa"}
    visa = json.loads(card_read(pcscd_daemon, "--json", "--aid", "A0000000031010").stdout)
    assert visa["aid"] == "A0000000031010"


def test_remove_and_insert_on_command(pcscd_daemon, server) -> None:
    s = server("language_de")
    assert json.loads(card_read(pcscd_daemon, "--json").stdout)["language"] == ["de"]
    assert s.command("remove") == "ok removed"
    missing = card_read(pcscd_daemon, "--json", "--wait", "1")
    assert missing.returncode == 3
    assert json.loads(missing.stdout)["error"] == "reader"
    assert s.command("insert") == "ok inserted"
    assert card_read(pcscd_daemon, "--json").returncode == 0
    assert s.command("profile sda_only") == "ok profile sda_only"
    swapped = card_read(pcscd_daemon, "--json")
    assert json.loads(swapped.stdout).get("pan_masked") == expected_masked_pan("sda_only"), swapped.stdout
    assert s.command("bogus").startswith("error")


def test_human_readable_output(pcscd_daemon, server) -> None:
    server("dda_offline_pin")
    result = card_read(pcscd_daemon)
    assert result.returncode == 0
    assert "PAN         " + expected_masked_pan("dda_offline_pin") in result.stdout
    assert "Plaintext PIN" in result.stdout or "plaintext PIN" in result.stdout.lower()


def test_unknown_reader_is_a_clean_error(pcscd_daemon) -> None:
    result = card_read(pcscd_daemon, "--reader", "Nope")
    assert result.returncode == 3 and "no reader named" in result.stderr


def test_unknown_profile_is_refused(pcscd_daemon, server) -> None:
    s = server("no_such_profile")
    assert s.banner.startswith("error profile")
    assert s.process.wait(10) == 2
