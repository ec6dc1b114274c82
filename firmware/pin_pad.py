"""The PIN pad's cryptography: the online PIN block leaves it enciphered, never in clear.

ISO 9564-1 format 4 (AES, bound to the PAN) with psec, under the terminal's PIN key. The
acquirer link replaces the fixed key with AES DUKPT working keys (ANSI X9.24-3).
"""

from __future__ import annotations

from psec import pinblock

from emv.pin_encipher import MAX_PIN_DIGITS, MIN_PIN_DIGITS
from emv.sensitive import Sensitive


class PinPadError(Exception):
    """The PIN pad cannot encipher: no key, bad key, or a PIN that is not 4-12 digits."""


class PinPad:
    def __init__(self, key: bytes, key_id: bytes = b"") -> None:
        if len(key) not in (16, 24, 32):
            raise PinPadError("the PIN key is AES-128, -192 or -256")
        self._key = key
        self.key_id = key_id

    def __repr__(self) -> str:
        return f"PinPad(key id {self.key_id.hex().upper() or '-'}, key hidden)"

    def online_pin_block(self, pin: Sensitive[str], pan: Sensitive[str]) -> Sensitive[bytes]:
        digits = pin.reveal()
        if not (digits.isascii() and digits.isdigit() and MIN_PIN_DIGITS <= len(digits) <= MAX_PIN_DIGITS):
            raise PinPadError("a PIN is 4 to 12 digits")
        try:
            block = pinblock.encipher_pinblock_iso_4(self._key, digits, pan.reveal())
        except ValueError as exc:
            raise PinPadError("the PIN block could not be built") from exc
        return Sensitive(block, "PIN block")
