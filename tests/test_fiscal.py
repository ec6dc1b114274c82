"""The fiscal layer of the journal (firmware/fiscal.py): tickets and tenders, cancellations,
duplicates, closures and their totals, audit events, training and degraded modes; and `tpe sale`
journalling its approved payments (firmware/sale.py).

Expected totals come from a model the tests keep of the tickets they wrote, not from the
journal. TEST KEYS only: the journal's key is made in tmp; the simulator's DUKPT keys and the
test PKI (made in tmp) for the sales.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emv.outcome import Outcome, OutcomeKind
from emv.sensitive import Sensitive
from firmware import driver, fiscal
from firmware.config import HostConfig, StateConfig, load_config
from firmware.fiscal import FiscalError, Tender
from firmware.host_client import BlockingAuthorizer, EventLoopThread, HostClient
from firmware.host_store import HostStore
from firmware.journal import FILE_NAME, Journal, Record
from firmware.messages import Acceptor
from firmware.payment_records import PaymentRecorder, RecordError, open_payments
from firmware.pin_pad import DukptPinPad
from firmware.sale import HOST_ANSWERED, SaleJournalError, SaleResult, as_json, as_text, pin_pad_of, run_sale
from firmware.terminal_keys import TerminalKeys
from sim.card.profile import load_profile
from sim.host.server import HostSimulator
from sim.inprocess import WHEN, fresh_card

AT = datetime.datetime(2026, 11, 26, 12, 30, 5, 123456, tzinfo=datetime.UTC)
REFERENCE = {"payment": 7, "outcome": "approved_online", "aid": "A0000000031010",
             "pan_masked": "476173******0051", "atc": "001C", "authorization_code": "A1B2C3"}
AUDIT_EVENTS = ["start", "stop", "login", "role", "software_update", "config_change", "export", "archive",
                "clock_change", "degraded_start", "degraded_end", "training_start", "training_end", "error",
                "integrity_failure"]  # docs/journal-format.md, Payloads


def _journal(folder: Path) -> Journal:
    return Journal(folder, clock=lambda: AT)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = _journal(tmp_path / "state")
    yield opened
    opened.close()


def _card(amount: int) -> Tender:
    return Tender("card", amount, REFERENCE)


# --- tickets -----------------------------------------------------------------------------------

def test_a_split_sale_is_one_ticket_with_its_tenders_and_the_card_reference(journal: Journal) -> None:
    record = fiscal.record_sale(journal, 4200, "EUR", [_card(3000), Tender("cash", 700),
                                                       {"type": "meal_voucher", "amount": 500}],
                                details={"label": "Course Orly"})
    assert (record.chain, record.seq, record.type, record.training) == ("ticket", 1, "sale", False)
    assert record.data == {"amount": 4200, "currency": "EUR", "details": {"label": "Course Orly"},
                           "tenders": [{"type": "card", "amount": 3000, "reference": REFERENCE},
        {"type": "cash", "amount": 700}, {"type": "meal_voucher", "amount": 500}]}
    refund = fiscal.record_refund(journal, -900, "EUR", [Tender("cheque", -400), Tender("credit_note", -500)])
    assert (refund.seq, refund.type, refund.data["amount"]) == (2, "refund", -900)


def _bad_tickets() -> list[tuple[str, Any, Any, Any]]:
    return [
        ("sale", 0, "EUR", [Tender("cash", 0)]),  # zero amount
        ("sale", -100, "EUR", [Tender("cash", -100)]),  # a sale is positive
        ("refund", 100, "EUR", [Tender("cash", 100)]),  # a refund is negative
        ("sale", 100, "EUR", [Tender("bitcoin", 100)]),
        ("sale", 100, "EUR", [Tender("cash", 60), Tender("cash", 30)]),  # sum mismatch
        ("sale", 100, "EUR", [Tender("cash", 150), Tender("cheque", -50)]),  # a tender against the sign
        ("sale", 100, "EUR", [Tender("cash", 100), Tender("cheque", 0)]),
        ("sale", 100, "eur", [Tender("cash", 100)]),
        ("sale", 100, "EURO", [Tender("cash", 100)]),
        ("sale", 100, 978, [Tender("cash", 100)]),
        ("sale", 100, "EUR", []),
        ("sale", 100, "EUR", Tender("cash", 100)),
        ("sale", 100, "EUR", [{"type": "cash", "amount": 100, "note": "x"}]),
        ("sale", 100, "EUR", [{"type": "cash"}]),
        ("sale", 100.0, "EUR", [Tender("cash", 100.0)]),  # type: ignore[arg-type]
        ("sale", True, "EUR", [Tender("cash", True)]),
        ("sale", 10**12, "EUR", [Tender("cash", 10**12)]),
        ("sale", 100, "EUR", [Tender("card", 100)]),  # a card tender without its reference
        ("sale", 100, "EUR", [Tender("cash", 100, {"payment": 1})]),  # only a card has one
        ("sale", 100, "EUR", [Tender("card", 100, {**REFERENCE, "pan": "4761739001010051"})]),
        ("sale", 100, "EUR", [Tender("card", 100, {**REFERENCE, "pan_masked": "4761739001010051"})]),
        ("sale", 100, "EUR", [Tender("card", 100, {**REFERENCE, "pan_masked": "4761739001*010051"})]),
        ("sale", 100, "EUR", [Tender("card", 100, {**REFERENCE, "authorization_code": "4761739001010051"})]),
        ("sale", 100, "EUR", [Tender("card", 100, {**REFERENCE, "atc": "4761739001010051"})]),
        ("sale", 100, "EUR", [Tender("card", 100, {**REFERENCE, "aid": "a0000000031010"})]),
        ("sale", 100, "EUR", [Tender("card", 100, {**REFERENCE, "outcome": "maybe"})]),
        ("sale", 100, "EUR", [Tender("card", 100, {**REFERENCE, "payment": "7"})]),
        ("sale", 100, "EUR", [Tender("card", 100, "payment 7")]),
    ]


@pytest.mark.parametrize(("kind", "amount", "currency", "tenders"), _bad_tickets())
def test_a_bad_ticket_is_refused_and_nothing_is_written(journal: Journal, kind: str, amount: Any,
                                                        currency: Any, tenders: Any) -> None:
    write = fiscal.record_sale if kind == "sale" else fiscal.record_refund
    with pytest.raises(FiscalError):
        write(journal, amount, currency, tenders)
    assert journal.head("ticket") is None and list(journal.records()) == []


def test_details_that_are_not_a_journal_payload_are_refused(journal: Journal) -> None:
    for details in ({"rate": 0.2}, ["a list"], {1: "x"}):
        with pytest.raises(FiscalError):
            fiscal.record_sale(journal, 100, "EUR", [Tender("cash", 100)], details=details)  # type: ignore[arg-type]
    assert journal.head("ticket") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12)
references = (st.none() | st.just(REFERENCE)
              | st.dictionaries(st.sampled_from(fiscal.CARD_REFERENCE), json_values))
tender_values = st.one_of(
    st.builds(Tender, st.sampled_from([*fiscal.TENDERS, "gold"]), st.integers(-10**13, 10**13), references),
    json_values)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(amount=st.integers(-10**13, 10**13) | json_values,
       currency=st.sampled_from(["EUR", "usd", "CHF", 978]) | json_values,
       tenders=st.lists(tender_values, max_size=4) | json_values, details=st.none() | json_values)
def test_any_ticket_input_is_recorded_whole_or_refused_with_fiscal_error(journal: Journal, amount: Any,
                                                                         currency: Any, tenders: Any,
                                                                         details: Any) -> None:
    before = journal.head("ticket")
    write = fiscal.record_sale if isinstance(amount, int) and amount > 0 else fiscal.record_refund
    try:
        record = write(journal, amount, currency, tenders, details=details)
    except FiscalError:
        assert journal.head("ticket") == before
        return
    data = record.data
    assert data["amount"] == amount and sum(t["amount"] for t in data["tenders"]) == amount
    assert all((t["amount"] > 0) == (amount > 0) for t in data["tenders"])


def test_card_reference_holds_the_payment_and_the_outcome_never_the_pan() -> None:
    pan = "4761739001010051"
    outcome = Outcome(OutcomeKind.APPROVED_ONLINE, amount=1250, currency=978,
                      aid=bytes.fromhex("A0000000031010"), pan=Sensitive(pan), pan_masked="476173******0051",
                      atc=bytes.fromhex("001C"), authorization_code=b"A1B2C3",
                      track2=Sensitive(bytes.fromhex("4761739001010051D2512101")))
    reference = fiscal.card_reference(outcome, 7)
    assert reference == REFERENCE
    assert pan not in json.dumps(reference)
    with tempfile.TemporaryDirectory() as folder:  # a reference the tender check accepts
        journal = _journal(Path(folder))
        fiscal.record_sale(journal, 1250, "EUR", [Tender("card", 1250, reference)])
        journal.close()


# --- cancellations ---------------------------------------------------------------------------

def test_a_cancellation_is_the_opposite_ticket_and_happens_once(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    fiscal.record_sale(journal, 1000, "EUR", [_card(600), Tender("cash", 400)])
    fiscal.record_refund(journal, -250, "CHF", [Tender("cash", -250)])
    cancelled = fiscal.cancel(journal, 1)
    assert (cancelled.seq, cancelled.type) == (3, "cancellation")
    assert cancelled.data == {"amount": -1000, "currency": "EUR", "cancels": 1, "tenders": [
        {"type": "card", "amount": -600, "reference": REFERENCE}, {"type": "cash", "amount": -400}]}
    with pytest.raises(FiscalError, match="already cancelled"):
        fiscal.cancel(journal, 1)
    with pytest.raises(FiscalError, match="is a cancellation"):
        fiscal.cancel(journal, 3)
    with pytest.raises(FiscalError, match="is a refund"):  # cancellations are negative: a sale corrects it
        fiscal.cancel(journal, 2)
    for unknown in (0, 4, -1, "1", True, None):
        with pytest.raises(FiscalError):
            fiscal.cancel(journal, unknown)  # type: ignore[arg-type]
    journal.close()
    again = _journal(tmp_path)  # after a restart, still refused
    with pytest.raises(FiscalError, match="already cancelled"):
        fiscal.cancel(again, 1)
    with pytest.raises(FiscalError):
        fiscal.cancel(again, 1, training=True)  # the training chain has no ticket 1
    assert again.head("ticket").seq == 3  # type: ignore[union-attr]


# --- duplicates ------------------------------------------------------------------------------

def test_reprints_are_numbered_per_ticket_across_restarts(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    for amount in (100, 200):
        fiscal.record_sale(journal, amount, "EUR", [Tender("cash", amount)])
    copies = [fiscal.reprint(journal, seq) for seq in (1, 1, 2)]
    journal.close()
    journal = _journal(tmp_path)
    copies.append(fiscal.reprint(journal, 1))
    assert [(r.chain, r.seq, r.type) for r in copies] == [("duplicate", n, "duplicate") for n in (1, 2, 3, 4)]
    assert [r.data for r in copies] == [{"ticket": 1, "copy": 1, "mark": "DUPLICATA"},
                                        {"ticket": 1, "copy": 2, "mark": "DUPLICATA"},
                                        {"ticket": 2, "copy": 1, "mark": "DUPLICATA"},
                                        {"ticket": 1, "copy": 3, "mark": "DUPLICATA"}]
    for unknown in (0, 3, "1"):
        with pytest.raises(FiscalError):
            fiscal.reprint(journal, unknown)  # type: ignore[arg-type]
    with pytest.raises(FiscalError):
        fiscal.reprint(journal, 1, training=True)
    assert journal.head("duplicate").seq == 4  # type: ignore[union-attr]


# --- closures --------------------------------------------------------------------------------

@dataclasses.dataclass
class Ticket:
    """What the test wrote: the model the closures are checked against."""

    amount: int
    currency: str
    tenders: list[tuple[str, int]]


def expected_totals(tickets: list[Ticket]) -> dict[str, Any]:
    """docs/journal-format.md, Payloads, Closures: per currency; sales and refunds by sign; tender
    types that sum to 0 left out."""
    out: dict[str, Any] = {}
    for currency in sorted({t.currency for t in tickets}):
        mine = [t for t in tickets if t.currency == currency]
        types = {kind for t in mine for kind, _ in t.tenders}
        out[currency] = {"total": sum(t.amount for t in mine),
                         "sales": sum(t.amount for t in mine if t.amount > 0),
                         "refunds": sum(t.amount for t in mine if t.amount < 0), "count": len(mine),
                         "tenders": {kind: total for kind in types
                                     if (total := sum(a for t in mine for k, a in t.tenders if k == kind))}}
    return out


def expected_perpetual(tickets: list[Ticket]) -> dict[str, Any]:
    return {currency: {"total": sum(t.amount for t in tickets if t.currency == currency),
                       "absolute": sum(abs(t.amount) for t in tickets if t.currency == currency)}
            for currency in {t.currency for t in tickets}}


def _write(journal: Journal, ticket: Ticket, training: bool = False) -> Record:
    tenders = [Tender(kind, amount, REFERENCE if kind == "card" else None) for kind, amount in ticket.tenders]
    write = fiscal.record_sale if ticket.amount > 0 else fiscal.record_refund
    return write(journal, ticket.amount, ticket.currency, tenders, training=training)


def _check_closure(record: Record, tickets: list[Ticket], first: int, kind: str, period: str) -> None:
    data = record.data
    assert (record.chain, record.type) == ("closure", kind)
    assert (data["period"], data["from"], data["to"]) == (period, first, len(tickets))
    assert data["totals"] == expected_totals(tickets[first - 1:])
    assert data["perpetual"] == expected_perpetual(tickets)


def test_a_day_closure_totals_its_tickets_and_carries_the_heads(journal: Journal) -> None:
    tickets = [Ticket(1250, "EUR", [("card", 1000), ("cash", 250)]), Ticket(-300, "EUR", [("cash", -300)]),
               Ticket(900, "CHF", [("cheque", 900)])]
    for ticket in tickets:
        _write(journal, ticket)
    fiscal.audit(journal, "login", user="marie")
    tickets.append(Ticket(-1250, "EUR", [("card", -1000), ("cash", -250)]))
    fiscal.cancel(journal, 1)
    heads = journal.heads()
    closure = fiscal.close(journal, "day", "2026-11-26")
    _check_closure(closure, tickets, 1, "day", "2026-11-26")
    # the sale and its cancellation: sales 1250, refunds -300 - 1250 (the cancellation by its sign)
    assert closure.data["totals"]["EUR"] == {"total": -300, "sales": 1250, "refunds": -1550, "count": 3,
                                             "tenders": {"cash": -300}}  # card: 1000 - 1000
    assert closure.data["heads"] == heads and set(heads) == {"ticket", "audit"}
    empty = fiscal.close(journal, "day", "2026-11-27")  # no ticket since: t = f - 1
    assert (empty.data["from"], empty.data["to"], empty.data["totals"]) == (5, 4, {})
    assert empty.data["perpetual"] == expected_perpetual(tickets)
    assert empty.data["heads"]["closure"] == {"seq": 1, "sig": closure.sig.hex()}


def test_closures_of_each_kind_cover_the_tickets_since_the_last_one_of_that_kind(journal: Journal) -> None:
    tickets: list[Ticket] = []

    def sell(amount: int) -> None:
        tickets.append(Ticket(amount, "EUR", [("cash", amount)]))
        _write(journal, tickets[-1])

    sell(100)
    _check_closure(fiscal.close(journal, "day", "2026-11-29"), tickets, 1, "day", "2026-11-29")
    sell(200)
    _check_closure(fiscal.close(journal, "day", "2026-11-30"), tickets, 2, "day", "2026-11-30")
    _check_closure(fiscal.close(journal, "month", "2026-11"), tickets, 1, "month", "2026-11")
    sell(-50)
    _check_closure(fiscal.close(journal, "day", "2026-12-01"), tickets, 3, "day", "2026-12-01")
    _check_closure(fiscal.close(journal, "year", "2026"), tickets, 1, "year", "2026")
    _check_closure(fiscal.close(journal, "month", "2026-12"), tickets, 3, "month", "2026-12")


def test_a_period_is_closed_once_in_order_and_in_its_own_form(journal: Journal) -> None:
    fiscal.record_sale(journal, 100, "EUR", [Tender("cash", 100)])
    fiscal.close(journal, "day", "2026-11-26")
    fiscal.close(journal, "month", "2026-11")
    with pytest.raises(FiscalError, match="already closed"):
        fiscal.close(journal, "day", "2026-11-26")
    with pytest.raises(FiscalError, match="comes before"):
        fiscal.close(journal, "day", "2026-11-25")
    for kind, period in (("week", "2026-W48"), ("day", "2026-11"), ("day", "2026-13-01"),
                         ("month", "2026-11-27"), ("month", "2026-00"), ("year", "26"), ("year", 2026),
                         ("day", "2026-11-27 ")):
        with pytest.raises(FiscalError):
            fiscal.close(journal, kind, period)  # type: ignore[arg-type]
    assert journal.head("closure").seq == 2  # type: ignore[union-attr]


def test_totals_survive_a_restart(tmp_path: Path) -> None:
    tickets = [Ticket(1000, "EUR", [("card", 1000)]), Ticket(-400, "EUR", [("cash", -400)])]
    journal = _journal(tmp_path)
    for ticket in tickets:
        _write(journal, ticket)
    fiscal.close(journal, "day", "2026-11-26")
    journal.close()
    journal = _journal(tmp_path)
    tickets.append(Ticket(700, "EUR", [("meal_voucher", 700)]))
    _write(journal, tickets[-1])
    _check_closure(fiscal.close(journal, "day", "2026-11-27"), tickets, 3, "day", "2026-11-27")
    journal.close()
    journal = _journal(tmp_path)
    with pytest.raises(FiscalError, match="already closed"):
        fiscal.close(journal, "day", "2026-11-27")
    _check_closure(fiscal.close(journal, "month", "2026-11"), tickets, 1, "month", "2026-11")


def test_training_tickets_never_count_in_the_real_totals(journal: Journal) -> None:
    real = [Ticket(500, "EUR", [("cash", 500)])]
    training = [Ticket(9900, "EUR", [("card", 9900)]), Ticket(-100, "EUR", [("cash", -100)])]
    fiscal.training_start(journal)
    for ticket in training:
        assert _write(journal, ticket, training=True).chain == "training-ticket"
    fiscal.training_end(journal)
    _write(journal, real[0])
    assert fiscal.cancel(journal, 1, training=True).chain == "training-ticket"
    training.append(Ticket(-9900, "EUR", [("card", -9900)]))
    assert fiscal.reprint(journal, 2, training=True).chain == "training-duplicate"
    closure = fiscal.close(journal, "day", "2026-11-26")
    _check_closure(closure, real, 1, "day", "2026-11-26")
    assert not any(chain.startswith("training-") for chain in closure.data["heads"])
    practice = fiscal.close(journal, "day", "2026-11-26", training=True)
    assert (practice.chain, practice.training) == ("training-closure", True)
    assert practice.data["totals"] == expected_totals(training)
    assert set(practice.data["heads"]) == {"training-ticket", "training-duplicate"}
    assert [r.type for r in journal.records("audit")] == ["training_start", "training_end"]


closure_ops = st.lists(st.one_of(
    st.tuples(st.just("ticket"), st.sampled_from([1, -1]), st.sampled_from(["EUR", "CHF"]),
              st.lists(st.tuples(st.sampled_from(fiscal.TENDERS), st.integers(1, 10**6)),
                       min_size=1, max_size=3)),
    st.tuples(st.just("training"), st.integers(1, 10**6)),
    st.tuples(st.just("cancel"), st.integers(0, 40)),
    st.tuples(st.just("close"), st.sampled_from(fiscal.CLOSURES)),
    st.tuples(st.just("restart"))), max_size=25)


@settings(max_examples=40, deadline=None)
@given(closure_ops)
def test_closures_always_equal_the_sum_of_the_tickets_they_cover(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        journal = _journal(Path(folder))
        tickets: list[Ticket] = []
        cancelled: set[int] = set()
        closed_to = dict.fromkeys(fiscal.CLOSURES, 0)
        closed = dict.fromkeys(fiscal.CLOSURES, 0)
        for op in ops:
            if op[0] == "ticket":
                sign, currency, parts = op[1], op[2], op[3]
                ticket = Ticket(sign * sum(a for _, a in parts), currency, [(k, sign * a) for k, a in parts])
                assert _write(journal, ticket).seq == len(tickets) + 1
                tickets.append(ticket)
            elif op[0] == "training":
                _write(journal, Ticket(op[1], "EUR", [("cash", op[1])]), training=True)
            elif op[0] == "cancel":
                seq = op[1] % len(tickets) + 1 if tickets else 1
                if not tickets or seq in cancelled or tickets[seq - 1].amount < 0:
                    with pytest.raises(FiscalError):
                        fiscal.cancel(journal, seq)
                    continue
                original = tickets[seq - 1]
                fiscal.cancel(journal, seq)
                cancelled.add(seq)
                tickets.append(Ticket(-original.amount, original.currency,
                                      [(k, -a) for k, a in original.tenders]))
            elif op[0] == "close":
                kind = op[1]
                closed[kind] += 1
                day = datetime.date(2026, 1, 1) + datetime.timedelta(days=closed[kind])
                period = {"day": day.isoformat(), "month": f"2026-{closed[kind]:02d}",
                          "year": str(2026 + closed[kind])}[kind]
                closure = fiscal.close(journal, kind, period)
                _check_closure(closure, tickets, closed_to[kind] + 1, kind, period)
                closed_to[kind] = len(tickets)
            else:
                journal.close()
                journal = _journal(Path(folder))
        journal.close()


# --- audit events (JET) ------------------------------------------------------------------------

def test_every_documented_audit_event_is_journalled_in_the_audit_chain(journal: Journal) -> None:
    records = [fiscal.audit(journal, event, detail=n) for n, event in enumerate(AUDIT_EVENTS)]
    assert [(r.chain, r.seq, r.type) for r in records] == [("audit", n + 1, e)
                                                           for n, e in enumerate(AUDIT_EVENTS)]
    assert [r.data for r in records] == [{"event": e, "detail": n} for n, e in enumerate(AUDIT_EVENTS)]
    for event, details in (("reboot", {}), ("Start", {}), ("login", {"ratio": 0.5})):
        with pytest.raises(FiscalError):
            fiscal.audit(journal, event, **details)
    assert journal.head("audit").seq == len(AUDIT_EVENTS)  # type: ignore[union-attr]


def test_start_and_stop_are_journalled_and_a_lost_tail_is_an_integrity_failure(tmp_path: Path) -> None:
    state, saved = tmp_path / "state", tmp_path / "saved"
    journal = _journal(state)
    assert fiscal.start(journal, "tpe 0.1.0") == []
    fiscal.record_sale(journal, 100, "EUR", [Tender("cash", 100)])
    journal.close()
    shutil.copytree(state, saved)
    journal = _journal(state)
    fiscal.record_sale(journal, 200, "EUR", [Tender("cash", 200)])
    assert fiscal.stop(journal, reason="power off").data == {"event": "stop", "reason": "power off"}
    journal.close()
    for name in (FILE_NAME, FILE_NAME + "-wal", FILE_NAME + "-shm"):  # the database loses its tail
        (state / name).unlink(missing_ok=True)
        if (saved / name).exists():
            shutil.copy(saved / name, state / name)
    journal = _journal(state)
    problems = fiscal.start(journal, "tpe 0.1.0")
    assert len(problems) == 2 and all("records are missing" in p for p in problems)
    events = [(r.type, r.data) for r in journal.records("audit")]
    assert events == [("start", {"event": "start", "version": "tpe 0.1.0"}),
                      ("start", {"event": "start", "version": "tpe 0.1.0"}),
                      *(("integrity_failure", {"event": "integrity_failure", "problem": p})
                        for p in problems)]
    assert fiscal.start(journal, "tpe 0.1.0") == []  # reported once


def test_degraded_mode_is_journalled_only_when_it_changes_even_across_restarts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fiscal, "_SCAN_WINDOW", 3)  # the backward search crosses several windows
    journal = _journal(tmp_path)
    assert fiscal.degraded(journal, False, "host answered") is None  # never degraded: nothing to end
    started = fiscal.degraded(journal, True, "no link: no route to the host")
    assert started is not None and started.data == {"event": "degraded_start",
                                                    "cause": "no link: no route to the host"}
    assert fiscal.degraded(journal, True, "no answer within 10 s") is None
    for n in range(10):
        fiscal.audit(journal, "login", user=n)
    journal.close()
    journal = _journal(tmp_path)  # found again after a restart, 10 events back
    assert fiscal.degraded(journal, True, "still no link") is None
    ended = fiscal.degraded(journal, False, "host answered")
    assert ended is not None and ended.type == "degraded_end"
    assert fiscal.degraded(journal, False, "host answered") is None
    fiscal.audit(journal, "degraded_start", cause="set by hand")  # an event written directly counts too
    assert fiscal.degraded(journal, True, "no link") is None
    assert [r.type for r in journal.records("audit") if r.type.startswith("degraded")] == [
        "degraded_start", "degraded_end", "degraded_start"]


# --- tpe sale --------------------------------------------------------------------------------

ACCEPTOR = Acceptor(terminal_id="TPE00001", merchant_id="000000000000001", acquirer_id="12345")
TERMINAL_KEYS = Path(__file__).resolve().parent.parent / "sim" / "host" / "terminal_test_keys.toml"


def _tickets(folder: Path) -> list[tuple[str, int, str, dict[str, Any]]]:
    """The journal's ticket records, read with SQLite alone."""
    db = sqlite3.connect(folder / FILE_NAME)
    try:
        rows = db.execute("SELECT chain, seq, type, payload FROM record WHERE chain LIKE '%ticket' "
                          "ORDER BY id")
        return [(chain, seq, kind, json.loads(payload)) for chain, seq, kind, payload in rows]
    finally:
        db.close()


