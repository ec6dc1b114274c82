"""The inalterable fiscal journal (French art. 286 I-3° bis CGI, NF525): the store and its signatures.

The format is `docs/journal-format.md`: every record of every chain is signed with the device's
ECDSA P-256 key (`cryptography`) over its fields and the previous record's signature, so anyone
with the public key verifies it offline. SQLite (WAL, synchronous FULL, `firmware.durable`) keeps
the records; triggers refuse UPDATE and DELETE. After each append the chain heads are written,
signed, to a file outside the database (`journal.head`): a database that lost its tail no longer
matches it (`check_guard`).

What goes into the records (tickets, closures, audit events) is `firmware.fiscal`'s business;
`firmware.journal_verify` checks a journal or an archive.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from firmware import durable
from firmware.keystore import KeystoreError, create_private_file, private_folder, read_private_file

VERSION = 1
FILE_NAME = "journal.sqlite3"
HEAD_FILE = "journal.head"
PUBLIC_KEY_FILE = "journal.pub"
PRIVATE_KEY_FILE = "journal.key"  # in <state>/keystore
CHAINS = ("ticket", "duplicate", "closure", "audit", "archive")
TRAINING = "training-"
RECORD_MAGIC = "TPEJ1"
HEAD_MAGIC = "TPEJ1-HEAD"
ARCHIVE_MAGIC = "TPEJ1-ARCHIVE"
SIGNATURE_BYTES = 64  # r and s, 32 bytes each (P-256)
_TYPE = re.compile(r"[a-z_]{1,40}")
_ECDSA = ec.ECDSA(hashes.SHA256())
_MAX_KEY_FILE = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS record (
    id INTEGER PRIMARY KEY,        -- the order records were written in, all chains together
    version INTEGER NOT NULL,      -- the format's version (docs/journal-format.md), 1
    chain TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    type TEXT NOT NULL,
    training INTEGER NOT NULL,
    key TEXT NOT NULL,
    prev BLOB NOT NULL,
    payload TEXT NOT NULL,
    sig BLOB NOT NULL,
    UNIQUE (chain, seq)
);
CREATE TRIGGER IF NOT EXISTS record_no_update BEFORE UPDATE ON record
BEGIN SELECT RAISE(ABORT, 'the fiscal journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS record_no_delete BEFORE DELETE ON record
BEGIN SELECT RAISE(ABORT, 'the fiscal journal is append-only'); END;
"""


class JournalError(Exception):
    """The journal cannot be opened, written or read, or a record would break its format."""


def all_chains(training: bool = False) -> tuple[str, ...]:
    return tuple(TRAINING + chain for chain in CHAINS) if training else CHAINS


def canonical(value: Any) -> str:
    """docs/journal-format.md, Canonical JSON. `JournalError` for floats and non-string keys."""

    def check(item: Any) -> None:
        if isinstance(item, float):
            raise JournalError("a journal payload holds integers, never floats")
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise JournalError("a journal payload's keys are strings")
                check(inner)
        elif isinstance(item, list | tuple):
            for inner in item:
                check(inner)
        elif not (item is None or isinstance(item, bool | int | str)):
            raise JournalError(f"a journal payload cannot hold a {type(item).__name__}")

    check(value)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        raise JournalError("a journal payload's strings are Unicode text (no lone surrogates)") from None
    return text


