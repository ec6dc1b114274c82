"""Offline PIN blocks and PIN encipherment (emv/pin_encipher.py), against the simulator's keys."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emv.pin_encipher import PinError, encipher_pin, parse_pin_block_format2, pin_block_format2
from sim.card import pki

UN = bytes.fromhex("0102030405060708")


# Book 3, 6.5.12: C=2 | N | PIN digits | 'F' fill, 8 bytes. Written out by hand from the layout.
@pytest.mark.parametrize(("pin", "block"), [
    ("1234", "241234FFFFFFFFFF"),
    ("00000", "2500000FFFFFFFFF"),
    ("987654", "26987654FFFFFFFF"),
    ("123456789012", "2C123456789012FF"),
])
def test_format2_block(pin: str, block: str) -> None:
    assert pin_block_format2(pin) == bytes.fromhex(block)
    assert parse_pin_block_format2(bytes.fromhex(block)) == pin


@pytest.mark.parametrize("pin", ["123", "1234567890123", "", "12a4", "12 34", "١٢٣٤", "１２３４", "+1234",
                                 "-123"])
def test_bad_pins_are_refused_without_showing_them(pin: str) -> None:
    with pytest.raises(PinError) as info:
        pin_block_format2(pin)
    if pin.strip():
        assert pin not in str(info.value)
    assert "1234" not in str(info.value) and "123" not in str(info.value)


def test_non_string_pin_is_refused() -> None:
    with pytest.raises(PinError):
        pin_block_format2(1234)  # type: ignore[arg-type]


@pytest.mark.parametrize("block", [
    "141234FFFFFFFFFF",  # control field 1
    "231234FFFFFFFFFF",  # length 3
    "2D1234567890123F",  # length 13
    "2412A4FFFFFFFFFF",  # not a digit
    "241234FFFFFFFF0F",  # fill is not all F
    "241234FFFFFFFF",  # 7 bytes
])
def test_malformed_blocks(block: str) -> None:
    with pytest.raises(PinError) as info:
        parse_pin_block_format2(bytes.fromhex(block))
    assert "1234" not in str(info.value)


@given(st.text(alphabet="0123456789", min_size=4, max_size=12))
def test_format2_round_trip(pin: str) -> None:
    assert parse_pin_block_format2(pin_block_format2(pin)) == pin


@given(st.binary(max_size=10))
def test_any_bytes_parse_or_raise(block: bytes) -> None:
    try:
        pin = parse_pin_block_format2(block)
    except PinError:
        return
    assert pin_block_format2(pin) == block


@given(st.text(max_size=14))
def test_any_text_makes_a_block_or_raises(pin: str) -> None:
    try:
        block = pin_block_format2(pin)
    except PinError:
        return
    assert len(block) == 8 and block[0] >> 4 == 2 and block[0] & 0x0F == len(pin)


@pytest.mark.parametrize("name", ["icc_pin_1", "icc_1"])  # PIN key (e=65537), or the ICC key (e=3)
@settings(max_examples=25, deadline=None)
@given(pin=st.text(alphabet="0123456789", min_size=4, max_size=12), un=st.binary(min_size=8, max_size=8),
       data=st.data())
def test_encipher_then_card_decipher_recovers_header_block_and_un(name: str, pin: str, un: bytes,
                                                                   data: st.DataObject) -> None:
    key = pki.load_key(name)
    pad = data.draw(st.binary(min_size=key.size - 17, max_size=key.size - 17))
    enciphered = encipher_pin(pin, un, key.modulus, key.exponent, pad)
    assert len(enciphered) == key.size
    recovered = pki.decipher_pin(key, enciphered)
    # Independently of the card's CRT code: a plain m = c^d mod n.
    assert recovered == pow(int.from_bytes(enciphered, "big"), key.d, key.n).to_bytes(key.size, "big")
    assert recovered[0] == 0x7F
    assert recovered[1:9] == pin_block_format2(pin)
    assert parse_pin_block_format2(recovered[1:9]) == pin
    assert recovered[9:17] == un
    assert recovered[17:] == pad


def test_encipherment_depends_on_pad_and_un() -> None:
    key = pki.load_key("icc_pin_1")
    pad = bytes(key.size - 17)
    first = encipher_pin("1234", UN, key.modulus, key.exponent, pad)
    assert first != encipher_pin("1234", UN, key.modulus, key.exponent, b"\x01" + pad[1:])
    assert first != encipher_pin("1234", bytes(8), key.modulus, key.exponent, pad)
    assert first != encipher_pin("1235", UN, key.modulus, key.exponent, pad)


def test_encipher_refuses_bad_inputs_without_showing_the_pin() -> None:
    key = pki.load_key("icc_pin_1")
    pad = bytes(key.size - 17)
    cases = [
        ("1234", UN[:7], key.modulus, key.exponent, pad),
        ("1234", UN, key.modulus, key.exponent, pad[:-1]),
        ("1234", UN, key.modulus, key.exponent, pad + b"\x00"),
        ("1234", UN, key.modulus[:17], key.exponent, b""),
        ("1234", UN, key.modulus, b"", pad),
        ("1234", UN, key.modulus, b"\x01", pad),
        ("1234", UN, b"\x10" + key.modulus[1:], key.exponent, pad),  # smaller than the '7F' block
        ("12345678901234", UN, key.modulus, key.exponent, pad),
    ]
    for pin, un, modulus, exponent, random_pad in cases:
        with pytest.raises(PinError) as info:
            encipher_pin(pin, un, modulus, exponent, random_pad)
        assert pin not in str(info.value)
