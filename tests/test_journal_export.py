"""The accountant's CSV export of the fiscal journal (firmware/journal_export.py): read back with
Python's csv module, amounts from integer minor units checked against decimal arithmetic done
here, local dates and months, the export journalled."""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_journal_verify import Book, Clock, card, cash, sample

from firmware.journal_export import COLUMNS, ExportError, amount_text, export_csv

PARIS = ZoneInfo("Europe/Paris")
BOM = b"\xef\xbb\xbf"


def read_back(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as file:
        return list(csv.DictReader(file, delimiter=";"))


def decimal_text(amount: int, exponent: int) -> str:
    """The amount in major units, by decimal arithmetic (never floats)."""
    return f"{Decimal(amount).scaleb(-exponent):.{exponent}f}"


@pytest.fixture
def book(tmp_path: Path) -> Book:
    return sample(tmp_path / "state")


def test_every_ticket_is_one_line_that_a_spreadsheet_reads(book: Book, tmp_path: Path) -> None:
    done = export_csv(book.journal, tmp_path / "tickets.csv", zone=datetime.UTC)
    data = (tmp_path / "tickets.csv").read_bytes()
    assert data.startswith(BOM) and data.count(b"\r\n") == 10 and b"\n" not in data.replace(b"\r\n", b"")
    rows = read_back(tmp_path / "tickets.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert done.tickets == len(rows) == 9  # the training ticket is not a sale
    records = {r.seq: r for r in book.journal.records("ticket")}
    for row, ticket in zip(rows, book.tickets["ticket"], strict=True):
        record = records[int(row["seq"])]
        assert row["date"] + "T" + row["time"] == record.at[:19]
        assert row["type"] == record.type and row["signature"] == record.extract
        assert row["amount"] == decimal_text(ticket["amount"], 2 if ticket["currency"] != "JPY" else 0)
        assert row["currency"] == ticket["currency"]
        for tender in ("card", "cash", "cheque", "meal_voucher", "credit_note"):
            paid = [t["amount"] for t in ticket["tenders"] if t["type"] == tender]
            assert row[tender] == (decimal_text(sum(paid), 2) if paid else "")
        assert row["cancels"] == str(ticket.get("cancels", ""))
    assert [row["cancels"] for row in rows if row["type"] == "cancellation"] == ["2"]
    assert rows[2]["card"] == "15.00" and rows[2]["meal_voucher"] == "5.00"  # a split payment


def test_decimal_comma_and_the_minor_units_of_each_currency(tmp_path: Path) -> None:
    book = Book(tmp_path / "state")
    book.sale([cash(1250)])
    book.refund([card(-250)])
    book.sale([cash(1000)], currency="JPY")
    book.sale([cash(1250)], currency="TND")
    book.sale([cash(10**12 - 1)])
    export_csv(book.journal, tmp_path / "fr.csv", decimal_comma=True)
    rows = read_back(tmp_path / "fr.csv")
    assert [row["amount"] for row in rows] == ["12,50", "-2,50", "1000", "1,250", "9999999999,99"]
    assert rows[1]["card"] == "-2,50" and rows[3]["cash"] == "1,250"


def test_a_period_is_a_local_month(book: Book, tmp_path: Path) -> None:
    """Tickets 7 and 8, at 23:10 and 23:40 UTC on 30 November, are in December in Paris."""
    export_csv(book.journal, tmp_path / "dec.csv", period="2026-12", zone=PARIS)
    rows = read_back(tmp_path / "dec.csv")
    assert [(row["seq"], row["date"], row["time"]) for row in rows] == [
        ("7", "2026-12-01", "00:10:00"), ("8", "2026-12-01", "00:40:00"), ("9", "2026-12-01", "01:30:00")]
    export_csv(book.journal, tmp_path / "nov.csv", period="2026-11", zone=PARIS)
    assert [row["seq"] for row in read_back(tmp_path / "nov.csv")] == ["1", "2", "3", "4", "5", "6"]
    export_csv(book.journal, tmp_path / "utc.csv", period="2026-12", zone=datetime.UTC)
    assert [row["seq"] for row in read_back(tmp_path / "utc.csv")] == ["9"]


def test_an_export_is_journalled_with_the_file_s_digest(book: Book, tmp_path: Path) -> None:
    done = export_csv(book.journal, tmp_path / "tickets.csv", period="2026-11", zone=PARIS)
    event = book.journal.head("audit")
    assert event is not None and event.type == "export"
    digest = hashlib.sha256((tmp_path / "tickets.csv").read_bytes()).hexdigest()
    assert event.data == {"event": "export", "format": "csv", "period": "2026-11", "file": "tickets.csv",
                          "tickets": 6, "sha256": digest}
    assert done.sha256 == event.data["sha256"]


def test_an_export_that_cannot_be_made_leaves_nothing_and_is_not_journalled(tmp_path: Path) -> None:
    book = Book(tmp_path / "state")
    book.sale([cash(100)])
    book.sale([cash(100)], currency="XBT")
    before = book.journal.head("audit")
    with pytest.raises(ExportError, match="ticket 2: the minor unit of currency 'XBT' is not known"):
        export_csv(book.journal, tmp_path / "tickets.csv")
    with pytest.raises(ExportError, match="YYYY-MM"):
        export_csv(book.journal, tmp_path / "tickets.csv", period="2026-11-30")
    with pytest.raises(ExportError, match="cannot write"):
        export_csv(book.journal, tmp_path / "no" / "such" / "folder.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    assert book.journal.head("audit") == before


def test_an_empty_export_has_its_header(tmp_path: Path) -> None:
    book = Book(tmp_path / "state", Clock())
    done = export_csv(book.journal, tmp_path / "none.csv")
    text = (tmp_path / "none.csv").read_bytes()
    assert done.tickets == 0 and text == BOM + (";".join(COLUMNS) + "\r\n").encode()
    assert list(csv.reader(io.StringIO(text.decode("utf-8-sig")), delimiter=";")) == [list(COLUMNS)]


@given(amount=st.integers(min_value=-(10**15), max_value=10**15), exponent=st.sampled_from([0, 2, 3]),
       comma=st.booleans())
def test_amounts_are_written_exactly_from_minor_units(amount: int, exponent: int, comma: bool) -> None:
    expected = decimal_text(amount, exponent)
    assert amount_text(amount, exponent, comma) == (expected.replace(".", ",") if comma else expected)
