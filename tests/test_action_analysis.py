"""Terminal action analysis, the first GENERATE AC and card action analysis (EMV 4.4 Book 3,
10.7-10.8), against hand-written card answers and the simulated cards.

Expected values come from the spec tables (Book 3, 10.7 and 6.5.5.4), from hand-built DOL data
and SHA-1, and, for real cards, from cryptograms recomputed with pyemv and CDA signatures
recovered with `pow` by the independent helpers of `test_sim_card_support`.
`prepare` and the CDA fakes below are shared with `test_completion`.
"""

from __future__ import annotations

import datetime
import hashlib
import random
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_sim_card_support import (
    PublicKey,
    expected_ac,
    recover_icc_key,
    recover_issuer_key,
    recover_sdad,
)

import sim.card
from emv import apdu, app_data, card_data, dol, oda, selection, tlv
from emv.action_analysis import (
    AcResult,
    first_generate_ac,
    parse_generate_ac,
    terminal_action_analysis,
)
from emv.apdu import Command, CryptogramType, Response
from emv.capk import load_capks
from emv.context import TSI, TVR, Context, Transaction
from emv.kernel_config import AidParams, KernelConfig, TerminalConfig
from emv.outcome import Terminate
from emv.requests import ApproveOffline, OfflineDecision, Transmit
from firmware.driver import card_sender
from sim.card import pki
from sim.card.card import SimCard
from sim.card.profile import load_profile

WHEN = datetime.datetime(2026, 11, 26, 12, 0)
AID = bytes.fromhex("A0000000031010")
ONLINE_TERMINAL = TerminalConfig()  # '22': attended, offline with online capability
OFFLINE_ONLY_TERMINAL = TerminalConfig(terminal_type=0x23)
ONLINE_ONLY_TERMINAL = TerminalConfig(terminal_type=0x21)


# -- helpers shared with test_completion --------------------------------------------------------


class Link:
    """Answers `Transmit` requests from a function of the command APDU bytes; logs every exchange."""

    def __init__(self, answer: Callable[[Command], Response]) -> None:
        self.answer = answer
        self.log: list[tuple[Command, Response]] = []

    def __call__(self, request: Transmit) -> Response:
        response = self.answer(request.command)
        self.log.append((request.command, response))
        return response

    def commands(self, ins: int) -> list[Command]:
        return [command for command, _ in self.log if command.ins == ins]


def card_link(card: SimCard) -> Link:
    send = card_sender(card.process, card.protocol)
    return Link(lambda command: send(Transmit(command)))


def scripted(*answers: bytes) -> Link:
    """A card reading from a list: each answer is response data || SW1 SW2."""
    queue = list(answers)

    def answer(_command: Command) -> Response:
        if not queue:
            raise AssertionError("the kernel sent more commands than the script holds")
        return Response.parse(queue.pop(0))

    return Link(answer)


def drive(generator: Generator[Any, Any, Any], link: Link) -> Any:
    """Run a kernel generator to its end, answering its `Transmit` requests from `link` and
    allowing every offline approval it asks for (`ApproveOffline`)."""
    try:
        request = next(generator)
        while True:
            if isinstance(request, ApproveOffline):
                request = generator.send(OfflineDecision.allow())
                continue
            assert isinstance(request, Transmit), request
            request = generator.send(link(request))
    except StopIteration as stop:
        return stop.value


CA_KEYS = load_capks((Path(sim.card.__file__).parent / "ca_keys.toml").read_text())


def make_context(*, terminal: TerminalConfig = ONLINE_TERMINAL, params: AidParams | None = None,
                 amount: int = 1000, force_online: bool = False) -> Context:
    params = params if params is not None else AidParams(aid=AID)
    ctx = Context(config=KernelConfig(terminal=terminal, aids=(params,), ca_keys=CA_KEYS),
                  transaction=Transaction(amount=amount, when=WHEN, force_online=force_online),
                  rng=random.Random(3).randbytes)
    ctx.aid_params = params
    ctx.unpredictable_number = bytes.fromhex("11223344")
    return ctx


