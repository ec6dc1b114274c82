"""End-of-day settlement ("télécollecte"): the totals per scheme (RID, ISO 7816-5) of the card
payments approved since the last settlement, the batch number kept on disk, and the tickets'
history the merchant's screens list.

The totals follow what the acquirer counts (docs/host-protocol.md, field 63): approved payments,
sales and completions of pre-authorizations as debits and refunds as credits, a payment whose
ticket was cancelled (voided, its reversal sent) left out. The AID of each payment comes from
its ticket's card tender (`fiscal.card_reference`), so a payment without a ticket cannot be put
under a scheme and is left out too (and logged).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emv.errors import EmvError
from firmware.journal import Journal, Record
from firmware.messages import SchemeTotals
from firmware.payments import Payment, State

log = logging.getLogger(__name__)

STATE_FILE = "settlement.json"  # in the [state] folder
RID_LENGTH = 5
MAX_BATCH = 999_999  # field 60, n6


class SettlementError(EmvError):
    """The settlement's state cannot be read or written, or the tickets cannot be read."""


@dataclass(frozen=True)
class BatchState:
    batch: int = 1  # the number of the next batch (field 60)
    last_payment: int = 0  # the last payment counted in a batch the host took


def load_state(folder: Path) -> BatchState:
    path = Path(folder) / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return BatchState()
    except (OSError, ValueError) as exc:
        raise SettlementError(f"{path}: cannot be read: {exc}") from None
    batch, last = (raw.get("batch"), raw.get("last_payment")) if isinstance(raw, dict) else (None, None)
    if not (isinstance(batch, int) and 1 <= batch <= MAX_BATCH and isinstance(last, int) and last >= 0):
        raise SettlementError(f"{path}: not a settlement state")
    return BatchState(batch, last)


def save_state(folder: Path, state: BatchState) -> None:
    """Written whole or not at all (a temporary file renamed over the old one, fsynced)."""
    path = Path(folder) / STATE_FILE
    temporary = path.with_suffix(".tmp")
    try:
        with open(temporary, "w") as out:
            json.dump({"batch": state.batch, "last_payment": state.last_payment}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        raise SettlementError(f"{path}: cannot be written: {exc}") from None


def next_state(state: BatchState, last_payment: int) -> BatchState:
    """After a batch the host took: the next number (wrapping to 1 after 999999)."""
    return BatchState(state.batch % MAX_BATCH + 1, max(state.last_payment, last_payment))


def _tickets(journal: Journal, chain: str = "ticket") -> tuple[dict[int, Record], set[int]]:
    records: dict[int, Record] = {}
    cancelled: set[int] = set()
    for record in journal.records(chain):
        records[record.seq] = record
        data = record.data
        if record.type == "cancellation" and isinstance(data, dict) and isinstance(data.get("cancels"), int):
            cancelled.add(data["cancels"])
    return records, cancelled


def _aid(record: Record) -> bytes | None:
    data = record.data
    for tender in data.get("tenders", []) if isinstance(data, dict) else []:
        reference = tender.get("reference") if isinstance(tender, dict) else None
        aid = reference.get("aid") if isinstance(reference, dict) else None
        if isinstance(aid, str):
            try:
                value = bytes.fromhex(aid)
            except ValueError:
                return None
            return value if len(value) >= RID_LENGTH else None
    return None


def scheme_totals(payments: Iterable[Payment], journal: Journal, *, after: int = 0,
                  currency: int | None = None) -> tuple[tuple[SchemeTotals, ...], int]:
    """The totals per RID of the approved payments after payment `after` (in `currency` when
    given), and the last payment looked at."""
    tickets, cancelled = _tickets(journal)
    sums: dict[bytes, list[int]] = {}
    last = after
    for payment in payments:
        if payment.id <= after:
            continue
        if not payment.state.final:
            break  # a payment still under way: the batch ends before it
        last = payment.id
        if payment.state not in (State.APPROVED, State.APPROVED_OFFLINE):
            continue
        if (currency is not None and payment.currency != currency) or payment.kind == "preauth":
            continue  # a pre-authorization sells nothing: its completion is counted
        record = tickets.get(payment.ticket) if payment.ticket is not None else None
        aid = _aid(record) if record is not None else None
        if record is None or aid is None:
            log.warning("settlement: payment %d has no ticket with its AID: left out", payment.id)
            continue
        if payment.ticket in cancelled:
            continue
        row = sums.setdefault(aid[:RID_LENGTH], [0, 0, 0, 0])
        offset = 2 if payment.kind == "refund" else 0
        row[offset] += 1
        row[offset + 1] += payment.amount
    totals = tuple(SchemeTotals(rid, *row) for rid, row in sorted(sums.items()))
    return totals, last


@dataclass(frozen=True)
class TicketEntry:
    """One ticket of the history: what the merchant's list shows and acts on."""

    seq: int
    kind: str
    amount: int
    currency: str
    at: str
    cancelled: bool
    training: bool
    payment: int | None  # the card payment it records, when it is one

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def history(journal: Journal, *, last: int = 10, training: bool = False) -> list[TicketEntry]:
    """The last `last` tickets, newest first (the training chain's when `training`)."""
    chain = ("training-" if training else "") + "ticket"
    records, cancelled = _tickets(journal, chain)
    entries: list[TicketEntry] = []
    for seq in sorted(records, reverse=True)[:last]:
        record = records[seq]
        data = record.data if isinstance(record.data, dict) else {}
        payment = None
        for tender in data.get("tenders", []):
            reference = tender.get("reference") if isinstance(tender, dict) else None
            if isinstance(reference, dict) and isinstance(reference.get("payment"), int):
                payment = reference["payment"]
        entries.append(TicketEntry(seq, record.type, int(data.get("amount", 0)),
                                   str(data.get("currency", "")), record.at, seq in cancelled,
                                   record.training, payment))
    return entries


# The host's verdict on the printed report, in French like the receipts (firmware/receipt.py).
_VERDICTS = {"in_balance": "Totaux concordants", "out_of_balance": "ECART avec la banque",
             "host_unreachable": "Banque injoignable", "refused": "Refuse par la banque"}


def report_lines(report: Any, *, width: int = 32) -> list[str]:
    """The settlement report (`ui.contract.SettlementReport`) as lines for the receipt printer."""
    from firmware.money import format_amount

    def row(label: str, value: str) -> str:
        return f"{label}{value:>{max(1, width - len(label))}}"

    lines = ["TELECOLLECTE".center(width), row("Lot n°", str(report.batch)), "-" * width]
    for line in report.schemes:
        lines.append(line.scheme)
        for label, count, money in (("  Debits", line.debit_count, line.debit),
                                    ("  Credits", line.credit_count, line.credit)):
            amount = f"{format_amount(money.amount, money.exponent)} {money.currency}"
            lines.append(row(f"{label} {count}", amount))
    lines += ["-" * width, _VERDICTS.get(report.result, report.result)]
    if report.day_closed:
        lines.append("Journee cloturee")
    return lines
