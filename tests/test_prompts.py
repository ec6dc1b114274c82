"""Scripted and console cardholder prompts (firmware/prompts.py).

TEST KEYS: the DUKPT BDK here is the published ANSI X9.24-3-2017 Supplement test BDK.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psec.pinblock import decipher_pinblock_iso_4

from emv.requests import (
    CaptureSignature,
    ChooseApplication,
    ConfirmAmount,
    EnterOfflinePin,
    EnterOnlinePin,
    PinStatus,
)
from emv.selection import Candidate
from emv.sensitive import Sensitive
from firmware.dukpt import (
    KeyType,
    KeyUsage,
    TerminalDukpt,
    derive_initial_key,
    host_transaction_key,
    working_key,
)
from firmware.pin_pad import DukptPinPad
from firmware.prompts import ConsolePrompt, ScriptedPrompt
from firmware.terminal_keys import MemorySecretStore, TerminalKeys

BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")  # TEST KEY (X9.24-3-2017 Supplement)
INITIAL_KEY_ID = bytes.fromhex("1234567890123456")
PAN = "4761739001010010"


def pin_pad() -> DukptPinPad:
    dukpt = TerminalDukpt.load(derive_initial_key(BDK, INITIAL_KEY_ID), INITIAL_KEY_ID)
    return DukptPinPad(TerminalKeys(MemorySecretStore(), dukpt))


def host_pin(block: bytes, ksn: bytes) -> str:
    """The PIN as the host reads it: its own PIN key for the KSN (X9.24-3-2017, 6.3.3)."""
    key = working_key(host_transaction_key(BDK, ksn), ksn, KeyUsage.PIN_ENCRYPTION, KeyType.AES128)
    return decipher_pinblock_iso_4(key, block, PAN)
VISA = Candidate(bytes.fromhex("A0000000031010"), "VISA CREDIT", "Visa Credit", 2, False)
CB = Candidate(bytes.fromhex("A0000000421010"), "CB", None, 1, False)
MAESTRO = Candidate(bytes.fromhex("A0000000043060"), None, None, None, False)
CHOICE = ChooseApplication((CB, VISA, MAESTRO))


def offline(*, tries_left: int | None = 3, last_try: bool = False,
            enciphered: bool = False) -> EnterOfflinePin:
    return EnterOfflinePin(1500, 978, 2, tries_left=tries_left, last_try=last_try, enciphered=enciphered)


def online() -> EnterOnlinePin:
    return EnterOnlinePin(1500, 978, 2, pan=Sensitive(PAN, "PAN"))


# --- ScriptedPrompt ---------------------------------------------------------------------------

@pytest.mark.parametrize(("choice", "index"), [
    (0, 0), (1, 1), (2, 2), (3, None), (99, None), (-1, None), (-3, None),
    ("A0000000031010", 1), ("a000000003", 1), ("A000000004", 2), ("A0000000", 0), ("A0000000999", None),
    ("B0", None),
])
def test_scripted_choice(choice: int | str, index: int | None) -> None:
    prompt = ScriptedPrompt(choice=choice)
    assert prompt.choose_application(CHOICE) == index
    assert prompt.offered == [("A0000000421010", "A0000000031010", "A0000000043060")]
    assert prompt.asked == ["choose_application"]


def test_scripted_pins_are_typed_in_order_then_the_default_pin() -> None:
    prompt = ScriptedPrompt(pin="1234", pins=["0000", "1111"])
    typed = [prompt.enter_offline_pin(offline()).pin for _ in range(4)]
    assert [p.reveal() if p else None for p in typed] == ["0000", "1111", "1234", "1234"]
    assert prompt.asked == ["enter_plaintext_pin"] * 4


def test_scripted_pin_is_sensitive() -> None:
    entry = ScriptedPrompt(pin="1234").enter_offline_pin(offline(enciphered=True))
    assert entry.status == PinStatus.ENTERED
    assert isinstance(entry.pin, Sensitive) and entry.pin.reveal() == "1234"
    assert "1234" not in repr(entry)


def test_scripted_bypass_when_no_pin() -> None:
    prompt = ScriptedPrompt(pin=None)
    assert prompt.enter_offline_pin(offline()).status == PinStatus.BYPASSED
    assert prompt.enter_online_pin(online()).status == PinStatus.BYPASSED
    assert prompt.enter_offline_pin(offline()).pin is None


def test_scripted_online_pin_without_pin_pad() -> None:
    entry = ScriptedPrompt(pin="1234").enter_online_pin(online())
    assert entry.status == PinStatus.PAD_UNAVAILABLE
    assert entry.pin_block is None and entry.pin is None


def test_scripted_online_pin_with_pin_pad() -> None:
    prompt = ScriptedPrompt(pin="1234", pin_pad=pin_pad())
    entry = prompt.enter_online_pin(online())
    assert entry.status == PinStatus.ENTERED
    assert entry.pin is None  # the PIN leaves the PIN pad enciphered only
    assert entry.pin_block is not None
    assert entry.key_serial == INITIAL_KEY_ID + bytes.fromhex("00000001")  # the first KSN
    assert host_pin(entry.pin_block.reveal(), entry.key_serial) == "1234"


def test_scripted_online_pins_each_have_their_own_ksn() -> None:
    prompt = ScriptedPrompt(pins=["1111", "2222"], pin_pad=pin_pad())
    first, second = prompt.enter_online_pin(online()), prompt.enter_online_pin(online())
    assert first.key_serial is not None and second.key_serial is not None
    assert second.key_serial == INITIAL_KEY_ID + bytes.fromhex("00000002")
    assert second.pin_block is not None and host_pin(second.pin_block.reveal(), second.key_serial) == "2222"


def test_scripted_online_pin_the_pad_refuses() -> None:
    entry = ScriptedPrompt(pin="12", pin_pad=pin_pad()).enter_online_pin(online())
    assert entry.status == PinStatus.PAD_UNAVAILABLE


def test_scripted_asked_order_and_answers() -> None:
    prompt = ScriptedPrompt(pin="1234", confirm=False, sign=False)
    prompt.choose_application(CHOICE)
    assert prompt.confirm_amount(ConfirmAmount(1500, 978, 2)) is False
    prompt.enter_offline_pin(offline(enciphered=True))
    prompt.enter_offline_pin(offline())
    prompt.enter_online_pin(online())
    assert prompt.capture_signature(CaptureSignature(1500, 978, 2)) is False
    assert prompt.asked == ["choose_application", "confirm_amount", "enter_enciphered_pin",
                            "enter_plaintext_pin", "enter_online_pin", "capture_signature"]
    assert ScriptedPrompt().confirm_amount(ConfirmAmount(1, 978, 2)) is True
    assert ScriptedPrompt().capture_signature(CaptureSignature(1, 978, 2)) is True


# --- ConsolePrompt ----------------------------------------------------------------------------

class Console:
    """Typed answers in order, and everything shown or asked."""

    def __init__(self, *answers: str) -> None:
        self._answers: Iterator[str] = iter(answers)
        self.shown: list[str] = []
        self.asked: list[str] = []
        self.secret_asked: list[str] = []

    def ask(self, text: str) -> str:
        self.asked.append(text)
        return next(self._answers)

    def ask_secret(self, text: str) -> str:
        self.secret_asked.append(text)
        return next(self._answers)

    def prompt(self, pin_pad: DukptPinPad | None = None) -> ConsolePrompt:
        return ConsolePrompt(pin_pad=pin_pad, ask=self.ask, ask_secret=self.ask_secret, say=self.shown.append)


@pytest.mark.parametrize(("answer", "index"), [
    ("1", 0), ("2", 1), (" 3 ", 2), ("", None), ("0", None), ("4", None), ("-1", None), ("x", None),
    ("1.5", None), ("²", None), ("١", None),
])
def test_console_choice(answer: str, index: int | None) -> None:
    console = Console(answer)
    assert console.prompt().choose_application(CHOICE) == index
    # Numbered from 1, with the preferred name, else the label, else the AID.
    assert console.shown == ["  1. CB", "  2. Visa Credit", "  3. A0000000043060"]
    assert len(console.asked) == 1 and "empty to cancel" in console.asked[0]


@pytest.mark.parametrize(("answer", "confirmed"), [
    ("", True), ("y", True), ("Y", True), (" y ", True), ("n", False), ("N", False), ("no", False),
    ("x", False),
])
def test_console_confirm_defaults_to_yes(answer: str, confirmed: bool) -> None:
    console = Console(answer)
    assert console.prompt().confirm_amount(ConfirmAmount(1250, 978, 2)) is confirmed
    assert "12.50" in console.asked[0] and "978" in console.asked[0]


def test_console_confirm_shows_the_currency_exponent() -> None:
    console = Console("")
    console.prompt().confirm_amount(ConfirmAmount(1250, 788, 3))
    assert "1.250" in console.asked[0] and "788" in console.asked[0]


def test_console_offline_pin_is_read_as_a_secret() -> None:
    console = Console("1234")
    entry = console.prompt().enter_offline_pin(offline())
    assert entry.status == PinStatus.ENTERED and entry.pin is not None and entry.pin.reveal() == "1234"
    assert console.asked == [] and len(console.secret_asked) == 1
    assert console.shown == []


@pytest.mark.parametrize("typed", ["", "   "])
def test_console_empty_pin_is_a_bypass(typed: str) -> None:
    assert Console(typed).prompt().enter_offline_pin(offline()).status == PinStatus.BYPASSED
    assert Console(typed).prompt(pin_pad()).enter_online_pin(online()).status == PinStatus.BYPASSED


def test_console_tries_left_and_last_try_in_the_prompt() -> None:
    console = Console("1234", "1234", "1234")
    prompt = console.prompt()
    prompt.enter_offline_pin(offline(tries_left=2))
    prompt.enter_offline_pin(offline(tries_left=1, last_try=True))
    prompt.enter_offline_pin(offline(tries_left=None))
    first, last, unknown = console.secret_asked
    assert "2 tries left" in first and "LAST TRY" not in first
    assert "1 tries left" in last and "LAST TRY" in last
    assert "tries left" not in unknown and "LAST TRY" not in unknown


def test_console_online_pin() -> None:
    entry = Console("4321").prompt(pin_pad()).enter_online_pin(online())
    assert entry.status == PinStatus.ENTERED and entry.pin_block is not None and entry.key_serial is not None
    assert host_pin(entry.pin_block.reveal(), entry.key_serial) == "4321"
    assert Console("4321").prompt().enter_online_pin(online()).status == PinStatus.PAD_UNAVAILABLE


@pytest.mark.parametrize(("answer", "signed"), [("", True), ("y", True), ("n", False)])
def test_console_signature(answer: str, signed: bool) -> None:
    assert Console(answer).prompt().capture_signature(CaptureSignature(1500, 978, 2)) is signed
