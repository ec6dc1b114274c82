"""Sensitive values (emv/sensitive.py) and what leaves the kernel for the host (emv/online_data.py)."""

from __future__ import annotations

import copy
import datetime
import hashlib
import logging
import pickle
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv import online_data, tlv
from emv.context import Context, Transaction
from emv.errors import EmvError
from emv.kernel_config import KernelConfig, TerminalConfig
from emv.sensitive import Sensitive, pan_token

PAN = "4761739001010010"
PIN = "1234"


# --- Sensitive ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [PIN, PAN, b"\x12\x34\x56\x78", "é1234", ""])
def test_value_never_shown(value: str | bytes) -> None:
    secret = Sensitive(value, "PAN")
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>30}", format(secret, "s"),
             ascii(secret), repr([secret]), repr({"pan": secret}), str((secret,))]
    clear = [value.hex(), value.hex().upper(), repr(value)] if isinstance(value, bytes) else [value]
    for text in shown:
        assert "hidden" in text and "PAN" in text
        for form in clear:
            if form:
                assert form not in text


def test_value_not_shown_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").debug("card %s pin %r", Sensitive(PAN, "PAN"), Sensitive(PIN, "PIN"))
    assert PAN not in caplog.text and PIN not in caplog.text


def test_reveal_and_length() -> None:
    assert Sensitive(PAN).reveal() == PAN
    assert Sensitive(b"\x01\x02").reveal() == b"\x01\x02"
    assert len(Sensitive(PAN)) == 16


def test_default_label() -> None:
    assert repr(Sensitive(PIN)) == "<secret: hidden>"


@pytest.mark.parametrize("value", [1234, None, bytearray(b"12"), ["1"], 12.5])
def test_only_str_or_bytes(value: object) -> None:
    with pytest.raises(TypeError):
        Sensitive(value)  # type: ignore[type-var]


def test_no_attributes_can_be_added() -> None:
    secret = Sensitive(PIN)
    with pytest.raises(AttributeError):
        secret.extra = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(("a", "b", "equal"), [
    ("1234", "1234", True),
    ("1234", "1235", False),
    ("1234", "12345", False),
    ("", "", True),
    ("é", "é", True),
    ("é", "e", False),
    (b"\x00\x01", b"\x00\x01", True),
    (b"\x00\x01", b"\x00\x02", False),
    (b"1234", "1234", False),  # bytes and text are different values
])
def test_equality(a: str | bytes, b: str | bytes, equal: bool) -> None:
    left, right = Sensitive(a, "x"), Sensitive(b, "y")  # the label is not part of the value
    assert (left == right) is equal
    assert (right == left) is equal
    assert (left != right) is not equal


def test_never_equal_to_its_clear_value() -> None:
    assert Sensitive(PIN) != PIN
    assert PIN != Sensitive(PIN)  # noqa: SIM300 - the reflected comparison is the point
    assert Sensitive(b"12") != b"12"


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert Sensitive("1234") == Sensitive("1234")
    assert Sensitive(b"ab") != Sensitive(b"ac")
    assert calls == [(b"1234", b"1234"), (b"ab", b"ac")]


@given(st.text(max_size=20), st.text(max_size=20))
def test_equality_is_value_equality(a: str, b: str) -> None:
    assert (Sensitive(a) == Sensitive(b)) is (a == b)


def test_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(Sensitive(PAN))
    with pytest.raises(TypeError):
        _ = {Sensitive(PAN)}
    with pytest.raises(TypeError):
        _ = {Sensitive(PAN): 1}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_not_picklable(protocol: int) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Sensitive(PAN), protocol=protocol)
    with pytest.raises(TypeError):
        pickle.dumps({"pan": Sensitive(PAN)}, protocol=protocol)


def test_not_copied_either() -> None:
    with pytest.raises(TypeError):
        copy.deepcopy(Sensitive(PAN))


def test_pan_token() -> None:
    token = pan_token(PAN)
    assert token == pan_token(PAN)
    assert token == hashlib.sha256(PAN.encode()).hexdigest()
    assert PAN not in token
    assert pan_token(PAN, 1) == hashlib.sha256(f"{PAN}/01".encode()).hexdigest()
    tokens = {pan_token(PAN), pan_token(PAN, 0), pan_token(PAN, 1), pan_token(PAN, 2),
              pan_token("4761739001010028"), pan_token("4761739001010028", 1)}
    assert len(tokens) == 6


# --- online_data ----------------------------------------------------------------------------

WHEN = datetime.datetime(2026, 3, 14, 9, 26, 53)
AID = bytes.fromhex("A0000000031010")
TRACK2 = bytes.fromhex("4761739001010010D49122011234567800000F")
ARQC = bytes.fromhex("1122334455667788")
IAD = bytes.fromhex("06011203A00000")