def _audit_types(folder: Path) -> list[str]:
    db = sqlite3.connect(folder / FILE_NAME)
    try:
        return [kind for (kind,) in db.execute("SELECT type FROM record WHERE chain = 'audit' ORDER BY seq")]
    finally:
        db.close()


def _offline_sale(folder: Path, profile: str) -> SaleResult:
    config = dataclasses.replace(load_config(), state=StateConfig(folder))
    store = HostStore(folder / "host.sqlite3")
    try:
        recorder = PaymentRecorder(open_payments(folder), store, ACCEPTOR)
        card = fresh_card(profile)
        return run_sale(config, 1000, driver.card_sender(card.process, card.protocol), pin=None,
                        pin_pad=pin_pad_of(config), when=WHEN, rng=random.Random(1).randbytes,
                        recorder=recorder)
    finally:
        store.close()


def test_an_approved_sale_is_journalled_as_one_ticket_and_a_declined_one_is_not(tmp_path: Path) -> None:
    declined = _offline_sale(tmp_path, "declining_card")
    assert declined.outcome.kind is OutcomeKind.DECLINED_OFFLINE and declined.ticket is None
    assert "ticket" not in as_json(declined)
    approved = _offline_sale(tmp_path, "offline_approving")
    assert approved.outcome.kind is OutcomeKind.APPROVED_OFFLINE and approved.payment is not None
    ((chain, seq, kind, data),) = _tickets(tmp_path)
    assert (chain, seq, kind) == ("ticket", 1, "sale")
    (tender,) = data["tenders"]
    assert (data["amount"], data["currency"], tender["type"], tender["amount"]) == (1000, "EUR", "card", 1000)
    app = load_profile("offline_approving").applications[0]
    assert tender["reference"]["payment"] == approved.payment["id"]
    assert tender["reference"]["outcome"] == "approved_offline"
    assert tender["reference"]["aid"] == app.aid.hex().upper()
    assert tender["reference"]["pan_masked"] == approved.outcome.pan_masked
    ticket = as_json(approved)["ticket"]
    assert ticket["seq"] == 1 and ticket["type"] == "sale" and len(ticket["extract"]) == 9
    assert approved.ticket is not None and ticket["receipt"] == approved.ticket["receipt"]
    assert ticket["extract"] in "\n".join(ticket["receipt"])
    text = as_text(approved)
    assert f"Ticket      1 (sale, signature {ticket['extract']})" in text and "10,00 EUR" in text
    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith("journal"))
    assert app.pan.encode() not in stored


