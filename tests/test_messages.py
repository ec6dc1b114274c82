"""The acquirer messages (firmware/messages.py over firmware/iso8583_spec.py).

TEST KEYS: `MAC_KEY` below is a test key, published with the source; it MACs test messages only.
Expected encodings are assembled by hand from docs/host-protocol.md (bitmaps computed bit by bit
in the comments), not taken from the code under test.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from functools import cache
from pathlib import Path

import iso8583
import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from hypothesis import given, settings
from hypothesis import strategies as st

from emv import tlv
from emv.outcome import Outcome, OutcomeKind
from emv.requests import HostStatus, OnlineRequest, OnlineResponse
from emv.sensitive import Sensitive
from firmware import messages as m
from firmware.iso8583_spec import FIELDS, PRESENCE, SPEC

MAC_KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")  # TEST KEY
OTHER_KEY = bytes.fromhex("F0E0D0C0B0A090807060504030201000")  # TEST KEY


def aes_cmac_8(key: bytes) -> Callable[[bytes], bytes]:
    def mac(data: bytes) -> bytes:
        c = CMAC(algorithms.AES(key))
        c.update(data)
        return c.finalize()[:8]
    return mac


MAC = aes_cmac_8(MAC_KEY)

PAN = "4761739001010010"
TRACK2 = bytes.fromhex("4761739001010010D25122011143804400000F")  # EMV '57', 'F' padded
TRACK2_TEXT = "4761739001010010D25122011143804400000"
PIN_BLOCK = bytes.fromhex("8B2F0C5E1D7A49C3A6B5E4F3D2C1B0A9")
KSN = bytes.fromhex("0123456789ABCDEF00000001")
ICC = (tlv.encode(0x9F26, bytes.fromhex("8E19ED4BCA5C670A")) + tlv.encode(0x9F27, b"\x80")
       + tlv.encode(0x9F10, bytes.fromhex("06010A03A0B800")) + tlv.encode(0x9F37, bytes.fromhex("1A2B3C4D"))
       + tlv.encode(0x9F36, b"\x00\x2A") + tlv.encode(0x95, bytes(5)) + tlv.encode(0x9A, b"\x26\x03\x14")
       + tlv.encode(0x9C, b"\x00") + tlv.encode(0x9F02, bytes.fromhex("000000001234"))
       + tlv.encode(0x5F2A, b"\x09\x78") + tlv.encode(0x82, b"\x39\x00"))
ACCEPTOR = m.Acceptor(terminal_id="TPE00001", merchant_id="000000000000001", acquirer_id="123456")
PARIS = datetime.timezone(datetime.timedelta(hours=1))
AT = datetime.datetime(2026, 3, 14, 10, 15, 0, tzinfo=PARIS)  # 09:15:00 UTC


def online_request(**changes: object) -> OnlineRequest:
    request = OnlineRequest(
        pan=Sensitive(PAN, "PAN"), pan_sequence_number=1, expiry="2512",
        track2=Sensitive(TRACK2, "track 2"), amount=1234, other_amount=0, currency=978,
        transaction_type=0x00, aid=bytes.fromhex("A0000000031010"), chip_data=ICC,
        pin_block=Sensitive(PIN_BLOCK, "PIN block"), pin_key_serial=KSN)
    return dataclasses.replace(request, **changes)


def sale(**changes: object) -> m.Fields:
    return m.financial_request(online_request(**changes), acceptor=ACCEPTOR, stan=42, at=AT)


def offline_outcome(**changes: object) -> Outcome:
    tc = ICC.replace(tlv.encode(0x9F27, b"\x80"), tlv.encode(0x9F27, b"\x40"))
    outcome = Outcome(kind=OutcomeKind.APPROVED_OFFLINE, amount=1234, currency=978,
                      pan=Sensitive(PAN, "PAN"), pan_sequence_number=1, expiry="2512",
                      track2=Sensitive(TRACK2, "track 2"), cryptogram_type="TC", response_code=b"Y1",
                      chip_data=tc)
    return dataclasses.replace(outcome, **changes)


# --- Exact bytes, assembled by hand ---------------------------------------------------------

# 0200 with 2 3 4 7 11 12 13 14 22 23 32 35 41 42 49 52 53 55, and 64 once MACed:
#   byte 1 (1-8):   2=40 3=20 4=10 7=02             -> 72
#   byte 2 (9-16):  11=20 12=10 13=08 14=04         -> 3C
#   byte 3 (17-24): 22=04 23=02                     -> 06
#   byte 4 (25-32): 32=01                           -> 01
#   byte 5 (33-40): 35=20                           -> 20
#   byte 6 (41-48): 41=80 42=40                     -> C0
#   byte 7 (49-56): 49=80 52=10 53=08 55=02         -> 9A
#   byte 8 (57-64): 64=01 once MACed                -> 00 or 01
SALE_BODY = (
    b"16" + PAN.encode()
    + b"000000"  # 3: goods and services, default accounts
    + b"000000001234"  # 4
    + b"0314091500"  # 7: 10:15:00 in Paris (UTC+1) is 09:15:00 UTC
    + b"000042"  # 11
    + b"101500" + b"0314"  # 12, 13: local
    + b"2512"  # 14
    + b"051"  # 22: chip, PIN capable
    + b"001"  # 23
    + b"06" + b"123456"  # 32
    + b"37" + TRACK2_TEXT.encode()  # 35: 37 characters
    + b"TPE00001" + b"000000000000001"  # 41, 42
    + b"978"  # 49
    + PIN_BLOCK  # 52: b 16
    + b"12" + KSN  # 53: LLVAR b
    + f"{len(ICC):03d}".encode() + ICC  # 55: LLLVAR b
)
SALE_PACKED = b"0200" + bytes.fromhex("723C060120C09A00") + SALE_BODY
SALE_MAC_INPUT = b"0200" + bytes.fromhex("723C060120C09A01") + SALE_BODY

# 0800 echo with 7 11 12 13 32 41 42 53 70 128:
#   primary:   byte 1: 1(secondary)=80 7=02 -> 82; byte 2: 11=20 12=10 13=08 -> 38;
#              byte 4: 32=01; byte 6: 41=80 42=40 -> C0; byte 7: 53=08  -> 8238000100C00800
#   secondary: byte 1: 70 is the 6th bit of 65-72 -> 04; byte 8: 128=01 -> 0400000000000001
ECHO_MAC = bytes.fromhex("1122334455667788")
ECHO_BYTES = (
    b"0800" + bytes.fromhex("8238000100C00800") + bytes.fromhex("0400000000000001")
    + b"0314091500" + b"000005" + b"101500" + b"0314" + b"06123456" + b"TPE00001" + b"000000000000001"
    + b"12" + KSN + b"301" + ECHO_MAC
)


def echo_fields() -> dict[str, str]:
    return {"t": "0800", "7": "0314091500", "11": "000005", "12": "101500", "13": "0314", "32": "123456",
            "41": "TPE00001", "42": "000000000000001", "53": KSN.hex().upper(), "70": "301",
            "128": ECHO_MAC.hex().upper()}


def test_echo_packs_to_the_hand_computed_bytes() -> None:
    assert m.pack(echo_fields()) == ECHO_BYTES
    assert m.unpack(ECHO_BYTES) == echo_fields()


def test_echo_builder_gives_the_hand_computed_fields() -> None:
    built = m.network_request(m.NetworkCode.ECHO, acceptor=ACCEPTOR, stan=5, at=AT)
    expected = {key: value for key, value in echo_fields().items() if key not in ("53", "128")}
    assert built == expected


def test_sale_packs_to_the_hand_computed_bytes() -> None:
    assert m.pack(sale()) == SALE_PACKED
    assert m.unpack(SALE_PACKED) == sale()


def test_sale_with_mac_is_the_hand_computed_bytes() -> None:
    message = m.attach_mac(sale(), MAC)
    expected_mac = MAC(SALE_MAC_INPUT)  # the MAC covers everything before it, bit 64 set
    assert message == SALE_MAC_INPUT + expected_mac


def test_the_spec_alone_decodes_a_message_with_pyiso8583() -> None:
    decoded, _ = iso8583.decode(ECHO_BYTES, SPEC)
    assert decoded["70"] == "301" and decoded["53"] == KSN.hex().upper()


# --- Round trips of every MTI with realistic data ------------------------------------------

def every_message() -> dict[str, m.Fields]:
    request = sale()
    auth = m.authorization_request(online_request(), acceptor=ACCEPTOR, stan=7, at=AT)
    auth_response = m.response_to(auth, "00", approval_code="A1B2C3", rrn="607309000007",
                                  icc_data=tlv.encode(0x91, bytes(10)))
    later = AT + datetime.timedelta(hours=3)
    advice = m.offline_advice(offline_outcome(), acceptor=ACCEPTOR, stan=9, at=later, transaction_time=AT)
    completion = m.completion_advice(auth, auth_response, amount=2150, stan=10, at=later)
    rev = m.reversal(request, stan=11, at=later, reason=m.ReversalReason.NO_RESPONSE)
    recon = m.reconciliation([m.SchemeTotals(bytes.fromhex("A000000003"), 12, 45600, 1, 1500),
                              m.SchemeTotals(bytes.fromhex("A000000042"), 3, 9900, 0, 0)],
                             acceptor=ACCEPTOR, stan=12, at=later, batch_number=17, currency=978)
    sign_on = m.network_request(m.NetworkCode.SIGN_ON, acceptor=ACCEPTOR, stan=13, at=AT)
    built = {
        "0100": auth, "0110": auth_response, "0200": request,
        "0210": m.response_to(request, "05", rrn="607309000042"),
        "0220": advice, "0221": m.repeat(completion), "0230": m.response_to(advice, "00"),
        "0400": rev, "0401": m.repeat(rev), "0410": m.response_to(m.repeat(rev), "00"),
        "0500": recon, "0510": m.response_to(recon, m.RECONCILE_ERROR),
        "0800": sign_on, "0810": m.response_to(sign_on, "00"),
    }
    return {mti: m.Fields(fields) for mti, fields in built.items()}


@pytest.mark.parametrize("mti", list(PRESENCE))
def test_every_mti_round_trips_with_and_without_mac(mti: str) -> None:
    fields = every_message()[mti]
    assert fields["t"] == mti
    assert m.unpack(m.pack(fields)) == fields
    signed = m.attach_mac(fields, MAC, ksn=None if "53" in fields else KSN)
    received = m.verify_mac(signed, MAC)
    mac_field = "128" if any(65 <= int(key) <= 127 for key in fields if key.isdigit()) else "64"
    assert received[mac_field] == signed[-8:].hex().upper()
    assert {k: v for k, v in received.items() if k not in ("53", mac_field)} == \
        {k: v for k, v in fields.items() if k != "53"}


def test_response_mtis() -> None:
    built = every_message()
    assert m.is_response_to(built["0100"], built["0110"])
    assert m.is_response_to(built["0401"], built["0410"])
    assert not m.is_response_to(built["0200"], built["0110"])
    other_stan = m.Fields({**built["0210"], "11": "000043"})
    assert not m.is_response_to(built["0200"], other_stan)


# --- The rules ------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "why"), [
    ({"t": "0300"}, "MTI"),
    ({"5": "000000001234"}, "not part of this format"),
    ({"90": "0" * 42}, "not allowed in a 0200"),
    ({"4": "1234"}, "fixes 12"),
    ({"4": "00000000123A"}, "attribute n"),
    ({"2": "47617390010100101234"}, "more than 19"),
    ({"2": ""}, "empty"),
    ({"41": "TPE0001\n"}, "attribute ans"),
    ({"52": PIN_BLOCK.hex()}, "attribute b"),  # lower-case hex is not the canonical form
    ({"55": ICC.hex().upper() + "0"}, "odd"),
    ({"4": 1234}, "not str"),
    ({"p": "723C060120C09A01"}, "not part of this format"),
    ({"64": "00" * 8, "53": None}, "53"),
])
def test_pack_refuses_what_breaks_the_rules(change: dict[str, object], why: str) -> None:
    fields: dict[str, object] = dict(sale())
    for key, value in change.items():
        if value is None:
            fields.pop(key)
        else:
            fields[key] = value
    with pytest.raises(m.MessageError, match=why):
        m.pack(fields)  # type: ignore[arg-type]


def test_missing_mandatory_field_and_misplaced_mac() -> None:
    fields = dict(sale())
    del fields["11"]
    with pytest.raises(m.MessageError, match="needs field"):
        m.pack(fields)
    # each MTI has one MAC field: 64 without a secondary bitmap, 128 with one
    with pytest.raises(m.MessageError, match="field 128 is not allowed in a 0200"):
        m.pack({**sale(), "128": "00" * 8})
    rev = dict(every_message()["0400"])
    with pytest.raises(m.MessageError, match="field 64 is not allowed in a 0400"):
        m.pack({**rev, "53": KSN.hex().upper(), "64": "00" * 8})
    advice = dict(every_message()["0220"])
    with pytest.raises(m.MessageError, match="either 55"):
        m.pack({**advice, "56": "01000000072603141015000612345"})


def test_pack_refuses_non_mappings() -> None:
    with pytest.raises(m.MessageError):
        m.pack([("t", "0800")])  # type: ignore[arg-type]
    with pytest.raises(m.MessageError):
        m.unpack("0800")  # type: ignore[arg-type]


def test_unpack_refuses_a_secondary_bitmap_with_nothing_in_it() -> None:
    # 0200 of the hand-made sale, bit 1 set in the primary bitmap and an empty secondary one
    data = b"0200" + bytes.fromhex("F23C060120C09A00") + bytes(8) + SALE_BODY
    with pytest.raises(m.MessageError, match="canonical"):
        m.unpack(data)


@pytest.mark.parametrize(("data", "why"), [
    (SALE_PACKED[:-1], "field 55"),
    (SALE_PACKED + b"0", "Extra data"),
    (SALE_MAC_INPUT, "field 64"),  # bit 64 set, no MAC
    (b"0200" + bytes.fromhex("0800000000000000") + b"000000001234", "field 5 is not part"),
    (b"02", "field t"),
    (b"0201" + SALE_PACKED[4:], "MTI"),
])
def test_unpack_refuses_malformed_messages(data: bytes, why: str) -> None:
    with pytest.raises(m.MessageError, match=why) as caught:
        m.unpack(data)
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert PAN not in str(caught.value)


def test_errors_never_show_card_data() -> None:
    fields = {**sale(), "2": PAN + "9999"}
    with pytest.raises(m.MessageError) as caught:
        m.pack(fields)
    assert PAN not in str(caught.value)
    bad_track = online_request(track2=Sensitive(bytes.fromhex("4761739001010010251220111438"), "t2"))
    with pytest.raises(m.MessageError, match="track 2") as caught:
        m.financial_request(bad_track, acceptor=ACCEPTOR, stan=1, at=AT)
    assert "4761" not in str(caught.value)


# --- Redaction ------------------------------------------------------------------------------

def test_redacted_and_repr_hide_pan_track2_pin_block_and_icc_data() -> None:
    fields = sale()
    secrets = [PAN, TRACK2_TEXT, PIN_BLOCK.hex().upper(), ICC.hex().upper(), PAN[6:12]]
    shown = [repr(fields), str(fields), f"{fields}", repr([fields]), repr(m.redacted(fields)),
             repr(m.unpack(m.pack(fields)))]
    for text in shown:
        for secret in secrets:
            assert secret not in text
    safe = m.redacted(fields)
    assert safe["2"] == "<PAN: 16 digits>"
    assert safe["35"] == "<track 2: 37 characters>"
    assert safe["52"] == "<PIN block: 16 bytes>"
    assert safe["55"] == f"<ICC data: {len(ICC)} bytes>"
    assert safe["4"] == "000000001234" and safe["41"] == "TPE00001"
    assert fields["2"] == PAN  # the message itself still holds what pyiso8583 needs


def test_redacted_hides_a_value_of_the_wrong_type_too() -> None:
    assert m.redacted({"2": 4761739001010010, "35": b"\x47\x61"}) == {"2": "<PAN: hidden>",
                                                                    "35": "<track 2: hidden>"}


# --- Builders from the kernel's data --------------------------------------------------------

def test_financial_request_fields() -> None:
    fields = sale()
    assert fields["t"] == "0200"
    assert fields["2"] == PAN
    assert fields["3"] == "000000"
    assert fields["4"] == "000000001234"
    assert (fields["7"], fields["12"], fields["13"]) == ("0314091500", "101500", "0314")
    assert fields["11"] == "000042"
    assert (fields["14"], fields["22"], fields["23"]) == ("2512", "051", "001")
    assert fields["35"] == TRACK2_TEXT
    assert (fields["32"], fields["41"], fields["42"]) == ("123456", "TPE00001", "000000000000001")
    assert fields["49"] == "978"
    assert bytes.fromhex(fields["52"]) == PIN_BLOCK and bytes.fromhex(fields["53"]) == KSN
    assert bytes.fromhex(fields["55"]) == ICC
    assert "54" not in fields


def test_refund_cash_back_and_card_without_optional_data() -> None:
    assert sale(transaction_type=0x20)["3"] == "200000"
    cash_back = sale(amount=3000, other_amount=1000, transaction_type=0x09)
    assert cash_back["3"] == "090000"
    assert cash_back["54"] == "0040" + "978" + "D" + "000000001000"
    bare = sale(pan_sequence_number=None, expiry=None, track2=None, pin_block=None, pin_key_serial=None)
    assert not {"14", "23", "35", "52", "53"} & set(bare)
    with pytest.raises(m.MessageError, match="cannot exceed"):
        sale(amount=500, other_amount=1000)


def test_authorization_request_is_a_pre_authorization_only() -> None:
    auth = m.authorization_request(online_request(), acceptor=ACCEPTOR, stan=1, at=AT)
    assert auth["t"] == "0100" and auth["3"] == "000000"
    with pytest.raises(m.MessageError, match="20 is not sent in a 0100"):
        m.authorization_request(online_request(transaction_type=0x20), acceptor=ACCEPTOR, stan=1, at=AT)


@pytest.mark.parametrize(("changes", "why"), [
    ({"pin_key_serial": None}, "KSN"),
    ({"pin_key_serial": bytes(10)}, "KSN"),
    ({"pin_block": Sensitive(bytes(8), "PIN block")}, "16 bytes"),
    ({"chip_data": b"\x9F\x26\x08\x00"}, "BER-TLV"),
    ({"chip_data": b""}, "empty"),
    ({"cryptogram_type": "TC"}, "ARQC"),
    ({"transaction_type": 0x31}, "31 is not sent"),
    ({"currency": 0}, "currency"),
    ({"amount": 10**12}, "amount"),
    ({"pan": Sensitive("4761A39001010010", "PAN")}, "field 2"),
])
def test_online_request_that_cannot_be_sent(changes: dict[str, object], why: str) -> None:
    with pytest.raises(m.MessageError, match=why):
        sale(**changes)


@pytest.mark.parametrize(("stan", "at"), [
    (0, AT), (1_000_000, AT), (True, AT), (1, AT.replace(tzinfo=None)),
])
def test_stan_and_time_are_checked(stan: int, at: datetime.datetime) -> None:
    with pytest.raises(m.MessageError):
        m.financial_request(online_request(), acceptor=ACCEPTOR, stan=stan, at=at)


def test_acceptor_is_checked() -> None:
    with pytest.raises(m.MessageError, match="41"):
        m.Acceptor("TPE0001", "000000000000001", "123456")
    with pytest.raises(m.MessageError, match="32"):
        m.Acceptor("TPE00001", "000000000000001", "12A")


def test_offline_advice() -> None:
    sent = datetime.datetime(2026, 3, 15, 8, 0, 0, tzinfo=datetime.UTC)
    advice = m.offline_advice(offline_outcome(), acceptor=ACCEPTOR, stan=77, at=sent, transaction_time=AT)
    assert advice["t"] == "0220"
    assert advice["7"] == "0315080000"  # sent
    assert (advice["12"], advice["13"]) == ("101500", "0314")  # when the card approved
    assert advice["39"] == "Y1" and advice["3"] == "000000" and advice["4"] == "000000001234"
    assert bytes.fromhex(advice["55"]) == offline_outcome().chip_data
    assert "35" not in advice and "56" not in advice
    unable = m.offline_advice(offline_outcome(kind=OutcomeKind.APPROVED_UNABLE_ONLINE, response_code=None),
                              acceptor=ACCEPTOR, stan=78, at=sent, transaction_time=AT)
    assert unable["39"] == "Y3"


@pytest.mark.parametrize(("changes", "why"), [
    ({"kind": OutcomeKind.DECLINED_OFFLINE, "cryptogram_type": "AAC"}, "offline-approved TC"),
    ({"kind": OutcomeKind.APPROVED_ONLINE}, "offline-approved TC"),
    ({"pan": None}, "PAN"),
    ({"chip_data": tlv.encode(0x9F26, bytes(8))}, "9C"),
])
def test_offline_advice_refusals(changes: dict[str, object], why: str) -> None:
    with pytest.raises(m.MessageError, match=why):
        m.offline_advice(offline_outcome(**changes), acceptor=ACCEPTOR, stan=1, at=AT, transaction_time=AT)


def test_completion_advice_points_at_the_pre_authorization() -> None:
    auth = m.authorization_request(online_request(), acceptor=ACCEPTOR, stan=7, at=AT)
    approved = m.response_to(auth, "00", approval_code="A1B2C3", rrn="607309000007")
    later = AT + datetime.timedelta(days=2)
    completion = m.completion_advice(auth, approved, amount=2150, stan=10, at=later)
    assert completion["t"] == "0220" and completion["4"] == "000000002150"
    assert (completion["37"], completion["38"]) == ("607309000007", "A1B2C3")
    # MTI, STAN, YYMMDDhhmmss of the 0100 (2026-03-14 10:15:00 local), LL + acquirer
    assert completion["56"] == "0100" + "000007" + "260314101500" + "06" + "123456"
    assert "55" not in completion and "39" not in completion
    with pytest.raises(m.MessageError, match="approved"):
        m.completion_advice(auth, m.response_to(auth, "05"), amount=2150, stan=10, at=later)
    with pytest.raises(m.MessageError, match="does not answer"):
        m.completion_advice(auth, m.response_to(sale(), "00"), amount=2150, stan=10, at=later)


def test_a_completion_from_what_the_terminal_keeps_is_the_same_message() -> None:
    """After the card left, the terminal keeps the 0100's identity and card fields (no track 2,
    no chip data, no PIN block) and the 0110's 37 and 38: enough for the same 0220."""
    auth = m.authorization_request(online_request(), acceptor=ACCEPTOR, stan=7, at=AT)
    approved = m.response_to(auth, "00", approval_code="A1B2C3", rrn="607309000007")
    later = AT + datetime.timedelta(hours=5)
    kept = {**m.identity(auth), **{key: auth[key] for key in m.COMPLETION_CARD_FIELDS if key in auth}}
    assert not {"35", "52", "55"} & set(kept)
    approval = {key: approved[key] for key in ("37", "38")}
    assert m.stored_completion(kept, approval, amount=999, stan=11, at=later) == m.completion_advice(
        auth, approved, amount=999, stan=11, at=later)
    with pytest.raises(m.MessageError, match="lacks field"):
        m.stored_completion({k: v for k, v in kept.items() if k != "2"}, approval, amount=1, stan=1, at=later)
    with pytest.raises(m.MessageError, match="0100"):
        m.stored_completion({**kept, "t": "0200"}, approval, amount=1, stan=1, at=later)


