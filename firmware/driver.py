"""Runs a sans-I/O kernel generator against a card: fulfils each request it yields."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from emv import transport
from emv.apdu import Response
from emv.requests import Transmit
from firmware.apdu_log import logged

R = TypeVar("R")


def card_sender(transmit: Callable[[bytes], bytes], protocol: str) -> Callable[[Transmit], Response]:
    """`Transmit` -> `Response` over a raw channel, with the Book 1, 9.3 rules and APDU logging."""
    send = logged(transmit)

    def fulfil(request: Transmit) -> Response:
        return transport.transceive(send, request.command, protocol)

    return fulfil


def run(kernel: Generator[Any, Any, R], fulfil: Callable[[Transmit], Response]) -> R:
    """Drive `kernel` to its end; only `Transmit` requests are known at this stage."""
    try:
        request = next(kernel)
        while True:
            if not isinstance(request, Transmit):
                raise TypeError(f"no handler for kernel request {type(request).__name__}")
            request = kernel.send(fulfil(request))
    except StopIteration as stop:
        return stop.value
