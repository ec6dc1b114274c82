"""DOL parsing and building, EMV 4.4 Book 3 section 5.4."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv import dol
from emv.errors import DolError


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


PDOL = h("9F02 06 9F1A 02 5F2A 02 9A 03 9C 01 9F37 04")


def test_parse() -> None:
    assert dol.parse(PDOL) == [dol.DolEntry(0x9F02, 6), dol.DolEntry(0x9F1A, 2), dol.DolEntry(0x5F2A, 2),
                               dol.DolEntry(0x9A, 3), dol.DolEntry(0x9C, 1), dol.DolEntry(0x9F37, 4)]
    assert dol.encode(dol.parse(PDOL)) == PDOL


def test_build_in_dol_order_with_missing_data_zero_filled() -> None:
    data = {0x9F02: h("000000001500"), 0x9A: h("261126"), 0x9F37: h("CAFEBABE")}
    assert dol.build(PDOL, data) == h("000000001500 0000 0000 261126 00 CAFEBABE")


def test_numeric_is_left_padded_and_left_truncated() -> None:
    assert dol.fit(h("1500"), 6, "n") == h("000000001500")
    assert dol.fit(h("000000001500"), 4, "n") == h("00001500")


def test_compressed_numeric_is_right_padded_with_f() -> None:
    assert dol.fit(h("47617390"), 6, "cn") == h("47617390FFFF")
    assert dol.fit(h("4761739001010010"), 4, "cn") == h("47617390")


def test_other_formats_right_padded_with_zeros_and_right_truncated() -> None:
    assert dol.fit(b"AB", 4, "an") == b"AB\x00\x00"
    assert dol.fit(h("E0F8C8"), 2, "b") == h("E0F8")


def test_formats_come_from_the_tag_dictionary() -> None:
    # 9F02 is n12: a short value is left-padded; 5A is cn: right-padded with F.
    out = dol.build(h("9F02 06 5A 0A"), {0x9F02: h("99"), 0x5A: h("4761739001010010")})
    assert out == h("000000000099 4761739001010010FFFF")


def test_constructed_tag_in_a_dol_gives_zeros() -> None:
    assert dol.build(h("70 03"), {0x70: h("010203")}) == h("000000")


def test_split_is_the_card_side() -> None:
    values = dol.build(PDOL, {0x9F1A: h("0250")})
    pairs = dol.split(PDOL, values)
    assert pairs[1] == (0x9F1A, h("0250")) and len(pairs) == 6


def test_split_wrong_length() -> None:
    with pytest.raises(DolError):
        dol.split(PDOL, bytes(5))


def test_entry_without_length() -> None:
    with pytest.raises(DolError) as err:
        dol.parse(h("9F02 06 9F1A"))
    assert [e.tag for e in err.value.partial] == [0x9F02]


@given(st.binary(max_size=80))
def test_any_bytes_parse_or_raise_dol_error(data: bytes) -> None:
    try:
        entries = dol.parse(data)
    except DolError:
        return
    assert dol.encode(entries) == data


@given(st.binary(max_size=40), st.integers(0, 40), st.sampled_from(["n", "cn", "an", "ans", "b"]))
def test_fit_always_gives_the_asked_length(value: bytes, length: int, fmt: str) -> None:
    assert len(dol.fit(value, length, fmt)) == length  # type: ignore[arg-type]
