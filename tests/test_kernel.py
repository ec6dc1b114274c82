"""The kernel against a simulated card whose answers are rewritten: every bad answer ends in a typed
`Outcome` (EMV 4.4 Book 3, 10.1-10.2; ARCHITECTURE: bad input -> typed outcome, never a crash).

A `Tamper` stands between the kernel's transport and `SimCard.process`: it lets the card compute
its real answer, then replaces the answer to one chosen command (by INS and occurrence). The
simulated card's keys are TEST KEYS (sim/card).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scenario_matrix import app_config

from emv import tlv
from emv.apdu import Command, Response
from emv.context import TVR
from emv.errors import TransportError
from emv.outcome import Outcome, OutcomeKind
from emv.requests import ChooseApplication, HostStatus, OnlineRequest, OnlineResponse, Transmit
from firmware import driver
from firmware.prompts import ScriptedPrompt
from firmware.sale import pin_pad_of
from sim.card.card import SimCard
from sim.card.issuer import ScriptedAuthorizer
from sim.inprocess import Run, fresh_card, transact

GPO = 0xA8
READ_RECORD = 0xB2
GENERATE_AC = 0xAE
INTERNAL_AUTHENTICATE = 0x88
SW_OK = b"\x90\x00"

Rewrite = Callable[[bytes, bytes], bytes]  # (response data, SW1 SW2) -> the raw answer sent instead


@dataclass
class Tamper:
    """The card's `process` with the answer to the `occurrence`-th command of INS `ins` (counted
    from 1, only among those with `p1`/`p2` when given, only after GET PROCESSING OPTIONS when
    `after_gpo`: the PSE directory is read with READ RECORD too) rewritten."""

    card: SimCard
    ins: int
    rewrite: Rewrite
    occurrence: int = 1
    p1: int | None = None
    p2: int | None = None
    after_gpo: bool = False
    seen: int = 0
    original: bytes | None = None  # the card's own answer to the rewritten command
    sent: list[Command] = field(default_factory=list)

    def process(self, raw: bytes) -> bytes:
        command = Command.parse(raw)
        self.sent.append(command)
        answer = self.card.process(raw)
        if self.after_gpo and not any(sent.ins == GPO for sent in self.sent):
            return answer
        if command.ins != self.ins or (self.p1 is not None and command.p1 != self.p1) \
                or (self.p2 is not None and command.p2 != self.p2):
            return answer
        self.seen += 1
        if self.seen != self.occurrence:
            return answer
        self.original = answer
        return self.rewrite(answer[:-2], answer[-2:])

    def fulfil(self) -> Callable[[Transmit], Response]:
        return driver.card_sender(self.process, self.card.protocol)


def record(sfi: int, number: int) -> dict[str, int | bool]:
    """Tamper arguments for READ RECORD `number` of the application's file `sfi` (Book 3,
    6.5.11: P1 = record number, P2 = SFI << 3 | 4)."""
    return {"ins": READ_RECORD, "p1": number, "p2": sfi << 3 | 4, "after_gpo": True}


# --- rewrites -------------------------------------------------------------------------------


def answer(data_hex: str, sw: int = 0x9000) -> Rewrite:
    return lambda data, status: bytes.fromhex(data_hex) + sw.to_bytes(2, "big")


def status_word(sw: int) -> Rewrite:
    return lambda data, status: sw.to_bytes(2, "big")


def unchanged(data: bytes, status: bytes) -> bytes:
    return data + status


def truncated(drop: int) -> Rewrite:
    return lambda data, status: data[:-drop] + status


def template_edited(edit: Callable[[list[tlv.Tlv]], list[tlv.Tlv]], tag: int | None = None) -> Rewrite:
    """Decode the answer's one template, edit its children, encode it again (as `tag` if given)."""

    def rewrite(data: bytes, status: bytes) -> bytes:
        (top,) = tlv.decode(data)
        return tlv.encode(tag or top.tag, edit(list(top.children or ()))) + status

    return rewrite


def without(*tags: int) -> Rewrite:
    return template_edited(lambda children: [c for c in children if c.tag not in tags])


def with_extra(tag: int, value: bytes) -> Rewrite:
    return template_edited(lambda children: [*children, tlv.build(tag, value)])


def value_flipped(tag: int, index: int, mask: int = 0x01) -> Rewrite:
    """XOR one byte of a primitive's value (`index` from the value's start, may be negative)."""

    def edit(children: list[tlv.Tlv]) -> list[tlv.Tlv]:
        out = []
        for child in children:
            if child.tag == tag:
                value = bytearray(child.value)
                value[index] ^= mask
                child = tlv.build(tag, bytes(value))
            out.append(child)
        return out

    return template_edited(edit)


# --- runs -----------------------------------------------------------------------------------


@dataclass
class Sale:
    run: Run
    spy: Tamper | None
    authorizer: ScriptedAuthorizer | None

    @property
    def outcome(self) -> Outcome:
        return self.run.outcome

    @property
    def commands(self) -> list[str]:
        return self.run.commands

    def host_saw(self) -> dict[int, bytes]:
        """Field 55 of the one authorization the issuer received."""
        assert self.authorizer is not None and len(self.authorizer.seen) == 1
        return dict(tlv.primitives(tlv.decode(self.authorizer.seen[0].chip_data)))


