"""The firmware's logs on standard output, where journald collects them (`tpe run`).

Card data never reaches a log by construction: PANs, track 2 and PIN blocks are
`emv.sensitive.Sensitive` values whose text is masked, and no module formats a PIN. As a last
line of defence the handler's filter still masks anything in a message that looks like a PAN
(13 to 19 digits passing the Luhn check, ISO/IEC 7812-1 Annex B) or a track 2 equivalent
(PAN, separator 'D' or '=', then digits: ISO/IEC 7813 and EMV 4.4 Book 3 Annex A, '57'), keeping
the last four digits (PCI DSS 3.4).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

# journald stamps each line itself: no time here, the level and the module say enough.
FORMAT = "%(levelname)s %(name)s: %(message)s"

_TRACK2 = re.compile(r"(?<![0-9A-Fa-f])(\d{12,19})[D=]\d{4,}F?(?![0-9A-Fa-f])", re.IGNORECASE)
_DIGITS = re.compile(r"(?<!\d)\d{13,19}(?!\d)")


def luhn_ok(digits: str) -> bool:
    """The Luhn check digit of ISO/IEC 7812-1, Annex B."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def mask_card_data(text: str) -> str:
    """`text` with every track 2 equivalent and every Luhn-valid 13 to 19 digit run masked."""
    text = _TRACK2.sub(lambda m: "*" * (len(m.group(1)) - 4) + m.group(1)[-4:] + "=(track 2 masked)", text)
    return _DIGITS.sub(lambda m: "*" * (len(m.group()) - 4) + m.group()[-4:] if luhn_ok(m.group())
                       else m.group(), text)


class CardDataFilter(logging.Filter):
    """Masks card numbers in a record's message and traceback before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_card_data(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_card_data(record.exc_text)
        return True


def setup(level: int = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """The root logger writes to `stream` (standard output) through `CardDataFilter`; the
    handlers set before are replaced. Returns the handler."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(CardDataFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
