"""The AT command protocol as the modem speaks it: bytes in, events out, no I/O (ARCHITECTURE,
principle 1). `modem.runner` feeds it from the serial port and decides what each event answers.

Framing: ITU-T V.250, 5.2.1 (command line ended by S3 = CR), 5.7.1 (responses framed by S3 S4 =
CR LF, final result codes) and 6.2.4 (E: echo of the command line); 3GPP TS 27.007, 9.2
(+CME ERROR) and TS 27.005, 3.2.5 (+CMS ERROR); the modules' send prompt and length-prefixed
binary reads: Quectel EC2x TCP/IP AT Commands Manual (AT+QISEND, AT+QIRD), SIMCom SIM7600
TCP/IP Application Note (AT+CIPSEND, AT+CIPRXGET).

Rules, decided here because the documents leave them open:
- A line ends at CR, at LF, or at CR LF (one end, not two). Blank lines are skipped. Spaces and
  tabs around a line are dropped. Bytes that are not UTF-8 become U+FFFD; they never raise.
- A line starting with "AT" (any case) is the modem echoing a command line: `Echo`.
- A `>` as the first byte of a line is the send prompt. It is emitted as soon as the `>` arrives,
  without waiting for a line end or for the space: the SIMCom prompt may be a bare `>`, and the
  modem sends nothing more until it has the data. One space right after it is swallowed, even
  when it arrives in a later `feed`. A line of information never starts with `>`.
- A binary block starts right after the line end of its header (after the LF of a CR LF, also
  when the LF comes in a later `feed`) and is exactly as long as the header says: whatever it
  holds (CR, LF, "OK", ">") is data. A header claiming more than `max_data` bytes raises
  `AtParseError` and the parser resynchronises at the next line end: a bogus length cannot
  make it deaf.
- A line longer than `max_line` raises `AtParseError` as soon as it is known to be too long; the
  parser drops bytes up to the next line end and goes on from there.
- When `feed` raises, the events decoded before the fault are on the error (`events`), and the
  bytes after it stay buffered: `feed(b"")` goes on with them. Splitting the input differently
  never changes the events nor where the errors fall.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

CR, LF, SPACE, PROMPT = 0x0D, 0x0A, 0x20, 0x3E
_LINE_END = re.compile(rb"[\r\n]")

RESULTS = frozenset({"OK", "ERROR", "CME", "CMS", "NO CARRIER", "SEND OK", "SEND FAIL", "CONNECT"})
# V.250, 5.7.1: final result codes with nothing after them.
_PLAIN_FINALS = frozenset({"OK", "ERROR", "NO CARRIER", "SEND OK", "SEND FAIL"})
# TS 27.007, 9.2 and TS 27.005, 3.2.5: numeric (AT+CMEE=1) or verbose (AT+CMEE=2) error.
_EQUIPMENT_ERROR = re.compile(r"\+(CME|CMS) ERROR:\s*(.*)")
# V.250, 5.7.1: CONNECT, or CONNECT <text> where the text starts with the rate.
_CONNECT = re.compile(r"CONNECT(?: (\d.*))?")

# Information lines followed by a binary block, and the regex group giving its length.
DEFAULT_DATA_HEADERS: tuple[tuple[re.Pattern[str], int], ...] = (
    # Quectel TCP/IP manual, AT+QIRD: +QIRD: <read_actual_length>[,"<remoteIP>",<remote_port>]
    # (not the query form +QIRD: <total>,<read>,<unread>, which carries no data).
    (re.compile(r'\+QIRD: ?(\d+)(?:,"[^"]*",\d+)?'), 1),
    # SIM7600 TCP/IP Application Note, AT+CIPRXGET=2: +CIPRXGET: 2,<link_num>,<read_len>,<rest_len>
    # (mode 3 gives hex on a line of its own, mode 4 only the unread length).
    (re.compile(r"\+CIPRXGET: ?2,\d+,(\d+),\d+"), 1),
)


class AtParseError(Exception):
    """The modem sent something the parser cannot frame: a line over `max_line` characters or a
    binary block over `max_data` bytes. `events` holds what was decoded before it in the same
    `feed`; the parser has already resynchronised and `feed(b"")` continues with the rest."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.events: list[AtEvent] = []
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Echo:
    """A command line echoed back by the modem (V.250, 6.2.4: E1)."""

    text: str


@dataclass(frozen=True, slots=True)
class Line:
    """An information line: the answer of a command or an unsolicited result code."""

    text: str


@dataclass(frozen=True, slots=True)
class Final:
    """A final result code; `result` is one of `RESULTS`. `code` is the number of a numeric
    +CME/+CMS ERROR, `text` the verbose error or the text after CONNECT."""

    result: str
    code: int | None = None
    text: str | None = None

    @property
    def line(self) -> str:
        """The result code as the modem wrote it."""
        if self.result in ("CME", "CMS"):
            detail = str(self.code) if self.code is not None else (self.text or "")
            return f"+{self.result} ERROR: {detail}"
        return f"{self.result} {self.text}" if self.text else self.result


@dataclass(frozen=True, slots=True)
class Prompt:
    """The `> ` prompt: the modem waits for the data of AT+QISEND / AT+CIPSEND."""


@dataclass(frozen=True, slots=True)
class Data:
    """A length-prefixed binary block. Its repr gives the length only: the bytes may be socket
    payload."""

    payload: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Data(<{len(self.payload)} bytes>)"


AtEvent = Echo | Line | Final | Prompt | Data


