"""The EMV tag dictionary: name, source, format and length of each data element.

Sources: EMV 4.4 Book 3 Annex A (A1), plus the common Visa (VCPS/VIS), Mastercard (M/Chip)
and CB (Cartes Bancaires) proprietary tags. Formats follow Book 3, 4.3: `n`, `cn`, `an`,
`ans`, `b`; a `var.` length is given as a (min, max) range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Format = Literal["n", "cn", "an", "ans", "b"]
Source = Literal["card", "terminal", "issuer", "card/terminal"]


@dataclass(frozen=True, slots=True)
class TagInfo:
    tag: int
    name: str
    source: Source
    fmt: Format
    min_len: int
    max_len: int
    template: tuple[int, ...] = ()
    sensitive: bool = False  # PAN, track 2, PIN data: never logged in clear (principle 11)


def _t(tag: int, name: str, source: Source, fmt: Format, length: int | tuple[int, int],
       template: tuple[int, ...] = (), sensitive: bool = False) -> TagInfo:
    lo, hi = (length, length) if isinstance(length, int) else length
    return TagInfo(tag, name, source, fmt, lo, hi, template, sensitive)


_ENTRIES: tuple[TagInfo, ...] = (
    _t(0x4F, "Application Identifier (AID) - card", "card", "b", (5, 16), (0x61,)),
    _t(0x50, "Application Label", "card", "ans", (1, 16), (0x61, 0xA5)),
    _t(0x57, "Track 2 Equivalent Data", "card", "b", (0, 19), (0x70, 0x77), sensitive=True),
    _t(0x5A, "Application Primary Account Number (PAN)", "card", "cn", (0, 10), (0x70, 0x77),
       sensitive=True),
    _t(0x5F24, "Application Expiration Date", "card", "n", 3, (0x70, 0x77)),
    _t(0x5F2A, "Transaction Currency Code", "terminal", "n", 2),
    _t(0x5F2D, "Language Preference", "card", "an", (2, 8), (0xA5,)),
    _t(0x82, "Application Interchange Profile", "card", "b", 2, (0x77, 0x80)),
    _t(0x8C, "Card Risk Management Data Object List 1 (CDOL1)", "card", "b", (0, 252), (0x70, 0x77)),
    _t(0x94, "Application File Locator (AFL)", "card", "b", (0, 252), (0x77, 0x80)),
    _t(0x95, "Terminal Verification Results", "terminal", "b", 5),
    _t(0x9A, "Transaction Date", "terminal", "n", 3),
    _t(0x9C, "Transaction Type", "terminal", "n", 1),
    _t(0x9F02, "Amount, Authorised (Numeric)", "terminal", "n", 6),
    _t(0x9F03, "Amount, Other (Numeric)", "terminal", "n", 6),
    _t(0x9F1A, "Terminal Country Code", "terminal", "n", 2),
    _t(0x9F26, "Application Cryptogram", "card", "b", 8, (0x77, 0x80)),
    _t(0x9F36, "Application Transaction Counter (ATC)", "card", "b", 2, (0x77, 0x80)),
    _t(0x9F37, "Unpredictable Number", "terminal", "b", 4),
)

TAGS: dict[int, TagInfo] = {info.tag: info for info in _ENTRIES}


def info(tag: int) -> TagInfo | None:
    return TAGS.get(tag)


def format_of(tag: int) -> Format:
    """Format used for DOL padding and truncation (Book 3, 5.4); unknown tags count as `b`."""
    entry = TAGS.get(tag)
    return entry.fmt if entry else "b"


def name_of(tag: int) -> str:
    entry = TAGS.get(tag)
    return entry.name if entry else f"unknown tag {tag:X}"


def is_sensitive(tag: int) -> bool:
    entry = TAGS.get(tag)
    return bool(entry and entry.sensitive)
