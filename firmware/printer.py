"""Receipts on an ESC/POS serial thermal printer (58 or 80 mm), through pyserial's raw port
(`modem.serial_port`) on the event loop: no thread, nothing busy-waits.

One receipt is one job: open the port, ask the paper sensor (optional), send the whole job, close.
The job is: initialise, select the code page, the optional bold centred title, the lines encoded
to the code page (characters it lacks become "?"), the optional QR code (model 2), feed and a
partial cut. Command names and parameters are those of Epson's ESC/POS Command Reference.

No card number is ever printed: a line, title or QR text holding 13 or more digits in a row
(alone or in groups split by single spaces or hyphens) is refused whole, before anything is sent
(PCI DSS 3.4: only a masked PAN leaves the terminal). Errors never quote the refused text.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from modem.serial_port import SerialPortError, SerialStream, open_serial

if TYPE_CHECKING:
    from firmware.config import PrinterConfig

log = logging.getLogger(__name__)

ESC, GS, DLE, LF = b"\x1b", b"\x1d", b"\x10", b"\n"
INITIALIZE = ESC + b"@"  # ESC @
BOLD_ON, BOLD_OFF = ESC + b"E\x01", ESC + b"E\x00"  # ESC E n
ALIGN_LEFT, ALIGN_CENTER = ESC + b"a\x00", ESC + b"a\x01"  # ESC a n
FEED_ONE = ESC + b"d\x01"  # ESC d n: print the buffer, feed n lines
PAPER_STATUS_REQUEST = DLE + b"\x04\x04"  # DLE EOT 4: roll paper sensor status
# DLE EOT 4 answer: bits 1 and 4 always set, bits 0 and 7 always clear; bits 5-6 set: paper end
STATUS_FIXED_MASK, STATUS_FIXED_VALUE = 0x93, 0x12
STATUS_PAPER_END = 0x60
STATUS_PAPER_NEAR_END = 0x0C
FEED_BEFORE_CUT = 4  # lines: the cutter sits a few lines above the print head
PARTIAL_CUT_AFTER_FEED = GS + b"V" + bytes([66, FEED_BEFORE_CUT])  # GS V 66 n: feed n, partial cut

# ESC t n: the character code tables of the ESC/POS reference, by Python codec name
CODEPAGES: dict[str, int] = {"cp437": 0, "cp850": 2, "cp1252": 16, "cp858": 19}
WIDTHS = (32, 42, 48)  # characters per line: 58 mm font A, 80 mm font B... 80 mm font A
BAUDRATES = (9600, 19200, 38400, 57600, 115200)
DEFAULT_BAUDRATE = 19200
DEFAULT_CODEPAGE = "cp858"  # PC858: PC850 with the euro sign
DEFAULT_TIMEOUT = 10.0  # seconds for the paper status answer and for the whole job to be written

# GS ( k, cn = 49: QR Code (ESC/POS reference, GS ( k <Function 165/167/169/180/181>)
QR_MODEL_2 = 50  # Function 165, n1
QR_ERROR_CORRECTION_M = 49  # Function 169: 48 L, 49 M, 50 Q, 51 H
QR_MAX_BYTES = 2331  # ISO/IEC 18004:2015, Table 7: version 40-M in byte mode

_CARD_NUMBER = re.compile(r"\d(?:[ -]?\d){12,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PrinterError(Exception):
    """The receipt was not printed: no printer, no answer, no paper, or a refused receipt."""


class PrinterUnavailable(PrinterError):
    """The printer's port cannot be opened, or failed while in use."""


class PrinterTimeout(PrinterError):
    """The printer did not answer, or did not take the job, in time."""


class PaperOut(PrinterError):
    """The roll paper sensor reports the end of the paper."""


class RefusedReceipt(PrinterError):
    """The receipt cannot be printed as given (a card number in it, a QR code too large)."""


