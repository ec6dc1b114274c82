"""BER-TLV decoding and encoding, EMV 4.4 Book 3 Annex B.

Why not `pyemv.tlv`: it returns a dict, so a repeated tag silently overwrites the first one
(EMV 4.4 Book 3, 10.2 needs duplicates detected, and issuer scripts repeat 86 in order), and it
rejects the '00'/'FF' padding that Annex B1 and ISO 7816-4 5.2.2.1 allow between objects.

Tags are ints (`0x9F36`), values are `bytes`. A decoded object keeps its position in the input
so errors and logs can point at it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from emv.errors import TlvError

# Annex B1: '00' and 'FF' never start a tag; they may pad before, between or after objects.
_PADDING = (0x00, 0xFF)
# Annex B1: tag fields of more than three bytes are not used by EMV.
MAX_TAG_BYTES = 3
# Annex B2: the length field is at most '83' followed by three bytes.
MAX_LENGTH_BYTES = 3
# A guard against hostile nesting; EMV templates nest three levels at most (77 > 70 > 61...).
MAX_DEPTH = 16


def tag_is_constructed(tag: int) -> bool:
    """Bit 6 of the first tag byte: the value holds further TLV objects (Annex B1)."""
    first = tag_bytes(tag)[0]
    return bool(first & 0x20)


def tag_bytes(tag: int) -> bytes:
    """The tag as it is written on the wire."""
    if tag < 0:
        raise ValueError(f"negative tag {tag}")
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def tag_hex(tag: int) -> str:
    return tag_bytes(tag).hex().upper()


@dataclass(frozen=True, slots=True)
class Tlv:
    """One data object. `children` is set for constructed tags, `None` for primitive ones."""

    tag: int
    value: bytes
    children: tuple[Tlv, ...] | None = None
    offset: int = field(default=0, compare=False)

    @property
    def constructed(self) -> bool:
        return self.children is not None

    def encode(self) -> bytes:
        return encode(self.tag, self.value)

    def find(self, tag: int) -> Tlv | None:
        return find(self.children or (), tag)

    def __repr__(self) -> str:
        kind = f"{len(self.children)} children" if self.children is not None else f"{len(self.value)} bytes"
        # Values are not shown: they may be card data (principle 11, sensitive data typed).
        return f"Tlv({tag_hex(self.tag)}, {kind})"


def read_tag(data: bytes, offset: int, end: int | None = None) -> tuple[int, int]:
    """Read a tag field at `offset` (not past `end`); return (tag, offset after it). Annex B1."""
    end = len(data) if end is None else end
    if offset >= end:
        raise TlvError("tag expected, input ended", offset=offset)
    first = data[offset]
    tag = first
    pos = offset + 1
    if first & 0x1F == 0x1F:
        while True:
            if pos >= end:
                raise TlvError("multi-byte tag truncated", offset=offset, tag=tag)
            if pos - offset >= MAX_TAG_BYTES:
                raise TlvError("tag longer than three bytes", offset=offset, tag=tag)
            b = data[pos]
            tag = (tag << 8) | b
            pos += 1
            if not b & 0x80:
                break
    return tag, pos


def read_length(data: bytes, offset: int, tag: int | None = None,
                end: int | None = None) -> tuple[int, int]:
    """Read a length field at `offset` (not past `end`); return (length, offset after). Annex B2."""
    end = len(data) if end is None else end
    if offset >= end:
        raise TlvError("length expected, input ended", offset=offset, tag=tag)
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    if count == 0:
        raise TlvError("indefinite length '80' is not allowed", offset=offset, tag=tag)
    if count > MAX_LENGTH_BYTES:
        raise TlvError(f"length field '{first:02X}' is longer than '83'", offset=offset, tag=tag)
    stop = offset + 1 + count
    if stop > end:
        raise TlvError("length field truncated", offset=offset, tag=tag)
    return int.from_bytes(data[offset + 1:stop], "big"), stop


def encode_length(length: int) -> bytes:
    """Shortest length field for `length` (Annex B2: '81' from 128, '82' from 256...)."""
    if length < 0:
        raise ValueError("negative length")
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(body) > MAX_LENGTH_BYTES:
        raise ValueError(f"length {length} does not fit a BER-TLV length field")
    return bytes([0x80 | len(body)]) + body


def encode(tag: int, value: bytes | Sequence[Tlv]) -> bytes:
    """Encode one object; a sequence of `Tlv` becomes the value of a constructed tag."""
    body = value if isinstance(value, bytes | bytearray) else encode_all(value)
    return tag_bytes(tag) + encode_length(len(body)) + bytes(body)


def encode_all(items: Iterable[Tlv]) -> bytes:
    return b"".join(item.encode() for item in items)


def build(tag: int, value: bytes | Sequence[Tlv]) -> Tlv:
    """Make a `Tlv` to encode later; children given as a sequence make it constructed."""
    if isinstance(value, bytes | bytearray):
        if tag_is_constructed(tag):
            return Tlv(tag, bytes(value), decode(bytes(value)))
        return Tlv(tag, bytes(value))
    children = tuple(value)
    return Tlv(tag, encode_all(children), children)


def decode(data: bytes, *, base: int = 0) -> list[Tlv]:
    """Decode a run of TLV objects, recursing into constructed ones.

    Raises `TlvError` on any malformed input; `partial` holds the objects completed before it.
    `base` is added to every offset (useful when `data` is a slice of a larger buffer).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"TLV data must be bytes, not {type(data).__name__}")
    return _decode(bytes(data), 0, len(data), base, 0)


def _decode(data: bytes, start: int, end: int, base: int, depth: int) -> list[Tlv]:
    if depth > MAX_DEPTH:
        raise TlvError("templates nested too deep", offset=base + start)
    items: list[Tlv] = []
    pos = start
    while pos < end:
        if data[pos] in _PADDING:
            pos += 1
            continue
        obj_start = pos
        try:
            tag, pos = read_tag(data, pos, end)
            length, pos = read_length(data, pos, tag, end)
        except TlvError as exc:
            raise TlvError(exc.reason, offset=base + exc.offset, tag=exc.tag, partial=items) from None
        if pos + length > end:
            raise TlvError(f"value of {length} bytes overruns its container by {pos + length - end}",
                           offset=base + obj_start, tag=tag, partial=items)
        value = data[pos:pos + length]
        children: tuple[Tlv, ...] | None = None
        if tag_is_constructed(tag):
            try:
                children = tuple(_decode(data, pos, pos + length, base, depth + 1))
            except TlvError as exc:
                raise TlvError(exc.reason, offset=exc.offset, tag=exc.tag, partial=items) from None
        items.append(Tlv(tag, value, children, base + obj_start))
        pos += length
    return items


def walk(items: Iterable[Tlv]) -> Iterator[Tlv]:
    """Every object, depth first, in the order they appear."""
    for item in items:
        yield item
        if item.children is not None:
            yield from walk(item.children)


def find(items: Iterable[Tlv], tag: int) -> Tlv | None:
    """First object with `tag` at any depth, or None."""
    return next((item for item in walk(items) if item.tag == tag), None)


def find_all(items: Iterable[Tlv], tag: int) -> list[Tlv]:
    return [item for item in walk(items) if item.tag == tag]


def primitives(items: Iterable[Tlv]) -> Iterator[tuple[int, bytes]]:
    """(tag, value) of every primitive object at any depth, in order, repeats included."""
    for item in walk(items):
        if item.children is None:
            yield item.tag, item.value
