"""The store-and-forward queue: offline approvals (0220 advices) and reversals waiting for the host.

One SQLite database, `saf.sqlite3` in the state folder (WAL, synchronous FULL, like
`firmware/host_store.py`): an item is committed before `add` returns. Its payload (the message
fields, which carry the PAN) is sealed with the device keystore, bound to the row's id, kind,
amount, currency and creation time, so no card data is on disk in clear and no row's figures can
be changed or its payload moved to another row unnoticed. Amount and currency stay clear for the
queue's totals.

An item is sent, then repeated (0221, 0401: ISO 8583 repeat) until the host answers; a decline
after the fact (the host refusing an advice for a transaction the card approved offline) is kept
for the merchant alert.

An item may carry a reference (`ref`) naming what it stands for, e.g. the reversal of one
payment: a second `add` under the same reference returns the first item, so recovery after a
power cut can queue again whatever it is unsure of and nothing goes to the host twice.

A reversal is committed *held* before the authorization it reverses leaves the terminal: it
is not forwarded while the sale that holds it runs. The sale then cancels it (the card
completed) or releases it (no answer, the card declined, or the sale was interrupted: recovery
releases every held item it finds).

A database that SQLite finds damaged at open is renamed aside, never replaced silently.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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
    ref TEXT UNIQUE,               -- what the item stands for: one item per reference
    held INTEGER NOT NULL DEFAULT 0,  -- 1: kept back by the sale in progress, not forwarded
    attempts INTEGER NOT NULL DEFAULT 0,
    settled TEXT CHECK (settled IN ('answered', 'refused', 'cancelled', 'set_aside')),
    code TEXT,                     -- the host's response code (field 39), or why it was settled
    settled_at TEXT
);
CREATE INDEX IF NOT EXISTS item_waiting ON item(id) WHERE settled IS NULL AND held = 0;
"""
# How an item left the queue: the host answered it, refused it (a decline after the fact), the
# sale that held it no longer needs it, or its payload is damaged and a technician must look.
SETTLEMENTS = ("answered", "refused", "cancelled", "set_aside")


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


def _payload_text(payload: dict[str, Any]) -> str:
    try:
        text = json.dumps(payload, sort_keys=True, allow_nan=False, separators=(",", ":"))
        plain = isinstance(payload, dict) and json.loads(text) == payload
    except (TypeError, ValueError):
        plain = False
    if not plain:
        raise SafQueueError("the payload must be a dict of plain JSON values (str keys, no NaN)")
    return text


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
    ref: str | None = None
    held: bool = False
    settled: str | None = None
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


_COLUMNS = "id, kind, sealed, amount, currency, created, attempts, code, settled_at, ref, held, settled"