def prepare(name: str, *, terminal: TerminalConfig = ONLINE_TERMINAL, tacs: dict[str, bytes] | None = None,
            amount: int = 1000, with_oda: bool = False) -> tuple[Context, Link, SimCard]:
    """SELECT, GET PROCESSING OPTIONS and READ RECORD on a simulated card: the context as the
    kernel leaves it before terminal action analysis (ODA records and the AIP included); with
    `with_oda`, `emv.oda.offline_data_authentication` has run too."""
    profile = load_profile(name)
    app = profile.applications[0]
    card = SimCard(profile, rng=random.Random(1), today=WHEN.date)
    card.power_on()
    link = card_link(card)
    params = AidParams(aid=app.aid, **(tacs or {}))
    ctx = make_context(terminal=terminal, params=params, amount=amount)
    ctx.unpredictable_number = ctx.rng(4)
    fci = drive(selection.select_application(app.aid), link)
    ctx.card[0x84] = fci.df_name
    ctx.pdol_data = dol.build(fci.pdol or b"", ctx.dol_data())
    response = link(Transmit(apdu.get_processing_options(ctx.pdol_data)))
    assert response.ok
    options = app_data.parse_gpo(response.data)
    ctx.card.update(options.objects)
    ctx.aip = card_data.decode_aip(options.aip)
    ctx.afl = card_data.parse_afl(options.afl)
    records = drive(app_data.read_records(ctx.afl), link)
    ctx.card.update(records.data)
    ctx.oda_data += records.oda
    if ctx.card.get(0x9F4A) == b"\x82":  # Book 3, 10.3: the AIP is signed too
        ctx.oda_data += options.aip
    if with_oda:
        drive(oda.offline_data_authentication(ctx), link)
    return ctx, link, card


def independent_verify_cda(ctx: Context, template: Sequence[tlv.Tlv], cid: int, *, second: bool) -> bool:
    """Book 2, 6.6.2 written again for the tests: recover the SDAD through CA -> issuer -> ICC,
    check the CID and the transaction data hash, and hand the cryptogram over in `ctx.card`."""
    sdad = next((item.value for item in template if item.tag == 0x9F4B), None)
    if sdad is None:
        ctx.tvr.set(TVR.CDA_FAILED)
        return False
    ca = pki.load_ca_key(ctx.card[0x84][:5], ctx.card[0x8F][0])
    issuer = recover_issuer_key(PublicKey(ca.n, ca.e), ctx.card)
    icc = recover_icc_key(issuer, ctx.card, bytes(ctx.oda_data))
    dynamic = recover_sdad(icc, sdad, ctx.unpredictable_number)
    size = dynamic[0]
    # Book 2, 6.6.1, Table 19: number length, number, CID, cryptogram, transaction data hash.
    signed_cid = dynamic[1 + size]
    cryptogram, digest = dynamic[2 + size:10 + size], dynamic[10 + size:30 + size]
    hashed = (ctx.pdol_data + ctx.cdol1_data + (ctx.cdol2_data if second else b"")
              + b"".join(item.encode() for item in template if item.tag != 0x9F4B))
    if signed_cid != cid or digest != hashlib.sha1(hashed).digest():
        ctx.tvr.set(TVR.CDA_FAILED)
        return False
    ctx.card[0x9F26] = cryptogram
    return True


class CdaCalls:
    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []


def use_no_cda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oda, "cda_requested", lambda ctx: False, raising=False)


def use_cda(monkeypatch: pytest.MonkeyPatch, *, fail_first: bool = False,
            fail_second: bool = False) -> CdaCalls:
    """CDA asked, and checked by the independent verifier above; `fail_*` make it report a
    failure instead, as `oda.verify_cda` does (TVR bit set, False returned)."""
    calls = CdaCalls()

    def verify(ctx: Context, template: Sequence[tlv.Tlv], cid: int, *, second: bool) -> bool:
        calls.calls.append((cid, second))
        if fail_second if second else fail_first:
            ctx.tvr.set(TVR.CDA_FAILED)
            return False
        return independent_verify_cda(ctx, template, cid, second=second)

    monkeypatch.setattr(oda, "cda_requested", lambda ctx: True, raising=False)
    monkeypatch.setattr(oda, "verify_cda", verify, raising=False)
    return calls


