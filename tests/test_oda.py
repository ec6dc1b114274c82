"""Offline data authentication (EMV 4.4 Book 3, 10.3; Book 2, 5 and 6) against the simulated card.

The simulated card's CA keys (`sim/card/ca_keys.toml`) and its issuer and ICC keys are TEST KEYS.
Expected results are checked against the card's own keys and profile values and against an
independent recovery of the signatures (`test_sim_card_support`), never against `emv.oda` itself;
expected TVR/TSI values are written out from Book 3 Annex C5/C6.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import random
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sim_card_support import PublicKey, expected_ac, recover_sdad

from emv import apdu, card_data, dol, oda, tlv
from emv.apdu import Response
from emv.capk import load_capks
from emv.context import Context, Transaction
from emv.kernel_config import AidParams, KernelConfig, TerminalConfig
from emv.outcome import Terminate
from emv.requests import Transmit
from firmware.driver import card_sender
from sim.card import pki
from sim.card.card import SimCard
from sim.card.profile import Application, load_profile

WHEN = datetime.datetime(2026, 11, 26, 12, 0)
UN = bytes.fromhex("1A2B3C4D")
CA_KEYS = load_capks((Path(__file__).parents[1] / "sim" / "card" / "ca_keys.toml").read_text())


def make_card(name: str) -> SimCard:
    return SimCard(load_profile(name), rng=random.Random(1), today=lambda: WHEN.date())


def make_context(*, capabilities: bytes = bytes.fromhex("E0F8C8"), **config: Any) -> Context:
    kernel = KernelConfig(terminal=TerminalConfig(capabilities=capabilities), ca_keys=CA_KEYS, **config)
    ctx = Context(config=kernel, transaction=Transaction(amount=1234, when=WHEN),
                  rng=lambda n: bytes(range(n)))
    ctx.unpredictable_number = UN
    return ctx


# Book 3, Annex C5 (TVR byte 1) and C6 (TSI byte 1), written out.
NOTHING = bytes.fromhex("0000000000")
ODA_NOT_PERFORMED = bytes.fromhex("8000000000")
SDA_SELECTED = bytes.fromhex("0200000000")
SDA_FAILED = bytes.fromhex("4200000000")  # SDA failed + SDA selected
SDA_DATA_MISSING = bytes.fromhex("6200000000")  # + ICC data missing
DDA_FAILED = bytes.fromhex("0800000000")
DDA_DATA_MISSING = bytes.fromhex("2800000000")
CDA_FAILED = bytes.fromhex("0400000000")
CDA_DATA_MISSING = bytes.fromhex("2400000000")
TSI_ODA = bytes.fromhex("8000")
TSI_NONE = bytes.fromhex("0000")

FAILED_BY_PROFILE = {"sda_only": SDA_FAILED, "dda_offline_pin": DDA_FAILED, "visa_cda_online": CDA_FAILED}
MISSING_BY_PROFILE = {"sda_only": SDA_DATA_MISSING, "dda_offline_pin": DDA_DATA_MISSING,
                      "visa_cda_online": CDA_DATA_MISSING}
METHOD_PROFILES = list(FAILED_BY_PROFILE)


Sender = Callable[[Transmit], Response]


def drive(gen: Generator[Transmit, Response, Any], send: Sender) -> Any:
    """Run a kernel generator, answering every `Transmit` with `send`."""
    try:
        request = next(gen)
        while True:
            assert isinstance(request, Transmit)
            request = gen.send(send(request))
    except StopIteration as stop:
        return stop.value


class Recorder:
    """Answers with `send` (or a fixed answer) and keeps every command and answer."""

    def __init__(self, send: Sender | None = None, answer: Response | None = None) -> None:
        self._send = send
        self._answer = answer
        self.exchanges: list[tuple[apdu.Command, Response]] = []

    def __call__(self, request: Transmit) -> Response:
        if self._answer is not None:
            response = self._answer
        else:
            assert self._send is not None
            response = self._send(request)
        self.exchanges.append((request.command, response))
        return response

    @property
    def commands(self) -> list[apdu.Command]:
        return [command for command, _ in self.exchanges]


def run_oda(ctx: Context, send: Sender) -> Recorder:
    recorder = send if isinstance(send, Recorder) else Recorder(send)
    drive(oda.offline_data_authentication(ctx), recorder)
    return recorder


def read_application(ctx: Context, send: Sender, card: SimCard) -> None:
    """SELECT, GET PROCESSING OPTIONS and READ RECORD as Book 3, 10.1-10.2 and 10.3 ask; collects
    the static data to authenticate the way Book 3, 10.3 describes it."""
    app = card.profile.applications[0]
    ctx.aid_params = AidParams(aid=app.aid)
    fci = send(Transmit(apdu.select(app.aid)))
    assert fci.ok
    (template,) = tlv.decode(fci.data)
    for tag, value in tlv.primitives([template]):
        ctx.card.setdefault(tag, value)
    pdol = ctx.card.get(0x9F38, b"")
    ctx.pdol_data = dol.build(pdol, ctx.dol_data())
    gpo = send(Transmit(apdu.get_processing_options(ctx.pdol_data)))
    assert gpo.ok
    (answer,) = tlv.decode(gpo.data)
    if answer.tag == 0x80:
        aip, afl = answer.value[:2], answer.value[2:]
    else:
        aip, afl = answer.find(0x82).value, answer.find(0x94).value  # type: ignore[union-attr]
    ctx.card[0x82], ctx.card[0x94] = aip, afl
    ctx.aip = card_data.decode_aip(aip)
    ctx.afl = card_data.parse_afl(afl)
    for entry in ctx.afl:
        for number in range(entry.first, entry.last + 1):
            record = send(Transmit(apdu.read_record(number, entry.sfi)))
            assert record.ok
            (body,) = tlv.decode(record.data)
            assert body.tag == 0x70
            for tag, value in tlv.primitives([body]):
                ctx.card[tag] = value
            if number < entry.first + entry.oda_count:
                ctx.oda_data += body.value if entry.sfi <= 10 else record.data
    if ctx.card.get(0x9F4A) == b"\x82":
        ctx.oda_data += aip


def ready(name: str, **config: Any) -> tuple[Context, Sender, SimCard]:
    card = make_card(name)
    card.power_on()
    send = card_sender(card.process, card.protocol)
    ctx = make_context(**config)
    read_application(ctx, send, card)
    return ctx, send, card


# -- issuer public key -------------------------------------------------------------------------


def app_of(card: SimCard) -> Application:
    return card.profile.applications[0]


def public_key(name: str | None) -> PublicKey:
    assert name is not None
    key = pki.load_key(name)
    return PublicKey(int.from_bytes(key.modulus, "big"), int.from_bytes(key.exponent, "big"))


def with_config(ctx: Context, **changes: Any) -> Context:
    return dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, **changes))


@pytest.mark.parametrize("name", ["visa_cda_online", "dda_offline_pin", "sda_only", "mastercard_cda"])
def test_issuer_public_key_recovered_and_cached(name: str) -> None:
    ctx, _send, card = ready(name)
    key = oda.issuer_public_key(ctx)
    assert key is not None
    assert key.modulus == pki.load_key(app_of(card).issuer_key or "").modulus
    assert key.serial == app_of(card).issuer_cert_serial
    assert ctx.issuer_key is key
    assert oda.issuer_public_key(ctx) is key
    assert ctx.tvr.value == NOTHING and ctx.tsi.value == TSI_NONE


def _expired_ca_keys() -> dict[Any, Any]:
    return {k: dataclasses.replace(v, expiry=datetime.date(2026, 11, 25)) for k, v in CA_KEYS.items()}


def _bad_checksum_ca_keys() -> dict[Any, Any]:
    return {k: dataclasses.replace(v, checksum=bytes(20)) for k, v in CA_KEYS.items()}


@pytest.mark.parametrize("breakage", ["unknown_index", "expired_ca", "ca_checksum", "revoked", "no_90",
                                      "no_9F32", "no_8F", "no_pan", "other_pan", "other_rid", "no_aid"])
def test_issuer_public_key_none_without_touching_tvr(breakage: str) -> None:
    ctx, _send, card = ready("visa_cda_online")
    app = app_of(card)
    if breakage == "unknown_index":
        ctx.card[0x8F] = b"\x01"
    elif breakage == "expired_ca":
        ctx = with_config(ctx, ca_keys=_expired_ca_keys())
    elif breakage == "ca_checksum":
        ctx = with_config(ctx, ca_keys=_bad_checksum_ca_keys())
    elif breakage == "revoked":
        ctx = with_config(ctx, revoked=frozenset({(app.aid[:5], ctx.card[0x8F][0], app.issuer_cert_serial)}))
    elif breakage == "other_pan":
        ctx.card[0x5A] = bytes.fromhex("5413330000000035")
    elif breakage == "other_rid":
        ctx.card[0x84] = bytes.fromhex("A0000000041010")
    elif breakage == "no_aid":
        del ctx.card[0x84]
    else:
        del ctx.card[{"no_90": 0x90, "no_9F32": 0x9F32, "no_8F": 0x8F, "no_pan": 0x5A}[breakage]]
    assert oda.issuer_public_key(ctx) is None
    assert ctx.issuer_key is None
    assert ctx.tvr.value == NOTHING and ctx.tsi.value == TSI_NONE
    assert ctx.events


def test_issuer_public_key_revocation_names_the_serial_only() -> None:
    ctx, _send, card = ready("visa_cda_online")
    other = bytes([app_of(card).issuer_cert_serial[0] ^ 0xFF]) + app_of(card).issuer_cert_serial[1:]
    ctx = with_config(ctx, revoked=frozenset({(app_of(card).aid[:5], ctx.card[0x8F][0], other)}))
    assert oda.issuer_public_key(ctx) is not None


# -- the simulated cards, method by method -----------------------------------------------------


@pytest.mark.parametrize("name", ["visa_cda_online", "mastercard_cda", "padded_long_form"])
def test_cda_cards_get_their_keys_recovered_before_generate_ac(name: str) -> None:
    ctx, send, card = ready(name)
    recorder = run_oda(ctx, send)
    assert recorder.commands == []
    assert ctx.oda_method == "cda"
    assert ctx.icc_key is not None and ctx.icc_key.modulus == pki.load_key(app_of(card).icc_key or "").modulus
    assert oda.cda_requested(ctx)
    # Book 3, 10.3: ODA counts as performed once the signature is checked at GENERATE AC.
    assert ctx.tvr.value == NOTHING and ctx.tsi.value == TSI_NONE


@pytest.mark.parametrize("name", ["dda_offline_pin", "offline_approving"])
def test_dda_cards_pass_internal_authenticate(name: str) -> None:
    ctx, send, card = ready(name)
    recorder = run_oda(ctx, send)
    assert ctx.oda_method == "dda"
    assert ctx.tvr.value == NOTHING and ctx.tsi.value == TSI_ODA
    assert not oda.cda_requested(ctx)
    ((command, response),) = recorder.exchanges
    assert command.ins == apdu.INS_INTERNAL_AUTHENTICATE and command.data == UN  # card DDOL 9F3704
    (template,) = tlv.decode(response.data)
    sdad = template.value if template.tag == 0x80 else template.find(0x9F4B).value  # type: ignore[union-attr]
    dynamic = recover_sdad(public_key(app_of(card).icc_key), sdad, UN)
    assert ctx.card[0x9F4C] == dynamic[1:1 + dynamic[0]]


@pytest.mark.parametrize("name", ["sda_only", "expired_card"])
def test_sda_cards_pass_and_give_the_data_authentication_code(name: str) -> None:
    ctx, send, card = ready(name)
    recorder = run_oda(ctx, send)
    assert recorder.commands == []
    assert ctx.oda_method == "sda"
    assert ctx.tvr.value == SDA_SELECTED and ctx.tsi.value == TSI_ODA
    assert ctx.card[0x9F45] == app_of(card).data_auth_code


def test_corrupted_icc_certificate_fails_dda_without_internal_authenticate() -> None:
    ctx, send, _card = ready("corrupted_icc_certificate")
    recorder = run_oda(ctx, send)
    assert recorder.commands == []
    assert ctx.oda_method == "dda"
    assert ctx.tvr.value == DDA_FAILED and ctx.tsi.value == TSI_ODA
    assert ctx.icc_key is None and 0x9F4C not in ctx.card


@pytest.mark.parametrize("name", ["visa_cda_online", "dda_offline_pin", "sda_only",
                                  "corrupted_icc_certificate"])
def test_notes_every_decision_and_never_the_pan(name: str) -> None:
    ctx, send, card = ready(name)
    run_oda(ctx, send)
    assert any(ctx.oda_method and ctx.oda_method.upper() in event for event in ctx.events)
    assert len(ctx.events) >= 2
    assert all(app_of(card).pan not in event for event in ctx.events)


# -- method selection (Book 3, 10.3) -----------------------------------------------------------


@pytest.mark.parametrize(("aip", "security", "method", "tvr", "tsi"), [
    (0x41, 0xC8, "cda", CDA_DATA_MISSING, TSI_ODA),  # CDA first
    (0x61, 0xC0, "dda", DDA_DATA_MISSING, TSI_ODA),  # terminal without CDA: DDA
    (0x21, 0x88, "cda", CDA_DATA_MISSING, TSI_ODA),
    (0x60, 0x80, "sda", SDA_DATA_MISSING, TSI_ODA),  # terminal with SDA only
    (0x40, 0xC8, "sda", SDA_DATA_MISSING, TSI_ODA),
    (0x01, 0x48, "cda", CDA_DATA_MISSING, TSI_ODA),
    (0x20, 0x80, None, ODA_NOT_PERFORMED, TSI_NONE),  # nothing in common
    (0x00, 0xC8, None, ODA_NOT_PERFORMED, TSI_NONE),
    (0x61, 0x00, None, ODA_NOT_PERFORMED, TSI_NONE),
])
def test_method_selection(aip: int, security: int, method: str | None, tvr: bytes, tsi: bytes) -> None:
    ctx = make_context(capabilities=bytes([0xE0, 0xF8, security]))
    ctx.aip = card_data.decode_aip(bytes([aip, 0x00]))
    recorder = Recorder(answer=Response(b"", 0x6D00))
    run_oda(ctx, recorder)
    assert recorder.commands == []
    assert ctx.oda_method == method
    assert ctx.tvr.value == tvr and ctx.tsi.value == tsi
    assert not oda.cda_requested(ctx)


def test_no_aip_means_no_oda() -> None:
    ctx = make_context()
    run_oda(ctx, Recorder(answer=Response(b"", 0x6D00)))
    assert ctx.oda_method is None and ctx.tvr.value == ODA_NOT_PERFORMED and ctx.tsi.value == TSI_NONE


def test_cda_card_on_a_terminal_without_cda_does_dda() -> None:
    ctx, send, _card = ready("visa_cda_online", capabilities=bytes.fromhex("E0F8C0"))
    recorder = run_oda(ctx, send)
    assert ctx.oda_method == "dda"
    assert [command.ins for command in recorder.commands] == [apdu.INS_INTERNAL_AUTHENTICATE]
    assert ctx.tvr.value == NOTHING and ctx.tsi.value == TSI_ODA
    assert not oda.cda_requested(ctx)


# -- hand-written failures ---------------------------------------------------------------------


def _assert_failed(ctx: Context, recorder: Recorder, name: str, tvr: bytes) -> None:
    assert ctx.tvr.value == tvr
    assert ctx.tsi.value == TSI_ODA
    assert recorder.commands == []
    assert not oda.cda_requested(ctx)
    assert 0x9F45 not in ctx.card and 0x9F4C not in ctx.card


@pytest.mark.parametrize("name", METHOD_PROFILES)
@pytest.mark.parametrize("breakage", ["unknown_index", "expired_ca", "ca_checksum", "revoked", "other_bin",
                                      "record_invalid", "tag_list", "static_data", "expired_issuer"])
def test_method_fails(name: str, breakage: str) -> None:
    ctx, send, card = ready(name)
    app = app_of(card)
    if breakage == "unknown_index":
        ctx.card[0x8F] = b"\x01"
    elif breakage == "expired_ca":
        ctx = with_config(ctx, ca_keys=_expired_ca_keys())
    elif breakage == "ca_checksum":
        ctx = with_config(ctx, ca_keys=_bad_checksum_ca_keys())
    elif breakage == "revoked":
        ctx = with_config(ctx, revoked=frozenset({(app.aid[:5], ctx.card[0x8F][0], app.issuer_cert_serial)}))
    elif breakage == "other_bin":
        ctx.card[0x5A] = bytes.fromhex("5413330000000035")  # Book 2, 5.3 step 8
    elif breakage == "record_invalid":
        ctx.oda_record_invalid = True  # Book 3, 10.3: an ODA record outside a '70' template
    elif breakage == "tag_list":
        ctx.card[0x9F4A] = bytes.fromhex("825A")  # Book 3, 10.3: only '82' may be listed
    elif breakage == "static_data":
        ctx.oda_data[3] ^= 0x01
    elif breakage == "expired_issuer":
        # issuer certificates of the simulated cards expire 12/2034
        ctx.transaction = dataclasses.replace(ctx.transaction, when=datetime.datetime(2035, 1, 2, 12, 0))
    recorder = run_oda(ctx, Recorder(send))
    _assert_failed(ctx, recorder, name, FAILED_BY_PROFILE[name])


@pytest.mark.parametrize("name", ["dda_offline_pin", "visa_cda_online"])
def test_icc_certificate_for_another_pan_of_the_same_issuer(name: str) -> None:
    ctx, send, _card = ready(name)
    ctx.card[0x5A] = _flip(ctx.card[0x5A])  # Book 2, 6.4 step 8: same BIN, other last digit
    assert oda.issuer_public_key(ctx) is not None
    recorder = run_oda(ctx, Recorder(send))
    _assert_failed(ctx, recorder, name, FAILED_BY_PROFILE[name])


@pytest.mark.parametrize(("name", "tag"), [
    ("sda_only", 0x8F), ("sda_only", 0x90), ("sda_only", 0x93), ("sda_only", 0x9F32),
    ("dda_offline_pin", 0x8F), ("dda_offline_pin", 0x90), ("dda_offline_pin", 0x9F46),
    ("dda_offline_pin", 0x9F47), ("dda_offline_pin", 0x9F32),
    ("visa_cda_online", 0x8F), ("visa_cda_online", 0x90), ("visa_cda_online", 0x9F32),
    ("visa_cda_online", 0x9F46), ("visa_cda_online", 0x9F47),
])
def test_missing_icc_data(name: str, tag: int) -> None:
    ctx, send, _card = ready(name)
    del ctx.card[tag]
    recorder = run_oda(ctx, Recorder(send))
    _assert_failed(ctx, recorder, name, MISSING_BY_PROFILE[name])


@pytest.mark.parametrize(("name", "tag"), [
    ("sda_only", 0x92), ("dda_offline_pin", 0x92), ("dda_offline_pin", 0x9F48),
    ("visa_cda_online", 0x92), ("visa_cda_online", 0x9F48),
])
def test_missing_remainder_fails_the_certificate(name: str, tag: int) -> None:
    # The simulated keys do not fit their certificates, so the remainders are needed (Book 2,
    # 5.3 / 6.4 step 5 hash them); whether one is needed shows only after recovery.
    ctx, send, _card = ready(name)
    del ctx.card[tag]
    recorder = run_oda(ctx, Recorder(send))
    _assert_failed(ctx, recorder, name, FAILED_BY_PROFILE[name])


def test_sda_of_a_cda_card_lacks_93() -> None:
    ctx, send, _card = ready("visa_cda_online", capabilities=bytes.fromhex("E0F880"))
    ctx.aip = card_data.decode_aip(bytes([ctx.card[0x82][0] | 0x40, 0x00]))
    recorder = run_oda(ctx, Recorder(send))
    assert ctx.oda_method == "sda"
    _assert_failed(ctx, recorder, "sda_only", SDA_DATA_MISSING)


# -- DDOL and INTERNAL AUTHENTICATE ------------------------------------------------------------


def test_default_ddol_used_when_the_card_has_none() -> None:
    ctx, send, _card = ready("dda_offline_pin")
    del ctx.card[0x9F49]
    recorder = run_oda(ctx, send)
    assert ctx.tvr.value == NOTHING and ctx.tsi.value == TSI_ODA
    assert [command.data for command in recorder.commands] == [UN]


@pytest.mark.parametrize(("card_ddol", "default_ddol"), [
    (None, bytes.fromhex("9F0206")),  # default DDOL without 9F37
    (None, None),  # no DDOL anywhere
    (bytes.fromhex("9F0206"), bytes.fromhex("9F3704")),  # card DDOL without 9F37
    (bytes.fromhex("9F37"), bytes.fromhex("9F3704")),  # malformed card DDOL
])
def test_ddol_without_unpredictable_number_fails_dda(card_ddol: bytes | None,
                                                     default_ddol: bytes | None) -> None:
    ctx, send, card = ready("dda_offline_pin")
    if card_ddol is None:
        del ctx.card[0x9F49]
    else:
        ctx.card[0x9F49] = card_ddol
    if default_ddol is None:
        ctx.aid_params = None
    else:
        ctx.aid_params = AidParams(aid=app_of(card).aid, default_ddol=default_ddol)
    recorder = run_oda(ctx, Recorder(send))
    _assert_failed(ctx, recorder, "dda_offline_pin", DDA_FAILED)
    assert ctx.icc_key is not None  # the keys were fine; the DDOL was not


@pytest.mark.parametrize("sw", [0x6985, 0x6D00, 0x6A81, 0x6F00])
def test_internal_authenticate_error_status_terminates(sw: int) -> None:
    ctx, _send, _card = ready("dda_offline_pin")
    recorder = Recorder(answer=Response(b"", sw))
    with pytest.raises(Terminate) as raised:
        run_oda(ctx, recorder)
    assert raised.value.reason == "card_error"
    assert ctx.tvr.value == DDA_FAILED and ctx.tsi.value == TSI_ODA
    assert [command.ins for command in recorder.commands] == [apdu.INS_INTERNAL_AUTHENTICATE]


@pytest.mark.parametrize("answer", [
    "",  # nothing
    "0102",  # not TLV
    "800401020304",  # SDAD of the wrong length
    "7705 9F10020000",  # format 2 without 9F4B
    "6F05 9F4B020000",  # not a response template
    "7710 9F4B",  # truncated
    "800101 800101",  # two objects
    "7708 9F4B020000 9F4B0100",  # 9F4B twice
])
def test_internal_authenticate_garbage_fails_dda(answer: str) -> None:
    ctx, _send, _card = ready("dda_offline_pin")
    recorder = Recorder(answer=Response(bytes.fromhex(answer.replace(" ", "")), 0x9000))
    run_oda(ctx, recorder)
    assert ctx.tvr.value == DDA_FAILED and ctx.tsi.value == TSI_ODA
    assert 0x9F4C not in ctx.card


def test_replayed_internal_authenticate_fails_dda() -> None:
    ctx, send, _card = ready("dda_offline_pin")
    first = run_oda(ctx, send)
    assert ctx.tvr.value == NOTHING
    ((_command, genuine),) = first.exchanges
    replay, _send, _card = ready("dda_offline_pin")
    replay.unpredictable_number = bytes.fromhex("99887766")
    run_oda(replay, Recorder(answer=genuine))
    assert replay.tvr.value == DDA_FAILED and replay.tsi.value == TSI_ODA


def test_internal_authenticate_format_1_accepted() -> None:
    ctx, send, _card = ready("dda_offline_pin")
    genuine = run_oda(ctx, send).exchanges[0][1]
    (template,) = tlv.decode(genuine.data)
    sdad = template.value if template.tag == 0x80 else template.find(0x9F4B).value  # type: ignore[union-attr]
    for wrapped in (tlv.encode(0x80, sdad), tlv.encode(0x77, tlv.encode(0x9F4B, sdad))):
        again, _send, _card = ready("dda_offline_pin")
        run_oda(again, Recorder(answer=Response(wrapped, 0x9000)))
        assert again.tvr.value == NOTHING and again.card[0x9F4C] == ctx.card[0x9F4C]


# -- CDA at GENERATE AC (Book 2, 6.6.2) --------------------------------------------------------


def first_cda_ac(name: str) -> tuple[Context, Sender, SimCard, list[tlv.Tlv], int]:
    ctx, send, card = ready(name)
    run_oda(ctx, send)
    assert oda.cda_requested(ctx)
    ctx.cdol1_data = dol.build(ctx.card[0x8C], ctx.dol_data())
    response = send(Transmit(apdu.generate_ac(apdu.CryptogramType.ARQC, ctx.cdol1_data, cda=True)))
    assert response.ok
    (template,) = tlv.decode(response.data)
    assert template.tag == 0x77 and template.children is not None
    cid_item = template.find(0x9F27)
    assert cid_item is not None
    return ctx, send, card, list(template.children), cid_item.value[0]


def _value(children: list[tlv.Tlv], tag: int) -> bytes:
    item = tlv.find(children, tag)
    assert item is not None
    return item.value


@pytest.mark.parametrize("name", ["visa_cda_online", "mastercard_cda", "padded_long_form"])
def test_cda_signature_of_the_first_generate_ac(name: str) -> None:
    ctx, _send, card, children, cid = first_cda_ac(name)
    assert oda.verify_cda(ctx, children, cid, second=False)
    assert ctx.tvr.value == NOTHING and ctx.tsi.value == TSI_ODA
    app = app_of(card)
    terminal = dict(dol.split(app.cdol1, ctx.cdol1_data))
    assert ctx.card[0x9F26] == expected_ac(app, terminal, ctx.card[0x82], _value(children, 0x9F36),
                                           _value(children, 0x9F10))
    sdad = _value(children, 0x9F4B)
    dynamic = recover_sdad(public_key(app.icc_key), sdad, UN)
    assert ctx.card[0x9F4C] == dynamic[1:1 + dynamic[0]]


def _flip(value: bytes, index: int = -1) -> bytes:
    changed = bytearray(value)
    changed[index] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize("tamper", ["9F27", "9F36", "9F10", "9F4B", "cdol1", "cdol1_first", "pdol", "un",
                                    "cid", "order", "drop_9F10", "extra", "no_9F4B", "second"])
def test_cda_signature_fails_when_anything_changed(tamper: str) -> None:
    ctx, _send, _card, children, cid = first_cda_ac("visa_cda_online")
    second = False
    if tamper in ("9F27", "9F36", "9F10", "9F4B"):
        tag = int(tamper, 16)
        children = [tlv.Tlv(c.tag, _flip(c.value)) if c.tag == tag else c for c in children]
        if tamper == "9F27":
            cid ^= 0x01
    elif tamper == "cdol1":
        ctx.cdol1_data = _flip(ctx.cdol1_data)
    elif tamper == "cdol1_first":
        ctx.cdol1_data = _flip(ctx.cdol1_data, 0)
    elif tamper == "pdol":
        ctx.pdol_data = _flip(ctx.pdol_data)
    elif tamper == "un":
        ctx.unpredictable_number = _flip(ctx.unpredictable_number)
    elif tamper == "cid":
        cid = 0x40
    elif tamper == "order":
        children = children[1:] + children[:1]
    elif tamper == "drop_9F10":
        children = [c for c in children if c.tag != 0x9F10]
    elif tamper == "extra":
        children = [*children, tlv.Tlv(0x9F6E, b"\x01")]
    elif tamper == "no_9F4B":
        children = [c for c in children if c.tag != 0x9F4B]
    elif tamper == "second":
        ctx.cdol2_data = b"\x00"
        second = True
    assert not oda.verify_cda(ctx, children, cid, second=second)
    assert ctx.tvr.value == CDA_FAILED and ctx.tsi.value == TSI_ODA
    assert 0x9F26 not in ctx.card


@pytest.mark.parametrize("name", ["visa_cda_online", "mastercard_cda"])
def test_cda_signature_of_the_second_generate_ac(name: str) -> None:
    ctx, send, _card, children, cid = first_cda_ac(name)
    assert oda.verify_cda(ctx, children, cid, second=False)
    first_cryptogram = ctx.card[0x9F26]
    ctx.authorisation_response_code = b"00"
    ctx.cdol2_data = dol.build(ctx.card[0x8D], ctx.dol_data())
    response = send(Transmit(apdu.generate_ac(apdu.CryptogramType.TC, ctx.cdol2_data, cda=True)))
    (template,) = tlv.decode(response.data)
    second_children = list(template.children or ())
    second_cid = _value(second_children, 0x9F27)[0]
    assert second_cid == 0x40
    # without CDOL2 in the hash (Book 2, 6.6.2 step 10) the signature does not match
    probe = copy.deepcopy(ctx)
    assert not oda.verify_cda(probe, second_children, second_cid, second=False)
    assert oda.verify_cda(ctx, second_children, second_cid, second=True)
    assert ctx.tvr.value == NOTHING
    assert ctx.card[0x9F26] != first_cryptogram


def test_aac_without_signature_is_no_cda_failure() -> None:
    ctx, _send, _card, children, _cid = first_cda_ac("visa_cda_online")
    unsigned = [tlv.Tlv(0x9F27, b"\x00"), *(c for c in children if c.tag not in (0x9F27, 0x9F4B))]
    assert not oda.verify_cda(ctx, unsigned, 0x00, second=False)
    assert ctx.tvr.value == NOTHING and ctx.tsi.value == TSI_ODA


def test_verify_cda_without_cda_keys_fails() -> None:
    ctx, send, _card = ready("dda_offline_pin")
    run_oda(ctx, send)
    template = [tlv.Tlv(0x9F27, b"\x80"), tlv.Tlv(0x9F4B, bytes(144))]
    assert not oda.verify_cda(ctx, template, 0x80, second=False)
    assert ctx.tvr.value == CDA_FAILED and ctx.tsi.value == TSI_ODA


def test_cda_not_requested_after_failed_key_recovery() -> None:
    ctx, send, _card = ready("visa_cda_online")
    ctx.card[0x9F46] = _flip(ctx.card[0x9F46], 10)
    run_oda(ctx, send)
    assert ctx.tvr.value == CDA_FAILED and ctx.tsi.value == TSI_ODA
    assert not oda.cda_requested(ctx)


# -- property tests ----------------------------------------------------------------------------

_DDA_READY = ready("dda_offline_pin")
_CDA_READY = first_cda_ac("visa_cda_online")
_SDA_READY = ready("sda_only")
_ODA_TAGS = (0x5A, 0x82, 0x84, 0x8F, 0x90, 0x92, 0x93, 0x9F32, 0x9F46, 0x9F47, 0x9F48, 0x9F49, 0x9F4A)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), sw=st.integers(0, 0xFFFF))
def test_dda_on_random_internal_authenticate_answers(data: bytes, sw: int) -> None:
    ctx = copy.deepcopy(_DDA_READY[0])
    with contextlib.suppress(Terminate):
        run_oda(ctx, Recorder(answer=Response(data, sw)))
    assert ctx.tvr.value == DDA_FAILED and ctx.tsi.value == TSI_ODA


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sdad=st.binary(min_size=144, max_size=144), wrap=st.booleans())
def test_dda_on_random_signatures_of_the_right_length(sdad: bytes, wrap: bool) -> None:
    ctx = copy.deepcopy(_DDA_READY[0])
    answer = tlv.encode(0x77, tlv.encode(0x9F4B, sdad)) if wrap else tlv.encode(0x80, sdad)
    run_oda(ctx, Recorder(answer=Response(answer, 0x9000)))
    assert ctx.tvr.value == DDA_FAILED and ctx.tsi.value == TSI_ODA


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(["sda", "dda", "cda"]),
       changes=st.dictionaries(st.sampled_from(_ODA_TAGS), st.one_of(st.none(), st.binary(max_size=260)),
                               max_size=5),
       aip=st.binary(min_size=2, max_size=2), record_invalid=st.booleans())
def test_oda_on_random_card_data(which: str, changes: dict[int, bytes | None], aip: bytes,
                                 record_invalid: bool) -> None:
    source = {"sda": _SDA_READY, "dda": _DDA_READY, "cda": _CDA_READY}[which]
    ctx = copy.deepcopy(source[0])
    ctx.icc_key = None
    ctx.issuer_key = None
    ctx.oda_record_invalid = record_invalid
    ctx.aip = card_data.decode_aip(aip)
    for tag, value in changes.items():
        if value is None:
            ctx.card.pop(tag, None)
        else:
            ctx.card[tag] = value
    with contextlib.suppress(Terminate):
        run_oda(ctx, Recorder(source[1]))
    assert ctx.tvr.value[1:] == bytes(4)


_CHILD_TAGS = st.sampled_from([0x9F27, 0x9F36, 0x9F10, 0x9F4B, 0x9F26, 0x9F6E])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(children=st.lists(st.tuples(_CHILD_TAGS, st.one_of(st.binary(max_size=40),
                                                           st.binary(min_size=144, max_size=144))),
                         max_size=6),
       cid=st.integers(0, 0xFF), second=st.booleans())
def test_verify_cda_on_random_answers(children: list[tuple[int, bytes]], cid: int, second: bool) -> None:
    ctx = copy.deepcopy(_CDA_READY[0])
    template = [tlv.Tlv(tag, value) for tag, value in children]
    assert oda.verify_cda(ctx, template, cid, second=second) is False
    assert ctx.tsi.value == TSI_ODA