class SafQueue:
    def __init__(self, path: Path, keystore: Keystore) -> None:
        self.path = path
        self._keystore = keystore
        self._lock = threading.RLock()  # atomic() blocks may read through the same lock
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

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction over the queue's database, committed (synced) on the way out
        and rolled back on an exception: for writes that must land together, e.g. a payment's
        state and the item it queues (`firmware.payments`). Raises `SafQueueError`."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise SafQueueError(f"{self.path}: {exc}") from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise SafQueueError(f"{self.path}: {exc}") from exc

    def add(self, kind: Kind, payload: dict[str, Any], *, amount: int, currency: int,
            created: datetime.datetime, ref: str | None = None, held: bool = False) -> int:
        """Queue an item; it is on disk when this returns. The id orders the queue. Under a
        `ref` already queued, the item already there is returned and nothing is added."""
        with self.atomic() as db:
            return self.insert(db, kind, payload, amount=amount, currency=currency, created=created,
                               ref=ref, held=held)

    def insert(self, db: sqlite3.Connection, kind: Kind, payload: dict[str, Any], *, amount: int,
               currency: int, created: datetime.datetime, ref: str | None = None,
               held: bool = False) -> int:
        """`add` inside an `atomic()` block."""
        if kind not in KINDS:
            raise SafQueueError(f"unknown item kind {kind!r}")
        if type(amount) is not int or amount < 0:
            raise SafQueueError("the amount is a non-negative integer of minor units")
        if type(currency) is not int or not 0 < currency <= 999:
            raise SafQueueError("the currency is an ISO 4217 numeric code")
        created_text = _utc_text(created, "created")
        text = _payload_text(payload)
        try:
            if ref is not None:
                row = db.execute("SELECT id FROM item WHERE ref = ?", (ref,)).fetchone()
                if row is not None:
                    return int(row[0])
            (item_id,) = db.execute(
                "INSERT INTO item(kind, sealed, amount, currency, created, ref, held) "
                "VALUES(?, x'', ?, ?, ?, ?, ?) RETURNING id",
                (kind, amount, currency, created_text, ref, int(held))).fetchone()
            sealed = self._keystore.seal(text.encode(),
                                         _associated(item_id, kind, amount, currency, created_text))
            db.execute("UPDATE item SET sealed = ? WHERE id = ?", (sealed, item_id))
        except sqlite3.Error as exc:
            raise SafQueueError(f"{self.path}: {exc}") from exc
        return int(item_id)

    def _item(self, row: tuple[Any, ...]) -> Item:
        item_id, kind, sealed, amount, currency, created, attempts, code, settled_at, ref, held, settled = row
        return Item(item_id, kind, amount, currency, datetime.datetime.fromisoformat(created), attempts,
                    code, datetime.datetime.fromisoformat(settled_at) if settled_at else None,
                    ref, bool(held), settled, bytes(sealed), self._keystore)

    def _select(self, where: str, args: tuple[object, ...] = ()) -> list[Item]:
        try:
            with self._lock:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM item WHERE {where}", args).fetchall()
        except sqlite3.Error as exc:
            raise SafQueueError(f"{self.path}: {exc}") from exc
        return [self._item(row) for row in rows]

    def pending(self, limit: int = 100, kind: Kind | None = None, *, after: int = 0) -> list[Item]:
        """Items waiting for the host (not held), oldest first (in the order they were added),
        from the id after `after`."""
        if kind is None:
            return self._select("settled IS NULL AND held = 0 AND id > ? ORDER BY id LIMIT ?", (after, limit))
        return self._select("settled IS NULL AND held = 0 AND kind = ? AND id > ? ORDER BY id LIMIT ?",
                            (kind, after, limit))

    def held(self) -> list[Item]:
        """Items kept back by a sale in progress (after a power cut: by a sale that died)."""
        return self._select("settled IS NULL AND held = 1 ORDER BY id")

    def get(self, item_id: int) -> Item:
        found = self._select("id = ?", (item_id,))
        if not found:
            raise SafQueueError(f"no store-and-forward item {item_id}")
        return found[0]

    def by_ref(self, ref: str) -> Item | None:
        found = self._select("ref = ?", (ref,))
        return found[0] if found else None

    def declined_after_the_fact(self) -> list[Item]:
        """Items the host refused after the card had approved: the merchant must be told."""
        return self._select("settled = 'refused' ORDER BY id")

    def set_aside_items(self) -> list[Item]:
        """Items whose payload did not open: kept for a technician, never sent."""
        return self._select("settled = 'set_aside' ORDER BY id")

    def _update_pending(self, item_id: int, sql: str, args: tuple[object, ...],
                        db: sqlite3.Connection | None = None) -> None:
        statement = f"UPDATE item SET {sql} WHERE id = ? AND settled IS NULL RETURNING id"
        if db is None:
            rows = self._write(statement, (*args, item_id))
        else:
            try:
                rows = db.execute(statement, (*args, item_id)).fetchall()
            except sqlite3.Error as exc:
                raise SafQueueError(f"{self.path}: {exc}") from exc
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

    def set_aside(self, item_id: int, reason: str, at: datetime.datetime) -> None:
        """Take a damaged item out of the forwarding order, kept with `reason` for a technician."""
        self._update_pending(item_id, "settled = 'set_aside', code = ?, settled_at = ?",
                             (reason, _utc_text(at, "at")))

    def release(self, item_id: int, payload: dict[str, Any] | None = None,
                db: sqlite3.Connection | None = None) -> None:
        """Let a held item go to the host, its payload replaced by `payload` when given."""
        self._reseal(item_id, payload, "held = 0", db)

    def replace_held(self, item_id: int, payload: dict[str, Any],
                     db: sqlite3.Connection | None = None) -> None:
        """A held item's payload replaced; it stays held."""
        self._reseal(item_id, payload, "held = 1", db)

    def held_item(self, db: sqlite3.Connection, item_id: int) -> int | None:
        """`item_id` when that item is still held and pending, else None (inside `atomic()`)."""
        row = db.execute("SELECT id FROM item WHERE id = ? AND held = 1 AND settled IS NULL",
                         (item_id,)).fetchone()
        return None if row is None else int(row[0])

    def _reseal(self, item_id: int, payload: dict[str, Any] | None, held: str,
                db: sqlite3.Connection | None) -> None:
        if db is None:
            with self.atomic() as inner:
                self._reseal(item_id, payload, held, inner)
            return
        if payload is None:
            self._update_pending(item_id, held, (), db)
            return
        item = self._select_in(db, item_id)
        sealed = self._keystore.seal(_payload_text(payload).encode(), _associated(
            item.id, item.kind, item.amount, item.currency, _utc_text(item.created, "created")))
        self._update_pending(item_id, f"{held}, sealed = ?", (sealed,), db)

    def cancel(self, item_id: int, reason: str, at: datetime.datetime,
               db: sqlite3.Connection | None = None) -> None:
        """A held item the sale no longer needs (the card completed): it never leaves."""
        self._update_pending(item_id, "settled = 'cancelled', code = ?, settled_at = ?",
                             (reason, _utc_text(at, "at")), db)

    def _select_in(self, db: sqlite3.Connection, item_id: int) -> Item:
        try:
            row = db.execute(f"SELECT {_COLUMNS} FROM item WHERE id = ?", (item_id,)).fetchone()
        except sqlite3.Error as exc:
            raise SafQueueError(f"{self.path}: {exc}") from exc
        if row is None:
            raise SafQueueError(f"no store-and-forward item {item_id}")
        return self._item(row)

    def status(self) -> SafStatus:
        try:
            with self._lock:
                count, oldest = self._db.execute(
                    "SELECT count(*), min(created) FROM item WHERE settled IS NULL AND held = 0").fetchone()
                amounts = self._db.execute(
                    "SELECT currency, sum(amount) FROM item WHERE settled IS NULL AND held = 0 "
                    "AND kind = 'advice' GROUP BY currency ORDER BY currency").fetchall()
        except sqlite3.Error as exc:
            raise SafQueueError(f"{self.path}: {exc}") from exc
        return SafStatus(int(count), {int(c): int(a) for c, a in amounts},
                         datetime.datetime.fromisoformat(oldest) if oldest else None)
