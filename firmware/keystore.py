"""The device's key for data at rest (ARCHITECTURE principle 11: never on disk in clear).

One random 256-bit AES key in `<state folder>/keystore/saf.key`, created on first use, readable by
the owner only. `seal` and `open_sealed` are AES-256-GCM (NIST SP 800-38D) with a random 96-bit
nonce (SP 800-38D, 8.2.2) and a format version byte, both authenticated:

    version (1) | nonce (12) | ciphertext | tag (16)

The associated data binds a sealed blob to where it belongs (a queue row), so a blob moved to
another row fails to open.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from firmware import durable

KEY_FILE = "saf.key"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # SP 800-38D, 5.2.1.1: 96-bit IVs are the recommended length
TAG_BYTES = 16
VERSION = 1
_HEADER = bytes([VERSION])
_PRIVATE = stat.S_IRWXG | stat.S_IRWXO  # any permission for group or others


class KeystoreError(Exception):
    """The key cannot be created or trusted, or a sealed blob does not open (damaged, tampered,
    sealed under another key or for another place). Never carries key or plaintext bytes."""


def _check_private(st: os.stat_result, what: Path) -> None:
    if st.st_mode & _PRIVATE:
        raise KeystoreError(f"{what} is accessible to group or others "
                            f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it")
    if st.st_uid != os.geteuid():
        raise KeystoreError(f"{what} belongs to uid {st.st_uid}, not to this process's user")


def create_private_file(path: Path, data: bytes) -> None:
    """Write `data` beside `path`, then link it into place, owner-only: a crash leaves either no
    file or a whole one, and two processes racing on first use end up with the same file."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(temporary, path)
    finally:
        temporary.unlink()
    durable.fsync_path(path.parent)


def read_private_file(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of an owner-only regular file (`KeystoreError` otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeystoreError(f"{path} is not a regular file")
        _check_private(st, path)
        return os.read(fd, limit)
    finally:
        os.close(fd)


def private_folder(folder: Path) -> Path:
    """`<folder>/keystore`, created owner-only and checked to be so."""
    keys = folder / "keystore"
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        keys.mkdir(mode=0o700)
        os.chmod(keys, 0o700)  # whatever the umask
    st = os.stat(keys, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        raise KeystoreError(f"{keys} is not a folder")
    _check_private(st, keys)
    return keys


class Keystore:
    __slots__ = ("_aead", "path")

    def __init__(self, key: bytes, path: Path) -> None:
        if len(key) != KEY_BYTES:
            raise KeystoreError(f"a keystore key is {KEY_BYTES * 8} bits")
        self._aead = AESGCM(key)
        self.path = path

    @classmethod
    def open(cls, folder: Path) -> Keystore:
        """The keystore of the state `folder`; its key is created on first use."""
        keys = folder / "keystore"
        path = keys / KEY_FILE
        try:
            private_folder(folder)
            if not os.path.lexists(path):
                create_private_file(path, secrets.token_bytes(KEY_BYTES))
            key = read_private_file(path, KEY_BYTES + 1)
            if len(key) != KEY_BYTES:
                raise KeystoreError(f"{path} does not hold a {KEY_BYTES * 8}-bit key")
            return cls(key, path)
        except OSError as exc:
            raise KeystoreError(f"cannot use the key in {keys}: {exc.strerror or exc}") from None

    def __repr__(self) -> str:
        return f"Keystore(path={str(self.path)!r}, key=<hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> object:
        raise TypeError("a keystore is not pickled")

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return _HEADER + nonce + self._aead.encrypt(nonce, plaintext, _HEADER + associated)

    def open_sealed(self, blob: bytes, associated: bytes) -> bytes:
        if len(blob) < 1 + NONCE_BYTES + TAG_BYTES:
            raise KeystoreError(f"sealed data too short ({len(blob)} bytes)")
        if blob[0] != VERSION:
            raise KeystoreError(f"sealed data of unknown version {blob[0]}")
        nonce = blob[1:1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[1 + NONCE_BYTES:], _HEADER + associated)
        except InvalidTag:
            raise KeystoreError("sealed data fails authentication (damaged, tampered with, "
                                "or sealed under another key or for another place)") from None
