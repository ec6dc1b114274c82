"""Monthly archives of the fiscal journal (NF525 archiving), as docs/journal-format.md, Archives,
states them: a zip an inspector verifies without this software.

A month's records are chosen on their UTC `at`, chain by chain, so that successive months split
every chain into contiguous runs even when the clock was set back (`period_range`). Making an
archive is itself journalled: an `archive` record and an `archive` audit event, in one commit.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import sqlite3
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware import durable
from firmware.durable import sha256_of
from firmware.journal import (
    ARCHIVE_MAGIC,
    VERSION,
    Journal,
    JournalError,
    canonical,
    lines,
    sign,
    utc_text,
)

RECORDS_MEMBER = "records.jsonl"
PUBLIC_KEY_MEMBER = "public_key.pem"
MANIFEST_MEMBER = "manifest.json"
MANIFEST_SIG_MEMBER = "manifest.sig"
_PERIOD = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
_BATCH = 2000


class ArchiveError(JournalError):
    """The archive cannot be made: a bad period, a folder that cannot be written."""


def period_bounds(period: str) -> tuple[str, str]:
    """The `at` of the first instant of the month `YYYY-MM` and of the next month, as the
    journal writes times (UTC, docs/journal-format.md, A record): text order is time order."""
    found = _PERIOD.fullmatch(period) if isinstance(period, str) else None
    if found is None:
        raise ArchiveError(f"a period is a month, YYYY-MM, not {period!r}")
    year, month = int(found[1]), int(found[2])
    after = (year + 1, 1) if month == 12 else (year, month + 1)
    return f"{year:04d}-{month:02d}-01T00:00:00.000000Z", f"{after[0]:04d}-{after[1]:02d}-01T00:00:00.000000Z"


@dataclass(frozen=True)
class ChainRange:
    first: int
    last: int
    prev: str  # hexadecimal sig of the record before `first`, empty for seq 1


def _read_only(journal: Journal) -> sqlite3.Connection:
    try:
        return sqlite3.connect(journal.path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ArchiveError(f"cannot read {journal.path}: {exc}") from exc


def period_range(db: sqlite3.Connection, period: str) -> dict[str, ChainRange]:
    """Per chain, the records of the month: from the first record whose `at` is in the month or
    later, up to the last before the first record whose `at` is after the month. A record
    stamped earlier than the one before it (clock set back) stays in its neighbours' month."""
    start, end = period_bounds(period)
    ranges: dict[str, ChainRange] = {}
    rows = db.execute(
        "SELECT chain, MIN(CASE WHEN at >= ? THEN seq END), MIN(CASE WHEN at >= ? THEN seq END), MAX(seq) "
        "FROM record GROUP BY chain ORDER BY chain", (start, end)).fetchall()
    for chain, first, after, head in rows:
        if first is None:
            continue
        last = head if after is None else after - 1
        if last < first:
            continue
        prev = b""
        if first > 1:
            row = db.execute("SELECT sig FROM record WHERE chain = ? AND seq = ?",
                             (chain, first - 1)).fetchone()
            if row is None:
                raise ArchiveError(f"chain {chain}: record {first - 1} is missing; verify the journal")
            prev = bytes(row[0])
        ranges[chain] = ChainRange(first, last, prev.hex())
    return ranges


def file_name(period: str, key: str, created: datetime.datetime) -> str:
    return f"journal-{period}-{key}-{created.astimezone(datetime.UTC):%Y%m%dT%H%M%SZ}.zip"


def _member(name: str, created: datetime.datetime) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, created.astimezone(datetime.UTC).timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o444 << 16
    return info


def _write_zip(path: Path, journal: Journal, db: sqlite3.Connection, period: str,
               ranges: dict[str, ChainRange], created: datetime.datetime) -> int:
    """docs/journal-format.md, Archives. Returns the number of records written."""
    count = 0
    digest = hashlib.sha256()
    with zipfile.ZipFile(path, "x") as archive:
        with archive.open(_member(RECORDS_MEMBER, created), "w", force_zip64=True) as out:
            for chain, span in ranges.items():  # chain names in code-point order
                cursor = db.execute(
                    "SELECT chain, seq, at, type, training, key, prev, payload, sig FROM record "
                    "WHERE chain = ? AND seq BETWEEN ? AND ? ORDER BY seq", (chain, span.first, span.last))
                expected = span.first
                while rows := cursor.fetchmany(_BATCH):
                    for row in rows:
                        if row[1] != expected:
                            raise ArchiveError(f"chain {chain}: record {expected} is missing; "
                                               "verify the journal")
                        line = (canonical(_as_json(row)) + "\n").encode()
                        digest.update(line)
                        out.write(line)
                        expected += 1
                        count += 1
                if expected != span.last + 1:
                    raise ArchiveError(f"chain {chain}: record {expected} is missing; verify the journal")
        manifest = canonical({
            "version": VERSION, "period": period, "key": journal.key.id, "created": utc_text(created),
            "sha256": digest.hexdigest(),
            "chains": {chain: {"first": r.first, "last": r.last, "prev": r.prev}
                       for chain, r in ranges.items()},
        })
        archive.writestr(_member(PUBLIC_KEY_MEMBER, created), journal.key.public_pem())
        archive.writestr(_member(MANIFEST_MEMBER, created), manifest.encode())
        signature = sign(journal.key.private, lines(ARCHIVE_MAGIC, manifest))
        archive.writestr(_member(MANIFEST_SIG_MEMBER, created), signature.hex().encode())
    return count


def _as_json(row: tuple[Any, ...]) -> dict[str, Any]:
    chain, seq, at, kind, training, key, prev, payload, sig = row
    return {"version": VERSION, "chain": chain, "seq": seq, "at": at, "type": kind, "training": training,
            "key": key, "prev": bytes(prev).hex(), "payload": json.loads(payload), "sig": bytes(sig).hex()}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def archive(journal: Journal, period: str, out_dir: Path, *,
            clock: Callable[[], datetime.datetime] = _now) -> Path:
    """Write the archive of the month `period` (YYYY-MM, UTC) in `out_dir` and journal the act.
    A month with no record still gets its archive (an inspector may ask for it). Never
    overwrites a file; `ArchiveError` (nothing left behind) when it cannot be made."""
    period_bounds(period)
    created = clock()
    utc_text(created)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"cannot make {out_dir}: {exc}") from exc
    path = out_dir / file_name(period, journal.key.id, created)
    partial = path.with_name(f".{path.name}.part")
    db = _read_only(journal)
    try:
        db.execute("BEGIN")  # one snapshot: the ranges and the records agree
        ranges = period_range(db, period)
        partial.unlink(missing_ok=True)  # left by a power cut during an earlier attempt
        count = _write_zip(partial, journal, db, period, ranges, created)
        durable.fsync_path(partial)
        os.link(partial, path)  # never over an existing file (FileExistsError)
        partial.unlink()
        durable.fsync_path(out_dir)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise ArchiveError(f"cannot read {journal.path}: {exc}") from exc
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ArchiveError(f"cannot write {path}: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        db.close()
    act = {"period": period, "file": path.name, "sha256": sha256_of(path), "records": count}
    try:
        journal.append_many([("archive", "archive", act), ("audit", "archive", {"event": "archive", **act})])
    except BaseException:
        path.unlink(missing_ok=True)  # an archive the journal does not name is not left behind
        raise
    return path
