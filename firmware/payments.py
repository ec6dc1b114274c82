"""Each payment's state, committed before every step the outside world can observe.

ARCHITECTURE principle 4. The payments live in the store-and-forward queue's database
(`firmware.saf_queue`, WAL, synchronous FULL), so that a payment's state and the item it queues
(its advice, its reversal) are committed together or not at all.

The states, in the order a sale goes through them:

    started         the card is in; nothing has left the terminal
    authorizing     the authorization is about to leave: its reversal is committed, held
    unable_online   it left and no valid answer came: the reversal is released
    authorized      the host approved: the card's second GENERATE AC comes next
    host_declined   the host declined: the card's AAC comes next
  final:
    approved          the card approved online (TC)
    approved_offline  the card approved without the issuer (Y1, Y3): the advice is queued
    declined          declined by the card or the host; nothing owed
    reversed          an approval undone: the card declined it, or the sale broke off
    aborted           broken off before anything left the terminal

A pre-authorization (kind "preauth", a 0100) goes through the same states and ends approved
with nothing sold; later the merchant completes it (`complete_preauth`: a new payment of kind
"completion" for the final amount, its 0220 with field 56 queued) or releases it
(`release_preauth`: its reversal, reason '17', queued and the pre-authorization reversed).

Recovery at start (`recover`) settles every payment a power cut left in a non-final state
(EMV 4.4 Book 4, 6.3.8: an approval the card did not confirm with a TC is reversed): started ->
aborted; authorizing, unable_online, authorized -> reversed (the held reversal released);
host_declined -> declined. An offline approval is final with its advice already queued.
Every decision is logged and kept on the payment.

No card data is kept here: the masked PAN only (PCI DSS 3.4), and the queue seals its payloads.
"""

from __future__ import annotations

import datetime
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from firmware.saf_queue import SafQueue, SafQueueError

log = logging.getLogger(__name__)

PaymentKind = Literal["sale", "refund", "preauth", "completion"]
KINDS: tuple[PaymentKind, ...] = ("sale", "refund", "preauth", "completion")


