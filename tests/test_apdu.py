"""Command and response APDUs, and the EMV command builders.

Expected encodings are written out by hand from the tables of EMV 4.4 Book 1, 11 and Book 3,
6.5 (CLA, INS, P1, P2, Lc, data, Le), not produced by the code under test.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv import apdu
from emv.apdu import Command, CryptogramType, Response
from emv.errors import ApduError, EmvError

PSE = b"1PAY.SYS.DDF01"
VISA_AID = bytes.fromhex("A0000000031010")
# ISO 9564 format 2 PIN block for PIN 1234 (EMV 4.4 Book 3, 6.5.12.3).
PIN_BLOCK = bytes.fromhex("241234FFFFFFFFFF")
MAC = bytes.fromhex("0102030405060708")


def h(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.mark.parametrize(("command", "expected"), [
    # Book 1, 11.3.2, Tables 5-7: SELECT by name, first and next occurrence, Le '00'.
    (apdu.select(PSE), h("00A404000E") + PSE + h("00")),
    (apdu.select(VISA_AID, next_occurrence=True), h("00A4040207A0000000031010 00")),
    # Book 3, 6.5.11: READ RECORD record 1 of SFI 1 -> P2 '0C'; record 3 of SFI 2 -> P2 '14'.
    (apdu.read_record(1, 1), h("00B2010C00")),
    (apdu.read_record(3, 2), h("00B2031400")),
    (apdu.read_record(255, 30), h("00B2FFF400")),
    # Book 3, 6.5.8: GPO with an empty PDOL is '83 00'; with PDOL data '83 len data'.
    (apdu.get_processing_options(b""), h("80A80000028300 00")),
    (apdu.get_processing_options(h("0000000010000978")), h("80A800000A83080000000010000978 00")),
    # Book 3, 6.5.7: GET DATA for ATC, last online ATC, PIN try counter, log format.
    (apdu.get_data(0x9F36), h("80CA9F3600")),
    (apdu.get_data(0x9F13), h("80CA9F1300")),
    (apdu.get_data(0x9F17), h("80CA9F1700")),
    (apdu.get_data(0x9F4F), h("80CA9F4F00")),
    # Book 3, 6.5.12: VERIFY, plaintext '80' and enciphered '88'.
    (apdu.verify(PIN_BLOCK, enciphered=False), h("0020008008") + PIN_BLOCK),
    (apdu.verify(bytes(range(1, 129)), enciphered=True), h("0020008880") + bytes(range(1, 129))),
    # Book 3, 6.5.6: GET CHALLENGE.
    (apdu.get_challenge(), h("0084000000")),
    # Book 3, 6.5.9: INTERNAL AUTHENTICATE with the unpredictable number as DDOL data.
    (apdu.internal_authenticate(h("12345678")), h("008800000412345678 00")),
    # Book 3, 6.5.5, Table 12: P1 '00' AAC, '40' TC, '80' ARQC, plus '10' for CDA.
    (apdu.generate_ac(CryptogramType.ARQC, h("AABB")), h("80AE800002AABB00")),
    (apdu.generate_ac(CryptogramType.TC, h("AABB"), cda=True), h("80AE500002AABB00")),
    (apdu.generate_ac(CryptogramType.AAC, h("AABB")), h("80AE000002AABB00")),
    (apdu.generate_ac(CryptogramType.ARQC, h("AABB"), cda=True), h("80AE900002AABB00")),
    # Book 3, 6.5.4: EXTERNAL AUTHENTICATE, no Le.
    (apdu.external_authenticate(h("11223344556677883030")), h("008200000A11223344556677883030")),
    # ISO 7816-4, 7.6.1: GET RESPONSE.
    (apdu.get_response(0x26), h("00C0000026")),
    (apdu.get_response(256), h("00C0000000")),
    # Book 3, 6.5.1-6.5.3 and 6.5.10: issuer script commands, CLA '84', data ends with the MAC.
    (apdu.application_block(MAC), h("841E000008") + MAC),
    (apdu.application_unblock(MAC[:4]), h("8418000004") + MAC[:4]),
    (apdu.card_block(MAC), h("8416000008") + MAC),
    (apdu.pin_change_unblock(b"", MAC), h("8424000008") + MAC),
    (apdu.pin_change_unblock(h("00112233445566778899AABBCCDDEEFF"), MAC),
     h("8424000218 00112233445566778899AABBCCDDEEFF") + MAC),
    (apdu.pin_change_unblock(h("00112233445566778899AABBCCDDEEFF"), MAC, using_current_pin=True),
     h("8424000118 00112233445566778899AABBCCDDEEFF") + MAC),
    (apdu.put_data(0x9F58, h("05"), MAC), h("84DA9F5809 05") + MAC),
])
def test_builders_encode_as_the_book_tables(command: Command, expected: bytes) -> None:
    assert command.encode() == expected
    assert Command.parse(expected) == command


@pytest.mark.parametrize(("command", "name", "case"), [
    (apdu.select(PSE), "SELECT", 4),
    (apdu.read_record(1, 1), "READ RECORD", 2),
    (apdu.get_processing_options(b""), "GET PROCESSING OPTIONS", 4),
    (apdu.get_data(0x9F17), "GET DATA", 2),
    (apdu.verify(PIN_BLOCK, enciphered=False), "VERIFY", 3),
    (apdu.get_challenge(), "GET CHALLENGE", 2),
    (apdu.internal_authenticate(h("01020304")), "INTERNAL AUTHENTICATE", 4),
    (apdu.generate_ac(CryptogramType.TC, h("00")), "GENERATE AC", 4),
    (apdu.external_authenticate(bytes(8)), "EXTERNAL AUTHENTICATE", 3),
    (apdu.get_response(1), "GET RESPONSE", 2),
    (apdu.application_block(MAC), "APPLICATION BLOCK", 3),
    (apdu.application_unblock(MAC), "APPLICATION UNBLOCK", 3),
    (apdu.card_block(MAC), "CARD BLOCK", 3),
    (apdu.pin_change_unblock(b"", MAC), "PIN CHANGE/UNBLOCK", 3),
    (apdu.put_data(0x9F58, h("05"), MAC), "PUT DATA", 3),
    (Command(0x80, 0x12, 0x34, 0x56), "INS 12", 1),
])
def test_name_and_case(command: Command, name: str, case: int) -> None:
    assert command.name == name
    assert command.case == case


@pytest.mark.parametrize("call", [
    lambda: apdu.select(b"1234"),              # Book 1, Table 5: Lc '05'..'10'
    lambda: apdu.select(bytes(17)),
    lambda: apdu.read_record(0, 1),            # record 0 means "current record": not EMV
    lambda: apdu.read_record(256, 1),
    lambda: apdu.read_record(1, 0),
    lambda: apdu.read_record(1, 31),
    lambda: apdu.get_processing_options(bytes(253)),
    lambda: apdu.get_data(0x10000),
    lambda: apdu.get_data(0),
    lambda: apdu.verify(b"", enciphered=False),
    lambda: apdu.internal_authenticate(b""),
    lambda: apdu.generate_ac(CryptogramType.ARQC, b""),
    lambda: apdu.generate_ac(0xC0, h("00")),  # type: ignore[arg-type]  # '11' is RFU
    lambda: apdu.external_authenticate(bytes(7)),
    lambda: apdu.external_authenticate(bytes(17)),
    lambda: apdu.get_response(0),
    lambda: apdu.get_response(257),
    lambda: apdu.application_block(bytes(3)),
    lambda: apdu.card_block(bytes(9)),
    lambda: apdu.pin_change_unblock(b"", MAC, using_current_pin=True),
    lambda: apdu.pin_change_unblock(bytes(250), MAC),
    lambda: apdu.put_data(0x9F58, bytes(250), MAC),
    lambda: apdu.verify("1234", enciphered=False),  # type: ignore[arg-type]
])
def test_builders_reject_bad_arguments(call) -> None:
    with pytest.raises(ApduError):
        call()


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"cla": 0x100, "ins": 0xA4, "p1": 0, "p2": 0}, "CLA"),
    ({"cla": 0x00, "ins": -1, "p1": 0, "p2": 0}, "INS"),
    ({"cla": 0xFF, "ins": 0xA4, "p1": 0, "p2": 0}, "CLA 'FF'"),
    ({"cla": 0x00, "ins": 0x61, "p1": 0, "p2": 0}, "INS '61'"),
    ({"cla": 0x00, "ins": 0x9F, "p1": 0, "p2": 0}, "INS '9F'"),
    ({"cla": 0x00, "ins": 0xB2, "p1": 0, "p2": 0, "le": 0}, "Le"),
    ({"cla": 0x00, "ins": 0xB2, "p1": 0, "p2": 0, "le": 257}, "Le"),
    ({"cla": 0x00, "ins": 0xB2, "p1": 0, "p2": 0, "data": bytes(256)}, "short APDU"),
    ({"cla": 0x00, "ins": 0xB2, "p1": 0, "p2": 0, "data": [1, 2]}, "bytes"),
])
def test_command_fields_are_checked(kwargs: dict, reason: str) -> None:
    with pytest.raises(ApduError, match=reason):
        Command(**kwargs)


def test_command_keeps_bytes_even_from_bytearray() -> None:
    cmd = Command(0x00, 0x20, 0x00, 0x80, bytearray(PIN_BLOCK))
    assert type(cmd.data) is bytes
    assert hash(cmd) == hash(Command(0x00, 0x20, 0x00, 0x80, PIN_BLOCK))


def test_le_256_is_written_00_and_read_back() -> None:
    assert Command(0x00, 0xB2, 1, 0x0C, le=256).encode() == h("00B2010C00")
    assert Command.parse(h("00B2010C00")).le == 256
    assert Command.parse(h("00B2010C1C")).le == 0x1C


@pytest.mark.parametrize(("raw", "case", "lc", "le"), [
    ("80123456", 1, None, None),
    ("00B2010C00", 2, None, 256),
    ("0020008008241234FFFFFFFFFF", 3, 8, None),
    ("00A4040007A000000003101000", 4, 7, 256),
    ("00A4040007A00000000310101C", 4, 7, 0x1C),
    ("0082000001FF", 3, 1, None),          # ISO 7816-3, 12.1.3: Lc=1, one data byte
    ("0082000001FF05", 4, 1, 5),
])
def test_parse_reads_the_four_cases(raw: str, case: int, lc: int | None, le: int | None) -> None:
    cmd = Command.parse(h(raw))
    assert (cmd.case, cmd.lc, cmd.le) == (case, lc, le)
    assert cmd.encode() == h(raw)


@pytest.mark.parametrize("raw", [
    "", "00", "00A404",                    # shorter than the header
    "00A40400000005",                      # Lc '00': an extended APDU, not EMV
    "00A404000E31",                        # Lc 14 but one data byte
    "00A4040002AABBCCDD",                  # two bytes too many
    "FFA4040000",                          # CLA 'FF'
    "00600000",                            # INS '60'
])
def test_parse_rejects_malformed_commands(raw: str) -> None:
    with pytest.raises(ApduError):
        Command.parse(h(raw))


def test_parse_rejects_non_bytes() -> None:
    with pytest.raises(ApduError):
        Command.parse("00B2010C00")  # type: ignore[arg-type]
    with pytest.raises(ApduError):
        Response.parse([0x90, 0x00])  # type: ignore[arg-type]


def test_reprs_never_show_data() -> None:
    cmd = apdu.verify(PIN_BLOCK, enciphered=False)
    text = repr(cmd) + str(cmd)
    assert "VERIFY" in text and "00200080" in text
    assert "241234" not in text.upper() and "\\x24" not in text
    pan_record = h("70 0A 5A 08 47 61 73 90 01 01 00 10")
    resp = Response(pan_record, 0x9000)
    text = repr(resp) + str(resp)
    assert "9000" in text and "12 bytes" in text
    assert "4761739001010010" not in text and "\\x47" not in text and "Ga" not in text


@pytest.mark.parametrize(("raw", "data", "sw", "ok"), [
    ("9000", "", 0x9000, True),
    ("6A82", "", 0x6A82, False),
    ("0102039000", "010203", 0x9000, True),
    ("7003800100 6283", "7003800100", 0x6283, False),
])
def test_response_parse(raw: str, data: str, sw: int, ok: bool) -> None:
    resp = Response.parse(h(raw))
    assert resp.data == h(data)
    assert resp.sw == sw
    assert (resp.sw1, resp.sw2) == (sw >> 8, sw & 0xFF)
    assert resp.ok is ok
    assert resp.encode() == h(raw)


@pytest.mark.parametrize("raw", [b"", b"\x90"])
def test_response_without_status_word_is_rejected(raw: bytes) -> None:
    with pytest.raises(ApduError):
        Response.parse(raw)


@pytest.mark.parametrize("sw", [-1, 0x10000, None])
def test_response_status_word_is_two_bytes(sw) -> None:
    with pytest.raises(ApduError):
        Response(b"", sw)


def test_errors_are_emv_errors() -> None:
    with pytest.raises(EmvError):
        Command.parse(b"\x00")


@given(st.binary(max_size=300))
def test_command_parse_total(raw: bytes) -> None:
    try:
        cmd = Command.parse(raw)
    except ApduError:
        return
    # A short APDU has one encoding: reading then writing gives the input back.
    assert cmd.encode() == raw


@given(st.binary(max_size=300))
def test_response_parse_total(raw: bytes) -> None:
    try:
        resp = Response.parse(raw)
    except ApduError:
        assert len(raw) < 2
        return
    assert resp.encode() == raw
    assert len(resp.data) == len(raw) - 2


_byte = st.integers(0, 255)
_cla = _byte.filter(lambda b: b != 0xFF)
_ins = _byte.filter(lambda b: b & 0xF0 not in (0x60, 0x90))


@given(_cla, _ins, _byte, _byte, st.binary(max_size=255), st.none() | st.integers(1, 256))
def test_command_round_trip(cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None) -> None:
    cmd = Command(cla, ins, p1, p2, data, le)
    raw = cmd.encode()
    assert Command.parse(raw) == cmd
    assert len(raw) == 4 + (1 + len(data) if data else 0) + (1 if le is not None else 0)


@given(st.binary(max_size=600), st.integers(0, 0xFFFF))
def test_response_round_trip(data: bytes, sw: int) -> None:
    assert Response.parse(Response(data, sw).encode()) == Response(data, sw)
