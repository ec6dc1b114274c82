"""A simulated ESC/POS thermal printer on a pty, for tests and the demo.

`PrinterSimulator` opens a pseudo-terminal (raw, like a serial line) on the running event loop
and decodes what it receives, as a printer of Epson's ESC/POS Command Reference would act on it:
text lines in the selected character code table (ESC t), bold (ESC E), alignment (ESC a), feeds
(ESC d), QR codes (GS ( k, cn 49), cuts (GS V); it answers the roll paper sensor request
(DLE EOT 4) with the paper it has. What it printed is `printed`: `Line`, `QrCode`, `Cut` items
in order. A byte sequence it cannot decode is kept in `errors`, never silently skipped.

It decodes with its own code page table and parser, not with `firmware.printer`'s: a test that
compares the two compares two readings of the reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from dataclasses import dataclass

# ESC t n: character code tables, by n, as Python codecs
CODE_TABLES = {0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865", 16: "cp1252", 17: "cp866",
               18: "cp852", 19: "cp858"}
PAPER_OK, PAPER_NEAR_END, PAPER_END = 0x12, 0x1E, 0x72  # DLE EOT 4 answers


@dataclass(frozen=True)
class Line:
    text: str
    bold: bool = False
    align: int = 0  # ESC a: 0 left, 1 centre, 2 right


@dataclass(frozen=True)
class QrCode:
    data: bytes
    model: int | None  # Function 165 n1: 49 model 1, 50 model 2, 51 micro QR
    module_size: int | None
    error_correction: int | None


@dataclass(frozen=True)
class Cut:
    partial: bool
    feed: int  # lines fed before cutting (GS V 65/66 n)


Printed = Line | QrCode | Cut


class _Incomplete(Exception):
    """The buffer ends inside a command: wait for more bytes."""


class EscPosDecoder:
    """What an ESC/POS printer does with a byte stream, fed in pieces of any size."""

    def __init__(self) -> None:
        self.printed: list[Printed] = []
        self.errors: list[bytes] = []
        self.feeds = 0
        self.status_requests: list[int] = []  # n of each DLE EOT n, in order
        self._buffer = bytearray()
        self._reset()

    def _reset(self) -> None:
        self.code_table = 0
        self.bold = False
        self.align = 0
        self._line = bytearray()
        self._qr_model: int | None = None
        self._qr_size: int | None = None
        self._qr_ecc: int | None = None
        self._qr_data: bytes | None = None

    @property
    def lines(self) -> list[str]:
        return [item.text for item in self.printed if isinstance(item, Line)]

    def feed(self, data: bytes) -> list[int]:
        """Decode `data`; the DLE EOT requests it held (their n), which a printer answers at once."""
        self._buffer += data
        before = len(self.status_requests)
        while self._buffer:
            try:
                used = self._command(bytes(self._buffer))
            except _Incomplete:
                break
            del self._buffer[:used]
        return self.status_requests[before:]

    def _need(self, data: bytes, n: int) -> None:
        if len(data) < n:
            raise _Incomplete

    def _end_line(self) -> None:
        codec = CODE_TABLES.get(self.code_table, "cp437")
        self.printed.append(Line(bytes(self._line).decode(codec, errors="replace"), self.bold, self.align))
        self._line.clear()

    def _command(self, data: bytes) -> int:
        """Act on the command at the start of `data`; the bytes it took."""
        first = data[0]
        if first == 0x0A:  # LF: print the buffer and feed one line
            self._end_line()
            return 1
        if first == 0x0D:  # CR: with auto line feed off, no action
            return 1
        if first >= 0x20 and first != 0x7F:
            self._line.append(first)
            return 1
        if first == 0x1B:
            return self._esc(data)
        if first == 0x1D:
            return self._gs(data)
        if first == 0x10:
            self._need(data, 3)
            if data[1] == 0x04 and 1 <= data[2] <= 4:  # DLE EOT n
                self.status_requests.append(data[2])
                return 3
        self.errors.append(data[:3])
        return 1

    def _esc(self, data: bytes) -> int:
        self._need(data, 2)
        command = data[1:2]
        if command == b"@":  # ESC @: initialise (buffer cleared, modes back to defaults)
            self._reset()
            return 2
        self._need(data, 3)
        n = data[2]
        if command == b"t":
            if n not in CODE_TABLES:
                self.errors.append(data[:3])
            self.code_table = n
        elif command == b"E":
            self.bold = bool(n & 1)
        elif command == b"a":
            self.align = n % 48 if n in (0, 1, 2, 48, 49, 50) else self.align
        elif command == b"d":  # ESC d n: print the buffer, feed n lines
            if self._line:
                self._end_line()
            self.feeds += n
        else:
            self.errors.append(data[:3])
        return 3

    def _gs(self, data: bytes) -> int:
        self._need(data, 2)
        if data[1:2] == b"V":
            self._need(data, 3)
            m = data[2]
            if m in (0, 48, 1, 49):
                self._cut(partial=m in (1, 49), feed=0)
                return 3
            if m in (65, 66):
                self._need(data, 4)
                self._cut(partial=m == 66, feed=data[3])
                return 4
            self.errors.append(data[:3])
            return 3
        if data[1:2] == b"(":
            self._need(data, 5)
            if data[2:3] != b"k":
                self.errors.append(data[:3])
                return 3
            size = data[3] | data[4] << 8
            self._need(data, 5 + size)
            self._qr(data[5:5 + size])
            return 5 + size
        self.errors.append(data[:2])
        return 2

    def _cut(self, *, partial: bool, feed: int) -> None:
        if self._line:
            self._end_line()
        self.printed.append(Cut(partial, feed))

    def _qr(self, body: bytes) -> None:
        if len(body) < 2 or body[0] != 49:
            self.errors.append(b"\x1d(k" + body[:2])
            return
        fn, params = body[1], body[2:]
        if fn == 65 and len(params) == 2:
            self._qr_model = params[0]
        elif fn == 67 and len(params) == 1:
            self._qr_size = params[0]
        elif fn == 69 and len(params) == 1:
            self._qr_ecc = params[0]
        elif fn == 80 and params[:1] == b"0":
            self._qr_data = params[1:]
        elif fn == 81 and params == b"0" and self._qr_data:
            self.printed.append(QrCode(self._qr_data, self._qr_model, self._qr_size, self._qr_ecc))
        else:
            self.errors.append(b"\x1d(k" + body[:2])


class PrinterSimulator:
    """The printer on a pty of the running loop: `async with PrinterSimulator() as printer`, then
    open `printer.path`. `paper` is what DLE EOT 4 reports; `answer_status` False is a printer
    that never answers."""

    def __init__(self, *, paper: int = PAPER_OK, answer_status: bool = True) -> None:
        self.decoder = EscPosDecoder()
        self.paper = paper
        self.answer_status = answer_status
        self.path: str | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._received = asyncio.Event()

    @property
    def printed(self) -> list[Printed]:
        return self.decoder.printed

    @property
    def lines(self) -> list[str]:
        return self.decoder.lines

    @property
    def errors(self) -> list[bytes]:
        return self.decoder.errors

    async def open(self) -> str:
        master, slave = os.openpty()
        tty.setraw(slave)  # a serial line: no echo, no line discipline
        os.set_blocking(master, False)
        self._master, self._slave, self.path = master, slave, os.ttyname(slave)
        asyncio.get_running_loop().add_reader(master, self._on_readable)
        return self.path

    async def close(self) -> None:
        if self._master is None:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)  # type: ignore[arg-type]
        self._master = self._slave = None

    async def __aenter__(self) -> PrinterSimulator:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def wait_for_cut(self, count: int = 1) -> None:
        """Until `count` cuts were received."""
        while sum(isinstance(item, Cut) for item in self.printed) < count:
            self._received.clear()
            await self._received.wait()

    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except OSError:  # nothing to read yet, or EIO: no process holds the terminal side open
            return
        for n in self.decoder.feed(data):
            if self.answer_status and n == 4:
                os.write(self._master, bytes([self.paper]))
        self._received.set()