class State(StrEnum):
    STARTED = "started"
    AUTHORIZING = "authorizing"
    UNABLE_ONLINE = "unable_online"
    AUTHORIZED = "authorized"
    HOST_DECLINED = "host_declined"
    APPROVED = "approved"
    APPROVED_OFFLINE = "approved_offline"
    DECLINED = "declined"
    REVERSED = "reversed"
    ABORTED = "aborted"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({State.APPROVED, State.APPROVED_OFFLINE, State.DECLINED, State.REVERSED, State.ABORTED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payment (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('sale', 'refund', 'preauth', 'completion')),
    amount INTEGER NOT NULL,       -- minor units
    currency INTEGER NOT NULL,     -- ISO 4217 numeric
    created TEXT NOT NULL,         -- UTC, ISO 8601
    updated TEXT NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT,                  -- the kernel's outcome kind, once the card has finished
    pan_masked TEXT,
    stan TEXT,                     -- field 11 of the authorization
    response_code TEXT,            -- field 39 of the host's answer
    rrn TEXT,                      -- field 37 of the host's answer
    reversal_item INTEGER,         -- the queue item reversing the authorization
    advice_item INTEGER,           -- the queue item advising an offline approval
    note TEXT,                     -- why the payment ended as it did (recovery's decision)
    ticket INTEGER,                -- its ticket's seq in the fiscal journal, once journalled
    card TEXT,                     -- the card tender's reference (fiscal.card_reference): no PAN
    original INTEGER               -- a completion's pre-authorization
);
"""
# The columns of the first schema, before pre-authorizations: a database of that version is
# rebuilt once, in one transaction (SQLite cannot alter a CHECK constraint in place).
_FIRST_COLUMNS = ("id, kind, amount, currency, created, updated, state, outcome, pan_masked, stan, "
                  "response_code, rrn, reversal_item, advice_item, note, ticket")
_COLUMNS = f"{_FIRST_COLUMNS}, card, original"


class PaymentsError(Exception):
    """The payments cannot be read or written, or a call does not fit the payment's state."""


@dataclass(frozen=True)
class Payment:
    id: int
    kind: PaymentKind
    amount: int
    currency: int
    created: datetime.datetime
    updated: datetime.datetime
    state: State
    outcome: str | None
    pan_masked: str | None
    stan: str | None
    response_code: str | None
    rrn: str | None
    reversal_item: int | None
    advice_item: int | None
    note: str | None
    ticket: int | None = None
    card: dict[str, Any] | None = None  # the card reference of its ticket (no PAN)
    original: int | None = None  # a completion's pre-authorization

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in _COLUMNS.split(", ")}
        out["created"] = self.created.isoformat()
        out["updated"] = self.updated.isoformat()
        out["state"] = self.state.value
        return out


@dataclass(frozen=True)
class Recovery:
    """What recovery decided for one payment left unfinished."""

    payment: int
    was: State
    now: State
    note: str


def _utc(at: datetime.datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise PaymentsError("times must carry a time zone")
    return at.astimezone(datetime.UTC).isoformat(timespec="microseconds")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def reversal_ref(payment_id: int) -> str:
    return f"payment:{payment_id}:reversal"


def advice_ref(payment_id: int) -> str:
    return f"payment:{payment_id}:advice"


class Payments:
    """The payments of one terminal, over its store-and-forward queue's database."""

    def __init__(self, queue: SafQueue, *, clock: Callable[[], datetime.datetime] = _now) -> None:
        self.queue = queue
        self._clock = clock
        with self._atomic() as db:
            old = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'payment'"
                             ).fetchone()
            if old is not None and "'preauth'" not in old[0]:
                db.execute("ALTER TABLE payment RENAME TO payment_first")
                db.execute(_SCHEMA)
                db.execute(f"INSERT INTO payment({_FIRST_COLUMNS}) "
                           f"SELECT {_FIRST_COLUMNS} FROM payment_first")
                db.execute("DROP TABLE payment_first")
                log.info("payments: %s moved to the schema with pre-authorizations", queue.path)
            db.execute(_SCHEMA)

    # --- reading --------------------------------------------------------------------------

    @staticmethod
    def _payment(row: tuple[Any, ...]) -> Payment:
        values = list(row)
        values[4] = datetime.datetime.fromisoformat(values[4])
        values[5] = datetime.datetime.fromisoformat(values[5])
        values[6] = State(values[6])
        values[16] = json.loads(values[16]) if values[16] else None
        return Payment(*values)

    def _get(self, db: sqlite3.Connection, payment_id: int) -> Payment:
        row = db.execute(f"SELECT {_COLUMNS} FROM payment WHERE id = ?", (payment_id,)).fetchone()
        if row is None:
            raise PaymentsError(f"no payment {payment_id}")
        return self._payment(row)

    def get(self, payment_id: int) -> Payment:
        with self._atomic() as db:
            return self._get(db, payment_id)

    def all(self, *, unfinished: bool = False, last: int = 0) -> list[Payment]:
        """Every payment in order, or the unfinished ones, or the `last` ones."""
        where = f"WHERE state NOT IN ({', '.join(repr(s.value) for s in _FINAL)})" if unfinished else ""
        limit = f"LIMIT {int(last)}" if last > 0 else ""
        with self._atomic() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM payment {where} ORDER BY id DESC {limit}").fetchall()
        return [self._payment(row) for row in reversed(rows)]

    # --- writing --------------------------------------------------------------------------

    @contextmanager
    def _atomic(self) -> Iterator[sqlite3.Connection]:
        """One commit over the payments and the queue; their errors as `PaymentsError`."""
        try:
            with self.queue.atomic() as db:
                yield db
        except (SafQueueError, sqlite3.Error) as exc:
            raise PaymentsError(f"{self.queue.path}: {exc}") from exc

    def _set(self, db: sqlite3.Connection, payment_id: int, **values: object) -> None:
        values["updated"] = _utc(self._clock())
        columns = ", ".join(f"{name} = ?" for name in values)
        db.execute(f"UPDATE payment SET {columns} WHERE id = ?", (*values.values(), payment_id))

    def _expect(self, payment: Payment, *states: State) -> None:
        if payment.state not in states:
            raise PaymentsError(f"payment {payment.id} is {payment.state.value}, not "
                                f"{' or '.join(s.value for s in states)}")

    def begin(self, kind: PaymentKind, amount: int, currency: int) -> int:
        """A new payment, committed before the card is asked anything (a completion is begun
        by `complete_preauth` alone)."""
        if kind not in KINDS or kind == "completion":
            raise PaymentsError(f"unknown payment kind {kind!r}")
        if type(amount) is not int or amount < 0 or type(currency) is not int or not 0 < currency <= 999:
            raise PaymentsError("the amount is minor units, the currency an ISO 4217 numeric code")
        at = _utc(self._clock())
        with self._atomic() as db:
            (payment_id,) = db.execute(
                "INSERT INTO payment(kind, amount, currency, created, updated, state) "
                "VALUES(?, ?, ?, ?, ?, ?) RETURNING id",
                (kind, amount, currency, at, at, State.STARTED.value)).fetchone()
        return int(payment_id)

    def authorizing(self, payment_id: int, stan: str, reversal: dict[str, Any]) -> int:
        """Before the authorization leaves: its reversal, `reversal` (the payload the host
        client builds its 0400 from), is committed held. Returns the queue item."""
        with self._atomic() as db:
            payment = self._get(db, payment_id)
            self._expect(payment, State.STARTED)
            item = self.queue.insert(db, "reversal", reversal, amount=payment.amount,
                                     currency=payment.currency, created=self._clock(),
                                     ref=reversal_ref(payment_id), held=True)
            self._set(db, payment_id, state=State.AUTHORIZING.value, stan=stan, reversal_item=item)
        return item

    def unanswered(self, payment_id: int, reversal: dict[str, Any]) -> None:
        """No valid answer came: the reversal (`reversal`, with its reason) goes to the host."""
        with self._atomic() as db:
            payment = self._get(db, payment_id)
            self._expect(payment, State.AUTHORIZING)
            self.queue.release(self._item(payment), reversal, db)
            self._set(db, payment_id, state=State.UNABLE_ONLINE.value)

    def answered(self, payment_id: int, *, approved: bool, response_code: str, rrn: str | None,
                 reversal: dict[str, Any] | None = None) -> None:
        """The host's answer, before the card's second GENERATE AC. An approval keeps its
        reversal held, updated to `reversal` (which repeats the answer's 37 and 38); a decline
        owes nothing."""
        with self._atomic() as db:
            payment = self._get(db, payment_id)
            self._expect(payment, State.AUTHORIZING)
            item = self._item(payment)
            if approved:
                if reversal is not None:
                    self.queue.replace_held(item, reversal, db)
                state = State.AUTHORIZED
            else:
                self.queue.cancel(item, "declined by the host", self._clock(), db)
                state = State.HOST_DECLINED
            self._set(db, payment_id, state=state.value, response_code=response_code, rrn=rrn)

    def cancelled_by_host(self, payment_id: int, response_code: str, rrn: str | None,
                          reversal: dict[str, Any]) -> None:
        """An approval this terminal cannot honour: reversed at once."""
        with self._atomic() as db:
            payment = self._get(db, payment_id)
            self._expect(payment, State.AUTHORIZING)
            self.queue.release(self._item(payment), reversal, db)
            self._set(db, payment_id, state=State.UNABLE_ONLINE.value, response_code=response_code, rrn=rrn)

    def completed(self, payment_id: int, *, outcome: str, approved: bool, offline: bool,
                  pan_masked: str | None, advice: dict[str, Any] | None = None,
                  reversal: dict[str, Any] | None = None, note: str | None = None,
                  card: dict[str, Any] | None = None) -> State:
        """The card has finished. An offline approval queues `advice` in the same commit; an
        online approval the card did not confirm releases its reversal, as `reversal` when
        given (reason and the card's AAC); a confirmed one cancels it. `card` is the card
        tender's reference (`fiscal.card_reference`: no PAN), kept for a later completion."""
        with self._atomic() as db:
            payment = self._get(db, payment_id)
            if payment.state.final:
                raise PaymentsError(f"payment {payment_id} is already {payment.state.value}")
            values: dict[str, object] = {"outcome": outcome, "pan_masked": pan_masked, "note": note,
                                         "card": _json(card)}
            held = self.queue.held_item(db, payment.reversal_item) if payment.reversal_item else None
            if approved and offline and payment.kind == "preauth":
                raise PaymentsError(f"payment {payment_id} is a pre-authorization: never approved offline")
            if approved and offline:
                if advice is None:
                    raise PaymentsError("an offline approval needs its advice")
                values["advice_item"] = self.queue.insert(
                    db, "advice", advice, amount=payment.amount, currency=payment.currency,
                    created=self._clock(), ref=advice_ref(payment_id))
                state = State.APPROVED_OFFLINE
                if held is not None:  # whatever the host may have approved is undone
                    self.queue.release(held, None, db)
            elif approved:
                self._expect(payment, State.AUTHORIZED)
                if held is not None:
                    self.queue.cancel(held, "completed by the card", self._clock(), db)
                state = State.APPROVED
            elif payment.state is State.AUTHORIZED:
                if held is not None:
                    self.queue.release(held, reversal, db)
                state = State.REVERSED
            elif payment.state is State.UNABLE_ONLINE:
                state = State.DECLINED  # its reversal already left the hold
            elif payment.state is State.STARTED and outcome == "terminated":
                state = State.ABORTED
            else:
                state = State.DECLINED
            values["state"] = state.value
            self._set(db, payment_id, **values)
        return state

    def set_ticket(self, payment_id: int, seq: int) -> None:
        """The approved payment's ticket in the fiscal journal (`firmware.fiscal`)."""
        with self._atomic() as db:
            self._expect(self._get(db, payment_id), State.APPROVED, State.APPROVED_OFFLINE)
            self._set(db, payment_id, ticket=seq)

    def without_ticket(self) -> list[Payment]:
        """Approved payments whose ticket was never recorded here (a power cut between the
        card's approval and the journal, or between the journal and this record). A
        pre-authorization sells nothing: its completion gets the ticket."""
        with self._atomic() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM payment WHERE ticket IS NULL AND amount > 0 "
                              "AND state IN (?, ?) AND kind != 'preauth' ORDER BY id",
                              (State.APPROVED.value, State.APPROVED_OFFLINE.value)).fetchall()
        return [self._payment(row) for row in rows]

    # --- pre-authorizations ---------------------------------------------------------------

    def open_preauths(self) -> list[Payment]:
        """Pre-authorizations the card and the host approved, neither completed nor released,
        oldest first."""
        with self._atomic() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM payment AS p WHERE kind = 'preauth' AND state = ? AND NOT EXISTS "
                "(SELECT 1 FROM payment AS c WHERE c.kind = 'completion' AND c.original = p.id) ORDER BY id",
                (State.APPROVED.value,)).fetchall()
        return [self._payment(row) for row in rows]

    def _open_preauth(self, db: sqlite3.Connection, preauth_id: int) -> Payment:
        preauth = self._get(db, preauth_id)
        if preauth.kind != "preauth":
            raise PaymentsError(f"payment {preauth_id} is a {preauth.kind}, not a pre-authorization")
        self._expect(preauth, State.APPROVED)
        done = db.execute("SELECT id FROM payment WHERE kind = 'completion' AND original = ?",
                          (preauth_id,)).fetchone()
        if done is not None:
            raise PaymentsError(f"pre-authorization {preauth_id} is already completed by payment {done[0]}")
        return preauth

    def complete_preauth(self, preauth_id: int, amount: int, advice: dict[str, Any]) -> int:
        """The completion of open pre-authorization `preauth_id` for `amount` (at most the
        amount approved): a new payment, approved, its `advice` (the 0220 with field 56) queued
        in the same commit. Returns the completion's payment id."""
        if type(amount) is not int or amount <= 0:
            raise PaymentsError("a completion's amount is a positive integer of minor units")
        at = _utc(self._clock())
        with self._atomic() as db:
            preauth = self._open_preauth(db, preauth_id)
            if amount > preauth.amount:
                raise PaymentsError(f"a completion of at most {preauth.amount} minor units, not {amount}")
            (payment_id,) = db.execute(
                "INSERT INTO payment(kind, amount, currency, created, updated, state, outcome, pan_masked, "
                "rrn, response_code, card, original) VALUES('completion', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "RETURNING id",
                (amount, preauth.currency, at, at, State.APPROVED.value, preauth.outcome, preauth.pan_masked,
                 preauth.rrn, preauth.response_code, _json(preauth.card), preauth_id)).fetchone()
            item = self.queue.insert(db, "advice", advice, amount=amount, currency=preauth.currency,
                                     created=self._clock(), ref=advice_ref(payment_id))
            self._set(db, payment_id, advice_item=item)
        return int(payment_id)

    def release_preauth(self, preauth_id: int, reversal: dict[str, Any]) -> int:
        """Open pre-authorization `preauth_id` let go without a sale: its reversal (`reversal`,
        reason '17') queued and the pre-authorization reversed, in one commit. Returns the queue
        item."""
        with self._atomic() as db:
            preauth = self._open_preauth(db, preauth_id)
            item = self.queue.insert(db, "reversal", reversal, amount=preauth.amount,
                                     currency=preauth.currency, created=self._clock(),
                                     ref=f"payment:{preauth_id}:release")
            self._set(db, preauth_id, state=State.REVERSED.value, note="released by the merchant")
        return item

    def _item(self, payment: Payment) -> int:
        if payment.reversal_item is None:
            raise PaymentsError(f"payment {payment.id} has no reversal")
        return payment.reversal_item

    # --- recovery -------------------------------------------------------------------------

    def recover(self) -> list[Recovery]:
        """Settle every payment left unfinished (a power cut, a crash), then release every held
        item no payment holds. Call at start, before anything is sent."""
        decisions: list[Recovery] = []
        for payment in self.all(unfinished=True):
            decisions.append(self._recover(payment))
        for item in self.queue.held():
            self.queue.release(item.id)
            log.warning("recovery: store-and-forward item %d was held by no payment: released", item.id)
        return decisions

    def _recover(self, payment: Payment) -> Recovery:
        was = payment.state
        with self._atomic() as db:
            held = self.queue.held_item(db, payment.reversal_item) if payment.reversal_item else None
            if was is State.STARTED:
                now, note = State.ABORTED, "interrupted before anything left the terminal"
            elif was is State.HOST_DECLINED:
                now, note = State.DECLINED, "interrupted after the host declined; nothing owed"
                if held is not None:
                    self.queue.cancel(held, "declined by the host", self._clock(), db)
            else:
                now = State.REVERSED
                note = {State.AUTHORIZING: "interrupted after the authorization left, no answer recorded: "
                                           "reversed",
                        State.UNABLE_ONLINE: "interrupted after no answer came, the card's result unknown: "
                                             "reversed",
                        State.AUTHORIZED: "interrupted after the host approved, the card's result unknown: "
                                          "reversed"}[was]
                if held is not None:
                    self.queue.release(held, None, db)
            self._set(db, payment.id, state=now.value, note=note)
        log.warning("recovery: payment %d was %s: %s", payment.id, was.value, note)
        return Recovery(payment.id, was, now, note)
