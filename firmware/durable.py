"""SQLite as the terminal keeps what a power cut must not lose (ARCHITECTURE principle 4):
WAL journal, `synchronous=FULL`, one statement per committed transaction."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


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
