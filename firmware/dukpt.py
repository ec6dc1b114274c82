"""AES DUKPT key management, ANSI X9.24-3-2017 section 6.

There is no maintained Python library for AES DUKPT (ARCHITECTURE.md, "Dependencies chosen"),
so this module implements the standard itself, with `cryptography` for the AES block cipher,
and is tested against the X9.24-3-2017 Supplement Test Vectors that ASC X9 publishes.

A Key Serial Number (KSN) is 12 bytes: the initial key ID (BDK ID, 4 bytes, then derivation
ID, 4 bytes) followed by a 32-bit transaction counter, big-endian. The KSN is not secret.

Two sides derive the same keys:

- the host (receiving SCD) derives from the Base Derivation Key the device's initial key and
  then the transaction key of any KSN: `derive_initial_key`, `host_transaction_key`,
  `transaction_key_from_initial_key`;
- the terminal (transaction-originating SCD) keeps only the intermediate derivation key
  registers, never the initial key after loading nor a used transaction key: `TerminalDukpt`.

Both derive the working keys (PIN, MAC, data encryption) of one transaction from its
transaction key with `working_key`.

Keys are `bytes`. They never appear in a repr, a log line or an exception message. Python
cannot wipe memory: a used register is dropped, not erased. `TerminalDukpt.state()` holds keys
in clear and the caller must encrypt it at rest.
"""

from __future__ import annotations

from enum import IntEnum

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KSN_LENGTH = 12
INITIAL_KEY_ID_LENGTH = 8
BDK_ID_LENGTH = 4
COUNTER_LENGTH = 4
# 6.1: 32 intermediate derivation key registers, one per transaction counter bit.
REGISTER_COUNT = 32
# 6.1: a transaction counter never has more than 16 "one" bits.
MAX_ONE_BITS = 16
COUNTER_LIMIT = 1 << (8 * COUNTER_LENGTH)

_AES_BLOCK = 16
# 6.3.2 tables 2 and 3: derivation data version.
_DERIVATION_DATA_VERSION = 0x01
_STATE_VERSION = 0x01


class DukptError(Exception):
    """Unusable DUKPT input (lengths, key types, counters, a damaged state). The message never
    holds a key."""


class DukptExhaustedError(DukptError):
    """The terminal used its last transaction counter (6.1): it needs a new initial key."""


class KeyType(IntEnum):
    """Key types and their algorithm indicators (6.2.1; 6.3.2 tables 2 and 3).

    HMAC keys (indicator 0005) are left out: X9 publishes no vector for them, and their
    length is carried apart from the indicator.
    """

    TDEA2 = 0x0000
    TDEA3 = 0x0001
    AES128 = 0x0002
    AES192 = 0x0003
    AES256 = 0x0004

    @property
    def key_length(self) -> int:
        """Key length in bytes (6.2.2)."""
        return _KEY_BITS[self] // 8

    @property
    def derives(self) -> bool:
        """Only AES keys derive other keys (6.3.1)."""
        return self in (KeyType.AES128, KeyType.AES192, KeyType.AES256)


# 6.2.2: key length in bits, written into the derivation data.
_KEY_BITS = {
    KeyType.TDEA2: 128,
    KeyType.TDEA3: 192,
    KeyType.AES128: 128,
    KeyType.AES192: 192,
    KeyType.AES256: 256,
}
# 6.1.3: a working key is no stronger than the key it is derived from. Security strengths in
# bits (NIST SP 800-57 Part 1, table 2): 2TDEA 80, 3TDEA 112.
_STRENGTH = {
    KeyType.TDEA2: 80,
    KeyType.TDEA3: 112,
    KeyType.AES128: 128,
    KeyType.AES192: 192,
    KeyType.AES256: 256,
}
_AES_BY_LENGTH = {kt.key_length: kt for kt in KeyType if kt.derives}


class KeyUsage(IntEnum):
    """Key usage indicators (6.3.2 tables 2 and 3)."""

    KEY_ENCRYPTION_KEY = 0x0002
    PIN_ENCRYPTION = 0x1000
    MAC_GENERATION = 0x2000
    MAC_VERIFICATION = 0x2001
    MAC_BOTH_WAYS = 0x2002
    DATA_ENCRYPTION_ENCRYPT = 0x3000
    DATA_ENCRYPTION_DECRYPT = 0x3001
    DATA_ENCRYPTION_BOTH_WAYS = 0x3002
    KEY_DERIVATION = 0x8000
    KEY_DERIVATION_INITIAL_KEY = 0x8001