def test_a_sale_after_the_journal_lost_its_tail_alerts_the_merchant_and_journals_it(tmp_path: Path) -> None:
    state, saved = tmp_path / "state", tmp_path / "saved"
    _offline_sale(state, "offline_approving")
    shutil.copytree(state, saved)  # the journal with one ticket
    _offline_sale(state, "offline_approving")  # a second ticket
    for name in (FILE_NAME, FILE_NAME + "-wal", FILE_NAME + "-shm"):  # the database rolled back
        (state / name).unlink(missing_ok=True)
        if (saved / name).exists():
            shutil.copy(saved / name, state / name)
    third = _offline_sale(state, "offline_approving")
    (alert,) = third.alerts
    assert "chain ticket" in alert and "records are missing" in alert
    assert as_json(third)["alerts"] == [alert] and f"ALERT       {alert}" in as_text(third)
    assert "integrity_failure" in _audit_types(state)
    assert _offline_sale(state, "offline_approving").alerts == []  # said once, journalled once


def test_a_journal_that_cannot_be_written_keeps_the_payment_and_says_so_loudly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FILE_NAME).mkdir()  # the journal's database cannot be opened
    with caplog.at_level(logging.CRITICAL), pytest.raises(SaleJournalError) as caught:
        _offline_sale(tmp_path, "offline_approving")
    assert isinstance(caught.value, RecordError)
    result = caught.value.result
    assert result.outcome.kind is OutcomeKind.APPROVED_OFFLINE and result.ticket is None
    assert result.payment is not None
    assert f"payment {result.payment['id']} (approved_offline) is recorded" in str(caught.value)
    payments = open_payments(tmp_path)
    assert payments.get(result.payment["id"]).state.value == "approved_offline"
    assert any("fiscal journal" in r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[EventLoopThread, HostSimulator]]:
    thread = EventLoopThread("fiscal-host")

    async def start() -> HostSimulator:
        simulator = HostSimulator(tmp_path / "pki")
        await simulator.start()
        return simulator

    simulator = thread.run(start())
    yield thread, simulator
    thread.run(simulator.stop())
    thread.stop()


