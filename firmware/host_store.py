"""What the host link must not forget across a power cut (ARCHITECTURE principle 4).

One SQLite database (WAL, synchronous FULL): the STAN counter and the DUKPT registers (sealed
with the device keystore). The reversals owed wait in the store-and-forward queue with the
payments they reverse (`firmware.payments`).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from firmware import durable
from firmware.keystore import Keystore, KeystoreError

MAX_STAN = 999_999  # ISO 8583 field 11: n 6

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS secret_state (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class HostStoreError(Exception):
    """The store cannot be opened or written."""


class HostStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = durable.connect(path)
            durable.make_durable(self._db)
            self._db.executescript(_SCHEMA)
            # The device keystore of the same state folder seals the secret state at rest.
            self._keystore = Keystore.open(path.parent)
        except (sqlite3.Error, OSError, KeystoreError) as exc:
            raise HostStoreError(f"cannot open {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """One statement in its own committed transaction; the rows it RETURNs."""
        try:
            return durable.commit(self._db, self._lock, sql, args)
        except sqlite3.Error as exc:
            raise HostStoreError(f"{self.path}: {exc}") from exc

    def next_stan(self) -> int:
        """The next System Trace Audit Number, 1..999999 then 1 again; committed before use."""
        rows = self._write(
            "INSERT INTO counter(name, value) VALUES('stan', 1) ON CONFLICT(name) DO UPDATE SET "
            f"value = CASE WHEN value >= {MAX_STAN} THEN 1 ELSE value + 1 END RETURNING value")
        return int(rows[0][0])

    def save_secret_state(self, name: str, value: bytes) -> None:
        """Opaque state (the DUKPT registers), sealed with AES-GCM under the device keystore's
        key, bound to its name: never on disk in clear."""
        sealed = self._keystore.seal(value, name.encode())
        self._write("INSERT INTO secret_state(name, value) VALUES(?, ?) ON CONFLICT(name) "
                    "DO UPDATE SET value = excluded.value", (name, sealed))

    def load_secret_state(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM secret_state WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        try:
            return self._keystore.open_sealed(bytes(row[0]), name.encode())
        except KeystoreError as exc:
            raise HostStoreError(f"{self.path}: the secret state {name!r} does not open: {exc}") from exc