def test_completion_in_january_of_a_december_pre_authorization_takes_last_year() -> None:
    december = datetime.datetime(2026, 12, 31, 23, 0, 0, tzinfo=PARIS)
    auth = m.authorization_request(online_request(), acceptor=ACCEPTOR, stan=7, at=december)
    completion = m.completion_advice(auth, m.response_to(auth, "00"), amount=100, stan=8,
                                     at=december + datetime.timedelta(days=2))
    assert completion["56"][10:22] == "261231230000"


def test_reversal_carries_no_card_data_and_points_at_the_original() -> None:
    original = sale()
    answer = m.response_to(original, "00", approval_code="A1B2C3", rrn="607309000042")
    aac = tlv.encode(0x9F26, bytes(8)) + tlv.encode(0x9F27, b"\x00")
    rev = m.reversal(original, stan=43, at=AT + datetime.timedelta(minutes=1),
                     reason=m.ReversalReason.CARD_DECLINED, response=answer, icc_data=aac)
    assert rev["t"] == "0400" and rev["11"] == "000043" and rev["39"] == "06"
    assert rev["7"] == "0314091600"
    assert rev["90"] == "0200" + "000042" + "0314091500" + "00000123456" + "00000000000"
    assert (rev["37"], rev["38"]) == ("607309000042", "A1B2C3")
    assert bytes.fromhex(rev["55"]) == aac
    assert not {"2", "14", "22", "23", "35", "52"} & set(rev)
    assert (rev["3"], rev["4"], rev["12"], rev["13"], rev["49"]) == ("000000", "000000001234", "101500",
                                                                     "0314", "978")
    kept = m.identity(original)
    assert PAN not in repr(kept) and TRACK2_TEXT not in str(kept) and "2" not in kept
    assert m.reversal(kept, stan=43, at=AT + datetime.timedelta(minutes=1),
                      reason=m.ReversalReason.CARD_DECLINED, response=answer, icc_data=aac) == rev


