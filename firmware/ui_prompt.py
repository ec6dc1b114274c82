"""The cardholder's side of the kernel on the touchscreen: `firmware.driver.Prompt` over a
`ui.contract.UiPort`.

The kernel runs in a worker thread (the reader's); the UI lives on the event loop. Each kernel
request becomes a `ui.contract` question posted to the loop, and the worker waits for the
answer. The online PIN typed on the screen goes straight to the PIN pad, which hands back the
enciphered block (`firmware.prompts.online_entry`); the offline PIN goes to the kernel as a
`Sensitive` for VERIFY (EMV 4.4 Book 3, 10.5.1). The digits are never logged nor kept.

The card's language preference ('5F2D', EMV 4.4 Book 1, 11.1 and Book 4, 11.1) switches the
cardholder's screens to the first language the UI speaks: from the FCI of the card's directory
or application (`LanguageWatch`, as soon as the card answers SELECT), from the candidates
offered for a choice, or from the outcome.

`cancel()` (the firmware is stopping) answers the question on screen and every later one as the
cardholder cancelling, so that the kernel winds the sale down through its own states.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from emv import card_data
from emv.apdu import Response
from emv.errors import EmvError
from emv.requests import (
    CaptureSignature,
    ChooseApplication,
    ConfirmAmount,
    EnterOfflinePin,
    EnterOnlinePin,
    PinEntry,
    PinStatus,
    Transmit,
)
from emv.selection import parse_fci
from emv.sensitive import Sensitive
from firmware.money import alpha
from firmware.pin_pad import PinPad
from firmware.prompts import online_entry
from ui.contract import (
    AskApplication,
    AskConfirm,
    AskPin,
    AskSignature,
    Money,
    Question,
    UiPort,
    View,
)

log = logging.getLogger(__name__)

PIN_LENGTHS = range(4, 13)  # ISO 9564-1, 5.1: 4 to 12 digits
INS_SELECT = 0xA4  # EMV 4.4 Book 1, 11.3.2
SELECT_BY_NAME = 0x04
SW_OK = 0x9000


class Cancelled(Exception):
    """The question was withdrawn: the firmware is stopping."""


class UiPrompt:
    """`firmware.driver.Prompt` for one sale; call from the kernel's worker thread, never from
    the loop (it waits for the loop)."""

    def __init__(self, ui: UiPort, loop: asyncio.AbstractEventLoop, *, pin_pad: PinPad | None = None,
                 exponent: int = 2, shuffle: bool = False) -> None:
        self._ui = ui
        self._loop = loop
        self._pin_pad = pin_pad
        self._exponent = exponent
        self._shuffle = shuffle
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._cancelled = False
        self.asked: list[str] = []  # what was asked, in order (never the answers)
        self.language: str | None = None  # the cardholder's language once the card said it

    # --- the loop's side ----------------------------------------------------------------

    def cancel(self) -> None:
        """Withdraw the question on screen and refuse every later one (any thread)."""
        with self._lock:
            self._cancelled = True
            pending = list(self._pending)
        for future in pending:
            future.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def show(self, view: View) -> None:
        """Show `view` from the worker thread (it is drawn on the loop)."""
        self._loop.call_soon_threadsafe(self._ui.show, view)

    def _ask(self, question: Question) -> Any:
        with self._lock:
            if self._cancelled:
                raise Cancelled
            future = asyncio.run_coroutine_threadsafe(self._ui.ask(question), self._loop)
            self._pending.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise Cancelled from None
        finally:
            with self._lock:
                self._pending.discard(future)

    def prefer_languages(self, preferences: Sequence[str]) -> None:
        """Switch the cardholder's screens to the card's preferences (ISO 639-1, in order)."""
        wanted = [code.lower() for code in preferences if code]
        if not wanted or self.language is not None:
            return

        async def choose() -> str:
            return self._ui.cardholder_language(wanted)

        try:
            self.language = asyncio.run_coroutine_threadsafe(choose(), self._loop).result()
        except Exception as exc:  # the UI's own failure must not end the sale
            log.warning("cardholder language not switched: %s: %s", type(exc).__name__, exc)
            return
        log.info("cardholder language: %s (card prefers %s)", self.language, ", ".join(wanted))

    def _money(self, amount: int, currency: int, exponent: int | None = None) -> Money:
        return Money(amount, alpha(currency), self._exponent if exponent is None else exponent)

    # --- firmware.driver.Prompt ---------------------------------------------------------

    def choose_application(self, request: ChooseApplication) -> int | None:
        self.asked.append("choose_application")
        for candidate in request.candidates:
            if candidate.fci is not None and candidate.fci.language:
                self.prefer_languages(_languages(candidate.fci.language))
                break
        labels = tuple(c.preferred_name or c.label or c.aid.hex().upper() for c in request.candidates)
        try:
            answer = self._ask(AskApplication(labels))
        except Cancelled:
            return None
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(labels):
            return None
        return answer

    def confirm_amount(self, request: ConfirmAmount) -> bool:
        self.asked.append("confirm_amount")
        try:
            answer = self._ask(AskConfirm(self._money(request.amount, request.currency, request.exponent)))
        except Cancelled:
            return False
        return answer is True

    def _pin(self, question: AskPin) -> str | Cancelled | None:
        try:
            answer = self._ask(question)
        except Cancelled as exc:
            return exc
        if answer is None:
            return None
        if not (isinstance(answer, str) and answer.isascii() and answer.isdigit()
                and len(answer) in PIN_LENGTHS):
            # the digits are not logged, only that they were not a PIN
            log.warning("the PIN pad screen answered something that is not 4 to 12 digits: no PIN")
            return None
        return answer

    def enter_offline_pin(self, request: EnterOfflinePin) -> PinEntry:
        self.asked.append("enter_enciphered_pin" if request.enciphered else "enter_plaintext_pin")
        pin = self._pin(AskPin(self._money(request.amount, request.currency, request.exponent), online=False,
                               tries_left=request.tries_left, last_try=request.last_try,
                               shuffled=self._shuffle))
        if isinstance(pin, Cancelled):
            return PinEntry(PinStatus.CANCELLED)
        if pin is None:
            return PinEntry(PinStatus.BYPASSED)
        return PinEntry(PinStatus.ENTERED, pin=Sensitive(pin, "PIN"))

    def enter_online_pin(self, request: EnterOnlinePin) -> PinEntry:
        self.asked.append("enter_online_pin")
        pin = self._pin(AskPin(self._money(request.amount, request.currency, request.exponent), online=True,
                               shuffled=self._shuffle))
        if isinstance(pin, Cancelled):
            return PinEntry(PinStatus.CANCELLED)
        return online_entry(self._pin_pad, pin, request)

    def capture_signature(self, request: CaptureSignature) -> bool:
        self.asked.append("capture_signature")
        try:
            answer = self._ask(AskSignature(self._money(request.amount, request.currency, request.exponent)))
        except Cancelled:
            return False
        return answer is True


def _languages(value: bytes) -> list[str]:
    try:
        return card_data.languages(value)
    except EmvError:
        return []  # a malformed '5F2D': the merchant's language stays (the kernel notes it)


class LanguageWatch:
    """Wraps the kernel's `Transmit` handler: when the card answers a SELECT by name with an
    FCI holding a Language Preference ('5F2D', EMV 4.4 Book 1, 11.3.4, of the directory or of
    the application), it goes to `prompt`, before any cardholder screen."""

    def __init__(self, fulfil: Callable[[Transmit], Response], prompt: UiPrompt) -> None:
        self._fulfil = fulfil
        self._prompt = prompt

    def __call__(self, request: Transmit) -> Response:
        response = self._fulfil(request)
        command = request.command
        if (command.ins == INS_SELECT and command.p1 == SELECT_BY_NAME and response.sw == SW_OK
                and response.data and self._prompt.language is None):
            try:
                fci = parse_fci(response.data)
            except EmvError:
                return response  # the kernel judges the FCI itself
            if fci.language:
                self._prompt.prefer_languages(_languages(fci.language))
        return response