@pytest.fixture
def no_cda(monkeypatch: pytest.MonkeyPatch) -> None:
    use_no_cda(monkeypatch)


@pytest.fixture
def real_cda(monkeypatch: pytest.MonkeyPatch) -> CdaCalls:
    return use_cda(monkeypatch)


@pytest.fixture
def failing_cda(monkeypatch: pytest.MonkeyPatch) -> CdaCalls:
    return use_cda(monkeypatch, fail_first=True, fail_second=True)


# -- parse_generate_ac (Book 3, 6.5.5.4) ---------------------------------------------------------

ATC = bytes.fromhex("001C")
AC = bytes.fromhex("8E1A2B3C4D5E6F70")
IAD = bytes.fromhex("06011203A00000")


def format1(cid: int, *, iad: bytes = IAD) -> bytes:
    value = bytes([cid]) + ATC + AC + iad
    return bytes([0x80, len(value)]) + value


def format2(*objects: tuple[int, bytes]) -> bytes:
    return tlv.encode(0x77, b"".join(tlv.encode(tag, value) for tag, value in objects))


def test_format1_answer_is_cut_at_fixed_offsets() -> None:
    result, template = parse_generate_ac(format1(0x80))
    assert (result.cid, result.cryptogram_type, result.name) == (0x80, CryptogramType.ARQC, "ARQC")
    assert (result.atc, result.cryptogram, result.iad) == (ATC, AC, IAD)
    assert not result.advice and not result.cda_signed
    assert result.objects == {0x9F27: b"\x80", 0x9F36: ATC, 0x9F26: AC, 0x9F10: IAD}
    assert template == []


def test_format1_without_iad_and_with_the_advice_bit() -> None:
    result, _ = parse_generate_ac(format1(0x48, iad=b""))  # TC, advice required
    assert result.name == "TC" and result.advice and result.iad is None
    assert 0x9F10 not in result.objects


def test_format2_answer_keeps_every_object_and_its_order() -> None:
    data = format2((0x9F27, b"\x40"), (0x9F36, ATC), (0x9F26, AC), (0x9F10, IAD), (0x9F4C, bytes(8)))
    result, template = parse_generate_ac(data)
    assert result.name == "TC" and result.atc == ATC and result.cryptogram == AC and result.iad == IAD
    assert result.objects[0x9F4C] == bytes(8)
    assert [item.tag for item in template] == [0x9F27, 0x9F36, 0x9F26, 0x9F10, 0x9F4C]


def test_format2_with_a_cda_signature_instead_of_the_cryptogram() -> None:
    data = format2((0x9F27, b"\x80"), (0x9F36, ATC), (0x9F4B, bytes(range(64))), (0x9F10, IAD))
    result, template = parse_generate_ac(data)
    assert result.cda_signed and result.cryptogram == b"" and result.name == "ARQC"
    assert [item.tag for item in template] == [0x9F27, 0x9F36, 0x9F4B, 0x9F10]