def test_reversal_refusals() -> None:
    with pytest.raises(m.MessageError, match="0100 or 0200"):
        m.reversal(every_message()["0220"], stan=1, at=AT, reason=m.ReversalReason.NO_RESPONSE)
    with pytest.raises(m.MessageError, match="lacks"):
        m.reversal({"t": "0200", "11": "000001"}, stan=1, at=AT, reason=m.ReversalReason.NO_RESPONSE)
    with pytest.raises(m.MessageError, match="ReversalReason"):
        m.reversal(sale(), stan=1, at=AT, reason="99")  # type: ignore[arg-type]


def test_repeat_changes_only_the_mti_and_drops_the_mac() -> None:
    built = every_message()
    signed = m.verify_mac(m.attach_mac(built["0400"], MAC, ksn=KSN), MAC)
    again = m.repeat(signed)
    assert again["t"] == "0401"
    assert {k: v for k, v in again.items() if k != "t"} == \
        {k: v for k, v in signed.items() if k not in ("t", "128")}
    assert m.repeat(again)["t"] == "0401"
    assert m.repeat(built["0220"])["t"] == "0221"
    with pytest.raises(m.MessageError, match="repeat"):
        m.repeat(built["0200"])


def test_reconciliation_totals() -> None:
    recon = every_message()["0500"]
    # two records: Visa 12 debits 456.00, 1 credit 15.00; CB 3 debits 99.00
    assert recon["63"] == ("A000000003" "000012" "000000045600" "000001" "000000001500"
                           "A000000042" "000003" "000000009900" "000000" "000000000000")
    assert (recon["74"], recon["76"]) == ("0000000001", "0000000015")
    assert (recon["86"], recon["88"]) == ("0000000000001500", "0000000000055500")
    assert recon["60"] == "000017" and recon["49"] == "978"
    parsed = m.reconciliation_totals(m.unpack(m.pack(recon)))
    assert [(t.rid.hex().upper(), t.debit_count, t.debit_amount) for t in parsed] == \
        [("A000000003", 12, 45600), ("A000000042", 3, 9900)]
    tampered = m.Fields({**recon, "88": "0000000000055501"})
    with pytest.raises(m.MessageError, match="88"):
        m.reconciliation_totals(tampered)
    with pytest.raises(m.MessageError, match="records"):
        m.reconciliation_totals(m.Fields({**recon, "63": recon["63"][:-1]}))
    empty = m.reconciliation([], acceptor=ACCEPTOR, stan=1, at=AT, batch_number=1, currency=978)
    assert "63" not in empty and empty["76"] == "0000000000"
    assert m.reconciliation_totals(empty) == ()


