"""The at-rest keystore: key file creation and permissions, AES-GCM sealing, tamper detection."""

from __future__ import annotations

import contextlib
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from firmware.keystore import KEY_BYTES, NONCE_BYTES, Keystore, KeystoreError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_use_creates_a_private_random_key(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        Keystore.open(tmp_path)
    finally:
        os.umask(old)
    key = tmp_path / "keystore" / "saf.key"
    assert _mode(key) == 0o600
    assert _mode(key.parent) == 0o700
    assert len(key.read_bytes()) == KEY_BYTES
    assert os.listdir(key.parent) == ["saf.key"]  # no temporary left behind
    other = tmp_path / "other"
    Keystore.open(other)
    assert (other / "keystore" / "saf.key").read_bytes() != key.read_bytes()


def test_the_key_is_kept_across_openings(tmp_path: Path) -> None:
    blob = Keystore.open(tmp_path).seal(b"offline approval", b"row 1")
    assert Keystore.open(tmp_path).open_sealed(blob, b"row 1") == b"offline approval"


def test_sealing_is_standard_aes_gcm_under_the_key_file(tmp_path: Path) -> None:
    # An independent decryption with the key from the file: version byte, then the nonce.
    blob = Keystore.open(tmp_path).seal(b"payload", b"ad")
    key = (tmp_path / "keystore" / "saf.key").read_bytes()
    assert blob[0] == 1
    nonce = blob[1:1 + NONCE_BYTES]
    assert AESGCM(key).decrypt(nonce, blob[1 + NONCE_BYTES:], b"\x01ad") == b"payload"


def test_each_seal_uses_a_new_nonce(tmp_path: Path) -> None:
    keystore = Keystore.open(tmp_path)
    blobs = {keystore.seal(b"same", b"same") for _ in range(20)}
    assert len(blobs) == 20


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o700])
def test_a_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    Keystore.open(tmp_path)
    key = tmp_path / "keystore" / "saf.key"
    key.chmod(mode)
    refused = pytest.raises(KeystoreError, match="group or others")
    with refused if mode & 0o077 else contextlib.nullcontext():
        Keystore.open(tmp_path)


def test_a_key_folder_open_to_others_is_refused(tmp_path: Path) -> None:
    Keystore.open(tmp_path)
    (tmp_path / "keystore").chmod(0o755)
    with pytest.raises(KeystoreError, match="group or others"):
        Keystore.open(tmp_path)


def test_a_key_of_the_wrong_size_or_a_symlink_is_refused(tmp_path: Path) -> None:
    Keystore.open(tmp_path)
    key = tmp_path / "keystore" / "saf.key"
    key.write_bytes(b"short")
    with pytest.raises(KeystoreError, match="256-bit"):
        Keystore.open(tmp_path)
    real = tmp_path / "real.key"
    real.write_bytes(bytes(KEY_BYTES))
    real.chmod(0o600)
    key.unlink()
    key.symlink_to(real)
    with pytest.raises(KeystoreError):
        Keystore.open(tmp_path)


def test_an_unusable_folder_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(KeystoreError):
        Keystore.open(tmp_path / "file")


def test_the_key_never_shows(tmp_path: Path) -> None:
    keystore = Keystore.open(tmp_path)
    key = (tmp_path / "keystore" / "saf.key").read_bytes()
    for text in (repr(keystore), str(keystore), f"{keystore}"):
        assert key.hex() not in text.lower() and "hidden" in text
    with pytest.raises(TypeError):
        pickle.dumps(keystore)
    with pytest.raises(AttributeError):
        keystore.__dict__  # noqa: B018 - no instance dict to dump the key from


def test_wrong_associated_data_or_another_key_fails(tmp_path: Path) -> None:
    keystore = Keystore.open(tmp_path / "a")
    blob = keystore.seal(b"advice", b"1|advice")
    with pytest.raises(KeystoreError):
        keystore.open_sealed(blob, b"2|advice")
    with pytest.raises(KeystoreError):
        Keystore.open(tmp_path / "b").open_sealed(blob, b"1|advice")


def test_short_or_unknown_version_blobs_fail(tmp_path: Path) -> None:
    keystore = Keystore.open(tmp_path)
    blob = keystore.seal(b"x", b"")
    with pytest.raises(KeystoreError, match="version"):
        keystore.open_sealed(b"\x02" + blob[1:], b"")
    with pytest.raises(KeystoreError, match="short"):
        keystore.open_sealed(blob[:20], b"")


@given(plaintext=st.binary(max_size=300), associated=st.binary(max_size=40), data=st.data())
def test_any_flipped_bit_is_detected(tmp_path_factory: pytest.TempPathFactory, plaintext: bytes,
                                     associated: bytes, data: st.DataObject) -> None:
    keystore = _shared_keystore(tmp_path_factory)
    blob = keystore.seal(plaintext, associated)
    assert keystore.open_sealed(blob, associated) == plaintext
    position = data.draw(st.integers(0, len(blob) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = bytearray(blob)
    tampered[position] ^= 1 << bit
    with pytest.raises(KeystoreError):
        keystore.open_sealed(bytes(tampered), associated)


_KEYSTORES: dict[int, Keystore] = {}


def _shared_keystore(factory: pytest.TempPathFactory) -> Keystore:
    if id(factory) not in _KEYSTORES:
        _KEYSTORES[id(factory)] = Keystore.open(factory.mktemp("keystore"))
    return _KEYSTORES[id(factory)]
