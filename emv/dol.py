"""Data Object Lists: PDOL, CDOL1/2, DDOL, TDOL (EMV 4.4 Book 3, 5.4).

A DOL is a run of (tag, length) pairs with no values. The terminal builds the concatenated
values it asks for; the card (and our card simulator) splits them back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from emv import tags
from emv.errors import DolError, TlvError
from emv.tlv import read_tag, tag_bytes, tag_is_constructed


@dataclass(frozen=True, slots=True)
class DolEntry:
    tag: int
    length: int


def parse(dol: bytes) -> list[DolEntry]:
    """Split a DOL into entries. Book 3, 5.4: each length is a single byte."""
    entries: list[DolEntry] = []
    pos = 0
    while pos < len(dol):
        try:
            tag, pos = read_tag(dol, pos)
        except TlvError as exc:
            raise DolError(f"bad tag in DOL: {exc.reason}", offset=exc.offset,
                           partial=entries) from None
        if pos >= len(dol):
            raise DolError(f"DOL entry {tag:X} has no length", offset=pos, partial=entries)
        entries.append(DolEntry(tag, dol[pos]))
        pos += 1
    return entries


def encode(entries: list[DolEntry]) -> bytes:
    return b"".join(tag_bytes(e.tag) + bytes([e.length]) for e in entries)


def fit(value: bytes, length: int, fmt: tags.Format) -> bytes:
    """Pad or truncate one value to a DOL length, per its format (Book 3, 5.4)."""
    if len(value) > length:
        # n: keep the rightmost (least significant) bytes; everything else keeps the leftmost.
        return value[len(value) - length:] if fmt == "n" else value[:length]
    missing = length - len(value)
    if fmt == "n":
        return bytes(missing) + value
    if fmt == "cn":
        return value + b"\xff" * missing
    return value + bytes(missing)


def build(dol: bytes | list[DolEntry], data: Mapping[int, bytes],
          format_of: Callable[[int], tags.Format] = tags.format_of) -> bytes:
    """Concatenate the values a DOL asks for, taken from `data` (Book 3, 5.4).

    Missing data and constructed tags give zeros of the asked length; present data is padded or
    truncated according to its format.
    """
    entries = parse(dol) if isinstance(dol, bytes | bytearray) else dol
    out = bytearray()
    for entry in entries:
        value = data.get(entry.tag)
        if value is None or tag_is_constructed(entry.tag):
            out += bytes(entry.length)
        else:
            out += fit(value, entry.length, format_of(entry.tag))
    return bytes(out)


def split(dol: bytes | list[DolEntry], values: bytes) -> list[tuple[int, bytes]]:
    """The card's side: cut concatenated DOL data back into (tag, value) pairs."""
    entries = parse(dol) if isinstance(dol, bytes | bytearray) else dol
    expected = sum(e.length for e in entries)
    if len(values) != expected:
        raise DolError(f"DOL data is {len(values)} bytes, the DOL asks for {expected}",
                       offset=min(len(values), expected))
    out: list[tuple[int, bytes]] = []
    pos = 0
    for entry in entries:
        out.append((entry.tag, values[pos:pos + entry.length]))
        pos += entry.length
    return out