def utc_text(at: datetime.datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise JournalError("journal times carry a time zone")
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lines(*fields: str) -> bytes:
    """The signed form: each field on its own line, LF-terminated, UTF-8."""
    return "".join(field + "\n" for field in fields).encode()


def sign(private: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(private.sign(data, _ECDSA))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(public: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    if len(signature) != SIGNATURE_BYTES:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public.verify(der, data, _ECDSA)
    except InvalidSignature:
        return False
    return True


def key_id(public: ec.EllipticCurvePublicKey) -> str:
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise JournalError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise JournalError("the journal's public key is an ECDSA P-256 key")
    return key


@dataclass(frozen=True)
class Record:
    chain: str
    seq: int
    at: str
    type: str
    training: bool
    key: str
    prev: bytes
    payload: str  # canonical JSON
    sig: bytes

    def signed_data(self) -> bytes:
        return lines(RECORD_MAGIC, self.chain, str(self.seq), self.at, self.type,
                     "1" if self.training else "0", self.key, self.prev.hex(), self.payload)

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.payload)

    def as_json(self) -> dict[str, Any]:
        """The record as an archive line holds it (docs/journal-format.md, Archives)."""
        return {"version": VERSION, "chain": self.chain, "seq": self.seq, "at": self.at, "type": self.type,
                "training": int(self.training), "key": self.key, "prev": self.prev.hex(),
                "payload": self.data, "sig": self.sig.hex()}

    @property
    def extract(self) -> str:
        """The signature extract a receipt prints: its first and last 4 hexadecimal digits."""
        text = self.sig.hex().upper()
        return f"{text[:4]}-{text[-4:]}"


class JournalKey:
    """The device's ECDSA P-256 key: the private half owner-only in the keystore folder, the
    public half published beside the journal."""

    __slots__ = ("id", "private", "public")

    def __init__(self, private: ec.EllipticCurvePrivateKey) -> None:
        self.private = private
        self.public = private.public_key()
        self.id = key_id(self.public)

    def __repr__(self) -> str:
        return f"JournalKey(id={self.id}, private=<hidden>)"

    def __reduce__(self) -> object:
        raise TypeError("a journal key is not pickled")

    @classmethod
    def open(cls, folder: Path) -> JournalKey:
        """The key of the state `folder`, created on first use; `journal.pub` kept up to date."""
        try:
            path = private_folder(folder) / PRIVATE_KEY_FILE
            if not os.path.lexists(path):
                fresh = ec.generate_private_key(ec.SECP256R1())
                create_private_file(path, fresh.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
            private = serialization.load_pem_private_key(read_private_file(path, _MAX_KEY_FILE), None)
        except (OSError, KeystoreError, ValueError) as exc:
            raise JournalError(f"the journal's key in {folder / 'keystore'} cannot be used: {exc}") from None
        if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(private.curve, ec.SECP256R1):
            raise JournalError(f"{path} is not an ECDSA P-256 key")
        key = cls(private)
        public = folder / PUBLIC_KEY_FILE
        pem = key.public_pem()
        try:
            if not public.exists() or public.read_bytes() != pem:
                durable.write_atomically(public, pem)
        except OSError as exc:
            raise JournalError(f"cannot publish {public}: {exc}") from None
        return key

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


_COLUMNS = "chain, seq, at, type, training, key, prev, payload, sig"


def _record(row: tuple[Any, ...]) -> Record:
    chain, seq, at, kind, training, key, prev, payload, sig = row
    return Record(chain, seq, at, kind, bool(training), key, bytes(prev), payload, bytes(sig))


class Journal:
    """The journal of one state folder. Thread-safe; one writer process at a time."""

    def __init__(self, folder: Path, *, clock: Callable[[], datetime.datetime] = _now) -> None:
        self.folder = folder
        self.path = folder / FILE_NAME
        self._clock = clock
        self._lock = threading.RLock()
        self.key = JournalKey.open(folder)
        try:
            self._db = durable.connect(self.path)
            durable.make_durable(self._db)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open {self.path}: {exc}") from exc
        self._heads: dict[str, Record] = {}
        for chain in (*CHAINS, *all_chains(training=True)):
            head = self._last(chain)
            if head is not None:
                self._heads[chain] = head

    def close(self) -> None:
        self._db.close()

    def _last(self, chain: str) -> Record | None:
        try:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM record WHERE chain = ? ORDER BY seq DESC LIMIT 1",
                                   (chain,)).fetchone()
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: {exc}") from exc
        return None if row is None else _record(row)

    # --- writing --------------------------------------------------------------------------

    def _make(self, chain: str, kind: str, payload: Mapping[str, Any], at: datetime.datetime) -> Record:
        training = chain.startswith(TRAINING)
        if chain.removeprefix(TRAINING) not in CHAINS:
            raise JournalError(f"unknown journal chain {chain!r}")
        if not _TYPE.fullmatch(kind):
            raise JournalError(f"a record type is lower-case letters and '_', not {kind!r}")
        if not isinstance(payload, Mapping):
            raise JournalError("a journal payload is a JSON object")
        head = self._heads.get(chain)
        unsigned = Record(chain, 1 if head is None else head.seq + 1, utc_text(at), kind, training,
                          self.key.id, b"" if head is None else head.sig, canonical(dict(payload)), b"")
        signed = dataclasses.replace(unsigned, sig=sign(self.key.private, unsigned.signed_data()))
        self._heads[chain] = signed
        return signed

    def append(self, chain: str, kind: str, payload: Mapping[str, Any]) -> Record:
        """Sign and commit one record; the chain heads file follows. `JournalError` when it
        cannot be written (nothing is half-written: the record and the numbering roll back)."""
        return self.append_many([(chain, kind, payload)])[0]

    def append_many(self, items: Iterable[tuple[str, str, Mapping[str, Any]]]) -> list[Record]:
        """Several records in one commit (a closure with its audit event, a bulk import)."""
        with self._lock:
            saved = dict(self._heads)
            at = self._clock()
            try:
                records = [self._make(chain, kind, payload, at) for chain, kind, payload in items]
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        f"INSERT INTO record(version, {_COLUMNS}) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(VERSION, r.chain, r.seq, r.at, r.type, int(r.training), r.key, r.prev, r.payload,
                          r.sig) for r in records])
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._heads = saved
                raise JournalError(f"{self.path}: {exc}") from exc
            except BaseException:
                self._heads = saved
                raise
            self._write_guard()
            return records

    # --- reading --------------------------------------------------------------------------

    def head(self, chain: str) -> Record | None:
        with self._lock:
            return self._heads.get(chain)

    def heads(self, training: bool = False) -> dict[str, dict[str, Any]]:
        """`{chain: {"seq", "sig"}}` of every chain that has records."""
        with self._lock:
            return {chain: {"seq": record.seq, "sig": record.sig.hex()}
                    for chain, record in self._heads.items() if chain in all_chains(training)}

    def records(self, chain: str | None = None, *, since: int = 0, batch: int = 2000) -> Iterator[Record]:
        """Records in the order they were written (of one chain when given, from seq `since`
        on), read `batch` at a time: memory stays flat."""
        last = 0
        while True:
            where, args = ("id > ?", [last]) if chain is None else ("id > ? AND chain = ? AND seq >= ?",
                                                                  [last, chain, since])
            try:
                with self._lock:
                    rows = self._db.execute(
                        f"SELECT id, {_COLUMNS} FROM record WHERE {where} ORDER BY id LIMIT ?",
                        (*args, batch)).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"{self.path}: {exc}") from exc
            if not rows:
                return
            for row in rows:
                yield _record(row[1:])
            last = rows[-1][0]

    # --- the truncation guard ---------------------------------------------------------------

    def _guard_document(self) -> dict[str, Any]:
        heads = {chain: {"seq": r.seq, "sig": r.sig.hex()} for chain, r in sorted(self._heads.items())}
        signature = sign(self.key.private, lines(HEAD_MAGIC, self.key.id, canonical(heads)))
        return {"heads": heads, "key": self.key.id, "sig": signature.hex()}

    def _write_guard(self) -> None:
        try:
            durable.write_atomically(self.folder / HEAD_FILE, canonical(self._guard_document()).encode())
        except OSError as exc:
            raise JournalError(f"cannot write {self.folder / HEAD_FILE}: {exc}") from exc

    def check_guard(self) -> list[str]:
        """The chains the database has lost records of since the heads file was written (each
        as a sentence); empty when they agree. A database ahead of the file (a power cut
        between the commit and the file) is brought up to date. A missing file on a journal
        with records, or one that does not verify, is itself reported."""
        path = self.folder / HEAD_FILE
        with self._lock:
            if not path.exists():
                if not self._heads:
                    return []
                self._write_guard()
                return [f"{HEAD_FILE} is missing while the journal holds records"]
            try:
                document = json.loads(path.read_bytes())
                heads = document["heads"]
                ok = verify(self.key.public, lines(HEAD_MAGIC, document["key"], canonical(heads)),
                            bytes.fromhex(document["sig"]))
            except (OSError, ValueError, KeyError, TypeError, JournalError):
                ok, heads = False, {}
            if not ok:
                self._write_guard()
                return [f"{HEAD_FILE} does not verify against the journal's key"]
            problems = []
            for chain, expected in sorted(heads.items()):
                mine = self._heads.get(chain)
                if mine is None or mine.seq < expected["seq"]:
                    ends = 0 if mine is None else mine.seq
                    problems.append(f"chain {chain}: the database ends at seq {ends}, the heads file at "
                                    f"seq {expected['seq']}: records are missing")
                    continue
                row = self._db.execute("SELECT sig FROM record WHERE chain = ? AND seq = ?",
                                       (chain, expected["seq"])).fetchone()
                if row is None or bytes(row[0]).hex() != expected["sig"]:
                    problems.append(f"chain {chain}: record {expected['seq']} is not the one the heads file "
                                    "names")
            self._write_guard()
            return problems
