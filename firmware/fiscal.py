"""What the fiscal journal holds (French art. 286 I-3° bis CGI, NF525): tickets with their tenders,
duplicates, closures with their totals, and the audit events ("JET").

The payloads are docs/journal-format.md, Payloads; `firmware.journal` signs and stores them.
Records are never changed: a ticket is corrected by a cancellation, its opposite. Training mode
writes to the `training-` chains, so its tickets never count in the real numbering or totals;
its start and end are audit events of the real chain.

Every check that reads the journal before writing (a ticket cancelled once, the copy number of a
reprint, the closure of a period, the degraded state) runs under one lock per journal object and
keeps what it read in memory, catching up with the records written since.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emv.outcome import Outcome, OutcomeKind
from firmware.journal import TRAINING, Journal, JournalError, Record, all_chains, canonical, utc_text
from firmware.money import MAX_AMOUNT

log = logging.getLogger(__name__)

TENDERS = ("card", "cash", "cheque", "meal_voucher", "credit_note")
SALE, REFUND, CANCELLATION = "sale", "refund", "cancellation"
DUPLICATE = "duplicate"
DUPLICATE_MARK = "DUPLICATA"
CLOSURES = ("day", "month", "year")
AUDIT_EVENTS = ("start", "stop", "login", "role", "software_update", "config_change", "export", "archive",
                "clock_change", "degraded_start", "degraded_end", "training_start", "training_end", "error",
                "integrity_failure")
# What a card tender's reference may hold: the terminal's payment and the EMV outcome, no card data.
CARD_REFERENCE = ("payment", "outcome", "aid", "pan_masked", "atc", "authorization_code")

_CURRENCY = re.compile(r"[A-Z]{3}")  # ISO 4217 alphabetic code
_HEX = re.compile(r"(?:[0-9A-F]{2})+")
_MASKED_PAN = re.compile(r"[0-9*]{1,19}")
_AUTHORIZATION_CODE = re.compile(r"[ -~]{1,12}")  # '89', an 6 (EMV 4.4 Book 3, Annex A)
_PERIODS = {"day": re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"),
            "month": re.compile(r"\d{4}-(0[1-9]|1[0-2])"),
            "year": re.compile(r"\d{4}")}
_PERIOD_FORMS = {"day": "YYYY-MM-DD", "month": "YYYY-MM", "year": "YYYY"}
_SCAN_WINDOW = 256  # records read at a time when looking backwards through a chain


class FiscalError(Exception):
    """A fiscal record refused: bad tender, amounts that do not add up, a ticket cancelled twice,
    a period already closed... Nothing was written."""


def chain_of(name: str, training: bool = False) -> str:
    return TRAINING + name if training else name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- tenders ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tender:
    """One means of payment of a ticket: `type` one of `TENDERS`, `amount` in minor units with
    the sign of the ticket; a card tender carries its `reference` (`card_reference`)."""

    type: str
    amount: int
    reference: Mapping[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "amount": self.amount}
        if self.reference is not None:
            out["reference"] = dict(self.reference)
        return out

    @classmethod
    def from_json(cls, value: Any) -> Tender:
        if isinstance(value, Tender):
            return value
        if not isinstance(value, Mapping) or not set(value) <= {"type", "amount", "reference"}:
            raise FiscalError("a tender is {\"type\", \"amount\"} and, for a card, \"reference\"")
        if "type" not in value or "amount" not in value:
            raise FiscalError("a tender has a type and an amount")
        return cls(value["type"], value["amount"], value.get("reference"))


def card_reference(outcome: Outcome, payment: int | None) -> dict[str, Any]:
    """A card tender's reference: the terminal's payment id and the EMV outcome (kind, AID,
    masked PAN, ATC, authorization code); never the PAN or track 2 (PCI DSS 3.4)."""
    code = outcome.authorization_code
    return {
        "payment": payment,
        "outcome": outcome.kind.value,
        "aid": outcome.aid.hex().upper() if outcome.aid else None,
        "pan_masked": outcome.pan_masked,
        "atc": outcome.atc.hex().upper() if outcome.atc else None,
        "authorization_code": code.decode("ascii", "replace") if code else None,
    }


def _check_reference(reference: Any) -> dict[str, Any]:
    """Each field of a card reference checked for its own shape: no field can hold a PAN."""
    if not isinstance(reference, Mapping):
        raise FiscalError("a card tender carries its reference (payment and EMV outcome)")
    unknown = sorted(str(key) for key in reference if key not in CARD_REFERENCE)
    if unknown:
        raise FiscalError(f"a card reference holds only {', '.join(CARD_REFERENCE)}, "
                          f"not {', '.join(unknown)}")
    out = {key: reference.get(key) for key in CARD_REFERENCE}
    payment, outcome = out["payment"], out["outcome"]
    if payment is not None and not (_is_int(payment) and payment > 0):
        raise FiscalError("a card reference's payment is the terminal's payment id")
    if outcome not in {kind.value for kind in OutcomeKind}:
        raise FiscalError("a card reference's outcome is an EMV outcome kind")
    for key, pattern, what in (("aid", _HEX, "hexadecimal"), ("atc", _HEX, "hexadecimal"),
                               ("authorization_code", _AUTHORIZATION_CODE, "printable ASCII, up to 12")):
        value = out[key]
        if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
            raise FiscalError(f"a card reference's {key} is {what}")
    if out["aid"] is not None and not 5 <= len(out["aid"]) // 2 <= 16:  # ISO/IEC 7816-5: RID + PIX
        raise FiscalError("a card reference's aid is 5 to 16 bytes")
    if out["atc"] is not None and len(out["atc"]) != 4:  # '9F36', b 2
        raise FiscalError("a card reference's atc is 2 bytes")
    masked = out["pan_masked"]
    if masked is not None and not (isinstance(masked, str) and _MASKED_PAN.fullmatch(masked)
                                   and "*" in masked and sum(c.isdigit() for c in masked) <= 10):
        # PCI DSS 3.4: at most the first 6 and the last 4 digits shown
        raise FiscalError("a card reference's pan_masked shows at most 10 digits of the PAN")
    return out


def _check_tender(value: Any, sign: int) -> dict[str, Any]:
    tender = Tender.from_json(value)
    if tender.type not in TENDERS:
        raise FiscalError(f"tender type {tender.type!r} is not one of {', '.join(TENDERS)}")
    if not _is_int(tender.amount) or tender.amount == 0 or (tender.amount > 0) != (sign > 0):
        raise FiscalError(f"a {tender.type} tender's amount is a non-zero integer with the ticket's sign")
    out: dict[str, Any] = {"type": tender.type, "amount": tender.amount}
    if tender.type == "card":
        out["reference"] = _check_reference(tender.reference)
    elif tender.reference is not None:
        raise FiscalError("only a card tender carries a reference")
    return out


def _check_currency(currency: Any) -> str:
    if not (isinstance(currency, str) and _CURRENCY.fullmatch(currency)):
        raise FiscalError(f"currency {currency!r} is not an ISO 4217 alphabetic code")
    return currency


def _ticket(amount: Any, currency: Any, tenders: Any, sign: int, details: Any) -> dict[str, Any]:
    """docs/journal-format.md, Payloads, Tickets."""
    if not _is_int(amount) or amount == 0:
        raise FiscalError("a ticket's amount is a non-zero integer of minor units")
    if (amount > 0) != (sign > 0):
        raise FiscalError("a sale's amount is positive, a refund's negative")
    if abs(amount) > MAX_AMOUNT:
        raise FiscalError(f"a ticket's amount is at most {MAX_AMOUNT} minor units")
    payload: dict[str, Any] = {"amount": amount, "currency": _check_currency(currency)}
    if isinstance(tenders, str | bytes | Mapping) or not isinstance(tenders, Sequence) or not tenders:
        raise FiscalError("a ticket has a list of one or more tenders")
    payload["tenders"] = [_check_tender(tender, sign) for tender in tenders]
    paid = sum(tender["amount"] for tender in payload["tenders"])
    if paid != amount:
        raise FiscalError(f"the tenders sum to {paid}, the ticket's amount is {amount}")
    if details is not None:
        if not isinstance(details, Mapping):
            raise FiscalError("a ticket's details are a JSON object")
        payload["details"] = dict(details)
    _check_canonical(payload)
    return payload


def _check_canonical(payload: Mapping[str, Any]) -> None:
    try:
        canonical(dict(payload))
    except (JournalError, TypeError, ValueError) as exc:
        raise FiscalError(f"not a journal payload: {exc}") from None


# --- what the journal holds, kept in memory ----------------------------------------------------

@dataclass
class _Memo:
    """What this module has read of one journal, up to `seen[chain]` for each chain."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    seen: dict[str, int] = field(default_factory=dict)
    cancelled: dict[str, set[int]] = field(default_factory=dict)  # ticket chain -> seqs cancelled
    copies: dict[str, dict[int, int]] = field(default_factory=dict)  # duplicate chain -> ticket -> copies
    closed: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # closure chain -> kind -> periods
    # closure chain -> kind -> payload of its last closure; and the last closure of any kind
    last_closure: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    latest_closure: dict[str, dict[str, Any]] = field(default_factory=dict)
    degraded: bool | None = None  # unknown until first looked up


