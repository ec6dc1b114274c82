"""The tag dictionary against EMV 4.4 Book 3 Annex A and the BER-TLV tag rules of Annex B."""

from __future__ import annotations

import pytest

from emv import dol, tags, tlv

# (tag, format, min length, max length, source, templates) read off Book 3 Annex A, Table 33.
ANNEX_A = [
    (0x5A, "cn", 0, 10, "card", (0x70, 0x77)),
    (0x57, "b", 0, 19, "card", (0x70, 0x77)),
    (0x4F, "b", 5, 16, "card", (0x61,)),
    (0x50, "ans", 1, 16, "card", (0x61, 0xA5)),
    (0x5F20, "ans", 2, 26, "card", (0x70, 0x77)),
    (0x9F0B, "ans", 27, 45, "card", (0x70, 0x77)),
    (0x5F24, "n", 3, 3, "card", (0x70, 0x77)),
    (0x5F2D, "an", 2, 8, "card", (0xA5,)),
    (0x5F55, "a", 2, 2, "card", (0xBF0C, 0x73)),
    (0x5F56, "a", 3, 3, "card", (0xBF0C, 0x73)),
    (0x82, "b", 2, 2, "card", (0x77, 0x80)),
    (0x8E, "b", 10, 252, "card", (0x70, 0x77)),
    (0x9F10, "b", 0, 32, "card", (0x77, 0x80)),
    (0x9F26, "b", 8, 8, "card", (0x77, 0x80)),
    (0x9F4D, "b", 2, 2, "card", (0xBF0C, 0x73)),
    (0x9F24, "an", 29, 29, "card", (0x70, 0x77)),
    (0x86, "b", 0, 261, "issuer", (0x71, 0x72)),
    (0x9F18, "b", 4, 4, "issuer", (0x71, 0x72)),
    (0x8A, "an", 2, 2, "issuer/terminal", ()),
    (0x9F02, "n", 6, 6, "terminal", ()),
    (0x5F2A, "n", 2, 2, "terminal", ()),
    (0x9F1A, "n", 2, 2, "terminal", ()),
    (0x9A, "n", 3, 3, "terminal", ()),
    (0x9F21, "n", 3, 3, "terminal", ()),
    (0x9C, "n", 1, 1, "terminal", ()),
    (0x9F41, "n", 2, 4, "terminal", ()),
    (0x9F1C, "an", 8, 8, "terminal", ()),
    (0x9F16, "ans", 15, 15, "terminal", ()),
    (0x9F33, "b", 3, 3, "terminal", ()),
    (0x95, "b", 5, 5, "terminal", ()),
    (0x98, "b", 20, 20, "terminal", ()),
]


@pytest.mark.parametrize(("tag", "fmt", "lo", "hi", "source", "template"), ANNEX_A,
                         ids=[f"{row[0]:X}" for row in ANNEX_A])
def test_entries_match_annex_a(tag: int, fmt: str, lo: int, hi: int, source: str,
                               template: tuple[int, ...]) -> None:
    entry = tags.info(tag)
    assert entry is not None
    assert (entry.fmt, entry.min_len, entry.max_len, entry.source) == (fmt, lo, hi, source)
    assert set(entry.template) == set(template)


def test_dictionary_is_large_enough() -> None:
    assert len(tags.TAGS) >= 160


def test_every_entry_is_indexed_once() -> None:
    assert len(tags.TAGS) == len(tags._ENTRIES)
    assert all(tags.TAGS[entry.tag] is entry for entry in tags._ENTRIES)


def test_a_tag_listed_twice_is_refused() -> None:
    first = tags.TagInfo(0x9F36, "ATC", "card", "b", 2, 2)
    again = tags.TagInfo(0x9F36, "ATC again", "card", "b", 2, 2)
    with pytest.raises(ValueError, match="9F36"):
        tags._index([first, again])


def test_an_inverted_length_range_is_refused() -> None:
    with pytest.raises(ValueError, match="9F36"):
        tags._index([tags.TagInfo(0x9F36, "ATC", "card", "b", 3, 2)])


@pytest.mark.parametrize("tag", sorted(tags.TAGS), ids=lambda t: f"{t:X}")
def test_every_tag_is_a_well_formed_ber_tag(tag: int) -> None:
    # Annex B1: at most three bytes, first byte never '00'/'FF', and read back as itself.
    encoded = tlv.tag_bytes(tag)
    assert len(encoded) <= tlv.MAX_TAG_BYTES
    assert encoded[0] not in (0x00, 0xFF)
    assert tlv.read_tag(encoded, 0) == (tag, len(encoded))


def test_constructed_tags_are_binary_and_templates_are_known() -> None:
    for entry in tags.TAGS.values():
        if tlv.tag_is_constructed(entry.tag):
            assert entry.fmt == "b", f"{entry.tag:X}"
        for template in entry.template:
            assert template in tags.TAGS, f"{entry.tag:X} in unknown template {template:X}"
            # '80' is the only primitive template: Format 1 concatenates values without tags.
            assert tlv.tag_is_constructed(template) or template == 0x80, f"{template:X}"


def test_book3_templates_are_constructed() -> None:
    # Annex B1, bit 6 of the first byte; Book 3 Annex A calls these templates.
    for template in (0x61, 0x6F, 0x70, 0x71, 0x72, 0x73, 0x77, 0xA5, 0xBF0C):
        assert tlv.tag_is_constructed(template)


SENSITIVE = {0x5A, 0x57, 0x5F20, 0x9F0B, 0x56, 0x9F6B, 0x99, 0x9F1F, 0x9F20}


@pytest.mark.parametrize("tag", sorted(SENSITIVE), ids=lambda t: f"{t:X}")
def test_pan_track_name_and_pin_data_are_sensitive(tag: int) -> None:
    assert tags.is_sensitive(tag)


@pytest.mark.parametrize("tag", [0x5F34, 0x5F24, 0x9F24, 0x9F25, 0x82, 0x9F36, 0x50])
def test_other_card_data_is_not_sensitive(tag: int) -> None:
    assert tags.info(tag) is not None
    assert not tags.is_sensitive(tag)


def test_unknown_tags() -> None:
    assert tags.info(0xDF7F) is None
    assert tags.format_of(0xDF7F) == "b"
    assert tags.name_of(0xDF7F) == "unknown tag DF7F"
    assert not tags.is_sensitive(0xDF7F)


def test_names_come_from_the_dictionary() -> None:
    assert tags.name_of(0x9F36) == "Application Transaction Counter (ATC)"
    assert tags.name_of(0x9F66) == "Terminal Transaction Qualifiers (TTQ)"
    assert "Card Transaction Qualifiers" in tags.name_of(0x9F6C)


def test_dol_padding_follows_the_dictionary_formats() -> None:
    # Book 3, 5.4: n is padded with leading zeros, cn with trailing 'F', others with trailing zeros.
    data = {0x9F02: bytes.fromhex("1000"), 0x5A: bytes.fromhex("4761"), 0x9F1C: b"T1"}
    built = dol.build(bytes.fromhex("9F0204" "5A03" "9F1C04"), data)
    assert built == bytes.fromhex("00001000" "4761FF") + b"T1\x00\x00"
