"""The card simulator's RSA PKI: its TEST keys, and the certificates and signatures it issues.

Everything here signs (EMV 4.4 Book 2, Annex A2.1: digital signature scheme giving message
recovery, with SHA-1). The terminal's side, which recovers and checks, is `emv.certificates`;
the two are written apart so that a test signing here and recovering there checks both.

The keys under `sim/card/keys/` are TEST KEYS made by `make_test_keys.py`: they exist so the
simulated card computes real certificates, and must never be used outside `sim/` and `tests/`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from math import lcm
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emv.errors import EmvError

KEYS_DIR = Path(__file__).with_name("keys")
CA_KEYS_TOML = Path(__file__).with_name("ca_keys.toml")

# EMV 4.4 Book 2, Annex A2.1 / Tables 6, 7, 14, 17: framing of every recoverable block.
RECOVERED_DATA_HEADER = 0x6A
RECOVERED_DATA_TRAILER = 0xBC
PAD_BYTE = 0xBB
HASH_LENGTH = 20
# EMV 4.4 Book 2, Annex B2.1 (SHA-1) and Annex B1 (RSA): the only indicators defined for RSA.
HASH_ALGORITHM_SHA1 = 0x01
PK_ALGORITHM_RSA = 0x01

FORMAT_ISSUER_CERTIFICATE = 0x02  # Book 2, 5.3, Table 6
FORMAT_SIGNED_STATIC_DATA = 0x03  # Book 2, 5.4, Table 7
FORMAT_ICC_CERTIFICATE = 0x04  # Book 2, 6.4, Table 14 (also the ICC PIN key certificate, 7.1)
FORMAT_SIGNED_DYNAMIC_DATA = 0x05  # Book 2, 6.5.1, Table 17

# Book 2, 5.1 / 6.1: N_CA <= 248 bytes, and one length byte in each certificate.
MAX_MODULUS_LENGTH = 248

_KEY_NAME = re.compile(r"[a-z0-9_]+")


class PkiError(EmvError, ValueError):
    """The simulator was asked to sign something that cannot fit the Book 2 formats."""


@dataclass(frozen=True, repr=False)
class RsaKey:
    """An RSA key pair of the simulator (a TEST key). `repr` shows no number of the key."""

    n: int
    e: int
    d: int
    p: int
    q: int

    def __post_init__(self) -> None:
        if self.p * self.q != self.n or self.n < 3:
            raise PkiError("RSA key: n is not p * q")
        if self.e < 3 or (self.e * self.d) % lcm(self.p - 1, self.q - 1) != 1:
            raise PkiError("RSA key: d is not the inverse of e")

    def __repr__(self) -> str:
        return f"RsaKey({self.n.bit_length()}-bit, e={self.e}, TEST KEY)"

    @classmethod
    def from_private_key(cls, key: rsa.RSAPrivateKey) -> RsaKey:
        numbers = key.private_numbers()
        public = numbers.public_numbers
        return cls(n=public.n, e=public.e, d=numbers.d, p=numbers.p, q=numbers.q)

    @property
    def size(self) -> int:
        """N, the modulus length in bytes (Book 2, 5.1)."""
        return (self.n.bit_length() + 7) // 8

    @property
    def modulus(self) -> bytes:
        return self.n.to_bytes(self.size, "big")

    @property
    def exponent(self) -> bytes:
        return self.e.to_bytes((self.e.bit_length() + 7) // 8, "big")

    @cached_property
    def _crt(self) -> tuple[int, int, int]:
        return self.d % (self.p - 1), self.d % (self.q - 1), pow(self.q, -1, self.p)

    def private_op(self, block: bytes) -> bytes:
        """Raw RSA with the private key (m^d mod n), by the Chinese remainder theorem."""
        value = self._block_value(block)
        dp, dq, q_inv = self._crt
        m1 = pow(value, dp, self.p)
        m2 = pow(value, dq, self.q)
        h = (q_inv * (m1 - m2)) % self.p
        return (m2 + h * self.q).to_bytes(self.size, "big")

    def public_op(self, block: bytes) -> bytes:
        """Raw RSA with the public key (m^e mod n)."""
        return pow(self._block_value(block), self.e, self.n).to_bytes(self.size, "big")

    def _block_value(self, block: bytes) -> int:
        if len(block) != self.size:
            raise PkiError(f"RSA block of {len(block)} bytes for a {self.size}-byte modulus")
        value = int.from_bytes(block, "big")
        if value >= self.n:
            raise PkiError("RSA block is not smaller than the modulus")
        return value


def load_key(name: str) -> RsaKey:
    """Read the TEST key `sim/card/keys/<name>.pem` (unencrypted PKCS#8 or traditional PEM)."""
    if not _KEY_NAME.fullmatch(name):
        raise PkiError(f"bad key name {name!r}: lower-case letters, digits and '_' only")
    path = KEYS_DIR / f"{name}.pem"
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise PkiError(f"test key {name!r} cannot be read: {exc.strerror}") from None
    # The files start with '#' comment lines marking them as TEST KEYS; the PEM block follows.
    start = pem.find(b"-----BEGIN")
    if start < 0:
        raise PkiError(f"test key {name!r} holds no PEM block")
    try:
        key = serialization.load_pem_private_key(pem[start:], password=None)
    except (ValueError, TypeError):
        raise PkiError(f"test key {name!r} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PkiError(f"test key {name!r} is not an RSA key")
    return RsaKey.from_private_key(key)


@dataclass(frozen=True)
class CaKeyFile:
    """One CA key of the simulator, and the RID and index under which terminals find it."""

    name: str
    rid: bytes
    index: int
    expiry: date


# The simulator's CA keys: all TEST KEYS. A000000999 is a RID no scheme uses; the others are the
# real Visa, Mastercard and CB RIDs because the simulated cards carry real AIDs, with indexes
# the simulator chose. None of these is a scheme's key.
CA_KEYS: tuple[CaKeyFile, ...] = (
    CaKeyFile("ca_sim_92", bytes.fromhex("A000000999"), 0x92, date(2035, 12, 31)),
    CaKeyFile("ca_visa_f0", bytes.fromhex("A000000003"), 0xF0, date(2035, 12, 31)),
    CaKeyFile("ca_mc_f2", bytes.fromhex("A000000004"), 0xF2, date(2035, 12, 31)),
    CaKeyFile("ca_cb_f4", bytes.fromhex("A000000042"), 0xF4, date(2035, 12, 31)),
)


def load_ca_key(rid: bytes, index: int) -> RsaKey:
    """The simulator's CA key registered under `rid` and `index` (see `CA_KEYS`)."""
    for entry in CA_KEYS:
        if entry.rid == rid and entry.index == index:
            return load_key(entry.name)
    raise PkiError(f"no simulator CA key for RID {rid.hex().upper()} index {index:02X}")


@dataclass(frozen=True)
class IssuerCertificate:
    """Tags 90 (certificate), 92 (remainder, empty when not needed) and 9F32 (exponent)."""

    certificate: bytes
    remainder: bytes
    exponent: bytes


@dataclass(frozen=True)
class IccCertificate:
    """Tags 9F46/9F48/9F47, or 9F2D/9F2F/9F2E for the ICC PIN Encipherment key."""

    certificate: bytes
    remainder: bytes
    exponent: bytes


def issuer_identifier(pan: str, digits: int = 6) -> bytes:
    """The leftmost 3-8 PAN digits, padded with 'F' to 4 bytes (Book 2, 5.3, Table 6)."""
    if not 3 <= digits <= 8 or len(pan) < digits or not _is_decimal(pan):
        raise PkiError("issuer identifier needs 3 to 8 digits of a decimal PAN")
    return bytes.fromhex(pan[:digits].ljust(8, "F"))


def pan_field(pan: str) -> bytes:
    """The Application PAN as 10 bytes cn, padded with 'F' (Book 2, 6.4, Table 14)."""
    if not 1 <= len(pan) <= 19 or not _is_decimal(pan):
        raise PkiError("PAN must be 1 to 19 decimal digits")
    return bytes.fromhex(pan.ljust(20, "F"))


def issuer_certificate(ca: RsaKey, issuer: RsaKey, *, issuer_id: bytes, expiry: bytes, serial: bytes,
                       hash_algo: int = HASH_ALGORITHM_SHA1,
                       pk_algo: int = PK_ALGORITHM_RSA) -> IssuerCertificate:
    """Issuer Public Key Certificate, format '02' (EMV 4.4 Book 2, 5.3, Table 6).

    `hash_algo` and `pk_algo` are written as given; the Hash Result is always SHA-1, the only
    hash Book 2 defines for these certificates, so other values build certificates a terminal
    must reject.
    """
    _check_length("issuer identifier", issuer_id, 4)
    _check_length("certificate expiration date", expiry, 2)
    _check_length("certificate serial number", serial, 3)
    if issuer.size > ca.size:
        raise PkiError("issuer key is longer than the CA key (Book 2, 5.1)")
    leftmost, remainder = _split_modulus(issuer, ca.size - 36)
    fields = (bytes([FORMAT_ISSUER_CERTIFICATE]) + issuer_id + expiry + serial
              + bytes([_byte("hash algorithm indicator", hash_algo), _byte("key algorithm", pk_algo),
                       issuer.size, len(issuer.exponent)])
              + leftmost)
    certificate = _sign(ca, fields, remainder + issuer.exponent)
    return IssuerCertificate(certificate, remainder, issuer.exponent)


def icc_certificate(issuer: RsaKey, icc: RsaKey, *, pan: bytes, expiry: bytes, serial: bytes,
                    static_data: bytes) -> IccCertificate:
    """ICC Public Key Certificate, format '04' (EMV 4.4 Book 2, 6.4, Table 14).

    `static_data` is the static data to be authenticated (Book 3, 10.3), hashed into the
    certificate after the key's remainder and exponent.
    """
    return _icc_format_certificate(issuer, icc, pan=pan, expiry=expiry, serial=serial,
                                   static_data=static_data)


def icc_pin_certificate(issuer: RsaKey, icc_pin_key: RsaKey, *, pan: bytes, expiry: bytes,
                        serial: bytes) -> IccCertificate:
    """ICC PIN Encipherment Public Key Certificate (EMV 4.4 Book 2, 7.1).

    Same format as Table 14, but no static data is hashed into it.
    """
    return _icc_format_certificate(issuer, icc_pin_key, pan=pan, expiry=expiry, serial=serial,
                                   static_data=b"")


def _icc_format_certificate(issuer: RsaKey, icc: RsaKey, *, pan: bytes, expiry: bytes, serial: bytes,
                            static_data: bytes) -> IccCertificate:
    _check_length("application PAN", pan, 10)
    _check_length("certificate expiration date", expiry, 2)
    _check_length("certificate serial number", serial, 3)
    if icc.size > issuer.size:
        raise PkiError("ICC key is longer than the issuer key (Book 2, 6.1)")
    leftmost, remainder = _split_modulus(icc, issuer.size - 42)
    fields = (bytes([FORMAT_ICC_CERTIFICATE]) + pan + expiry + serial
              + bytes([HASH_ALGORITHM_SHA1, PK_ALGORITHM_RSA, icc.size, len(icc.exponent)])
              + leftmost)
    certificate = _sign(issuer, fields, remainder + icc.exponent + static_data)
    return IccCertificate(certificate, remainder, icc.exponent)


def sign_static_data(issuer: RsaKey, *, data_auth_code: bytes, static_data: bytes) -> bytes:
    """Signed Static Application Data, tag 93, format '03' (EMV 4.4 Book 2, 5.4, Table 7)."""
    _check_length("data authentication code", data_auth_code, 2)
    if issuer.size < 26 + 1:
        raise PkiError("issuer key too short for signed static data")
    fields = (bytes([FORMAT_SIGNED_STATIC_DATA, HASH_ALGORITHM_SHA1]) + data_auth_code
              + bytes([PAD_BYTE]) * (issuer.size - 26))
    return _sign(issuer, fields, static_data)


def sign_dynamic_data(icc: RsaKey, *, icc_dynamic_data: bytes, terminal_data: bytes) -> bytes:
    """Signed Dynamic Application Data, tag 9F4B, format '05' (EMV 4.4 Book 2, 6.5.1, Table 17).

    For DDA `terminal_data` is the DDOL data (6.5.1); for CDA the terminal's Unpredictable
    Number (6.6.1). Build `icc_dynamic_data` with `dda_dynamic_data` or `cda_dynamic_data`.
    """
    room = icc.size - 25
    if len(icc_dynamic_data) > min(room, 255):
        raise PkiError(f"ICC dynamic data of {len(icc_dynamic_data)} bytes exceeds {min(room, 255)}")
    fields = (bytes([FORMAT_SIGNED_DYNAMIC_DATA, HASH_ALGORITHM_SHA1, len(icc_dynamic_data)])
              + icc_dynamic_data + bytes([PAD_BYTE]) * (room - len(icc_dynamic_data)))
    return _sign(icc, fields, terminal_data)


def dda_dynamic_data(icc_dynamic_number: bytes) -> bytes:
    """ICC Dynamic Data for DDA: length and ICC Dynamic Number (EMV 4.4 Book 2, 6.5.1, Table 18)."""
    _check_dynamic_number(icc_dynamic_number)
    return bytes([len(icc_dynamic_number)]) + icc_dynamic_number


def cda_dynamic_data(icc_dynamic_number: bytes, *, cid: int, cryptogram: bytes,
                     transaction_data_hash: bytes) -> bytes:
    """ICC Dynamic Data for CDA (EMV 4.4 Book 2, 6.6.1, Table 19)."""
    _check_dynamic_number(icc_dynamic_number)
    _check_length("application cryptogram", cryptogram, 8)
    _check_length("transaction data hash code", transaction_data_hash, HASH_LENGTH)
    return (bytes([len(icc_dynamic_number)]) + icc_dynamic_number
            + bytes([_byte("cryptogram information data", cid)]) + cryptogram + transaction_data_hash)


def decipher_pin(key: RsaKey, enciphered: bytes) -> bytes:
    """Recover the block of an enciphered PIN (EMV 4.4 Book 2, 7.2) with the ICC's private key.

    The caller checks the '7F' header, the PIN block and its own unpredictable number.
    """
    return key.private_op(enciphered)


def _sign(signer: RsaKey, fields: bytes, hashed_after: bytes) -> bytes:
    # EMV 4.4 Book 2, Annex A2.1: header || recoverable data || H(data || rest) || trailer.
    if len(fields) != signer.size - 22:
        raise PkiError("internal: recoverable data does not fill the block")
    digest = hashlib.sha1(fields + hashed_after).digest()
    block = bytes([RECOVERED_DATA_HEADER]) + fields + digest + bytes([RECOVERED_DATA_TRAILER])
    return signer.private_op(block)


def _split_modulus(key: RsaKey, room: int) -> tuple[bytes, bytes]:
    # Book 2, 5.3 Table 6 / 6.4 Table 14: leftmost digits padded with 'BB', or a remainder.
    if room <= 0:
        raise PkiError("certifying key too short")
    if key.size > MAX_MODULUS_LENGTH:
        raise PkiError(f"key of {key.size} bytes exceeds {MAX_MODULUS_LENGTH}")
    modulus = key.modulus
    if len(modulus) <= room:
        return modulus + bytes([PAD_BYTE]) * (room - len(modulus)), b""
    return modulus[:room], modulus[room:]


def _check_length(what: str, value: bytes, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise PkiError(f"{what} must be {length} bytes")


def _check_dynamic_number(number: bytes) -> None:
    if not isinstance(number, bytes) or not 2 <= len(number) <= 8:
        raise PkiError("ICC dynamic number must be 2 to 8 bytes (Book 2, 6.5.1, Table 18)")


def _byte(what: str, value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise PkiError(f"{what} must fit one byte")
    return value


def _is_decimal(text: str) -> bool:
    return all(c in "0123456789" for c in text)
