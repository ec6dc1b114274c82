"""The host simulator's ledger: an SQLite database (WAL) of everything it booked.

Tables:

- `entries`: one row per card transaction the host processed (0100, 0200, 0220), approved or
  declined: terminal, STAN, MTI, amounts, masked PAN and PAN token (never the PAN), response
  code, RRN, approval code, reversed and advice flags, batch once reconciled, timestamps.
- `answers`: what the host answered to each request, by terminal, MTI (a repeat 0221/0401
  counts as its original 0220/0400), STAN and transmission time (field 7), so that a repeat
  gets the same answer and nothing is booked twice.
- `accounts`: one per card number (PAN token): currency, opening balance, blocked flag and the
  count of consecutive wrong online PINs.
- `reconciliations`: one per terminal and batch number (0500).

Money is integers in minor units. Times are ISO 8601 UTC strings.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

# Processing code positions 1-2 (EMV '9C'): what debits the cardholder, what credits them.
DEBIT_TYPES = frozenset({"00", "01", "09"})
CREDIT_TYPES = frozenset({"20"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    terminal_id TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    acquirer_id TEXT NOT NULL,
    mti TEXT NOT NULL,
    stan TEXT NOT NULL,
    transmission TEXT NOT NULL,
    local_date TEXT NOT NULL,
    local_time TEXT NOT NULL,
    processing_code TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency INTEGER NOT NULL,
    pan_token TEXT,
    pan_masked TEXT,
    rid TEXT,
    response_code TEXT NOT NULL,
    approved INTEGER NOT NULL,
    rrn TEXT NOT NULL,
    approval_code TEXT,
    reversed INTEGER NOT NULL DEFAULT 0,
    advice INTEGER NOT NULL DEFAULT 0,
    completes INTEGER REFERENCES entries(id),
    batch INTEGER,
    created_at TEXT NOT NULL,
    reversed_at TEXT
);
CREATE INDEX IF NOT EXISTS entries_stan ON entries (terminal_id, stan);
CREATE INDEX IF NOT EXISTS entries_card ON entries (pan_token);
CREATE TABLE IF NOT EXISTS answers (
    terminal_id TEXT NOT NULL,
    mti TEXT NOT NULL,
    stan TEXT NOT NULL,
    transmission TEXT NOT NULL,
    digest TEXT NOT NULL,
    fields TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (terminal_id, mti, stan, transmission)
);
CREATE TABLE IF NOT EXISTS accounts (
    pan_token TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    pan_masked TEXT NOT NULL,
    currency INTEGER NOT NULL,
    opening INTEGER NOT NULL,
    blocked INTEGER NOT NULL DEFAULT 0,
    wrong_pins INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reconciliations (
    terminal_id TEXT NOT NULL,
    batch INTEGER NOT NULL,
    stan TEXT NOT NULL,
    response_code TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (terminal_id, batch)
);
"""


class LedgerError(Exception):
    """The ledger file cannot be opened or is not a ledger."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Entry:
    """One booked card transaction. No PAN: its token (SHA-256) and masked form only."""

    id: int
    terminal_id: str
    merchant_id: str
    acquirer_id: str
    mti: str
    stan: str
    transmission: str
    local_date: str
    local_time: str
    processing_code: str
    amount: int
    currency: int
    pan_token: str | None
    pan_masked: str | None
    rid: str | None
    response_code: str
    approved: bool
    rrn: str
    approval_code: str | None
    reversed: bool
    advice: bool
    completes: int | None
    batch: int | None
    created_at: str
    reversed_at: str | None

    @property
    def debit(self) -> bool:
        return self.processing_code[:2] in DEBIT_TYPES

    @property
    def counts(self) -> bool:
        """Approved and not reversed: it moves money."""
        return self.approved and not self.reversed

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Account:
    pan_token: str
    profile: str
    pan_masked: str
    currency: int
    opening: int
    blocked: bool
    wrong_pins: int


@dataclass(frozen=True)
class StoredAnswer:
    """The host's own fields of an answer, and the digest of the request it answered."""

    digest: str
    fields: dict[str, str]


@dataclass(frozen=True)
class NewEntry:
    """What the host books; the ledger adds the id, RRN, approval code and timestamps."""

    terminal_id: str
    merchant_id: str
    acquirer_id: str
    mti: str
    stan: str
    transmission: str
    local_date: str
    local_time: str
    processing_code: str
    amount: int
    currency: int
    pan_token: str | None
    pan_masked: str | None
    rid: str | None
    response_code: str
    approved: bool
    advice: bool = False
    completes: int | None = None


