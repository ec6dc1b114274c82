"""The terminal's AES DUKPT keys for the acquirer link: one fresh set per message.

Each message the terminal sends to its host (docs/host-protocol.md, MAC) uses the working keys
of a new transaction key (ANSI X9.24-3-2017, 6.1): `TerminalKeys.begin` moves the registers to
the next KSN, commits them to the `HostStore` and only then hands out the `KeySet`, so a power
cut can never make the terminal use a KSN twice. An online PIN block and the MAC of the request
carrying it share one KeySet (`current`).

Working keys (6.3.3 "derive working key", of the transaction key's own type):

- PIN encryption, usage 1000: the ISO 9564-1 format 4 PIN block (`firmware.pin_pad`);
- MAC generation, usage 2000: the MAC of the terminal's request;
- MAC verification, usage 2001: the MAC of the host's answer under the same KSN.

The MAC is AES-CMAC (NIST SP 800-38B) truncated to its leftmost 8 bytes.

Keys are never shown: not in a repr, a log line or an exception message. The stored registers
are sealed at rest by `HostStore` with the device keystore (`firmware/keystore.py`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from firmware import dukpt
from firmware.config import ConfigError, load_initial_key
from firmware.dukpt import DukptError, KeyType, KeyUsage, TerminalDukpt
from firmware.host_store import HostStoreError
from firmware.iso8583_spec import MAC_LENGTH

log = logging.getLogger(__name__)

STATE_NAME = "dukpt"  # HostStore secret state holding `TerminalDukpt.state()`


class TerminalKeysError(Exception):
    """No key can be given: no initial key, a damaged or exhausted state, a state not saved."""


class SecretStore(Protocol):
    """Where the registers live between runs (`firmware.host_store.HostStore`)."""

    def save_secret_state(self, name: str, value: bytes) -> None: ...
    def load_secret_state(self, name: str) -> bytes | None: ...


class MemorySecretStore:
    """Registers kept in memory only: every run starts again from the initial key, so KSNs
    repeat across runs. For in-process tests and the bench, never for a terminal on a host."""

    def __init__(self) -> None:
        self._values: dict[str, bytes] = {}

    def save_secret_state(self, name: str, value: bytes) -> None:
        self._values[name] = value

    def load_secret_state(self, name: str) -> bytes | None:
        return self._values.get(name)

    def __repr__(self) -> str:
        return f"MemorySecretStore({sorted(self._values)})"


def aes_cmac_8(key: bytes, data: bytes) -> bytes:
    """AES-CMAC (NIST SP 800-38B) of `data`, its leftmost 8 bytes (docs/host-protocol.md, MAC)."""
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()[:MAC_LENGTH]


@dataclass(frozen=True, repr=False, eq=False)
class KeySet:
    """The working keys of one KSN. `request_mac` and `response_mac` are the MAC functions
    `firmware.messages.attach_mac` / `verify_mac` take."""

    ksn: bytes
    pin_key: bytes
    mac_key: bytes  # usage 2000: the terminal's messages
    response_mac_key: bytes  # usage 2001: the host's answers

    @classmethod
    def derive(cls, ksn: bytes, transaction_key: bytes) -> KeySet:
        """The working keys of `ksn` from its transaction key (X9.24-3-2017, 6.3.3); the terminal
        and the host (`dukpt.host_transaction_key`) derive the same."""
        key_type = {16: KeyType.AES128, 24: KeyType.AES192, 32: KeyType.AES256}.get(len(transaction_key))
        if key_type is None:
            raise TerminalKeysError("a transaction key is an AES key of 16, 24 or 32 bytes")
        try:
            return cls(ksn=ksn,
                       pin_key=dukpt.working_key(transaction_key, ksn, KeyUsage.PIN_ENCRYPTION, key_type),
                       mac_key=dukpt.working_key(transaction_key, ksn, KeyUsage.MAC_GENERATION, key_type),
                       response_mac_key=dukpt.working_key(transaction_key, ksn, KeyUsage.MAC_VERIFICATION,
                                                          key_type))
        except DukptError as exc:
            raise TerminalKeysError(f"working keys not derived: {exc}") from exc

    def request_mac(self, data: bytes) -> bytes:
        return aes_cmac_8(self.mac_key, data)

    def response_mac(self, data: bytes) -> bytes:
        return aes_cmac_8(self.response_mac_key, data)

    def __repr__(self) -> str:
        return f"KeySet(KSN {dukpt.format_ksn(self.ksn)}, keys hidden)"


class TerminalKeys:
    """The terminal's DUKPT registers, persisted in a `SecretStore` before any key is used.

    Thread-safe: the PIN pad (kernel thread) and the host client (event loop) both call `begin`.
    """

    def __init__(self, store: SecretStore, dukpt_state: TerminalDukpt) -> None:
        self._store = store
        self._dukpt = dukpt_state
        self._lock = threading.Lock()
        self._current: KeySet | None = None

    @classmethod
    def open(cls, store: SecretStore, initial_key_file: Path | None) -> TerminalKeys:
        """The registers from `store`; on the first start (nothing stored), or when the key file
        holds another initial key ID (a new key was loaded), from `initial_key_file`, whose
        registers are saved at once. The same initial key is never loaded twice: that would
        start its counter again and repeat KSNs."""
        saved = store.load_secret_state(STATE_NAME)
        stored: TerminalDukpt | None = None
        if saved is not None:
            try:
                stored = TerminalDukpt.from_state(saved)
            except DukptError as exc:
                raise TerminalKeysError(f"the stored DUKPT state is damaged: {exc}") from exc
        if initial_key_file is None:
            if stored is None:
                raise TerminalKeysError("no DUKPT keys: no stored state and no [dukpt] initial_key_file")
            return cls(store, stored)
        try:
            initial = load_initial_key(initial_key_file)
        except ConfigError as exc:
            if stored is not None:
                return cls(store, stored)
            raise TerminalKeysError(str(exc)) from exc
        if stored is not None and stored.initial_key_id == initial.key_id:
            return cls(store, stored)
        try:
            loaded = TerminalDukpt.load(initial.key, initial.key_id, initial.key_type)
        except DukptError as exc:
            raise TerminalKeysError(f"the initial key could not be loaded: {exc}") from exc
        log.info("DUKPT: initial key %s loaded", initial.key_id.hex().upper())
        keys = cls(store, loaded)
        keys._save()
        return keys

    @property
    def initial_key_id(self) -> bytes:
        return self._dukpt.initial_key_id

    def _save(self) -> None:
        try:
            self._store.save_secret_state(STATE_NAME, self._dukpt.state())
        except (HostStoreError, OSError) as exc:
            raise TerminalKeysError(f"the DUKPT state could not be saved: {type(exc).__name__}") from exc

    def begin(self) -> KeySet:
        """The keys of the next KSN. The registers have moved past it and are saved before this
        returns (X9.24-3-2017, 6.1: a KSN is used once)."""
        with self._lock:
            try:
                ksn, transaction_key = self._dukpt.next()
            except DukptError as exc:
                raise TerminalKeysError(str(exc)) from exc
            self._save()
            keys = KeySet.derive(ksn, transaction_key)
            self._current = keys
            return keys

    def current(self) -> KeySet:
        """The keys last given by `begin`: those of the transaction in progress."""
        with self._lock:
            if self._current is None:
                raise TerminalKeysError("no DUKPT transaction in progress")
            return self._current

    def __repr__(self) -> str:
        return f"TerminalKeys({self._dukpt!r})"
