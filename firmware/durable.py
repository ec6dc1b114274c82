"""What a power cut must not lose (ARCHITECTURE principle 4): SQLite with a WAL journal,
`synchronous=FULL`, one statement per committed transaction; files replaced whole and synced,
with the folder that names them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any


def connect(path: Path) -> sqlite3.Connection:
    """An autocommit connection usable from any thread (callers serialize with a lock).
    Raises sqlite3.Error or OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def make_durable(db: sqlite3.Connection) -> None:
    """WAL, and every commit synced to disk before it returns (SQLite "PRAGMA synchronous")."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")


def commit(db: sqlite3.Connection, lock: threading.Lock | threading.RLock, sql: str,
           args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """One statement in its own committed transaction; the rows it RETURNs (read before the
    COMMIT, which SQLite requires). Raises sqlite3.Error, the transaction rolled back."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(sql, args).fetchall()
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return rows


def fsync_path(path: Path) -> None:
    """Sync a file, or a folder (so that the names it holds survive a power cut)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` whole: written beside it, synced, renamed over it, the folder
    synced. A power cut leaves the old file or the new one. Raises OSError."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    fsync_path(path.parent)


def read_json(path: Path, what: str, log: logging.Logger) -> Any:
    """The JSON value of `path`, or None when there is none; a file that cannot be read or is
    not JSON is logged (with `what` falls back) and taken as none: a state file of the merchant's
    or the fleet's never stops the terminal."""
    try:
        return json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("%s cannot be read (%s): %s", path, exc, what)
        return None


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read a block at a time (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while block := data.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
