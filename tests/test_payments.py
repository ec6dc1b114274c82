"""Each payment's durable state (firmware/payments.py) over the real store-and-forward queue."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import pytest

from firmware.config import StateConfig, load_config
from firmware.journal import Journal
from firmware.keystore import Keystore
from firmware.payments import Payments, PaymentsError, State
from firmware.saf_queue import FILE_NAME, SafQueue
from firmware.sale import recover_tickets

REVERSAL = {"t": "0200", "11": "000007", "reversal_reason": "68"}
ADVICE = {"t": "0220", "2": "4761739001010010", "11": "000008", "39": "Y3"}


def _payments(folder: Path) -> Payments:
    return Payments(SafQueue(folder / FILE_NAME, Keystore.open(folder)))


def _authorizing(payments: Payments, amount: int = 1250) -> int:
    payment = payments.begin("sale", amount, 978)
    payments.authorizing(payment, "000007", REVERSAL)
    return payment


def test_an_online_approval_confirmed_by_the_card_owes_nothing(tmp_path: Path) -> None:
    payments = _payments(tmp_path)
    payment = _authorizing(payments)
    (held,) = payments.queue.held()
    assert payments.queue.pending() == [] and payments.queue.status().count == 0  # held: not forwarded
    payments.answered(payment, approved=True, response_code="00", rrn="123", reversal={**REVERSAL, "r": "22"})
    assert payments.queue.get(held.id).payload["r"] == "22"  # updated while still held
    assert payments.get(payment).state is State.AUTHORIZED
    state = payments.completed(payment, outcome="approved_online", approved=True, offline=False,
                               pan_masked="476173******0010")
    assert state is State.APPROVED
    assert payments.queue.held() == [] and payments.queue.pending() == []
    record = payments.get(payment)
    assert (record.response_code, record.rrn, record.stan) == ("00", "123", "000007")
    with pytest.raises(PaymentsError, match="already approved"):
        payments.completed(payment, outcome="approved_online", approved=True, offline=False, pan_masked=None)


def test_an_approval_the_card_declines_releases_its_reversal_with_the_card_data(tmp_path: Path) -> None:
    payments = _payments(tmp_path)
    payment = _authorizing(payments)
    payments.answered(payment, approved=True, response_code="00", rrn="1")
    state = payments.completed(payment, outcome="declined_online", approved=False, offline=False,
                               pan_masked=None, reversal={**REVERSAL, "reversal_reason": "06"})
    assert state is State.REVERSED
    (owed,) = payments.queue.pending()
    assert owed.kind == "reversal" and owed.payload["reversal_reason"] == "06"
    assert owed.ref == f"payment:{payment}:reversal"


def test_a_host_decline_cancels_the_reversal(tmp_path: Path) -> None:
    payments = _payments(tmp_path)
    payment = _authorizing(payments)
    payments.answered(payment, approved=False, response_code="05", rrn="1")
    assert payments.queue.held() == [] and payments.queue.pending() == []
    assert payments.completed(payment, outcome="declined_online", approved=False, offline=False,
                              pan_masked=None) is State.DECLINED


def test_an_offline_approval_queues_its_advice_in_the_same_commit(tmp_path: Path) -> None:
    payments = _payments(tmp_path)
    payment = _authorizing(payments, 900)
    payments.unanswered(payment, {**REVERSAL, "reversal_reason": "68"})
    state = payments.completed(payment, outcome="approved_unable_online", approved=True, offline=True,
                               pan_masked=None, advice=ADVICE)
    assert state is State.APPROVED_OFFLINE
    reversal, advice = payments.queue.pending()
    assert (reversal.kind, advice.kind) == ("reversal", "advice")  # in the order they arose
    assert advice.payload == ADVICE and advice.amount == 900
    assert payments.queue.status().amount_per_currency == {978: 900}
    assert payments.get(payment).advice_item == advice.id
    with pytest.raises(PaymentsError, match="needs its advice"):
        payments.completed(payments.begin("sale", 1, 978), outcome="approved_offline", approved=True,
                           offline=True, pan_masked=None)


def test_wrong_steps_are_refused(tmp_path: Path) -> None:
    payments = _payments(tmp_path)
    payment = payments.begin("refund", 100, 978)
    with pytest.raises(PaymentsError, match="started, not authorizing"):
        payments.answered(payment, approved=True, response_code="00", rrn=None)
    with pytest.raises(PaymentsError, match="unknown payment kind"):
        payments.begin("gift", 1, 978)  # type: ignore[arg-type]
    with pytest.raises(PaymentsError, match="minor units"):
        payments.begin("sale", -1, 978)
    with pytest.raises(PaymentsError, match="no payment 99"):
        payments.get(99)
    assert payments.get(payment).kind == "refund"


def test_recovery_settles_every_unfinished_state_once(tmp_path: Path) -> None:
    payments = _payments(tmp_path)
    started = payments.begin("sale", 1, 978)
    authorizing = _authorizing(payments, 2)
    unable = _authorizing(payments, 3)
    payments.unanswered(unable, REVERSAL)
    authorized = _authorizing(payments, 4)
    payments.answered(authorized, approved=True, response_code="00", rrn="9")
    declined = _authorizing(payments, 5)
    payments.answered(declined, approved=False, response_code="51", rrn="9")
    offline = payments.begin("sale", 6, 978)
    payments.completed(offline, outcome="approved_offline", approved=True, offline=True, pan_masked=None,
                       advice=ADVICE)
    payments.queue.add("reversal", REVERSAL, amount=7, currency=978, held=True,
                                created=datetime.datetime.now(datetime.UTC))
    payments.queue.close()

    payments = _payments(tmp_path)  # the terminal starts again
    decisions = {d.payment: (d.was, d.now) for d in payments.recover()}
    assert decisions == {
        started: (State.STARTED, State.ABORTED),
        authorizing: (State.AUTHORIZING, State.REVERSED),
        unable: (State.UNABLE_ONLINE, State.REVERSED),
        authorized: (State.AUTHORIZED, State.REVERSED),
        declined: (State.HOST_DECLINED, State.DECLINED),
    }
    assert payments.get(offline).state is State.APPROVED_OFFLINE  # final: stays queued
    assert all(payments.get(p).note for p in decisions)
    owed = payments.queue.pending()
    # one reversal for each payment the host may have approved, the advice, the orphan released
    assert sorted(item.amount for item in owed) == [2, 3, 4, 6, 7]
    assert payments.queue.held() == []
    assert payments.recover() == [] and len(payments.queue.pending()) == 5  # nothing twice


def test_a_second_item_under_one_reference_is_the_first(tmp_path: Path) -> None:
    queue = _payments(tmp_path).queue
    at = datetime.datetime.now(datetime.UTC)
    first = queue.add("advice", ADVICE, amount=1, currency=978, created=at, ref="payment:1:advice")
    again = queue.add("advice", {**ADVICE, "11": "000009"}, amount=1, currency=978, created=at,
                      ref="payment:1:advice")
    assert again == first and len(queue.pending()) == 1 and queue.get(first).payload == ADVICE


def test_only_approved_payments_take_a_ticket_and_those_without_one_are_listed(tmp_path: Path) -> None:
    payments = _payments(tmp_path)
    approved = payments.begin("sale", 100, 978)
    payments.completed(approved, outcome="approved_offline", approved=True, offline=True, pan_masked=None,
                       advice=ADVICE)
    declined = payments.begin("sale", 200, 978)
    payments.completed(declined, outcome="declined_offline", approved=False, offline=False, pan_masked=None)
    assert [p.id for p in payments.without_ticket()] == [approved]
    with pytest.raises(PaymentsError, match="declined, not approved"):
        payments.set_ticket(declined, 1)
    payments.set_ticket(approved, 7)
    assert payments.without_ticket() == [] and payments.get(approved).ticket == 7


# --- pre-authorizations ---------------------------------------------------------------------------

AUTHORIZATION = {"t": "0100", "11": "000009", "reversal_reason": "22",
                 "completion": {"2": "4761739001010010", "22": "051"}}
CARD = {"payment": 1, "outcome": "approved_online", "aid": "A0000000031010", "pan_masked": "476173******0010",
        "atc": "0001", "authorization_code": "123456"}


def _approved_preauth(payments: Payments, amount: int = 15000) -> int:
    payment = payments.begin("preauth", amount, 978)
    payments.authorizing(payment, "000009", AUTHORIZATION)
    payments.answered(payment, approved=True, response_code="00", rrn="77")
    payments.completed(payment, outcome="approved_online", approved=True, offline=False,
                       pan_masked="476173******0010", card=CARD)
    return payment


def test_a_pre_authorization_is_completed_once_for_at_most_its_amount(tmp_path: Path) -> None:
    payments = _payments(tmp_path)
    preauth = _approved_preauth(payments)
    assert [p.id for p in payments.open_preauths()] == [preauth]
    assert payments.without_ticket() == []  # it sells nothing: no ticket owed
    with pytest.raises(PaymentsError, match="at most 15000"):
        payments.complete_preauth(preauth, 15001, ADVICE)
    completion = payments.complete_preauth(preauth, 9000, ADVICE)
    record = payments.get(completion)
    assert (record.kind, record.state, record.amount, record.original) == ("completion", State.APPROVED, 9000,
                                                                           preauth)
    assert record.card == CARD and record.pan_masked == "476173******0010" and record.rrn == "77"
    (advice,) = payments.queue.pending()
    assert advice.id == record.advice_item and advice.amount == 9000
    assert advice.ref == f"payment:{completion}:advice"
    assert payments.open_preauths() == [] and [p.id for p in payments.without_ticket()] == [completion]
    with pytest.raises(PaymentsError, match="already completed"):
        payments.complete_preauth(preauth, 100, ADVICE)
    with pytest.raises(PaymentsError, match="already completed"):
        payments.release_preauth(preauth, AUTHORIZATION)


def test_a_released_pre_authorization_queues_its_reversal_and_closes(tmp_path: Path) -> None:
    payments = _payments(tmp_path)
    preauth = _approved_preauth(payments, 8000)
    item = payments.release_preauth(preauth, {**AUTHORIZATION, "reversal_reason": "17"})
    (owed,) = payments.queue.pending()
    assert owed.id == item and owed.kind == "reversal" and owed.amount == 8000
    assert owed.ref == f"payment:{preauth}:release" and owed.payload["reversal_reason"] == "17"
    assert payments.get(preauth).state is State.REVERSED and payments.open_preauths() == []
    with pytest.raises(PaymentsError, match="reversed, not approved"):
        payments.complete_preauth(preauth, 100, ADVICE)


def test_only_an_approved_pre_authorization_is_completed(tmp_path: Path) -> None:
    payments = _payments(tmp_path)
    sale = _authorizing(payments)
    with pytest.raises(PaymentsError, match="not a pre-authorization"):
        payments.complete_preauth(sale, 100, ADVICE)
    started = payments.begin("preauth", 500, 978)
    with pytest.raises(PaymentsError, match="started, not approved"):
        payments.release_preauth(started, AUTHORIZATION)
    with pytest.raises(PaymentsError, match="never approved offline"):
        payments.completed(started, outcome="approved_offline", approved=True, offline=True, pan_masked=None,
                           advice=ADVICE)
    with pytest.raises(PaymentsError, match="unknown payment kind"):
        payments.begin("completion", 100, 978)  # only complete_preauth makes one


def test_a_database_of_the_first_schema_is_moved_with_its_payments(tmp_path: Path) -> None:
    first = """CREATE TABLE payment (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('sale', 'refund')),
        amount INTEGER NOT NULL, currency INTEGER NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL,
        state TEXT NOT NULL, outcome TEXT, pan_masked TEXT, stan TEXT, response_code TEXT, rrn TEXT,
        reversal_item INTEGER, advice_item INTEGER, note TEXT, ticket INTEGER)"""
    queue = SafQueue(tmp_path / FILE_NAME, Keystore.open(tmp_path))
    with queue.atomic() as db:
        db.execute(first)
        at = "2026-01-02T03:04:05+00:00"
        db.execute("INSERT INTO payment(kind, amount, currency, created, updated, state, ticket) "
                   "VALUES('sale', 1250, 978, ?, ?, 'approved', 4)", (at, at))
    payments = Payments(queue)
    (old,) = payments.all()
    assert (old.id, old.kind, old.amount, old.state, old.ticket) == (1, "sale", 1250, State.APPROVED, 4)
    assert old.card is None and old.original is None
    preauth = _approved_preauth(payments)
    assert preauth == 2 and payments.get(preauth).card == CARD
    Payments(queue)  # opening again changes nothing
    assert [p.id for p in payments.all()] == [1, 2]


def test_a_completion_a_power_cut_left_without_its_ticket_gets_it_at_start(tmp_path: Path) -> None:
    """The completion and its advice commit together; its ticket is journalled next. A power
    cut between the two: recovery journals the ticket from the card reference kept, once."""
    config = dataclasses.replace(load_config(), state=StateConfig(tmp_path))
    payments = _payments(tmp_path)
    preauth = _approved_preauth(payments)
    completion = payments.complete_preauth(preauth, 9000, ADVICE)
    assert recover_tickets(config, payments) == [completion]
    assert recover_tickets(config, payments) == []  # once
    journal = Journal(tmp_path)
    try:
        (ticket,) = journal.records("ticket")
    finally:
        journal.close()
    assert ticket.type == "sale" and ticket.data["amount"] == 9000
    (tender,) = ticket.data["tenders"]
    assert tender["reference"] == {**CARD, "payment": completion}  # its scheme's AID for the settlement
    assert payments.get(completion).ticket == ticket.seq and payments.get(preauth).ticket is None
