"""The modem simulator's core, common to every module family.

`ModemSimulator` opens a pseudo-terminal, and answers on it like a cellular module: it reads
command lines (V.250), answers with information lines and a final result code, holds URCs back
while a command runs, speaks the SIM and network registration commands of 3GPP TS 27.007, and
carries data sockets over a simulated radio (`sim.modem.network`, `sim.modem.sockets`). The
module family's own commands come from a `Dialect` (`sim.modem.quectel`, `sim.modem.simcom`).

Output follows V.250 with ATV1: information text as `\\r\\n<line>\\r\\n` (several lines of one
command separated by `\\r\\n`), finals and URCs as `\\r\\n<text>\\r\\n`, the send prompt `\\r\\n> `.

Two ways to run it, and what is thread-safe:

- `start()` / `stop()` (or `with ModemSimulator(...) as sim:`) run it on an event loop in a
  thread of its own. Every public method may then be called from any thread: it runs on the
  simulator's loop and returns its result (waiting up to 5 s).
- `async with ModemSimulator(...) as sim:` (or `await open()` / `await close()`) run it on the
  caller's running loop. Call its methods from that loop's thread; they take effect at once.

A condition changed through a setter applies to the next radio packet and the next command,
also in the middle of a transfer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import random
import threading
import tty
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from sim.modem.at_syntax import (
    AtSyntaxError,
    BasicCommand,
    ExtendedCommand,
    Line,
    LineScanner,
    split_command_line,
)
from sim.modem.dialect import CME_TEXT, ERROR, IMEI, AtFailure, Dialect, Handler, Params
from sim.modem.network import (
    REGISTERED,
    REGISTRATION_STAT,
    TECHNOLOGY_ACT,
    NetworkConditions,
    Radio,
    csq_rssi,
)
from sim.modem.sockets import DataSocket, SocketTraffic

log = logging.getLogger("sim.modem")
T = TypeVar("T")

DIALECTS = ("quectel", "simcom")
OK = "OK"
CALL_TIMEOUT = 5.0
OUTPUT_LIMIT = 1024 * 1024  # what the module keeps for a terminal that does not read
PIN_TRIES, PUK_TRIES = 3, 10
TEST_PUK = "12345678"  # the simulated SIM's PUK (a test value)
IMSI = "001010000000001"  # test PLMN 001-01
LAC, CELL_ID = "00A1", "01A2B3C4"
PDP_TYPES = {"IP": 1, "IPV6": 2, "IPV4V6": 3}


class ModemSimulatorError(Exception):
    """The simulator cannot be built or started as asked."""


@dataclass(frozen=True)
class SimulatorStatus:
    """A snapshot of the simulated module, for tests, `status` and the bench."""

    dialect: str
    path: str | None
    conditions: NetworkConditions
    registration: str  # what the module reports now: none, home, searching, denied, roaming
    sim: str  # ready, pin, puk, blocked, absent
    radio_on: bool
    rebooting: bool
    echo: bool
    commands: int  # command lines answered
    sockets: tuple[SocketTraffic, ...]  # the sockets in the module's table now
    up_bytes: int  # payload bytes sent over the air since start, all sockets
    down_bytes: int
    detail: str  # the dialect's own state, in a few words


class ModemSimulator:
    """A simulated cellular module on a pty. See the module docstring for threading."""

    def __init__(self, dialect: str = "quectel", conditions: NetworkConditions | None = None, *,
                 pin: str | None = None, sim_inserted: bool = True, echo: bool = True,
                 reboot_seconds: float = 1.0, connect_timeout: float = 30.0, send_buffer: int = 32 * 1024,
                 max_line: int = 1024, seed: int | None = None) -> None:
        if dialect not in DIALECTS:
            raise ModemSimulatorError(f"unknown dialect {dialect!r}: {', '.join(DIALECTS)}")
        if pin is not None and not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 8):
            raise ModemSimulatorError("a SIM PIN is 4 to 8 digits")
        if not 0 <= reboot_seconds <= 60 or connect_timeout <= 0 or send_buffer < 1460:
            raise ModemSimulatorError("reboot_seconds 0-60, connect_timeout > 0, send_buffer >= 1460")
        self.dialect_name = dialect
        self._conditions = conditions or NetworkConditions()
        self._pin = pin
        self._sim_inserted = sim_inserted
        self._echo_default = echo
        self.reboot_seconds = reboot_seconds
        self.connect_timeout = connect_timeout
        self.send_buffer = send_buffer
        self._random = random.Random(seed)
        self._scanner = LineScanner(max_line)
        self._radio = Radio(lambda: self._conditions)
        self._dialect = _make_dialect(dialect, self)
        self._handlers: dict[str, Handler] = {**self._core_commands(), **self._dialect.commands()}
        self.sockets: dict[int, DataSocket] = {}
        self._history: list[DataSocket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._path: str | None = None
        self._input = bytearray()
        self._input_ready = asyncio.Event()
        self._output = bytearray()
        self._writing = False
        self._pending_urcs: deque[tuple[str, bytes, Callable[[], bool] | None]] = deque()
        self._busy = False
        self._after: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._interpreter: asyncio.Task[None] | None = None
        self._rebooting = False
        self._registration = "none"
        self._was_eligible = False
        self._attaching = False
        self._attach_timer: asyncio.TimerHandle | None = None
        self._cme_next: int | None = None
        self._last_body: str | None = None
        self.commands_answered = 0
        self.sim_state = "absent"
        self._power_on_state()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def path(self) -> str | None:
        """The pty's terminal side (e.g. /dev/pts/7), once started."""
        return self._path

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    def start(self) -> str:
        """Run on an event loop in a thread of its own; the pty path."""
        if self._thread is not None or self._loop is not None:
            raise ModemSimulatorError("the simulator is already running")
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=_run_loop, args=(loop,), name="modem-simulator", daemon=True)
        self._thread.start()
        try:
            return asyncio.run_coroutine_threadsafe(self.open(), loop).result(CALL_TIMEOUT)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(CALL_TIMEOUT)
            self._thread = None
            raise

    def stop(self) -> None:
        """Stop what `start` started: sockets closed, pty closed, thread ended."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(CALL_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CALL_TIMEOUT)
        self._thread = None

    def __enter__(self) -> ModemSimulator:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def __aenter__(self) -> ModemSimulator:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def open(self) -> str:
        """Start on the running loop; the pty path."""
        if self._master is not None:
            raise ModemSimulatorError("the simulator is already running")
        loop = asyncio.get_running_loop()
        # Power on afresh: a simulator may be opened again after `close`, on another loop.
        self._radio = Radio(lambda: self._conditions)
        self.sockets.clear()
        self._dialect.reset()
        self._power_on_state()
        self._rebooting = self._busy = self._was_eligible = False
        self._registration = "none"
        self._input.clear()
        self._output.clear()
        self._pending_urcs.clear()
        self._scanner.reset()
        master, slave = os.openpty()
        # No echo, no line discipline on the terminal side: binary data goes through untouched.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave, self._path = master, slave, os.ttyname(slave)
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._input_ready = asyncio.Event()
        loop.add_reader(master, self._on_readable)
        self._radio.start()
        self._interpreter = loop.create_task(self._interpret())
        self._update_registration()
        return self._path

    async def close(self) -> None:
        """Stop: every socket aborted, the pty closed."""
        loop = self._loop
        if loop is None or self._master is None:
            return
        for task in [self._interpreter, *self._tasks]:
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for task in [self._interpreter, *self._tasks]:
            if task is not None and task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._interpreter = None
        self._cancel_attach()
        for sock in self._history:
            if sock.state in ("opening", "connected"):
                sock.abort(final_state="closed")
        await self._radio.stop()
        loop.remove_reader(self._master)
        if self._writing:
            loop.remove_writer(self._master)
            self._writing = False
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._loop = self._loop_thread = None

    # -- controls (thread-safe) --------------------------------------------------------------

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread or not loop.is_running():
            return function(*args)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function(*args))
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(CALL_TIMEOUT)

    @property
    def conditions(self) -> NetworkConditions:
        return self._conditions

    def set_conditions(self, **changes: Any) -> NetworkConditions:
        """Change network conditions (NetworkConditions fields); `ConditionsError` if out of range."""
        return self._call(self._set_conditions, changes)

    def _set_conditions(self, changes: dict[str, Any]) -> NetworkConditions:
        self._conditions = self._conditions.replace(**changes)
        self._update_registration()
        return self._conditions

    def set_rtt(self, ms: float) -> None:
        self.set_conditions(rtt_ms=ms)

    def set_bandwidth(self, kbit: float | None) -> None:
        self.set_conditions(bandwidth_kbit=kbit)

    def set_signal(self, dbm: int | None) -> None:
        self.set_conditions(signal_dbm=dbm)

    def set_registration(self, state: str) -> None:
        """home, roaming, denied, searching or none; leaving home/roaming takes PDP and sockets down."""
        self.set_conditions(registration=state)

    def set_slow(self, ms: float) -> None:
        """Hold back every command's answer `ms` milliseconds."""
        self.set_conditions(answer_delay_ms=ms)

    def set_open_delay(self, ms: float) -> None:
        self.set_conditions(open_delay_ms=ms)

    def close_sockets(self) -> int:
        """The network closes every open socket, with the dialect's URCs; how many."""
        return self._call(self._close_sockets)

    def _close_sockets(self) -> int:
        closed = 0
        for sock in list(self.sockets.values()):
            if sock.state == "connected":
                sock.abort()
                self._dialect.socket_closed_by_network(sock)
                closed += 1
            elif sock.state == "opening":
                sock.abort()
                closed += 1
        return closed

    def inject_cme(self, code: int) -> None:
        """The next command line is answered +CME ERROR: `code` (as AT+CMEE formats it)."""
        if not 0 <= code <= 65535:
            raise ModemSimulatorError("a CME error code is 0-65535")
        self._call(setattr, self, "_cme_next", code)

    def garbage(self, size: int = 32) -> bytes:
        """Emit `size` random bytes on the line now (line noise); the bytes sent."""
        if not 0 < size <= 65536:
            raise ModemSimulatorError("garbage is 1 to 65536 bytes")
        return self._call(self._garbage, size)

    def _garbage(self, size: int) -> bytes:
        data = self._random.randbytes(size)
        self.write(data)
        return data

    def reboot(self) -> None:
        """Restart the module as AT+CFUN=1,1 does: silence, then the start-up URCs."""
        self._call(self._start_reboot)

    def status(self) -> SimulatorStatus:
        return self._call(self._status)

    def _status(self) -> SimulatorStatus:
        return SimulatorStatus(
            dialect=self.dialect_name, path=self._path, conditions=self._conditions,
            registration=self._registration, sim=self.sim_state, radio_on=self.cfun == 1,
            rebooting=self._rebooting, echo=self.echo, commands=self.commands_answered,
            sockets=tuple(sock.traffic() for _, sock in sorted(self.sockets.items())),
            up_bytes=sum(sock.up_bytes for sock in self._history),
            down_bytes=sum(sock.down_bytes for sock in self._history),
            detail=self._dialect.describe())

    def traffic(self) -> list[SocketTraffic]:
        """Every socket opened since start (or `reset_traffic`), in order, with its bytes on air."""
        return self._call(lambda: [sock.traffic() for sock in self._history])

    def reset_traffic(self) -> None:
        """Forget the sockets no longer open (`traffic` and the status totals start again)."""
        self._call(self._reset_traffic)

    def _reset_traffic(self) -> None:
        self._history = [sock for sock in self._history if sock.state in ("opening", "connected")]

    # -- services for dialects (event loop only) ---------------------------------------------

    @property
    def registration(self) -> str:
        return self._registration

    @property
    def registered(self) -> bool:
        return self._registration in REGISTERED

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coroutine` as the module's background work (cancelled by a restart)."""
        if self._loop is None:
            raise ModemSimulatorError("the simulator is not running")
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("modem simulator task failed", exc_info=task.exception())

    def after_final(self, action: Callable[[], None]) -> None:
        """Do `action` once the current command's final result code is out."""
        self._after.append(action)

    def write(self, data: bytes) -> None:
        """Raw bytes to the terminal."""
        if self._master is None or not data:
            return
        self._output += data
        if len(self._output) > OUTPUT_LIMIT:
            del self._output[:len(self._output) - OUTPUT_LIMIT]
        self._flush_output()

    def info(self, *lines: str) -> None:
        """Information text of the current command (V.250, 5.7.1)."""
        self.write(b"\r\n" + "\r\n".join(lines).encode("latin-1", "replace") + b"\r\n")

    def info_data(self, header: str, data: bytes) -> None:
        """An information line followed by a block of binary data and CR LF."""
        self.write(b"\r\n" + header.encode("latin-1", "replace") + b"\r\n" + data + b"\r\n")

    def urc(self, text: str, *, data: bytes = b"", valid: Callable[[], bool] | None = None) -> None:
        """An unsolicited result code, held back while a command runs; `valid` is asked again
        when it is finally sent (a "data arrived" URC whose data was read meanwhile is dropped)."""
        if self._rebooting or self._master is None:
            return
        if self._busy:
            self._pending_urcs.append((text, data, valid))
        else:
            self.write(b"\r\n" + text.encode("latin-1", "replace") + b"\r\n" + data)

    def _flush_urcs(self) -> None:
        while self._pending_urcs and not self._busy:
            text, data, valid = self._pending_urcs.popleft()
            if valid is None or valid():
                self.write(b"\r\n" + text.encode("latin-1", "replace") + b"\r\n" + data)

    def cme(self, code: int) -> AtFailure:
        """The failure +CME ERROR: `code` as AT+CMEE asks (3GPP TS 27.007, 9.1)."""
        return AtFailure(self.cme_text(code))

    def cme_text(self, code: int) -> str:
        if self.cmee == 0:
            return ERROR
        if self.cmee == 2:
            text = CME_TEXT.get(code) or self._dialect.error_text.get(code)
            if text is not None:
                return f"+CME ERROR: {text}"
        return f"+CME ERROR: {code}"

    async def prompt_data(self, length: int) -> bytes:
        """Send the data prompt, then take exactly `length` bytes from the terminal (no echo)."""
        self.write(b"\r\n> ")
        while len(self._input) < length:
            self._input_ready.clear()
            await self._input_ready.wait()
        data = bytes(self._input[:length])
        del self._input[:length]
        return data

    async def network_delay(self) -> None:
        """One exchange with the network: a round trip plus the module's own delay."""
        conditions = self._conditions
        await asyncio.sleep((conditions.rtt_ms + conditions.open_delay_ms) / 1000)

    def apn_accepted(self, context: int) -> bool:
        required = self._conditions.required_apn
        return required is None or self.pdp_profiles.get(context, ("IP", "", "", "", 0))[1] == required

    def create_socket(self, socket_id: int, host: str, port: int, *, context: int = 1,
                      push: bool = False) -> DataSocket:
        sock = DataSocket(socket_id, host, port, self._radio, lambda: self._conditions, context=context,
                          push=push)
        sock.on_data = self._dialect.data_arrived
        sock.on_peer_closed = self._dialect.peer_closed
        self.sockets[socket_id] = sock
        self._history.append(sock)
        return sock

    def new_ip_address(self) -> str:
        rng = self._random
        return f"10.{rng.randrange(64, 128)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"

    # -- pty ---------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO: no terminal side open at the moment
        if self._rebooting:
            return  # a module that is starting hears nothing
        self._input += data
        self._input_ready.set()

    def _flush_output(self) -> None:
        master, loop = self._master, self._loop
        if master is None or loop is None:
            return
        while self._output:
            try:
                written = os.write(master, self._output)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._output.clear()
                break
            del self._output[:written]
        if self._output and not self._writing:
            loop.add_writer(master, self._flush_output)
            self._writing = True
        elif not self._output and self._writing:
            loop.remove_writer(master)
            self._writing = False

    # -- the command interpreter -------------------------------------------------------------

    async def _next_line(self) -> Line:
        while True:
            if self._input:
                data = bytes(self._input)
                for index, byte in enumerate(data):
                    line = self._scanner.push(byte)
                    if line is not None:
                        del self._input[:index + 1]
                        return line
                self._input.clear()
            self._input_ready.clear()
            await self._input_ready.wait()

    async def _interpret(self) -> None:
        while True:
            line = await self._next_line()
            body = (self._last_body or "") if line.repeat else line.body
            if self.echo:
                self.write(line.echo)
            self._busy = True
            self._after = []
            try:
                final = await self._execute(body, line.overflow)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("modem simulator: command failed")
                final = ERROR
            self.commands_answered += 1
            self.write(b"\r\n" + final.encode("latin-1", "replace") + b"\r\n")
            self._busy = False
            if not line.overflow:
                self._last_body = body
            for action in self._after:
                action()
            self._flush_urcs()

    async def _execute(self, body: str, overflow: bool) -> str:
        delay = self._conditions.answer_delay_ms
        if delay:
            await asyncio.sleep(delay / 1000)
        if self._cme_next is not None:
            code, self._cme_next = self._cme_next, None
            return self.cme_text(code)
        if overflow:
            return ERROR
        try:
            commands = split_command_line(body)
        except AtSyntaxError:
            return ERROR
        final = OK
        for command in commands:
            try:
                if isinstance(command, BasicCommand):
                    self._basic(command)
                    continue
                handler = self._handlers.get(command.name)
                if handler is None:
                    return ERROR
                if command.form == "test":
                    continue  # simplified: a known command's test form answers OK
                result = await handler(command)
            except AtFailure as failure:
                return failure.final
            if result is not None:
                final = result
        return final

    def _basic(self, command: BasicCommand) -> None:
        name, value = command.name, command.value
        if name == "E" and value in (None, 0, 1):
            self.echo = value == 1
        elif name == "I" and value in (None, 0):
            self.info(*self._dialect.identity())
        elif (name == "V" and value == 1) or (name == "Q" and value in (None, 0)) or (
                name in ("&C", "&D") and value in (None, 0, 1, 2)) or (name == "&W" and value in (None, 0)):
            pass
        elif name in ("Z", "&F") and value in (None, 0):
            self.echo, self.cmee = self._echo_default, 1
        else:
            raise AtFailure(ERROR)  # V0 (numeric result codes), S-registers, dialling: not simulated

    # -- state -------------------------------------------------------------------------------

    def _power_on_state(self) -> None:
        self.echo = self._echo_default
        self.cmee = 1
        self.cfun = 1
        self.registration_urc = {"+CREG": 0, "+CGREG": 0, "+CEREG": 0}
        self.cops_format = 0
        if not self._sim_inserted:
            self.sim_state = "absent"
        elif self.sim_state != "blocked":
            self.sim_state = "pin" if self._pin is not None else "ready"
        self.pin_tries, self.puk_tries = PIN_TRIES, PUK_TRIES
        self.pdp_profiles: dict[int, tuple[str, str, str, str, int]] = {1: ("IP", "", "", "", 0)}
        self._cme_next = None
        self._last_body = None

    def _eligible(self) -> bool:
        return not self._rebooting and self.cfun == 1 and self.sim_state == "ready"

    def _cancel_attach(self) -> None:
        if self._attach_timer is not None:
            self._attach_timer.cancel()
            self._attach_timer = None
        self._attaching = False

    def _attached(self) -> None:
        self._attach_timer = None
        self._attaching = False
        self._update_registration()

    def _update_registration(self) -> None:
        """Work out what the module reports; on a change send the +CREG/+CGREG/+CEREG URCs asked
        for (3GPP TS 27.007, 7.2, 10.1.20, 10.1.22) and tell the dialect when service is lost."""
        eligible = self._eligible()
        if not eligible:
            self._cancel_attach()
        elif not self._was_eligible and self._conditions.attach_ms > 0 and self._loop is not None:
            self._attaching = True
            self._attach_timer = self._loop.call_later(self._conditions.attach_ms / 1000, self._attached)
        self._was_eligible = eligible
        new = ("searching" if self._attaching else self._conditions.registration) if eligible else "none"
        old, self._registration = self._registration, new
        if new == old:
            return
        for name, mode in self.registration_urc.items():
            if mode:
                self.urc(self._registration_line(name, mode, read=False))
        if old in REGISTERED and new not in REGISTERED:
            self._dialect.registration_lost()

    def _registration_line(self, name: str, mode: int, *, read: bool) -> str:
        parts = [str(mode)] if read else []
        parts.append(str(REGISTRATION_STAT[self._registration]))
        if mode == 2 and self._registration in REGISTERED:
            parts += [f'"{LAC}"', f'"{CELL_ID}"', str(TECHNOLOGY_ACT[self._conditions.technology])]
        return f"{name}: {','.join(parts)}"

    def _start_reboot(self) -> None:
        if self._rebooting or self._loop is None:
            return
        self._rebooting = True
        self.spawn(self._reboot())

    async def _reboot(self) -> None:
        others = [task for task in (self._interpreter, *self._tasks)
                  if task is not None and task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        for task in others:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sock in self.sockets.values():
            sock.abort(final_state="closed")
        self.sockets.clear()
        self._radio.clear()
        self._pending_urcs.clear()
        self._input.clear()
        self._scanner.reset()
        self._busy = False
        self._dialect.reset()
        self._power_on_state()
        self._update_registration()
        await asyncio.sleep(self.reboot_seconds)
        self._input.clear()
        self._rebooting = False
        for text in self._dialect.boot_urcs():
            self.urc(text)
        if self._loop is not None:
            self._interpreter = self._loop.create_task(self._interpret())
        self._update_registration()

    # -- 3GPP TS 27.007 and V.250 commands of every module -----------------------------------

    def _core_commands(self) -> dict[str, Handler]:
        identification = {
            "+CGMI": lambda: self._dialect.manufacturer, "+GMI": lambda: self._dialect.manufacturer,
            "+CGMM": lambda: self._dialect.model, "+GMM": lambda: self._dialect.model,
            "+CGMR": lambda: self._dialect.revision, "+GMR": lambda: self._dialect.revision,
            "+CGSN": lambda: IMEI, "+GSN": lambda: IMEI,
        }
        handlers: dict[str, Handler] = {
            name: self._identification(value) for name, value in identification.items()}
        handlers.update({
            "+CIMI": self._cimi, "+CPIN": self._cpin, "+CSQ": self._csq, "+CREG": self._creg,
            "+CGREG": self._creg, "+CEREG": self._creg, "+COPS": self._cops, "+CFUN": self._cfun,
            "+CMEE": self._cmee, "+CGDCONT": self._cgdcont, "+CGATT": self._cgatt,
        })
        return handlers

    def _identification(self, value: Callable[[], str]) -> Handler:
        async def handler(command: ExtendedCommand) -> str | None:
            if command.form != "action":
                raise AtFailure(ERROR)
            self.info(value())
            return None
        return handler

    async def _cimi(self, command: ExtendedCommand) -> str | None:
        if command.form != "action":
            raise AtFailure(ERROR)
        if self.sim_state != "ready":
            raise self.cme({"absent": 10, "pin": 11, "puk": 12}.get(self.sim_state, 13))
        self.info(IMSI)
        return None

    async def _cpin(self, command: ExtendedCommand) -> str | None:
        """3GPP TS 27.007, 8.3."""
        if self.sim_state == "absent":
            raise self.cme(10)
        if self.sim_state == "blocked":
            raise self.cme(13)
        if command.form == "read":
            self.info("+CPIN: " + {"ready": "READY", "pin": "SIM PIN", "puk": "SIM PUK"}[self.sim_state])
            return None
        params = Params(command, self.cme_text(50), 1, 2)
        if self.sim_state == "ready":
            raise self.cme(3)
        if self.sim_state == "pin":
            if params.str(0, max_length=8) != self._pin:
                self.pin_tries -= 1
                if self.pin_tries == 0:
                    self.sim_state = "puk"
                raise self.cme(16)
        else:
            puk, new_pin = params.str(0, max_length=8), params.str(1, "", max_length=8)
            if not (new_pin.isascii() and new_pin.isdigit() and 4 <= len(new_pin) <= 8):
                raise self.cme(50)
            if puk != TEST_PUK:
                self.puk_tries -= 1
                if self.puk_tries == 0:
                    self.sim_state = "blocked"
                raise self.cme(16)
            self._pin = new_pin
        self.sim_state = "ready"
        self.pin_tries, self.puk_tries = PIN_TRIES, PUK_TRIES
        self.urc("+CPIN: READY")
        for text in self._dialect.sim_ready_urcs():
            self.urc(text)
        self._update_registration()
        return None

    async def _csq(self, command: ExtendedCommand) -> str | None:
        """3GPP TS 27.007, 8.5: <rssi>,<ber>; the bit error rate is not simulated (99)."""
        if command.form != "action":
            raise AtFailure(ERROR)
        rssi = csq_rssi(self._conditions.signal_dbm) if self.cfun == 1 and not self._rebooting else 99
        self.info(f"+CSQ: {rssi},99")
        return None

    async def _creg(self, command: ExtendedCommand) -> str | None:
        """+CREG (27.007, 7.2), +CGREG (10.1.20), +CEREG (10.1.22): modes 0-2."""
        if command.form == "read":
            self.info(self._registration_line(command.name, self.registration_urc[command.name], read=True))
            return None
        mode = Params(command, self.cme_text(50), 1, 1).int(0, 0, 2)
        self.registration_urc[command.name] = mode
        return None

    async def _cops(self, command: ExtendedCommand) -> str | None:
        """3GPP TS 27.007, 7.3: automatic selection only, format 0 (long), 1 (short), 2 (numeric)."""
        conditions = self._conditions
        act = TECHNOLOGY_ACT[conditions.technology]
        if command.form == "read":
            if self.registered:
                name = conditions.plmn if self.cops_format == 2 else conditions.operator
                self.info(f'+COPS: 0,{self.cops_format},"{name}",{act}')
            else:
                self.info("+COPS: 0")
            return None
        if command.form == "test":
            return None
        params = Params(command, self.cme_text(50), 1, 3)
        mode = params.int(0, 0, 3)
        if mode == 3:
            self.cops_format = params.int(1, 0, 2)
        elif mode != 0:
            raise self.cme(4)  # manual selection is not simulated
        return None

    async def _cfun(self, command: ExtendedCommand) -> str | None:
        """3GPP TS 27.007, 8.2: 0 minimum, 1 full, 4 radio off; <rst> 1 restarts the module."""
        if command.form == "read":
            self.info(f"+CFUN: {self.cfun}")
            return None
        params = Params(command, self.cme_text(50), 1, 2)
        fun = params.int(0, 0, 4)
        reset = params.int(1, 0, 1, 0)
        if fun not in (0, 1, 4):
            raise self.cme(50)
        if reset:
            self.after_final(self._start_reboot)
            return None
        self.cfun = fun
        self._update_registration()
        return None

    async def _cmee(self, command: ExtendedCommand) -> str | None:
        if command.form == "read":
            self.info(f"+CMEE: {self.cmee}")
            return None
        self.cmee = Params(command, ERROR, 1, 1).int(0, 0, 2)
        return None

    async def _cgdcont(self, command: ExtendedCommand) -> str | None:
        """3GPP TS 27.007, 10.1.1: <cid>,<PDP_type>,<APN> (the others are not simulated)."""
        if command.form == "read":
            self.info(*(f'+CGDCONT: {cid},"{kind}","{apn}","0.0.0.0",0,0'
                        for cid, (kind, apn, *_rest) in sorted(self.pdp_profiles.items())))
            return None
        params = Params(command, self.cme_text(50), 1, 7)
        cid = params.int(0, 1, 16)
        if len(params) == 1:
            self.pdp_profiles.pop(cid, None)
            return None
        kind = params.str(1).upper()
        if kind not in PDP_TYPES:
            raise self.cme(50)
        old = self.pdp_profiles.get(cid, ("IP", "", "", "", 0))
        self.pdp_profiles[cid] = (kind, params.str(2, ""), old[2], old[3], old[4])
        return None

    async def _cgatt(self, command: ExtendedCommand) -> str | None:
        if command.form != "read":
            raise AtFailure(ERROR)
        self.info(f"+CGATT: {1 if self.registered else 0}")
        return None


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


def _make_dialect(name: str, modem: ModemSimulator) -> Dialect:
    if name == "quectel":
        from sim.modem.quectel import Quectel
        return Quectel(modem)
    from sim.modem.simcom import Simcom
    return Simcom(modem)
