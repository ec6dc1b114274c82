"""The store-and-forward queue: offline approvals (0220 advices) and reversals waiting for the host.

One SQLite database, `saf.sqlite3` in the state folder (WAL, synchronous FULL, like
`firmware/host_store.py`): an item is committed before `add` returns. Its payload (the message
fields, which carry the PAN) is sealed with the device keystore, bound to the row's id, kind,
amount, currency and creation time, so no card data is on disk in clear and no row's figures can
be changed or its payload moved to another row unnoticed. Amount and currency stay clear for the
queue's totals.

An item is sent, then repeated (0221, 0421: ISO 8583 repeat) until the host answers; a decline
after the fact (the host refusing an advice for a transaction the card approved offline) is kept
for the merchant alert.

A database that SQLite finds damaged at open is renamed aside, never replaced silently.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from firmware import durable
from firmware.keystore import Keystore, KeystoreError

FILE_NAME = "saf.sqlite3"
Kind = Literal["advice", "reversal"]
KINDS: tuple[Kind, ...] = ("advice", "reversal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS item (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('advice', 'reversal')),
    sealed BLOB NOT NULL,          -- the payload JSON, sealed by the keystore
    amount INTEGER NOT NULL,       -- minor units
    currency INTEGER NOT NULL,     -- ISO 4217 numeric
    created TEXT NOT NULL,         -- UTC, ISO 8601
    attempts INTEGER NOT NULL DEFAULT 0,
    settled TEXT CHECK (settled IN ('answered', 'refused')),
    code TEXT,                     -- the host's response code (field 39)
    settled_at TEXT
);
"""


class SafQueueError(Exception):
    """The queue cannot be opened or written, or a call names an item it cannot act on."""


class SafDamagedError(SafQueueError):
    """The database file is damaged: `path` was renamed to `moved_to` (kept for recovery)."""

    def __init__(self, path: Path, moved_to: Path, reason: str) -> None:
        self.path = path
        self.moved_to = moved_to
        super().__init__(f"{path} is damaged ({reason}); kept aside as {moved_to}")


class SafItemError(SafQueueError):
    """One item's sealed payload does not open; the other items are unaffected."""

    def __init__(self, item_id: int, reason: str) -> None:
        self.item_id = item_id
        super().__init__(f"store-and-forward item {item_id}: {reason}")


def _utc_text(at: datetime.datetime, what: str) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise SafQueueError(f"{what} must carry a time zone")
    return at.astimezone(datetime.UTC).isoformat(timespec="microseconds")


def _associated(item_id: int, kind: str, amount: int, currency: int, created: str) -> bytes:
    return f"saf-item|{item_id}|{kind}|{amount}|{currency}|{created}".encode()


@dataclass(frozen=True)
class Item:
    id: int
    kind: Kind
    amount: int
    currency: int
    created: datetime.datetime
    attempts: int
    code: str | None = None  # the host's response code, once answered or refused
    settled_at: datetime.datetime | None = None
    _sealed: bytes = field(default=b"", repr=False, compare=False)
    _keystore: Keystore | None = field(default=None, repr=False, compare=False)

    @property
    def repeat(self) -> bool:
        """Sent before without an answer: the next one goes as a repeat (0221, 0421)."""
        return self.attempts > 0

    @property
    def payload(self) -> dict[str, Any]:
        """The stored message fields (with card data: never log them). `SafItemError` if the
        seal does not open."""
        if self._keystore is None:
            raise SafItemError(self.id, "no keystore to open the payload")
        created = _utc_text(self.created, "created")
        try:
            text = self._keystore.open_sealed(
                self._sealed, _associated(self.id, self.kind, self.amount, self.currency, created))
            payload = json.loads(text)
        except KeystoreError as exc:
            raise SafItemError(self.id, str(exc)) from None
        except ValueError:
            raise SafItemError(self.id, "the payload is not JSON") from None
        if not isinstance(payload, dict):
            raise SafItemError(self.id, "the payload is not a JSON object")
        return payload


@dataclass(frozen=True)
class SafStatus:
    count: int  # items waiting for the host, advices and reversals
    amount_per_currency: dict[int, int]  # offline approvals (advices) waiting, per ISO 4217 code
    oldest_created: datetime.datetime | None


_COLUMNS = "id, kind, sealed, amount, currency, created, attempts, code, settled_at"