def test_sales_through_the_host_journal_degraded_mode_refunds_and_tickets(
        tmp_path: Path, host: tuple[EventLoopThread, HostSimulator]) -> None:
    thread, simulator = host
    folder = tmp_path / "state"
    folder.mkdir()
    config = dataclasses.replace(load_config(), state=StateConfig(folder))
    store = HostStore(folder / "host.sqlite3")
    keys = TerminalKeys.open(store, TERMINAL_KEYS)
    pki = simulator.pki
    clients = []

    def sale(port: int, transaction_type: int = 0) -> SaleResult:
        host_config = HostConfig(address="127.0.0.1", port=port, server_name="localhost",
                                 ca_file=pki.host_ca_cert, cert_file=pki.terminal_cert,
                                 key_file=pki.terminal_key,
                                 acquirer_id=ACCEPTOR.acquirer_id, timeout=2.0)
        client = HostClient(host_config, store, keys, ACCEPTOR)
        clients.append(client)
        card = fresh_card("visa_cda_online")
        return run_sale(config, 10000, driver.card_sender(card.process, card.protocol), pin="1234",
                        authorizer=BlockingAuthorizer(client, thread.loop), pin_pad=DukptPinPad(keys),
                        when=WHEN, rng=random.Random(1).randbytes, transaction_type=transaction_type)

    try:
        closed_port = simulator.port + 1 if simulator.port < 65535 else simulator.port - 1
        unreachable = sale(closed_port)
        assert unreachable.host is not None and unreachable.host.problem
        assert _audit_types(folder) == ["degraded_start"]
        approved = sale(simulator.port)
        assert approved.outcome.kind is OutcomeKind.APPROVED_ONLINE and approved.host.problem is None  # type: ignore[union-attr]
        assert _audit_types(folder) == ["degraded_start", "degraded_end"]
        refund = sale(simulator.port, transaction_type=0x20)
        assert _audit_types(folder) == ["degraded_start", "degraded_end"]  # no change, no event
    finally:
        for client in clients:
            thread.run(client.close())
        store.close()
    db = sqlite3.connect(folder / FILE_NAME)
    (cause,) = db.execute("SELECT payload FROM record WHERE type = 'degraded_end'").fetchone()
    db.close()
    assert json.loads(cause)["cause"] == HOST_ANSWERED
    tickets = _tickets(folder)
    kinds = [(kind, data["amount"]) for _chain, _seq, kind, data in tickets]
    unreachable_ticket = [("sale", 10000)] if unreachable.outcome.kind.approved else []
    assert kinds == [*unreachable_ticket, ("sale", 10000), ("refund", -10000)]
    assert refund.ticket is not None and refund.ticket["type"] == "refund"
    assert tickets[-1][3]["tenders"][0]["reference"]["payment"] == refund.payment["id"]  # type: ignore[index]
    assert approved.ticket is not None and approved.ticket["seq"] == tickets[-2][1]


