"""Monthly archives of the fiscal journal (firmware/journal_archive.py) and their verification
(firmware/journal_verify.py, verify_archive): the zip as docs/journal-format.md, Archives, states
it, checked here with this file's own reading of the format; the act journalled; every tampering
of the manifest or the records caught, and a replay signed with a foreign key told apart."""

from __future__ import annotations

import datetime
import hashlib
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from test_journal_verify import Book, Clock, cash, found, key_id_of, private_key, raw_signature, sample

from firmware.journal import PUBLIC_KEY_FILE, Journal
from firmware.journal_archive import ArchiveError, archive, period_bounds
from firmware.journal_verify import VerifyError, verify_archive

MEMBERS = ["records.jsonl", "public_key.pem", "manifest.json", "manifest.sig"]
MADE = datetime.datetime(2027, 1, 2, 8, 0, tzinfo=datetime.UTC)


def made() -> datetime.datetime:
    return MADE


def canonical_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signature_ok(public: ec.EllipticCurvePublicKey, data: bytes, hexadecimal: str) -> bool:
    raw = bytes.fromhex(hexadecimal)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except Exception:
        return False
    return True


def record_text(record: dict[str, Any]) -> bytes:
    return "".join(f + "\n" for f in (
        "TPEJ1", record["chain"], str(record["seq"]), record["at"], record["type"], str(record["training"]),
        record["key"], record["prev"], canonical_text(record["payload"]))).encode()


@pytest.fixture
def book(tmp_path: Path) -> Book:
    """The sample journal: its records from 2026-11-30 21:10 UTC to 2026-12-01 00:30."""
    return sample(tmp_path / "state")


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zipped:
        return {name: zipped.read(name) for name in zipped.namelist()}