class SafQueue:
    def __init__(self, path: Path, keystore: Keystore) -> None:
        self.path = path
        self._keystore = keystore
        self._lock = threading.Lock()
        try:
            self._db = durable.connect(path)
        except (sqlite3.Error, OSError) as exc:
            raise SafQueueError(f"cannot open {path}: {exc}") from exc
        try:
            durable.make_durable(self._db)
            # SQLite "quick_check": every page read once, b-tree and record structure verified
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise SafDamagedError(path, self._set_aside(), str(exc)) from None
        except sqlite3.Error as exc:
            self._db.close()
            raise SafQueueError(f"cannot open {path}: {exc}") from exc

    def _set_aside(self) -> Path:
        """Rename the damaged database (and its WAL, which belongs to it) out of the way."""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        try:
            self.path.rename(target)
            for suffix in ("-wal", "-shm"):
                companion = self.path.with_name(self.path.name + suffix)
                if companion.exists():
                    companion.rename(target.with_name(target.name + suffix))
        except OSError as exc:
            raise SafQueueError(f"{self.path} is damaged and cannot be renamed aside: {exc}") from exc
        return target

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        """One statement in its own committed transaction; the rows it RETURNs."""
        try:
            return durable.commit(self._db, self._lock, sql, args)
        except sqlite3.Error as exc:
            raise SafQueueError(f"{self.path}: {exc}") from exc

    def add(self, kind: Kind, payload: dict[str, Any], *, amount: int, currency: int,
            created: datetime.datetime) -> int:
        """Queue an item; it is on disk when this returns. The id orders the queue."""
        if kind not in KINDS:
            raise SafQueueError(f"unknown item kind {kind!r}")
        if type(amount) is not int or amount < 0:
            raise SafQueueError("the amount is a non-negative integer of minor units")
        if type(currency) is not int or not 0 < currency <= 999:
            raise SafQueueError("the currency is an ISO 4217 numeric code")
        created_text = _utc_text(created, "created")
        try:
            text = json.dumps(payload, sort_keys=True, allow_nan=False, separators=(",", ":"))
            plain = isinstance(payload, dict) and json.loads(text) == payload
        except (TypeError, ValueError):
            plain = False
        if not plain:
            raise SafQueueError("the payload must be a dict of plain JSON values (str keys, no NaN)")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    (item_id,) = self._db.execute(
                        "INSERT INTO item(kind, sealed, amount, currency, created) "
                        "VALUES(?, x'', ?, ?, ?) RETURNING id",
                        (kind, amount, currency, created_text)).fetchone()
                    sealed = self._keystore.seal(
                        text.encode(), _associated(item_id, kind, amount, currency, created_text))
                    self._db.execute("UPDATE item SET sealed = ? WHERE id = ?", (sealed, item_id))
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise SafQueueError(f"{self.path}: {exc}") from exc
        return int(item_id)

    def _item(self, row: tuple[Any, ...]) -> Item:
        item_id, kind, sealed, amount, currency, created, attempts, code, settled_at = row
        return Item(item_id, kind, amount, currency, datetime.datetime.fromisoformat(created), attempts,
                    code, datetime.datetime.fromisoformat(settled_at) if settled_at else None,
                    bytes(sealed), self._keystore)

    def _select(self, where: str, args: tuple[object, ...] = ()) -> list[Item]:
        try:
            with self._lock:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM item WHERE {where}", args).fetchall()
        except sqlite3.Error as exc:
            raise SafQueueError(f"{self.path}: {exc}") from exc
        return [self._item(row) for row in rows]

    def pending(self, limit: int = 100) -> list[Item]:
        """Items waiting for the host, oldest first (in the order they were added)."""
        return self._select("settled IS NULL ORDER BY id LIMIT ?", (limit,))

    def declined_after_the_fact(self) -> list[Item]:
        """Items the host refused after the card had approved: the merchant must be told."""
        return self._select("settled = 'refused' ORDER BY id")

    def _update_pending(self, item_id: int, sql: str, args: tuple[object, ...]) -> None:
        rows = self._write(f"UPDATE item SET {sql} WHERE id = ? AND settled IS NULL RETURNING id",
                           (*args, item_id))
        if not rows:
            raise SafQueueError(f"no pending store-and-forward item {item_id}")

    def mark_sent(self, item_id: int) -> None:
        """Sent once more; from now on the item goes as a repeat."""
        self._update_pending(item_id, "attempts = attempts + 1", ())

    def mark_answered(self, item_id: int, response_code: str, at: datetime.datetime) -> None:
        self._update_pending(item_id, "settled = 'answered', code = ?, settled_at = ?",
                             (response_code, _utc_text(at, "at")))

    def mark_refused(self, item_id: int, code: str, at: datetime.datetime) -> None:
        self._update_pending(item_id, "settled = 'refused', code = ?, settled_at = ?",
                             (code, _utc_text(at, "at")))

    def status(self) -> SafStatus:
        try:
            with self._lock:
                count, oldest = self._db.execute(
                    "SELECT count(*), min(created) FROM item WHERE settled IS NULL").fetchone()
                amounts = self._db.execute(
                    "SELECT currency, sum(amount) FROM item WHERE settled IS NULL AND kind = 'advice' "
                    "GROUP BY currency ORDER BY currency").fetchall()
        except sqlite3.Error as exc:
            raise SafQueueError(f"{self.path}: {exc}") from exc
        return SafStatus(int(count), {int(c): int(a) for c, a in amounts},
                         datetime.datetime.fromisoformat(oldest) if oldest else None)
