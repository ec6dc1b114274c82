"""Verification of the fiscal journal, a database or an archive, by docs/journal-format.md alone:
every signature, every link and number, the payloads, closures against totals recomputed from the
tickets, the truncation guard, archive manifests.

It streams: records are read in batches in chain then seq order (one read-only snapshot of the
database, or the archive's `records.jsonl` line by line), the signatures are checked in a pool of
processes with a bounded number of chunks in flight, and closures are checked against running
totals kept only at the ticket positions closures name (found by a first pass over the closure
chains). Memory does not grow with the number of records, only with the problems found.

A report names the public key used and where it came from: a key taken from beside the database
or from inside the archive proves the records intact, not that they come from this device.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import sqlite3
import zipfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from firmware.journal import (
    ARCHIVE_MAGIC,
    CHAINS,
    FILE_NAME,
    HEAD_FILE,
    HEAD_MAGIC,
    PUBLIC_KEY_FILE,
    RECORD_MAGIC,
    SIGNATURE_BYTES,
    TRAINING,
    VERSION,
    JournalError,
    key_id,
    lines,
    load_public_key,
    verify,
)
from firmware.journal_archive import (
    MANIFEST_MEMBER,
    MANIFEST_SIG_MEMBER,
    PUBLIC_KEY_MEMBER,
    RECORDS_MEMBER,
    ArchiveError,
    period_bounds,
)

# docs/journal-format.md, Chains and Payloads: the record types of each chain.
TICKET_TYPES = frozenset({"sale", "refund", "cancellation"})
AUDIT_EVENTS = frozenset({"start", "stop", "login", "role", "software_update", "config_change", "export",
                          "archive", "clock_change", "degraded_start", "degraded_end", "training_start",
                          "training_end", "error", "integrity_failure"})
TYPES: dict[str, frozenset[str]] = {"ticket": TICKET_TYPES, "duplicate": frozenset({"duplicate"}),
                                    "closure": frozenset({"day", "month", "year"}), "audit": AUDIT_EVENTS,
                                    "archive": frozenset({"archive"})}
TENDERS = frozenset({"card", "cash", "cheque", "meal_voucher", "credit_note"})
_CLOSURE_PERIODS = {"day": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
                    "month": re.compile(r"[0-9]{4}-[0-9]{2}"), "year": re.compile(r"[0-9]{4}")}
_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_TYPE = re.compile(r"[a-z_]+")
_HEX = re.compile(r"(?:[0-9a-f]{2})*")
_FIELDS = frozenset({"version", "chain", "seq", "at", "type", "training", "key", "prev", "payload", "sig"})
_ROWS = "id, version, chain, seq, at, type, training, key, prev, payload, sig"

CHUNK = 2000  # records per signature job
IN_FLIGHT = 3  # jobs queued per worker
POOL_AFTER = 20_000  # automatic mode: records checked in this process before a pool starts
_READ_BATCH = 5000


class VerifyError(JournalError):
    """Verification cannot start: no such journal or archive, no usable public key."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the chain and seq it concerns (None for the files around the records)."""

    chain: str | None
    seq: int | None
    reason: str

    def __str__(self) -> str:
        if self.chain is None:
            return self.reason
        if self.seq is None:
            return f"{self.chain}: {self.reason}"
        return f"{self.chain} {self.seq}: {self.reason}"

    def as_json(self) -> dict[str, Any]:
        return {"chain": self.chain, "seq": self.seq, "reason": self.reason}


@dataclass
class VerifyReport:
    path: str
    kind: str  # "database" or "archive"
    key_id: str
    key_source: str  # where the public key came from
    origin_proven: bool  # the key was given, not taken from beside the records
    records: dict[str, int] = field(default_factory=dict)  # records checked per chain
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "ok": self.ok, "key": self.key_id,
                "key_source": self.key_source, "origin_proven": self.origin_proven,
                "records": dict(sorted(self.records.items())),
                "problems": [p.as_json() for p in self.problems], "notes": list(self.notes)}

    def as_text(self) -> str:
        out = [f"{self.kind.capitalize()} {self.path}",
               f"Key         {self.key_id} ({self.key_source})"]
        if not self.origin_proven:
            out.append("            this key proves the records intact, not that they come from the device: "
                       "pass --pubkey with the device's published key to prove that")
        for chain, count in sorted(self.records.items()):
            out.append(f"  {chain:18} {count} record(s)")
        out.extend(f"Note        {note}" for note in self.notes)
        if self.ok:
            out.append("INTACT")
        else:
            out.append(f"BROKEN      {len(self.problems)} problem(s)")
            out.extend(f"  {problem}" for problem in self.problems)
        return "\n".join(out)


@dataclass(frozen=True)
class _Key:
    pem: bytes
    public: ec.EllipticCurvePublicKey
    id: str
    source: str
    origin_proven: bool


def _key(pem: bytes, source: str, proven: bool) -> _Key:
    try:
        public = load_public_key(pem)
    except JournalError as exc:
        raise VerifyError(f"{source}: {exc}") from None
    return _Key(pem, public, key_id(public), source, proven)