def rezip(path: Path, into: Path, **changed: bytes) -> Path:
    contents = members(path)
    contents.update({".".join(name.rsplit("_", 1)): data for name, data in changed.items()})
    with zipfile.ZipFile(into, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in contents.items():
            zipped.writestr(name, data)
    return into


def resigned(private: ec.EllipticCurvePrivateKey, manifest: dict[str, Any]) -> dict[str, bytes]:
    """A manifest changed and signed again with the device's key (an insider)."""
    text = canonical_text(manifest)
    sig = raw_signature(private, f"TPEJ1-ARCHIVE\n{text}\n".encode())
    return {"manifest_json": text.encode(), "manifest_sig": sig.hex().encode()}


# --- the archive as the format states it ------------------------------------------------------

def test_an_archive_holds_the_month_s_records_as_the_format_states(book: Book, tmp_path: Path) -> None:
    everything = {(r.chain, r.seq): r for r in book.journal.records()}
    path = archive(book.journal, "2026-12", tmp_path / "out", clock=made)
    key = private_key(book.folder)
    assert path.name == f"journal-2026-12-{key_id_of(key.public_key())}-20270102T080000Z.zip"
    contents = members(path)
    assert list(contents) == MEMBERS
    public = serialization.load_pem_public_key(contents["public_key.pem"])
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert contents["public_key.pem"] == (book.folder / PUBLIC_KEY_FILE).read_bytes()
    manifest_text = contents["manifest.json"].decode()
    signed = f"TPEJ1-ARCHIVE\n{manifest_text}\n".encode()
    assert signature_ok(public, signed, contents["manifest.sig"].decode())
    manifest = json.loads(manifest_text)
    assert canonical_text(manifest) == manifest_text
    assert manifest["sha256"] == hashlib.sha256(contents["records.jsonl"]).hexdigest()
    assert (manifest["version"], manifest["period"], manifest["key"], manifest["created"]) == (
        1, "2026-12", key_id_of(public), "2027-01-02T08:00:00.000000Z")
    lines = contents["records.jsonl"].decode().split("\n")
    assert lines[-1] == ""
    records = [json.loads(line) for line in lines[:-1]]
    assert [canonical_text(r) for r in records] == lines[:-1]
    assert [(r["chain"], r["seq"]) for r in records] == sorted((r["chain"], r["seq"]) for r in records)
    month = {key for key, r in everything.items() if r.at >= "2026-12-01T00:00:00.000000Z"}
    assert {(r["chain"], r["seq"]) for r in records} == month  # the sample's clock never goes back
    for record in records:
        assert signature_ok(public, record_text(record), record["sig"])
        assert record["sig"] == everything[(record["chain"], record["seq"])].sig.hex()
    for chain, span in manifest["chains"].items():
        seqs = [r["seq"] for r in records if r["chain"] == chain]
        assert seqs == list(range(span["first"], span["last"] + 1))
        before = everything.get((chain, span["first"] - 1))
        assert span["prev"] == ("" if before is None else before.sig.hex())
    report = verify_archive(path)
    assert report.ok, report.as_text()
    assert report.records == {chain: span["last"] - span["first"] + 1
                              for chain, span in manifest["chains"].items()}
    assert not report.origin_proven and "not that it comes from the device" in report.as_text()
    given = verify_archive(path, (book.folder / PUBLIC_KEY_FILE).read_bytes())
    assert given.ok and given.origin_proven


def test_making_an_archive_is_journalled_once_with_the_file_s_digest(book: Book, tmp_path: Path) -> None:
    path = archive(book.journal, "2026-11", tmp_path / "out", clock=made)
    act, event = book.journal.head("archive"), book.journal.head("audit")
    assert act is not None and event is not None
    records = len(members(path)["records.jsonl"].splitlines())
    expected = {"period": "2026-11", "file": path.name, "records": records,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert (act.type, act.data) == ("archive", expected)
    assert (event.type, event.data) == ("archive", {"event": "archive", **expected})
    assert act.at == event.at  # one commit
    assert records == 18  # the sample's records before midnight UTC


def test_consecutive_months_link_and_cover_the_journal_even_when_the_clock_went_back(tmp_path: Path) -> None:
    clock = Clock(datetime.datetime(2026, 11, 30, 23, 40, tzinfo=datetime.UTC))
    book = Book(tmp_path / "state", clock)
    book.sale([cash(100)])  # 23:50 November
    book.sale([cash(200)])  # 00:00 December
    clock.now = datetime.datetime(2026, 11, 30, 23, 45, tzinfo=datetime.UTC)  # set back
    book.sale([cash(300)])  # 23:55, stamped November, after a December record
    book.audit("clock_change", by="-15 min")
    november = archive(book.journal, "2026-11", tmp_path / "out", clock=made)
    december = archive(book.journal, "2026-12", tmp_path / "out",
                       clock=lambda: MADE + datetime.timedelta(seconds=1))
    lines = {name: [json.loads(line) for line in members(p)["records.jsonl"].splitlines()]
             for name, p in (("11", november), ("12", december))}
    assert [(r["chain"], r["seq"]) for r in lines["11"]] == [("ticket", 1)]
    assert [(r["chain"], r["seq"]) for r in lines["12"]] == [  # with November's archive act
        ("archive", 1), ("audit", 1), ("audit", 2), ("ticket", 2), ("ticket", 3)]
    assert json.loads(members(december)["manifest.json"])["chains"]["ticket"]["prev"] == lines["11"][0]["sig"]
    assert verify_archive(november).ok and verify_archive(december).ok


def test_an_empty_month_still_gets_its_archive(book: Book, tmp_path: Path) -> None:
    path = archive(book.journal, "2026-06", tmp_path / "out", clock=made)
    contents = members(path)
    assert contents["records.jsonl"] == b"" and json.loads(contents["manifest.json"])["chains"] == {}
    assert verify_archive(path).ok
    assert book.journal.head("archive").data["records"] == 0  # type: ignore[union-attr]


def test_training_records_are_archived_in_their_own_chains(book: Book, tmp_path: Path) -> None:
    path = archive(book.journal, "2026-11", tmp_path / "out", clock=made)
    chains = json.loads(members(path)["manifest.json"])["chains"]
    assert set(chains) == {"ticket", "duplicate", "closure", "audit", "archive", "training-ticket",
                           "training-closure"}
    assert verify_archive(path).ok


@pytest.mark.parametrize("period", ["2026-13", "2026-1", "26-11", "2026-11-01", "", "2026-00"])
def test_a_period_is_a_month(book: Book, tmp_path: Path, period: str) -> None:
    with pytest.raises(ArchiveError, match="YYYY-MM"):
        archive(book.journal, period, tmp_path / "out", clock=made)
    assert book.journal.head("archive").data["period"] == "2026-11"  # type: ignore[union-attr]


def test_period_bounds_follow_the_calendar() -> None:
    assert period_bounds("2026-12") == ("2026-12-01T00:00:00.000000Z", "2027-01-01T00:00:00.000000Z")
    assert period_bounds("2028-02") == ("2028-02-01T00:00:00.000000Z", "2028-03-01T00:00:00.000000Z")


def test_an_archive_never_overwrites_and_a_failed_one_is_not_journalled(book: Book, tmp_path: Path) -> None:
    first = archive(book.journal, "2026-11", tmp_path / "out", clock=made)
    head = book.journal.head("archive")
    with pytest.raises(ArchiveError, match="exists"):
        archive(book.journal, "2026-11", tmp_path / "out", clock=made)
    assert book.journal.head("archive") == head
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [first.name]


# --- tampering ------------------------------------------------------------------------------

@pytest.fixture
def made_archive(book: Book, tmp_path: Path) -> Path:
    return archive(book.journal, "2026-11", tmp_path / "out", clock=made)


def test_a_changed_byte_in_the_records_breaks_the_digest_and_the_record(made_archive: Path,
                                                                        tmp_path: Path) -> None:
    text = members(made_archive)["records.jsonl"].decode()
    changed = text.replace('"amount":1250', '"amount":1350', 1)
    report = verify_archive(rezip(made_archive, tmp_path / "x.zip", records_jsonl=changed.encode()))
    assert found(report, None, None, "records.jsonl has SHA-256")
    assert found(report, "ticket", 1, "bad signature")


def test_a_changed_manifest_no_longer_verifies(made_archive: Path, tmp_path: Path) -> None:
    manifest = json.loads(members(made_archive)["manifest.json"])
    manifest["chains"]["ticket"]["last"] -= 1
    report = verify_archive(rezip(made_archive, tmp_path / "x.zip",
                                  manifest_json=canonical_text(manifest).encode()))
    assert found(report, None, None, "manifest.sig does not verify")
    assert found(report, "ticket", None, "records after seq 7, where the manifest ends it")


@pytest.mark.parametrize(("change", "chain", "seq", "reason"), [
    (lambda m: m["chains"]["ticket"].__setitem__("last", 9), "ticket", None,
     "truncated: the manifest says the chain ends at seq 9, the archive at seq 8"),
    (lambda m: m["chains"]["audit"].__setitem__("first", 2), "audit", 1,
     "before seq 2, where the manifest starts the chain"),
    (lambda m: m["chains"]["ticket"].__setitem__("prev", "ab" * 64), "ticket", 1,
     "broken link: prev is not empty (seq 1)"),
    (lambda m: m.__setitem__("sha256", "00" * 32), None, None, "records.jsonl has SHA-256"),
    (lambda m: m["chains"].pop("duplicate"), "duplicate", None, "records the manifest does not announce"),
    (lambda m: m["chains"].__setitem__("training-audit", {"first": 1, "last": 2, "prev": ""}),
     "training-audit", None, "the manifest announces 1 to 2, the archive holds none"),
    (lambda m: m.__setitem__("period", "2026-10"), "ticket", 1, "after the archive's period"),
    (lambda m: m.__setitem__("period", "2026-12"), "ticket", 1, "before the archive's period"),
])
def test_a_manifest_signed_again_by_an_insider_must_still_match_the_records(
        book: Book, made_archive: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None],
        chain: str | None, seq: int | None, reason: str) -> None:
    manifest = json.loads(members(made_archive)["manifest.json"])
    change(manifest)
    report = verify_archive(rezip(made_archive, tmp_path / "x.zip",
                                  **resigned(private_key(book.folder), manifest)))
    assert found(report, chain, seq, reason), report.as_text()


def test_a_first_link_that_is_not_the_previous_archive_s_last_record_is_reported(tmp_path: Path) -> None:
    clock = Clock(datetime.datetime(2026, 11, 30, 23, 40, tzinfo=datetime.UTC))
    book = Book(tmp_path / "state", clock)
    book.sale([cash(100)])
    book.sale([cash(200)])
    path = archive(book.journal, "2026-12", tmp_path / "out", clock=made)
    manifest = json.loads(members(path)["manifest.json"])
    manifest["chains"]["ticket"]["prev"] = "cd" * 64
    report = verify_archive(rezip(path, tmp_path / "x.zip", **resigned(private_key(book.folder), manifest)))
    assert [str(p) for p in report.problems] == ["ticket 2: broken link: prev is not the manifest's prev"]


def test_two_lines_swapped_are_out_of_order(made_archive: Path, tmp_path: Path) -> None:
    lines = members(made_archive)["records.jsonl"].split(b"\n")
    tickets = [i for i, line in enumerate(lines) if b'"chain":"ticket"' in line]
    lines[tickets[2]], lines[tickets[3]] = lines[tickets[3]], lines[tickets[2]]
    report = verify_archive(rezip(made_archive, tmp_path / "x.zip", records_jsonl=b"\n".join(lines)))
    assert found(report, "ticket", 3, "out of order: comes after seq 4")
    assert not any("missing" in p.reason or "signature" in p.reason for p in report.problems)


def test_lines_cut_from_the_end_are_a_truncation(made_archive: Path, tmp_path: Path) -> None:
    text = members(made_archive)["records.jsonl"]
    kept = b"".join(line for line in text.splitlines(keepends=True) if b'"seq":8,' not in line
                    or b'"chain":"ticket"' not in line)
    report = verify_archive(rezip(made_archive, tmp_path / "x.zip", records_jsonl=kept))
    assert found(report, "ticket", None, "truncated: the manifest says the chain ends at seq 8, the archive "
                                         "at seq 7")


def test_an_archive_replayed_with_a_foreign_key_proves_nothing_about_its_origin(
        book: Book, made_archive: Path, tmp_path: Path) -> None:
    """A forger signs every record and the manifest again with a key of his own, and puts his
    public key inside: the archive is consistent, but not the device's."""
    foreign = ec.generate_private_key(ec.SECP256R1())
    foreign_id = key_id_of(foreign.public_key())
    contents = members(made_archive)
    manifest = json.loads(contents["manifest.json"])
    lines = [json.loads(line) for line in contents["records.jsonl"].splitlines()]
    new_sig: dict[str, str] = {}  # old signature -> forged one
    closures_last = sorted(lines, key=lambda r: r["chain"].endswith("closure"))  # heads name the others
    for record in closures_last:
        record["payload"]["forged"] = 1 if record["chain"] == "ticket" and record["seq"] == 2 else 0
        for head in record["payload"].get("heads", {}).values():
            head["sig"] = new_sig.get(head["sig"], head["sig"])
        record["key"] = foreign_id
        record["prev"] = new_sig.get(record["prev"], record["prev"])
        old, record["sig"] = record["sig"], raw_signature(foreign, record_text(record)).hex()
        new_sig[old] = record["sig"]
    records = "".join(canonical_text(record) + "\n" for record in lines).encode()
    manifest.update(key=foreign_id, sha256=hashlib.sha256(records).hexdigest())
    text = canonical_text(manifest)
    replay = rezip(made_archive, tmp_path / "replay.zip", records_jsonl=records, manifest_json=text.encode(),
                   manifest_sig=raw_signature(foreign, f"TPEJ1-ARCHIVE\n{text}\n".encode()).hex().encode(),
                   public_key_pem=foreign.public_key().public_bytes(
                       serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    alone = verify_archive(replay)
    assert alone.ok and not alone.origin_proven and alone.key_id == foreign_id, alone.as_text()
    device = verify_archive(replay, (book.folder / PUBLIC_KEY_FILE).read_bytes())
    assert device.origin_proven and not device.ok
    assert found(device, None, None, f"public_key.pem is not the key given (it is key id {foreign_id})")
    assert found(device, None, None, "manifest.sig does not verify")
    assert found(device, None, None, f"the manifest names key '{foreign_id}'")
    assert found(device, "ticket", 2, f"signed by unknown key id '{foreign_id}'")
    per_record = [p for p in device.problems if p.chain is not None]
    assert len(per_record) == sum(device.records.values())  # each record named, once


def test_an_archive_that_cannot_be_read_is_reported(made_archive: Path, tmp_path: Path) -> None:
    with pytest.raises(VerifyError, match="not a zip"):
        verify_archive(tmp_path / "state" / "journal.sqlite3")
    partial = {name: data for name, data in members(made_archive).items() if name != "records.jsonl"}
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zipped:
        for name, data in partial.items():
            zipped.writestr(name, data)
    assert found(verify_archive(tmp_path / "x.zip"), None, None, "holds no records.jsonl")


def test_an_archive_of_a_large_month_verifies_in_a_pool(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state", clock=lambda: datetime.datetime(2026, 11, 5, tzinfo=datetime.UTC))
    sale = {"amount": 100, "currency": "EUR", "tenders": [cash(100)]}
    for _ in range(3):
        journal.append_many([("ticket", "sale", sale)] * 2000)
    path = archive(journal, "2026-11", tmp_path / "out", clock=made)
    report = verify_archive(path, workers=2)
    assert report.ok and report.records == {"ticket": 6000}