MALFORMED = {
    "empty": b"",
    "truncated TLV": format2((0x9F27, b"\x80"), (0x9F36, ATC), (0x9F26, AC))[:-3],
    "missing 9F26 and 9F4B": format2((0x9F27, b"\x80"), (0x9F36, ATC), (0x9F10, IAD)),
    "missing CID": format2((0x9F36, ATC), (0x9F26, AC)),
    "missing ATC": format2((0x9F27, b"\x80"), (0x9F26, AC)),
    "CID of 2 bytes": format2((0x9F27, b"\x80\x00"), (0x9F36, ATC), (0x9F26, AC)),
    "ATC of 3 bytes": format2((0x9F27, b"\x80"), (0x9F36, b"\x00\x00\x01"), (0x9F26, AC)),
    "cryptogram of 7 bytes": format2((0x9F27, b"\x80"), (0x9F36, ATC), (0x9F26, AC[:7])),
    "IAD of 33 bytes": format2((0x9F27, b"\x80"), (0x9F36, ATC), (0x9F26, AC), (0x9F10, bytes(33))),
    "repeated object": format2((0x9F27, b"\x80"), (0x9F36, ATC), (0x9F26, AC), (0x9F26, AC)),
    "RFU cryptogram type": format1(0xC0),
    "format 1 too short": bytes([0x80, 0x0A]) + bytes(10),
    "format 1 IAD too long": format1(0x80, iad=bytes(33)),
    "two templates": format1(0x80) + format1(0x80),
    "unknown template": tlv.encode(0x70, tlv.encode(0x9F27, b"\x80")),
    "primitive 77": bytes([0x9F, 0x77, 0x01, 0x00]),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_answers_terminate_with_card_error(data: bytes) -> None:
    with pytest.raises(Terminate) as caught:
        parse_generate_ac(data)
    assert caught.value.reason == "card_error"


@given(st.binary(max_size=80))
def test_any_bytes_parse_or_terminate(data: bytes) -> None:
    try:
        result, template = parse_generate_ac(data)
    except Terminate as exc:
        assert exc.reason == "card_error"
        return
    assert isinstance(result, AcResult) and len(result.atc) == 2
    assert result.cryptogram or result.cda_signed
    assert all(isinstance(item, tlv.Tlv) for item in template)


@given(cid=st.integers(0, 0xBF), atc=st.binary(min_size=2, max_size=2), ac=st.binary(min_size=8, max_size=8),
       iad=st.binary(max_size=32), first=st.booleans())
def test_well_formed_answers_give_back_what_was_encoded(cid: int, atc: bytes, ac: bytes, iad: bytes,
                                                        first: bool) -> None:
    if first:
        value = bytes([cid]) + atc + ac + iad
        data = bytes([0x80]) + tlv.encode_length(len(value)) + value
    else:
        objects = [(0x9F27, bytes([cid])), (0x9F36, atc), (0x9F26, ac)] + ([(0x9F10, iad)] if iad else [])
        data = format2(*objects)
    result, _ = parse_generate_ac(data)
    assert (result.cid, result.atc, result.cryptogram, result.iad) == (cid, atc, ac, iad or None)
    assert result.cryptogram_type == cid & 0xC0 and result.advice == bool(cid & 0x08)


# -- terminal action analysis (Book 3, 10.7) ------------------------------------------------------

NONE = bytes(5)
ALL = b"\xff" * 5
FLOOR = bytes.fromhex("0000008000")  # TVR byte 4 b8: transaction exceeds floor limit
NEW_CARD = bytes.fromhex("0008000000")  # TVR byte 2 b4


def taa(*, tvr: tuple[tuple[int, int], ...] = (), terminal: TerminalConfig = ONLINE_TERMINAL,
        tac_denial: bytes = NONE, tac_online: bytes = NONE, tac_default: bytes = NONE,
        iac: dict[int, bytes] | None = None, merchant_decline: str | None = None,
        force_online: bool = False) -> tuple[CryptogramType, Context]:
    params = AidParams(aid=AID, tac_denial=tac_denial, tac_online=tac_online, tac_default=tac_default)
    ctx = make_context(terminal=terminal, params=params, force_online=force_online)
    # Present IACs that match nothing, unless the test gives its own (absent ones: None).
    codes = {0x9F0E: NONE, 0x9F0F: NONE, 0x9F0D: NONE, **(iac or {})}
    ctx.card.update({tag: value for tag, value in codes.items() if value is not None})
    for bit in tvr:
        ctx.tvr.set(bit)
    ctx.merchant_decline = merchant_decline
    return terminal_action_analysis(ctx), ctx


FLOOR_BIT = (TVR.FLOOR_LIMIT_EXCEEDED,)

TRUTH_TABLE = [
    # (case, kwargs, expected)
    ("nothing set, nothing matches", {}, CryptogramType.TC),
    ("TVR bit but no code covers it", {"tvr": FLOOR_BIT}, CryptogramType.TC),
    ("TAC-Denial", {"tvr": FLOOR_BIT, "tac_denial": FLOOR}, CryptogramType.AAC),
    ("IAC-Denial", {"tvr": FLOOR_BIT, "iac": {0x9F0E: FLOOR}}, CryptogramType.AAC),
    ("denial code without the TVR bit", {"tac_denial": FLOOR, "iac": {0x9F0E: FLOOR}}, CryptogramType.TC),
    ("denial wins over online", {"tvr": FLOOR_BIT, "tac_denial": FLOOR, "tac_online": FLOOR},
     CryptogramType.AAC),
    ("TAC-Online", {"tvr": FLOOR_BIT, "tac_online": FLOOR}, CryptogramType.ARQC),
    ("IAC-Online", {"tvr": FLOOR_BIT, "iac": {0x9F0F: FLOOR}}, CryptogramType.ARQC),
    ("online code on another bit", {"tvr": FLOOR_BIT, "tac_online": NEW_CARD, "iac": {0x9F0F: NEW_CARD}},
     CryptogramType.TC),
    ("default codes unused by an online-capable terminal",
     {"tvr": FLOOR_BIT, "tac_default": FLOOR, "iac": {0x9F0D: FLOOR}}, CryptogramType.TC),
    ("offline-only, TAC-Default", {"terminal": OFFLINE_ONLY_TERMINAL, "tvr": FLOOR_BIT, "tac_default": FLOOR},
     CryptogramType.AAC),
    ("offline-only, IAC-Default", {"terminal": OFFLINE_ONLY_TERMINAL, "tvr": FLOOR_BIT,
                                   "iac": {0x9F0D: FLOOR}}, CryptogramType.AAC),
    ("offline-only ignores online codes", {"terminal": OFFLINE_ONLY_TERMINAL, "tvr": FLOOR_BIT,
                                           "tac_online": ALL, "iac": {0x9F0F: ALL}}, CryptogramType.TC),
    ("offline-only, denial still first", {"terminal": OFFLINE_ONLY_TERMINAL, "tvr": FLOOR_BIT,
                                          "iac": {0x9F0E: FLOOR}}, CryptogramType.AAC),
    ("absent IAC-Denial counts as zeros", {"tvr": FLOOR_BIT, "iac": {0x9F0E: None}}, CryptogramType.TC),
    ("absent IAC-Online counts as ones", {"tvr": FLOOR_BIT, "iac": {0x9F0F: None}}, CryptogramType.ARQC),
    ("absent IAC-Online, clean TVR", {"iac": {0x9F0F: None}}, CryptogramType.TC),
    ("absent IAC-Default counts as ones", {"terminal": OFFLINE_ONLY_TERMINAL, "tvr": FLOOR_BIT,
                                           "iac": {0x9F0D: None}}, CryptogramType.AAC),
    ("absent IAC-Default, clean TVR", {"terminal": OFFLINE_ONLY_TERMINAL, "iac": {0x9F0D: None}},
     CryptogramType.TC),
    ("online-only terminal", {"terminal": ONLINE_ONLY_TERMINAL}, CryptogramType.ARQC),
    ("online-only terminal, denial",
     {"terminal": ONLINE_ONLY_TERMINAL, "tvr": FLOOR_BIT, "tac_denial": FLOOR}, CryptogramType.AAC),
    ("merchant decline", {"merchant_decline": "exception file"}, CryptogramType.AAC),
    ("merchant forced online", {"force_online": True}, CryptogramType.ARQC),
]


@pytest.mark.parametrize(("kwargs", "expected"), [(k, e) for _, k, e in TRUTH_TABLE],
                         ids=[case for case, _, _ in TRUTH_TABLE])
def test_terminal_action_analysis_truth_table(kwargs: dict[str, Any], expected: CryptogramType) -> None:
    decision, _ctx = taa(**kwargs)
    assert decision == expected


def test_the_note_names_the_code_and_the_bit_that_decided() -> None:
    _, ctx = taa(tvr=(TVR.NEW_CARD, TVR.FLOOR_LIMIT_EXCEEDED), iac={0x9F0F: NEW_CARD})
    (note,) = [event for event in ctx.events if event.startswith("taa:")]
    assert "ARQC" in note and "IAC: New card" in note and "TAC" not in note


def test_an_issuer_action_code_of_the_wrong_length_terminates() -> None:
    with pytest.raises(Terminate) as caught:
        taa(iac={0x9F0F: bytes(4)})
    assert caught.value.reason == "card_error"


# -- first GENERATE AC against hand-written answers -------------------------------------------------

CDOL1 = bytes.fromhex("9F0206 9F3704 9505 9F2701")


def scripted_context(**kwargs: Any) -> Context:
    ctx = make_context(**kwargs)
    ctx.card.update({0x8C: CDOL1, 0x9F0E: NONE, 0x9F0F: FLOOR, 0x9F0D: NONE})
    return ctx


def test_first_generate_ac_sends_cdol1_data_and_records_the_answer(no_cda: None) -> None:
    ctx = scripted_context(amount=1234)
    ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)  # IAC-Online covers it: ARQC
    link = scripted(format2((0x9F27, b"\x80"), (0x9F36, ATC), (0x9F26, AC), (0x9F10, IAD)) + b"\x90\x00")
    result = drive(first_generate_ac(ctx), link)
    sent = link.log[0][0]
    assert sent.encode()[:4] == bytes.fromhex("80AE8000")
    # Book 3, 5.4: amount n12, UN, TVR, then zeros for the CID the card has not given yet.
    expected = bytes.fromhex("000000001234" "11223344" "0000008000" "00")
    assert sent.data == expected == ctx.cdol1_data
    assert result.name == "ARQC" and result.cryptogram == AC
    assert ctx.card[0x9F26] == AC and ctx.card[0x9F27] == b"\x80" and ctx.card[0x9F36] == ATC
    assert ctx.card[0x9F10] == IAD
    assert ctx.tsi.is_set(TSI.CARD_RISK_MANAGEMENT_PERFORMED)
    assert ctx.authorisation_response_code is None


