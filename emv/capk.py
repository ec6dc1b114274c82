"""Certification Authority public keys held by the terminal (EMV 4.4 Book 2, 11.2.2, Tables 30-31).

`load_capks` reads them from TOML text (the caller reads the file), one `[[capk]]` table each:

    [[capk]]
    rid = "A000000003"
    index = "92"
    modulus = "..."             # hex; whitespace inside is ignored
    exponent = "03"
    expiry = 2035-12-31         # TOML date, or "YYYY-MM-DD"
    hash_algorithm = "01"
    checksum = "..."            # SHA-1 over RID || index || modulus || exponent

Every entry is checked (hex, lengths, checksum) and a bad one stops the load with a `CapkError`
naming the entry and the reason, never a half-loaded table.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from emv.errors import EmvError

# Book 2, 11.2.2 Table 30: RID 5 bytes, modulus up to 248 bytes, exponent 3 or 2^16 + 1,
# hash algorithm '01' (SHA-1, Annex B2.1) for the check sum.
RID_LENGTH = 5
MAX_MODULUS_LENGTH = 248
EXPONENTS = (b"\x03", b"\x01\x00\x01")
HASH_ALGORITHM_SHA1 = 0x01
CHECKSUM_LENGTH = 20

_FIELDS = ("rid", "index", "modulus", "exponent", "expiry", "hash_algorithm", "checksum")


class CapkError(EmvError, ValueError):
    """A CA public key, or the table that lists them, is unusable. Names the entry when known."""

    def __init__(self, reason: str, *, entry: str | None = None) -> None:
        self.reason = reason
        self.entry = entry
        super().__init__(f"{entry}: {reason}" if entry else reason)


@dataclass(frozen=True, repr=False)
class CaPublicKey:
    """One CA public key (Book 2, 11.2.2, Table 30). Public data; repr keeps it short."""

    rid: bytes
    index: int
    modulus: bytes
    exponent: bytes
    expiry: date
    hash_algo: int
    checksum: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.rid, bytes) or len(self.rid) != RID_LENGTH:
            raise CapkError(f"RID must be {RID_LENGTH} bytes")
        if not isinstance(self.index, int) or not 0 <= self.index <= 0xFF:
            raise CapkError("index must be one byte")
        if not isinstance(self.modulus, bytes) or not 1 <= len(self.modulus) <= MAX_MODULUS_LENGTH:
            raise CapkError(f"modulus must be 1 to {MAX_MODULUS_LENGTH} bytes", entry=self.name)
        if self.modulus[0] == 0:
            raise CapkError("modulus has a leading zero byte", entry=self.name)
        if self.exponent not in EXPONENTS:
            raise CapkError("exponent must be 03 or 010001", entry=self.name)
        if not isinstance(self.expiry, date):
            raise CapkError("expiry must be a date", entry=self.name)
        if self.hash_algo != HASH_ALGORITHM_SHA1:
            raise CapkError(f"hash algorithm {self.hash_algo!r} is not 01 (SHA-1)", entry=self.name)
        if not isinstance(self.checksum, bytes) or len(self.checksum) != CHECKSUM_LENGTH:
            raise CapkError(f"checksum must be {CHECKSUM_LENGTH} bytes", entry=self.name)

    @property
    def name(self) -> str:
        return f"{self.rid.hex().upper()}/{self.index:02X}"

    def __repr__(self) -> str:
        return f"CaPublicKey({self.name}, {len(self.modulus) * 8}-bit, expires {self.expiry.isoformat()})"

    def compute_checksum(self) -> bytes:
        """SHA-1 over RID || index || modulus || exponent (Book 2, 11.2.2, Table 30)."""
        return hashlib.sha1(self.rid + bytes([self.index]) + self.modulus + self.exponent).digest()

    def verify_checksum(self) -> bool:
        return hmac.compare_digest(self.compute_checksum(), self.checksum)

    def is_expired(self, today: date) -> bool:
        """True after the key's expiry date (Book 2, 11.2: a key is withdrawn when it expires)."""
        return today > self.expiry


def load_capks(text: str) -> dict[tuple[bytes, int], CaPublicKey]:
    """Parse and check CA public keys from TOML text; keyed by (RID, index)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CapkError(f"not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"capk"})
    if unknown:
        raise CapkError(f"unknown top-level key(s) {', '.join(unknown)}")
    entries = document.get("capk", [])
    if not isinstance(entries, list):
        raise CapkError("'capk' must be an array of tables ([[capk]])")
    keys: dict[tuple[bytes, int], CaPublicKey] = {}
    for position, raw in enumerate(entries, start=1):
        label = f"capk entry {position}"
        key = _parse_entry(raw, label)
        label = f"{label} ({key.name})"
        if not key.verify_checksum():
            raise CapkError("wrong checksum", entry=label)
        if (key.rid, key.index) in keys:
            raise CapkError("duplicate RID and index", entry=label)
        keys[(key.rid, key.index)] = key
    return keys


def _parse_entry(raw: Any, label: str) -> CaPublicKey:
    if not isinstance(raw, dict):
        raise CapkError("not a table", entry=label)
    missing = [name for name in _FIELDS if name not in raw]
    if missing:
        raise CapkError(f"missing key(s) {', '.join(missing)}", entry=label)
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise CapkError(f"unknown key(s) {', '.join(unknown)}", entry=label)
    rid = _hex(raw, "rid", label, length=RID_LENGTH)
    index = _hex(raw, "index", label, length=1)[0]
    label = f"{label} ({rid.hex().upper()}/{index:02X})"
    hash_algo = _hex(raw, "hash_algorithm", label, length=1)[0]
    try:
        return CaPublicKey(
            rid=rid,
            index=index,
            modulus=_hex(raw, "modulus", label),
            exponent=_hex(raw, "exponent", label),
            expiry=_date(raw["expiry"], label),
            hash_algo=hash_algo,
            checksum=_hex(raw, "checksum", label, length=CHECKSUM_LENGTH),
        )
    except CapkError as exc:
        raise CapkError(exc.reason, entry=label) from None


def _hex(raw: dict[str, Any], name: str, label: str, *, length: int | None = None) -> bytes:
    value = raw[name]
    if not isinstance(value, str):
        raise CapkError(f"{name} must be a hex string", entry=label)
    compact = "".join(value.split())
    if not compact or len(compact) % 2 or any(c not in "0123456789abcdefABCDEF" for c in compact):
        raise CapkError(f"{name} is not valid hex", entry=label)
    data = bytes.fromhex(compact)
    if length is not None and len(data) != length:
        raise CapkError(f"{name} must be {length} byte(s), got {len(data)}", entry=label)
    return data


def _date(value: Any, label: str) -> date:
    if isinstance(value, datetime):
        raise CapkError("expiry must be a date without a time", entry=label)
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise CapkError("expiry must be a date (YYYY-MM-DD)", entry=label)
