"""Values that must never be shown: PAN, track 2 equivalent, PINs, PIN blocks (ARCHITECTURE 11).

A `Sensitive` keeps its value out of `repr`, `str` and f-strings, compares in constant time and
refuses to be hashed (a dict key or set member would keep it alive and compare it by timing).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Generic, TypeVar

T = TypeVar("T", str, bytes)


class Sensitive(Generic[T]):
    __slots__ = ("_label", "_value")

    def __init__(self, value: T, label: str = "secret") -> None:
        if not isinstance(value, str | bytes):
            raise TypeError("a sensitive value is str or bytes")
        self._value = value
        self._label = label

    def reveal(self) -> T:
        """The clear value, for the one place that must use it (a command, a PIN block)."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"<{self._label}: hidden>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sensitive) or type(self._value) is not type(other._value):
            return NotImplemented
        a = self._value.encode() if isinstance(self._value, str) else self._value
        b = other._value.encode() if isinstance(other._value, str) else other._value
        return hmac.compare_digest(a, b)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> object:
        raise TypeError("a sensitive value is not pickled")


def pan_token(pan: str, psn: int | None = None) -> str:
    """SHA-256 of the PAN (and sequence number): how exception files and logs name a card.

    Not a secret-keeping device (a PAN's digits can be enumerated), only a way to match a card
    without the PAN in clear on disk or in a log line.
    """
    text = pan if psn is None else f"{pan}/{psn:02d}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()
