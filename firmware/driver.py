"""Runs a sans-I/O kernel generator: fulfils each request it yields (ARCHITECTURE principle 1).

Card commands go to the reader, cardholder prompts to a `Prompt` (the touchscreen later; the
console or a script now), authorizations to an `Authorizer` (the host client later), and the
question whether a TC may be asked without the issuer to the merchant's offline limits
(`firmware.offline_limits`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Protocol, TypeVar

from emv import transport
from emv.apdu import Response
from emv.errors import TransportError
from emv.requests import (
    ApproveOffline,
    CaptureSignature,
    ChooseApplication,
    ConfirmAmount,
    EnterOfflinePin,
    EnterOnlinePin,
    GoOnline,
    OfflineDecision,
    OnlineRequest,
    OnlineResponse,
    PinEntry,
    Transmit,
)
from firmware.apdu_log import logged

R = TypeVar("R")


class Prompt(Protocol):
    """The cardholder's side of the terminal."""

    def choose_application(self, request: ChooseApplication) -> int | None: ...
    def confirm_amount(self, request: ConfirmAmount) -> bool: ...
    def enter_offline_pin(self, request: EnterOfflinePin) -> PinEntry: ...
    def enter_online_pin(self, request: EnterOnlinePin) -> PinEntry: ...
    def capture_signature(self, request: CaptureSignature) -> bool: ...


class Authorizer(Protocol):
    """The issuer's side, through the acquirer."""

    def authorize(self, request: OnlineRequest) -> OnlineResponse: ...


def card_sender(transmit: Callable[[bytes], bytes], protocol: str,
                errors: tuple[type[BaseException], ...] = ()) -> Callable[[Transmit], Response]:
    """`Transmit` -> `Response` over a raw channel, with the Book 1, 9.3 rules and APDU logging.

    Exceptions of the types in `errors` (the reader's: card pulled, reader gone) become
    `TransportError`, which the kernel knows how to end a transaction on.
    """
    send = logged(transmit)

    def fulfil(request: Transmit) -> Response:
        try:
            return transport.transceive(send, request.command, protocol)
        except errors as exc:
            raise TransportError(f"card exchange failed: {type(exc).__name__}: {exc}") from exc

    return fulfil


OfflinePolicy = Callable[[ApproveOffline], OfflineDecision]


def _answer(request: Any, fulfil: Callable[[Transmit], Response], prompt: Prompt | None,
            authorizer: Authorizer | None, offline: OfflinePolicy | None) -> Any:
    if isinstance(request, Transmit):
        return fulfil(request)
    if isinstance(request, GoOnline):
        if authorizer is None:
            return OnlineResponse.unable()
        return authorizer.authorize(request.request)
    if isinstance(request, ApproveOffline):
        if offline is None:
            return OfflineDecision.allow()
        return offline(request)
    if prompt is None:
        raise TypeError(f"no prompt to answer {type(request).__name__}")
    if isinstance(request, ChooseApplication):
        return prompt.choose_application(request)
    if isinstance(request, ConfirmAmount):
        return prompt.confirm_amount(request)
    if isinstance(request, EnterOfflinePin):
        return prompt.enter_offline_pin(request)
    if isinstance(request, EnterOnlinePin):
        return prompt.enter_online_pin(request)
    if isinstance(request, CaptureSignature):
        return prompt.capture_signature(request)
    raise TypeError(f"no handler for kernel request {type(request).__name__}")


def run(kernel: Generator[Any, Any, R], fulfil: Callable[[Transmit], Response],
        prompt: Prompt | None = None, authorizer: Authorizer | None = None,
        offline: OfflinePolicy | None = None) -> R:
    """Drive `kernel` to its end. A `TransportError` from the card is thrown into the kernel,
    which ends the transaction with the right outcome. `offline` decides whether a TC may be
    asked without the issuer; None allows every one (no offline limits)."""
    try:
        request = next(kernel)
        while True:
            try:
                answer = _answer(request, fulfil, prompt, authorizer, offline)
            except TransportError as exc:
                request = kernel.throw(exc)
                continue
            request = kernel.send(answer)
    except StopIteration as stop:
        return stop.value