def split_ksn(ksn: bytes) -> tuple[bytes, int]:
    """The initial key ID (8 bytes) and the transaction counter of a 12-byte KSN."""
    _require_bytes(ksn, KSN_LENGTH, "KSN")
    return ksn[:INITIAL_KEY_ID_LENGTH], int.from_bytes(ksn[INITIAL_KEY_ID_LENGTH:], "big")


def format_ksn(ksn: bytes) -> str:
    """The KSN for logs: BDK ID, derivation ID and counter in hex ("12345678 90123456 00000001")."""
    _require_bytes(ksn, KSN_LENGTH, "KSN")
    text = ksn.hex().upper()
    return f"{text[:8]} {text[8:16]} {text[16:]}"


def is_reachable_counter(counter: int) -> bool:
    """A counter a terminal can use: 1 to 2^32 - 1 with at most 16 one bits (6.1)."""
    return 0 < counter < COUNTER_LIMIT and counter.bit_count() <= MAX_ONE_BITS


def derive_initial_key(bdk: bytes, initial_key_id: bytes, key_type: KeyType = KeyType.AES128) -> bytes:
    """The initial key of the device `initial_key_id` (BDK ID || derivation ID, 8 bytes), derived
    from the Base Derivation Key: usage 8001 and the whole initial key ID (6.3.3)."""
    key_type = _derivation_key_type(key_type)
    _require_bytes(bdk, key_type.key_length, "BDK")
    _require_bytes(initial_key_id, INITIAL_KEY_ID_LENGTH, "initial key ID")
    return _derive_key(bdk, KeyUsage.KEY_DERIVATION_INITIAL_KEY, key_type, initial_key_id)


def transaction_key_from_initial_key(initial_key: bytes, ksn: bytes, key_type: KeyType = KeyType.AES128,
                                     *, allow_unreachable: bool = False) -> bytes:
    """The transaction key of `ksn`, derived from the device's initial key (6.4): from the most
    significant counter bit down, each set bit derives the next intermediate key.

    A counter no terminal uses (0, or more than 16 one bits, 6.1) is refused unless
    `allow_unreachable`, which exists for the standard's own vectors of such counters.
    """
    key_type = _derivation_key_type(key_type)
    _require_bytes(initial_key, key_type.key_length, "initial key")
    initial_key_id, counter = split_ksn(ksn)
    if not allow_unreachable and not is_reachable_counter(counter):
        raise DukptError(f"KSN counter {counter:08X} is never used by a terminal (X9.24-3 6.1)")
    key = initial_key
    walked = 0
    for bit in range(REGISTER_COUNT - 1, -1, -1):
        if counter >> bit & 1:
            walked |= 1 << bit
            key = _intermediate_key(key, key_type, initial_key_id, walked)
    return key


def host_transaction_key(bdk: bytes, ksn: bytes, key_type: KeyType = KeyType.AES128) -> bytes:
    """The transaction key the host derives from its BDK for a 12-byte KSN (6.3.3, 6.4)."""
    initial_key_id, _ = split_ksn(ksn)
    initial_key = derive_initial_key(bdk, initial_key_id, key_type)
    return transaction_key_from_initial_key(initial_key, ksn, key_type)


def working_key(transaction_key: bytes, ksn: bytes, usage: KeyUsage, key_type: KeyType) -> bytes:
    """The working key for `usage` of the transaction `ksn` ("derive working key", 6.3.3): the
    derivation data carry the usage, the working key's algorithm and length, the derivation ID
    and the counter. A working key is never stronger than the transaction key (6.1.3)."""
    if not isinstance(transaction_key, bytes) or len(transaction_key) not in _AES_BY_LENGTH:
        raise DukptError("transaction key must be an AES key of 16, 24 or 32 bytes")
    derivation_type = _AES_BY_LENGTH[len(transaction_key)]
    usage = _usage(usage)
    if usage is KeyUsage.KEY_DERIVATION_INITIAL_KEY:
        raise DukptError("usage 8001 derives initial keys only, not working keys (X9.24-3 6.3.3)")
    key_type = _key_type(key_type)
    if _STRENGTH[key_type] > _STRENGTH[derivation_type]:
        raise DukptError(f"a {key_type.name} working key is stronger than its {derivation_type.name} "
                         "transaction key (X9.24-3 6.1.3)")
    initial_key_id, counter = split_ksn(ksn)
    return _derive_key(transaction_key, usage, key_type, _counter_data(initial_key_id, counter))


