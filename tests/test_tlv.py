"""BER-TLV per EMV 4.4 Book 3 Annex B."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv import tlv
from emv.errors import TlvError


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_primitive_and_multibyte_tags() -> None:
    items = tlv.decode(h("9F36 02 0012 5A 08 4761739001010010 5F34 01 01"))
    assert [(i.tag, i.value) for i in items] == [
        (0x9F36, h("0012")), (0x5A, h("4761739001010010")), (0x5F34, h("01"))]
    assert [i.offset for i in items] == [0, 5, 15]


def test_three_byte_tag() -> None:
    (item,) = tlv.decode(h("DF8101 01 AA"))
    assert item.tag == 0xDF8101 and item.value == h("AA")


def test_tag_of_four_bytes_is_rejected() -> None:
    with pytest.raises(TlvError) as err:
        tlv.decode(h("DF818181 01 00"))
    assert err.value.offset == 0


@pytest.mark.parametrize("length_field,length", [("81 80", 128), ("82 0100", 256), ("83 000102", 258)])
def test_long_form_lengths(length_field: str, length: int) -> None:
    data = h("C1") + h(length_field) + bytes(range(256)) * 2
    (item,) = tlv.decode(data[: 1 + len(h(length_field)) + length])
    assert len(item.value) == length


def test_long_form_used_for_a_short_value_is_accepted() -> None:
    (item,) = tlv.decode(h("5F20 81 03 414243"))
    assert item.value == b"ABC"


@pytest.mark.parametrize("bad", ["80", "84 00000001", "85 0000000001"])
def test_bad_length_fields(bad: str) -> None:
    with pytest.raises(TlvError):
        tlv.decode(h("C1") + h(bad) + b"\x00")


def test_constructed_templates_nest() -> None:
    items = tlv.decode(h("70 0E 61 0C 4F 07 A0000000031010 87 01 01"))
    (record,) = items
    assert record.constructed and record.tag == 0x70
    entry = record.children[0]
    assert entry.tag == 0x61 and entry.find(0x4F).value == h("A0000000031010")
    assert tlv.find(items, 0x87).value == h("01")


def test_child_overrunning_its_template_is_an_error_with_partial_result() -> None:
    data = h("9F36 02 0001 70 05 5A 08 47617390")
    with pytest.raises(TlvError) as err:
        tlv.decode(data)
    assert err.value.tag == 0x5A and err.value.offset == 7
    assert [i.tag for i in err.value.partial] == [0x9F36]


def test_truncated_value() -> None:
    with pytest.raises(TlvError) as err:
        tlv.decode(h("9F36 02 00"))
    assert err.value.tag == 0x9F36 and "overruns" in err.value.reason


def test_padding_00_and_ff_between_objects_is_skipped() -> None:
    items = tlv.decode(h("00 00 9F36 02 0001 FF 00 5F34 01 01 FF FF"))
    assert [i.tag for i in items] == [0x9F36, 0x5F34]
    (record,) = tlv.decode(h("70 09 00 5F34 01 01 FF 9C 01 00"))
    assert [c.tag for c in record.children] == [0x5F34, 0x9C]


def test_repeated_tags_are_kept_in_order() -> None:
    items = tlv.decode(h("71 0C 86 04 84240000 86 04 841E0000"))
    scripts = tlv.find_all(items, 0x86)
    assert [s.value for s in scripts] == [h("84240000"), h("841E0000")]
    assert list(tlv.primitives(items)) == [(0x86, h("84240000")), (0x86, h("841E0000"))]


def test_zero_length_value() -> None:
    (item,) = tlv.decode(h("9F02 00"))
    assert item.value == b""


def test_encode_picks_shortest_length_form() -> None:
    assert tlv.encode(0x5A, bytes(127))[:2] == h("5A 7F")
    assert tlv.encode(0x5A, bytes(128))[:3] == h("5A 81 80")
    assert tlv.encode(0x9F4B, bytes(256))[:5] == h("9F4B 82 0100")


def test_encode_constructed_from_children() -> None:
    record = tlv.build(0x70, [tlv.build(0x5F24, h("271231")), tlv.build(0x5F34, h("01"))])
    assert record.encode() == h("70 0A 5F24 03 271231 5F34 01 01")


def test_repr_does_not_show_values() -> None:
    (item,) = tlv.decode(h("5A 08 4761739001010010"))
    assert "4761" not in repr(item)


def test_nesting_depth_is_bounded() -> None:
    data = b""
    for _ in range(tlv.MAX_DEPTH + 3):
        data = tlv.encode(0xE1, data)
    with pytest.raises(TlvError) as err:
        tlv.decode(data)
    assert "deep" in err.value.reason


def test_non_bytes_input_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        tlv.decode("9F3602")  # type: ignore[arg-type]


# A strategy for well-formed TLV trees: tags from valid primitive and constructed shapes.
primitive_tags = st.sampled_from([0x5A, 0x57, 0x82, 0x9F36, 0x9F26, 0x5F24, 0x5F2A, 0xDF8101, 0xC1])
constructed_tags = st.sampled_from([0x70, 0x77, 0x61, 0xA5, 0xBF0C, 0xE1])
leaves = st.builds(lambda t, v: tlv.build(t, v), primitive_tags, st.binary(max_size=300))
trees = st.recursive(
    leaves,
    lambda children: st.builds(lambda t, c: tlv.build(t, c), constructed_tags,
                               st.lists(children, max_size=4)),
    max_leaves=12)


@given(st.lists(trees, max_size=5))
def test_round_trip(items: list[tlv.Tlv]) -> None:
    encoded = tlv.encode_all(items)
    decoded = tlv.decode(encoded)
    assert decoded == items
    assert tlv.encode_all(decoded) == encoded


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_tlv_error(data: bytes) -> None:
    try:
        items = tlv.decode(data)
    except TlvError as exc:
        assert 0 <= exc.offset <= len(data)
        assert isinstance(exc.partial, list)
        return
    # Whatever decoded re-encodes to the input without its padding bytes' meaning changed.
    for item in tlv.walk(items):
        assert item.offset < len(data)
