"""Receipts of journalled tickets and duplicates (firmware/receipt.py).

TEST KEYS only: each journal's key is made in tmp.
"""

from __future__ import annotations

import datetime
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import fiscal
from firmware.fiscal import Tender
from firmware.journal import Journal
from firmware.receipt import ReceiptError, format_money, receipt_lines, software_version

AT = datetime.datetime(2026, 11, 26, 12, 30, 5, 123456, tzinfo=datetime.UTC)
PAN = "4761739001010051"
REFERENCE = {"payment": 7, "outcome": "approved_online", "aid": "A0000000031010",
             "pan_masked": "476173******0051", "atc": "001C", "authorization_code": "A1B2C3"}
PARIS = ZoneInfo("Europe/Paris")
VERSION = "tpe 0.1.0"


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(tmp_path, clock=lambda: AT)
    yield opened
    opened.close()


def _value(lines: list[str], label: str) -> str:
    """What a receipt line labelled `label` shows on its right."""
    (line,) = [line for line in lines if line.startswith(label + " ")]
    return line[len(label):].strip()


@pytest.mark.parametrize(("amount", "currency", "text"), [
    (1250, "EUR", "12,50 EUR"), (5, "EUR", "0,05 EUR"), (-250, "EUR", "-2,50 EUR"), (-5, "EUR", "-0,05 EUR"),
    (100000, "EUR", "1000,00 EUR"), (1500, "JPY", "1500 JPY"), (12345, "KWD", "12,345 KWD"),
    (-12345, "TND", "-12,345 TND"), (199, "XYZ", "1,99 XYZ")])
def test_amounts_are_shown_in_the_currency_s_minor_unit_with_a_decimal_comma(amount: int, currency: str,
                                                                            text: str) -> None:
    assert format_money(amount, currency) == text  # ISO 4217 exponents: EUR 2, JPY 0, KWD and TND 3


def test_a_sale_receipt_shows_number_date_amount_tenders_signature_and_version(journal: Journal) -> None:
    fiscal.record_sale(journal, 100, "EUR", [Tender("cash", 100)])
    record = fiscal.record_sale(journal, 4250, "EUR", [Tender("card", 3000, REFERENCE), Tender("cash", 1250)])
    lines = receipt_lines(record, version=VERSION, merchant=["Taxi Dupont", "75002 Paris"], tz=PARIS)
    assert all(len(line) <= 32 for line in lines)
    assert lines[:3] == ["Taxi Dupont".center(32).rstrip(), "75002 Paris".center(32).rstrip(),
                         "VENTE".center(32).rstrip()]
    assert _value(lines, "Ticket n°") == "2"
    assert _value(lines, "Date") == "26/11/2026 13:30:05"  # 12:30:05 UTC is 13:30:05 in Paris in November
    assert _value(lines, "TOTAL") == "42,50 EUR"
    assert _value(lines, "  Carte") == "30,00 EUR" and _value(lines, "  Espèces") == "12,50 EUR"
    assert _value(lines, "  N° carte") == "476173******0051" and _value(lines, "  Autorisation") == "A1B2C3"
    sig = record.sig.hex().upper()
    assert _value(lines, "Signature") == f"{sig[:4]}-{sig[-4:]}"
    assert _value(lines, "Logiciel") == VERSION
    assert not any("DUPLICATA" in line or "FORMATION" in line for line in lines)
    assert PAN not in "\n".join(lines)


def test_a_refund_and_a_cancellation_show_negative_amounts_and_what_they_cancel(journal: Journal) -> None:
    sale = fiscal.record_sale(journal, 900, "EUR", [Tender("meal_voucher", 900)])
    refund = receipt_lines(fiscal.record_refund(journal, -300, "EUR", [Tender("credit_note", -300)]),
                           version=VERSION, tz=datetime.UTC)
    assert "REMBOURSEMENT" in refund[0] and _value(refund, "TOTAL") == "-3,00 EUR"
    assert _value(refund, "  Avoir") == "-3,00 EUR" and _value(refund, "Date") == "26/11/2026 12:30:05"
    cancelled = receipt_lines(fiscal.cancel(journal, sale.seq), version=VERSION)
    assert "ANNULATION" in cancelled[0] and _value(cancelled, "Annule le ticket n°") == str(sale.seq)
    assert _value(cancelled, "  Titre-restaurant") == "-9,00 EUR" and _value(cancelled, "Ticket n°") == "3"


