"""The packaged Visa and Mastercard PUBLIC TEST CA keys (firmware/defaults/ca_keys_scheme_test.toml).

The expected checksums and sizes are the ones the public sources print next to each key
(openemv/emv-utils src/emv_capk_static_data.h; Visa's VSDC test key tables as reproduced in
merlokk/PCSCEMV EMVkeys.pas), not values taken from the file under test.
"""

from __future__ import annotations

import hashlib
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from emv.capk import CapkError, load_capks
from firmware.config import load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
SCHEME_TEST_FILE = ROOT / "firmware" / "defaults" / "ca_keys_scheme_test.toml"
DEFAULT_FILE = ROOT / "firmware" / "defaults" / "terminal.toml"
SIM_CA_KEYS = ROOT / "sim" / "card" / "ca_keys.toml"

VISA = "A000000003"
MASTERCARD = "A000000004"

# (RID, index) -> (modulus bits, published SHA-1 checksum)
PUBLISHED: dict[tuple[str, str], tuple[int, str]] = {
    (VISA, "92"): (1408, "429C954A3859CEF91295F663C963E582ED6EB253"),
    (VISA, "94"): (1984, "C4A3C43CCF87327D136B804160E47D43B60E6E0F"),
    (VISA, "95"): (1152, "EE1511CEC71020A9B90443B37B1D5F6E703030F6"),
    (VISA, "99"): (1024, "4ABFFD6B1C51212D05552E431C5B17007D2F5E6D"),
    (MASTERCARD, "EF"): (1984, "21766EBB0EE122AFB65D7845B73DB46BAB65427A"),
    (MASTERCARD, "F1"): (1408, "D8E68DA167AB5A85D8C3D55ECB9B0517A1A5B4BB"),
    (MASTERCARD, "F3"): (1152, "A69AC7603DAF566E972DEDC2CB433E07E8B01A9A"),
    (MASTERCARD, "F8"): (1024, "F06ECC6D2AAEBF259B7E755A38D9A9B24E2FF3DD"),
    (MASTERCARD, "FA"): (1152, "5BED4068D96EA16D2D77E03D6036FC7A160EA99C"),
    (MASTERCARD, "FE"): (1024, "9A295B05FB390EF7923F57618A9FDA2941FC34E0"),
}


def _text() -> str:
    return SCHEME_TEST_FILE.read_text(encoding="utf-8")


def _entries() -> list[dict[str, Any]]:
    return tomllib.loads(_text())["capk"]


def _hex(value: str) -> bytes:
    return bytes.fromhex("".join(value.split()))


def _entry_toml(entry: dict[str, Any], modulus: bytes) -> str:
    return (f'[[capk]]\nrid = "{entry["rid"]}"\nindex = "{entry["index"]}"\n'
            f'modulus = "{modulus.hex()}"\nexponent = "{entry["exponent"]}"\n'
            f'expiry = {entry["expiry"].isoformat()}\nhash_algorithm = "{entry["hash_algorithm"]}"\n'
            f'checksum = "{entry["checksum"]}"\n')


def test_file_is_marked_as_public_test_keys() -> None:
    header = _text().split("[[capk]]")[0]
    assert "PUBLIC TEST KEYS" in header.splitlines()[0]
    assert "NEVER load them into a terminal that takes live transactions" in header


def test_file_loads_with_the_expected_rids_and_indexes() -> None:
    keys = load_capks(_text())
    assert {(rid.hex().upper(), f"{index:02X}") for rid, index in keys} == set(PUBLISHED)


@pytest.mark.parametrize(("rid", "index"), sorted(PUBLISHED))
def test_each_key_hashes_to_its_published_checksum(rid: str, index: str) -> None:
    bits, published = PUBLISHED[(rid, index)]
    [entry] = [e for e in _entries() if (e["rid"], e["index"]) == (rid, index)]
    modulus, exponent = _hex(entry["modulus"]), _hex(entry["exponent"])
    # EMV 4.4 Book 2, 11.2.2, Table 30: SHA-1 over RID || index || modulus || exponent
    digest = hashlib.sha1(bytes.fromhex(rid) + bytes.fromhex(index) + modulus + exponent).hexdigest()
    assert digest.upper() == published == entry["checksum"]
    assert len(modulus) * 8 == bits and exponent == b"\x03"
    key = load_capks(_text())[(bytes.fromhex(rid), int(index, 16))]
    assert key.compute_checksum() == bytes.fromhex(published) and key.verify_checksum()


def test_keys_do_not_expire_during_pre_production() -> None:
    for key in load_capks(_text()).values():
        assert not key.is_expired(date(2040, 1, 1))


@pytest.mark.parametrize("position", range(len(PUBLISHED)))
def test_one_modulus_byte_changed_fails_the_checksum(position: int) -> None:
    entry = _entries()[position]
    modulus = bytearray(_hex(entry["modulus"]))
    assert load_capks(_entry_toml(entry, bytes(modulus)))  # the rewritten entry loads as is
    modulus[len(modulus) // 2] ^= 0x01
    with pytest.raises(CapkError) as caught:
        load_capks(_entry_toml(entry, bytes(modulus)))
    assert caught.value.reason == "wrong checksum"
    assert f'{entry["rid"]}/{entry["index"]}' in str(caught.value.entry)


@given(st.data())
def test_any_single_modulus_byte_change_is_refused(data: st.DataObject) -> None:
    entry = data.draw(st.sampled_from(_entries()))
    modulus = bytearray(_hex(entry["modulus"]))
    offset = data.draw(st.integers(min_value=0, max_value=len(modulus) - 1))
    modulus[offset] ^= data.draw(st.integers(min_value=1, max_value=0xFF))
    assume(modulus[0] != 0)  # a leading zero byte is refused for that reason instead
    with pytest.raises(CapkError, match="wrong checksum"):
        load_capks(_entry_toml(entry, bytes(modulus)))


def test_config_with_scheme_test_loads_the_packaged_keys() -> None:
    text = """
[terminal]
type = "22"
capabilities = "E0F8C8"
additional_capabilities = "6000A0B001"
country = 250
currency = 978
currency_exponent = 2
terminal_id = "PREPROD1"
merchant_id = "PREPRODMERCH001"
merchant_category = 4121
ifd_serial = "PP000001"

[[aid]]
aid = "A0000000041010"
application_versions = ["0002"]
tac_denial = "0000000000"
tac_online = "FC50BCF800"
tac_default = "FC50BCA000"
floor_limit = 0

[ca_keys]
files = ["scheme-test"]
"""
    keys = parse_config(text, "preprod.toml", ROOT).kernel.ca_keys
    assert {(rid.hex().upper(), f"{index:02X}") for rid, index in keys} == set(PUBLISHED)


def test_commented_pre_production_line_of_the_default_config_loads(tmp_path: Path) -> None:
    lines = DEFAULT_FILE.read_text(encoding="utf-8").splitlines()
    assert 'files = ["sim"]' in lines and '# files = ["sim", "scheme-test"]' in lines
    lines[lines.index('files = ["sim"]')] = 'files = ["sim", "scheme-test"]'
    (tmp_path / "terminal.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    keys = load_config(tmp_path / "terminal.toml").kernel.ca_keys
    assert dict(keys) == load_capks(SIM_CA_KEYS.read_text()) | load_capks(_text())
