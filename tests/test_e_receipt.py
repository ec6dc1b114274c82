"""The e-receipt's address ([receipt] url, firmware/e_receipt.py): what the QR code beside the
receipt names, and the configuration that refuses a template it cannot fill."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.config import ConfigError, parse_config
from firmware.e_receipt import MAX_URL, ReceiptUrlError, check_template, fill

DEFAULTS = Path(__file__).resolve().parents[1] / "firmware" / "defaults"
TEMPLATE = "https://receipts.example/{terminal}/{ticket}?s={extract}"


def config_with(extra: str) -> str:
    return (DEFAULTS / "terminal.toml").read_text() + "\n" + extra


def test_the_address_names_the_signed_ticket_and_encodes_each_value() -> None:
    assert fill(TEMPLATE, terminal="TPE 01/A", ticket=127, extract="3F9A-21C7-88D0-5B12") == (
        "https://receipts.example/TPE%2001%2FA/127?s=3F9A-21C7-88D0-5B12")
    assert fill("https://r.example/x", terminal="T", ticket=1, extract="E") == "https://r.example/x"


@pytest.mark.parametrize(("url", "why"), [
    ("http://receipts.example/{ticket}", "https"),
    ("https:///{ticket}", "https"),
    ("https://receipts.example/{ticket} x", "https"),
    ("https://receipts.example/{pan}", "{pan}"),
    ("https://receipts.example/{amount}", "{amount}"),
    ("https://receipts.example/{ticket!r}", "{ticket}"),
    ("https://receipts.example/{ticket:>9}", "{ticket}"),
    ("https://receipts.example/{}", "{}"),
    ("https://receipts.example/{ticket", "braces"),
    ("https://receipts.example/" + "a" * MAX_URL, "longer"),
])
def test_a_template_it_cannot_fill_safely_is_refused(url: str, why: str) -> None:
    with pytest.raises(ReceiptUrlError, match=why.replace("{", r"\{").replace("}", r"\}")):
        check_template(url)


@given(st.text(max_size=300))
def test_any_template_is_accepted_or_refused_with_its_own_error(url: str) -> None:
    try:
        accepted = check_template(url)
    except ReceiptUrlError:
        return
    filled = fill(accepted, terminal="TID00001", ticket=999_999_999, extract="0000-0000-0000-0000")
    assert filled.startswith("https://") and len(filled) <= MAX_URL


def test_the_section_reaches_the_configuration_and_names_its_key() -> None:
    config = parse_config(config_with(f'[receipt]\nurl = "{TEMPLATE}"\n'), "t.toml", DEFAULTS)
    assert config.receipt is not None and config.receipt.url == TEMPLATE
    assert parse_config(config_with(""), "t.toml", DEFAULTS).receipt is None
    for body, key in (('url = "ftp://x/{ticket}"', "receipt.url"), ("url = 3", "receipt.url"),
                      ('address = "https://x"', "receipt.address"), ("", "receipt.url")):
        with pytest.raises(ConfigError) as caught:
            parse_config(config_with(f"[receipt]\n{body}\n"), "t.toml", DEFAULTS)
        assert (caught.value.file, caught.value.key) == ("t.toml", key)
