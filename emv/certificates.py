"""Recovery of EMV public key certificates and signed data (EMV 4.4 Book 2, 5 to 7).

Each function follows the numbered steps of its Book 2 section and stops at the first failed
check with a `CertificateError` whose `step` names that check, so the kernel can record why
offline data authentication failed. No I/O; the RSA public operation is a big-int `pow`.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Protocol

from emv.capk import CaPublicKey
from emv.errors import EmvError

# EMV 4.4 Book 2, Annex A2.1 and Tables 6, 7, 14, 17.
_HEADER = 0x6A
_TRAILER = 0xBC
_HASH_LENGTH = 20
_SHA1 = 0x01  # Book 2, Annex B2.1
_RSA = 0x01  # Book 2, Annex B1
_FORMAT_ISSUER = 0x02
_FORMAT_SSAD = 0x03
_FORMAT_ICC = 0x04
_FORMAT_SDAD = 0x05
# Book 2, 5.1 / 6.1: a modulus is at most 248 bytes; the exponent is 3 or 2^16 + 1.
_MAX_MODULUS = 248
_EXPONENTS = (b"\x03", b"\x01\x00\x01")


class Step(StrEnum):
    """The check of Book 2 that failed. Values are plain strings: `err.step == "hash"` works."""

    LENGTH = "length"  # step 1: data length differs from the modulus length
    TRAILER = "trailer"  # Recovered Data Trailer is not 'BC'
    HEADER = "header"  # Recovered Data Header is not '6A'
    FORMAT = "format"  # certificate / signed data format
    CID_MISMATCH = "cid_mismatch"  # CDA: CID in the signature differs from the response's (6.6.2)
    HASH_ALGORITHM = "hash_algorithm"  # Hash Algorithm Indicator not recognised
    HASH = "hash"  # Hash Result differs from the computed hash
    PAN_MISMATCH = "pan_mismatch"  # issuer identifier / PAN differs from the card's PAN
    EXPIRY_FORMAT = "expiry_format"  # Certificate Expiration Date is not a valid MMYY
    EXPIRED = "expired"  # Certificate Expiration Date has passed
    REVOKED = "revoked"  # RID || index || serial number is on the revocation list (5.3 step 10)
    KEY_ALGORITHM = "key_algorithm"  # Public Key Algorithm Indicator not recognised
    KEY_LENGTH = "key_length"  # certified key longer than its certifier's, or than 248 bytes
    REMAINDER = "remainder"  # remainder missing, or of the wrong length
    EXPONENT = "exponent"  # exponent differs from its length in the certificate, or not 3/65537
    DYNAMIC_DATA = "dynamic_data"  # ICC Dynamic Data does not fit / is malformed (6.5.2, 6.6.2)
    TRANSACTION_DATA_HASH = "transaction_data_hash"  # CDA: Transaction Data Hash Code (6.6.2)


class CertificateError(EmvError, ValueError):
    """A certificate or signature failed a check of EMV 4.4 Book 2.

    `certificate` says which object ("issuer", "icc", "icc_pin", "ssad", "sdad"), `step` which
    check. The message holds no card data.
    """

    def __init__(self, certificate: str, step: Step, reason: str) -> None:
        self.certificate = certificate
        self.step = step
        self.reason = reason
        super().__init__(f"{certificate} {step.value}: {reason}")


class RsaPublicKey(Protocol):
    @property
    def modulus(self) -> bytes: ...

    @property
    def exponent(self) -> bytes: ...


@dataclass(frozen=True, repr=False)
class IssuerPublicKey:
    """An Issuer Public Key recovered from tag 90 (Book 2, 5.3 step 12 / 6.3)."""

    modulus: bytes
    exponent: bytes
    issuer_identifier: bytes  # 4 bytes cn: the leftmost 3-8 PAN digits, 'F'-padded
    expiry: bytes  # MMYY, n4
    serial: bytes  # 3 bytes
    hash_algo: int
    pk_algo: int

    def __repr__(self) -> str:
        return f"IssuerPublicKey({len(self.modulus) * 8}-bit, serial {self.serial.hex().upper()})"


@dataclass(frozen=True, repr=False)
class IccPublicKey:
    """An ICC (or ICC PIN Encipherment) Public Key recovered from 9F46 or 9F2D (Book 2, 6.4, 7.1)."""

    modulus: bytes
    exponent: bytes
    pan: bytes = field(compare=False)  # 10 bytes cn; sensitive, kept out of repr
    expiry: bytes  # MMYY, n4
    serial: bytes  # 3 bytes
    hash_algo: int
    pk_algo: int

    def __repr__(self) -> str:
        return f"IccPublicKey({len(self.modulus) * 8}-bit, serial {self.serial.hex().upper()})"


@dataclass(frozen=True)
class SignedDynamicData:
    """What Signed Dynamic Application Data carries (Book 2, 6.5.2 and, for CDA, 6.6.2).

    `cryptogram_information_data`, `application_cryptogram` and `transaction_data_hash` are
    set for CDA (Table 19) and `None` for DDA.
    """

    icc_dynamic_number: bytes
    icc_dynamic_data: bytes
    cryptogram_information_data: int | None = None
    application_cryptogram: bytes | None = None
    transaction_data_hash: bytes | None = None


def recover_issuer_key(capk: CaPublicKey, cert90: bytes, remainder92: bytes | None, exponent9F32: bytes,
                       *, pan: str, today: date,
                       revoked: Collection[tuple[bytes, int, bytes]] = ()) -> IssuerPublicKey:
    """Recover and check the Issuer Public Key (EMV 4.4 Book 2, 5.3 steps 1-12; 6.3 for DDA/CDA).

    `revoked` holds (RID, CA index, certificate serial number) triples (5.3 step 10).
    """
    what = "issuer"
    remainder = remainder92 or b""
    n_ca = len(capk.modulus)
    block = _recover(what, capk, cert90, _FORMAT_ISSUER, min_length=36 + 1)
    issuer_id, expiry, serial = block[2:6], block[6:8], block[8:11]
    hash_algo, pk_algo, n_i, exp_len = block[11], block[12], block[13], block[14]
    leftmost = block[15:n_ca - 21]
    _check_hash(what, block, hash_algo, remainder + exponent9F32)  # steps 5-7
    if not _issuer_identifier_matches(issuer_id, pan):  # step 8
        raise CertificateError(what, Step.PAN_MISMATCH, "issuer identifier does not match the PAN")
    _check_expiry(what, expiry, today)  # step 9
    if (capk.rid, capk.index, serial) in revoked:  # step 10
        raise CertificateError(what, Step.REVOKED, f"certificate serial {serial.hex().upper()} is revoked")
    if pk_algo != _RSA:  # step 11
        raise CertificateError(what, Step.KEY_ALGORITHM, f"algorithm indicator {pk_algo:02X}")
    modulus = _assemble_modulus(what, n_i, n_ca, leftmost, remainder)  # step 12
    _check_exponent(what, exp_len, exponent9F32)
    return IssuerPublicKey(modulus, exponent9F32, issuer_id, expiry, serial, hash_algo, pk_algo)


def recover_icc_key(issuer_key: RsaPublicKey, cert9F46: bytes, remainder9F48: bytes | None,
                    exponent9F47: bytes, *, static_data: bytes, pan: str, today: date) -> IccPublicKey:
    """Recover and check the ICC Public Key (EMV 4.4 Book 2, 6.4 steps 1-11).

    `static_data` is the static data to be authenticated (Book 3, 10.3).
    """
    return _recover_icc_format_key("icc", issuer_key, cert9F46, remainder9F48, exponent9F47,
                                   static_data=static_data, pan=pan, today=today)


def recover_icc_pin_key(issuer_key: RsaPublicKey, cert9F2D: bytes, remainder9F2F: bytes | None,
                        exponent9F2E: bytes, *, pan: str, today: date) -> IccPublicKey:
    """Recover the ICC PIN Encipherment Public Key (EMV 4.4 Book 2, 7.1).

    The certificate has the format of Table 14 and is checked as in 6.4, without static data.
    """
    return _recover_icc_format_key("icc_pin", issuer_key, cert9F2D, remainder9F2F, exponent9F2E,
                                   static_data=b"", pan=pan, today=today)


def verify_ssad(issuer_key: RsaPublicKey, ssad93: bytes, static_data: bytes) -> bytes:
    """Check Signed Static Application Data (EMV 4.4 Book 2, 5.4 steps 1-7).

    Returns the Data Authentication Code (tag 9F45).
    """
    what = "ssad"
    block = _recover(what, issuer_key, ssad93, _FORMAT_SSAD, min_length=26 + 1)
    _check_hash(what, block, block[2], static_data)
    return block[3:5]


def verify_sdad(icc_key: RsaPublicKey, sdad9F4B: bytes, terminal_data: bytes, *, cda: bool = False,
                cid: int | None = None, transaction_data: bytes | None = None) -> SignedDynamicData:
    """Check Signed Dynamic Application Data (EMV 4.4 Book 2, 6.5.2 for DDA, 6.6.2 for CDA).

    `terminal_data` is the DDOL data for DDA, the terminal's Unpredictable Number for CDA.
    With `cda`, the ICC Dynamic Data must have the layout of Table 19; `cid` (the CID returned
    by GENERATE AC) is then compared (6.6.2 step 5), and `transaction_data` (the values of
    6.6.2 step 10, already concatenated by the caller) is hashed and compared (step 11).
    """
    what = "sdad"
    n_ic = len(icc_key.modulus)
    block = _recover(what, icc_key, sdad9F4B, _FORMAT_SDAD, min_length=25 + 1)
    dynamic_length = block[3]
    if dynamic_length > n_ic - 25:
        raise CertificateError(what, Step.DYNAMIC_DATA,
                               f"ICC dynamic data length {dynamic_length} exceeds {n_ic - 25}")
    dynamic_data = block[4:4 + dynamic_length]
    signed = _parse_dynamic_data(what, dynamic_data, cda=cda)
    if cda and cid is not None and signed.cryptogram_information_data != cid:
        raise CertificateError(what, Step.CID_MISMATCH, "CID differs from the GENERATE AC response")
    _check_hash(what, block, block[2], terminal_data)
    if cda and transaction_data is not None:
        computed = hashlib.sha1(transaction_data).digest()
        if not hmac.compare_digest(computed, signed.transaction_data_hash or b""):
            raise CertificateError(what, Step.TRANSACTION_DATA_HASH, "transaction data hash code differs")
    return signed


def _recover_icc_format_key(what: str, issuer_key: RsaPublicKey, cert: bytes, remainder_or_none: bytes | None,
                            exponent: bytes, *, static_data: bytes, pan: str, today: date) -> IccPublicKey:
    remainder = remainder_or_none or b""
    n_i = len(issuer_key.modulus)
    block = _recover(what, issuer_key, cert, _FORMAT_ICC, min_length=42 + 1)
    cert_pan, expiry, serial = block[2:12], block[12:14], block[14:17]
    hash_algo, pk_algo, n_ic, exp_len = block[17], block[18], block[19], block[20]
    leftmost = block[21:n_i - 21]
    _check_hash(what, block, hash_algo, remainder + exponent + static_data)  # steps 5-7
    if not _pan_matches(cert_pan, pan):  # step 8
        raise CertificateError(what, Step.PAN_MISMATCH, "certificate PAN does not match the PAN")
    _check_expiry(what, expiry, today)  # step 9
    if pk_algo != _RSA:  # step 10
        raise CertificateError(what, Step.KEY_ALGORITHM, f"algorithm indicator {pk_algo:02X}")
    modulus = _assemble_modulus(what, n_ic, n_i, leftmost, remainder)  # step 11
    _check_exponent(what, exp_len, exponent)
    return IccPublicKey(modulus, exponent, cert_pan, expiry, serial, hash_algo, pk_algo)


def _recover(what: str, key: RsaPublicKey, data: bytes, expected_format: int, *, min_length: int) -> bytes:
    """Steps 1-4 common to every section: length, RSA recovery, trailer, header, format."""
    modulus = key.modulus
    if len(modulus) < min_length or len(modulus) > _MAX_MODULUS or not key.exponent:
        raise CertificateError(what, Step.LENGTH, f"unusable key of {len(modulus)} bytes")
    if len(data) != len(modulus):
        raise CertificateError(what, Step.LENGTH, f"{len(data)} bytes for a {len(modulus)}-byte key")
    n = int.from_bytes(modulus, "big")
    value = int.from_bytes(data, "big")
    if n == 0 or value >= n:
        raise CertificateError(what, Step.LENGTH, "data is not smaller than the modulus")
    block = pow(value, int.from_bytes(key.exponent, "big"), n).to_bytes(len(modulus), "big")
    if block[-1] != _TRAILER:
        raise CertificateError(what, Step.TRAILER, f"trailer {block[-1]:02X}")
    if block[0] != _HEADER:
        raise CertificateError(what, Step.HEADER, f"header {block[0]:02X}")
    if block[1] != expected_format:
        raise CertificateError(what, Step.FORMAT, f"format {block[1]:02X}, expected {expected_format:02X}")
    return block


def _check_hash(what: str, block: bytes, hash_algo: int, hashed_after: bytes) -> None:
    """Hash the recovered data (format to just before the Hash Result) and what follows it."""
    if hash_algo != _SHA1:
        raise CertificateError(what, Step.HASH_ALGORITHM, f"hash algorithm indicator {hash_algo:02X}")
    hash_start = len(block) - 1 - _HASH_LENGTH
    computed = hashlib.sha1(block[1:hash_start] + hashed_after).digest()
    if not hmac.compare_digest(computed, block[hash_start:-1]):
        raise CertificateError(what, Step.HASH, "hash result differs")


def _issuer_identifier_matches(issuer_id: bytes, pan: str) -> bool:
    # Book 2, 5.3 step 8: leftmost 3-8 PAN digits, padded on the right with 'F'.
    digits = issuer_id.hex().upper().rstrip("F")
    return 3 <= len(digits) <= 8 and _is_decimal(digits) and _is_decimal(pan) and pan.startswith(digits)


def _pan_matches(cert_pan: bytes, pan: str) -> bool:
    # Book 2, 6.4 step 8: the recovered PAN ('F'-padded to 10 bytes) equals the card's PAN.
    if not 1 <= len(pan) <= 19 or not _is_decimal(pan):
        return False
    return hmac.compare_digest(cert_pan.hex().upper(), pan.ljust(20, "F"))


def _check_expiry(what: str, expiry: bytes, today: date) -> None:
    # Book 2, 5.3 step 9 / 6.4 step 9: valid through the last day of month MM of year YY.
    text = expiry.hex()
    if not _is_decimal(text) or not 1 <= int(text[:2]) <= 12:
        raise CertificateError(what, Step.EXPIRY_FORMAT, "expiration date is not MMYY")
    month, yy = int(text[:2]), int(text[2:])
    # EMV 4.4 Book 4, 6.7 (date management): YY 00-49 is 20YY, 50-99 is 19YY.
    year = 2000 + yy if yy < 50 else 1900 + yy
    last_day = date(year, month, calendar.monthrange(year, month)[1])
    if last_day < today:
        raise CertificateError(what, Step.EXPIRED, f"expired at the end of {month:02d}/{year}")


def _assemble_modulus(what: str, length: int, certifier_length: int, leftmost: bytes,
                      remainder: bytes) -> bytes:
    if length == 0 or length > certifier_length:
        raise CertificateError(what, Step.KEY_LENGTH,
                               f"key length {length} for a {certifier_length}-byte certifier")
    if length <= len(leftmost):
        if remainder:
            raise CertificateError(what, Step.REMAINDER, "remainder present but the key fits the certificate")
        return leftmost[:length]
    if len(leftmost) + len(remainder) != length:
        raise CertificateError(what, Step.REMAINDER,
                               f"remainder of {len(remainder)} bytes, expected {length - len(leftmost)}")
    return leftmost + remainder


def _check_exponent(what: str, exponent_length: int, exponent: bytes) -> None:
    if len(exponent) != exponent_length:
        raise CertificateError(what, Step.EXPONENT,
                               f"exponent of {len(exponent)} bytes, certificate says {exponent_length}")
    if exponent not in _EXPONENTS:
        raise CertificateError(what, Step.EXPONENT, "exponent is neither 3 nor 65537")


def _parse_dynamic_data(what: str, data: bytes, *, cda: bool) -> SignedDynamicData:
    # Book 2, 6.5.1 Table 18 (DDA) and 6.6.1 Table 19 (CDA).
    if not data or not 2 <= data[0] <= 8 or len(data) < 1 + data[0]:
        raise CertificateError(what, Step.DYNAMIC_DATA, "no valid ICC dynamic number")
    number = data[1:1 + data[0]]
    if not cda:
        return SignedDynamicData(number, data)
    rest = data[1 + data[0]:]
    if len(rest) != 1 + 8 + _HASH_LENGTH:
        raise CertificateError(what, Step.DYNAMIC_DATA,
                               f"CDA dynamic data has {len(rest)} bytes after the number")
    return SignedDynamicData(number, data, rest[0], rest[1:9], rest[9:])


def _is_decimal(text: str) -> bool:
    return all(c in "0123456789" for c in text)
