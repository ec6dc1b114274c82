"""The fiscal journal's store (firmware/journal.py): signed chains, append-only, the heads guard."""

from __future__ import annotations

import datetime
import json
import shutil
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from firmware.journal import (
    FILE_NAME,
    HEAD_FILE,
    PUBLIC_KEY_FILE,
    Journal,
    JournalError,
    canonical,
    load_public_key,
)

AT = datetime.datetime(2026, 11, 26, 12, 30, 5, 123456, tzinfo=datetime.UTC)


def _journal(folder: Path) -> Journal:
    return Journal(folder, clock=lambda: AT)


def _independent_check(public_pem: bytes, record: dict[str, Any]) -> None:
    """The format as docs/journal-format.md states it, rebuilt without firmware.journal."""
    public = load_public_key(public_pem)
    payload = json.dumps(record["payload"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = "".join(line + "\n" for line in (
        "TPEJ1", record["chain"], str(record["seq"]), record["at"], record["type"], str(record["training"]),
        record["key"], record["prev"], payload))
    sig = bytes.fromhex(record["sig"])
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    public.verify(der, text.encode(), ec.ECDSA(hashes.SHA256()))


def test_records_are_numbered_per_chain_linked_and_signed_as_documented(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    first = journal.append("ticket", "sale", {"amount": 1250, "currency": "EUR", "label": "Café crème"})
    journal.append("audit", "start", {"event": "start", "version": "1.0"})
    second = journal.append("ticket", "refund", {"amount": -300, "currency": "EUR"})
    assert (first.seq, second.seq, journal.head("audit").seq) == (1, 2, 1)  # type: ignore[union-attr]
    assert first.prev == b"" and second.prev == first.sig and len(first.sig) == 64
    assert first.at == "2026-11-26T12:30:05.123456Z"
    pem = (tmp_path / PUBLIC_KEY_FILE).read_bytes()
    for record in journal.records():
        _independent_check(pem, record.as_json())
    assert [r.seq for r in journal.records("ticket")] == [1, 2]
    assert [r.chain for r in journal.records()] == ["ticket", "audit", "ticket"]  # written order
    assert json.loads(first.payload)["label"] == "Café crème"
    assert len(first.extract) == 9 and first.extract[4] == "-"
    journal.close()
    again = _journal(tmp_path)  # numbering and links go on after a restart
    third = again.append("ticket", "sale", {"amount": 1, "currency": "EUR"})
    assert third.seq == 3 and third.prev == second.sig


def test_the_database_refuses_update_and_delete(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.append("ticket", "sale", {"amount": 1250, "currency": "EUR"})
    journal.close()
    db = sqlite3.connect(tmp_path / FILE_NAME)
    for statement in ("UPDATE record SET payload = '{}'", "DELETE FROM record"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(statement)
    db.close()


def test_bad_records_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    for chain, kind, payload, why in [
        ("ticket", "sale", {"amount": 12.5}, "floats"),
        ("bank", "sale", {}, "unknown journal chain"),
        ("ticket", "Sale!", {}, "lower-case"),
        ("ticket", "sale", {1: 2}, "keys are strings"),
        ("ticket", "sale", {"at": AT}, "cannot hold a datetime"),
        ("ticket", "sale", {"label": "\ud800"}, "lone surrogates"),
    ]:
        with pytest.raises(JournalError, match=why):
            journal.append(chain, kind, payload)
    with pytest.raises(JournalError):  # the whole batch or nothing
        journal.append_many([("ticket", "sale", {"amount": 1}), ("ticket", "sale", {"amount": 0.5})])
    assert list(journal.records()) == [] and journal.heads() == {}
    assert journal.append("ticket", "sale", {"amount": 1}).seq == 1


def test_training_records_have_chains_of_their_own(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.append("ticket", "sale", {"amount": 100})
    practice = journal.append("training-ticket", "sale", {"amount": 999})
    assert practice.training and practice.seq == 1
    assert set(journal.heads()) == {"ticket"} and set(journal.heads(training=True)) == {"training-ticket"}


def test_the_private_key_is_owner_only_and_never_shown(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    key_file = tmp_path / "keystore" / "journal.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "PRIVATE" not in repr(journal.key) and journal.key.id in repr(journal.key)
    assert _journal(tmp_path).key.id == journal.key.id  # the same key after a restart


def test_a_journal_that_lost_its_tail_is_caught_by_the_heads_file(tmp_path: Path) -> None:
    state, saved = tmp_path / "state", tmp_path / "saved"
    journal = _journal(state)
    journal.append("ticket", "sale", {"amount": 100})
    journal.close()
    shutil.copytree(state, saved)  # the journal as it was after one ticket
    journal = _journal(state)
    assert journal.check_guard() == []
    journal.append("ticket", "sale", {"amount": 200})
    journal.append("audit", "stop", {"event": "stop"})
    journal.close()
    for name in (FILE_NAME, FILE_NAME + "-wal", FILE_NAME + "-shm"):  # roll the database back
        (state / name).unlink(missing_ok=True)
        if (saved / name).exists():
            shutil.copy(saved / name, state / name)
    rolled_back = _journal(state)
    problems = rolled_back.check_guard()
    assert len(problems) == 2 and "chain audit" in problems[0] and "chain ticket" in problems[1]
    assert "seq 1, the heads file at seq 2" in problems[1]
    assert rolled_back.check_guard() == []  # reported once: the caller journals it


def test_a_forged_heads_file_is_reported(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.append("ticket", "sale", {"amount": 100})
    document = json.loads((tmp_path / HEAD_FILE).read_bytes())
    document["heads"]["ticket"]["seq"] = 1000
    (tmp_path / HEAD_FILE).write_text(json.dumps(document))
    assert journal.check_guard() == [f"{HEAD_FILE} does not verify against the journal's key"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_canonical_json_round_trips_and_is_one_line(payload: dict[str, Any]) -> None:
    text = canonical(payload)
    assert json.loads(text) == payload and "\n" not in text
    assert canonical(json.loads(text)) == text
