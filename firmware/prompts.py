"""Cardholder prompts without a touchscreen: scripted (tests, `tpe sale --pin`) and console.

Both answer the kernel's requests (`emv.requests`) for `firmware.driver.run`.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass, field

from emv.requests import (
    CaptureSignature,
    ChooseApplication,
    ConfirmAmount,
    EnterOfflinePin,
    EnterOnlinePin,
    PinEntry,
    PinStatus,
)
from emv.sensitive import Sensitive
from firmware.money import format_amount
from firmware.pin_pad import PinPad, PinPadError


def online_entry(pin_pad: PinPad | None, pin: str | None, request: EnterOnlinePin) -> PinEntry:
    """What the PIN pad hands back for an online PIN: the enciphered block with the KSN of its
    key, or why there is none."""
    if pin is None:
        return PinEntry(PinStatus.BYPASSED)
    if pin_pad is None:
        return PinEntry(PinStatus.PAD_UNAVAILABLE)
    try:
        enciphered = pin_pad.online_pin_block(Sensitive(pin, "PIN"), request.pan)
    except PinPadError:
        return PinEntry(PinStatus.PAD_UNAVAILABLE)
    return PinEntry(PinStatus.ENTERED, pin_block=enciphered.block, key_serial=enciphered.key_serial)


@dataclass
class ScriptedPrompt:
    """Answers from a script: the PIN to type (None: the cardholder bypasses PIN entry), the
    application to pick (an index in the offered list, or an AID prefix in hex), and whether
    the cardholder confirms and signs. `pins`, when given, are typed one per PIN request."""

    pin: str | None = None
    pin_pad: PinPad | None = None
    choice: int | str = 0
    confirm: bool = True
    sign: bool = True
    pins: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)  # what was asked, in order, for tests
    offered: list[tuple[str, ...]] = field(default_factory=list)  # the AIDs of each choice

    def choose_application(self, request: ChooseApplication) -> int | None:
        self.asked.append("choose_application")
        aids = tuple(c.aid.hex().upper() for c in request.candidates)
        self.offered.append(aids)
        if isinstance(self.choice, int):
            return self.choice if 0 <= self.choice < len(aids) else None
        for index, aid in enumerate(aids):
            if aid.startswith(self.choice.upper()):
                return index
        return None

    def confirm_amount(self, request: ConfirmAmount) -> bool:
        self.asked.append("confirm_amount")
        return self.confirm

    def _next_pin(self) -> str | None:
        return self.pins.pop(0) if self.pins else self.pin

    def enter_offline_pin(self, request: EnterOfflinePin) -> PinEntry:
        self.asked.append("enter_enciphered_pin" if request.enciphered else "enter_plaintext_pin")
        pin = self._next_pin()
        if pin is None:
            return PinEntry(PinStatus.BYPASSED)
        return PinEntry(PinStatus.ENTERED, pin=Sensitive(pin, "PIN"))

    def enter_online_pin(self, request: EnterOnlinePin) -> PinEntry:
        self.asked.append("enter_online_pin")
        return online_entry(self.pin_pad, self._next_pin(), request)

    def capture_signature(self, request: CaptureSignature) -> bool:
        self.asked.append("capture_signature")
        return self.sign


@dataclass
class ConsolePrompt:
    """Asks on the terminal's console: the technician plays the cardholder."""

    pin_pad: PinPad | None = None
    ask: Callable[[str], str] = input
    ask_secret: Callable[[str], str] = getpass.getpass
    say: Callable[[str], None] = print

    def choose_application(self, request: ChooseApplication) -> int | None:
        for number, candidate in enumerate(request.candidates, start=1):
            name = candidate.preferred_name or candidate.label or candidate.aid.hex().upper()
            self.say(f"  {number}. {name}")
        answer = self.ask("Application (number, empty to cancel): ").strip()
        # isdigit() alone lets '²' through, which int() refuses.
        if not (answer.isascii() and answer.isdigit()) or not 1 <= int(answer) <= len(request.candidates):
            return None
        return int(answer) - 1

    def confirm_amount(self, request: ConfirmAmount) -> bool:
        amount = format_amount(request.amount, request.exponent)
        answer = self.ask(f"Amount {amount} ({request.currency:03d}) - confirm? [Y/n] ")
        return answer.strip().lower() in ("", "y")

    def _pin(self, prompt: str) -> str | None:
        pin = self.ask_secret(prompt).strip()
        return pin or None

    def enter_offline_pin(self, request: EnterOfflinePin) -> PinEntry:
        tries = "" if request.tries_left is None else f" ({request.tries_left} tries left)"
        last = " LAST TRY" if request.last_try else ""
        pin = self._pin(f"PIN{tries}{last}, empty to bypass: ")
        if pin is None:
            return PinEntry(PinStatus.BYPASSED)
        return PinEntry(PinStatus.ENTERED, pin=Sensitive(pin, "PIN"))

    def enter_online_pin(self, request: EnterOnlinePin) -> PinEntry:
        return online_entry(self.pin_pad, self._pin("PIN (verified online), empty to bypass: "), request)

    def capture_signature(self, request: CaptureSignature) -> bool:
        return self.ask("Cardholder signs (no screen here) - signed? [Y/n] ").strip().lower() in ("", "y")
