"""Verification of the fiscal journal's database (firmware/journal_verify.py): every tampering the
format lets an inspector catch is caught, and named with its chain, seq and reason.

The sample journals are written with `Journal.append` in the payload shapes of
docs/journal-format.md; closures carry totals this file computes itself from the tickets it
wrote. Tampering works on a copy of the database whose triggers are dropped and put back, as a
forger would."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.journal import FILE_NAME, HEAD_FILE, PUBLIC_KEY_FILE, Journal
from firmware.journal_verify import VerifyError, VerifyReport, verify_database

START = datetime.datetime(2026, 11, 30, 21, 0, tzinfo=datetime.UTC)
TRIGGERS = """
CREATE TRIGGER record_no_update BEFORE UPDATE ON record
BEGIN SELECT RAISE(ABORT, 'the fiscal journal is append-only'); END;
CREATE TRIGGER record_no_delete BEFORE DELETE ON record
BEGIN SELECT RAISE(ABORT, 'the fiscal journal is append-only'); END;
"""
REFERENCE = {"payment": 7, "outcome": "approved_online", "aid": "A0000000031010",
             "pan_masked": "497010******0010", "atc": "0001", "authorization_code": "123456"}


class Clock:
    """Ten minutes later at every call; `back` sets it back."""

    def __init__(self, start: datetime.datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime.datetime:
        self.now += datetime.timedelta(minutes=10)
        return self.now


def card(amount: int) -> dict[str, Any]:
    return {"type": "card", "amount": amount, "reference": REFERENCE}


def cash(amount: int) -> dict[str, Any]:
    return {"type": "cash", "amount": amount}


class Book:
    """A journal, and beside it what this test wrote into it: the closures' figures are
    computed here from the tickets, the plain way, never by the code under test."""

    def __init__(self, folder: Path, clock: Callable[[], datetime.datetime] | None = None) -> None:
        self.folder = folder
        self.journal = Journal(folder, clock=clock or Clock())
        self.tickets: dict[str, list[dict[str, Any]]] = {"ticket": [], "training-ticket": []}
        self.closed_to: dict[tuple[str, str], int] = {}

    def _ticket(self, kind: str, payload: dict[str, Any], training: bool) -> int:
        chain = "training-ticket" if training else "ticket"
        self.journal.append(chain, kind, payload)
        self.tickets[chain].append(payload)
        return len(self.tickets[chain])

    def sale(self, tenders: list[dict[str, Any]], currency: str = "EUR", training: bool = False) -> int:
        amount = sum(t["amount"] for t in tenders)
        return self._ticket("sale", {"amount": amount, "currency": currency, "tenders": tenders}, training)

    def refund(self, tenders: list[dict[str, Any]], currency: str = "EUR") -> int:
        amount = sum(t["amount"] for t in tenders)
        return self._ticket("refund", {"amount": amount, "currency": currency, "tenders": tenders}, False)

    def cancel(self, seq: int) -> int:
        original = self.tickets["ticket"][seq - 1]
        tenders = [{**t, "amount": -t["amount"]} for t in original["tenders"]]
        return self._ticket("cancellation", {"amount": -original["amount"], "currency": original["currency"],
                                             "cancels": seq, "tenders": tenders}, False)

    def duplicate(self, ticket: int, copy: int) -> None:
        self.journal.append("duplicate", "duplicate", {"ticket": ticket, "copy": copy, "mark": "DUPLICATA"})

    def audit(self, event: str, **details: Any) -> None:
        self.journal.append("audit", event, {"event": event, **details})

    def figures(self, kind: str, period: str, training: bool = False) -> dict[str, Any]:
        """docs/journal-format.md, Payloads, Closures, summed here ticket by ticket."""
        chain = "training-ticket" if training else "ticket"
        tickets = self.tickets[chain]
        first = self.closed_to.get((chain, kind), 0) + 1
        last = len(tickets)
        totals: dict[str, dict[str, Any]] = {}
        perpetual: dict[str, dict[str, int]] = {}
        for seq, ticket in enumerate(tickets, start=1):
            currency, amount = ticket["currency"], ticket["amount"]
            whole = perpetual.setdefault(currency, {"total": 0, "absolute": 0})
            whole["total"] += amount
            whole["absolute"] += abs(amount)
            if seq < first:
                continue
            into = totals.setdefault(currency, {"total": 0, "sales": 0, "refunds": 0, "count": 0,
                                                "tenders": {}})
            into["total"] += amount
            into["sales" if amount > 0 else "refunds"] += amount
            into["count"] += 1
            for tender in ticket["tenders"]:
                into["tenders"][tender["type"]] = into["tenders"].get(tender["type"], 0) + tender["amount"]
        return {"period": period, "from": first, "to": last, "totals": totals, "perpetual": perpetual,
                "heads": self.journal.heads(training)}

    def closure(self, kind: str, period: str, training: bool = False,
                change: Callable[[dict[str, Any]], None] | None = None) -> None:
        payload = self.figures(kind, period, training)
        if change is not None:
            change(payload)
        self.journal.append("training-closure" if training else "closure", kind, payload)
        self.closed_to[("training-ticket" if training else "ticket", kind)] = payload["to"]

    def archived(self, period: str, records: int) -> None:
        act = {"period": period, "file": f"journal-{period}.zip", "sha256": "00" * 32, "records": records}
        self.journal.append_many([("archive", "archive", act),
                                  ("audit", "archive", {"event": "archive", **act})])


def sample(folder: Path, clock: Callable[[], datetime.datetime] | None = None) -> Book:
    """Every chain and record type: sales (card, cash, split), a refund, a cancellation, a
    second currency, duplicates, audit events, day and month closures, archives, training."""
    book = Book(folder, clock)
    book.audit("start", version="0.1.0")
    book.sale([card(1250)])
    book.sale([cash(800)])
    book.sale([card(1500), {"type": "meal_voucher", "amount": 500}])
    book.duplicate(1, 1)
    book.refund([cash(-300)])
    book.cancel(2)
    book.sale([cash(1000)], currency="USD")
    book.audit("login", user="merchant")
    book.duplicate(1, 2)
    book.closure("day", "2026-11-30")
    book.archived("2026-10", 0)
    book.sale([{"type": "cheque", "amount": 4200}, {"type": "credit_note", "amount": 300}])
    book.sale([card(990)], training=True)
    book.closure("day", "2026-12-01", training=True)
    book.sale([card(2500)])
    book.audit("degraded_start", cause="no link")
    book.closure("day", "2026-12-01")
    book.closure("month", "2026-12")
    book.archived("2026-11", 12)
    book.sale([cash(150)])
    return book


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("journal") / "state"
    sample(folder).journal.close()
    return folder


def tampered(source: Path, into: Path, change: Callable[[sqlite3.Connection], None],
             triggers: bool = True) -> Path:
    """A copy of the journal folder whose database `change` altered, the triggers dropped for
    it and put back afterwards (unless `triggers` is False)."""
    shutil.copytree(source, into)
    db = sqlite3.connect(into / FILE_NAME, isolation_level=None)
    db.execute("DROP TRIGGER record_no_update")
    db.execute("DROP TRIGGER record_no_delete")
    change(db)
    if triggers:
        db.executescript(TRIGGERS)
    db.close()
    return into


def column(db: sqlite3.Connection, chain: str, seq: int, name: str) -> Any:
    return db.execute(f"SELECT {name} FROM record WHERE chain = ? AND seq = ?", (chain, seq)).fetchone()[0]


def set_column(db: sqlite3.Connection, chain: str, seq: int, name: str, value: Any) -> None:
    db.execute(f"UPDATE record SET {name} = ? WHERE chain = ? AND seq = ?", (value, chain, seq))


def found(report: VerifyReport, chain: str | None, seq: int | None, *fragments: str) -> bool:
    return any(p.chain == chain and p.seq == seq and all(f in p.reason for f in fragments)
               for p in report.problems)


def private_key(folder: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key((folder / "keystore" / "journal.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def key_id_of(public: ec.EllipticCurvePublicKey) -> str:
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def raw_signature(private: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def signed_text(chain: str, seq: int, at: str, kind: str, training: int, key: str, prev: str,
                payload: str) -> bytes:
    """docs/journal-format.md, A record, rebuilt here."""
    return "".join(f + "\n" for f in ("TPEJ1", chain, str(seq), at, kind, str(training), key, prev,
                                      payload)).encode()


def forge(db: sqlite3.Connection, private: ec.EllipticCurvePrivateKey, chain: str, seq: int, kind: str,
          payload: str, *, training: int | None = None, prev: bytes | None = None,
          at: str = "2026-12-01T09:00:00.000000Z") -> bytes:
    """Insert a record signed with `private`, linked to the chain's last one unless told."""
    if prev is None:
        row = db.execute("SELECT sig FROM record WHERE chain = ? AND seq = ?", (chain, seq - 1)).fetchone()
        prev = b"" if row is None else bytes(row[0])
    flag = int(chain.startswith("training-")) if training is None else training
    key = key_id_of(private.public_key())
    sig = raw_signature(private, signed_text(chain, seq, at, kind, flag, key, prev.hex(), payload))
    db.execute("INSERT INTO record(version, chain, seq, at, type, training, key, prev, payload, sig) "
               "VALUES(1, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (chain, seq, at, kind, flag, key, prev, payload, sig))
    return sig


def last_seq(db: sqlite3.Connection, chain: str) -> int:
    return db.execute("SELECT MAX(seq) FROM record WHERE chain = ?", (chain,)).fetchone()[0]


# --- an intact journal ----------------------------------------------------------------------

def test_an_intact_journal_verifies_and_says_which_key_it_used(built: Path) -> None:
    report = verify_database(built, workers=0)
    assert report.ok, report.as_text()
    assert report.records == COUNTS
    assert report.key_source == f"{PUBLIC_KEY_FILE} beside the database" and not report.origin_proven
    assert "not that they come from the device" in report.as_text() and "INTACT" in report.as_text()
    given = verify_database(built / FILE_NAME, (built / PUBLIC_KEY_FILE).read_bytes(), workers=0)
    assert given.ok and given.origin_proven and given.key_source == "the key given"
    assert given.key_id == key_id_of(private_key(built).public_key())


def test_a_journal_read_while_the_terminal_writes_is_one_snapshot(tmp_path: Path) -> None:
    book = sample(tmp_path / "state")
    report = verify_database(tmp_path / "state", workers=0)  # the journal is open, WAL not checkpointed
    book.sale([cash(100)])
    assert report.ok and verify_database(tmp_path / "state", workers=0).ok


def test_verification_that_cannot_start_says_why(tmp_path: Path, built: Path) -> None:
    with pytest.raises(VerifyError, match="no journal database"):
        verify_database(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    (copy / PUBLIC_KEY_FILE).unlink()
    with pytest.raises(VerifyError, match="no public key"):
        verify_database(copy)
    with pytest.raises(VerifyError, match="PEM"):
        verify_database(copy, b"not a key")


# --- any field of any record type --------------------------------------------------------------

COUNTS = {"ticket": 9, "duplicate": 2, "closure": 3, "audit": 5, "archive": 2, "training-ticket": 1,
          "training-closure": 1}
TARGETS = [("ticket", 3), ("duplicate", 2), ("closure", 2), ("audit", 2), ("archive", 2)]


def _flip_text(text: str) -> str:
    """One character changed for another of its kind, in the middle of the text."""
    i = len(text) // 2
    while not text[i].isalnum():
        i += 1
    c = text[i]
    new = "0123456789"[(int(c) + 1) % 10] if c.isdigit() else ("a" if c != "a" else "b")
    return text[:i] + new + text[i + 1:]


@pytest.mark.parametrize("target", TARGETS, ids=[c for c, _ in TARGETS])
@pytest.mark.parametrize("field", ["chain", "seq", "at", "type", "training", "key", "prev", "payload", "sig"])
def test_a_change_to_any_field_of_any_record_type_is_reported_precisely(
        built: Path, tmp_path: Path, target: tuple[str, int], field: str) -> None:
    chain, seq = target
    changed: dict[str, Any] = {}

    def change(db: sqlite3.Connection) -> None:
        value = column(db, chain, seq, field)
        if isinstance(value, bytes):
            new: Any = bytes([value[0] ^ 0x01]) + value[1:]
        elif field == "seq":
            new = value + 100
        elif field == "training":
            new = 1 - value
        else:
            new = _flip_text(value)
        changed["value"] = new
        set_column(db, chain, seq, field, new)

    report = verify_database(tampered(built, tmp_path / "copy", change), workers=0)
    assert not report.ok
    new = changed["value"]
    gone = (chain, None, (f"record {seq} is missing",)) if seq < COUNTS[chain] else (
        chain, None, ("truncated", f"names seq {seq}"))  # the last one: the heads file names it
    expected: list[tuple[str | None, int | None, tuple[str, ...]]] = {
        "chain": [(new, seq, ("not a chain",)), gone],
        "seq": [gone, (chain, new, ("bad signature",))],
        "at": [(chain, seq, ("bad signature",))],
        "type": [(chain, seq, ("bad signature",)), (chain, seq, ("type",))],
        "training": [(chain, seq, ("training flag",)), (chain, seq, ("bad signature",))],
        "key": [(chain, seq, ("unknown key id",))],
        "prev": [(chain, seq, ("broken link",)), (chain, seq, ("bad signature",))],
        "payload": [(chain, seq, ("bad signature",))],
        "sig": [(chain, seq, ("bad signature",))],
    }[field]
    if field == "sig":  # the record after it no longer links; the last one is named by the heads file
        after = (chain, seq + 1, ("broken link",)) if seq < COUNTS[chain] else (
            chain, None, (HEAD_FILE, "signature the record does not have"))
        expected.append(after)
    for where, number, fragments in expected:
        assert found(report, where, number, *fragments), (field, report.as_text())


def test_the_last_record_s_signature_is_also_checked_against_the_heads_file(built: Path,
                                                                            tmp_path: Path) -> None:
    def change(db: sqlite3.Connection) -> None:
        sig = column(db, "ticket", 9, "sig")
        set_column(db, "ticket", 9, "sig", sig[:-1] + bytes([sig[-1] ^ 0x80]))

    report = verify_database(tampered(built, tmp_path / "copy", change), workers=0)
    assert found(report, "ticket", 9, "bad signature")
    assert found(report, "ticket", None, HEAD_FILE, "seq 9", "signature the record does not have")


def test_a_deleted_record_is_a_gap(built: Path, tmp_path: Path) -> None:
    report = verify_database(tampered(built, tmp_path / "copy", lambda db: db.execute(
        "DELETE FROM record WHERE chain = 'audit' AND seq = 3")), workers=0)
    assert found(report, "audit", None, "sequence gap: record 3 is missing")
    assert [p for p in report.problems if p.chain == "audit"] == [
        p for p in report.problems if "record 3 is missing" in p.reason]


def test_a_deleted_run_of_tickets_is_one_gap_and_the_closures_no_longer_add_up(built: Path,
                                                                               tmp_path: Path) -> None:
    report = verify_database(tampered(built, tmp_path / "copy", lambda db: db.execute(
        "DELETE FROM record WHERE chain = 'ticket' AND seq IN (4, 5)")), workers=0)
    assert found(report, "ticket", None, "sequence gap: records 4 to 5 are missing")
    assert found(report, "closure", 1, "totals EUR total: recorded 2950, recomputed 4050")  # -300 -800 gone


def test_two_records_swapped_in_storage_are_out_of_order(built: Path, tmp_path: Path) -> None:
    def swap(db: sqlite3.Connection) -> None:
        columns = "chain, seq, at, type, training, key, prev, payload, sig"
        rows = {seq: db.execute(f"SELECT id, {columns} FROM record WHERE chain = 'ticket' AND seq = ?",
                                (seq,)).fetchone() for seq in (5, 6)}
        db.execute("UPDATE record SET seq = -1 WHERE id = ?", (rows[5][0],))
        for seq, other in ((5, 6), (6, 5)):
            db.execute(f"UPDATE record SET ({columns}) = (?, ?, ?, ?, ?, ?, ?, ?, ?) WHERE id = ?",
                       (*rows[seq][1:], rows[other][0]))

    report = verify_database(tampered(built, tmp_path / "copy", swap), workers=0)
    assert found(report, "ticket", 6, "stored after the record that follows it")
    assert not found(report, "ticket", 6, "bad signature") and len(report.problems) == 1


def test_two_tickets_whose_contents_are_swapped_fail_their_signatures(built: Path, tmp_path: Path) -> None:
    def swap(db: sqlite3.Connection) -> None:
        three, four = column(db, "ticket", 3, "payload"), column(db, "ticket", 4, "payload")
        set_column(db, "ticket", 3, "payload", four)
        set_column(db, "ticket", 4, "payload", three)

    report = verify_database(tampered(built, tmp_path / "copy", swap), workers=0)
    assert found(report, "ticket", 3, "bad signature") and found(report, "ticket", 4, "bad signature")


def test_a_truncated_tail_is_caught_by_the_heads_file(built: Path, tmp_path: Path) -> None:
    report = verify_database(tampered(built, tmp_path / "copy", lambda db: db.execute(
        "DELETE FROM record WHERE chain = 'ticket' AND seq = 9")), workers=0)
    assert found(report, "ticket", None, f"truncated: {HEAD_FILE} names seq 9, the chain ends at seq 8")
    assert len(report.problems) == 1, report.as_text()


def test_a_truncated_tail_is_caught_by_a_closure_that_names_it(tmp_path: Path) -> None:
    book = sample(tmp_path / "state")
    book.journal.close()

    def cut(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM record WHERE chain = 'audit' AND seq >= 4")

    copy = tampered(tmp_path / "state", tmp_path / "copy", cut)
    (copy / HEAD_FILE).unlink()  # the forger removes the guard too
    report = verify_database(copy, workers=0)
    assert found(report, None, None, f"{HEAD_FILE} is missing")
    assert found(report, "closure", 2, "truncated: heads: names audit seq 4, the chain ends at seq 3")


def test_a_forged_heads_file_is_reported(built: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    document = json.loads((copy / HEAD_FILE).read_bytes())
    document["heads"]["ticket"]["seq"] = 7
    (copy / HEAD_FILE).write_text(json.dumps(document))
    report = verify_database(copy, workers=0)
    assert found(report, None, None, f"{HEAD_FILE} does not verify")


def test_dropped_triggers_are_reported(built: Path, tmp_path: Path) -> None:
    report = verify_database(tampered(built, tmp_path / "copy", lambda db: None, triggers=False), workers=0)
    assert [str(p) for p in report.problems] == [
        "the database's triggers that refuse UPDATE and DELETE are missing"]


def test_a_seq_below_one_is_reported(built: Path, tmp_path: Path) -> None:
    copy = tampered(built, tmp_path / "copy", lambda db: set_column(db, "ticket", 1, "seq", 0))
    report = verify_database(copy, workers=0)
    assert found(report, "ticket", 0, "a seq counts from 1")
    assert found(report, "ticket", None, "sequence gap: record 1 is missing")


def test_a_duplicate_seq_is_reported(built: Path, tmp_path: Path) -> None:
    def duplicate(db: sqlite3.Connection) -> None:  # a forger's table without UNIQUE (chain, seq)
        columns = "version, chain, seq, at, type, training, key, prev, payload, sig"
        db.execute(f"CREATE TABLE loose (id INTEGER PRIMARY KEY, {columns})")
        db.execute(f"INSERT INTO loose SELECT id, {columns} FROM record")
        db.execute("DROP TABLE record")
        db.execute("ALTER TABLE loose RENAME TO record")
        db.execute(f"INSERT INTO record({columns}) SELECT {columns} FROM record "
                   "WHERE chain = 'ticket' AND seq = 4")

    report = verify_database(tampered(built, tmp_path / "copy", duplicate), workers=0)
    assert found(report, "ticket", 4, "duplicate seq") and len(report.problems) == 1, report.as_text()


# --- records signed by the device, wrong all the same ------------------------------------------

@pytest.mark.parametrize(("chain", "kind", "payload", "training", "reason"), [
    ("ticket", "sale", '{"amount":100,"currency":"EUR","tenders":[{"amount":100,"type":"cash"}]}', 1,
     "training flag 1 does not match the chain"),
    ("training-ticket", "sale", '{"amount":100,"currency":"EUR","tenders":[{"amount":100,"type":"cash"}]}', 0,
     "training flag 0 does not match the chain"),
    ("ticket", "sale", '{"amount":100,"currency":"EUR","tenders":[', None, "unreadable payload"),
    ("ticket", "sale", '{"amount":1.5,"currency":"EUR","tenders":[]}', None, "unreadable payload"),
    ("ticket", "sale", '{"amount":100, "currency":"EUR","tenders":[{"amount":100,"type":"cash"}]}', None,
     "not canonical JSON"),
    ("ticket", "sale", '[1,2]', None, "not a JSON object"),
    ("ticket", "sale", '{"amount":100,"currency":"EUR","tenders":[{"amount":90,"type":"cash"}]}', None,
     "the tenders sum to 90, the amount is 100"),
    ("ticket", "refund", '{"amount":100,"currency":"EUR","tenders":[{"amount":100,"type":"cash"}]}', None,
     "wrong sign"),
    ("ticket", "sale", '{"amount":100,"currency":"EUR","tenders":[{"amount":100,"type":"bitcoin"}]}', None,
     "a tender is not one of"),
    ("ticket", "gift", '{"amount":100,"currency":"EUR","tenders":[{"amount":100,"type":"cash"}]}', None,
     "type 'gift' is not one of the ticket chain's"),
    ("audit", "login", '{"event":"logout"}', None, "the event 'logout' is not the record's type 'login'"),
])
def test_records_signed_by_the_device_but_against_the_format_are_reported(
        built: Path, tmp_path: Path, chain: str, kind: str, payload: str, training: int | None,
        reason: str) -> None:
    private = private_key(built)

    def add(db: sqlite3.Connection) -> None:
        forge(db, private, chain, (last_seq(db, chain) or 0) + 1, kind, payload, training=training)

    copy = tampered(built, tmp_path / "copy", add)
    report = verify_database(copy, workers=0)
    with contextlib.closing(sqlite3.connect(copy / FILE_NAME)) as db:
        seq = last_seq(db, chain)
    problems = [p for p in report.problems if p.chain == chain]
    assert [(p.seq, reason in p.reason) for p in problems] == [(seq, True)], report.as_text()


def test_a_record_signed_by_another_key_is_named_by_its_key_id(built: Path, tmp_path: Path) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())

    def add(db: sqlite3.Connection) -> None:
        forge(db, stranger, "audit", last_seq(db, "audit") + 1, "stop", '{"event":"stop"}')

    report = verify_database(tampered(built, tmp_path / "copy", add), workers=0)
    assert found(report, "audit", 6, f"signed by unknown key id '{key_id_of(stranger.public_key())}'")


def test_a_field_holding_a_line_feed_cannot_shift_the_signed_lines(built: Path, tmp_path: Path) -> None:
    """docs/journal-format.md, A record: no field holds a line feed. Moving the prev into the key
    field keeps the signed text byte for byte; the key id no longer matches."""
    def shift(db: sqlite3.Connection) -> None:
        key, prev = column(db, "ticket", 3, "key"), column(db, "ticket", 3, "prev")
        set_column(db, "ticket", 3, "key", f"{key}\n{bytes(prev).hex()}")
        set_column(db, "ticket", 3, "prev", b"")

    report = verify_database(tampered(built, tmp_path / "copy", shift), workers=0)
    assert found(report, "ticket", 3, "unknown key id") and found(report, "ticket", 3, "broken link")


# --- closures against the tickets ---------------------------------------------------------

@pytest.mark.parametrize(("change", "reason"), [
    (lambda p: p["totals"]["EUR"].__setitem__("sales", p["totals"]["EUR"]["sales"] + 1),
     "totals EUR sales: recorded 4051, recomputed 4050"),
    (lambda p: p["totals"]["EUR"].__setitem__("refunds", 0),
     "totals EUR refunds: recorded 0, recomputed -1100"),
    (lambda p: p["totals"]["EUR"].__setitem__("count", 4), "totals EUR count: recorded 4, recomputed 5"),
    (lambda p: p["totals"]["EUR"]["tenders"].pop("cash"),
     "totals EUR tenders: recorded {'card': 2750, 'meal_voucher': 500}, recomputed"),
    (lambda p: p["totals"].pop("USD"), "totals USD: recorded none"),
    (lambda p: p["perpetual"]["EUR"].__setitem__("absolute", 1),
     "perpetual EUR absolute: recorded 1, recomputed 5150"),
    (lambda p: p["perpetual"]["USD"].__setitem__("total", 0),
     "perpetual USD total: recorded 0, recomputed 1000"),
    (lambda p: p["heads"]["ticket"].__setitem__("sig", "00" * 64),
     "heads: names ticket seq 6 with a signature the record does not have"),
    (lambda p: p.__setitem__("to", 40), "closes ticket 1 to 40, but ticket 40 is not in the journal"),
    (lambda p: p.__setitem__("period", "2026-11"), "period '2026-11' is not a day's"),
])
def test_closure_figures_are_recomputed_from_the_tickets(
        tmp_path: Path, change: Callable[[dict[str, Any]], None], reason: str) -> None:
    book = Book(tmp_path)
    book.sale([card(1250)])
    book.sale([cash(800)])
    book.sale([card(1500), {"type": "meal_voucher", "amount": 500}])
    book.refund([cash(-300)])
    book.cancel(2)
    book.sale([cash(1000)], currency="USD")
    book.closure("day", "2026-11-30", change=change)
    report = verify_database(tmp_path, workers=0)
    assert [(p.chain, p.seq) for p in report.problems] == [("closure", 1)], report.as_text()
    assert reason in report.problems[0].reason


def test_later_closures_of_the_same_kind_are_checked_over_their_own_tickets(tmp_path: Path) -> None:
    book = Book(tmp_path)
    book.sale([card(100)])
    book.closure("day", "2026-11-30")
    book.sale([card(200)])
    book.refund([cash(-50)])
    book.closure("day", "2026-12-01", change=lambda p: p["totals"]["EUR"].__setitem__("total", 250))
    book.closure("month", "2026-12")
    report = verify_database(tmp_path, workers=0)
    assert [str(p) for p in report.problems] == ["closure 2: totals EUR total: recorded 250, recomputed 150"]


def test_a_closure_that_skips_or_repeats_tickets_is_reported(tmp_path: Path) -> None:
    book = Book(tmp_path)
    book.sale([card(100)])
    book.closure("day", "2026-11-30")
    book.sale([card(200)])
    book.sale([card(300)])
    book.closure("day", "2026-12-01", change=lambda p: p.update(
        {"from": 3, "totals": {"EUR": {"total": 300, "sales": 300, "refunds": 0, "count": 1,
                                       "tenders": {"card": 300}}}}))
    book.closure("month", "2026-12")
    book.closure("day", "2026-12-02", change=lambda p: p.update(
        {"from": 2, "totals": {"EUR": {"total": 500, "sales": 500, "refunds": 0, "count": 2,
                                       "tenders": {"card": 500}}}}))
    report = verify_database(tmp_path, workers=0)
    assert [str(p) for p in report.problems] == [
        "closure 2: covers tickets from 3, where the previous day closure leaves off at 2",
        "closure 4: covers tickets from 2, where the previous day closure leaves off at 4"]


def test_a_tender_type_that_sums_to_zero_is_left_out(tmp_path: Path) -> None:
    book = Book(tmp_path)
    book.sale([card(100), cash(50)])
    book.cancel(1)
    book.sale([card(70)])
    book.closure("day", "2026-11-30", change=lambda p: p["totals"]["EUR"]["tenders"].__setitem__("cash", 0))
    report = verify_database(tmp_path, workers=0)
    assert [str(p) for p in report.problems] == [
        "closure 1: totals EUR tenders: recorded {'card': 70, 'cash': 0}, recomputed {'card': 70}"]


def test_training_tickets_never_count_in_real_closures(tmp_path: Path) -> None:
    book = Book(tmp_path)
    book.sale([card(100)])
    book.sale([card(5000)], training=True)
    book.closure("day", "2026-11-30", change=lambda p: p["totals"]["EUR"].__setitem__("total", 5100))
    book.closure("day", "2026-11-30", training=True)
    report = verify_database(tmp_path, workers=0)
    assert [str(p) for p in report.problems] == ["closure 1: totals EUR total: recorded 5100, recomputed 100"]


# --- the pool of processes --------------------------------------------------------------------

def test_signatures_checked_in_a_pool_of_processes_find_the_bad_one(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state", clock=Clock())
    sale = {"amount": 100, "currency": "EUR", "tenders": [cash(100)]}
    for _ in range(3):
        journal.append_many([("ticket", "sale", sale)] * 2000)
    journal.close()

    def change(db: sqlite3.Connection) -> None:
        set_column(db, "ticket", 4321, "payload", column(db, "ticket", 4321, "payload").replace("EUR", "EUS"))

    copy = tampered(tmp_path / "state", tmp_path / "copy", change)
    report = verify_database(copy, workers=2)
    assert [str(p) for p in report.problems] == ["ticket 4321: bad signature"]
    assert report.records == {"ticket": 6000}


# --- any byte ------------------------------------------------------------------------------

def _one_byte_changed(value: Any, position: int, byte: int) -> Any:
    raw = value.to_bytes(8, "big", signed=True) if isinstance(value, int) else (
        value.encode() if isinstance(value, str) else bytes(value))
    i = position % len(raw)
    if raw[i] == byte:
        byte ^= 0xFF
    new = raw[:i] + bytes([byte]) + raw[i + 1:]
    if isinstance(value, int):
        return int.from_bytes(new, "big", signed=True)
    if isinstance(value, str):
        try:
            return new.decode()
        except UnicodeDecodeError:
            return new  # stored as a BLOB: the verifier reads what is there
    return new


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=st.integers(min_value=0), field=st.sampled_from(
    ["chain", "seq", "at", "type", "training", "key", "prev", "payload", "sig"]),
       position=st.integers(min_value=0), byte=st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_to_a_stored_record_is_detected(built: Path, record: int, field: str,
                                                               position: int, byte: int) -> None:
    source = built
    with tempfile.TemporaryDirectory() as folder:
        def change(db: sqlite3.Connection) -> None:
            ids = [row[0] for row in db.execute("SELECT id FROM record ORDER BY id")]
            target = ids[record % len(ids)]
            value = db.execute(f"SELECT {field} FROM record WHERE id = ?", (target,)).fetchone()[0]
            if isinstance(value, bytes) and not value:  # an empty prev: its byte is added
                new: Any = bytes([byte])
            else:
                new = _one_byte_changed(value, position, byte)
            with contextlib.suppress(sqlite3.IntegrityError):  # UNIQUE (chain, seq) refuses it
                db.execute(f"UPDATE record SET {field} = ? WHERE id = ?", (new, target))

        report = verify_database(tampered(source, Path(folder) / "copy", change), workers=0)
        # closed at once: a connection left to the garbage collector would remove the WAL
        # file while the next example copies the folder
        with contextlib.closing(sqlite3.connect(Path(folder) / "copy" / FILE_NAME)) as db:
            same = sorted(db.execute("SELECT * FROM record").fetchall())
        with contextlib.closing(sqlite3.connect(source / FILE_NAME)) as db:
            unchanged = same == sorted(db.execute("SELECT * FROM record").fetchall())
        assert report.ok == unchanged, report.as_text()



def test_a_record_of_another_format_version_is_reported(built: Path, tmp_path: Path) -> None:
    def bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE record SET version = 2 WHERE chain = 'ticket' AND seq = 2")

    report = verify_database(tampered(built, tmp_path / "copy", bump), workers=0)
    assert found(report, "ticket", 2, "version") and len(report.problems) == 1, report.as_text()