def context(**card: bytes) -> Context:
    terminal = TerminalConfig(country=250, currency=978, terminal_type=0x22, ifd_serial="SN000042")
    ctx = Context(config=KernelConfig(terminal=terminal),
                  transaction=Transaction(amount=1500, when=WHEN, sequence_counter=42, other_amount=0),
                  rng=random.Random(3).randbytes)
    ctx.unpredictable_number = bytes.fromhex("CAFEBABE")
    ctx.card.update({0x5A: bytes.fromhex(PAN), 0x5F34: b"\x01", 0x5F24: bytes.fromhex("491231"),
                     0x57: TRACK2, 0x84: AID, 0x82: bytes.fromhex("3900"), 0x9F36: bytes.fromhex("0042"),
                     0x9F26: ARQC, 0x9F27: b"\x80", 0x9F10: IAD})
    for name, value in card.items():
        ctx.card[int(name[1:], 16)] = value
    return ctx


def test_chip_data_carries_the_field_55_tags() -> None:
    ctx = context()
    ctx.tvr.set((1, 0x80))  # TVR byte 2, something set
    objects = tlv.decode(online_data.chip_data(ctx))
    got = {obj.tag: obj.value for obj in objects}
    assert len(got) == len(objects)  # each tag once
    # Values written out from the transaction above (EMV 4.4 Book 3, Annex A formats).
    assert got == {
        0x9F26: ARQC, 0x9F27: b"\x80", 0x9F10: IAD, 0x9F37: bytes.fromhex("CAFEBABE"),
        0x9F36: bytes.fromhex("0042"), 0x95: bytes.fromhex("0080000000"), 0x9A: bytes.fromhex("260314"),
        0x9C: b"\x00", 0x9F02: bytes.fromhex("000000001500"), 0x5F2A: bytes.fromhex("0978"),
        0x82: bytes.fromhex("3900"), 0x9F1A: bytes.fromhex("0250"), 0x9F03: bytes(6),
        0x9F33: bytes.fromhex("E0F8C8"), 0x9F34: bytes.fromhex("3F0000"), 0x9F35: b"\x22",
        0x9F1E: b"SN000042", 0x84: AID, 0x9F41: bytes.fromhex("00000042"), 0x5F34: b"\x01",
    }
    # The PAN and track 2 travel in fields 2 and 35, never in field 55.
    assert 0x5A not in got and 0x57 not in got


def test_chip_data_leaves_out_what_is_missing_or_empty() -> None:
    ctx = context()
    ctx.unpredictable_number = b""
    del ctx.card[0x9F27]
    got = {obj.tag for obj in tlv.decode(online_data.chip_data(ctx))}
    assert 0x9F37 not in got and 0x9F27 not in got and 0x9F09 not in got
    assert 0x9F26 in got


def test_request() -> None:
    ctx = context()
    ctx.online_pin_block = Sensitive(bytes(16), "PIN block")
    ctx.pin_key_serial = bytes.fromhex("FFFF01")
    request = online_data.request(ctx, "ARQC", advice=True)
    assert isinstance(request.pan, Sensitive) and request.pan.reveal() == PAN
    assert request.pan_sequence_number == 1
    assert request.expiry == "4912"
    assert isinstance(request.track2, Sensitive) and request.track2.reveal() == TRACK2
    assert (request.amount, request.other_amount) == (1500, 0)
    assert (request.currency, request.transaction_type) == (978, 0)
    assert request.aid == AID
    assert request.chip_data == online_data.chip_data(ctx)
    assert request.pin_block is ctx.online_pin_block and request.pin_key_serial == bytes.fromhex("FFFF01")
    assert request.cryptogram_type == "ARQC" and request.advice is True
    shown = repr(request)
    assert PAN not in shown and TRACK2.hex() not in shown.lower()


def test_request_with_odd_pan_padding_and_no_track2() -> None:
    ctx = context(t5A=bytes.fromhex("476173900101001F"), t5F34=b"\x12")
    del ctx.card[0x57]
    request = online_data.request(ctx, "TC")
    assert request.pan.reveal() == "476173900101001"
    assert request.track2 is None and request.pin_block is None
    assert request.pan_sequence_number == 12
    assert request.cryptogram_type == "TC" and request.advice is False


@pytest.mark.parametrize(("psn", "expected"), [(b"\x00", 0), (b"\x99", 99), (b"\x1A", None), (b"", None),
                                                (b"\x01\x02", None)])
def test_pan_sequence_number(psn: bytes, expected: int | None) -> None:
    assert online_data.request(context(t5F34=psn), "ARQC").pan_sequence_number == expected


@pytest.mark.parametrize(("expiry", "expected"), [("491231", "4912"), ("4912", None), ("49123A", None),
                                                  ("", None)])
def test_expiry(expiry: str, expected: str | None) -> None:
    assert online_data.request(context(t5F24=bytes.fromhex(expiry)), "ARQC").expiry == expected


@pytest.mark.parametrize("pan", [None, b"", b"\xff", b"\x47\x61\xAB\xCD", bytes.fromhex("12" * 10)])
def test_request_without_a_usable_pan_is_refused(pan: bytes | None) -> None:
    ctx = context()
    if pan is None:
        del ctx.card[0x5A]
    else:
        ctx.card[0x5A] = pan
    assert online_data.pan(ctx) is None
    with pytest.raises(EmvError) as info:
        online_data.request(ctx, "ARQC")
    assert PAN not in str(info.value)