# --- signatures, in a pool of processes ---------------------------------------------------------

_worker: dict[str, ec.EllipticCurvePublicKey] = {}


def _start_worker(pem: bytes) -> None:
    _worker["key"] = load_public_key(pem)


def _bad_signatures(public: ec.EllipticCurvePublicKey,
                    chunk: list[tuple[str, int, bytes, bytes]]) -> list[tuple[str, int]]:
    return [(chain, seq) for chain, seq, data, sig in chunk if not verify(public, data, sig)]


def _check_chunk(chunk: list[tuple[str, int, bytes, bytes]]) -> list[tuple[str, int]]:
    return _bad_signatures(_worker["key"], chunk)


class _Signatures:
    """ECDSA checks in `workers` processes (0: here), at most `IN_FLIGHT` chunks per worker
    waiting. `workers=None`: here for the first `POOL_AFTER` records, then os.cpu_count()."""

    def __init__(self, key: _Key, workers: int | None) -> None:
        self._key = key
        self._auto = workers is None
        self._workers = (os.cpu_count() or 1) if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[Future[list[tuple[str, int]]]] = deque()
        self._chunk: list[tuple[str, int, bytes, bytes]] = []
        self._done = 0
        self.bad: list[tuple[str, int]] = []
        self.pool_size = 0
        if workers:
            self._start()

    def _start(self) -> None:
        self._pool = ProcessPoolExecutor(self._workers, multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=(self._key.pem,))
        self.pool_size = self._workers

    def add(self, chain: str, seq: int, data: bytes, sig: bytes) -> None:
        self._chunk.append((chain, seq, data, sig))
        if len(self._chunk) >= CHUNK:
            self._send()

    def _send(self) -> None:
        chunk, self._chunk = self._chunk, []
        if not chunk:
            return
        self._done += len(chunk)
        if self._pool is None and self._auto and self._workers > 1 and self._done > POOL_AFTER:
            self._start()
        if self._pool is None:
            self.bad.extend(_bad_signatures(self._key.public, chunk))
            return
        while len(self._pending) >= IN_FLIGHT * self._workers:
            self._collect()
        try:
            self._pending.append(self._pool.submit(_check_chunk, chunk))
        except BrokenProcessPool as exc:
            raise VerifyError(f"the signature workers stopped: {exc}") from None

    def _collect(self) -> None:
        try:
            self.bad.extend(self._pending.popleft().result())
        except BrokenProcessPool as exc:
            raise VerifyError(f"the signature workers stopped: {exc}") from None

    def finish(self) -> list[tuple[str, int]]:
        self._send()
        while self._pending:
            self._collect()
        return self.bad

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# --- running totals of the tickets ----------------------------------------------------------------

class _Sums:
    """Running figures of one currency over a ticket chain (docs/journal-format.md, Payloads,
    Closures): sales are the positive amounts, refunds the negative ones (cancellations included)."""

    __slots__ = ("absolute", "count", "refunds", "sales", "tenders", "total")

    def __init__(self) -> None:
        self.total = self.sales = self.refunds = self.count = self.absolute = 0
        self.tenders: dict[str, int] = {}

    def copy(self) -> _Sums:
        other = _Sums()
        other.total, other.sales, other.refunds, other.count, other.absolute = (
            self.total, self.sales, self.refunds, self.count, self.absolute)
        other.tenders = dict(self.tenders)
        return other


Snapshot = dict[str, _Sums]


def _difference(upper: Snapshot, lower: Snapshot) -> dict[str, dict[str, Any]]:
    """The closure `totals` of the tickets after `lower` up to `upper`, zero tenders left out."""
    out: dict[str, dict[str, Any]] = {}
    for currency, high in upper.items():
        low = lower.get(currency, _Sums())
        if high.count == low.count:
            continue
        tenders = {t: high.tenders.get(t, 0) - low.tenders.get(t, 0) for t in high.tenders}
        out[currency] = {"total": high.total - low.total, "sales": high.sales - low.sales,
                         "refunds": high.refunds - low.refunds, "count": high.count - low.count,
                         "tenders": {t: v for t, v in tenders.items() if v}}
    return out


def _is_int(value: Any) -> bool:
    return type(value) is int


def _ticket_problem(kind: str, data: dict[str, Any]) -> str | None:
    """docs/journal-format.md, Payloads, Tickets: what is wrong with this ticket, or None."""
    amount, tenders = data.get("amount"), data.get("tenders")
    if not _is_int(amount) or amount == 0:
        return "the amount is not a non-zero integer"
    if (amount > 0) != (kind == "sale"):
        return f"a {kind}'s amount {amount} has the wrong sign"
    if not isinstance(data.get("currency"), str):
        return "no currency code"
    if not isinstance(tenders, list) or not tenders:
        return "no tenders"
    paid = 0
    for tender in tenders:
        if not (isinstance(tender, dict) and tender.get("type") in TENDERS and _is_int(tender.get("amount"))):
            return f"a tender is not one of {', '.join(sorted(TENDERS))} with an integer amount"
        if (tender["amount"] > 0) != (amount > 0):
            return "a tender's amount has not the ticket's sign"
        paid += tender["amount"]
    if paid != amount:
        return f"the tenders sum to {paid}, the amount is {amount}"
    if kind == "cancellation" and not (_is_int(data.get("cancels")) and data["cancels"] >= 1):
        return "a cancellation names no ticket (\"cancels\")"
    return None


