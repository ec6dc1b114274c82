"""GET PROCESSING OPTIONS answers and READ RECORD over the AFL (EMV 4.4 Book 3, 10.1-10.3)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv import app_data, card_data, tlv
from emv.apdu import Response
from emv.app_data import AppDataError, parse_gpo, read_records


def test_format_1_splits_aip_and_afl() -> None:
    options = parse_gpo(bytes.fromhex("800A" "3D00" "08010200" "10010100"))
    assert (options.aip, options.afl) == (b"\x3d\x00", bytes.fromhex("0801020010010100"))
    assert options.gpo_format == 1


def test_format_2_keeps_every_object() -> None:
    body = (tlv.encode(0x82, b"\x39\x00") + tlv.encode(0x94, bytes.fromhex("08010100"))
            + tlv.encode(0x9F36, b"\x00\x07"))
    options = parse_gpo(tlv.encode(0x77, body))
    assert options.gpo_format == 2 and dict(options.objects)[0x9F36] == b"\x00\x07"


@pytest.mark.parametrize("data", [
    bytes.fromhex("8002" "3D00"),  # no AFL entry
    bytes.fromhex("8007" "3D00" "0801020010"),  # AFL not a multiple of 4
    tlv.encode(0x77, tlv.encode(0x82, b"\x3d\x00")),  # no AFL
    tlv.encode(0x77, tlv.encode(0x82, b"\x3d\x00") * 2 + tlv.encode(0x94, bytes(4))),  # repeated
    tlv.encode(0x70, bytes(4)),  # wrong template
    bytes.fromhex("800A3D00"),  # truncated
    b"",
])
def test_malformed_answers_are_refused(data: bytes) -> None:
    with pytest.raises(AppDataError):
        parse_gpo(data)


@given(st.binary(max_size=80))
def test_any_gpo_answer_parses_or_raises_its_error(data: bytes) -> None:
    try:
        options = parse_gpo(data)
    except AppDataError:
        return
    assert len(options.aip) == 2 or options.gpo_format == 2


def drive(gen: Generator[Any, Response, Any], answers: dict[tuple[int, int], bytes]) -> Any:
    """Answer each READ RECORD (P1 record, P2 SFI << 3 | 4) from `answers`."""
    try:
        request = next(gen)
        while True:
            command = request.command
            data = answers.get((command.p2 >> 3, command.p1))
            request = gen.send(Response(data, 0x9000) if data is not None else Response(b"", 0x6A83))
    except StopIteration as stop:
        return stop.value


def afl(*entries: tuple[int, int, int, int]) -> list[card_data.AflEntry]:
    return card_data.parse_afl(b"".join(bytes([sfi << 3, first, last, oda])
                                        for sfi, first, last, oda in entries))


def test_oda_data_is_the_value_for_sfi_1_to_10_and_the_whole_record_above() -> None:
    low = tlv.encode(0x70, tlv.encode(0x5A, bytes.fromhex("4761739001010010")))
    high = tlv.encode(0x70, tlv.encode(0x5F24, bytes.fromhex("491231")))
    records = drive(read_records(afl((1, 1, 1, 1), (11, 1, 1, 1))), {(1, 1): low, (11, 1): high})
    assert bytes(records.oda) == low[2:] + high
    assert dict(records.data) == {0x5A: bytes.fromhex("4761739001010010"), 0x5F24: bytes.fromhex("491231")}
    assert records.count == 2 and not records.oda_invalid


def test_proprietary_records_above_sfi_10_are_skipped_unless_signed() -> None:
    junk = b"\x01\x02\x03"
    good = tlv.encode(0x70, tlv.encode(0x5F24, bytes.fromhex("491231")))
    skipped = drive(read_records(afl((11, 1, 2, 0))), {(11, 1): junk, (11, 2): good})
    assert dict(skipped.data) == {0x5F24: bytes.fromhex("491231")} and not skipped.oda_invalid
    signed = drive(read_records(afl((11, 1, 2, 1))), {(11, 1): junk, (11, 2): good})
    assert signed.oda_invalid  # Book 3, 10.3: an ODA record that is not a '70' template


@pytest.mark.parametrize("record", [b"\x01\x02\x03", tlv.encode(0x71, bytes(2)),
                                    bytes.fromhex("7005") + bytes(3)])
def test_records_of_sfi_1_to_10_must_be_70_templates(record: bytes) -> None:
    with pytest.raises(AppDataError):
        drive(read_records(afl((1, 1, 1, 0))), {(1, 1): record})


def test_a_missing_record_is_an_error() -> None:
    with pytest.raises(AppDataError, match="6A83"):
        drive(read_records(afl((1, 1, 2, 0))), {(1, 1): tlv.encode(0x70, tlv.encode(0x50, b"X"))})


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=4), st.integers(1, 30))
def test_any_records_read_or_raise_the_module_error(bodies: list[bytes], sfi: int) -> None:
    answers = {(sfi, i + 1): body for i, body in enumerate(bodies)}
    try:
        records = drive(read_records(afl((sfi, 1, len(bodies), len(bodies)))), answers)
    except AppDataError:
        assert sfi <= 10
        return
    assert records.count == len(bodies)


def test_module_error_names_the_step() -> None:
    with pytest.raises(app_data.AppDataError) as caught:
        parse_gpo(b"\x70\x00")
    assert caught.value.step == "get processing options"
