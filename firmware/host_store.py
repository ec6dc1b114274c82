"""What the host link must not forget across a power cut (ARCHITECTURE principle 4).

One SQLite database (WAL, synchronous FULL): the STAN counter, the DUKPT registers (sealed
with the device keystore) and the reversals owed to the host. A reversal is written and
committed *before* the terminal does anything else after an authorization went unanswered,
then sent, then repeated (0401) until the host acknowledges it. Stored reversals identify the
original message (MTI, STAN, transmission date and time, amount, currency) and carry no card
data.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from firmware import durable
from firmware.keystore import Keystore, KeystoreError

MAX_STAN = 999_999  # ISO 8583 field 11: n 6

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS secret_state (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS reversal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    original TEXT NOT NULL,        -- JSON: what identifies the original message, no card data
    created TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    acknowledged TEXT              -- when the host answered 0410
);
"""


class HostStoreError(Exception):
    """The store cannot be opened or written."""


@dataclass(frozen=True)
class Reversal:
    id: int
    original: dict[str, str | int]
    attempts: int

    @property
    def repeat(self) -> bool:
        """Sent before without an answer: the next one goes as 0401 (ISO 8583 repeat)."""
        return self.attempts > 0


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

    def record_reversal(self, original: dict[str, str | int], created: str) -> Reversal:
        rows = self._write("INSERT INTO reversal(original, created) VALUES(?, ?) RETURNING id",
                           (json.dumps(original, sort_keys=True), created))
        return Reversal(int(rows[0][0]), original, 0)

    def pending_reversals(self) -> list[Reversal]:
        rows = self._db.execute(
            "SELECT id, original, attempts FROM reversal WHERE acknowledged IS NULL ORDER BY id").fetchall()
        return [Reversal(row[0], json.loads(row[1]), row[2]) for row in rows]

    def reversal_attempted(self, reversal_id: int) -> None:
        self._write("UPDATE reversal SET attempts = attempts + 1 WHERE id = ?", (reversal_id,))

    def reversal_acknowledged(self, reversal_id: int, when: str) -> None:
        self._write("UPDATE reversal SET acknowledged = ? WHERE id = ? AND acknowledged IS NULL",
                    (when, reversal_id))
