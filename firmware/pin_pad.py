"""The PIN pad's cryptography: the online PIN block leaves it enciphered, never in clear.

ISO 9564-1 format 4 (AES, bound to the PAN) with psec, under the AES DUKPT PIN encryption key
(ANSI X9.24-3-2017, usage 1000) of a fresh KSN. The KSN goes with the block: the request that
carries it is MACed under the same KSN (docs/host-protocol.md, field 52).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from psec import pinblock

from emv.pin_encipher import MAX_PIN_DIGITS, MIN_PIN_DIGITS
from emv.sensitive import Sensitive
from firmware.terminal_keys import TerminalKeys, TerminalKeysError

AES_KEY_LENGTHS = (16, 24, 32)


class PinPadError(Exception):
    """The PIN pad cannot encipher: no key, bad key, or a PIN that is not 4-12 digits."""


@dataclass(frozen=True)
class EncipheredPin:
    """An online PIN block and the KSN whose PIN key enciphered it."""

    block: Sensitive[bytes]
    key_serial: bytes


class PinPad(Protocol):
    """What the cardholder prompts need of a PIN pad."""

    def online_pin_block(self, pin: Sensitive[str], pan: Sensitive[str]) -> EncipheredPin: ...


def check_pin(pin: Sensitive[str]) -> str:
    """The PIN's digits when it is 4 to 12 ASCII digits (ISO 9564-1, 8.1); `PinPadError` else."""
    digits = pin.reveal()
    if not (digits.isascii() and digits.isdigit() and MIN_PIN_DIGITS <= len(digits) <= MAX_PIN_DIGITS):
        raise PinPadError("a PIN is 4 to 12 digits")
    return digits


def format4_pin_block(key: bytes, pin: Sensitive[str], pan: Sensitive[str]) -> Sensitive[bytes]:
    """ISO 9564-1:2017 format 4 PIN block enciphered under the AES `key`."""
    if not isinstance(key, bytes) or len(key) not in AES_KEY_LENGTHS:
        raise PinPadError("the PIN key is AES-128, -192 or -256")
    digits = check_pin(pin)
    try:
        block = pinblock.encipher_pinblock_iso_4(key, digits, pan.reveal())
    except ValueError as exc:
        raise PinPadError("the PIN block could not be built") from exc
    return Sensitive(block, "PIN block")


class DukptPinPad:
    """Enciphers each online PIN under the PIN key of a new DUKPT KSN."""

    def __init__(self, keys: TerminalKeys) -> None:
        self._keys = keys

    def online_pin_block(self, pin: Sensitive[str], pan: Sensitive[str]) -> EncipheredPin:
        check_pin(pin)  # a PIN refused here uses no KSN
        try:
            keys = self._keys.begin()
        except TerminalKeysError as exc:
            raise PinPadError(f"no DUKPT key for the PIN: {exc}") from exc
        return EncipheredPin(format4_pin_block(keys.pin_key, pin, pan), keys.ksn)

    def __repr__(self) -> str:
        return f"DukptPinPad(initial key ID {self._keys.initial_key_id.hex().upper()}, keys hidden)"