@pytest.mark.parametrize(("cid", "arc"), [(0x40, b"Y1"), (0x00, b"Z1")])
def test_offline_decisions_get_the_terminal_response_codes(no_cda: None, cid: int, arc: bytes) -> None:
    ctx = scripted_context()
    result = drive(first_generate_ac(ctx), scripted(format1(cid) + b"\x90\x00"))
    assert result.cryptogram_type == cid and ctx.authorisation_response_code == arc


def test_a_tc_answered_to_an_arqc_request_terminates(no_cda: None) -> None:
    ctx = scripted_context()
    ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)  # IAC-Online covers it: ARQC asked
    link = scripted(format1(0x40) + b"\x90\x00")
    with pytest.raises(Terminate) as caught:
        drive(first_generate_ac(ctx), link)
    assert link.log[0][0].p1 == 0x80
    assert caught.value.reason == "card_error" and "TC" in caught.value.detail


def test_an_arqc_answered_to_a_tc_request_is_the_card_going_online(no_cda: None) -> None:
    ctx = scripted_context()
    link = scripted(format1(0x80) + b"\x90\x00")
    assert drive(first_generate_ac(ctx), link).name == "ARQC"
    assert link.log[0][0].p1 == 0x40


@pytest.mark.parametrize("answer_cid", [0x40, 0x80])
def test_an_aac_request_answered_with_anything_else_terminates(no_cda: None, answer_cid: int) -> None:
    ctx = scripted_context(params=AidParams(aid=AID, tac_denial=FLOOR))
    ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)
    link = scripted(format1(answer_cid) + b"\x90\x00")
    with pytest.raises(Terminate) as caught:
        drive(first_generate_ac(ctx), link)
    assert caught.value.reason == "card_error"
    assert link.log[0][0].p1 == 0x00  # AAC was asked


