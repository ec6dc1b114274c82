"""The plain-text receipt of a journalled ticket or duplicate (French art. 286 I-3° bis CGI, NF525):
its number, date, amount and tenders, the signature extract and the software version; duplicates
marked DUPLICATA with their copy number, training records watermarked.

The lines are for a screen or a 58 mm thermal printer (32 columns by default). No card data
beyond the masked PAN (PCI DSS 3.4).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from firmware.fiscal import DUPLICATE_MARK
from firmware.journal import Record
from firmware.money import CURRENCIES

WATERMARK = "FORMATION - NE VAUT PAS TICKET"
MIN_WIDTH = 24
TITLES = {"sale": "VENTE", "refund": "REMBOURSEMENT", "cancellation": "ANNULATION"}
TENDER_LABELS = {"card": "Carte", "cash": "Espèces", "cheque": "Chèque", "meal_voucher": "Titre-restaurant",
                 "credit_note": "Avoir"}
REFERENCE_LABELS = (("  N° carte", "pan_masked"), ("  AID", "aid"), ("  Autorisation", "authorization_code"))
PACKAGE = "tpe"


class ReceiptError(Exception):
    """The record is not a ticket or a duplicate, or does not make a receipt."""


def software_version() -> str:
    """The installed package's name and version ("tpe 0.1.0"), for the receipts."""
    try:
        return f"{PACKAGE} {importlib.metadata.version(PACKAGE)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{PACKAGE} (version unknown)"


def format_money(amount: int, currency: str) -> str:
    """-1250, "EUR" -> "-12,50 EUR": the currency's minor unit (ISO 4217), French decimal comma."""
    exponent = CURRENCIES[currency][1] if currency in CURRENCIES else 2
    units, minor = divmod(abs(amount), 10**exponent)
    text = f"{units},{minor:0{exponent}d}" if exponent else str(units)
    return f"{'-' if amount < 0 else ''}{text} {currency}"


def _local_time(at: str, tz: datetime.tzinfo | None) -> str:
    try:
        moment = datetime.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise ReceiptError(f"the record's time {at!r} is not the journal's") from None
    return moment.astimezone(tz).strftime("%d/%m/%Y %H:%M:%S")


def _centered(text: str, width: int) -> list[str]:
    return [line.center(width).rstrip() for line in textwrap.wrap(text, width, break_long_words=True)]


def _pair(left: str, right: str, width: int) -> list[str]:
    """`left` then `right` aligned on the right, on one line when they fit, else two."""
    if len(left) + 1 + len(right) <= width:
        return [left + right.rjust(width - len(left))]
    return [*textwrap.wrap(left, width, break_long_words=True),
            *(line.rjust(width) for line in textwrap.wrap(right, width, break_long_words=True))]


def _ticket_data(record: Record) -> Mapping[str, Any]:
    try:
        data = record.data
        if not isinstance(data, dict):
            raise TypeError("not an object")
        amount, currency, tenders = data["amount"], data["currency"], data["tenders"]
        if not (isinstance(amount, int) and isinstance(currency, str) and isinstance(tenders, list)):
            raise TypeError("amount, currency or tenders of the wrong type")
    except (ValueError, KeyError, TypeError) as exc:
        raise ReceiptError(f"{record.chain} {record.seq} is not a ticket: {exc}") from None
    return data


def receipt_lines(record: Record, *, version: str, merchant: str | Sequence[str] | None = None,
                  width: int = 32, original: Record | None = None,
                  tz: datetime.tzinfo | None = None) -> list[str]:
    """The receipt of a ticket `record`, or of a duplicate `record` with its ticket `original`.
    `version` is the software's (`software_version()`); `merchant` its name and address lines;
    times shown in `tz` (None: the terminal's local time)."""
    if width < MIN_WIDTH:
        raise ReceiptError(f"a receipt is at least {MIN_WIDTH} columns wide")
    duplicate: Record | None = None
    if record.chain.endswith("duplicate"):
        duplicate = record
        if original is None:
            raise ReceiptError("a duplicate's receipt needs the ticket it copies")
        copied = duplicate.data
        if (not original.chain.endswith("ticket") or original.training != duplicate.training
                or not isinstance(copied, dict) or copied.get("ticket") != original.seq):
            raise ReceiptError(f"{original.chain} {original.seq} is not the ticket duplicate "
                               f"{duplicate.seq} copies")
        record = original
    if not record.chain.endswith("ticket") or record.type not in TITLES:
        raise ReceiptError(f"{record.chain} {record.seq} ({record.type}) has no receipt")
    data = _ticket_data(record)
    currency = data["currency"]
    lines: list[str] = []
    for text in [merchant] if isinstance(merchant, str) else merchant or []:
        lines += _centered(text, width)
    if record.training:
        lines += _centered(WATERMARK, width)
    lines += _centered(TITLES[record.type], width)
    if duplicate is not None:
        lines += _centered(f"{DUPLICATE_MARK} {duplicate.data.get('copy')}", width)
    lines += _pair("Ticket n°", str(record.seq), width)
    lines += _pair("Date", _local_time(record.at, tz), width)
    if "cancels" in data:
        lines += _pair("Annule le ticket n°", str(data["cancels"]), width)
    lines.append("-" * width)
    lines += _pair("TOTAL", format_money(data["amount"], currency), width)
    for tender in data["tenders"]:
        if not (isinstance(tender, dict) and isinstance(tender.get("amount"), int)):
            raise ReceiptError(f"{record.chain} {record.seq}: a tender is not an object with an amount")
        kind = str(tender.get("type"))
        lines += _pair(f"  {TENDER_LABELS.get(kind, kind)}", format_money(tender["amount"], currency), width)
        reference = tender.get("reference")
        if isinstance(reference, dict):
            lines += [line for label, key in REFERENCE_LABELS if reference.get(key)
                      for line in _pair(label, str(reference[key]), width)]
    lines.append("-" * width)
    lines += _pair("Signature", record.extract, width)
    if duplicate is not None:
        lines += _pair(f"Duplicata n° {duplicate.seq}", duplicate.extract, width)
    lines += _pair("Logiciel", version, width)
    if record.training:
        lines += _centered(WATERMARK, width)
    return lines