def test_reconciliation_refusals() -> None:
    visa = m.SchemeTotals(bytes.fromhex("A000000003"), 1, 100, 0, 0)
    with pytest.raises(m.MessageError, match="twice"):
        m.reconciliation([visa, visa], acceptor=ACCEPTOR, stan=1, at=AT, batch_number=1, currency=978)
    with pytest.raises(m.MessageError, match="RID"):
        m.SchemeTotals(b"\xA0\x00", 1, 100, 0, 0)
    with pytest.raises(m.MessageError, match="debit_amount"):
        m.SchemeTotals(bytes.fromhex("A000000003"), 1, -5, 0, 0)


# --- Responses and the kernel's OnlineResponse ----------------------------------------------

def test_response_echoes_without_card_data() -> None:
    request = sale()
    answer = m.response_to(request, "00", approval_code="A1B2C3", rrn="607309000042")
    assert answer["t"] == "0210"
    for key in ("3", "4", "7", "11", "12", "13", "32", "41", "42", "49", "53"):
        assert answer[key] == request[key]
    assert not {"2", "14", "22", "23", "35", "52", "55"} & set(answer)
    assert m.response_to(every_message()["0221"], "00")["t"] == "0230"
    with pytest.raises(m.MessageError, match="38"):
        m.response_to(every_message()["0800"], "00", approval_code="A1B2C3")
    with pytest.raises(m.MessageError, match="request"):
        m.response_to(answer, "00")