@pytest.mark.parametrize("answer", [b"\x69\x85", b"\x6a\x81", format1(0x40) + b"\x62\x83"])
def test_an_error_status_terminates(no_cda: None, answer: bytes) -> None:
    with pytest.raises(Terminate) as caught:
        drive(first_generate_ac(scripted_context()), scripted(answer))
    assert caught.value.reason == "card_error"


def test_a_malformed_answer_terminates(no_cda: None) -> None:
    answer = format2((0x9F27, b"\x40"), (0x9F36, ATC), (0x9F10, IAD)) + b"\x90\x00"  # no 9F26
    with pytest.raises(Terminate):
        drive(first_generate_ac(scripted_context()), scripted(answer))


def test_a_signature_nobody_asked_for_is_no_cryptogram(no_cda: None) -> None:
    answer = format2((0x9F27, b"\x40"), (0x9F36, ATC), (0x9F4B, bytes(64))) + b"\x90\x00"
    with pytest.raises(Terminate) as caught:
        drive(first_generate_ac(scripted_context()), scripted(answer))
    assert caught.value.reason == "card_error"


def test_cda_is_asked_for_a_tc_or_arqc_but_not_for_an_aac(failing_cda: CdaCalls) -> None:
    ctx = scripted_context(params=AidParams(aid=AID, tac_denial=FLOOR))
    ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)
    link = scripted(format1(0x00) + b"\x90\x00")
    assert drive(first_generate_ac(ctx), link).name == "AAC"
    assert link.log[0][0].p1 == 0x00 and failing_cda.calls == []
    link = scripted(format1(0x00) + b"\x90\x00")
    drive(first_generate_ac(scripted_context()), link)
    assert link.log[0][0].p1 == 0x50  # TC with CDA; an AAC answer is not signed, not verified
    assert failing_cda.calls == []