@pytest.mark.pcscd
def test_tpe_sale_through_pcscd_journals_one_ticket_for_an_approved_sale_none_for_a_declined_one(
        pcscd_daemon: Any, server: Any, tmp_path: Path) -> None:
    from sim_processes import sale, sim_host, write_config

    from sim.host.test_pki import make_test_pki

    pki = make_test_pki(tmp_path / "pki")
    simulator = sim_host(pki, tmp_path / "ledger.sqlite3")
    try:
        config = write_config(tmp_path, simulator.port, pki)
        server("visa_cda_online")
        declined = sale(pcscd_daemon, "100.00", "--pin", "9999", "--json", "--config", str(config))
        assert declined.returncode == 5, declined.stdout + declined.stderr
        assert "ticket" not in json.loads(declined.stdout)
        approved = sale(pcscd_daemon, "100.00", "--pin", "1234", "--json", "--config", str(config))
        assert approved.returncode == 0, approved.stdout + approved.stderr
    finally:
        simulator.stop()
    out = json.loads(approved.stdout)
    ((chain, seq, kind, data),) = _tickets(tmp_path / "state")
    assert (chain, seq, kind, data["amount"], data["currency"]) == ("ticket", 1, "sale", 10000, "EUR")
    assert data["tenders"][0]["reference"]["payment"] == out["payment"]["id"]
    assert out["ticket"]["seq"] == 1 and out["ticket"]["extract"] in "\n".join(out["ticket"]["receipt"])
    pan = load_profile("visa_cda_online").applications[0].pan
    assert pan not in approved.stdout + approved.stderr