def sale(profile: str, amount: int, *, config: str = "default", host: str = "approve",
         tamper: dict[str, Any] | None = None, fulfil: Callable[[Transmit], Response] | None = None,
         prompt: ScriptedPrompt | None = None, authorizer: Any = None, seed: int = 1,
         card: SimCard | None = None) -> Sale:
    """One sale on a fresh card: PIN 1234 typed when asked, the scripted issuer approving ("approve"),
    declining ("decline") or unreachable ("none"), and the answer `tamper` names rewritten."""
    app = app_config(config)
    card = card or fresh_card(profile)
    spy = Tamper(card, **tamper) if tamper is not None else None
    if spy is not None:
        fulfil = spy.fulfil()
    issuer = None
    if authorizer is None and host != "none":
        authorizer = issuer = ScriptedAuthorizer(profiles=[profile], decline=host == "decline")
    run = transact(card, app.kernel, amount, authorizer=authorizer, fulfil=fulfil, seed=seed,
                   prompt=prompt or ScriptedPrompt(pin="1234", pin_pad=pin_pad_of(app)))
    return Sale(run, spy, issuer)


def tvr_names(tvr: bytes) -> set[str]:
    return {name for name, bit in vars(TVR).items()
            if name.isupper() and isinstance(bit, tuple) and tvr[bit[0]] & bit[1]}


ODA_FAILED = {"SDA_FAILED", "DDA_FAILED", "CDA_FAILED"}
CDA = "visa_cda_online"  # CDA, online PIN, goes online for every sale
OFFLINE = "offline_approving"  # DDA, no CVM, approves 10.00 offline
MASTERCARD = "mastercard_cda"  # CDA, GPO and AAC answers in format 1 ('80')


def test_untampered_sales_are_the_baseline() -> None:
    """The runs every tampered case is compared with."""
    online = sale(CDA, 10000).outcome
    assert (online.kind, online.first_cryptogram_type, online.oda) == (
        OutcomeKind.APPROVED_ONLINE, "ARQC", "cda")
    offline = sale(OFFLINE, 1000).outcome
    assert (offline.kind, offline.oda) == (OutcomeKind.APPROVED_OFFLINE, "dda")
    offline_only = sale(OFFLINE, 1000, config="offline_only").outcome
    assert offline_only.kind == OutcomeKind.APPROVED_OFFLINE
    assert not tvr_names(offline_only.tvr) & ODA_FAILED


# --- Book 3, 10.1: GET PROCESSING OPTIONS -----------------------------------------------------

GPO_ANSWERS = {
    # Book 3, 6.5.8.4: format 1 is '80' AIP (2) || AFL (4n)
    "format 1 without AFL": answer("80023C00"),
    "format 1 AFL not a multiple of 4": answer("80073C00080102011001"),
    "format 2 without AFL": without(0x94),
    "format 2 without AIP": without(0x82),
    "format 2 repeating the AIP": with_extra(0x82, b"\x3c\x00"),
    "record template instead of 77": template_edited(lambda children: children, tag=0x70),
    "two templates": lambda data, sw: data + data + sw,
    "truncated": truncated(1),
    "empty": answer(""),
    # Book 3, 10.2: SFI 0 and record 0 are invalid in an AFL
    "AFL naming SFI 0": answer("80063C0000010200"),
    "AFL naming record 0": answer("80063C0008000100"),
    "AFL with more ODA records than records": answer("80063C0008010203"),
    "error status": status_word(0x6A81),
}


@pytest.mark.parametrize("rewrite", GPO_ANSWERS.values(), ids=GPO_ANSWERS.keys())
def test_a_malformed_gpo_answer_terminates(rewrite: Rewrite) -> None:
    done = sale(CDA, 10000, tamper={"ins": GPO, "rewrite": rewrite})
    assert (done.outcome.kind, done.outcome.reason) == (OutcomeKind.TERMINATED, "card_error")
    # Book 3, 10.1: nothing is read or generated after it.
    assert done.commands[-1] == "GET PROCESSING OPTIONS"
    assert done.outcome.cryptogram is None and done.outcome.first_cryptogram_type is None


def test_gpo_refused_by_the_only_application_is_not_accepted() -> None:
    """Book 3, 10.1: '6985' removes the application from the candidate list; none is left."""
    done = sale(CDA, 10000, tamper={"ins": GPO, "rewrite": status_word(0x6985)})
    assert (done.outcome.kind, done.outcome.reason) == (OutcomeKind.TERMINATED, "not_accepted")
    assert done.commands.count("GET PROCESSING OPTIONS") == 1
    assert done.commands[-1] == "GET PROCESSING OPTIONS"


# --- Book 3, 10.2: READ RECORD ---------------------------------------------------------------