ARPC = bytes.fromhex("3F1C2B9A8D7E6F5A3030")
SCRIPT_72 = tlv.encode(0x72, tlv.encode(0x9F18, bytes.fromhex("00000001"))
                       + tlv.encode(0x86, bytes.fromhex("84DA9F580A0411223344556677")))
SCRIPT_71 = tlv.encode(0x71, tlv.encode(0x86, bytes.fromhex("8418000004AABBCCDD")))


def host_answer(code: str, icc: bytes | None = None, **kwargs: str) -> m.Fields:
    return m.unpack(m.pack(m.response_to(sale(), code, icc_data=icc, **kwargs)))


def test_approval_to_online_response() -> None:
    icc = tlv.encode(0x91, ARPC) + SCRIPT_71 + SCRIPT_72
    response = m.to_online_response(host_answer("00", icc, approval_code="A1B2C3", rrn="607309000042"))
    assert response == OnlineResponse(status=HostStatus.RESPONDED, approved=True, response_code=b"00",
                                      issuer_authentication_data=ARPC, scripts=SCRIPT_71 + SCRIPT_72,
                                      authorization_code=b"A1B2C3", host_reference="607309000042")


@pytest.mark.parametrize(("code", "approved", "extra"), [
    ("00", True, {}), ("11", True, {}), ("05", False, {}), ("51", False, {}), ("55", False, {}),
    ("08", False, {"reversal": "required"}), ("10", False, {"reversal": "required"}),
    ("Z9", False, {}),
])
def test_response_codes(code: str, approved: bool, extra: dict[str, str]) -> None:
    response = m.to_online_response(host_answer(code))
    assert response.status is HostStatus.RESPONDED
    assert response.approved is approved
    assert response.response_code == code.encode()
    assert response.extra == extra
    assert response.issuer_authentication_data is None and response.scripts == b""


