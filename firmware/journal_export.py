"""The accountant's export of the fiscal journal: its tickets as CSV that a spreadsheet opens as
it is (UTF-8 with a byte order mark, semicolons, CRLF line ends), one line per ticket of the real
`ticket` chain (training tickets are not sales), in seq order.

Dates and times are the terminal's local ones, and `--period` is a local month: the accountant
reads local dates. Amounts are written from the integer minor units, never through floats, with
a decimal point or, for French spreadsheets, a decimal comma. An export is journalled as an
`export` audit event (docs/journal-format.md, Payloads, Audit events).
"""

from __future__ import annotations

import csv
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.durable import sha256_of
from firmware.journal import Journal, JournalError, Record
from firmware.journal_archive import ArchiveError, period_bounds
from firmware.money import CURRENCIES, format_amount

TENDERS = ("card", "cash", "cheque", "meal_voucher", "credit_note")  # docs/journal-format.md, Tickets
COLUMNS = ("seq", "date", "time", "type", "amount", "currency", *TENDERS, "cancels", "signature")


class ExportError(JournalError):
    """The export cannot be made: a bad period, a ticket that cannot be read, a file that
    cannot be written. No file is left behind and nothing is journalled."""


@dataclass(frozen=True)
class Export:
    path: Path
    tickets: int
    sha256: str


def amount_text(amount: int, exponent: int, decimal_comma: bool = False) -> str:
    """-1250 with exponent 2 -> '-12.50' (or '-12,50')."""
    text = ("-" if amount < 0 else "") + format_amount(abs(amount), exponent)
    return text.replace(".", ",") if decimal_comma else text


def _local(at: str, zone: datetime.tzinfo | None) -> datetime.datetime:
    utc = datetime.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
    return utc.astimezone(zone)


def _row(record: Record, when: datetime.datetime, decimal_comma: bool) -> list[str]:
    where = f"ticket {record.seq}"
    try:
        data: dict[str, Any] = record.data
        amount, currency, tenders = data["amount"], data["currency"], data["tenders"]
        if type(amount) is not int or not isinstance(tenders, list):
            raise TypeError("amount or tenders")
        if currency not in CURRENCIES:
            raise ExportError(f"{where}: the minor unit of currency {currency!r} is not known")
        exponent = CURRENCIES[currency][1]
        paid = dict.fromkeys(TENDERS, 0)
        used: set[str] = set()
        for tender in tenders:
            kind, value = tender["type"], tender["amount"]
            if kind not in paid or type(value) is not int:
                raise TypeError(f"tender {kind!r}")
            paid[kind] += value
            used.add(kind)
        cancels = data.get("cancels")
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{where} cannot be read ({exc}): verify the journal") from None
    return [str(record.seq), f"{when:%Y-%m-%d}", f"{when:%H:%M:%S}", record.type,
            amount_text(amount, exponent, decimal_comma), currency,
            *(amount_text(paid[t], exponent, decimal_comma) if t in used else "" for t in TENDERS),
            "" if cancels is None else str(cancels), record.extract]


def export_csv(journal: Journal, out: Path, *, period: str | None = None, decimal_comma: bool = False,
               zone: datetime.tzinfo | None = None) -> Export:
    """Write the tickets (of the local month `period`, YYYY-MM, or all) to `out`, replacing it,
    then journal the export. `zone`: the local time zone (default: the system's)."""
    if period is not None:
        try:
            period_bounds(period)
        except ArchiveError as exc:
            raise ExportError(str(exc)) from None
    partial = out.with_name(f".{out.name}.part")
    count = 0
    try:
        with open(partial, "w", encoding="utf-8-sig", newline="") as file:
            writer = csv.writer(file, delimiter=";", lineterminator="\r\n")
            writer.writerow(COLUMNS)
            for record in journal.records("ticket"):
                try:
                    when = _local(record.at, zone)
                except ValueError:
                    raise ExportError(f"ticket {record.seq}: time {record.at!r} cannot be read") from None
                if period is not None and f"{when:%Y-%m}" != period:
                    continue
                writer.writerow(_row(record, when, decimal_comma))
                count += 1
            file.flush()
            os.fsync(file.fileno())
        digest = sha256_of(partial)
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ExportError(f"cannot write {out}: {exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    try:
        journal.append("audit", "export", {"event": "export", "format": "csv", "period": period or "all",
                                           "file": out.name, "tickets": count, "sha256": digest})
    except BaseException:
        out.unlink(missing_ok=True)  # an export the journal does not name is not left behind
        raise
    return Export(out, count, digest)