RECORD_ANSWERS = {
    "truncated": ((1, 1), truncated(3)),
    "inner object overruns the template": ((1, 1), answer("70045A084761")),
    "'71' template in SFI 1": ((1, 2), template_edited(lambda children: children, tag=0x71)),
    "primitive instead of a template": ((2, 1), answer("5F200141")),
    "two templates": ((2, 1), lambda data, sw: data + bytes.fromhex("7003500141") + sw),
    "empty record": ((2, 2), answer("")),
    "error status": ((2, 2), status_word(0x6A83)),
}


@pytest.mark.parametrize(("where", "rewrite"), RECORD_ANSWERS.values(), ids=RECORD_ANSWERS.keys())
def test_a_malformed_record_in_sfi_1_to_10_terminates(where: tuple[int, int], rewrite: Rewrite) -> None:
    """Book 3, 10.2: records of SFI 1-10 are '70' templates; a bad one ends the transaction."""
    done = sale(CDA, 10000, tamper={**record(*where), "rewrite": rewrite})
    assert done.spy is not None and done.spy.seen == 1
    assert (done.outcome.kind, done.outcome.reason) == (OutcomeKind.TERMINATED, "card_error")
    assert done.commands[-1] == "READ RECORD"
    assert done.spy.sent[-1].p1 == where[1] and done.spy.sent[-1].p2 >> 3 == where[0]


REPEATED = {
    "PAN in another record": ((2, 1), with_extra(0x5A, bytes.fromhex("4761739001010010"))),
    "AIP of the GPO answer in a record": ((2, 1), with_extra(0x82, bytes.fromhex("3C00"))),
    "cardholder name twice in one record": ((2, 1), with_extra(0x5F20, b"TEST/CARDHOLDER")),
    "CDOL1 in a certificate record": ((1, 2), with_extra(0x8C, bytes.fromhex("9F0206"))),
}


@pytest.mark.parametrize(("where", "rewrite"), REPEATED.values(), ids=REPEATED.keys())
def test_a_repeated_primitive_terminates(where: tuple[int, int], rewrite: Rewrite) -> None:
    """Book 3, 10.2: a primitive data object met more than once while reading the card."""
    done = sale(CDA, 10000, tamper={**record(*where), "rewrite": rewrite})
    assert (done.outcome.kind, done.outcome.reason) == (OutcomeKind.TERMINATED, "card_error")
    assert "GENERATE AC" not in done.commands


def test_a_record_repeating_the_fci_label_is_accepted() -> None:
    """The FCI (SELECT) and the records may both carry the Application Label: only what the
    GPO answer and the records hold must not repeat."""
    done = sale(CDA, 10000, tamper={**record(2, 1), "rewrite": with_extra(0x50, b"VISA CREDIT")})
    assert done.outcome.kind == OutcomeKind.APPROVED_ONLINE


@pytest.mark.parametrize("tag", [0x5A, 0x5F24, 0x8C, 0x8D], ids=lambda t: f"{t:X}")
def test_a_card_without_mandatory_data_terminates(tag: int) -> None:
    """Book 3, 10.2: PAN, expiry date, CDOL1 and CDOL2 must be present."""
    done = sale(CDA, 10000, tamper={**record(1, 1), "rewrite": without(tag)})
    assert (done.outcome.kind, done.outcome.reason) == (OutcomeKind.TERMINATED, "missing_data")
    assert done.commands[-1] == "READ RECORD"  # every record was read, then it stopped
    assert done.commands.count("READ RECORD") == sale(CDA, 10000).commands.count("READ RECORD")


def test_removing_optional_data_does_not_terminate() -> None:
    """The same rewrite on an optional object (Cardholder Name, outside the signed records)
    leaves the sale approved, with ODA intact."""
    done = sale(CDA, 10000, tamper={**record(1, 2), "rewrite": without(0x5F20)})
    assert done.outcome.kind == OutcomeKind.APPROVED_ONLINE
    assert done.outcome.oda == "cda"


# --- Book 3, 10.3: offline data authentication fails -----------------------------------------
# Where the simulated cards keep their ODA data: SFI 2 record 1 holds the issuer certificate
# ('90'), SFI 2 record 2 the ICC certificate ('9F46', DDA and CDA) or the SSAD ('93', SDA).

CERTIFICATES = {
    "DDA, ICC certificate": (OFFLINE, record(2, 2), value_flipped(0x9F46, 40), "DDA_FAILED", "dda_failed"),
    "DDA, issuer certificate": (OFFLINE, record(2, 1), value_flipped(0x90, 40), "DDA_FAILED", "dda_failed"),
    "DDA, INTERNAL AUTHENTICATE signature": (
        OFFLINE, {"ins": INTERNAL_AUTHENTICATE}, value_flipped(0x9F4B, 40), "DDA_FAILED", "dda_failed"),
    "DDA, signed record": (OFFLINE, record(1, 1), value_flipped(0x5F25, 0), "DDA_FAILED", "dda_failed"),
    "SDA, signed static application data": (
        "sda_only", record(2, 2), value_flipped(0x93, 40), "SDA_FAILED", "sda_failed"),
    "SDA, issuer certificate": (
        "sda_only", record(2, 1), value_flipped(0x90, 40), "SDA_FAILED", "sda_failed"),
    "CDA, ICC certificate": (CDA, record(2, 2), value_flipped(0x9F46, 40), "CDA_FAILED", "cda_failed"),
    "CDA, issuer certificate": (CDA, record(2, 1), value_flipped(0x90, 40), "CDA_FAILED", "cda_failed"),
}


