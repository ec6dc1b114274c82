"""The PIN pad's ISO 9564-1 format 4 block under AES DUKPT PIN keys (firmware/pin_pad.py).

TEST KEYS: every key in this file is a made-up test key or the published ANSI X9.24-3-2017
Supplement test BDK.
"""

from __future__ import annotations

import pickle

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from psec.pinblock import decipher_pinblock_iso_4

from emv.sensitive import Sensitive
from firmware.dukpt import (
    KeyType,
    KeyUsage,
    TerminalDukpt,
    derive_initial_key,
    host_transaction_key,
    split_ksn,
    working_key,
)
from firmware.pin_pad import DukptPinPad, PinPadError, format4_pin_block
from firmware.terminal_keys import STATE_NAME, MemorySecretStore, TerminalKeys

BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")  # TEST KEY (X9.24-3-2017 Supplement)
INITIAL_KEY_ID = bytes.fromhex("1234567890123456")
KEY_128 = bytes.fromhex("00112233445566778899AABBCCDDEEFF")  # TEST KEY
KEY_192 = bytes(range(24))  # TEST KEY
KEY_256 = bytes(range(32, 64))  # TEST KEY
PAN = "4761739001010010"


def _aes_decrypt(key: bytes, block: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return decryptor.update(block) + decryptor.finalize()


def _format4_pin(key: bytes, block: bytes, pan: str) -> str:
    """ISO 9564-1:2017, 9.4.2 decoding written out: AES-D, XOR the PAN field, AES-D again;
    the plain PIN field is '4' | N | PIN | 'A' fill up to 16 nibbles | 16 random nibbles."""
    # PAN field: M = PAN length - 12 (0 below 12 digits, PAN then left-padded with zeros),
    # the PAN, then zeros up to 32 nibbles.
    digits = pan if len(pan) >= 12 else pan.rjust(12, "0")
    pan_field = bytes.fromhex(f"{len(digits) - 12:X}{digits}".ljust(32, "0"))
    intermediate = bytes(a ^ b for a, b in zip(_aes_decrypt(key, block), pan_field, strict=True))
    plain = _aes_decrypt(key, intermediate).hex().upper()
    assert plain[0] == "4"
    length = int(plain[1], 16)
    assert set(plain[2 + length:16]) <= {"A"}
    return plain[2:2 + length]


@pytest.mark.parametrize("key", [KEY_128, KEY_192, KEY_256])
@pytest.mark.parametrize("pin", ["1234", "0000", "987654", "123456789012"])
def test_block_deciphers_back_to_the_pin(key: bytes, pin: str) -> None:
    block = format4_pin_block(key, Sensitive(pin, "PIN"), Sensitive(PAN, "PAN"))
    assert isinstance(block, Sensitive)
    raw = block.reveal()
    assert isinstance(raw, bytes) and len(raw) == 16
    assert decipher_pinblock_iso_4(key, raw, PAN) == pin
    assert _format4_pin(key, raw, PAN) == pin


def test_block_is_bound_to_the_pan_and_the_key() -> None:
    raw = format4_pin_block(KEY_128, Sensitive("1234", "PIN"), Sensitive(PAN, "PAN")).reveal()
    other_pan = "4761739001010028"
    other_key = bytes(16)
    for key, pan in ((KEY_128, other_pan), (other_key, PAN)):
        try:
            recovered = decipher_pinblock_iso_4(key, raw, pan)
        except ValueError:
            continue  # the plain field no longer decodes: as good as a different PIN
        assert recovered != "1234"


def test_blocks_of_the_same_pin_differ() -> None:
    pin, pan = Sensitive("1234", "PIN"), Sensitive(PAN, "PAN")
    blocks = {format4_pin_block(KEY_128, pin, pan).reveal() for _ in range(8)}
    assert len(blocks) == 8  # format 4 carries 8 random bytes


@settings(max_examples=50)
@given(st.text(alphabet="0123456789", min_size=4, max_size=12),
       st.text(alphabet="0123456789", min_size=8, max_size=19))
def test_any_pin_and_pan(pin: str, pan: str) -> None:
    raw = format4_pin_block(KEY_128, Sensitive(pin, "PIN"), Sensitive(pan, "PAN")).reveal()
    assert _format4_pin(KEY_128, raw, pan) == pin


@pytest.mark.parametrize("length", [0, 8, 15, 17, 23, 31, 33, 64])
def test_wrong_key_lengths_are_refused(length: int) -> None:
    key = bytes(range(length))
    with pytest.raises(PinPadError) as info:
        format4_pin_block(key, Sensitive("1234", "PIN"), Sensitive(PAN, "PAN"))
    if key:
        assert key.hex() not in str(info.value).lower()


@pytest.mark.parametrize("pin", ["123", "1234567890123", "", "12a4", "12 34", "١٢٣٤", "１２３４", "+123",
                                 "-1234", "12.4"])
def test_bad_pins_are_refused_without_showing_them(pin: str) -> None:
    with pytest.raises(PinPadError) as info:
        format4_pin_block(KEY_128, Sensitive(pin, "PIN"), Sensitive(PAN, "PAN"))
    if pin:
        assert pin not in str(info.value)
    assert PAN not in str(info.value)


def test_bad_pan_is_a_pin_pad_error() -> None:
    with pytest.raises(PinPadError) as info:
        format4_pin_block(KEY_128, Sensitive("1234", "PIN"), Sensitive("4761ABCD", "PAN"))
    assert "1234" not in str(info.value)


def test_block_value_is_not_shown() -> None:
    block = format4_pin_block(KEY_128, Sensitive("1234", "PIN"), Sensitive(PAN, "PAN"))
    raw = block.reveal()
    for text in (repr(block), str(block), f"{block}"):
        assert raw.hex() not in text.lower()
    with pytest.raises(TypeError):
        pickle.dumps(block)


# --- under DUKPT: one fresh KSN per PIN -------------------------------------------------------

def dukpt_pad(store: MemorySecretStore | None = None) -> tuple[DukptPinPad, MemorySecretStore]:
    store = store or MemorySecretStore()
    dukpt = TerminalDukpt.load(derive_initial_key(BDK, INITIAL_KEY_ID), INITIAL_KEY_ID)
    return DukptPinPad(TerminalKeys(store, dukpt)), store


def host_pin_key(ksn: bytes) -> bytes:
    """The PIN key the host derives from its BDK for `ksn` (X9.24-3-2017, 6.3.3 and 6.4)."""
    return working_key(host_transaction_key(BDK, ksn), ksn, KeyUsage.PIN_ENCRYPTION, KeyType.AES128)


def test_dukpt_block_deciphers_under_the_hosts_pin_key_of_its_ksn() -> None:
    pad, _ = dukpt_pad()
    for counter, pin in enumerate(("1234", "987654", "0000"), start=1):
        enciphered = pad.online_pin_block(Sensitive(pin, "PIN"), Sensitive(PAN, "PAN"))
        assert split_ksn(enciphered.key_serial) == (INITIAL_KEY_ID, counter)
        raw = enciphered.block.reveal()
        assert _format4_pin(host_pin_key(enciphered.key_serial), raw, PAN) == pin
        previous = enciphered.key_serial[:-4] + (counter - 1).to_bytes(4, "big")
        if counter > 1:  # the key of another KSN does not give the PIN back
            try:
                recovered = decipher_pinblock_iso_4(host_pin_key(previous), raw, PAN)
            except ValueError:
                continue
            assert recovered != pin


def test_first_pin_key_is_the_published_one() -> None:
    # X9.24-3-2017 Supplement, AES-128 BDK, counter 1: PIN encryption key (tests/test_dukpt.py)
    pad, _ = dukpt_pad()
    raw = pad.online_pin_block(Sensitive("1234", "PIN"), Sensitive(PAN, "PAN")).block.reveal()
    assert _format4_pin(bytes.fromhex("AF8CB133A78F8DC2D1359F18527593FB"), raw, PAN) == "1234"


def test_the_registers_are_saved_past_the_ksn_before_the_block_is_given() -> None:
    pad, store = dukpt_pad()
    enciphered = pad.online_pin_block(Sensitive("1234", "PIN"), Sensitive(PAN, "PAN"))
    saved = store.load_secret_state(STATE_NAME)
    assert saved is not None
    assert TerminalDukpt.from_state(saved).counter > split_ksn(enciphered.key_serial)[1]


def test_a_refused_pin_uses_no_ksn() -> None:
    pad, _ = dukpt_pad()
    with pytest.raises(PinPadError):
        pad.online_pin_block(Sensitive("12", "PIN"), Sensitive(PAN, "PAN"))
    enciphered = pad.online_pin_block(Sensitive("1234", "PIN"), Sensitive(PAN, "PAN"))
    assert split_ksn(enciphered.key_serial)[1] == 1


class FailingStore(MemorySecretStore):
    def save_secret_state(self, name: str, value: bytes) -> None:
        raise OSError("disk full")


def test_a_state_that_cannot_be_saved_gives_no_block() -> None:
    dukpt = TerminalDukpt.load(derive_initial_key(BDK, INITIAL_KEY_ID), INITIAL_KEY_ID)
    pad = DukptPinPad(TerminalKeys(FailingStore(), dukpt))
    with pytest.raises(PinPadError, match="DUKPT"):
        pad.online_pin_block(Sensitive("1234", "PIN"), Sensitive(PAN, "PAN"))


def test_repr_hides_the_keys() -> None:
    pad, _ = dukpt_pad()
    text = repr(pad)
    assert "1234567890123456" in text and "hidden" in text
    assert derive_initial_key(BDK, INITIAL_KEY_ID).hex().upper() not in text.upper()
