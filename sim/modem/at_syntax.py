"""Command lines as the simulated module reads them (ITU-T V.250, 5.2-5.4).

The input scanner (`LineScanner`) finds command lines in the byte stream from the terminal: it
skips everything before the "AT" prefix, ends a line at S3 (carriage return), applies S5
(backspace), ignores other control characters, and recognises "A/" (repeat the last line).
`split_command_line` cuts the body after "AT" into basic commands (E0, I, &F) and extended
commands (+CSQ, +QIOPEN=...), separated by ";", and `parse_arguments` reads the parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Arg = int | str | None
Form = Literal["action", "read", "test", "set"]

CR, LF, BACKSPACE = 0x0D, 0x0A, 0x08
# V.250, 5.4.1: characters allowed in an extended command name after its "+" prefix.
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!%-./:_")
_MAX_DIGITS = 10


class AtSyntaxError(ValueError):
    """A command line that is not well formed (V.250, 5.3-5.4); the module answers ERROR."""


@dataclass(frozen=True)
class BasicCommand:
    """V.250, 5.3.1: a letter (or "&" and a letter) and an optional number."""

    name: str
    value: int | None


@dataclass(frozen=True)
class ExtendedCommand:
    """V.250, 5.3.2-5.3.4: "+NAME", "+NAME?", "+NAME=?" or "+NAME=<args>"."""

    name: str
    form: Form
    args: tuple[Arg, ...] = ()


Command = BasicCommand | ExtendedCommand


def _without_spaces(body: str) -> str:
    """V.250, 5.2.1: spaces are ignored, except inside string constants."""
    out: list[str] = []
    quoted = False
    for char in body:
        if char == '"':
            quoted = not quoted
        if char != " " or quoted:
            out.append(char)
    return "".join(out)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise AtSyntaxError("a string constant has no closing quote")
    parts.append("".join(current))
    return parts


def parse_arguments(text: str) -> tuple[Arg, ...]:
    """V.250, 5.4.2: comma-separated numeric constants (decimal) and string constants (in double
    quotes); an empty one is omitted (None)."""
    values: list[Arg] = []
    for raw in _split_outside_quotes(text, ","):
        if raw == "":
            values.append(None)
        elif raw.startswith('"'):
            if len(raw) < 2 or not raw.endswith('"') or '"' in raw[1:-1]:
                raise AtSyntaxError("a string constant is one quoted string")
            values.append(raw[1:-1])
        elif raw.isascii() and raw.isdigit() and len(raw) <= _MAX_DIGITS:
            values.append(int(raw))
        else:
            raise AtSyntaxError("a parameter is a decimal number or a quoted string")
    return tuple(values)


def _extended(text: str) -> ExtendedCommand:
    end = 1
    while end < len(text) and text[end].upper() in _NAME_CHARS:
        end += 1
    name, rest = text[:end].upper(), text[end:]
    if len(name) < 2:
        raise AtSyntaxError("an extended command has a name after its prefix")
    if rest == "":
        return ExtendedCommand(name, "action")
    if rest == "?":
        return ExtendedCommand(name, "read")
    if rest == "=?":
        return ExtendedCommand(name, "test")
    if rest.startswith("="):
        return ExtendedCommand(name, "set", parse_arguments(rest[1:]))
    raise AtSyntaxError("an extended command name is followed by '?', '=?', '=' or nothing")


def split_command_line(body: str) -> list[Command]:
    """The commands of one line, `body` being what follows "AT" (V.250, 5.2.1)."""
    text = _without_spaces(body)
    commands: list[Command] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == ";":
            position += 1
        elif char == "+":
            segment = _split_outside_quotes(text[position:], ";")[0]
            commands.append(_extended(segment))
            position += len(segment)
        elif char.isascii() and (char.isalpha() or char == "&"):
            start = position
            position += 1
            if char == "&":
                if position >= len(text) or not (text[position].isascii() and text[position].isalpha()):
                    raise AtSyntaxError("'&' is followed by a letter")
                position += 1
            name = text[start:position].upper()
            digits_start = position
            while position < len(text) and text[position].isascii() and text[position].isdigit():
                position += 1
            digits = text[digits_start:position]
            if len(digits) > _MAX_DIGITS:
                raise AtSyntaxError("a basic command's number is too long")
            commands.append(BasicCommand(name, int(digits) if digits else None))
        else:
            raise AtSyntaxError("not a command")
    return commands


@dataclass(frozen=True)
class Line:
    """One command line found in the input: its body after "AT" and the bytes to echo."""

    body: str
    echo: bytes
    overflow: bool = False
    repeat: bool = False


class LineScanner:
    """Finds command lines in the bytes from the terminal, one byte at a time (V.250, 5.2)."""

    def __init__(self, max_line: int = 1024) -> None:
        self.max_line = max_line
        self._state = "idle"  # idle | a (saw "A") | line | overflow
        self._line = bytearray()

    def reset(self) -> None:
        self._state = "idle"
        self._line.clear()

    def push(self, byte: int) -> Line | None:
        """Take one byte; a finished line, or None."""
        if self._state == "idle":
            if byte in (0x41, 0x61):  # "A" or "a"
                self._state = "a"
                self._line = bytearray([byte])
            return None
        if self._state == "a":
            if byte in (0x54, 0x74):  # "T" or "t"
                self._state = "line"
                self._line.append(byte)
            elif byte == 0x2F:  # "A/": repeat the last command line, no S3 needed (V.250, 5.2.4)
                self._state = "idle"
                return Line("", bytes(self._line) + b"/", repeat=True)
            else:
                self._state = "idle"
                return self.push(byte)
            return None
        if byte == CR:
            line = bytes(self._line)
            overflow = self._state == "overflow"
            self.reset()
            return Line(line[2:].decode("latin-1"), line + b"\r", overflow=overflow)
        if self._state == "overflow":
            return None
        if byte == BACKSPACE:
            if len(self._line) > 2:
                self._line.pop()
            return None
        if byte < 0x20 or byte == 0x7F:
            return None  # V.250, 5.2.2: other control characters are ignored
        if len(self._line) >= self.max_line:
            self._state = "overflow"
            return None
        self._line.append(byte)
        return None