@pytest.mark.parametrize(("profile", "where", "rewrite", "bit", "reason"), CERTIFICATES.values(),
                         ids=CERTIFICATES.keys())
def test_a_bad_certificate_byte_declines_an_offline_only_sale(
        profile: str, where: dict[str, Any], rewrite: Rewrite, bit: str, reason: str) -> None:
    """Book 3, 10.3 sets the method's TVR bit; on an offline-only terminal TAC-Default
    (DC4000A800: byte 1 b7, b4, b3) turns it into an AAC at the first GENERATE AC (10.7)."""
    done = sale(profile, 1000, config="offline_only", tamper={**where, "rewrite": rewrite})
    outcome = done.outcome
    assert done.spy is not None and done.spy.seen == 1
    assert (outcome.kind, outcome.reason) == (OutcomeKind.DECLINED_OFFLINE, reason)
    assert tvr_names(outcome.tvr) & ODA_FAILED == {bit}
    assert outcome.oda == "failed" and outcome.cryptogram_type == "AAC"
    first_ac = next(c for c in done.spy.sent if c.ins == GENERATE_AC)
    assert first_ac.p1 & 0xC0 == 0x00  # Book 3, 6.5.5.2: AAC asked
    assert not first_ac.p1 & 0x10  # no CDA with an AAC, nor once CDA has failed (Book 2, 6.6)


def test_an_oda_failure_goes_online_when_the_host_can_be_reached() -> None:
    """Book 3, 10.7: IAC-Online and TAC-Online (DC4004F800) send the failed DDA to the issuer,
    who sees the bit in the TVR of field 55."""
    done = sale(OFFLINE, 1000, tamper={**record(2, 2), "rewrite": value_flipped(0x9F46, 40)})
    assert done.outcome.first_cryptogram_type == "ARQC"
    assert "DDA_FAILED" in tvr_names(done.host_saw()[0x95])
    assert done.outcome.kind == OutcomeKind.APPROVED_ONLINE


def test_cda_keys_failing_before_generate_ac_are_not_asked_for_a_signature() -> None:
    """Book 2, 6.6: when CDA already failed, GENERATE AC goes without the CDA request."""
    done = sale(CDA, 10000, tamper={**record(2, 2), "rewrite": value_flipped(0x9F46, 40)})
    assert done.spy is not None
    assert "CDA_FAILED" in tvr_names(done.outcome.tvr)
    generate = [c for c in done.spy.sent if c.ins == GENERATE_AC]
    assert generate and not any(c.p1 & 0x10 for c in generate)
    untouched = sale(CDA, 10000, tamper={**record(2, 2), "rewrite": unchanged})
    assert untouched.spy is not None
    assert [c.p1 & 0x10 for c in untouched.spy.sent if c.ins == GENERATE_AC] == [0x10, 0x10]


# --- Book 3, 6.5.5 and 10.8: GENERATE AC -----------------------------------------------------

FIRST_AC_ANSWERS = {
    "truncated": truncated(2),
    "without cryptogram 9F26": without(0x9F26),
    "without CID 9F27": without(0x9F27),
    "without ATC 9F36": without(0x9F36),
    "cryptogram of 7 bytes": template_edited(
        lambda children: [tlv.build(c.tag, c.value[:7]) if c.tag == 0x9F26 else c for c in children]),
    "RFU cryptogram type '11'": value_flipped(0x9F27, 0, 0x80),  # TC '40' -> '11' 'C0'
    "format 1 too short": answer("80054000011234"),
    "template 70": template_edited(lambda children: children, tag=0x70),
    "6985": status_word(0x6985),
    "6A81": status_word(0x6A81),
}


@pytest.mark.parametrize("rewrite", FIRST_AC_ANSWERS.values(), ids=FIRST_AC_ANSWERS.keys())
def test_a_malformed_first_generate_ac_answer_terminates(rewrite: Rewrite) -> None:
    done = sale(OFFLINE, 1000, tamper={"ins": GENERATE_AC, "rewrite": rewrite})
    outcome = done.outcome
    assert (outcome.kind, outcome.reason) == (OutcomeKind.TERMINATED, "card_error")
    assert outcome.cryptogram is None and outcome.first_cryptogram_type is None
    assert done.commands[-1] == "GENERATE AC" and done.commands.count("GENERATE AC") == 1


def test_a_cryptogram_above_the_one_asked_terminates() -> None:
    """Book 3, 6.5.5.2 (Table 13): asked for an ARQC, the card may not answer a TC."""
    done = sale(CDA, 10000, tamper={"ins": GENERATE_AC, "rewrite": value_flipped(0x9F27, 0, 0xC0)})
    assert (done.outcome.kind, done.outcome.reason) == (OutcomeKind.TERMINATED, "card_error")
    assert done.authorizer is not None and done.authorizer.seen == []