def test_a_duplicate_is_marked_with_its_copy_number_and_both_signatures(journal: Journal) -> None:
    ticket = fiscal.record_sale(journal, 700, "EUR", [Tender("cheque", 700)])
    other = fiscal.record_sale(journal, 800, "EUR", [Tender("cheque", 800)])
    fiscal.reprint(journal, ticket.seq)
    second = fiscal.reprint(journal, ticket.seq)
    lines = receipt_lines(second, version=VERSION, original=ticket)
    assert "DUPLICATA 2" in [line.strip() for line in lines]
    assert _value(lines, "Ticket n°") == "1" and _value(lines, "TOTAL") == "7,00 EUR"
    assert _value(lines, "Signature") == ticket.extract
    assert _value(lines, f"Duplicata n° {second.seq}") == second.extract
    with pytest.raises(ReceiptError):
        receipt_lines(second, version=VERSION)  # the ticket it copies is needed
    with pytest.raises(ReceiptError):
        receipt_lines(second, version=VERSION, original=other)


def test_training_receipts_are_watermarked_first_and_last(journal: Journal) -> None:
    ticket = fiscal.record_sale(journal, 500, "EUR", [Tender("cash", 500)], training=True)
    lines = receipt_lines(ticket, version=VERSION, merchant="Taxi Dupont")
    watermark = "FORMATION - NE VAUT PAS TICKET"
    assert lines[1].strip() == watermark and lines[-1].strip() == watermark
    copy = fiscal.reprint(journal, ticket.seq, training=True)
    assert receipt_lines(copy, version=VERSION, original=ticket)[-1].strip() == watermark
    real = fiscal.record_sale(journal, 500, "EUR", [Tender("cash", 500)])
    with pytest.raises(ReceiptError):  # a training copy never reprints a real ticket
        receipt_lines(copy, version=VERSION, original=real)


def test_records_that_are_not_tickets_have_no_receipt(journal: Journal) -> None:
    fiscal.record_sale(journal, 500, "EUR", [Tender("cash", 500)])
    for record in (fiscal.close(journal, "day", "2026-11-26"), fiscal.audit(journal, "login", user="marie")):
        with pytest.raises(ReceiptError):
            receipt_lines(record, version=VERSION)
    ticket = fiscal.record_sale(journal, 500, "EUR", [Tender("cash", 500)])
    with pytest.raises(ReceiptError):
        receipt_lines(ticket, version=VERSION, width=20)


def test_the_software_version_is_the_installed_package_s() -> None:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    assert software_version() == f"{project['name']} {project['version']}"


tenders = st.lists(st.tuples(st.sampled_from(fiscal.TENDERS), st.integers(1, 10**9)), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(parts=tenders, refund=st.booleans(), training=st.booleans(), width=st.integers(24, 60),
       currency=st.sampled_from(["EUR", "JPY", "KWD", "CHF"]),
       merchant=st.none() | st.text(max_size=80) | st.lists(st.text(max_size=50), max_size=3))
def test_every_line_fits_the_width_and_the_total_is_shown(parts: list[tuple[str, int]], refund: bool,
                                                          training: bool, width: int, currency: str,
                                                          merchant: Any) -> None:
    sign = -1 if refund else 1
    with tempfile.TemporaryDirectory() as folder:
        journal = Journal(Path(folder), clock=lambda: AT)
        amount = sign * sum(a for _, a in parts)
        paid = [Tender(kind, sign * a, REFERENCE if kind == "card" else None) for kind, a in parts]
        write = fiscal.record_refund if refund else fiscal.record_sale
        record = write(journal, amount, currency, paid, training=training)
        journal.close()
    lines = receipt_lines(record, version=VERSION, merchant=merchant, width=width)
    assert all(len(line) <= width for line in lines)
    total = format_money(amount, currency)
    text = "\n".join(lines)
    assert total in text and (("FORMATION" in text) == training)
