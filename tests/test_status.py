"""Status words: descriptions, warnings and the PIN try counter (EMV 4.4 Book 3, 6.3.5 and 6.5.12)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv.errors import ApduError
from emv.status import describe, is_warning, pin_tries_left


@pytest.mark.parametrize(("sw", "words"), [
    (0x9000, ["normal"]),
    (0x6110, ["16", "GET RESPONSE"]),
    (0x6100, ["256"]),
    (0x6C1C, ["wrong length", "28"]),
    (0x6281, ["corrupted"]),
    (0x6283, ["invalidated", "blocked"]),
    (0x63C2, ["counter 2", "2 tries"]),
    (0x63C0, ["0 tries"]),
    (0x6400, ["unchanged"]),
    (0x6700, ["wrong length"]),
    (0x6981, ["file structure"]),
    (0x6982, ["security status"]),
    (0x6983, ["blocked"]),
    (0x6984, ["referenced data invalidated"]),
    (0x6985, ["conditions of use"]),
    (0x6986, ["not allowed"]),
    (0x6A81, ["function not supported"]),
    (0x6A82, ["not found"]),
    (0x6A83, ["record not found"]),
    (0x6A86, ["P1-P2"]),
    (0x6A88, ["referenced data", "not found"]),
    (0x6D00, ["instruction"]),
    (0x6E00, ["class"]),
    (0x6285, ["warning", "unchanged"]),   # unlisted SW2: meaning of SW1 alone (ISO 7816-4, Table 5)
    (0x6381, ["warning", "changed"]),
    (0x6999, ["command not allowed"]),
    (0x9E12, ["application-specific"]),
    (0x1234, ["unknown"]),
])
def test_describe(sw: int, words: list[str]) -> None:
    text = describe(sw)
    for word in words:
        assert word.lower() in text.lower(), (hex(sw), text)


@pytest.mark.parametrize(("sw", "warning"), [
    (0x6200, True), (0x6283, True), (0x63C1, True), (0x6300, True),
    (0x9000, False), (0x6100, False), (0x6400, False), (0x6A82, False), (0x6C10, False),
])
def test_is_warning(sw: int, warning: bool) -> None:
    assert is_warning(sw) is warning


@pytest.mark.parametrize(("sw", "tries"), [
    (0x63C3, 3), (0x63C1, 1), (0x63C0, 0), (0x63CF, 15),
    (0x6983, 0), (0x6984, 0),
    (0x9000, None), (0x6300, None), (0x63B2, None), (0x6985, None), (0x6A81, None),
])
def test_pin_tries_left(sw: int, tries: int | None) -> None:
    assert pin_tries_left(sw) == tries


@pytest.mark.parametrize("sw", [-1, 0x10000, "9000", True])
def test_bad_status_words_raise_apdu_error(sw) -> None:
    for func in (describe, is_warning, pin_tries_left):
        with pytest.raises(ApduError):
            func(sw)


@given(st.integers(0, 0xFFFF))
def test_every_status_word_has_a_description(sw: int) -> None:
    text = describe(sw)
    assert text and text == text.strip()
    assert is_warning(sw) == (text.startswith("warning"))