# --- the checks -----------------------------------------------------------------------------

@dataclass
class _Chain:
    count: int = 0
    first: int | None = None  # seq of the first record read
    last_seq: int | None = None  # None: where the chain starts is not known (no manifest)
    last_sig: str = ""
    last_where: int = -1
    announced: int | None = None  # an archive's manifest: the chain's first seq
    missing: list[list[int]] = field(default_factory=list)  # [first, last] runs not (yet) seen


@dataclass
class _Plan:
    """What the first pass found: the ticket positions closures need, and the (chain, seq) ->
    sig that closures and the heads file name."""

    positions: dict[str, set[int]] = field(default_factory=dict)
    wanted: dict[tuple[str, int], list[tuple[Problem, str]]] = field(default_factory=dict)

    def want(self, chain: Any, seq: Any, sig: Any, owner: Problem) -> None:
        if isinstance(chain, str) and _is_int(seq) and seq >= 1 and isinstance(sig, str):
            self.wanted.setdefault((chain, seq), []).append((owner, sig))

    def closure(self, chain: str, seq: int, data: Any) -> None:
        if not isinstance(data, dict):
            return
        first, last = data.get("from"), data.get("to")
        tickets = chain.replace("closure", "ticket")
        if _is_int(first) and _is_int(last):
            self.positions.setdefault(tickets, set()).update((first - 1, last))
        heads = data.get("heads")
        if isinstance(heads, dict):
            for name, head in heads.items():
                if isinstance(head, dict):
                    self.want(name, head.get("seq"), head.get("sig"),
                              Problem(chain, seq, f"heads: names {name}"))


def _no_float(text: str) -> Any:
    raise ValueError(f"not an integer: {text}")


_parse = json.JSONDecoder(parse_float=_no_float, parse_constant=_no_float).decode
# docs/journal-format.md, Canonical JSON
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


