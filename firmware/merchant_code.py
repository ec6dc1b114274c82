"""The merchant code that guards refunds, voids and settings: kept as a salted scrypt hash
(RFC 7914), never in clear; checked in constant time; wrong codes counted, a lockout after
`max_tries` in a row.

The stored form is one string, "scrypt$<log2 N>$<r>$<p>$<salt hex>$<hash hex>", the value of
[merchant] code_hash. `python -m firmware.merchant_code` reads a code on stdin and prints it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from emv.errors import EmvError

SCHEME = "scrypt"
LOG2_N, BLOCK_SIZE, PARALLEL = 14, 8, 1  # RFC 7914, 2: N = 2^14, r = 8, p = 1 (16 MiB)
SALT_BYTES, HASH_BYTES = 16, 32
MIN_DIGITS, MAX_DIGITS = 4, 8
MAX_LOG2_N = 20  # a stored hash asking more memory than this is refused


class MerchantCodeError(EmvError, ValueError):
    """A stored hash that cannot be read, or a code that is not 4 to 8 digits. The message never
    carries the code."""


@dataclass(frozen=True, repr=False)
class CodeHash:
    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __repr__(self) -> str:
        return f"CodeHash(scrypt N=2^{self.log2_n}, r={self.r}, p={self.p})"

    def text(self) -> str:
        return f"{SCHEME}${self.log2_n}${self.r}${self.p}${self.salt.hex()}${self.digest.hex()}"


def _check_code(code: str) -> bytes:
    if not (isinstance(code, str) and code.isascii() and code.isdigit()
            and MIN_DIGITS <= len(code) <= MAX_DIGITS):
        raise MerchantCodeError(f"a merchant code is {MIN_DIGITS} to {MAX_DIGITS} digits")
    return code.encode("ascii")


def _scrypt(code: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(code, salt=salt, n=1 << log2_n, r=r, p=p, maxmem=(256 << 20), dklen=HASH_BYTES)


def hash_code(code: str, *, salt: bytes | None = None, log2_n: int = LOG2_N) -> CodeHash:
    """The stored form of `code` with a fresh random salt (or `salt`)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    return CodeHash(log2_n, BLOCK_SIZE, PARALLEL, salt, _scrypt(_check_code(code), salt, log2_n, BLOCK_SIZE,
                                                                 PARALLEL))


def parse_hash(text: str) -> CodeHash:
    """A stored hash read back; `MerchantCodeError` when it is not one."""
    parts = text.split("$") if isinstance(text, str) else []
    if len(parts) != 6 or parts[0] != SCHEME:
        raise MerchantCodeError(f"a code hash is {SCHEME}$<log2 N>$<r>$<p>$<salt hex>$<hash hex>")
    try:
        log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        raise MerchantCodeError("a code hash's numbers or hex do not read") from None
    if not (1 <= log2_n <= MAX_LOG2_N and 1 <= r <= 32 and 1 <= p <= 16 and len(salt) >= 8
            and len(digest) == HASH_BYTES):
        raise MerchantCodeError("a code hash's parameters are out of range")
    return CodeHash(log2_n, r, p, salt, digest)


def matches(code: str, stored: CodeHash) -> bool:
    """Whether `code` is the one `stored` was made from (constant-time comparison)."""
    try:
        candidate = _check_code(code)
    except MerchantCodeError:
        return False
    computed = _scrypt(candidate, stored.salt, stored.log2_n, stored.r, stored.p)
    return hmac.compare_digest(computed, stored.digest)


@dataclass(frozen=True)
class Attempt:
    result: str  # "ok", "refused" (wrong code), "locked" (too many wrong codes: not even checked)
    failures: int  # wrong codes in a row so far
    tries_left: int


class CodeGuard:
    """The code's checks in a row: `max_tries` wrong codes lock it for `lockout` seconds."""

    def __init__(self, stored: CodeHash, *, max_tries: int = 3, lockout: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stored = stored
        self.max_tries = max_tries
        self.lockout = lockout
        self.failures = 0
        self._clock = clock
        self._locked_until: float | None = None

    def locked(self) -> bool:
        if self._locked_until is not None and self._clock() >= self._locked_until:
            self._locked_until, self.failures = None, 0
        return self._locked_until is not None

    def check(self, code: str) -> Attempt:
        if self.locked():
            return Attempt("locked", self.failures, 0)
        if matches(code, self.stored):
            self.failures = 0
            return Attempt("ok", 0, self.max_tries)
        self.failures += 1
        if self.failures >= self.max_tries:
            self._locked_until = self._clock() + self.lockout
        return Attempt("refused", self.failures, max(0, self.max_tries - self.failures))


def main() -> int:
    """Print the stored form of the code read on stdin (one line), for [merchant] code_hash."""
    code = sys.stdin.readline().strip()
    try:
        print(hash_code(code).text())
    except MerchantCodeError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
