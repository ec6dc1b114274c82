"""AT commands over a modem's byte stream: one at a time, each answer told apart from the
unsolicited result codes (URCs) that arrive between and inside answers.

A background task reads the port and feeds `modem.at_parser`; `command` writes `text + CR`
(ITU-T V.250, 5.2.1) and collects the answer up to its final result code (V.250, 5.7.1).

Which line answers the command: with `expect`, the lines starting with it; without, every line
that does not start with a URC prefix (`DEFAULT_URC_PREFIXES`, the prefixes subscribed to and
those awaited by `wait_for_urc`). Every other line is a URC: it goes to the subscribers of its
prefix (callbacks run on the reader task: they must not block; what they raise is logged), to
the oldest `wait_for_urc` of its prefix, else to a short backlog that lasts until the next
command is written, so that the URC announcing the result of a command (`+QIOPEN:`,
`+CIPOPEN:`, `+CIPSEND:`) is not lost when it arrives before the driver starts waiting for it.

A line the modem had begun to send before the command was written (its start already read) is
not part of the answer: a URC if it is a line, dropped if it is a final result.

A command that times out may still be answered later; that late answer never goes to the next
command. With echo off, the next command waits up to `late_answer_grace` seconds for the late
final result and drops it. With echo on, a command takes nothing but URCs before its own echo.
The echo setting follows the ATE0 / ATE1 commands sent through the runner.

Logs (DEBUG) name commands with their secrets masked (`redact`) and give data blocks by length.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from modem.at_parser import RESULTS, AtEvent, AtParseError, AtParser, Data, Echo, Final, Line, Prompt

log = logging.getLogger(__name__)

DEFAULT_FINALS: frozenset[str] = RESULTS
# The final result codes of a command that did what it was asked.
SUCCESS_FINALS = frozenset({"OK", "SEND OK", "CONNECT"})

DEFAULT_URC_PREFIXES: tuple[str, ...] = (
    # 3GPP TS 27.007, 7.2, 10.1.20, 10.1.22: registration changes after AT+CREG=n, +CGREG, +CEREG.
    "+CREG:", "+CGREG:", "+CEREG:",
    # After a (re)boot: TS 27.007, 8.3 (+CPIN) and 8.2 (+CFUN); Quectel RDY, +QUSIM, +QIND;
    # SIMCom SMS DONE, PB DONE.
    "RDY", "+CPIN:", "+CFUN:", "+QUSIM:", "+QIND:", "SMS DONE", "PB DONE", "POWERED DOWN",
    # Quectel TCP/IP manual: socket events, the result of AT+QIOPEN.
    "+QIURC:", "+QIOPEN:",
    # SIM7600 TCP/IP Application Note: data waiting (manual read), link closed, network events,
    # the results of AT+NETOPEN, AT+NETCLOSE, AT+CIPOPEN, AT+CIPCLOSE and AT+CIPSEND.
    "+CIPRXGET: 1,", "+IPCLOSE:", "+CIPEVENT:", "+NETOPEN:", "+NETCLOSE:", "+CIPOPEN:", "+CIPCLOSE:",
    "+CIPSEND:",
)

# +CME ERROR codes meaning "busy, try again": TS 27.007, 9.2.1 (14 SIM busy); Quectel TCP/IP
# manual, error codes (551 operation blocked, 564 DNS busy, 568 operation busy).
BUSY_CME_CODES = frozenset({14, 551, 564, 568})
BUSY_CME_TEXTS = frozenset({"sim busy"})

# Commands whose parameters hold secrets (SIM PIN and PUK, passwords): TS 27.007, 8.3, 7.4, 7.5,
# 10.1.31; Quectel AT+QICSGP; SIMCom AT+CSOCKAUTH.
SECRET_COMMANDS = ("+CPIN", "+CPIN2", "+CPWD", "+CLCK", "+CGAUTH", "+QICSGP", "+CSOCKAUTH")
_SECRET = re.compile(r"(AT(?:" + "|".join(re.escape(c) for c in SECRET_COMMANDS) + r")\s*=).*",
                     re.IGNORECASE | re.DOTALL)
# V.250, 6.2.4: E0 / E (echo off), E1 (echo on).
_ECHO_COMMAND = re.compile(r"ATE([01]?)", re.IGNORECASE)
_FORBIDDEN_IN_COMMAND = frozenset("\r\n\x1a\x1b")
READ_SIZE = 4096
URC_BACKLOG = 64
SHOWN_LINE = 100


class ByteStream(Protocol):
    """What the runner needs of its port: the shape of `firmware.tls_stream.ByteStream`."""

    async def read(self, n: int) -> bytes:
        ...

    async def write(self, data: bytes) -> None:
        ...

    async def close(self) -> None:
        ...


class AtError(Exception):
    """Base of the runner's errors."""