class _Checker:
    def __init__(self, report: VerifyReport, key: _Key, signatures: _Signatures, plan: _Plan) -> None:
        self.report = report
        self.key = key
        self.signatures = signatures
        self.plan = plan
        self.chains: dict[str, _Chain] = {}
        self.sums: dict[str, Snapshot] = {}
        self.snapshots: dict[str, dict[int, Snapshot]] = {}
        self.closures: list[tuple[str, int, str, dict[str, Any]]] = []
        self.found: set[tuple[str, int]] = set()
        self.period: tuple[str, str] | None = None  # an archive's [start, end) of `at`

    def problem(self, chain: str | None, seq: int | None, reason: str) -> None:
        self.report.problems.append(Problem(chain, seq, reason))

    def start_chain(self, chain: str, last_seq: int | None, last_sig: str) -> None:
        self.chains[chain] = _Chain(last_seq=last_seq, last_sig=last_sig,
                                    announced=None if last_seq is None else last_seq + 1)

    def add(self, where: int, chain: str, seq: int, at: str, kind: str, training: int, key: str, prev: str,
            payload: str, data: Any, sig: bytes) -> None:
        """One record; `data` is its payload already parsed (archives) or None (databases)."""
        base = chain.removeprefix(TRAINING)
        records = self.report.records
        records[chain] = records.get(chain, 0) + 1
        if base not in TYPES:
            self.problem(chain, seq, "not a chain of the journal")
            return
        if seq < 1:
            self.problem(chain, seq, "a seq counts from 1")
            return
        state = self.chains.get(chain)
        if state is None:
            state = self.chains[chain] = _Chain(last_seq=0 if self.period is None else None)
        counted = self._sequence(state, where, chain, seq, prev, sig)
        if training != (1 if chain.startswith(TRAINING) else 0):
            self.problem(chain, seq, f"training flag {training} does not match the chain")
        if not _AT.fullmatch(at):
            self.problem(chain, seq, f"time {at!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
        elif self.period is not None and not at < self.period[1]:
            self.problem(chain, seq, f"recorded at {at}, after the archive's period")
        elif self.period is not None and state.count == 1 and at < self.period[0]:
            self.problem(chain, seq, f"recorded at {at}, before the archive's period")
        if not (_TYPE.fullmatch(kind) and kind in TYPES[base]):
            self.problem(chain, seq, f"type {kind!r} is not one of the {base} chain's")
        if data is None:
            try:
                data = _parse(payload)
            except ValueError as exc:
                self.problem(chain, seq, f"unreadable payload: {exc}")
            else:
                if _dumps(data) != payload:
                    self.problem(chain, seq, "the payload is not canonical JSON")
        if data is not None and not isinstance(data, dict):
            self.problem(chain, seq, "the payload is not a JSON object")
            data = None
        if key != self.key.id:
            self.problem(chain, seq, f"signed by unknown key id {key!r} (the key used is {self.key.id})")
        elif len(sig) != SIGNATURE_BYTES:
            self.problem(chain, seq, f"the signature is {len(sig)} bytes, not {SIGNATURE_BYTES}")
        else:
            # docs/journal-format.md, A record: what is signed
            signed = f"{RECORD_MAGIC}\n{chain}\n{seq}\n{at}\n{kind}\n{training}\n{key}\n{prev}\n{payload}\n"
            self.signatures.add(chain, seq, signed.encode(), sig)
        wanted = self.plan.wanted.get((chain, seq))
        if wanted is not None:
            self.found.add((chain, seq))
            for owner, expected in wanted:
                if expected != sig.hex():
                    self.problem(owner.chain, owner.seq,
                                 f"{owner.reason} seq {seq} with a signature the record does not have")
        if base == "ticket" and counted:
            self._ticket(chain, seq, kind, data)
        elif base == "closure" and data is not None:
            self.closures.append((chain, seq, kind, data))
        elif base == "audit" and data is not None and data.get("event") != kind:
            self.problem(chain, seq, f"the event {data.get('event')!r} is not the record's type {kind!r}")

    def _sequence(self, state: _Chain, where: int, chain: str, seq: int, prev: str, sig: bytes) -> bool:
        """Numbering and links (docs/journal-format.md, A record: seq and prev). False for a
        duplicate seq, which does not count twice."""
        state.count += 1
        if state.first is None:
            state.first = seq
        if where < state.last_where:
            self.problem(chain, seq, f"stored after the record that follows it (row {where}, before row "
                                     f"{state.last_where})")
        last = state.last_seq
        if state.announced is not None and seq < state.announced:
            self.problem(chain, seq, f"before seq {state.announced}, where the manifest starts the chain")
            return False
        if last is not None and seq <= last:
            if seq == last:
                self.problem(chain, seq, "duplicate seq")
                return False
            for run in state.missing:
                if run[0] <= seq <= run[1]:
                    self._split(state, run, seq)
                    break
            self.problem(chain, seq, f"out of order: comes after seq {last}")
            return True
        if last is not None and seq > last + 1:
            state.missing.append([last + 1, seq - 1])
        elif last is not None and prev != state.last_sig:
            what = "the signature of the record before it" if seq > 1 else "empty (seq 1)"
            if seq == state.announced and seq > 1:
                what = "the manifest's prev"
            self.problem(chain, seq, f"broken link: prev is not {what}")
        state.last_seq, state.last_sig, state.last_where = seq, sig.hex(), where
        return True

    @staticmethod
    def _split(state: _Chain, run: list[int], seq: int) -> None:
        state.missing.remove(run)
        if run[0] < seq:
            state.missing.append([run[0], seq - 1])
        if seq < run[1]:
            state.missing.append([seq + 1, run[1]])

    def _ticket(self, chain: str, seq: int, kind: str, data: dict[str, Any] | None) -> None:
        sums = self.sums.setdefault(chain, {})
        if data is not None and kind in TICKET_TYPES:
            wrong = _ticket_problem(kind, data)
            if wrong is not None:
                self.problem(chain, seq, f"ticket payload: {wrong}")
            amount, currency = data.get("amount"), data.get("currency")
            if _is_int(amount) and isinstance(currency, str):
                into = sums.get(currency)
                if into is None:
                    into = sums[currency] = _Sums()
                into.total += amount
                if amount > 0:
                    into.sales += amount
                else:
                    into.refunds += amount
                into.count += 1
                into.absolute += abs(amount)
                for tender in data.get("tenders") or ():
                    if isinstance(tender, dict) and isinstance(tender.get("type"), str) \
                            and _is_int(tender.get("amount")):
                        into.tenders[tender["type"]] = into.tenders.get(tender["type"], 0) + tender["amount"]
        if seq in self.plan.positions.get(chain, ()):
            self.snapshots.setdefault(chain, {})[seq] = {c: s.copy() for c, s in sums.items()}

    # --- at the end -------------------------------------------------------------------------

    def finish(self, *, whole: bool) -> None:
        """`whole`: the records are the whole journal (a database), not an archive's part."""
        for chain, seq in self.signatures.finish():
            self.problem(chain, seq, "bad signature")
        for chain, state in self.chains.items():
            for first, last in sorted(state.missing):
                what = f"record {first} is" if first == last else f"records {first} to {last} are"
                self.problem(chain, None, f"sequence gap: {what} missing")
        for (chain, seq), owners in self.plan.wanted.items():
            if (chain, seq) in self.found:
                continue
            state = self.chains.get(chain)
            inside = state is not None and state.first is not None and state.first <= seq
            for owner, _sig in owners:
                if whole or inside:
                    ends = 0 if state is None or state.last_seq is None else state.last_seq
                    self.problem(owner.chain, owner.seq, f"truncated: {owner.reason} seq {seq}, the chain "
                                                         f"ends at seq {ends}")
                else:
                    self.report.notes.append(f"{owner}: seq {seq} is not in this archive")
        self._closures(whole)

    def _closures(self, whole: bool) -> None:
        anchors: dict[str, dict[str, tuple[int, int]]] = {}
        ends: dict[tuple[str, str], int] = {}  # (chain, type) -> `to` of the last such closure
        for chain, seq, kind, data in self.closures:
            tickets = chain.replace("closure", "ticket")
            first, last = data.get("from"), data.get("to")
            totals, perpetual = data.get("totals"), data.get("perpetual")
            period = data.get("period")
            if not (_is_int(first) and _is_int(last) and first >= 1 and last >= first - 1
                    and isinstance(totals, dict) and isinstance(perpetual, dict)
                    and isinstance(data.get("heads"), dict)):
                self.problem(chain, seq, "closure payload: from, to, totals, perpetual or heads unreadable")
                continue
            form = _CLOSURE_PERIODS.get(kind)
            if form is not None and not (isinstance(period, str) and form.fullmatch(period)):
                self.problem(chain, seq, f"closure payload: period {period!r} is not a {kind}'s")
            # docs/journal-format.md, Closures: from the previous closure of the same type on
            before = ends.get((chain, kind), 0 if whole else None)
            if before is not None and first != before + 1:
                self.problem(chain, seq, f"covers tickets from {first}, where the previous {kind} closure "
                                         f"leaves off at {before + 1}")
            ends[(chain, kind)] = last
            snapshots = self.snapshots.get(tickets, {})
            start = self.chains.get(tickets)
            base = 0 if whole else None
            if not whole and start is not None and start.first is not None:
                base = start.first - 1
            empty: Snapshot = {}
            lower = empty if first - 1 == base else snapshots.get(first - 1)
            upper = empty if last == base else snapshots.get(last)
            if upper is None or lower is None:
                if whole:
                    absent = last if upper is None else first - 1
                    self.problem(chain, seq, f"closes {tickets} {first} to {last}, but {tickets} {absent} is "
                                             "not in the journal")
                else:
                    self.report.notes.append(f"{chain} {seq}: tickets {first} to {last} are not all in this "
                                             "archive; its totals are not checked")
                continue
            self._compare(chain, seq, "totals", totals, _difference(upper, lower))
            recomputed = {c: {"total": s.total, "absolute": s.absolute} for c, s in upper.items()}
            if whole or base == 0:
                self._compare(chain, seq, "perpetual", perpetual, recomputed)
            elif tickets not in anchors:  # an archive: perpetual figures checked from a first closure on
                anchors[tickets] = {c: (f["total"] - recomputed.get(c, {}).get("total", 0),
                                        f["absolute"] - recomputed.get(c, {}).get("absolute", 0))
                                    for c, f in perpetual.items() if isinstance(f, dict)
                                    and _is_int(f.get("total")) and _is_int(f.get("absolute"))}
                self.report.notes.append(f"{chain} {seq}: its perpetual totals are taken as they are: the "
                                         "tickets before this archive are not in it")
            else:
                offset = anchors[tickets]
                zero = {"total": 0, "absolute": 0}
                shifted = {c: {"total": offset.get(c, (0, 0))[0] + recomputed.get(c, zero)["total"],
                               "absolute": offset.get(c, (0, 0))[1] + recomputed.get(c, zero)["absolute"]}
                           for c in set(offset) | set(recomputed)}
                self._compare(chain, seq, "perpetual", perpetual, shifted)

    def _compare(self, chain: str, seq: int, name: str, recorded: dict[str, Any],
                 recomputed: dict[str, dict[str, Any]]) -> None:
        for currency in sorted(set(recorded) | set(recomputed), key=str):
            mine, theirs = recomputed.get(currency), recorded.get(currency)
            if not isinstance(theirs, dict):
                self.problem(chain, seq, f"{name} {currency}: recorded none, recomputed {mine}")
                continue
            if mine is None:
                self.problem(chain, seq, f"{name} {currency}: recorded {theirs}, recomputed none")
                continue
            for figure in sorted(set(mine) | set(theirs)):
                expected, got = mine.get(figure), theirs.get(figure)
                if expected != got:
                    self.problem(chain, seq,
                                 f"{name} {currency} {figure}: recorded {got}, recomputed {expected}")


# --- sources: a database -------------------------------------------------------------------

def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return None


def _row(checker: _Checker, row: tuple[Any, ...]) -> None:
    """One database row, its columns checked for their types before the record is."""
    where, version, chain, seq, at, kind, training, key, prev, payload, sig = row
    texts = [_text(value) for value in (chain, at, kind, key, payload)]
    name = texts[0]
    number = seq if _is_int(seq) else None
    wrong = [column for column, text in zip(("chain", "at", "type", "key", "payload"), texts, strict=True)
             if text is None]
    if number is None:
        wrong.append("seq")
    if not _is_int(training):
        wrong.append("training")
    if not isinstance(prev, bytes):
        wrong.append("prev")
    if not isinstance(sig, bytes):
        wrong.append("sig")
    if wrong:
        checker.problem(name, number, f"unreadable record (row {where}): {', '.join(wrong)} of the "
                                      "wrong type or not UTF-8")
        if name is not None:
            checker.report.records[name] = checker.report.records.get(name, 0) + 1
        return
    if version != VERSION:  # the signed form is that of version 1 ("TPEJ1"): the record is checked as such
        checker.problem(name, number, f"format version {version!r} in row {where}, not {VERSION}")
    checker.add(where, name, number, texts[1], texts[2], training, texts[3], prev.hex(), texts[4], None, sig)


def _read_guard(folder: Path, key: _Key) -> tuple[bool, dict[str, Any], str | None]:
    """docs/journal-format.md, Truncation guard: (whether the heads file exists, the heads it
    names once verified, what is wrong with it)."""
    path = folder / HEAD_FILE
    if not path.exists():
        return False, {}, None
    try:
        document = json.loads(path.read_bytes())
        heads, owner, signature = document["heads"], document["key"], bytes.fromhex(document["sig"])
        signed = lines(HEAD_MAGIC, owner, _dumps(heads))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return True, {}, f"{HEAD_FILE} is unreadable: {exc}"
    if owner != key.id or not isinstance(heads, dict) or not verify(key.public, signed, signature):
        return True, {}, f"{HEAD_FILE} does not verify against key {key.id}"
    return True, heads, None


def _guard(checker: _Checker, folder: Path) -> bool:
    """The heads file's records, wanted by the main pass. False when there is no such file."""
    exists, heads, wrong = _read_guard(folder, checker.key)
    if wrong is not None:
        checker.problem(None, None, wrong)
    for chain, head in sorted(heads.items()):
        if isinstance(head, dict):
            checker.plan.want(chain, head.get("seq"), head.get("sig"),
                              Problem(chain, None, f"{HEAD_FILE} names"))
    return exists


def _database_key(folder: Path, database: Path, pubkey_pem: bytes | None) -> _Key:
    if pubkey_pem is not None:
        return _key(pubkey_pem, "the key given", True)
    try:
        pem = (folder / PUBLIC_KEY_FILE).read_bytes()
    except OSError:
        raise VerifyError(f"no public key: pass one, or put {PUBLIC_KEY_FILE} beside "
                          f"{database}") from None
    return _key(pem, f"{PUBLIC_KEY_FILE} beside the database", False)


def check_heads(folder: Path, pubkey_pem: bytes | None = None) -> list[Problem]:
    """The truncation guard alone, read-only and cheap (one lookup per chain): what the heads
    file names that the database of the state `folder` does not reach or hold. Unlike
    `Journal.check_guard` it changes nothing, so the terminal's start still journals what it finds."""
    database = Path(folder) / FILE_NAME
    key = _database_key(Path(folder), database, pubkey_pem)
    exists, heads, wrong = _read_guard(Path(folder), key)
    if wrong is not None:
        return [Problem(None, None, wrong)]
    try:
        db = sqlite3.connect(database.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise VerifyError(f"cannot open {database}: {exc}") from None
    problems = []
    try:
        db.execute("BEGIN")
        if not exists:
            if db.execute("SELECT 1 FROM record LIMIT 1").fetchone() is not None:
                problems.append(Problem(None, None, f"{HEAD_FILE} is missing beside the database"))
            return problems
        for chain, head in sorted(heads.items()):
            seq, sig = (head.get("seq"), head.get("sig")) if isinstance(head, dict) else (None, None)
            row = db.execute("SELECT sig FROM record WHERE chain = ? AND seq = ?", (chain, seq)).fetchone()
            if row is None:
                ends = db.execute("SELECT MAX(seq) FROM record WHERE chain = ?", (chain,)).fetchone()[0] or 0
                problems.append(Problem(chain, None, f"truncated: {HEAD_FILE} names seq {seq}, the chain "
                                                     f"ends at seq {ends}"))
            elif bytes(row[0]).hex() != sig:
                problems.append(Problem(chain, None, f"{HEAD_FILE} names seq {seq} with a signature the "
                                                     "record does not have"))
    except sqlite3.Error as exc:
        problems.append(Problem(None, None, f"the database cannot be read: {exc}"))
    finally:
        db.close()
    return problems


def verify_database(path: Path, pubkey_pem: bytes | None = None, *,
                    workers: int | None = None) -> VerifyReport:
    """Verify a journal database: `path` is the state folder or the database file; the key is
    `pubkey_pem`, else `journal.pub` beside the database. `workers`: signature processes (0:
    none; None: os.cpu_count() once the journal is large). `VerifyError` when it cannot start."""
    path = Path(path)
    folder, database = (path, path / FILE_NAME) if path.is_dir() else (path.parent, path)
    if not database.is_file():
        raise VerifyError(f"no journal database at {database}")
    key = _database_key(folder, database, pubkey_pem)
    report = VerifyReport(str(database), "database", key.id, key.source, key.origin_proven)
    try:
        db = sqlite3.connect(database.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise VerifyError(f"cannot open {database}: {exc}") from None
    db.text_factory = bytes
    signatures = _Signatures(key, workers)
    checker = _Checker(report, key, signatures, _Plan())
    try:
        guarded = _guard(checker, folder)  # read before the snapshot: the database can only be ahead of it
        db.execute("BEGIN")
        triggers = {bytes(name).decode(errors="replace") for name, sql in db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'record'")
            if b"RAISE(ABORT" in bytes(sql or b"")}
        if not {"record_no_update", "record_no_delete"} <= triggers:
            checker.problem(None, None, "the database's triggers that refuse UPDATE and DELETE are missing")
        for chain, seq, payload in db.execute("SELECT chain, seq, payload FROM record WHERE chain IN (?, ?) "
                                              "ORDER BY chain, seq, id", ("closure", TRAINING + "closure")):
            try:
                checker.plan.closure(chain.decode(), seq, _parse(payload.decode()))
            except (ValueError, AttributeError):
                continue  # reported by the main pass
        cursor = db.execute(f"SELECT {_ROWS} FROM record ORDER BY chain, seq, id")
        while rows := cursor.fetchmany(_READ_BATCH):
            for row in rows:
                _row(checker, row)
        checker.finish(whole=True)
        if not guarded and report.records:
            checker.problem(None, None, f"{HEAD_FILE} is missing beside the database: its tail cannot "
                                        "be checked")
    except sqlite3.Error as exc:
        checker.problem(None, None, f"the database cannot be read: {exc}")
    finally:
        signatures.close()
        db.close()
    _sort(report)
    return report


def _sort(report: VerifyReport) -> None:
    order = {name: n for n, name in enumerate(CHAINS + tuple(TRAINING + c for c in CHAINS))}
    report.problems.sort(key=lambda p: (p.chain is not None, order.get(p.chain or "", len(order)),
                                        p.chain or "", -1 if p.seq is None else p.seq))


# --- sources: an archive ---------------------------------------------------------------------

def _archive_line(checker: _Checker, number: int, line: bytes) -> None:
    try:
        record = _parse(line.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        checker.problem(None, None, f"{RECORDS_MEMBER} line {number}: unreadable: {exc}")
        return
    if not isinstance(record, dict) or set(record) != _FIELDS:
        checker.problem(None, None, f"{RECORDS_MEMBER} line {number}: not the fields of a record")
        return
    chain, seq, payload = record["chain"], record["seq"], record["payload"]
    name = chain if isinstance(chain, str) else None
    number_ok = _is_int(seq)
    texts = ("chain", "at", "type", "key", "prev", "sig")
    wrong = [f for f in texts if not isinstance(record[f], str)]
    wrong += [f for f in ("prev", "sig") if f not in wrong and not _HEX.fullmatch(record[f])]
    wrong += [f for f in ("seq", "training") if not _is_int(record[f])]
    if not (_is_int(record["version"]) and record["version"] == VERSION):
        wrong.append("version")
    if wrong:
        checker.problem(name, seq if number_ok else None,
                        f"unreadable record ({RECORDS_MEMBER} line {number}): {', '.join(wrong)}")
        return
    checker.add(number, chain, seq, record["at"], record["type"], record["training"], record["key"],
                record["prev"], _dumps(payload), payload, bytes.fromhex(record["sig"]))


def _lines(archive: zipfile.ZipFile, digest: Any = None) -> Iterator[bytes]:
    with archive.open(RECORDS_MEMBER) as member:
        for line in member:
            if digest is not None:
                digest.update(line)
            yield line


def _manifest(checker: _Checker, archive: zipfile.ZipFile) -> dict[str, Any] | None:
    """docs/journal-format.md, Archives: manifest.json, signed by manifest.sig."""
    try:
        text = archive.read(MANIFEST_MEMBER).decode()
        signature = bytes.fromhex(archive.read(MANIFEST_SIG_MEMBER).decode().strip())
        manifest = _parse(text)
    except (KeyError, UnicodeDecodeError, ValueError, zipfile.BadZipFile) as exc:
        checker.problem(None, None, f"the manifest is unreadable: {exc}")
        return None
    if not verify(checker.key.public, lines(ARCHIVE_MAGIC, text), signature):
        checker.problem(None, None, f"{MANIFEST_SIG_MEMBER} does not verify against key {checker.key.id}")
    if not isinstance(manifest, dict):
        checker.problem(None, None, "the manifest is not a JSON object")
        return None
    if _dumps(manifest) != text:
        checker.problem(None, None, "the manifest is not canonical JSON")
    if manifest.get("version") != VERSION:
        checker.problem(None, None, f"manifest version {manifest.get('version')!r} is not {VERSION}")
    if manifest.get("key") != checker.key.id:
        checker.problem(None, None, f"the manifest names key {manifest.get('key')!r}, not {checker.key.id}")
    try:
        checker.period = period_bounds(manifest.get("period"))  # type: ignore[arg-type]
    except ArchiveError as exc:
        checker.problem(None, None, f"manifest: {exc}")
    chains = manifest.get("chains")
    if not isinstance(chains, dict):
        checker.problem(None, None, "the manifest has no chains")
        return manifest
    for chain, span in chains.items():
        if not (isinstance(span, dict) and _is_int(span.get("first")) and _is_int(span.get("last"))
                and isinstance(span.get("prev"), str) and 1 <= span["first"] <= span["last"]):
            checker.problem(chain, None, f"manifest: {{first, last, prev}} unreadable: {span!r}")
            continue
        checker.start_chain(chain, span["first"] - 1, span["prev"])
    return manifest


def _manifest_ends(checker: _Checker, manifest: dict[str, Any] | None, digest: str) -> None:
    if manifest is None:
        return
    if manifest.get("sha256") != digest:
        checker.problem(None, None, f"{RECORDS_MEMBER} has SHA-256 {digest}, the manifest says "
                                    f"{manifest.get('sha256')!r}")
    chains = manifest.get("chains") if isinstance(manifest.get("chains"), dict) else {}
    for chain, state in checker.chains.items():
        span = chains.get(chain)
        if not isinstance(span, dict):
            checker.problem(chain, None, "records the manifest does not announce")
        elif state.count == 0:
            checker.problem(chain, None, f"the manifest announces {span.get('first')} to {span.get('last')}, "
                                         "the archive holds none")
        elif _is_int(span.get("last")) and state.last_seq is not None and state.last_seq != span["last"]:
            if state.last_seq < span["last"]:
                checker.problem(chain, None, f"truncated: the manifest says the chain ends at seq "
                                             f"{span['last']}, the archive at seq {state.last_seq}")
            else:
                checker.problem(chain, None, f"records after seq {span['last']}, where the manifest ends it")


def verify_archive(zip_path: Path, pubkey_pem: bytes | None = None, *,
                   workers: int | None = None) -> VerifyReport:
    """Verify an archive made by `firmware.journal_archive.archive`: the manifest's signature
    and SHA-256, then every record as in a database, each chain from the manifest's `first`
    (linked to its `prev`) to its `last`. The key is `pubkey_pem`, else the archive's own
    `public_key.pem`, which proves integrity only, not origin."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise VerifyError(f"no archive at {zip_path}")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise VerifyError(f"{zip_path} is not a zip archive: {exc}") from None
    with archive:
        try:
            embedded: bytes | None = archive.read(PUBLIC_KEY_MEMBER)
        except KeyError:
            embedded = None
        if pubkey_pem is not None:
            key = _key(pubkey_pem, "the key given", True)
        elif embedded is not None:
            key = _key(embedded, f"{PUBLIC_KEY_MEMBER} inside the archive", False)
        else:
            raise VerifyError(f"{zip_path} holds no {PUBLIC_KEY_MEMBER}: pass the device's public key")
        report = VerifyReport(str(zip_path), "archive", key.id, key.source, key.origin_proven)
        signatures = _Signatures(key, workers)
        checker = _Checker(report, key, signatures, _Plan())
        checker.period = ("", "~")  # until the manifest says
        try:
            if embedded is None:
                checker.problem(None, None, f"the archive holds no {PUBLIC_KEY_MEMBER}")
            elif embedded.strip() != key.pem.strip():
                checker.problem(None, None, f"the archive's {PUBLIC_KEY_MEMBER} is not the key given "
                                            f"(it is {_embedded_id(embedded)})")
            manifest = _manifest(checker, archive)
            closures = (b'"chain":"closure"', b'"chain":"training-closure"')
            for line in _lines(archive):
                if any(marker in line for marker in closures):
                    try:
                        record = _parse(line.decode())
                        checker.plan.closure(record["chain"], record["seq"], record["payload"])
                    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                        continue  # reported by the main pass
            digest = hashlib.sha256()
            number = 0
            for number, line in enumerate(_lines(archive, digest), start=1):
                if not line.endswith(b"\n"):
                    checker.problem(None, None, f"{RECORDS_MEMBER} line {number} does not end with a "
                                                "line feed")
                _archive_line(checker, number, line)
            checker.finish(whole=False)
            _manifest_ends(checker, manifest, digest.hexdigest())
        except KeyError:
            checker.problem(None, None, f"the archive holds no {RECORDS_MEMBER}")
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            checker.problem(None, None, f"the archive cannot be read: {exc}")
        finally:
            signatures.close()
    if not key.origin_proven:
        report.notes.append(f"verified with the archive's own {PUBLIC_KEY_MEMBER}: this proves the archive "
                            "intact, not that it comes from the device")
    _sort(report)
    return report


def _embedded_id(pem: bytes) -> str:
    try:
        return f"key id {key_id(load_public_key(pem))}"
    except JournalError:
        return "not a P-256 public key"


def verify_path(path: Path, pubkey_pem: bytes | None = None, *, workers: int | None = None) -> VerifyReport:
    """A database (its file or state folder) or an archive (a zip file), whichever `path` is."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return verify_archive(path, pubkey_pem, workers=workers)
    return verify_database(path, pubkey_pem, workers=workers)