_memos: weakref.WeakKeyDictionary[Journal, _Memo] = weakref.WeakKeyDictionary()
_memos_lock = threading.Lock()


def _memo(journal: Journal) -> _Memo:
    with _memos_lock:
        memo = _memos.get(journal)
        if memo is None:
            memo = _memos[journal] = _Memo()
        return memo


def _catch_up(journal: Journal, memo: _Memo, chain: str, take: Callable[[Record], None]) -> None:
    for record in journal.records(chain, since=memo.seen.get(chain, 0) + 1):
        take(record)
        memo.seen[chain] = record.seq


def _data(record: Record) -> dict[str, Any]:
    data = record.data
    if not isinstance(data, dict):
        raise FiscalError(f"{record.chain} {record.seq}: the payload is not a JSON object")
    return data


def _cancelled(journal: Journal, memo: _Memo, chain: str) -> set[int]:
    found = memo.cancelled.setdefault(chain, set())

    def take(record: Record) -> None:
        if record.type == CANCELLATION:
            found.add(_data(record).get("cancels"))

    _catch_up(journal, memo, chain, take)
    return found


def _copies(journal: Journal, memo: _Memo, chain: str) -> dict[int, int]:
    found = memo.copies.setdefault(chain, {})

    def take(record: Record) -> None:
        data = _data(record)
        ticket, copy = data.get("ticket"), data.get("copy")
        if _is_int(ticket) and _is_int(copy):
            found[ticket] = max(found.get(ticket, 0), copy)

    _catch_up(journal, memo, chain, take)
    return found