def classify(text: str) -> Echo | Line | Final:
    """The event of one complete, stripped, non-blank line."""
    if text[:2].upper() == "AT":
        return Echo(text)
    if text in _PLAIN_FINALS:
        return Final(text)
    if error := _EQUIPMENT_ERROR.fullmatch(text):
        kind, detail = error.group(1), error.group(2).strip()
        if detail.isascii() and detail.isdigit():
            return Final(kind, code=int(detail))
        return Final(kind, text=detail or None)
    if connect := _CONNECT.fullmatch(text):
        return Final("CONNECT", text=connect.group(1))
    return Line(text)


class AtParser:
    """Incremental parser of what a modem sends. Holds at most one partial line (`max_line`
    bytes) and one binary block (`max_data` bytes)."""

    def __init__(self, max_line: int = 1024, max_data: int = 4096, *,
                 data_headers: Sequence[tuple[re.Pattern[str], int]] = DEFAULT_DATA_HEADERS) -> None:
        if max_line < 1 or max_data < 0:
            raise AtParseError(f"bad limits: max_line {max_line}, max_data {max_data}")
        self.max_line = max_line
        self.max_data = max_data
        self._headers = tuple(data_headers)
        self._buf = bytearray()
        self._scanned = 0  # bytes of the partial line already searched for a line end
        self._skip_lf = False  # the last line ended with CR: an LF right after belongs to it
        self._skip_space = False  # a prompt was just emitted: a space right after belongs to it
        self._discarding = False  # resynchronising after an overlong line
        self._data_left: int | None = None  # bytes still owed to the binary block being read
        self._data = bytearray()
        self._data_after_line: int | None = None  # expect_data() armed for the partial line

    @property
    def line_pending(self) -> bool:
        """Whether bytes of an unfinished line are buffered (the next line or final result
        event completes it)."""
        return bool(self._buf) and not self._discarding and self._data_left is None

    def expect_data(self, length: int) -> None:
        """The next `length` bytes after the end of the current line are binary.

        With a partial line buffered, the block starts after that line's end. With none (the
        line just ended in a `feed`), it starts with the next byte not yet fed, after the LF of
        a CR LF. Only right when no bytes past the header's line end have been fed yet; headers
        known in advance belong in `data_headers` instead.
        """
        if length < 0 or length > self.max_data:
            raise AtParseError(f"a data block of {length} bytes is outside 0..{self.max_data}")
        if self._data_left is not None or self._data_after_line is not None:
            raise AtParseError("a data block is already expected")
        if self._buf and not self._discarding:
            self._data_after_line = length
        else:
            self._start_data(length)

    def feed(self, data: bytes) -> list[AtEvent]:
        """Take `data` and return the events it completes, in order."""
        self._buf += data
        events: list[AtEvent] = []
        try:
            self._parse(events)
        except AtParseError as exc:
            exc.events = events
            raise
        return events

    def _start_data(self, length: int) -> None:
        self._data_left = length
        self._data.clear()

    def _parse(self, events: list[AtEvent]) -> None:
        buf = self._buf
        while True:
            if buf and self._skip_lf:
                self._skip_lf = False
                if buf[0] == LF:
                    del buf[0]
                continue
            if buf and self._skip_space:
                self._skip_space = False
                if buf[0] == SPACE:
                    del buf[0]
                continue
            if self._data_left is not None:
                if not self._read_data(events):
                    return
                continue
            if not buf:
                return
            if self._discarding:
                end = _LINE_END.search(buf)
                if end is None:
                    buf.clear()
                    return
                self._end_line(end.start())
                self._discarding = False
                continue
            if buf[0] == PROMPT:
                # Quectel AT+QISEND / SIMCom AT+CIPSEND: "> " without a line end.
                del buf[0]
                self._skip_space = True
                events.append(Prompt())
                continue
            end = _LINE_END.search(buf, self._scanned)
            if end is None:
                if len(buf) > self.max_line:
                    buf.clear()
                    self._scanned = 0
                    self._discarding = True
                    self._data_after_line = None
                    raise AtParseError(f"a line longer than {self.max_line} bytes")
                self._scanned = len(buf)
                return
            length = end.start()
            raw = bytes(buf[:length])
            self._end_line(length)
            if length > self.max_line:
                self._data_after_line = None
                raise AtParseError(f"a line longer than {self.max_line} bytes")
            self._take_line(raw, events)

    def _end_line(self, length: int) -> None:
        """Drop the line of `length` bytes and its line end from the buffer."""
        self._skip_lf = self._buf[length] == CR
        del self._buf[:length + 1]
        self._scanned = 0

    def _take_line(self, raw: bytes, events: list[AtEvent]) -> None:
        armed, self._data_after_line = self._data_after_line, None
        text = raw.decode("utf-8", errors="replace").strip(" \t")
        if text:
            event = classify(text)
            events.append(event)
            if armed is None and isinstance(event, Line):
                armed = self._header_length(text)
        if armed is not None:
            if armed > self.max_data:
                self._discarding = True
                raise AtParseError(f"a data block of {armed} bytes, over {self.max_data}")
            self._start_data(armed)

    def _header_length(self, text: str) -> int | None:
        for pattern, group in self._headers:
            if header := pattern.fullmatch(text):
                return int(header.group(group))
        return None

    def _read_data(self, events: list[AtEvent]) -> bool:
        """Move buffered bytes into the binary block; True once it is complete."""
        left = self._data_left or 0
        if left and not self._buf:
            return False
        take = min(left, len(self._buf))
        self._data += self._buf[:take]
        del self._buf[:take]
        self._data_left = left - take
        if self._data_left:
            return False
        events.append(Data(bytes(self._data)))
        self._data_left = None
        self._data.clear()
        return True