_ENTRY_COLUMNS = ", ".join(Entry.__dataclass_fields__)


class Ledger:
    """The ledger in `path` (created when missing), or in memory when `path` is None.

    One writer (the host simulator's event loop); readers (tests, `tpe sim host ledger`) open
    their own `Ledger` on the same file, which WAL allows while the host writes.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        try:
            self._db = sqlite3.connect(":memory:" if path is None else str(path), isolation_level=None,
                                       check_same_thread=False)
            if path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{path}: not a usable ledger ({type(exc).__name__})") from None
        self._db.row_factory = sqlite3.Row

    def __repr__(self) -> str:
        return f"Ledger({str(self.path) if self.path else 'memory'})"

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- entries ---------------------------------------------------------------------------

    def book(self, entry: NewEntry, *, at: datetime.datetime | None = None) -> Entry:
        """Add `entry`; its RRN (an 12) is the date (YYDDD, ISO 8583 convention) and the entry
        number, its approval code (an 6) the entry number, on approval only."""
        when = at or datetime.datetime.now(datetime.UTC)
        values = asdict(entry)
        values["approved"] = int(entry.approved)
        values["advice"] = int(entry.advice)
        columns = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)
        cursor = self._db.execute(
            f"INSERT INTO entries ({columns}, rrn, created_at) VALUES ({marks}, '', :created_at)",
            {**values, "created_at": when.isoformat(timespec="milliseconds")})
        number = cursor.lastrowid
        if number is None:
            raise LedgerError("the entry was not stored")
        rrn = f"{when:%y}{when.timetuple().tm_yday:03d}{number % 10**7:07d}"
        approval = f"{number % 10**6:06d}" if entry.approved else None
        self._db.execute("UPDATE entries SET rrn = ?, approval_code = ? WHERE id = ?",
                         (rrn, approval, number))
        return self.entry(number)

    def entry(self, number: int) -> Entry:
        row = self._db.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE id = ?", (number,)).fetchone()
        if row is None:
            raise LedgerError(f"no entry {number}")
        return _entry(row)

    def entries(self, *, terminal_id: str | None = None, pan_token: str | None = None) -> list[Entry]:
        """Every entry, oldest first (optionally of one terminal, or one card)."""
        query = f"SELECT {_ENTRY_COLUMNS} FROM entries"
        clauses, args = [], []
        if terminal_id is not None:
            clauses.append("terminal_id = ?")
            args.append(terminal_id)
        if pan_token is not None:
            clauses.append("pan_token = ?")
            args.append(pan_token)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        return [_entry(row) for row in self._db.execute(query + " ORDER BY id", args)]

    def find(self, terminal_id: str, mti: str, stan: str, transmission: str) -> Entry | None:
        row = self._db.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE terminal_id = ? AND mti = ? AND stan = ? "
            "AND transmission = ? ORDER BY id LIMIT 1", (terminal_id, mti, stan, transmission)).fetchone()
        return _entry(row) if row is not None else None

    def find_local(self, terminal_id: str, mti: str, stan: str, local_date: str,
                   local_time: str) -> Entry | None:
        """The entry of field 56 (ISO 8583:1993 layout: MTI, STAN, local date and time)."""
        row = self._db.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE terminal_id = ? AND mti = ? AND stan = ? "
            "AND local_date = ? AND local_time = ? ORDER BY id LIMIT 1",
            (terminal_id, mti, stan, local_date, local_time)).fetchone()
        return _entry(row) if row is not None else None

    def open_stan_in_use(self, terminal_id: str, stan: str) -> bool:
        """A card transaction of the terminal's open batch already has this STAN."""
        row = self._db.execute("SELECT 1 FROM entries WHERE terminal_id = ? AND stan = ? AND batch IS NULL",
                               (terminal_id, stan)).fetchone()
        return row is not None

    def completion_of(self, number: int) -> Entry | None:
        row = self._db.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE completes = ? LIMIT 1",
                               (number,)).fetchone()
        return _entry(row) if row is not None else None

    def reverse(self, number: int) -> None:
        self._db.execute("UPDATE entries SET reversed = 1, reversed_at = ? WHERE id = ?", (_now(), number))

    # --- balances --------------------------------------------------------------------------

    def balance(self, pan_token: str) -> int:
        """The card's available balance: its opening balance, less approved debits and open
        pre-authorizations, plus approved credits, none of them reversed."""
        account = self.account(pan_token)
        opening = account.opening if account is not None else 0
        debits = credits = 0
        for entry in self.entries(pan_token=pan_token):
            if not entry.counts or (entry.mti == "0100" and self.completion_of(entry.id) is not None):
                continue
            if entry.debit:
                debits += entry.amount
            elif entry.processing_code[:2] in CREDIT_TYPES:
                credits += entry.amount
        return opening - debits + credits

    # --- accounts --------------------------------------------------------------------------

    def open_account(self, pan_token: str, profile: str, pan_masked: str, currency: int,
                     opening: int) -> None:
        """Create the account unless it exists (an existing one keeps its state)."""
        self._db.execute("INSERT OR IGNORE INTO accounts (pan_token, profile, pan_masked, currency, opening) "
                         "VALUES (?, ?, ?, ?, ?)", (pan_token, profile, pan_masked, currency, opening))

    def account(self, pan_token: str) -> Account | None:
        row = self._db.execute(
            "SELECT pan_token, profile, pan_masked, currency, opening, blocked, wrong_pins "
            "FROM accounts WHERE pan_token = ?", (pan_token,)).fetchone()
        if row is None:
            return None
        return Account(row["pan_token"], row["profile"], row["pan_masked"], row["currency"], row["opening"],
                       bool(row["blocked"]), row["wrong_pins"])

    def accounts(self) -> list[Account]:
        tokens = [row[0] for row in self._db.execute("SELECT pan_token FROM accounts ORDER BY profile")]
        return [account for token in tokens if (account := self.account(token)) is not None]

    def set_opening(self, pan_token: str, opening: int) -> None:
        self._db.execute("UPDATE accounts SET opening = ? WHERE pan_token = ?", (opening, pan_token))

    def set_blocked(self, pan_token: str, blocked: bool) -> None:
        self._db.execute("UPDATE accounts SET blocked = ? WHERE pan_token = ?", (int(blocked), pan_token))

    def set_wrong_pins(self, pan_token: str, count: int) -> None:
        self._db.execute("UPDATE accounts SET wrong_pins = ? WHERE pan_token = ?", (count, pan_token))

    # --- answers (idempotency) -------------------------------------------------------------

    def answer(self, terminal_id: str, mti: str, stan: str, transmission: str) -> StoredAnswer | None:
        row = self._db.execute("SELECT digest, fields FROM answers WHERE terminal_id = ? AND mti = ? "
                               "AND stan = ? AND transmission = ?",
                               (terminal_id, mti, stan, transmission)).fetchone()
        return StoredAnswer(row[0], dict(json.loads(row[1]))) if row is not None else None

    def remember(self, terminal_id: str, mti: str, stan: str, transmission: str, digest: str,
                 fields: Mapping[str, str]) -> None:
        """What the host answered (its own fields: 37, 38, 39, 55) to the request of `digest`."""
        self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (terminal_id, mti, stan, transmission, digest, json.dumps(dict(fields)), _now()))

    # --- reconciliation --------------------------------------------------------------------

    def reconciliation(self, terminal_id: str, batch: int) -> str | None:
        row = self._db.execute(
            "SELECT response_code FROM reconciliations WHERE terminal_id = ? AND batch = ?",
            (terminal_id, batch)).fetchone()
        return row[0] if row is not None else None

    def close_batch(self, terminal_id: str, batch: int, stan: str, response_code: str) -> None:
        """Put the terminal's open 0200s and 0220s into `batch` and record the result."""
        self._db.execute("UPDATE entries SET batch = ? WHERE terminal_id = ? AND batch IS NULL",
                         (batch, terminal_id))
        self._db.execute("INSERT OR REPLACE INTO reconciliations VALUES (?, ?, ?, ?, ?)",
                         (terminal_id, batch, stan, response_code, _now()))

    def batch_entries(self, terminal_id: str, batch: int | None) -> list[Entry]:
        """The terminal's entries of `batch` (None: the open batch)."""
        if batch is None:
            rows = self._db.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE terminal_id = ? "
                                    "AND batch IS NULL ORDER BY id", (terminal_id,))
        else:
            rows = self._db.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE terminal_id = ? "
                                    "AND batch = ? ORDER BY id", (terminal_id, batch))
        return [_entry(row) for row in rows]


def _entry(row: sqlite3.Row) -> Entry:
    values = dict(zip(row.keys(), tuple(row), strict=True))
    for flag in ("approved", "reversed", "advice"):
        values[flag] = bool(values[flag])
    return Entry(**values)