def _luhn(digits: str) -> bool:
    """ISO/IEC 7812-1, Annex B: the check digit every PAN ends with."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def looks_like_card_number(text: str) -> bool:
    """13 to 19 digits in a row, alone or grouped by single spaces or hyphens, whose Luhn check
    digit holds (ISO/IEC 7812-1: a PAN), or a longer run (it may hold one). An AID's digits
    (A0000000031010) or a reference number fail the check nine times in ten, so the receipt's
    other numbers print."""
    for match in _CARD_NUMBER.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if len(digits) > 19 or _luhn(digits):
            return True
    return False


def _qr_function(fn: int, parameters: bytes) -> bytes:
    """GS ( k pL pH cn fn parameters, with pL + pH * 256 = the bytes after pH."""
    size = 2 + len(parameters)
    return GS + b"(k" + size.to_bytes(2, "little") + bytes([49, fn]) + parameters


def qr_commands(data: bytes, module_size: int) -> bytes:
    """Model 2, module size, error correction M, store the data, print it."""
    return (_qr_function(65, bytes([QR_MODEL_2, 0]))  # Function 165: select the model
            + _qr_function(67, bytes([module_size]))  # Function 167: module size in dots
            + _qr_function(69, bytes([QR_ERROR_CORRECTION_M]))  # Function 169
            + _qr_function(80, b"0" + data)  # Function 180: store, m = 48
            + _qr_function(81, b"0"))  # Function 181: print, m = 48


class EscPosPrinter:
    """A receipt printer on the serial device `port`."""

    def __init__(self, port: str, baudrate: int = DEFAULT_BAUDRATE, width: int = 32,
                 codepage: str = DEFAULT_CODEPAGE, *, check_paper: bool = True,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        if width not in WIDTHS:
            raise PrinterError(f"a printer line is {', '.join(map(str, WIDTHS))} characters, not {width}")
        if codepage not in CODEPAGES:
            raise PrinterError(f"code page {codepage!r} is none of {', '.join(CODEPAGES)}")
        if not timeout > 0:
            raise PrinterError("the timeout must be more than 0 seconds")
        self.port = port
        self.baudrate = baudrate
        self.width = width
        self.codepage = codepage
        self.check_paper = check_paper
        self.timeout = timeout

    @classmethod
    def from_config(cls, config: PrinterConfig) -> EscPosPrinter:
        """The printer of the configuration's [printer] section."""
        return cls(config.port, config.baudrate, config.width, config.codepage,
                   check_paper=config.check_paper)

    def encode(self, text: str) -> bytes:
        """`text` in the printer's code page: a character it lacks, or a control character,
        becomes "?"; never an exception."""
        data = _CONTROL.sub("?", text).encode(self.codepage, errors="replace")
        # a code page may map some character to a control byte: never send one inside text
        return bytes(b if b >= 0x20 and b != 0x7F else 0x3F for b in data)

    def job(self, lines: Sequence[str], qr: str | None = None, title: str | None = None) -> bytes:
        """The bytes of one receipt; `RefusedReceipt` before anything is built when it cannot be."""
        texts = [*lines, *([title] if title is not None else []), *([qr] if qr is not None else [])]
        for text in texts:
            if not isinstance(text, str):
                raise RefusedReceipt(f"a receipt line is text, not {type(text).__name__}")
        for n, text in enumerate(texts, start=1):
            if looks_like_card_number(text):
                raise RefusedReceipt(f"text {n} of the receipt looks like a card number (PCI DSS 3.4)")
        qr_data = qr.encode("utf-8", errors="replace") if qr is not None else b""
        if qr is not None and not 1 <= len(qr_data) <= QR_MAX_BYTES:
            raise RefusedReceipt(f"a QR code holds 1 to {QR_MAX_BYTES} bytes, not {len(qr_data)}")
        out = bytearray(INITIALIZE)
        out += ESC + b"t" + bytes([CODEPAGES[self.codepage]])  # ESC t n
        if title is not None:
            out += ALIGN_CENTER + BOLD_ON
            for part in self._fit(title):
                out += self.encode(part) + LF
            out += BOLD_OFF + ALIGN_LEFT
        for line in lines:
            for part in self._fit(line):
                out += self.encode(part) + LF
        if qr is not None:
            out += ALIGN_CENTER + qr_commands(qr_data, 4 if self.width == 32 else 6) + FEED_ONE + ALIGN_LEFT
        out += PARTIAL_CUT_AFTER_FEED
        return bytes(out)

    def _fit(self, line: str) -> list[str]:
        """The line cut into pieces of the paper's width, so the printer never wraps on its own."""
        line = line.rstrip()
        return [line[i:i + self.width] for i in range(0, len(line), self.width)] or [""]

    async def print_receipt(self, lines: Sequence[str], qr: str | None = None, *,
                            title: str | None = None) -> None:
        """Print `lines` (each at most `width` characters; longer ones are split), then the QR
        code of `qr` (the e-receipt address), and cut. `PrinterError` if it was not printed."""
        data = self.job(lines, qr, title)
        try:
            stream = await open_serial(self.port, self.baudrate)
        except SerialPortError as exc:
            raise PrinterUnavailable(f"no printer on {self.port}: {exc}") from None
        try:
            if self.check_paper:
                await self._check_paper(stream)
            try:
                async with asyncio.timeout(self.timeout):
                    await stream.write(data)
            except TimeoutError:
                raise PrinterTimeout(f"the printer on {self.port} took no job in {self.timeout:g} s "
                                     "(flow control held, or no printer)") from None
        except SerialPortError as exc:
            raise PrinterUnavailable(f"the printer on {self.port} failed: {exc}") from None
        finally:
            await stream.close()
        log.info("receipt printed on %s: %d lines%s", self.port, len(lines), " and a QR code" if qr else "")

    async def _check_paper(self, stream: SerialStream) -> None:
        await stream.write(PAPER_STATUS_REQUEST)
        try:
            async with asyncio.timeout(self.timeout):
                answer = await stream.read(1)
        except TimeoutError:
            raise PrinterTimeout(f"the printer on {self.port} did not answer DLE EOT 4 in "
                                 f"{self.timeout:g} s") from None
        if not answer:
            raise PrinterUnavailable(f"the printer on {self.port} went away")
        status = answer[0]
        if status & STATUS_FIXED_MASK != STATUS_FIXED_VALUE:
            raise PrinterError(f"the printer on {self.port} answered {status:#04x}, not a paper status")
        if status & STATUS_PAPER_END:
            raise PaperOut(f"the printer on {self.port} is out of paper")
        if status & STATUS_PAPER_NEAR_END:
            log.warning("the printer on %s is nearly out of paper", self.port)

    def __repr__(self) -> str:
        return f"EscPosPrinter({self.port!r}, {self.baudrate}, width {self.width}, {self.codepage})"