def _closures(journal: Journal, memo: _Memo, chain: str) -> None:
    closed = memo.closed.setdefault(chain, {kind: set() for kind in CLOSURES})
    last = memo.last_closure.setdefault(chain, {})

    def take(record: Record) -> None:
        if record.type not in CLOSURES:
            return
        data = _data(record)
        closed[record.type].add(data.get("period"))
        last[record.type] = data
        memo.latest_closure[chain] = data

    _catch_up(journal, memo, chain, take)


def _find(journal: Journal, chain: str, seq: Any) -> Record:
    if not _is_int(seq) or seq < 1:
        raise FiscalError(f"{seq!r} is not a ticket number")
    for record in journal.records(chain, since=seq, batch=1):
        if record.seq == seq:
            return record
        break
    raise FiscalError(f"there is no {chain} {seq}")


def _backwards(journal: Journal, chain: str) -> Iterator[Record]:
    """The records of `chain`, last first, read `_SCAN_WINDOW` at a time."""
    head = journal.head(chain)
    end = 0 if head is None else head.seq
    while end >= 1:
        start = max(1, end - _SCAN_WINDOW + 1)
        window = list(itertools.islice(journal.records(chain, since=start, batch=end - start + 1),
                                       end - start + 1))
        yield from reversed(window)
        end = start - 1


# --- tickets ---------------------------------------------------------------------------------

def _append_ticket(journal: Journal, kind: str, payload: dict[str, Any], training: bool) -> Record:
    with _memo(journal).lock:
        return journal.append(chain_of("ticket", training), kind, payload)


def record_sale(journal: Journal, amount: int, currency: str, tenders: Sequence[Tender | Mapping[str, Any]],
                *, training: bool = False, details: Mapping[str, Any] | None = None) -> Record:
    """A sale ticket: `amount` > 0 minor units of `currency` (ISO 4217 alphabetic), paid by
    `tenders` (positive, summing to it); `details` (a JSON object) are kept under "details"."""
    return _append_ticket(journal, SALE, _ticket(amount, currency, tenders, 1, details), training)


def record_refund(journal: Journal, amount: int, currency: str,
                  tenders: Sequence[Tender | Mapping[str, Any]], *, training: bool = False,
                  details: Mapping[str, Any] | None = None) -> Record:
    """A refund ticket: `amount` < 0, its `tenders` negative too, summing to it."""
    return _append_ticket(journal, REFUND, _ticket(amount, currency, tenders, -1, details), training)