def test_an_altered_cda_signature_on_the_arqc_declines_offline() -> None:
    """Book 2, 6.6.2: the first answer's signature does not verify: CDA failed, the ARQC is not
    sent to the issuer and the sale is declined."""
    done = sale(CDA, 10000, tamper={"ins": GENERATE_AC, "rewrite": value_flipped(0x9F4B, 64)})
    outcome = done.outcome
    assert (outcome.kind, outcome.reason) == (OutcomeKind.DECLINED_OFFLINE, "cda_failed")
    assert "CDA_FAILED" in tvr_names(outcome.tvr) and outcome.oda == "failed"
    assert done.authorizer is not None and done.authorizer.seen == []
    assert not outcome.kind.approved


def test_an_altered_cda_signature_on_the_final_tc_declines() -> None:
    """Book 2, 6.6.2: the issuer approved, the card's TC signature does not verify: declined (the
    firmware reverses the approval)."""
    done = sale(CDA, 10000,
                tamper={"ins": GENERATE_AC, "occurrence": 2, "rewrite": value_flipped(0x9F4B, 64)})
    outcome = done.outcome
    assert outcome.kind == OutcomeKind.DECLINED_ONLINE
    assert "CDA_FAILED" in tvr_names(outcome.tvr)
    assert outcome.cryptogram_type == "AAC" and outcome.response_code == b"00"


def test_a_cda_answer_whose_cid_disagrees_with_the_signature_declines() -> None:
    """Book 2, 6.6.2: the CID inside the signed data must be the CID returned; here the
    advice bit is set outside the signature only."""
    done = sale(CDA, 10000, tamper={"ins": GENERATE_AC, "rewrite": value_flipped(0x9F27, 0, 0x08)})
    assert (done.outcome.kind, done.outcome.reason) == (OutcomeKind.DECLINED_OFFLINE, "cda_failed")
    assert "CDA_FAILED" in tvr_names(done.outcome.tvr)
    assert done.authorizer is not None and done.authorizer.seen == []


def test_an_aac_without_its_cryptogram_terminates() -> None:
    """Book 3, 6.5.5.4: an AAC is never signed (Book 2, 6.6.1), so 9F26 must be there; this
    answer turns the ARQC's CID into an AAC and keeps only the signature."""
    done = sale(CDA, 10000, tamper={"ins": GENERATE_AC, "rewrite": value_flipped(0x9F27, 0, 0x80)})
    assert (done.outcome.kind, done.outcome.reason) == (OutcomeKind.TERMINATED, "card_error")
    assert done.authorizer is not None and done.authorizer.seen == []


FORMAT_1_AAC = {
    "10 bytes": answer("800A00000111223344556677"),  # CID, ATC and a 7-byte AC
    "IAD of 33 bytes": lambda data, sw: tlv.encode(0x80, data[2:13] + bytes(33)) + sw,
    "two templates": lambda data, sw: data + data + sw,
}


@pytest.mark.parametrize("rewrite", FORMAT_1_AAC.values(), ids=FORMAT_1_AAC.keys())
def test_a_malformed_format_1_answer_terminates(rewrite: Rewrite) -> None:
    """Book 3, 6.5.5.4: format 1 is CID (1), ATC (2), AC (8) and at most 32 bytes of IAD."""
    done = sale(MASTERCARD, 10000, host="decline",
                tamper={"ins": GENERATE_AC, "occurrence": 2, "rewrite": rewrite})
    assert done.spy is not None and done.spy.original is not None
    assert done.spy.original[:1] == b"\x80"  # the card's own AAC is a format 1 answer
    assert (done.outcome.kind, done.outcome.reason) == (OutcomeKind.TERMINATED, "card_error")
    assert done.outcome.first_cryptogram_type == "ARQC"


SECOND_AC_ANSWERS = {
    "6985": status_word(0x6985),
    "truncated": truncated(5),
    # TC '40' -> ARQC '80'; unable to go online, AAC '00' -> RFU 'C0'
    "ARQC in the second GENERATE AC": value_flipped(0x9F27, 0, 0xC0),
}


@pytest.mark.parametrize("rewrite", SECOND_AC_ANSWERS.values(), ids=SECOND_AC_ANSWERS.keys())
@pytest.mark.parametrize("host", ["approve", "none"])
def test_a_bad_second_generate_ac_answer_keeps_the_arqc(rewrite: Rewrite, host: str) -> None:
    """The issuer may have approved the ARQC: the outcome keeps it, so that the firmware can
    reverse (ARCHITECTURE principle 4), and says the card failed."""
    done = sale(CDA, 10000, host=host, tamper={"ins": GENERATE_AC, "occurrence": 2, "rewrite": rewrite})
    outcome = done.outcome
    assert (outcome.kind, outcome.reason) == (OutcomeKind.TERMINATED, "card_error")
    assert outcome.first_cryptogram_type == "ARQC" and outcome.cryptogram_type == "ARQC"
    if host == "approve":
        assert outcome.cryptogram == done.host_saw()[0x9F26]
        assert outcome.response_code == b"00" and outcome.authorization_code
    else:
        assert outcome.cryptogram and len(outcome.cryptogram) == 8