def test_start_journals_what_changed_since_the_last_start(tmp_path: Path) -> None:
    now = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
    journal = Journal(tmp_path, clock=lambda: now)
    assert fiscal.start(journal, "tpe 1.0", config_digest="aaaa", now=now) == []
    fiscal.record_sale(journal, 500, "EUR", [{"type": "cash", "amount": 500}])
    fiscal.start(journal, "tpe 1.1", config_digest="bbbb", now=now)
    earlier = now - datetime.timedelta(hours=3)  # the clock was set back
    fiscal.start(journal, "tpe 1.1", config_digest="bbbb", now=earlier)
    events = [(r.type, {k: v for k, v in r.data.items() if k != "event"}) for r in journal.records("audit")]
    assert events == [
        ("start", {"version": "tpe 1.0", "config": "aaaa"}),
        ("start", {"version": "tpe 1.1", "config": "bbbb"}),
        ("software_update", {"from": "tpe 1.0", "to": "tpe 1.1"}),
        ("config_change", {"from": "aaaa", "to": "bbbb"}),
        ("start", {"version": "tpe 1.1", "config": "bbbb"}),
        ("clock_change", {"last_record": "2026-11-26T12:00:00.000000Z",
                          "clock": "2026-11-26T09:00:00.000000Z"}),
    ]
