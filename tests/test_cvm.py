"""Cardholder verification (EMV 4.4 Book 3, 10.5 and Annex C3; Book 4, 6.3.4 and Annex A4).

Runs `emv.cvm` against the simulated card (real PIN try counter, real PIN decipherment with its
TEST KEYS) and against hand-written card answers. Expected CVM Results are written out from the
CV Rules and Book 4 Annex A4 (byte 1 the rule's first byte, byte 2 its condition, byte 3 '00'
unknown / '01' failed / '02' successful); TVR and TSI bits from Book 3 Annex C5/C6. The
enciphered PIN is checked by deciphering it with the card's private TEST KEY straight from its
PEM file, not through the simulator's code.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emv import apdu, app_data, card_data, cvm, dol, selection
from emv.apdu import Response
from emv.capk import load_capks
from emv.certificates import IccPublicKey
from emv.context import TSI, TVR, Context, Transaction
from emv.kernel_config import KernelConfig, TerminalConfig
from emv.outcome import Terminate
from emv.requests import (
    CaptureSignature,
    ConfirmAmount,
    EnterOfflinePin,
    EnterOnlinePin,
    PinEntry,
    PinStatus,
    Transmit,
)
from emv.sensitive import Sensitive
from firmware import driver
from sim.card.card import SimCard
from sim.card.profile import load_profile

ROOT = Path(__file__).parents[1]
WHEN = datetime.datetime(2026, 11, 26, 12, 0)
CA_KEYS = load_capks((ROOT / "sim" / "card" / "ca_keys.toml").read_text())
PAN = "4761739001010036"  # the dda_offline_pin profile's PAN
RIGHT_PIN = "1234"  # every profile's PIN (sim/card/profile.py default)
# Book 4 Annex A2, byte 2: plaintext PIN 80, online PIN 40, signature 20, enciphered PIN 10, no CVM 08.
ALL_CVMS = bytes.fromhex("E0F8C8")
NO_PLAINTEXT_PIN = bytes.fromhex("E078C8")


# --- Rigs -----------------------------------------------------------------------------------

@dataclass
class Rig:
    ctx: Context
    send: Callable[[Transmit], Response]
    card: SimCard | None = None


def config(**terminal: Any) -> KernelConfig:
    return KernelConfig(terminal=TerminalConfig(**terminal), ca_keys=CA_KEYS)


def context(cfg: KernelConfig, amount: int = 1500, **txn: Any) -> Context:
    ctx = Context(config=cfg, transaction=Transaction(amount, WHEN, **txn), rng=random.Random(7).randbytes)
    ctx.unpredictable_number = bytes.fromhex("1A2B3C4D")
    return ctx


def sim_rig(profile: str, *, cvm_list: bytes | None = None, amount: int = 1500, **terminal: Any) -> Rig:
    """SELECT, GET PROCESSING OPTIONS and READ RECORD (Book 3, 10.1-10.3) on a simulated card,
    the way the kernel does before cardholder verification."""
    card = SimCard(load_profile(profile), rng=random.Random(1), today=lambda: WHEN.date())
    card.power_on()
    send = driver.card_sender(card.process, card.protocol)
    ctx = context(config(**terminal), amount)
    fci = driver.run(selection.select_application(card.profile.applications[0].aid), send)
    ctx.card = {0x84: fci.df_name}
    if fci.label:
        ctx.card[0x50] = fci.label.encode("ascii")
    ctx.pdol_data = dol.build(fci.pdol, ctx.dol_data()) if fci.pdol else b""
    gpo = send(Transmit(apdu.get_processing_options(ctx.pdol_data)))
    assert gpo.sw == 0x9000
    options = app_data.parse_gpo(gpo.data)
    ctx.aip = card_data.decode_aip(options.aip)
    ctx.afl = card_data.parse_afl(options.afl)
    ctx.card.update(options.objects)
    records = driver.run(app_data.read_records(ctx.afl), send)
    ctx.card.update(records.data)
    ctx.oda_data = records.oda
    if ctx.card.get(0x9F4A) == b"\x82":
        ctx.oda_data += ctx.card[0x82]
    if cvm_list is not None:
        ctx.card[0x8E] = cvm_list
    return Rig(ctx, send, card)


class ScriptedCard:
    """Answers by instruction byte from lists of responses; anything unscripted gets '6D00'."""

    def __init__(self, **answers: list[Response]) -> None:
        self.answers = {getattr(apdu, f"INS_{name.upper()}"): list(values)
                        for name, values in answers.items()}
        self.commands: list[apdu.Command] = []

    def __call__(self, request: Transmit) -> Response:
        self.commands.append(request.command)
        queue = self.answers.get(request.command.ins)
        return queue.pop(0) if queue else Response(b"", 0x6D00)


def bare_rig(cvm_list: bytes | None, *, aip: bytes = b"\x10\x00", card: ScriptedCard | None = None,
             amount: int = 1500, currency: bytes | None = b"\x09\x78", txn: dict[str, Any] | None = None,
             **terminal: Any) -> Rig:
    """A context holding only what CVM processing reads: AIP, 8E, 9F42, PAN."""
    ctx = context(config(**terminal), amount, **(txn or {}))
    ctx.aip = card_data.decode_aip(aip)
    ctx.card = {0x5A: bytes.fromhex(PAN)}
    if currency is not None:
        ctx.card[0x9F42] = currency
    if cvm_list is not None:
        ctx.card[0x8E] = cvm_list
    return Rig(ctx, card or ScriptedCard())


def cvm_list(*rules: str, x: int = 0, y: int = 0) -> bytes:
    return x.to_bytes(4, "big") + y.to_bytes(4, "big") + bytes.fromhex("".join(rules))


def entered(pin: str) -> PinEntry:
    return PinEntry(PinStatus.ENTERED, pin=Sensitive(pin, "PIN"))


@dataclass
class Cardholder:
    """Answers the prompts: PIN entries in order, then the signature and confirmation."""

    pins: list[PinEntry] = field(default_factory=list)
    signature: object = True
    confirm: object = True
    seen: list[object] = field(default_factory=list)
    on_pin: Callable[[EnterOfflinePin | EnterOnlinePin], None] | None = None

    def answer(self, request: object, send: Callable[[Transmit], Response]) -> object:
        self.seen.append(request)
        if isinstance(request, Transmit):
            return send(request)
        if isinstance(request, ConfirmAmount):
            return self.confirm
        if isinstance(request, EnterOfflinePin | EnterOnlinePin):
            if self.on_pin is not None:
                self.on_pin(request)
            return self.pins.pop(0)
        if isinstance(request, CaptureSignature):
            return self.signature
        raise AssertionError(f"unexpected request {request!r}")

    def of(self, kind: type) -> list[Any]:
        return [r for r in self.seen if isinstance(r, kind)]

    def commands(self) -> list[apdu.Command]:
        return [r.command for r in self.seen if isinstance(r, Transmit)]


def verify(rig: Rig, holder: Cardholder | None = None) -> Cardholder:
    holder = holder or Cardholder()
    gen = cvm.cardholder_verification(rig.ctx)
    try:
        request = next(gen)
        while True:
            request = gen.send(holder.answer(request, rig.send))
    except StopIteration:
        pass
    return holder


def tvr_bits(ctx: Context) -> set[tuple[int, int]]:
    return {bit for bit in card_data.TVR_BITS if ctx.tvr.is_set(bit)}


def ins(commands: list[apdu.Command]) -> list[int]:
    return [c.ins for c in commands]


GET_DATA, VERIFY, GET_CHALLENGE = apdu.INS_GET_DATA, apdu.INS_VERIFY, apdu.INS_GET_CHALLENGE


# --- Simulated cards ------------------------------------------------------------------------

def test_offline_plaintext_pin_first_try() -> None:
    rig = sim_rig("dda_offline_pin")  # CVM list 4103 4403 1E03
    holder = verify(rig, Cardholder(pins=[entered(RIGHT_PIN)]))
    ctx = rig.ctx
    assert ctx.cvm_results == bytes.fromhex("410302")
    assert ctx.tsi.is_set(TSI.CVM_PERFORMED)
    assert tvr_bits(ctx) == set()
    assert ctx.cvm_performed == "Plaintext PIN verification performed by ICC"
    assert not ctx.signature_required
    assert [type(r).__name__ for r in holder.seen] == ["Transmit", "ConfirmAmount", "EnterOfflinePin",
                                                        "Transmit"]
    get_data, verify_command = holder.commands()
    assert (get_data.ins, get_data.p1, get_data.p2) == (GET_DATA, 0x9F, 0x17)
    # Book 3, 6.5.12: P2 '80', ISO 9564 format 2 block: C=2, N=4, PIN, 'F' fill.
    assert (verify_command.ins, verify_command.p2) == (VERIFY, 0x80)
    assert verify_command.data == bytes.fromhex("241234FFFFFFFFFF")
    (prompt,) = holder.of(EnterOfflinePin)
    assert (prompt.tries_left, prompt.last_try, prompt.enciphered) == (3, False, False)
    assert (prompt.amount, prompt.currency, prompt.exponent) == (1500, 978, 2)
    (confirm,) = holder.of(ConfirmAmount)
    assert (confirm.amount, confirm.currency, confirm.label) == (1500, 978, "VISA CREDIT")
    assert rig.card is not None and rig.card.state.pin_tries_left == 3


def test_wrong_pin_then_right_pin() -> None:
    rig = sim_rig("dda_offline_pin")
    assert rig.card is not None
    card = rig.card
    counters: list[int] = []
    holder = Cardholder(pins=[entered("9999"), entered(RIGHT_PIN)],
                        on_pin=lambda _request: counters.append(card.state.pin_tries_left))
    verify(rig, holder)
    # The card counted the wrong PIN before the second prompt, and reset on the right one.
    assert counters == [3, 2]
    assert card.state.pin_tries_left == 3
    first, second = holder.of(EnterOfflinePin)
    assert (first.tries_left, second.tries_left, second.last_try) == (3, 2, False)
    assert len(holder.of(ConfirmAmount)) == 1
    assert rig.ctx.cvm_results == bytes.fromhex("410302")
    assert tvr_bits(rig.ctx) == set()


def test_three_wrong_pins_block_the_pin_and_fall_back_to_signature() -> None:
    rig = sim_rig("dda_offline_pin")
    holder = verify(rig, Cardholder(pins=[entered("1111"), entered("2222"), entered("3333")]))
    prompts = holder.of(EnterOfflinePin)
    assert [(p.tries_left, p.last_try) for p in prompts] == [(3, False), (2, False), (1, True)]
    assert rig.card is not None and rig.card.state.pin_tries_left == 0
    # 4103 fails on 63C0, 4403 finds the PIN Try Counter at 0 and asks nothing, 1E03 signs.
    assert all(not p.enciphered for p in prompts)
    assert rig.ctx.cvm_results == bytes.fromhex("1E0300")
    assert tvr_bits(rig.ctx) == {TVR.PIN_TRY_LIMIT_EXCEEDED}
    assert rig.ctx.signature_required
    assert rig.ctx.cvm_performed == "Signature (paper)"
    assert GET_CHALLENGE not in ins(holder.commands())


def _decipher(pem: str, enciphered: bytes) -> bytes:
    """Raw RSA with the card's private TEST KEY (Book 2, 7.2 reversed)."""
    key = load_pem_private_key((ROOT / "sim" / "card" / "keys" / pem).read_bytes(), password=None)
    numbers = key.private_numbers()  # type: ignore[union-attr]
    n = numbers.public_numbers.n
    value = pow(int.from_bytes(enciphered, "big"), numbers.d, n)
    return value.to_bytes((n.bit_length() + 7) // 8, "big")


def test_offline_enciphered_pin_with_the_icc_pin_key() -> None:
    # Without plaintext PIN support, 4103 ("if terminal supports") is skipped and 4403 runs.
    rig = sim_rig("dda_offline_pin", capabilities=NO_PLAINTEXT_PIN)
    pads: list[int] = []

    def rng(n: int) -> bytes:
        pads.append(n)
        return bytes([0x5A]) * n

    rig.ctx.rng = rng
    holder = verify(rig, Cardholder(pins=[entered(RIGHT_PIN)]))
    assert rig.ctx.cvm_results == bytes.fromhex("440302")
    assert tvr_bits(rig.ctx) == set()
    (prompt,) = holder.of(EnterOfflinePin)
    assert prompt.enciphered and prompt.tries_left == 3
    commands = holder.commands()
    assert ins(commands) == [GET_DATA, GET_CHALLENGE, VERIFY]
    verify_command = commands[-1]
    assert verify_command.p2 == 0x88
    plain = _decipher("icc_pin_1.pem", verify_command.data)
    # Book 2, 7.2 Table 25: '7F' || PIN block || ICC UN || random pad of N - 17 bytes.
    assert plain[0] == 0x7F
    assert plain[1:9] == bytes.fromhex("241234FFFFFFFFFF")
    assert plain[17:] == bytes([0x5A]) * (len(plain) - 17)
    assert pads == [len(plain) - 17]
    assert rig.card is not None and rig.card.state.pin_tries_left == 3


def test_offline_enciphered_pin_with_the_icc_key() -> None:
    # offline_approving: DDA with icc_2 and no PIN encipherment key (Book 2, 7.1: the ICC key).
    rig = sim_rig("offline_approving", cvm_list=cvm_list("0400"))
    assert 0x9F2D not in rig.ctx.card
    holder = verify(rig, Cardholder(pins=[entered(RIGHT_PIN)]))
    assert rig.ctx.cvm_results == bytes.fromhex("040002")
    plain = _decipher("icc_2.pem", holder.commands()[-1].data)
    assert plain[:9] == bytes.fromhex("7F241234FFFFFFFFFF")


def test_enciphered_pin_wrong_then_right_asks_a_new_challenge() -> None:
    rig = sim_rig("dda_offline_pin", capabilities=NO_PLAINTEXT_PIN)
    holder = verify(rig, Cardholder(pins=[entered("0000"), entered(RIGHT_PIN)]))
    assert ins(holder.commands()) == [GET_DATA, GET_CHALLENGE, VERIFY, GET_CHALLENGE, VERIFY]
    assert rig.ctx.cvm_results == bytes.fromhex("440302")


@pytest.mark.parametrize("spoil", ["certificate", "no_ca_key"])
def test_unrecoverable_pin_key_fails_the_cvm_without_prompting(spoil: str) -> None:
    rig = sim_rig("dda_offline_pin", cvm_list=cvm_list("4400", "1F00"))
    ctx = rig.ctx
    if spoil == "certificate":
        cert = ctx.card[0x9F2D]
        ctx.card[0x9F2D] = cert[:-1] + bytes([cert[-1] ^ 0x01])
    else:
        ctx.config = KernelConfig(terminal=ctx.config.terminal)
    holder = verify(rig, Cardholder())
    assert holder.of(EnterOfflinePin) == []
    assert holder.commands() == []
    assert ctx.cvm_results == bytes.fromhex("1F0002")
    # Book 2, 7.1: the CVM fails; no PIN bit (no PIN was asked for) and no ODA bit.
    assert tvr_bits(ctx) == set()


def test_pin_blocked_card_goes_to_signature() -> None:
    rig = sim_rig("pin_blocked")
    holder = verify(rig, Cardholder())
    assert holder.of(EnterOfflinePin) == []
    assert VERIFY not in ins(holder.commands())
    assert rig.ctx.cvm_results == bytes.fromhex("1E0300")
    assert tvr_bits(rig.ctx) == {TVR.PIN_TRY_LIMIT_EXCEEDED}
    assert rig.ctx.signature_required


def test_online_pin() -> None:
    rig = sim_rig("visa_cda_online")  # CVM list 4203 1E03 1F03
    block = Sensitive(bytes(range(16)), "PIN block")
    entry = PinEntry(PinStatus.ENTERED, pin_block=block, key_serial=b"\x01\x02")
    holder = verify(rig, Cardholder(pins=[entry]))
    ctx = rig.ctx
    assert ctx.cvm_results == bytes.fromhex("420300")
    assert tvr_bits(ctx) == {TVR.ONLINE_PIN_ENTERED}
    assert ctx.online_pin_block is block
    assert ctx.pin_key_serial == b"\x01\x02"
    assert ctx.cvm_performed == "Enciphered PIN verified online"
    (prompt,) = holder.of(EnterOnlinePin)
    assert prompt.pan == Sensitive("4761739001010010")
    assert holder.commands() == []


def test_signature_card() -> None:
    rig = sim_rig("sda_only")  # 1E03 1F03
    holder = verify(rig, Cardholder())
    assert rig.ctx.cvm_results == bytes.fromhex("1E0300")
    assert rig.ctx.signature_required
    assert [type(r) for r in holder.seen] == [ConfirmAmount, CaptureSignature]


def test_no_cvm_card_asks_nothing() -> None:
    rig = sim_rig("offline_approving")  # 1F03 1E03
    holder = verify(rig, Cardholder())
    assert holder.seen == []
    assert rig.ctx.cvm_results == bytes.fromhex("1F0302")
    assert rig.ctx.tsi.is_set(TSI.CVM_PERFORMED)
    assert rig.ctx.cvm_performed == "No CVM required"


def test_bypassed_pin_bypasses_the_later_pin_cvm_too() -> None:
    rig = sim_rig("dda_offline_pin")
    holder = verify(rig, Cardholder(pins=[PinEntry(PinStatus.BYPASSED)]))
    assert len(holder.of(EnterOfflinePin)) == 1
    assert rig.ctx.cvm_results == bytes.fromhex("1E0300")
    assert tvr_bits(rig.ctx) == {TVR.PIN_NOT_ENTERED}
    assert VERIFY not in ins(holder.commands())


def test_no_pin_pad_configured() -> None:
    rig = sim_rig("dda_offline_pin", pin_pad=False)
    holder = verify(rig, Cardholder())
    assert holder.of(EnterOfflinePin) == []
    assert holder.commands() == []
    assert rig.ctx.cvm_results == bytes.fromhex("1E0300")
    assert tvr_bits(rig.ctx) == {TVR.PIN_PAD_NOT_WORKING}


def test_pin_pad_reported_unavailable() -> None:
    rig = sim_rig("dda_offline_pin")
    holder = verify(rig, Cardholder(pins=[PinEntry(PinStatus.PAD_UNAVAILABLE)]))
    assert len(holder.of(EnterOfflinePin)) == 1
    assert rig.ctx.cvm_results == bytes.fromhex("1E0300")
    assert tvr_bits(rig.ctx) == {TVR.PIN_PAD_NOT_WORKING}


def test_online_pin_without_pin_pad_then_signature() -> None:
    rig = sim_rig("visa_cda_online", pin_pad=False)
    holder = verify(rig, Cardholder())
    assert holder.of(EnterOnlinePin) == []
    assert rig.ctx.cvm_results == bytes.fromhex("1E0300")
    assert tvr_bits(rig.ctx) == {TVR.PIN_PAD_NOT_WORKING}


def test_cancelled_pin_entry_terminates() -> None:
    rig = sim_rig("dda_offline_pin")
    with pytest.raises(Terminate) as raised:
        verify(rig, Cardholder(pins=[PinEntry(PinStatus.CANCELLED)]))
    assert raised.value.reason == "cancelled"
    assert rig.card is not None and rig.card.state.pin_tries_left == 3


@pytest.mark.parametrize("answer", [False, None])
def test_amount_not_confirmed_terminates(answer: object) -> None:
    rig = sim_rig("sda_only")
    holder = Cardholder(confirm=answer)
    with pytest.raises(Terminate) as raised:
        verify(rig, holder)
    assert raised.value.reason == "cancelled"
    assert holder.of(CaptureSignature) == []


def test_amount_confirmation_can_be_switched_off() -> None:
    rig = sim_rig("sda_only", confirm_amount=False)
    holder = verify(rig, Cardholder())
    assert holder.of(ConfirmAmount) == []
    assert rig.ctx.cvm_results == bytes.fromhex("1E0300")


def test_no_pin_or_pan_in_notes_requests_or_errors() -> None:
    rig = sim_rig("dda_offline_pin")
    holder = verify(rig, Cardholder(pins=[entered("9876"), entered(RIGHT_PIN)]))
    shown = " ".join(rig.ctx.events) + " ".join(repr(r) for r in holder.seen)
    for secret in ("9876", RIGHT_PIN, PAN):
        assert secret not in shown
    cancelled = sim_rig("dda_offline_pin")
    with pytest.raises(Terminate) as raised:
        verify(cancelled, Cardholder(pins=[PinEntry(PinStatus.CANCELLED, pin=Sensitive("4321"))]))
    assert "4321" not in str(raised.value) and "4321" not in repr(raised.value)


# --- Card data and conditions (hand-written) -----------------------------------------------------

def test_aip_without_cardholder_verification() -> None:
    rig = bare_rig(cvm_list("1E00"), aip=b"\x00\x00")
    holder = verify(rig)
    assert holder.seen == []
    assert rig.ctx.cvm_results == bytes.fromhex("3F0000")
    assert not rig.ctx.tsi.is_set(TSI.CVM_PERFORMED)
    assert tvr_bits(rig.ctx) == set()


@pytest.mark.parametrize("raw", [None, b"", bytes(7), bytes(8), bytes(9), cvm_list("1E00") + b"\x1f"])
def test_missing_empty_or_malformed_cvm_list(raw: bytes | None) -> None:
    rig = bare_rig(raw)
    holder = verify(rig)
    assert holder.seen == []
    assert rig.ctx.cvm_results == bytes.fromhex("3F0000")
    assert tvr_bits(rig.ctx) == {TVR.ICC_DATA_MISSING}
    assert not rig.ctx.tsi.is_set(TSI.CVM_PERFORMED)


def test_no_rule_applies() -> None:
    # Unattended cash only, on an attended terminal selling goods.
    rig = bare_rig(cvm_list("0201", "1E01"))
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex("3F0001")
    assert tvr_bits(rig.ctx) == {TVR.CVM_NOT_SUCCESSFUL}
    assert rig.ctx.tsi.is_set(TSI.CVM_PERFORMED)
    assert rig.ctx.cvm_performed is None


def test_fail_cvm_processing() -> None:
    rig = bare_rig(cvm_list("0000", "1F00"))
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex("000001")
    assert tvr_bits(rig.ctx) == {TVR.CVM_NOT_SUCCESSFUL}


def test_fail_cvm_processing_with_b7_goes_on() -> None:
    rig = bare_rig(cvm_list("4000", "1F00"))
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex("1F0002")
    assert tvr_bits(rig.ctx) == set()


@pytest.mark.parametrize("code", ["20", "2F", "30", "3E", "3F", "10", "1D"])
def test_unrecognised_cvm_stops_without_b7(code: str) -> None:
    rig = bare_rig(cvm_list(f"{code}00", "1F00"))
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex(f"{code}0001")
    assert tvr_bits(rig.ctx) == {TVR.UNRECOGNISED_CVM, TVR.CVM_NOT_SUCCESSFUL}


def test_unrecognised_cvm_with_b7_goes_on() -> None:
    rig = bare_rig(cvm_list("6000", "1F00"))
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex("1F0002")
    assert tvr_bits(rig.ctx) == {TVR.UNRECOGNISED_CVM}


def test_unrecognised_cvm_under_terminal_supports_condition_is_skipped() -> None:
    rig = bare_rig(cvm_list("2003", "1F00"))
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex("1F0002")
    assert tvr_bits(rig.ctx) == set()


def test_biometric_cvm_is_known_but_unsupported() -> None:
    rig = bare_rig(cvm_list("4800", "1F00"))
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex("1F0002")
    assert tvr_bits(rig.ctx) == set()


def test_unsupported_online_pin_sets_pin_pad_bit() -> None:
    rig = bare_rig(cvm_list("4200", "1F00"), capabilities=bytes.fromhex("E0B8C8"))
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex("1F0002")
    assert tvr_bits(rig.ctx) == {TVR.PIN_PAD_NOT_WORKING}


@pytest.mark.parametrize(("capabilities", "pin_pad_bit"), [
    ("E078C8", False),  # enciphered offline PIN only: plaintext unsupported, no bit
    ("E068C8", True),  # neither form of offline PIN
])
def test_unsupported_offline_pin(capabilities: str, pin_pad_bit: bool) -> None:
    rig = bare_rig(cvm_list("4100", "1E00"), capabilities=bytes.fromhex(capabilities))
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex("1E0000")
    assert tvr_bits(rig.ctx) == ({TVR.PIN_PAD_NOT_WORKING} if pin_pad_bit else set())


def test_unsupported_cvm_without_b7_fails() -> None:
    rig = bare_rig(cvm_list("1E00", "1F00"), capabilities=bytes.fromhex("E0D8C8"))
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex("1E0001")
    assert tvr_bits(rig.ctx) == {TVR.CVM_NOT_SUCCESSFUL}


X, Y = 1000, 5000  # 10.00 and 50.00 in the application currency


@pytest.mark.parametrize(("condition", "amount", "applies"), [
    ("06", 999, True), ("06", 1000, False), ("06", 1001, False),
    ("07", 1001, True), ("07", 1000, False), ("07", 999, False),
    ("08", 4999, True), ("08", 5000, False), ("08", 5001, False),
    ("09", 5001, True), ("09", 5000, False), ("09", 4999, False),
])
def test_amount_conditions(condition: str, amount: int, applies: bool) -> None:
    rig = bare_rig(cvm_list(f"5E{condition}", "1F00", x=X, y=Y), amount=amount)
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex(f"5E{condition}00" if applies else "1F0002")


@pytest.mark.parametrize("currency", [b"\x08\x40", None, b"\xAB\xCD", b"\x09"])
@pytest.mark.parametrize("condition", ["06", "07", "08", "09"])
def test_amount_conditions_need_the_application_currency(condition: str, currency: bytes | None) -> None:
    # 0 is under both X and Y and 10^9 over both: only the currency can make the rule not apply.
    for amount in (0, 10**9):
        rig = bare_rig(cvm_list(f"5E{condition}", "1F00", x=X, y=Y), amount=amount, currency=currency)
        verify(rig)
        assert rig.ctx.cvm_results == bytes.fromhex("1F0002")


ATTENDED, UNATTENDED = 0x22, 0x25
GOODS = {"transaction_type": 0x00}
CASH = {"transaction_type": 0x01}
CASHBACK = {"transaction_type": 0x09, "other_amount": 500}
GOODS_WITH_OTHER_AMOUNT = {"transaction_type": 0x00, "other_amount": 500}


@pytest.mark.parametrize(("condition", "terminal_type", "txn", "applies"), [
    ("00", ATTENDED, GOODS, True),
    ("01", UNATTENDED, CASH, True), ("01", ATTENDED, CASH, False), ("01", UNATTENDED, GOODS, False),
    ("02", ATTENDED, GOODS, True), ("02", UNATTENDED, GOODS, True), ("02", UNATTENDED, CASH, False),
    ("02", ATTENDED, CASH, False), ("02", ATTENDED, CASHBACK, False),
    ("02", ATTENDED, GOODS_WITH_OTHER_AMOUNT, False),
    ("04", ATTENDED, CASH, True), ("04", UNATTENDED, CASH, False), ("04", ATTENDED, GOODS, False),
    ("05", ATTENDED, CASHBACK, True), ("05", ATTENDED, GOODS_WITH_OTHER_AMOUNT, True),
    ("05", ATTENDED, GOODS, False),
    ("0A", ATTENDED, GOODS, False), ("7F", ATTENDED, GOODS, False), ("80", ATTENDED, GOODS, False),
    ("FF", ATTENDED, GOODS, False),
])
def test_transaction_conditions(condition: str, terminal_type: int, txn: dict[str, Any],
                                applies: bool) -> None:
    rig = bare_rig(cvm_list(f"5E{condition}", "1F00"), terminal_type=terminal_type, txn=txn)
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex(f"5E{condition}00" if applies else "1F0002")


@pytest.mark.parametrize(("capabilities", "applies"), [("E0F8C8", True), ("E0D8C8", False)])
def test_terminal_supports_condition(capabilities: str, applies: bool) -> None:
    rig = bare_rig(cvm_list("5E03", "1F00"), capabilities=bytes.fromhex(capabilities))
    verify(rig)
    assert rig.ctx.cvm_results == bytes.fromhex("5E0300" if applies else "1F0002")
    assert tvr_bits(rig.ctx) == set()


def test_signature_refused_fails_the_cvm() -> None:
    rig = bare_rig(cvm_list("5E00", "1F00"))
    verify(rig, Cardholder(signature=False))
    assert rig.ctx.cvm_results == bytes.fromhex("1F0002")
    assert not rig.ctx.signature_required


def test_plaintext_pin_and_signature() -> None:
    card = ScriptedCard(get_data=[Response(bytes.fromhex("9F170103"), 0x9000)],
                        verify=[Response(b"", 0x9000)])
    rig = bare_rig(cvm_list("0300"), card=card)
    holder = verify(rig, Cardholder(pins=[entered(RIGHT_PIN)]))
    assert [type(r) for r in holder.seen] == [Transmit, ConfirmAmount, EnterOfflinePin, Transmit,
                                              CaptureSignature]
    assert rig.ctx.cvm_results == bytes.fromhex("030000")
    assert rig.ctx.signature_required


def test_plaintext_pin_and_signature_without_the_signature() -> None:
    card = ScriptedCard(get_data=[Response(bytes.fromhex("9F170103"), 0x9000)],
                        verify=[Response(b"", 0x9000)])
    rig = bare_rig(cvm_list("0300"), card=card)
    verify(rig, Cardholder(pins=[entered(RIGHT_PIN)], signature=False))
    assert rig.ctx.cvm_results == bytes.fromhex("030001")
    assert tvr_bits(rig.ctx) == {TVR.CVM_NOT_SUCCESSFUL}


# --- VERIFY, GET DATA and GET CHALLENGE answers (hand-written) ----------------------------------

def pin_rig(*verify_answers: int, get_data: Response | None = None, rules: tuple[str, ...] = ("4100", "1E00"),
            ) -> Rig:
    card = ScriptedCard(get_data=[get_data or Response(b"", 0x6A88)],
                        verify=[Response(b"", sw) for sw in verify_answers])
    return bare_rig(cvm_list(*rules), card=card)


@pytest.mark.parametrize("sw", [0x6983, 0x6984])
def test_verify_pin_blocked(sw: int) -> None:
    rig = pin_rig(sw)
    holder = verify(rig, Cardholder(pins=[entered(RIGHT_PIN)]))
    (prompt,) = holder.of(EnterOfflinePin)
    assert prompt.tries_left is None  # GET DATA '6A88': the counter is not known
    assert rig.ctx.cvm_results == bytes.fromhex("1E0000")
    assert tvr_bits(rig.ctx) == {TVR.PIN_TRY_LIMIT_EXCEEDED}


@pytest.mark.parametrize("sw", [0x6A80, 0x6985, 0x6F00, 0x6300, 0x6D00, 0x9001, 0x63D1, 0x0000])
def test_verify_garbage_fails_the_cvm(sw: int) -> None:
    rig = pin_rig(sw)
    holder = verify(rig, Cardholder(pins=[entered(RIGHT_PIN)]))
    assert len(holder.of(EnterOfflinePin)) == 1
    assert rig.ctx.cvm_results == bytes.fromhex("1E0000")
    assert tvr_bits(rig.ctx) == set()


def test_card_that_never_counts_down_stops_asking() -> None:
    rig = pin_rig(*([0x63C2] * 40))
    holder = verify(rig, Cardholder(pins=[entered("1111")] * 40))
    assert len(holder.of(EnterOfflinePin)) == 2
    assert rig.ctx.cvm_results == bytes.fromhex("1E0000")


@pytest.mark.parametrize("answer", [
    Response(bytes.fromhex("9F1702000301"), 0x9000),  # wrong length
    Response(bytes.fromhex("9F17"), 0x9000),  # truncated TLV
    Response(bytes.fromhex("9F360200"), 0x9000),  # another data object
    Response(bytes.fromhex("9F170103"), 0x6A81),
])
def test_malformed_pin_try_counter_is_unknown(answer: Response) -> None:
    rig = pin_rig(0x9000, get_data=answer)
    holder = verify(rig, Cardholder(pins=[entered(RIGHT_PIN)]))
    (prompt,) = holder.of(EnterOfflinePin)
    assert prompt.tries_left is None
    assert rig.ctx.cvm_results == bytes.fromhex("410002")


def test_pin_try_counter_of_one_is_the_last_try() -> None:
    rig = pin_rig(0x9000, get_data=Response(bytes.fromhex("9F170101"), 0x9000))
    holder = verify(rig, Cardholder(pins=[entered(RIGHT_PIN)]))
    (prompt,) = holder.of(EnterOfflinePin)
    assert (prompt.tries_left, prompt.last_try) == (1, True)


@pytest.mark.parametrize("pin", ["123", "1234567890123", "12a4", ""])
def test_pin_pad_handing_over_no_pin(pin: str) -> None:
    rig = pin_rig(0x9000)
    verify(rig, Cardholder(pins=[entered(pin)]))
    assert VERIFY not in ins(rig.send.commands)  # type: ignore[attr-defined]
    assert tvr_bits(rig.ctx) == {TVR.PIN_PAD_NOT_WORKING}
    assert rig.ctx.cvm_results == bytes.fromhex("1E0000")


def fake_icc_key() -> IccPublicKey:
    # Any 1024-bit odd number above '7F...' will do for building VERIFY data.
    return IccPublicKey(modulus=b"\xC5" + bytes(126) + b"\x01", exponent=b"\x03", pan=bytes(10),
                        expiry=b"\x12\x34", serial=b"\x00\x00\x01", hash_algo=1, pk_algo=1)


@pytest.mark.parametrize("challenge", [Response(bytes(7), 0x9000), Response(bytes(8), 0x6A81),
                                       Response(bytes(9), 0x9000)])
def test_bad_get_challenge_fails_the_enciphered_pin(challenge: Response) -> None:
    card = ScriptedCard(get_data=[Response(bytes.fromhex("9F170103"), 0x9000)], get_challenge=[challenge],
                        verify=[Response(b"", 0x9000)])
    rig = bare_rig(cvm_list("4400", "1E00"), card=card)
    rig.ctx.icc_key = fake_icc_key()
    verify(rig, Cardholder(pins=[entered(RIGHT_PIN)]))
    assert VERIFY not in ins(card.commands)
    assert rig.ctx.cvm_results == bytes.fromhex("1E0000")


def test_short_randomness_fails_the_enciphered_pin() -> None:
    card = ScriptedCard(get_data=[Response(bytes.fromhex("9F170103"), 0x9000)],
                        get_challenge=[Response(bytes(8), 0x9000)], verify=[Response(b"", 0x9000)])
    rig = bare_rig(cvm_list("4400", "1E00"), card=card)
    rig.ctx.icc_key = fake_icc_key()
    rig.ctx.rng = lambda n: bytes(n - 1)
    verify(rig, Cardholder(pins=[entered(RIGHT_PIN)]))
    assert VERIFY not in ins(card.commands)
    assert rig.ctx.cvm_results == bytes.fromhex("1E0000")


def test_online_pin_entry_without_a_block_is_a_pin_pad_failure() -> None:
    rig = bare_rig(cvm_list("4200", "4100", "1E00"))
    holder = verify(rig, Cardholder(pins=[PinEntry(PinStatus.ENTERED)]))
    # The PIN pad failed once: the offline PIN rule is not prompted for.
    assert len(holder.of(EnterOnlinePin)) == 1 and holder.of(EnterOfflinePin) == []
    assert rig.ctx.cvm_results == bytes.fromhex("1E0000")
    assert tvr_bits(rig.ctx) == {TVR.PIN_PAD_NOT_WORKING}
    assert rig.ctx.online_pin_block is None


def test_online_pin_without_pan() -> None:
    rig = bare_rig(cvm_list("4200", "1E00"))
    del rig.ctx.card[0x5A]
    holder = verify(rig)
    assert holder.of(EnterOnlinePin) == []
    assert rig.ctx.cvm_results == bytes.fromhex("1E0000")


def test_online_pin_pan_from_track_2() -> None:
    rig = bare_rig(cvm_list("0200"))
    del rig.ctx.card[0x5A]
    rig.ctx.card[0x57] = bytes.fromhex("4761739001010036D49122011234567890")
    holder = verify(rig, Cardholder(pins=[PinEntry(PinStatus.ENTERED, pin_block=Sensitive(bytes(16)))]))
    (prompt,) = holder.of(EnterOnlinePin)
    assert prompt.pan == Sensitive(PAN)
    assert rig.ctx.cvm_results == bytes.fromhex("020000")


def test_unknown_aip_terminates() -> None:
    rig = bare_rig(cvm_list("1F00"))
    rig.ctx.aip = None
    with pytest.raises(Terminate):
        verify(rig)


# --- Property: whatever the card and the driver say, only Terminate escapes ----------------------

def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` nine times in ten, so that random runs get deep into PIN entry and VERIFY."""
    return st.sampled_from([True] * 9 + [False]).flatmap(lambda pick: usual if pick else odd)


METHOD_BYTES = st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x08, 0x1E, 0x1F, 0x20, 0x3F]).flatmap(
    lambda m: st.sampled_from([m | 0x40, m, m | 0x80]))
CONDITIONS = mostly(st.sampled_from([0x00, 0x03, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09]),
                    st.integers(0, 255))
RULES = st.lists(st.tuples(mostly(METHOD_BYTES, st.integers(0, 255)), CONDITIONS),
                 min_size=1, max_size=8).map(lambda rules: b"".join(bytes(r) for r in rules))
CVM_LISTS = mostly(st.builds(lambda x, y, rules: x.to_bytes(4, "big") + y.to_bytes(4, "big") + rules,
                             st.integers(0, 5000), st.integers(0, 5000), RULES),
                   st.binary(max_size=30) | st.none())
STATUS_WORDS = mostly(
    st.sampled_from([0x9000, 0x63C2, 0x63C1, 0x63C0, 0x6983, 0x6984, 0x6A88, 0x6985, 0x6300]),
    st.integers(0, 0xFFFF))
RESPONSE_DATA = mostly(st.sampled_from([b"", bytes.fromhex("9F170102"), bytes.fromhex("9F170100"), bytes(8)]),
                       st.binary(max_size=12))
RESPONSES = st.builds(Response, RESPONSE_DATA, STATUS_WORDS)
PINS = mostly(st.sampled_from(["1234", "0000", "123456789012"]), st.text("0123456789a", max_size=14))
PIN_ENTRIES = mostly(
    st.builds(PinEntry, st.sampled_from([PinStatus.ENTERED] * 6 + list(PinStatus)),
              pin=mostly(st.builds(Sensitive, PINS), st.none()),
              pin_block=mostly(st.builds(Sensitive, st.binary(min_size=1, max_size=16)), st.none()),
              key_serial=st.none() | st.binary(max_size=10)),
    st.none() | st.integers())
ANSWERS = mostly(st.just(True), st.sampled_from([False, None, 1]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), raw=CVM_LISTS,
       aip=mostly(st.sampled_from([b"\x10\x00", b"\x30\x00"]), st.binary(min_size=2, max_size=2)),
       capabilities=mostly(st.sampled_from([ALL_CVMS, NO_PLAINTEXT_PIN]), st.binary(min_size=3, max_size=3)),
       pin_pad=mostly(st.just(True), st.just(False)), confirm=st.booleans(),
       terminal_type=st.sampled_from([0x22, 0x25, 0x14]), amount=st.integers(0, 10_000),
       txn_type=st.sampled_from([0x00, 0x01, 0x09]),
       currency=mostly(st.just(b"\x09\x78"), st.none() | st.binary(max_size=3)),
       with_key=st.booleans())
def test_random_lists_and_answers_only_terminate(data: st.DataObject, raw: bytes | None, aip: bytes,
                                                 capabilities: bytes, pin_pad: bool, confirm: bool,
                                                 terminal_type: int, amount: int, txn_type: int,
                                                 currency: bytes | None, with_key: bool) -> None:
    rig = bare_rig(raw, aip=aip, amount=amount, currency=currency, txn={"transaction_type": txn_type},
                   capabilities=capabilities, pin_pad=pin_pad, confirm_amount=confirm,
                   terminal_type=terminal_type)
    if with_key:
        rig.ctx.icc_key = fake_icc_key()
    gen: Generator[Any, Any, None] = cvm.cardholder_verification(rig.ctx)
    try:
        request = next(gen)
        for _ in range(200):
            if isinstance(request, Transmit):
                answer: object = data.draw(RESPONSES)
            elif isinstance(request, EnterOfflinePin | EnterOnlinePin):
                answer = data.draw(PIN_ENTRIES)
            else:
                answer = data.draw(ANSWERS)
            request = gen.send(answer)
        pytest.fail("cardholder verification did not end")
    except StopIteration:
        pass
    except Terminate as exc:
        assert exc.reason in ("cancelled",)
    assert isinstance(rig.ctx.cvm_results, bytes) and len(rig.ctx.cvm_results) == 3
    assert rig.ctx.tvr.value[3:] == bytes(2) and rig.ctx.tvr.value[:1] in (b"\x00", b"\x20")


PIN_RULES = st.permutations(["4100", "4400", "4300", "4500", "4200"]).flatmap(
    lambda rules: st.integers(1, 5).map(lambda n: cvm_list(*rules[:n], "5E00", "1F00")))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), raw=PIN_RULES)
def test_random_card_answers_to_pin_commands(data: st.DataObject, raw: bytes) -> None:
    """Every PIN CVM against random GET DATA, GET CHALLENGE and VERIFY answers: the PIN is asked
    for a bounded number of times and the outcome always has a well-formed CVM Results."""
    card_answers = st.builds(Response, RESPONSE_DATA, STATUS_WORDS)
    rig = bare_rig(raw)
    rig.ctx.icc_key = fake_icc_key()
    gen = cvm.cardholder_verification(rig.ctx)
    prompts = verifies = 0
    try:
        request = next(gen)
        while True:
            if isinstance(request, Transmit):
                verifies += request.command.ins == VERIFY
                answer: object = data.draw(card_answers)
            elif isinstance(request, EnterOfflinePin | EnterOnlinePin):
                prompts += 1
                answer = data.draw(PIN_ENTRIES)
            else:
                answer = True
            request = gen.send(answer)
    except StopIteration:
        pass
    except Terminate as exc:
        assert exc.reason == "cancelled"
        return
    assert prompts <= 2 * cvm.MAX_PIN_ENTRIES and verifies <= prompts
    results = rig.ctx.cvm_results
    assert len(results) == 3 and results[2] in (0x00, 0x01, 0x02)
    succeeded = not rig.ctx.tvr.is_set(TVR.CVM_NOT_SUCCESSFUL)
    assert succeeded == (results[2] != 0x01)
    if results[2] == 0x02:  # offline PIN accepted by the card, or no CVM
        assert results[0] & 0x3F in (0x01, 0x04, 0x1F)