# --- the card pulled out ---------------------------------------------------------------------


def pulled_at(card: SimCard, n: int) -> Callable[[Transmit], Response]:
    """The card leaves the reader at the `n`-th command (counted from 0): that command and every
    later one fail as the reader adapter reports it, with `TransportError`."""
    send = driver.card_sender(card.process, card.protocol)
    sent = 0

    def fulfil(request: Transmit) -> Response:
        nonlocal sent
        sent += 1
        if sent > n:
            raise TransportError("card removed")
        return send(request)

    return fulfil


PULLED = [(CDA, 10000), (OFFLINE, 1000), ("dda_offline_pin", 10000), ("sda_only", 10000)]


@pytest.mark.parametrize(("profile", "amount"), PULLED, ids=[p for p, _ in PULLED])
def test_a_card_pulled_at_any_command_ends_cleanly(profile: str, amount: int) -> None:
    complete = sale(profile, amount).commands
    first_ac = complete.index("GENERATE AC")
    for n in range(len(complete)):
        done = sale(profile, amount, fulfil=pulled_at(fresh_card(profile), n))
        outcome, at = done.outcome, f"pulled at {n} ({complete[n]})"
        assert len(done.commands) == n + 1, at  # nothing is sent to a card gone
        if n <= first_ac:
            assert (outcome.kind, outcome.reason) == (OutcomeKind.TRY_AGAIN, "card_removed"), at
            assert outcome.cryptogram is None and outcome.first_cryptogram_type is None, at
        else:
            # After the ARQC the card's decision is unknown: the firmware reverses an approval.
            assert (outcome.kind, outcome.reason) == (
                OutcomeKind.TERMINATED, "card_removed_during_completion"), at
            assert outcome.first_cryptogram_type == "ARQC", at
            assert outcome.cryptogram == done.host_saw()[0x9F26], at
            assert outcome.response_code == b"00" and outcome.authorization_code, at
    assert first_ac < len(complete) - 1 or profile == OFFLINE


# --- nonsense from the driver ----------------------------------------------------------------


@dataclass
class Chooser(ScriptedPrompt):
    """Answers ChooseApplication with whatever it is given, PIN 1234 otherwise."""

    answer: Any = None

    def choose_application(self, request: ChooseApplication) -> Any:
        self.asked.append("choose_application")
        return self.answer


COBADGED = "cb_visa_cobadged"


@pytest.mark.parametrize("choice", [True, False, -1, 2, 99, None, "0", 0.0, b"\x00"], ids=repr)
def test_a_nonsense_application_choice_cancels(choice: Any) -> None:
    """Book 1, 12.4: the cardholder picks one of the offered candidates, or none."""
    done = sale(COBADGED, 10000, prompt=Chooser(pin="1234", answer=choice))
    assert (done.outcome.kind, done.outcome.reason) == (OutcomeKind.TERMINATED, "cancelled")
    assert "GET PROCESSING OPTIONS" not in done.commands
    assert done.commands.count("SELECT") == 1  # the PSE only: no application was selected


@pytest.mark.parametrize(("choice", "aid"), [(0, "A0000000421010"), (1, "A0000000031010")])
def test_a_valid_application_choice_is_followed(choice: int, aid: str) -> None:
    done = sale(COBADGED, 10000, prompt=Chooser(pin="1234", answer=choice))
    assert done.outcome.kind == OutcomeKind.APPROVED_ONLINE
    assert done.outcome.aid == bytes.fromhex(aid)


@dataclass
class OddHost:
    """An authorizer whose answer is not an OnlineResponse."""

    answer: Any
    seen: list[OnlineRequest] = field(default_factory=list)

    def authorize(self, request: OnlineRequest) -> Any:
        self.seen.append(request)
        return self.answer


@pytest.mark.parametrize(
    "reply", [None, True, "00", {"approved": True}, OnlineResponse, HostStatus.RESPONDED], ids=repr)
@pytest.mark.parametrize("amount", [1000, 10000])
def test_a_host_answer_that_is_not_an_online_response_is_unable_to_go_online(reply: Any, amount: int) -> None:
    """Book 3, 10.9: no usable answer from the issuer is "unable to go online": the default action
    codes decide, the card gets 8A 'Y3'/'Z3' in the second GENERATE AC, exactly as with no host."""
    host = OddHost(reply)
    done = sale(CDA, amount, authorizer=host)
    unreachable = sale(CDA, amount, host="none")
    assert len(host.seen) == 1
    assert done.outcome.kind in (OutcomeKind.APPROVED_UNABLE_ONLINE, OutcomeKind.DECLINED_UNABLE_ONLINE)
    same = ("kind", "reason", "response_code", "cryptogram_type", "tvr", "tsi", "cryptogram")
    assert {k: getattr(done.outcome, k) for k in same} == {k: getattr(unreachable.outcome, k) for k in same}
    assert done.commands == unreachable.commands
    assert done.outcome.response_code in (b"Y3", b"Z3")


# --- the outcome: safe to print, complete, deterministic -------------------------------------