@pytest.mark.parametrize("code", ["91", "96"])
def test_issuer_unavailable_is_unable_to_go_online(code: str) -> None:
    response = m.to_online_response(host_answer(code))
    assert response.status is HostStatus.UNABLE and not response.approved
    assert response.extra == {"response_code": code}


def test_issuer_8a_goes_to_the_card() -> None:
    icc = tlv.encode(0x91, ARPC) + tlv.encode(0x8A, b"01")
    response = m.to_online_response(host_answer("05", icc))
    assert response.response_code == b"01" and not response.approved


def test_malformed_script_template_is_passed_to_the_kernel() -> None:
    broken = bytes.fromhex("7210") + bytes.fromhex("9F1804000000")  # '72' announces 16, holds 6
    icc = tlv.encode(0x91, ARPC) + SCRIPT_71 + broken
    response = m.to_online_response(host_answer("00", None) | {"55": icc.hex().upper()})
    assert response.scripts == SCRIPT_71 + broken
    inner_broken = tlv.encode(0x72, bytes.fromhex("9F1808"))  # framing fine, contents not
    response = m.to_online_response(host_answer("00", None) | {"55": inner_broken.hex().upper()})
    assert response.scripts == inner_broken


@pytest.mark.parametrize("icc", [
    tlv.encode(0x91, ARPC) + tlv.encode(0x91, ARPC),
    tlv.encode(0x8A, b"0"),
    bytes.fromhex("9110") + ARPC,  # '91' overruns the field
    bytes.fromhex("9F"),
])
def test_malformed_response_field_55(icc: bytes) -> None:
    with pytest.raises(m.MessageError):
        m.to_online_response(host_answer("00", None) | {"55": icc.hex().upper()})


