"""The terminal's DUKPT keys for the host link (firmware/terminal_keys.py).

TEST KEYS: the ANSI X9.24-3-2017 Supplement's AES-128 BDK and initial key (the simulator's
sim/host/*.toml), and made-up keys.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from firmware.dukpt import KeyType, KeyUsage, TerminalDukpt, host_transaction_key, split_ksn, working_key
from firmware.host_store import HostStore
from firmware.terminal_keys import (
    STATE_NAME,
    KeySet,
    MemorySecretStore,
    TerminalKeys,
    TerminalKeysError,
    aes_cmac_8,
)

ROOT = Path(__file__).resolve().parent.parent
TERMINAL_KEYS = ROOT / "sim" / "host" / "terminal_test_keys.toml"
BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")  # TEST KEY (X9.24-3-2017 Supplement)
INITIAL_KEY_ID = bytes.fromhex("1234567890123456")


def test_first_keys_are_the_published_counter_one_keys() -> None:
    # X9.24-3-2017 Supplement, AES-128 BDK, KSN 123456789012345600000001 (tests/test_dukpt.py)
    keys = TerminalKeys.open(MemorySecretStore(), TERMINAL_KEYS).begin()
    assert keys.ksn == bytes.fromhex("123456789012345600000001")
    assert keys.pin_key == bytes.fromhex("AF8CB133A78F8DC2D1359F18527593FB")
    assert keys.mac_key == bytes.fromhex("A2DC23DE6FDE0824A2BC321E08E4B8B7")  # usage 2000
    assert keys.response_mac_key == bytes.fromhex("DBB463945B286C07CD3AD82EE96FD9C9")  # usage 2001


def test_each_begin_gives_the_hosts_keys_of_the_next_ksn() -> None:
    terminal = TerminalKeys.open(MemorySecretStore(), TERMINAL_KEYS)
    for counter in range(1, 6):
        keys = terminal.begin()
        assert split_ksn(keys.ksn) == (INITIAL_KEY_ID, counter)
        transaction_key = host_transaction_key(BDK, keys.ksn)
        for usage, key in ((KeyUsage.PIN_ENCRYPTION, keys.pin_key), (KeyUsage.MAC_GENERATION, keys.mac_key),
                           (KeyUsage.MAC_VERIFICATION, keys.response_mac_key)):
            assert working_key(transaction_key, keys.ksn, usage, KeyType.AES128) == key
        assert terminal.current() is keys


def test_aes_cmac_8_is_the_rfc_4493_mac_truncated() -> None:
    # RFC 4493, 4, Example 2 (16-byte message): 070a16b4 6b4d4144 f79bdd9d d04a287c
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    message, mac = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a"), bytes.fromhex("070a16b46b4d4144")
    assert aes_cmac_8(key, message) == mac
    keys = KeySet(ksn=bytes(12), pin_key=bytes(16), mac_key=key, response_mac_key=bytes(16))
    assert keys.request_mac(message) == mac
    assert keys.response_mac(b"") != keys.request_mac(b"")


class WatchingStore(MemorySecretStore):
    """Remembers the counter saved each time, to compare with the KSN handed out after."""

    def __init__(self) -> None:
        super().__init__()
        self.saved_counters: list[int] = []

    def save_secret_state(self, name: str, value: bytes) -> None:
        super().save_secret_state(name, value)
        self.saved_counters.append(TerminalDukpt.from_state(value).counter)


def test_the_state_past_the_ksn_is_saved_before_the_keys_are_given() -> None:
    store = WatchingStore()
    terminal = TerminalKeys.open(store, TERMINAL_KEYS)
    assert store.saved_counters == [1]  # loaded and saved at once
    keys = terminal.begin()
    assert store.saved_counters == [1, 2] and split_ksn(keys.ksn)[1] == 1


def test_registers_come_from_the_store_after_a_restart(tmp_path: Path) -> None:
    store = HostStore(tmp_path / "host.sqlite3")
    used = [TerminalKeys.open(store, TERMINAL_KEYS).begin().ksn]
    used.append(TerminalKeys.open(store, TERMINAL_KEYS).begin().ksn)  # the initial key is not loaded again
    store.close()
    store = HostStore(tmp_path / "host.sqlite3")
    terminal = TerminalKeys.open(store, None)  # the key file may be gone after provisioning
    used.append(terminal.begin().ksn)
    store.close()
    assert [split_ksn(ksn)[1] for ksn in used] == [1, 2, 3]


def test_a_new_initial_key_id_loads_the_new_key(tmp_path: Path) -> None:
    store = MemorySecretStore()
    TerminalKeys.open(store, TERMINAL_KEYS).begin()
    other = tmp_path / "other.toml"
    other.write_text('initial_key = "' + "22" * 16 + '"\ninitial_key_id = "1234567800000002"\n')
    keys = TerminalKeys.open(store, other).begin()
    assert keys.ksn == bytes.fromhex("123456780000000200000001")
    saved = store.load_secret_state(STATE_NAME)
    assert saved is not None
    assert TerminalDukpt.from_state(saved).initial_key_id == bytes.fromhex("1234567800000002")


def test_no_keys_damaged_state_and_nothing_in_progress(tmp_path: Path) -> None:
    with pytest.raises(TerminalKeysError, match="initial_key_file"):
        TerminalKeys.open(MemorySecretStore(), None)
    with pytest.raises(TerminalKeysError, match="cannot read"):
        TerminalKeys.open(MemorySecretStore(), tmp_path / "absent.toml")
    damaged = MemorySecretStore()
    damaged.save_secret_state(STATE_NAME, b"\x01\x00")
    with pytest.raises(TerminalKeysError, match="damaged"):
        TerminalKeys.open(damaged, TERMINAL_KEYS)
    with pytest.raises(TerminalKeysError, match="in progress"):
        TerminalKeys.open(MemorySecretStore(), TERMINAL_KEYS).current()


def test_concurrent_begins_never_share_a_ksn() -> None:
    terminal = TerminalKeys.open(MemorySecretStore(), TERMINAL_KEYS)
    seen: list[bytes] = []

    def work() -> None:
        for _ in range(20):
            seen.append(terminal.begin().ksn)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(split_ksn(ksn)[1] for ksn in seen) == list(range(1, 81))


def test_keys_are_never_shown() -> None:
    terminal = TerminalKeys.open(MemorySecretStore(), TERMINAL_KEYS)
    keys = terminal.begin()
    for text in (repr(keys), str(keys), repr(terminal)):
        for key in (keys.pin_key, keys.mac_key, keys.response_mac_key):
            assert key.hex() not in text.lower()
    assert "12345678 90123456 00000001" in repr(keys)