class CardData:
    """What the card itself sent in its records, captured under the kernel: its PAN and track 2."""

    def __init__(self, card: SimCard) -> None:
        self.card = card
        self.objects: dict[int, bytes] = {}

    def process(self, raw: bytes) -> bytes:
        answer = self.card.process(raw)
        if raw[1] == READ_RECORD and answer[-2:] == SW_OK:
            for tag, value in tlv.primitives(tlv.decode(answer[:-2])):
                self.objects.setdefault(tag, value)
        return answer


SAFETY = [(CDA, 10000, "approve"), (CDA, 10000, "none"), (OFFLINE, 1000, "approve"),
          ("sda_only", 10000, "decline"), (COBADGED, 10000, "approve")]


@pytest.mark.parametrize(("profile", "amount", "host"), SAFETY, ids=[f"{p}-{h}" for p, _, h in SAFETY])
def test_the_outcome_never_shows_pan_or_track2(profile: str, amount: int, host: str) -> None:
    card = fresh_card(profile)
    seen = CardData(card)
    done = sale(profile, amount, host=host, card=card, fulfil=driver.card_sender(seen.process, card.protocol))
    outcome = done.outcome
    pan_bcd, track2 = seen.objects[0x5A], seen.objects[0x57]
    pan = pan_bcd.hex().upper().rstrip("F")
    assert outcome.pan is not None and outcome.pan.reveal() == pan
    assert outcome.track2 is not None and outcome.track2.reveal() == track2
    summary = outcome.summary()
    texts = [repr(outcome), str(outcome), str(summary), json.dumps(summary), *outcome.events]
    for text in texts:
        for secret in (pan, track2.hex(), track2.hex().upper(), repr(pan_bcd)[2:-1], repr(track2)[2:-1]):
            assert secret not in text
    assert "pan" not in summary and "track2" not in summary
    assert outcome.pan_masked is not None and outcome.pan_masked.endswith(pan[-4:])
    assert outcome.pan_masked.count(pan[6:-4]) == 0


@pytest.mark.parametrize(("profile", "amount", "host"), SAFETY, ids=[f"{p}-{h}" for p, _, h in SAFETY])
def test_the_outcome_chip_data_is_field_55_of_the_final_cryptogram(
        profile: str, amount: int, host: str) -> None:
    outcome = sale(profile, amount, host=host).outcome
    data = dict(tlv.primitives(tlv.decode(outcome.chip_data)))
    assert {0x9F26, 0x9F27, 0x9F36, 0x95} <= set(data)
    assert data[0x9F26] == outcome.cryptogram and len(data[0x9F26]) == 8
    assert data[0x9F27] == bytes([outcome.cid or 0]) and data[0x9F36] == outcome.atc
    assert data[0x95] == outcome.tvr and data[0x9F37] == outcome.unpredictable_number
    assert not {0x5A, 0x57} & set(data)  # the PAN travels in field 2, track 2 in field 35


def test_same_seed_and_clock_give_the_same_outcome() -> None:
    first = sale(CDA, 10000, seed=7).outcome.summary()
    again = sale(CDA, 10000, seed=7).outcome.summary()
    assert first == again


def test_the_unpredictable_number_comes_from_the_injected_rng() -> None:
    """Book 4, 6.5.6 wants it unpredictable: it is the rng's first 4 bytes, so a different rng
    gives a different number (and a different cryptogram for the same card and sale)."""
    one, other = sale(CDA, 10000, seed=7).outcome, sale(CDA, 10000, seed=8).outcome
    assert one.unpredictable_number == random.Random(7).randbytes(4)
    assert other.unpredictable_number == random.Random(8).randbytes(4)
    assert one.unpredictable_number != other.unpredictable_number
    assert one.cryptogram != other.cryptogram
    assert one.kind == other.kind == OutcomeKind.APPROVED_ONLINE


# --- property: any damaged answer ends in an Outcome -----------------------------------------

# A whole sale per example, one answer damaged. One only: a non-CDA card's GENERATE AC answer is
# not signed, so a CID turned into TC there could not be detected by any terminal (Book 2, 6.6
# is what protects it); with a single damaged answer every GENERATE AC answer that follows it is
# the card's own, and an approval must rest on a TC the card really produced.
SCENARIOS = [(CDA, 10000, "approve"), (CDA, 10000, "none"), (OFFLINE, 1000, "approve"),
             (MASTERCARD, 10000, "approve"), (MASTERCARD, 10000, "decline")]


@dataclass(frozen=True)
class Damage:
    answer: int  # which card answer (counted from 0, every command; past the end: none)
    kind: str  # "flip", "truncate", "status"
    where: tuple[int, ...]  # byte positions, taken modulo the answer's length
    masks: tuple[int, ...]
    status: bytes

    def apply(self, data: bytes, sw: bytes) -> bytes:
        if self.kind == "truncate":
            return data[:self.where[0] % (len(data) + 1)] + sw
        if self.kind == "status":
            return data + self.status
        damaged = bytearray(data)
        for position, mask in zip(self.where, self.masks, strict=False):
            if damaged:
                damaged[position % len(damaged)] ^= mask
        return bytes(damaged) + sw