def test_missing_cdol1_terminates(no_cda: None) -> None:
    ctx = make_context()
    with pytest.raises(Terminate) as caught:
        drive(first_generate_ac(ctx), scripted())
    assert caught.value.reason == "missing_data"


# -- the TC hash value '98' (Book 3, 5.4) ------------------------------------------------------------

CDOL1_WITH_HASH = bytes.fromhex("9F0206 9814 9505")
TDOL = bytes.fromhex("9F0206 9F3704")


def hash_context(*, card_tdol: bytes | None, default_tdol: bytes) -> Context:
    ctx = make_context(params=AidParams(aid=AID, default_tdol=default_tdol), amount=500)
    ctx.card.update({0x8C: CDOL1_WITH_HASH, 0x9F0F: NONE})
    if card_tdol is not None:
        ctx.card[0x97] = card_tdol
    return ctx


def sent_hash_and_tvr(ctx: Context) -> tuple[bytes, bytes]:
    link = scripted(format1(0x40) + b"\x90\x00")
    drive(first_generate_ac(ctx), link)
    data = link.log[0][0].data
    return data[6:26], data[26:31]


def test_tc_hash_over_the_card_tdol(no_cda: None) -> None:
    ctx = hash_context(card_tdol=TDOL, default_tdol=bytes.fromhex("9A03"))
    digest, tvr = sent_hash_and_tvr(ctx)
    assert digest == hashlib.sha1(bytes.fromhex("000000000500") + bytes.fromhex("11223344")).digest()
    assert tvr == NONE and not ctx.tvr.is_set(TVR.DEFAULT_TDOL_USED)


