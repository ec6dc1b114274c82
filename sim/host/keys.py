"""The TEST keys of the simulated host and of the terminals under test, and the keys of one
request: AES DUKPT (ANSI X9.24-3-2017) working keys for the MAC (docs/host-protocol.md, MAC) and
the PIN block (ISO 9564-1 format 4).

`test_keys.toml` holds the host's Base Derivation Key, `terminal_test_keys.toml` the initial key a
terminal under test loads; both are TEST KEYS (see their headers) shipped with `sim.host`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from firmware.dukpt import (
    BDK_ID_LENGTH,
    INITIAL_KEY_ID_LENGTH,
    DukptError,
    KeyType,
    KeyUsage,
    TerminalDukpt,
    host_transaction_key,
    split_ksn,
    working_key,
)
from firmware.iso8583_spec import MAC_LENGTH
from firmware.messages import MacFunction

HOST_KEYS_FILE = Path(__file__).with_name("test_keys.toml")
TERMINAL_KEYS_FILE = Path(__file__).with_name("terminal_test_keys.toml")
_AES128 = 16


class KeyFileError(Exception):
    """A key file that cannot be read: names the file and the key, never a key value."""


def _hex(path: Path, data: dict[str, object], name: str, length: int) -> bytes:
    value = data.get(name)
    if not isinstance(value, str):
        raise KeyFileError(f"{path}: {name}: missing or not a string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise KeyFileError(f"{path}: {name}: not hexadecimal") from None
    if len(raw) != length:
        raise KeyFileError(f"{path}: {name}: {len(raw)} bytes, {length} expected")
    return raw


def _read(path: Path, names: set[str]) -> dict[str, object]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError:
        raise KeyFileError(f"{path}: not TOML") from None
    unknown = sorted(set(data) - names)
    if unknown:
        raise KeyFileError(f"{path}: {unknown[0]}: unknown key")
    return data


@dataclass(frozen=True)
class HostKeys:
    """The host's AES-128 BDK (TEST KEY) and its BDK ID; derives the keys of any request."""

    bdk: bytes = field(repr=False)
    bdk_id: bytes

    def transaction_key(self, ksn: bytes) -> bytes:
        """X9.24-3-2017, 6.3.3 and 6.4. `DukptError` for a KSN of another BDK or a counter no
        terminal uses."""
        initial_key_id, _ = split_ksn(ksn)
        if initial_key_id[:BDK_ID_LENGTH] != self.bdk_id:
            raise DukptError("the KSN names another BDK")
        return host_transaction_key(self.bdk, ksn, KeyType.AES128)

    def request_keys(self, ksn: bytes) -> RequestKeys:
        return RequestKeys.of(self.transaction_key(ksn), ksn)


@dataclass(frozen=True)
class TerminalKeys:
    """A terminal's AES-128 initial key (TEST KEY) and initial key ID (BDK ID || derivation ID)."""

    initial_key: bytes = field(repr=False)
    initial_key_id: bytes

    def dukpt(self) -> TerminalDukpt:
        """Fresh terminal registers ("Load Initial Key", X9.24-3-2017 section 6)."""
        return TerminalDukpt.load(self.initial_key, self.initial_key_id, KeyType.AES128)


def load_host_keys(path: Path = HOST_KEYS_FILE) -> HostKeys:
    data = _read(path, {"bdk", "bdk_id"})
    return HostKeys(_hex(path, data, "bdk", _AES128), _hex(path, data, "bdk_id", BDK_ID_LENGTH))


def load_terminal_keys(path: Path = TERMINAL_KEYS_FILE) -> TerminalKeys:
    data = _read(path, {"initial_key", "initial_key_id"})
    return TerminalKeys(_hex(path, data, "initial_key", _AES128),
                        _hex(path, data, "initial_key_id", INITIAL_KEY_ID_LENGTH))


def cmac_8(key: bytes) -> MacFunction:
    """AES-CMAC (NIST SP 800-38B) truncated to its leftmost 8 bytes, as docs/host-protocol.md
    (MAC) specifies."""

    def mac(data: bytes) -> bytes:
        cmac = CMAC(algorithms.AES(key))
        cmac.update(data)
        return cmac.finalize()[:MAC_LENGTH]

    return mac


@dataclass(frozen=True)
class RequestKeys:
    """The working keys of one transaction key (X9.24-3-2017, 6.3.3): the terminal MACs with
    usage 2000, the host answers with 2001, the PIN block uses 1000."""

    ksn: bytes
    request_mac: MacFunction = field(repr=False)
    response_mac: MacFunction = field(repr=False)
    pin_key: bytes = field(repr=False)

    @classmethod
    def of(cls, transaction_key: bytes, ksn: bytes) -> RequestKeys:
        def key(usage: KeyUsage) -> bytes:
            return working_key(transaction_key, ksn, usage, KeyType.AES128)

        return cls(ksn, cmac_8(key(KeyUsage.MAC_GENERATION)), cmac_8(key(KeyUsage.MAC_VERIFICATION)),
                   key(KeyUsage.PIN_ENCRYPTION))
