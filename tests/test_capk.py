"""CA public key table (emv/capk.py): the simulator's published keys, checksums, and bad input."""

from __future__ import annotations

import hashlib
import json
from datetime import date

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from emv.capk import CapkError, CaPublicKey, load_capks
from sim.card import pki

MODULUS = bytes.fromhex("C1" + "5A" * 127)
RID = bytes.fromhex("A000000999")
E3 = b"\x03"


def sha1_checksum(rid: bytes, index: int, modulus: bytes, exponent: bytes) -> bytes:
    return hashlib.sha1(rid + bytes([index]) + modulus + exponent).digest()


def entry(**overrides: str) -> str:
    """One [[capk]] table; values given as TOML literals."""
    values = {
        "rid": '"A000000999"',
        "index": '"01"',
        "modulus": f'"{MODULUS.hex()}"',
        "exponent": '"03"',
        "expiry": "2030-12-31",
        "hash_algorithm": '"01"',
        "checksum": f'"{sha1_checksum(RID, 1, MODULUS, E3).hex()}"',
    }
    values.update(overrides)
    lines = [f"{name} = {value}" for name, value in values.items() if value != "<absent>"]
    return "[[capk]]\n" + "\n".join(lines) + "\n"


def reason(text: str) -> CapkError:
    with pytest.raises(CapkError) as info:
        load_capks(text)
    return info.value


def test_published_simulator_keys_load_and_match_the_pem_files() -> None:
    text = pki.CA_KEYS_TOML.read_text(encoding="utf-8")
    assert text.startswith("# TEST KEYS of the card simulator")
    keys = load_capks(text)
    assert set(keys) == {(entry.rid, entry.index) for entry in pki.CA_KEYS}
    for ca in pki.CA_KEYS:
        capk = keys[(ca.rid, ca.index)]
        pem = (pki.KEYS_DIR / f"{ca.name}.pem").read_bytes()
        private = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(private, rsa.RSAPrivateKey)
        public = private.public_key().public_numbers()
        assert int.from_bytes(capk.modulus, "big") == public.n
        assert int.from_bytes(capk.exponent, "big") == public.e
        assert capk.checksum == sha1_checksum(ca.rid, ca.index, capk.modulus, capk.exponent)
        assert capk.expiry == ca.expiry and capk.hash_algo == 1
        assert capk.verify_checksum()


def test_a_valid_entry_and_its_accessors() -> None:
    second = entry(index='"02"', checksum=f'"{sha1_checksum(RID, 2, MODULUS, E3).hex()}"')
    keys = load_capks(entry() + "\n" + second)
    key = keys[(RID, 1)]
    assert key.modulus == MODULUS and key.exponent == b"\x03" and key.expiry == date(2030, 12, 31)
    assert key.compute_checksum() == sha1_checksum(RID, 1, MODULUS, b"\x03")
    assert not key.is_expired(date(2030, 12, 31)) and key.is_expired(date(2031, 1, 1))
    assert "A000000999/01" in repr(key) and MODULUS.hex().upper()[:20] not in repr(key).upper()
    assert set(keys) == {(RID, 1), (RID, 2)}


def test_whitespace_in_hex_and_iso_date_strings_are_accepted() -> None:
    spread = "\n".join(MODULUS.hex()[i:i + 64] for i in range(0, 256, 64))
    key = load_capks(entry(modulus=f'"""\n{spread}\n"""', expiry='"2030-12-31"'))[(RID, 1)]
    assert key.modulus == MODULUS and key.expiry == date(2030, 12, 31)


def test_empty_text_holds_no_keys() -> None:
    assert load_capks("") == {}
    assert load_capks("# nothing\n") == {}


def test_checksum_mismatch_is_a_load_error() -> None:
    error = reason(entry(checksum='"' + "00" * 20 + '"'))
    assert error.reason == "wrong checksum" and error.entry is not None
    assert "capk entry 1" in error.entry and "A000000999/01" in error.entry
    # Changing the modulus (or the index) under an unchanged checksum fails the same way.
    assert reason(entry(modulus=f'"{("C2" + MODULUS.hex()[2:])}"')).reason == "wrong checksum"
    assert reason(entry(index='"02"')).reason == "wrong checksum"


