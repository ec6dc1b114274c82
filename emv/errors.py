"""The kernel's error types: every parser raises one of these, never a bare exception."""

from __future__ import annotations

from typing import Any


class EmvError(Exception):
    """Base of every error raised by the `emv` package."""


class TlvError(EmvError, ValueError):
    """Malformed BER-TLV (EMV 4.4 Book 3, Annex B).

    Carries where decoding stopped (`offset` into the input), the tag being read when known,
    and everything decoded before the fault (`partial`), so a caller can log what a card sent
    without guessing.
    """

    def __init__(self, reason: str, *, offset: int, tag: int | None = None,
                 partial: Any = None) -> None:
        self.reason = reason
        self.offset = offset
        self.tag = tag
        self.partial = partial if partial is not None else []
        where = f"offset {offset}" + (f", tag {tag:X}" if tag is not None else "")
        super().__init__(f"{reason} ({where})")


class DolError(EmvError, ValueError):
    """Malformed Data Object List (EMV 4.4 Book 3, 5.4)."""

    def __init__(self, reason: str, *, offset: int, partial: Any = None) -> None:
        self.reason = reason
        self.offset = offset
        self.partial = partial if partial is not None else []
        super().__init__(f"{reason} (offset {offset})")


class ApduError(EmvError, ValueError):
    """A command or response APDU that does not follow ISO 7816-4 / EMV 4.4 Book 1, 9."""


class TransportError(EmvError):
    """The card exchange broke the T=0/T=1 transport rules (EMV 4.4 Book 1, 9.3)."""