class TerminalDukpt:
    """The terminal side: the intermediate derivation key registers, the initial key ID and the
    transaction counter ("Load Initial Key", "Generate Working Keys", "Update State for Next
    Transaction", X9.24-3-2017 section 6).

    Register i holds the key of the next counter that has bit i as its lowest set bit and the
    current counter's bits above i. Build one with `load` (initial key) or `from_state`. Persist
    `state()` after each `next()`, before the key leaves the device, so a power cut never
    reuses a counter.
    """

    __slots__ = ("_counter", "_initial_key_id", "_key_type", "_registers")

    def __init__(self, key_type: KeyType, initial_key_id: bytes, counter: int,
                 registers: list[bytes | None]) -> None:
        """Internal: use `load` or `from_state`, which check what they are given."""
        self._key_type = key_type
        self._initial_key_id = initial_key_id
        self._counter = counter
        self._registers = registers

    @classmethod
    def load(cls, initial_key: bytes, initial_key_id: bytes,
             key_type: KeyType = KeyType.AES128) -> TerminalDukpt:
        """Load Initial Key: each register i gets the key of counter 2^i, derived from the initial
        key, which is then dropped; the first counter is 1."""
        key_type = _derivation_key_type(key_type)
        _require_bytes(initial_key, key_type.key_length, "initial key")
        _require_bytes(initial_key_id, INITIAL_KEY_ID_LENGTH, "initial key ID")
        registers: list[bytes | None] = [
            _intermediate_key(initial_key, key_type, initial_key_id, 1 << bit)
            for bit in range(REGISTER_COUNT)
        ]
        return cls(key_type, initial_key_id, 1, registers)

    @property
    def key_type(self) -> KeyType:
        return self._key_type

    @property
    def initial_key_id(self) -> bytes:
        return self._initial_key_id

    @property
    def counter(self) -> int:
        """The counter the next transaction will use (2^32 once exhausted)."""
        return self._counter

    @property
    def exhausted(self) -> bool:
        return self._counter >= COUNTER_LIMIT

    def next(self) -> tuple[bytes, bytes]:
        """The KSN and transaction key of the next transaction; the state moves past them.

        Raises `DukptExhaustedError` once the counter space is used up.
        """
        counter = self._counter
        if counter >= COUNTER_LIMIT:
            raise DukptExhaustedError("the transaction counter is exhausted; load a new initial key")
        current = _lowest_bit(counter)
        key = self._registers[current]
        if key is None:
            raise DukptError("terminal state is inconsistent: the current register is empty")
        ksn = self._initial_key_id + counter.to_bytes(COUNTER_LENGTH, "big")
        # Update State for Next Transaction (6.1): children of this counter only while they keep
        # at most 16 one bits; otherwise skip every counter below the next carry.
        if counter.bit_count() < MAX_ONE_BITS:
            for bit in range(current - 1, -1, -1):
                self._registers[bit] = _intermediate_key(key, self._key_type, self._initial_key_id,
                                                         counter | 1 << bit)
            self._counter = counter + 1
        else:
            self._counter = counter + (1 << current)
        self._registers[current] = None
        return ksn, key

    def state(self) -> bytes:
        """The registers, counter and initial key ID as bytes (keys in clear: encrypt at rest).

        Layout: version (1) || algorithm indicator (2) || initial key ID (8) || counter (8) ||
        register-in-use bitmap (4, bit i = register i) || 32 registers (zeros when empty).
        """
        length = self._key_type.key_length
        bitmap = sum(1 << i for i, key in enumerate(self._registers) if key is not None)
        return b"".join([
            bytes([_STATE_VERSION]),
            int(self._key_type).to_bytes(2, "big"),
            self._initial_key_id,
            self._counter.to_bytes(8, "big"),
            bitmap.to_bytes(4, "big"),
            *(key if key is not None else bytes(length) for key in self._registers),
        ])

    @classmethod
    def from_state(cls, data: bytes) -> TerminalDukpt:
        """Rebuild a terminal from `state()`. Anything that `state()` could not have written
        raises `DukptError`."""
        header = 1 + 2 + INITIAL_KEY_ID_LENGTH + 8 + 4
        if not isinstance(data, bytes) or len(data) < header:
            raise DukptError("terminal state is truncated")
        if data[0] != _STATE_VERSION:
            raise DukptError(f"terminal state version {data[0]} is not supported")
        key_type = _derivation_key_type(int.from_bytes(data[1:3], "big"))
        length = key_type.key_length
        if len(data) != header + REGISTER_COUNT * length:
            raise DukptError(f"terminal state must be {header + REGISTER_COUNT * length} bytes "
                             f"for {key_type.name}")
        initial_key_id = data[3:11]
        counter = int.from_bytes(data[11:19], "big")
        bitmap = int.from_bytes(data[19:23], "big")
        if counter != COUNTER_LIMIT and not is_reachable_counter(counter):
            raise DukptError(f"terminal state counter {counter:X} is not one a terminal reaches")
        if bitmap != _registers_in_use(counter):
            raise DukptError("terminal state registers do not match its counter")
        registers: list[bytes | None] = []
        for i in range(REGISTER_COUNT):
            key = data[header + i * length:header + (i + 1) * length]
            if bitmap >> i & 1:
                registers.append(key)
            elif key != bytes(length):
                raise DukptError("terminal state holds a key in an empty register")
            else:
                registers.append(None)
        return cls(key_type, initial_key_id, counter, registers)

    def __repr__(self) -> str:
        if self.exhausted:
            where = "exhausted"
        else:
            counter = self._counter.to_bytes(COUNTER_LENGTH, "big")
            where = "next KSN " + format_ksn(self._initial_key_id + counter)
        return f"TerminalDukpt({self._key_type.name}, {where})"