def cancel(journal: Journal, seq: int, *, training: bool = False) -> Record:
    """A cancellation of sale ticket `seq`: the opposite amount and tenders, and "cancels": `seq`.
    Refused for an unknown ticket, a ticket already cancelled, and a cancellation or a refund:
    a cancellation's amount is negative (docs/journal-format.md, Payloads, Tickets), so a refund
    made in error is corrected by a new sale."""
    chain = chain_of("ticket", training)
    memo = _memo(journal)
    with memo.lock:
        original = _find(journal, chain, seq)
        if original.type != SALE:
            raise FiscalError(f"{chain} {seq} is a {original.type}: only a sale is cancelled")
        if seq in _cancelled(journal, memo, chain):
            raise FiscalError(f"{chain} {seq} is already cancelled")
        data = _data(original)
        try:
            tenders = [Tender.from_json(tender) for tender in data["tenders"]]
            payload = {"amount": -data["amount"], "currency": data["currency"], "cancels": seq,
                       "tenders": [Tender(t.type, -t.amount, t.reference).as_json() for t in tenders]}
        except (KeyError, TypeError) as exc:
            raise FiscalError(f"{chain} {seq} is not a ticket that can be cancelled: {exc}") from None
        _check_canonical(payload)
        return journal.append(chain, CANCELLATION, payload)


def reprint(journal: Journal, seq: int, *, training: bool = False) -> Record:
    """A duplicate of ticket `seq`: {"ticket", "copy": n, "mark": "DUPLICATA"}, `n` counting the
    reprints of that ticket from 1."""
    tickets, duplicates = chain_of("ticket", training), chain_of(DUPLICATE, training)
    memo = _memo(journal)
    with memo.lock:
        _find(journal, tickets, seq)
        copy = _copies(journal, memo, duplicates).get(seq, 0) + 1
        return journal.append(duplicates, DUPLICATE, {"ticket": seq, "copy": copy, "mark": DUPLICATE_MARK})


# --- closures --------------------------------------------------------------------------------

def _check_period(kind: str, period: Any) -> None:
    pattern = _PERIODS.get(kind)
    if pattern is None:
        raise FiscalError(f"a closure is one of {', '.join(CLOSURES)}, not {kind!r}")
    if not (isinstance(period, str) and pattern.fullmatch(period)):
        raise FiscalError(f"a {kind} closure's period is {_PERIOD_FORMS[kind]}, not {period!r}")


def _add(totals: dict[str, dict[str, Any]], data: Mapping[str, Any]) -> None:
    """One ticket into the closure's `totals` (docs/journal-format.md, Payloads, Closures)."""
    amount = data["amount"]
    into = totals.setdefault(data["currency"], {"total": 0, "sales": 0, "refunds": 0, "count": 0,
                                                 "tenders": {}})
    into["total"] += amount
    into["sales" if amount > 0 else "refunds"] += amount
    into["count"] += 1
    for tender in data["tenders"]:
        into["tenders"][tender["type"]] = into["tenders"].get(tender["type"], 0) + tender["amount"]


def close(journal: Journal, kind: str, period: str, *, training: bool = False) -> Record:
    """The `kind` closure ("day", "month", "year") of `period` (YYYY-MM-DD, YYYY-MM, YYYY): the
    tickets since the previous closure of the same kind, the perpetual totals, and the heads of
    every chain. Refused for a period already closed or before the last one of that kind."""
    _check_period(kind, period)
    tickets, closures = chain_of("ticket", training), chain_of("closure", training)
    memo = _memo(journal)
    with memo.lock:
        _closures(journal, memo, closures)
        if period in memo.closed[closures][kind]:
            raise FiscalError(f"the {kind} {period} is already closed")
        previous = memo.last_closure[closures].get(kind)
        if previous is not None and period < str(previous.get("period")):
            raise FiscalError(f"the {kind} {period} comes before the last one closed, "
                              f"{previous.get('period')}")
        latest = memo.latest_closure.get(closures)
        head = journal.head(tickets)
        last = 0 if head is None else head.seq
        try:
            first = 1 if previous is None else previous["to"] + 1
            carried = 0 if latest is None else latest["to"]
            perpetual = {} if latest is None else {currency: dict(sums)
                                                   for currency, sums in latest["perpetual"].items()}
        except (KeyError, TypeError, AttributeError) as exc:
            raise FiscalError(f"the last closure of {closures} cannot be read: {exc}") from None
        if last < carried:
            raise FiscalError(f"{tickets} ends at {last}, before the last closure's {carried}: "
                              "records are missing")
        totals: dict[str, dict[str, Any]] = {}
        for record in journal.records(tickets, since=min(first, carried + 1)):
            if record.seq > last:
                break
            data = _data(record)
            try:
                if record.seq >= first:
                    _add(totals, data)
                if record.seq > carried:
                    sums = perpetual.setdefault(data["currency"], {"total": 0, "absolute": 0})
                    sums["total"] += data["amount"]
                    sums["absolute"] += abs(data["amount"])
            except (KeyError, TypeError) as exc:
                raise FiscalError(f"{tickets} {record.seq} cannot be totalled: {exc}") from None
        for sums in totals.values():  # a tender type that sums to 0 is left out
            sums["tenders"] = {kind: amount for kind, amount in sums["tenders"].items() if amount}
        payload = {"period": period, "from": first, "to": last, "totals": totals, "perpetual": perpetual,
                   "heads": journal.heads(training)}
        return journal.append(closures, kind, payload)


