"""Logging of card exchanges, as a wrapper around a raw `send` function.

Each exchange is logged at DEBUG with the command name, CLA INS P1 P2, Lc, Le, the length of
the response data, the status word and its meaning. Command data and response data are never
logged: they carry PIN blocks, the PAN, track 2 and cryptograms (principle 11).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from emv.apdu import Command
from emv.errors import ApduError
from emv.status import describe

_LOG = logging.getLogger(__name__)


def _describe_command(tpdu: bytes) -> str:
    try:
        cmd = Command.parse(tpdu)
    except ApduError:
        # Even an unreadable TPDU is shown only by its length.
        return f"unparsable command of {len(tpdu)} bytes"
    lc = "-" if cmd.lc is None else str(cmd.lc)
    le = "-" if cmd.le is None else str(cmd.le)
    return (f"{cmd.name} CLA={cmd.cla:02X} INS={cmd.ins:02X} P1={cmd.p1:02X} P2={cmd.p2:02X}"
            f" Lc={lc} Le={le}")


class LoggingSend:
    """Wraps `send` so that every exchange leaves one DEBUG line, without any card data."""

    def __init__(self, send: Callable[[bytes], bytes], logger: logging.Logger | None = None) -> None:
        self._send = send
        self._log = logger or _LOG

    def __call__(self, tpdu: bytes) -> bytes:
        try:
            answer = self._send(tpdu)
        except Exception as exc:
            if self._log.isEnabledFor(logging.DEBUG):
                # The exception text is left out: a reader error could echo the command.
                self._log.debug("APDU %s -> no answer (%s)", _describe_command(tpdu), type(exc).__name__)
            raise
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("APDU %s -> %s", _describe_command(tpdu), _describe_answer(answer))
        return answer


def _describe_answer(answer: bytes) -> str:
    if len(answer) < 2:
        return f"{len(answer)} bytes, no status word"
    sw = int.from_bytes(answer[-2:], "big")
    return f"{len(answer) - 2} data bytes SW={sw:04X} ({describe(sw)})"


def logged(send: Callable[[bytes], bytes], logger: logging.Logger | None = None) -> LoggingSend:
    """`send` with each exchange logged at DEBUG (see `LoggingSend`)."""
    return LoggingSend(send, logger)