damages = st.builds(
    Damage,
    answer=st.integers(0, 15),
    kind=st.sampled_from(["flip", "flip", "truncate", "status"]),
    where=st.lists(st.integers(0, 1024), min_size=1, max_size=4).map(tuple),
    masks=st.lists(st.integers(1, 255), min_size=4, max_size=4).map(tuple),
    status=st.one_of(st.sampled_from([b"\x69\x85", b"\x6a\x83", b"\x62\x83", b"\x63\xc1", b"\x6f\x00"]),
                     st.binary(min_size=2, max_size=2)),
)


class Damaged:
    """The card with one answer damaged; keeps the card's own GENERATE AC answers."""

    def __init__(self, card: SimCard, damage: Damage) -> None:
        self.card, self.damage = card, damage
        self.answers = 0
        self.generate_ac: list[bytes] = []

    def process(self, raw: bytes) -> bytes:
        answer = self.card.process(raw)
        if raw[1] == GENERATE_AC:
            self.generate_ac.append(answer)
        self.answers += 1
        if self.answers - 1 == self.damage.answer:
            return self.damage.apply(answer[:-2], answer[-2:])
        return answer


def real_cid(answer: bytes) -> int:
    """CID of a GENERATE AC answer the card sent (Book 3, 6.5.5.4, both formats)."""
    (top,) = tlv.decode(answer[:-2])
    if top.tag == 0x80:
        return top.value[0]
    return dict(tlv.primitives(top.children or ()))[0x9F27][0]


@settings(max_examples=200, deadline=None)
@given(scenario=st.sampled_from(SCENARIOS), damage=damages)
def test_a_damaged_answer_always_ends_in_an_outcome(scenario: tuple[str, int, str], damage: Damage) -> None:
    profile, amount, host = scenario
    card = fresh_card(profile)
    damaged = Damaged(card, damage)
    outcome = sale(profile, amount, host=host, card=card,
                   fulfil=driver.card_sender(damaged.process, card.protocol)).outcome
    assert isinstance(outcome, Outcome) and isinstance(outcome.kind, OutcomeKind)
    assert outcome.reason is None or outcome.reason.replace("_", "").isalpha()
    json.dumps(outcome.summary())
    if outcome.kind.approved:
        assert outcome.cryptogram_type == "TC" and outcome.cid is not None and outcome.cid & 0xC0 == 0x40
        assert damaged.generate_ac and real_cid(damaged.generate_ac[-1]) & 0xC0 == 0x40
    if outcome.pan is not None and len(outcome.pan.reveal()) >= 12:
        assert outcome.pan.reveal() not in json.dumps(outcome.summary()) + repr(outcome)


@pytest.mark.parametrize("where", [record(1, 2), {"ins": GPO}], ids=["record", "GPO answer"])
def test_the_card_cannot_rename_the_selected_application(where: dict[str, Any]) -> None:
    """Book 1, 11.3.4: the DF Name ('84') comes with the FCI of the application the terminal
    selected. Another one later is a redundant data object (Book 3, 10.2); taken in, it would name
    another AID to the host and another RID for the CA keys (Book 2, 5.2)."""
    done = sale(CDA, 10000, tamper={**where, "rewrite": with_extra(0x84, bytes.fromhex("A0000000041010"))})
    assert (done.outcome.kind, done.outcome.reason) == (OutcomeKind.TERMINATED, "card_error")
    assert done.outcome.aid == bytes.fromhex("A0000000031010")
    assert "GENERATE AC" not in done.commands


SCRIPTED = "issuer_scripts"  # Mastercard CDA card taking issuer scripts


def test_a_card_pulled_during_a_script_after_the_final_tc_keeps_the_approval() -> None:
    """Book 3, 10.10: scripts '72' run after the final GENERATE AC; the card's TC and the issuer's
    approval stand, the script fails (TVR byte 5 b5), as when the card answers it with an error."""

    def issuer() -> ScriptedAuthorizer:
        return ScriptedAuthorizer(profiles=[SCRIPTED], put_data={0x9F14: b"\x03"})

    complete = sale(SCRIPTED, 10000, authorizer=issuer()).commands
    assert complete[-2:] == ["GENERATE AC", "PUT DATA"]
    refused = sale(SCRIPTED, 10000, authorizer=issuer(), tamper={"ins": 0xDA, "rewrite": status_word(0x6A88)})
    assert refused.outcome.kind == OutcomeKind.APPROVED_ONLINE
    assert "SCRIPT_FAILED_AFTER_FINAL_AC" in tvr_names(refused.outcome.tvr)
    gone = pulled_at(fresh_card(SCRIPTED), len(complete) - 1)
    pulled = sale(SCRIPTED, 10000, authorizer=issuer(), fulfil=gone)
    assert (pulled.outcome.kind, pulled.outcome.cryptogram_type) == (OutcomeKind.APPROVED_ONLINE, "TC")
    assert "SCRIPT_FAILED_AFTER_FINAL_AC" in tvr_names(pulled.outcome.tvr)