# --- audit events (JET) ----------------------------------------------------------------------

def audit(journal: Journal, event: str, **details: Any) -> Record:
    """One audit event of the real chain: {"event": `event`, **details}, its type `event`."""
    if event not in AUDIT_EVENTS:
        raise FiscalError(f"{event!r} is not an audit event")
    payload = {"event": event, **details}
    _check_canonical(payload)
    memo = _memo(journal)
    with memo.lock:
        record = journal.append("audit", event, payload)
        if event in ("degraded_start", "degraded_end"):
            memo.degraded = event == "degraded_start"
        return record


def start(journal: Journal, version: str, *, config_digest: str | None = None,
          now: datetime.datetime | None = None) -> list[str]:
    """The start event, after the truncation guard's check (docs/journal-format.md, Truncation
    guard): each problem found is journalled as an integrity failure, and returned for the
    merchant. What changed since the last start is journalled with it: the software version
    (`software_update`), the configuration (`config_change`, by `config_digest`, a hash of the
    configuration file), and a clock that went back before the journal's last record
    (`clock_change`)."""
    problems = journal.check_guard()
    for problem in problems:
        log.critical("fiscal journal: %s", problem)
    events: list[tuple[str, str, dict[str, Any]]] = []
    previous = next((r.data for r in _backwards(journal, "audit") if r.type == "start"), None)
    if previous is not None and previous.get("version") != version:
        events.append(("audit", "software_update",
                       {"event": "software_update", "from": previous.get("version"), "to": version}))
    earlier_config = None if previous is None else previous.get("config")
    if config_digest is not None and earlier_config not in (None, config_digest):
        events.append(("audit", "config_change",
                       {"event": "config_change", "from": earlier_config, "to": config_digest}))
    latest = max((head.at for chain in all_chains(False) + all_chains(True)
                  if (head := journal.head(chain)) is not None), default=None)
    clock = utc_text(now or datetime.datetime.now(datetime.UTC))
    if latest is not None and clock < latest:
        log.warning("fiscal journal: the clock (%s) is behind the journal's last record (%s)", clock, latest)
        events.append(("audit", "clock_change",
                       {"event": "clock_change", "last_record": latest, "clock": clock}))
    begin: dict[str, Any] = {"event": "start", "version": version}
    if config_digest is not None:
        begin["config"] = config_digest
    with _memo(journal).lock:
        journal.append_many([("audit", "start", begin), *events,
                             *(("audit", "integrity_failure", {"event": "integrity_failure", "problem": p})
                               for p in problems)])
    return problems


def stop(journal: Journal, **details: Any) -> Record:
    return audit(journal, "stop", **details)


def training_start(journal: Journal, **details: Any) -> Record:
    """Training mode begins: the event is real, the records that follow go to `training-` chains."""
    return audit(journal, "training_start", **details)


def training_end(journal: Journal, **details: Any) -> Record:
    return audit(journal, "training_end", **details)


def _last_degraded(journal: Journal) -> bool:
    for record in _backwards(journal, "audit"):
        if record.type in ("degraded_start", "degraded_end"):
            return record.type == "degraded_start"
    return False


def degraded(journal: Journal, on: bool, cause: str) -> Record | None:
    """Degraded (offline) mode begins (`on`) or ends, for `cause`: journalled only when that
    changes the state the last such event left; None when it does not."""
    memo = _memo(journal)
    with memo.lock:
        if memo.degraded is None:
            memo.degraded = _last_degraded(journal)
        if memo.degraded == on:
            return None
        return audit(journal, "degraded_start" if on else "degraded_end", cause=cause)