class AtTimeout(AtError):
    """No final result code (or no awaited URC) in time. The runner stays usable."""


class AtCommandError(AtError):
    """The command ended with an error result code (`final`): ERROR, +CME/+CMS ERROR, NO
    CARRIER, SEND FAIL."""

    def __init__(self, command: str, final: Final, lines: list[str]) -> None:
        self.command = command
        self.final = final
        self.lines = lines
        super().__init__(f"{command}: {final.line}")


class AtPortClosed(AtError):
    """The port reached its end, failed, or the runner was closed."""


class AtProtocolError(AtError):
    """The answer was damaged (a line or a data block over the parser's limits)."""


class AtInvalidCommand(AtError, ValueError):
    """The command text cannot be sent: empty, not ASCII, or holding a line end, Ctrl-Z or ESC."""


@dataclass(frozen=True)
class AtResponse:
    """A command's information lines, its final result code and its binary block (if any)."""

    lines: list[str]
    final: Final
    data: bytes = field(default=b"", repr=False)

    def __repr__(self) -> str:
        return f"AtResponse(lines={self.lines!r}, final={self.final!r}, data=<{len(self.data)} bytes>)"


def redact(command: str) -> str:
    """`command` with the parameters of a command holding secrets masked, for logs and errors."""
    return _SECRET.sub(r"\1<redacted>", command)


def _short(text: str) -> str:
    return text if len(text) <= SHOWN_LINE else f"{text[:SHOWN_LINE]}... ({len(text)} chars)"


@dataclass(eq=False)
class _Command:
    shown: str
    expect: str | None
    finals: frozenset[str]
    needs_echo: bool
    done: asyncio.Future[Final]
    prompt: asyncio.Future[None] | None
    lines: list[str] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    echoed: bool = False
    # the parser held part of a line when the command was written: that line is not the answer
    finishes_older_line: bool = False
    data_sent: bool = False
    garbled: bool = False

    @property
    def ready(self) -> bool:
        """Whether what arrives now answers this command (with echo on: after its echo)."""
        return self.echoed or not self.needs_echo


