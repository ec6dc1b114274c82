"""Offline PIN blocks and PIN encipherment (EMV 4.4 Book 3, 6.5.12; Book 2, 7.2).

The terminal enciphers '7F' || PIN block || ICC Unpredictable Number || random pad with the
card's ICC PIN Encipherment (or ICC) public key. Randomness comes from the caller: this module
does no I/O. No error message, repr or log line here ever holds a PIN digit.
"""

from __future__ import annotations

from emv.errors import EmvError

PIN_BLOCK_LENGTH = 8
MIN_PIN_DIGITS = 4
MAX_PIN_DIGITS = 12
ICC_UN_LENGTH = 8  # GET CHALLENGE returns 8 bytes (Book 3, 6.5.6)
ENCIPHERED_PIN_HEADER = 0x7F  # Book 2, 7.2
_CONTROL_FORMAT_2 = 0x2  # Book 3, 6.5.12: plaintext offline PIN block, control field '2'
_DECIMAL = frozenset("0123456789")


class PinError(EmvError, ValueError):
    """A PIN, PIN block or encipherment input is unusable. The message never holds the PIN."""


def pin_block_format2(pin: str) -> bytes:
    """The plaintext offline PIN block: C=2, N=length, PIN digits, 'F' fill (Book 3, 6.5.12)."""
    if not isinstance(pin, str) or not MIN_PIN_DIGITS <= len(pin) <= MAX_PIN_DIGITS:
        raise PinError(f"PIN must have {MIN_PIN_DIGITS} to {MAX_PIN_DIGITS} digits")
    if not set(pin) <= _DECIMAL:
        raise PinError("PIN must hold decimal digits only")
    nibbles = f"{_CONTROL_FORMAT_2:X}{len(pin):X}{pin}".ljust(2 * PIN_BLOCK_LENGTH, "F")
    return bytes.fromhex(nibbles)


def parse_pin_block_format2(block: bytes) -> str:
    """The PIN held in a plaintext offline PIN block (Book 3, 6.5.12), for the card side."""
    if not isinstance(block, bytes) or len(block) != PIN_BLOCK_LENGTH:
        raise PinError(f"PIN block must be {PIN_BLOCK_LENGTH} bytes")
    nibbles = block.hex().upper()
    if int(nibbles[0], 16) != _CONTROL_FORMAT_2:
        raise PinError("PIN block control field is not 2")
    length = int(nibbles[1], 16)
    if not MIN_PIN_DIGITS <= length <= MAX_PIN_DIGITS:
        raise PinError("PIN block length field out of range")
    pin, fill = nibbles[2:2 + length], nibbles[2 + length:]
    if not set(pin) <= _DECIMAL or set(fill) - {"F"}:
        raise PinError("PIN block is malformed")
    return pin


def encipher_pin(pin: str, icc_unpredictable_number: bytes, modulus: bytes, exponent: bytes,
                 random_pad: bytes) -> bytes:
    """Encipher an offline PIN for VERIFY P2='88' (EMV 4.4 Book 2, 7.2).

    Data (N bytes, N the modulus length) = '7F' || PIN block (8) || ICC UN (8) || random pad
    (N - 17), then raw RSA with the public key. `random_pad` must be exactly N - 17 bytes.
    """
    if not isinstance(icc_unpredictable_number, bytes) or len(icc_unpredictable_number) != ICC_UN_LENGTH:
        raise PinError(f"ICC unpredictable number must be {ICC_UN_LENGTH} bytes")
    if not isinstance(modulus, bytes) or len(modulus) < 1 + PIN_BLOCK_LENGTH + ICC_UN_LENGTH + 1:
        raise PinError("modulus too short for PIN encipherment")
    if not isinstance(exponent, bytes) or int.from_bytes(exponent, "big") < 3:
        raise PinError("public exponent must be at least 3")
    pad_length = len(modulus) - 1 - PIN_BLOCK_LENGTH - ICC_UN_LENGTH
    if not isinstance(random_pad, bytes) or len(random_pad) != pad_length:
        raise PinError(f"random pad must be {pad_length} bytes for a {len(modulus)}-byte modulus")
    data = bytes([ENCIPHERED_PIN_HEADER]) + pin_block_format2(pin) + icc_unpredictable_number + random_pad
    n = int.from_bytes(modulus, "big")
    value = int.from_bytes(data, "big")
    if value >= n:
        raise PinError("modulus is not a full-length RSA modulus")
    return pow(value, int.from_bytes(exponent, "big"), n).to_bytes(len(modulus), "big")