@pytest.mark.parametrize(("overrides", "words"), [
    ({"rid": '"A0000009"'}, "rid must be 5"),
    ({"rid": '"A00000099G"'}, "rid is not valid hex"),
    ({"index": '"1"'}, "index is not valid hex"),
    ({"index": '"0101"'}, "index must be 1"),
    ({"index": "1"}, "index must be a hex string"),
    ({"modulus": '"C15"'}, "modulus is not valid hex"),
    ({"modulus": '""'}, "modulus is not valid hex"),
    ({"modulus": '"' + "C1" * 249 + '"'}, "modulus must be 1 to 248"),
    ({"modulus": '"00' + MODULUS.hex()[2:] + '"'}, "leading zero"),
    ({"exponent": '"05"'}, "exponent must be 03 or 010001"),
    ({"hash_algorithm": '"02"'}, "hash algorithm"),
    ({"expiry": '"31/12/2030"'}, "expiry must be a date"),
    ({"expiry": "2030-12-31T10:00:00"}, "without a time"),
    ({"expiry": "20301231"}, "expiry must be a date"),
    ({"checksum": '"0011"'}, "checksum must be 20"),
    ({"rid": "<absent>"}, "missing key(s) rid"),
    ({"checksum": "<absent>", "expiry": "<absent>"}, "missing key(s) expiry, checksum"),
    ({"colour": '"red"'}, "unknown key(s) colour"),
])
def test_bad_entries_name_the_entry_and_the_reason(overrides: dict[str, str], words: str) -> None:
    error = reason(entry() + "\n" + entry(**overrides))
    assert words in str(error)
    assert error.entry is not None and error.entry.startswith("capk entry 2")


@pytest.mark.parametrize(("text", "words"), [
    ("capk = 3\n", "array of tables"),
    ("keys = []\n", "unknown top-level key(s) keys"),
    ("[[capk]\n", "not valid TOML"),
    ("capk = [1]\n", "not a table"),
])
def test_bad_documents(text: str, words: str) -> None:
    assert words in str(reason(text))


def test_duplicate_rid_and_index() -> None:
    error = reason(entry() + entry())
    assert error.reason == "duplicate RID and index" and "capk entry 2" in str(error)


def test_constructing_a_key_checks_its_fields() -> None:
    checksum = sha1_checksum(RID, 1, MODULUS, b"\x03")
    good = {"rid": RID, "index": 1, "modulus": MODULUS, "exponent": b"\x03", "expiry": date(2030, 1, 1),
            "hash_algo": 1, "checksum": checksum}
    assert CaPublicKey(**good).verify_checksum()
    for field, value in (("rid", RID[:4]), ("index", 256), ("index", -1), ("modulus", b""),
                         ("exponent", b"\x01\x00\x00\x01"), ("expiry", "2030-01-01"), ("hash_algo", 2),
                         ("checksum", checksum[:19])):
        with pytest.raises(CapkError):
            CaPublicKey(**{**good, field: value})  # type: ignore[arg-type]
    assert not CaPublicKey(**{**good, "exponent": b"\x01\x00\x01"}).verify_checksum()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_loads_or_raises_capk_error(text: str) -> None:
    try:
        keys = load_capks(text)
    except CapkError:
        return
    assert all(key.verify_checksum() for key in keys.values())


_VALUE = st.one_of(
    st.text(max_size=12).map(json.dumps), st.integers().map(str), st.booleans().map(str).map(str.lower),
    st.sampled_from(["2030-12-31", "[]", "{}", '"A000000999"', '"01"', '"03"', "1979-05-27T07:32:00"]),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["rid", "index", "modulus", "exponent", "expiry", "hash_algorithm",
                                        "checksum", "other"]), _VALUE, max_size=8))
def test_any_entry_values_load_or_raise_capk_error(values: dict[str, str]) -> None:
    text = "[[capk]]\n" + "".join(f"{name} = {value}\n" for name, value in values.items())
    try:
        load_capks(text)
    except CapkError as error:
        assert str(error)