class AtRunner:
    """Runs AT commands on `port`, one at a time. `echo` says whether the modem echoes command
    lines (ATE1) right now; `parser` sets the parser's limits and binary-block rules."""

    def __init__(self, port: ByteStream, *, echo: bool = False, parser: AtParser | None = None,
                 urc_prefixes: tuple[str, ...] = DEFAULT_URC_PREFIXES,
                 busy_cme_codes: frozenset[int] = BUSY_CME_CODES, busy_backoff: float = 0.25,
                 late_answer_grace: float = 1.0) -> None:
        self.echo = echo
        self._port = port
        self._parser = parser if parser is not None else AtParser()
        self._urc_prefixes = urc_prefixes
        self._busy_codes = busy_cme_codes
        self._busy_backoff = busy_backoff
        self._late_answer_grace = late_answer_grace
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._closed: str | None = None
        self._current: _Command | None = None
        self._stale = False  # a command timed out after being written: its answer may still come
        self._stale_over = asyncio.Event()
        self._subscribers: list[tuple[str, Callable[[str], None]]] = []
        self._waiters: list[tuple[str, asyncio.Future[str]]] = []
        self._backlog: deque[str] = deque(maxlen=URC_BACKLOG)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def start(self) -> None:
        """Start reading the port in the background."""
        if self._reader is None and self._closed is None:
            self._reader = asyncio.create_task(self._read_loop(), name="at-reader")

    async def close(self) -> None:
        """Fail what waits with `AtPortClosed`, stop the reader and close the port."""
        self._fail_all("the runner was closed")
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        try:
            await self._port.close()
        except Exception as exc:
            log.debug("closing the modem's port failed: %s", exc)

    def subscribe(self, prefix: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call `callback(line)` for every URC starting with `prefix`; returns the unsubscriber."""
        entry = (prefix, callback)
        self._subscribers.append(entry)

        def unsubscribe() -> None:
            if entry in self._subscribers:
                self._subscribers.remove(entry)
        return unsubscribe

    async def wait_for_urc(self, prefix: str, timeout: float) -> str:
        """The next URC starting with `prefix`, including one that arrived since the latest
        command was written and that nothing took yet. `AtTimeout` if none comes in time."""
        for text in self._backlog:
            if text.startswith(prefix):
                self._backlog.remove(text)
                return text
        self._check_open()
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entry = (prefix, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise AtTimeout(f"no {prefix!r} within {timeout} s") from None
        finally:
            self._waiters.remove(entry)

    async def command(self, text: str, *, timeout: float = 5.0, expect: str | None = None,
                      data: bytes | None = None, finals: frozenset[str] = DEFAULT_FINALS,
                      retries_if_busy: int = 2) -> AtResponse:
        """Send `text` and return its answer once a result in `finals` arrives.

        `expect`: the prefix of the information lines answering this command ("+CSQ:").
        `data`: bytes written raw after the modem's `> ` prompt (AT+QISEND, AT+CIPSEND).
        `finals`: the results that end the command; others are kept in `lines` as text.
        A +CME ERROR meaning busy is sent again after a short pause, up to `retries_if_busy`
        times, unless the data had already gone. `timeout` bounds each attempt, from the write
        of the command to its final result. Raises `AtCommandError`, `AtTimeout`,
        `AtPortClosed`, `AtProtocolError`, `AtInvalidCommand`.
        """
        line = _encode(text)
        shown = redact(text)
        if self._reader is None and self._closed is None:
            raise AtError("the runner is not started")
        async with self._lock:
            attempt = 0
            while True:
                cmd, final = await self._run_once(line, shown, timeout, expect, data, finals)
                if final.result in SUCCESS_FINALS:
                    if cmd.garbled:
                        raise AtProtocolError(f"{shown}: the answer was damaged")
                    self._follow_echo_setting(text)
                    return AtResponse(cmd.lines, final, bytes(cmd.data))
                if attempt < retries_if_busy and not cmd.data_sent and self._is_busy(final):
                    attempt += 1
                    delay = self._busy_backoff * 2 ** (attempt - 1)
                    log.debug("%s: %s, sent again in %.2f s", shown, final.line, delay)
                    await asyncio.sleep(delay)
                    continue
                raise AtCommandError(shown, final, cmd.lines)

    async def _run_once(self, line: bytes, shown: str, timeout: float, expect: str | None,
                        data: bytes | None, finals: frozenset[str]) -> tuple[_Command, Final]:
        await self._settle()
        self._check_open()
        loop = asyncio.get_running_loop()
        cmd = _Command(shown, expect, finals, needs_echo=self.echo, done=loop.create_future(),
                       prompt=loop.create_future() if data is not None else None)
        cmd.finishes_older_line = self._parser.line_pending
        self._backlog.clear()
        self._current = cmd
        written = False
        try:
            async with asyncio.timeout(timeout):
                log.debug("-> %s", shown)
                await self._write(line)
                written = True
                if data is not None and cmd.prompt is not None:
                    await asyncio.wait((cmd.prompt, cmd.done), return_when=asyncio.FIRST_COMPLETED)
                    if not cmd.done.done():
                        log.debug("-> <%d bytes>", len(data))
                        cmd.data_sent = True
                        await self._write(data)
                final = await cmd.done
        except TimeoutError:
            self._abandon(cmd, written)
            raise AtTimeout(f"{shown}: no answer within {timeout} s") from None
        except BaseException:
            self._abandon(cmd, written)
            raise
        return cmd, final

    def _abandon(self, cmd: _Command, written: bool) -> None:
        """Forget a command that ends without its answer; what comes for it later is late."""
        if self._current is cmd:
            self._current = None
        # Awaiting `done` under a timeout cancels it: cancelled means unanswered.
        if cmd.done.done() and not cmd.done.cancelled():
            cmd.done.exception()  # retrieved: the caller already has its own error
            return
        cmd.done.cancel()
        if written and self._closed is None:
            self._stale = True
            self._stale_over.clear()

    async def _settle(self) -> None:
        """After a timeout, give the late answer a chance to arrive and be dropped (echo off;
        with echo on, the next command's echo tells the two apart)."""
        if not self._stale:
            return
        if not self.echo:
            try:
                async with asyncio.timeout(self._late_answer_grace):
                    await self._stale_over.wait()
            except TimeoutError:
                log.debug("no late answer within %s s; going on", self._late_answer_grace)
        self._stale = False

    async def _write(self, data: bytes) -> None:
        try:
            await self._port.write(data)
        except Exception as exc:
            reason = f"writing to the modem's port failed ({type(exc).__name__}: {exc})"
            self._fail_all(reason)
            if self._reader is not None and self._reader is not asyncio.current_task():
                self._reader.cancel()
            raise AtPortClosed(reason) from exc

    def _check_open(self) -> None:
        if self._closed is not None:
            raise AtPortClosed(self._closed)

    def _is_busy(self, final: Final) -> bool:
        if final.result != "CME":
            return False
        if final.code is not None:
            return final.code in self._busy_codes
        return (final.text or "").lower() in BUSY_CME_TEXTS

    def _follow_echo_setting(self, text: str) -> None:
        if echo := _ECHO_COMMAND.fullmatch(text.strip()):
            self.echo = echo.group(1) == "1"

    def _fail_all(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
            log.debug("AT runner stopped: %s", reason)
        cmd, self._current = self._current, None
        if cmd is not None and not cmd.done.done():
            cmd.done.set_exception(AtPortClosed(reason))
        for _prefix, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(AtPortClosed(reason))
        self._stale_over.set()

    async def _read_loop(self) -> None:
        reason = "the modem's port reached its end"
        try:
            while True:
                chunk = await self._port.read(READ_SIZE)
                if not chunk:
                    break
                self._feed(chunk)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"reading the modem's port failed ({type(exc).__name__}: {exc})"
        self._fail_all(reason)

    def _feed(self, chunk: bytes) -> None:
        pending = chunk
        while True:
            error: AtParseError | None = None
            try:
                events = self._parser.feed(pending)
            except AtParseError as exc:
                events, error = exc.events, exc
            for event in events:
                self._on_event(event)
            if error is None:
                return
            log.warning("modem output not understood: %s", error.reason)
            if self._current is not None:
                self._current.garbled = True
            pending = b""

    def _on_event(self, event: AtEvent) -> None:
        cmd = self._current
        if cmd is not None and cmd.finishes_older_line and isinstance(event, Line | Final | Echo):
            # This line began before the modem had the command (a URC, noise, a late result).
            cmd.finishes_older_line = False
            if isinstance(event, Line):
                self._urc(event.text)
            else:
                log.debug("<- %s (began before the command, dropped)", _short(redact(str(event))))
            return
        ready = cmd if cmd is not None and cmd.ready else None
        match event:
            case Line(text):
                if ready is not None and self._claims(ready, text):
                    log.debug("<- %s", _short(text))
                    ready.lines.append(text)
                elif self._is_urc(text) or ready is not None or (cmd is None and not self._stale):
                    self._urc(text)
                else:
                    log.debug("<- %s (late answer, dropped)", _short(text))
            case Final():
                if ready is not None:
                    log.debug("<- %s", event.line)
                    if event.result in ready.finals:
                        self._current = None
                        if not ready.done.done():
                            ready.done.set_result(event)
                    else:
                        ready.lines.append(event.line)
                elif cmd is None and not self._stale:
                    log.debug("<- %s (answers no command, dropped)", event.line)
                else:
                    log.debug("<- %s (late answer, dropped)", event.line)
                    if cmd is None:
                        self._stale = False
                        self._stale_over.set()
            case Echo(text):
                log.debug("<- echo %s", _short(redact(text)))
                if cmd is not None:
                    cmd.echoed = True
            case Prompt():
                if ready is not None and ready.prompt is not None and not ready.prompt.done():
                    log.debug("<- prompt")
                    ready.prompt.set_result(None)
                else:
                    log.warning("the modem prompts for data no command is sending")
            case Data(payload):
                if ready is not None:
                    log.debug("<- <%d bytes>", len(payload))
                    ready.data += payload
                else:
                    log.debug("<- <%d bytes> (answers no command, dropped)", len(payload))

    def _claims(self, cmd: _Command, text: str) -> bool:
        if cmd.expect is not None:
            return text.startswith(cmd.expect)
        return not self._is_urc(text)

    def _is_urc(self, text: str) -> bool:
        return (text.startswith(self._urc_prefixes)
                or any(text.startswith(prefix) for prefix, _ in self._subscribers)
                or any(text.startswith(prefix) for prefix, _ in self._waiters))

    def _urc(self, text: str) -> None:
        log.debug("<- URC %s", _short(text))
        for prefix, callback in tuple(self._subscribers):
            if text.startswith(prefix):
                try:
                    callback(text)
                except Exception:
                    log.exception("the callback for URC %r failed", prefix)
        for prefix, waiter in self._waiters:
            if not waiter.done() and text.startswith(prefix):
                waiter.set_result(text)
                return
        self._backlog.append(text)


def _encode(text: str) -> bytes:
    """`text` + CR (V.250, 5.2.1: S3 ends the command line)."""
    if not text or not text.isascii() or _FORBIDDEN_IN_COMMAND & set(text):
        raise AtInvalidCommand("an AT command must be non-empty ASCII without CR, LF, Ctrl-Z or ESC")
    return text.encode("ascii") + b"\r"