def test_tc_hash_over_the_default_tdol_sets_the_tvr_bit(no_cda: None) -> None:
    ctx = hash_context(card_tdol=None, default_tdol=TDOL)
    digest, tvr = sent_hash_and_tvr(ctx)
    assert digest == hashlib.sha1(bytes.fromhex("000000000500") + bytes.fromhex("11223344")).digest()
    assert tvr == bytes.fromhex("0000000080")  # byte 5 b8 sent in the same command


def test_tc_hash_without_any_tdol_hashes_nothing(no_cda: None) -> None:
    digest, _ = sent_hash_and_tvr(hash_context(card_tdol=None, default_tdol=b""))
    assert digest == hashlib.sha1(b"").digest()


# -- real cards ---------------------------------------------------------------------------------------


def test_declining_card_answers_aac(real_cda: CdaCalls) -> None:
    ctx, link, _card = prepare("declining_card")
    ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)  # IAC-Online 'DC4004F800' covers it: ARQC asked
    result = drive(first_generate_ac(ctx), link)
    assert link.commands(0xAE)[0].p1 == 0x90  # ARQC with CDA
    assert result.name == "AAC" and result.cryptogram and real_cda.calls == []
    assert ctx.authorisation_response_code == b"Z1"


def test_offline_approving_card_answers_tc(no_cda: None) -> None:
    ctx, link, card = prepare("offline_approving")
    result = drive(first_generate_ac(ctx), link)
    assert link.commands(0xAE)[0].p1 == 0x40
    assert result.name == "TC" and ctx.card[0x9F26] == result.cryptogram
    app = card.profile.applications[0]
    terminal = dict(dol.split(app.cdol1, ctx.cdol1_data))
    assert result.cryptogram == expected_ac(app, terminal, ctx.card[0x82], result.atc, result.iad or b"")


@pytest.mark.parametrize("name", ["visa_cda_online", "mastercard_cda"])
def test_cda_arqc_is_verified_and_its_cryptogram_recovered(real_cda: CdaCalls, name: str) -> None:
    ctx, link, card = prepare(name)
    ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)
    result = drive(first_generate_ac(ctx), link)
    assert link.commands(0xAE)[0].p1 == 0x90
    assert result.name == "ARQC" and result.cda_signed and real_cda.calls == [(0x80, False)]
    app = card.profile.applications[0]
    terminal = dict(dol.split(app.cdol1, ctx.cdol1_data))
    assert result.cryptogram == expected_ac(app, terminal, ctx.card[0x82], result.atc, result.iad or b"")
    assert result.objects[0x9F26] == result.cryptogram == ctx.card[0x9F26]
    assert not ctx.tvr.is_set(TVR.CDA_FAILED)


def test_mastercard_without_cda_answers_in_format_1(no_cda: None) -> None:
    ctx, link, _card = prepare("mastercard_cda")
    ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)
    result = drive(first_generate_ac(ctx), link)
    assert result.name == "ARQC" and not result.cda_signed and len(result.cryptogram) == 8


def test_failed_cda_on_an_arqc_declines_offline(failing_cda: CdaCalls) -> None:
    ctx, link, _card = prepare("visa_cda_online")
    ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)
    result = drive(first_generate_ac(ctx), link)
    assert failing_cda.calls == [(0x80, False)]
    assert result.cryptogram_type == CryptogramType.AAC and result.cid == 0x80
    assert ctx.tvr.is_set(TVR.CDA_FAILED) and ctx.authorisation_response_code == b"Z1"
    assert len(link.commands(0xAE)) == 1  # no second GENERATE AC


def test_with_the_kernel_oda_step_cda_is_asked_and_checked() -> None:
    ctx, link, _card = prepare("visa_cda_online", with_oda=True)
    assert ctx.oda_method == "cda"
    ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)
    result = drive(first_generate_ac(ctx), link)
    assert link.commands(0xAE)[0].p1 == 0x90
    assert result.name == "ARQC" and result.cda_signed and len(result.cryptogram) == 8
    assert not ctx.tvr.is_set(TVR.CDA_FAILED) and ctx.tsi.is_set(TSI.ODA_PERFORMED)