def test_only_authorization_responses_convert() -> None:
    with pytest.raises(m.MessageError):
        m.to_online_response(every_message()["0230"])
    with pytest.raises(m.MessageError):
        m.to_online_response(sale())


# --- MAC -------------------------------------------------------------------------------------

def test_mac_input_is_the_message_without_its_mac_and_with_the_mac_bit_set() -> None:
    signed = m.attach_mac(sale(), MAC)
    covered = m.mac_input(signed)
    assert covered == SALE_MAC_INPUT == signed[:-8]
    assert covered[4 + 7] & 0x01  # bit 64: last bit of the primary bitmap
    with pytest.raises(m.MacError):
        m.mac_input(m.pack(sale()))


def test_verify_mac_accepts_the_right_key_and_refuses_another() -> None:
    signed = m.attach_mac(sale(), MAC)
    assert m.verify_mac(signed, MAC)["2"] == PAN
    with pytest.raises(m.MacError):
        m.verify_mac(signed, aes_cmac_8(OTHER_KEY))


@pytest.mark.parametrize("where", ["amount digit", "mac", "ksn"])
def test_a_changed_byte_fails_the_mac(where: str) -> None:
    signed = bytearray(m.attach_mac(sale(), MAC))
    if where == "amount digit":
        at = signed.index(b"000000001234") + 11
        signed[at] = ord("5")  # still a valid message: only the MAC notices
    elif where == "mac":
        signed[-1] ^= 0x01
    else:
        signed[signed.index(KSN)] ^= 0x80
    with pytest.raises(m.MacError):
        m.verify_mac(bytes(signed), MAC)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_flipped_byte_is_refused(data: st.DataObject) -> None:
    signed = bytearray(m.attach_mac(sale(), MAC))
    position = data.draw(st.integers(0, len(signed) - 1))
    signed[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(m.MessageError):
        m.verify_mac(bytes(signed), MAC)


def test_ksn_goes_to_field_53_and_must_match_the_pin_block() -> None:
    rev = every_message()["0400"]
    fields = m.verify_mac(m.attach_mac(rev, MAC, ksn=KSN), MAC)
    assert m.key_serial(fields) == KSN and "128" in fields
    assert m.key_serial(every_message()["0800"]) is None
    other = bytes.fromhex("0123456789ABCDEF00000002")
    with pytest.raises(m.MessageError, match="one KSN"):
        m.attach_mac(sale(), MAC, ksn=other)
    with pytest.raises(m.MessageError, match="12 bytes"):
        m.attach_mac(rev, MAC, ksn=bytes(10))
    with pytest.raises(m.MessageError, match="53"):
        m.attach_mac(rev, MAC)  # a MAC without a KSN


def test_mac_function_must_give_8_bytes() -> None:
    with pytest.raises(m.MessageError, match="8 bytes"):
        m.attach_mac(sale(), lambda data: bytes(16))


def test_test_mac_function_is_aes_cmac() -> None:
    # NIST SP 800-38B, D.1 example 2 (AES-128, one block): T = 070a16b46b4d4144f79bdd9dd04a287c
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    message = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    assert aes_cmac_8(key)(message) == bytes.fromhex("070a16b46b4d4144")


# --- With the simulated card: a real OnlineRequest and a real offline outcome ----------------

@cache
def kernel_config() -> object:
    from firmware.config import load_config
    return load_config()


class Capture:
    label = "capture"

    def __init__(self) -> None:
        self.seen: list[OnlineRequest] = []

    def authorize(self, request: OnlineRequest) -> OnlineResponse:
        self.seen.append(request)
        return OnlineResponse.unable()


def simulated_sale(profile: str, amount: int, authorizer: object | None) -> object:
    from firmware.prompts import ScriptedPrompt
    from firmware.sale import pin_pad_of
    from sim.inprocess import fresh_card, transact
    config = kernel_config()
    prompt = ScriptedPrompt(pin="1234", pin_pad=pin_pad_of(config))  # type: ignore[arg-type]
    return transact(fresh_card(profile), config.kernel, amount, prompt=prompt,  # type: ignore[attr-defined]
                    authorizer=authorizer)


def test_a_real_online_request_becomes_a_0200() -> None:
    capture = Capture()
    simulated_sale("visa_cda_online", 6000, capture)
    request = capture.seen[0]
    # the PIN pad's block comes with the DUKPT KSN of its key (firmware/pin_pad.py)
    assert request.pin_block is not None and request.pin_key_serial is not None
    fields = m.unpack(m.pack(m.financial_request(request, acceptor=ACCEPTOR, stan=1, at=AT)))
    assert fields["2"] == request.pan.reveal()
    assert bytes.fromhex(fields["53"]) == request.pin_key_serial
    assert bytes.fromhex(fields["55"]) == request.chip_data
    chip = dict(tlv.primitives(tlv.decode(bytes.fromhex(fields["55"]))))
    assert chip[0x9F27][0] & 0xC0 == 0x80  # ARQC
    assert int(fields["4"]) == int(chip[0x9F02].hex()) == 6000
    assert request.track2 is not None
    assert fields["35"] == request.track2.reveal().hex().upper().rstrip("F")


def test_a_real_offline_approval_becomes_an_advice() -> None:
    run = simulated_sale("offline_approving", 1000, None)
    outcome = run.outcome  # type: ignore[attr-defined]
    assert outcome.kind is OutcomeKind.APPROVED_OFFLINE
    advice = m.offline_advice(outcome, acceptor=ACCEPTOR, stan=5, at=AT, transaction_time=AT)
    signed = m.attach_mac(advice, MAC, ksn=KSN)
    fields = m.verify_mac(signed, MAC)
    chip = dict(tlv.primitives(tlv.decode(bytes.fromhex(fields["55"]))))
    assert chip[0x9F27][0] & 0xC0 == 0x40  # TC
    assert fields["39"] == "Y1" and int(fields["4"]) == 1000


# --- Property tests -------------------------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_unpack_or_raise_message_error(data: bytes) -> None:
    try:
        fields = m.unpack(data)
    except m.MessageError:
        return
    assert m.pack(fields) == data


@cache
def valid_messages() -> list[bytes]:
    messages = [m.pack(fields) for fields in every_message().values()]
    return messages + [m.attach_mac(fields, MAC, ksn=None if "53" in fields else KSN)
                       for fields in every_message().values()]


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_damaged_messages_unpack_or_raise_message_error(data: st.DataObject) -> None:
    message = bytearray(data.draw(st.sampled_from(valid_messages())))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        position = data.draw(st.integers(0, max(0, len(message) - 1)))
        if action == "flip" and message:
            message[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del message[position:]
        elif action == "insert":
            message[position:position] = data.draw(st.binary(min_size=1, max_size=3))
        elif message:
            del message[position]
    try:
        fields = m.unpack(bytes(message))
    except m.MessageError:
        return
    assert m.pack(fields) == bytes(message)


_ALPHABETS = {
    "n": "0123456789",
    "an": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "ans": "".join(chr(c) for c in range(0x20, 0x7F)),
    "z": "0123456789D",
}


def field_values(number: str) -> st.SearchStrategy[str]:
    field = FIELDS[number]
    low = field.max_len if field.prefix == 0 else 1
    if field.attribute == "b":
        return st.binary(min_size=low, max_size=field.max_len).map(lambda b: b.hex().upper())
    return st.text(alphabet=_ALPHABETS[field.attribute], min_size=low, max_size=field.max_len)


@st.composite
def valid_fields(draw: st.DrawFn) -> dict[str, str]:
    mti = draw(st.sampled_from(sorted(PRESENCE)))
    table = PRESENCE[mti]
    numbers = {number for number, rule in table.items() if rule == "M"}
    optional = sorted(number for number, rule in table.items()
                      if rule == "C" and number not in ("53", "64", "128", "55", "56"))
    numbers |= set(draw(st.lists(st.sampled_from(optional), unique=True))) if optional else set()
    if mti in ("0220", "0221"):
        numbers.add(draw(st.sampled_from(["55", "56"])))
    elif "55" in table and draw(st.booleans()):
        numbers.add("55")
    mac = draw(st.booleans())
    if "52" in numbers or mac or ("53" in table and draw(st.booleans())):
        numbers.add("53")
    if mac:
        numbers.add("128" if any(65 <= int(n) <= 127 for n in numbers) else "64")
    return {"t": mti, **{number: draw(field_values(number)) for number in numbers}}


@settings(max_examples=500, deadline=None)
@given(valid_fields())
def test_any_valid_message_round_trips(fields: dict[str, str]) -> None:
    data = m.pack(fields)
    assert m.unpack(data) == fields
    assert m.pack(m.unpack(data)) == data


# --- The documentation's presence table is the code's ---------------------------------------

def test_host_protocol_presence_table_matches_the_spec() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "host-protocol.md").read_text(encoding="utf-8")
    lines = text[text.index("| field | 0100"):].splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    mtis = header[1:]
    assert mtis == list(PRESENCE)
    rows: dict[str, list[str]] = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    assert list(rows) == list(FIELDS)
    for number, cells in rows.items():
        for mti, cell in zip(mtis, cells, strict=True):
            rule = PRESENCE[mti].get(number, "-")
            # 53 and the MAC: conditional for pack, always present on the wire
            wire = "M" if number in ("53", "64", "128") and rule == "C" else rule
            assert cell == wire, f"field {number} in {mti}"
