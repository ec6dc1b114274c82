"""Faults the host simulator injects, set by tests in-process or by `tpe sim host` commands.

Response faults act on the next answers, whatever their MTI; the host books first, as a real
host whose answer is lost would:

- `drop`: book, never answer (the connection stays open; the terminal times out);
- `close`: book, then close the connection instead of answering;
- `garbage`: book, then send a frame of random bytes instead of the answer;
- `bad_mac`: book, then answer with one bit of the MAC flipped.

`delay` (seconds) holds every answer back until set to 0. `decline_next(count, code)` makes the
next `count` authorizations (0100/0200) decline with `code`, booked as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from firmware.iso8583_spec import FIELDS


class FaultError(Exception):
    """A fault that cannot be set: unknown kind, negative count or delay, bad response code."""


class ResponseFault(StrEnum):
    DROP = "drop"
    CLOSE = "close"
    GARBAGE = "garbage"
    BAD_MAC = "bad_mac"


# When several are armed, the first in this order acts on the next answer.
_ORDER = (ResponseFault.CLOSE, ResponseFault.DROP, ResponseFault.GARBAGE, ResponseFault.BAD_MAC)
_CODE_CHARACTERS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _count(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise FaultError("a count is an integer >= 0")
    return count


@dataclass
class Faults:
    """The armed faults. Not thread-safe: set them from the host's event loop thread."""

    delay: float = 0.0
    _armed: dict[ResponseFault, int] = field(default_factory=dict)
    _declines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.set_delay(self.delay)

    def set_delay(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) \
                or seconds < 0:
            raise FaultError("a delay is a finite number of seconds >= 0")
        self.delay = float(seconds)

    def arm(self, fault: ResponseFault | str, count: int = 1) -> None:
        """Apply `fault` to the next `count` answers (0 disarms it)."""
        try:
            kind = ResponseFault(fault)
        except ValueError:
            raise FaultError(f"unknown fault {str(fault)[:20]!r}") from None
        self._armed[kind] = _count(count)

    def decline_next(self, count: int, code: str) -> None:
        """The next `count` authorizations decline with `code` (field 39, an 2)."""
        if not isinstance(code, str) or len(code) != FIELDS["39"].max_len \
                or not set(code) <= _CODE_CHARACTERS:
            raise FaultError("a response code is 2 letters or digits")
        if code in ("00", "11"):
            raise FaultError("a decline code cannot be an approval")
        self._declines = [code] * _count(count)

    def clear(self) -> None:
        self.delay = 0.0
        self._armed.clear()
        self._declines.clear()

    def take_response_fault(self) -> ResponseFault | None:
        """The fault for the answer about to be sent, counted as used."""
        for kind in _ORDER:
            if self._armed.get(kind, 0) > 0:
                self._armed[kind] -= 1
                return kind
        return None

    def take_decline(self) -> str | None:
        return self._declines.pop(0) if self._declines else None

    def armed(self, fault: ResponseFault | str) -> int:
        return self._armed.get(ResponseFault(fault), 0)

    @property
    def declines_left(self) -> int:
        return len(self._declines)

    def describe(self) -> str:
        parts = [f"delay={self.delay:g}"]
        parts += [f"{kind.value}={self._armed.get(kind, 0)}" for kind in _ORDER]
        parts.append(f"decline={len(self._declines)}" + (f"x{self._declines[0]}" if self._declines else ""))
        return " ".join(parts)
