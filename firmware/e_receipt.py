"""The e-receipt's address, shown as a QR code beside the receipt (French AGEC law, art. 49:
the paper receipt is printed only on request). The merchant's e-receipt service is named by a
URL template in [receipt]: `url = "https://receipts.example/{terminal}/{ticket}?s={extract}"`.
The address names the signed ticket of the fiscal journal (terminal id, ticket number, signature
extract, docs/journal-format.md); it never carries a card number or an amount, so a code read
over a shoulder reveals nothing but a ticket's reference."""

from __future__ import annotations

import string
import urllib.parse
from dataclasses import dataclass

PLACEHOLDERS = ("terminal", "ticket", "extract")
MAX_URL = 200  # characters once filled: a QR code of version 10 at most, scannable at 190 px on screen


class ReceiptUrlError(ValueError):
    """The template is not an https address with only `PLACEHOLDERS` in braces."""


@dataclass(frozen=True)
class ReceiptConfig:
    url: str  # the template, checked by `check_template`


def check_template(url: str) -> str:
    """`url` when it is an https address whose braces name only `PLACEHOLDERS`."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "https" or not parsed.netloc or any(c.isspace() for c in url):
        raise ReceiptUrlError("must be an https:// address without spaces")
    try:
        parts = list(string.Formatter().parse(url))
    except ValueError as exc:
        raise ReceiptUrlError(f"unbalanced braces: {exc}") from None
    for _, name, spec, conversion in parts:
        if name is not None and (name not in PLACEHOLDERS or spec or conversion):
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ReceiptUrlError(f"{{{name}}} is not one of {known}")
    if len(fill(url, terminal="T" * 8, ticket=999_999_999, extract="0000-0000-0000-0000")) > MAX_URL:
        raise ReceiptUrlError(f"longer than {MAX_URL} characters once filled: the QR code would not scan")
    return url


def fill(url: str, *, terminal: str, ticket: int, extract: str) -> str:
    """The address of one ticket: each value URL-encoded in its place."""
    quote = urllib.parse.quote
    return url.format(terminal=quote(terminal, safe=""), ticket=ticket, extract=quote(extract, safe=""))