def _registers_in_use(counter: int) -> int:
    """Bitmap of the registers the algorithm leaves filled before using `counter`: its lowest
    set bit (the current key) and every clear bit above it (keys of later counters)."""
    if counter >= COUNTER_LIMIT:
        return 0
    current = _lowest_bit(counter)
    above = ~counter & (COUNTER_LIMIT - 1) & ~((1 << (current + 1)) - 1)
    return above | 1 << current


def _lowest_bit(counter: int) -> int:
    return (counter & -counter).bit_length() - 1


def _counter_data(initial_key_id: bytes, counter: int) -> bytes:
    # 6.3.3: derivation ID (right half of the initial key ID) || transaction counter.
    return initial_key_id[BDK_ID_LENGTH:] + counter.to_bytes(COUNTER_LENGTH, "big")


def _intermediate_key(key: bytes, key_type: KeyType, initial_key_id: bytes, counter: int) -> bytes:
    # 6.4: intermediate derivation keys use usage 8000 and the derivation key's own type.
    return _derive_key(key, KeyUsage.KEY_DERIVATION, key_type, _counter_data(initial_key_id, counter))


def _derive_key(derivation_key: bytes, usage: KeyUsage, key_type: KeyType, data: bytes) -> bytes:
    """6.3.1: AES-ECB of the derivation data (6.3.2 tables 2 and 3) under the derivation key,
    one block per 128 bits of key, the block counter counting from 1; truncated to length."""
    bits = _KEY_BITS[key_type]
    tail = (int(usage).to_bytes(2, "big") + int(key_type).to_bytes(2, "big") + bits.to_bytes(2, "big")
            + data)
    encryptor = Cipher(algorithms.AES(derivation_key), modes.ECB()).encryptor()
    blocks = -(-bits // (8 * _AES_BLOCK))
    material = b"".join(
        encryptor.update(bytes([_DERIVATION_DATA_VERSION, block]) + tail) for block in range(1, blocks + 1)
    )
    encryptor.finalize()
    return material[:bits // 8]


def _require_bytes(value: object, length: int, what: str) -> None:
    if not isinstance(value, bytes):
        raise DukptError(f"{what} must be bytes")
    if len(value) != length:
        raise DukptError(f"{what} must be {length} bytes, not {len(value)}")


def _key_type(value: object) -> KeyType:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DukptError("key type must be a KeyType")
    try:
        return KeyType(value)
    except ValueError:
        raise DukptError(f"unknown key type {value}") from None


def _derivation_key_type(value: object) -> KeyType:
    key_type = _key_type(value)
    if not key_type.derives:
        raise DukptError(f"{key_type.name} cannot be a derivation key; only AES derives (X9.24-3 6.3.1)")
    return key_type


def _usage(value: object) -> KeyUsage:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DukptError("key usage must be a KeyUsage")
    try:
        return KeyUsage(value)
    except ValueError:
        raise DukptError(f"unknown key usage {value}") from None
