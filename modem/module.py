"""The cellular module driver: what Quectel and SIMCom modules share, over `modem.runner.AtRunner`.

`Module.bring_up` takes the module from power-on to an active data context: echo off, SIM PIN
(3GPP TS 27.007, 8.3), registration with its URCs (7.2, 10.1.22), APN and activation in the
dialect's commands. `status` reads signal (8.5), registration and operator (7.3). `open_socket`
gives a `ModemSocket` (a `ByteStream`) for the acquirer link's TLS.

Recovery is the driver's: a `+QIURC: "pdpdeact"` / `+CIPEVENT` or a registration lost after
bring-up re-activates the data context (`recover`) as soon as the module is registered again,
in the background, and before the next `open_socket` if that failed; a module restarting by
itself (`RDY`) is brought up again the same way; `max_timeouts` AT commands in a row without an
answer make the next operation reset the module (`reset`: AT+CFUN=1,1, wait for `RDY`, bring up
again). Each step is logged with its cause and kept in `Module.recoveries`.

A wrong SIM PIN is never entered again by the driver: the SIM blocks after three (ETSI TS 102 221,
9.5); only `bring_up` with another PIN tries again. PINs and APN passwords are never logged, nor
put in reprs or error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from modem import signal
from modem.runner import AtCommandError, AtError, AtResponse, AtRunner, AtTimeout
from modem.socket_stream import ModemSocket, ModemSocketError, SocketOpenError

log = logging.getLogger(__name__)

T = TypeVar("T")

# 27.007, 7.2 / 10.1.22 <stat>
REGISTRATION_STATES: dict[int, str] = {
    0: "not_registered",  # not registered, not searching
    1: "home",
    2: "searching",
    3: "denied",
    4: "not_registered",  # unknown (e.g. out of coverage)
    5: "roaming",
    6: "home",  # registered for "SMS only", home network
    7: "roaming",  # registered for "SMS only", roaming
    8: "not_registered",  # attached for emergency bearer services only
    9: "home",  # registered for "CSFB not preferred", home network
    10: "roaming",  # registered for "CSFB not preferred", roaming
}
REGISTERED = frozenset({"home", "roaming"})
# the better of two answers (CEREG for LTE, CREG for 2G/3G) is the module's registration
_PREFERENCE = ("home", "roaming", "searching", "denied", "not_registered")
# what an open gets at least after the recovery before it took its time
MIN_OPEN_TIME = 1.0

# 27.007, 9.2.1 +CME ERROR codes the driver acts on
CME_SIM_NOT_INSERTED = 10
CME_SIM_FAILURE = 13
CME_SIM_BUSY = 14
CME_INCORRECT_PASSWORD = 16

# characters allowed inside a quoted AT string parameter (V.250, 5.4.2.2: no '"' inside)
_AT_STRING = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}
MAX_AT_STRING = 100


class ModemError(Exception):
    """Base of the errors of the module driver."""


class ModemResponseError(ModemError):
    """The module answered something the driver cannot read."""

    def __init__(self, reason: str, line: str) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"{reason}: {line!r}")


class ModemConfigError(ModemError, ValueError):
    """A PIN, APN, user name, password or host that cannot be sent to the module."""


class ModemTimeout(ModemError):
    """The module did not answer a command in time."""


class ModemCommandError(ModemError):
    """The module refused a command (`result` "ERROR", "CME", ...; `code` of `+CME ERROR: n`)."""

    def __init__(self, what: str, result: str, code: int | None) -> None:
        self.what = what
        self.result = result
        self.code = code
        detail = result if code is None else f"{result} {code}"
        super().__init__(f"{what}: the module answered {detail}")


class ModemLinkError(ModemError):
    """The AT link itself failed: the serial port closed, or an answer came damaged."""


class ModuleUnresponsive(ModemError):
    """AT commands get no answer any more, or the module did not start again after a reset."""


class ModemNotReady(ModemError):
    """The module was not brought up (`bring_up`) or its last bring-up failed."""


class SimError(ModemError):
    """The SIM is missing, failed, or not ready (`code`: the `+CME ERROR` when there was one)."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason if code is None else f"{reason} (+CME ERROR: {code})")


class SimPinError(SimError):
    """The SIM wants a PIN the driver cannot give: none configured ("missing"), refused now
    ("wrong") or before ("refused_before"), not confirmed ("unconfirmed"), or it is blocked and
    needs its PUK ("puk"). The driver never retries a PIN after this."""

    def __init__(self, reason: str, *, kind: str, code: int | None = None) -> None:
        self.kind = kind
        super().__init__(reason, code=code)


class RegistrationError(ModemError):
    """The module is not registered on a network (`state` as `ModemStatus.registered`)."""

    def __init__(self, reason: str, *, state: str) -> None:
        self.state = state
        super().__init__(reason)


class RegistrationDenied(RegistrationError):
    """The network refused the registration (27.007 <stat> 3)."""


class NotRegistered(RegistrationError):
    """No registration within the time allowed."""


class DataContextError(ModemError):
    """The data (PDP) context could not be configured or activated (`code` when given)."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason if code is None else f"{reason} (error {code})")


@dataclass(frozen=True)
class ModemStatus:
    """What the status bar and the link manager show of the module."""

    registered: str  # "home" | "roaming" | "denied" | "searching" | "not_registered"
    rssi_dbm: int | None
    bars: int  # 0..5
    technology: str | None  # "2G" | "3G" | "4G"
    operator: str | None


@dataclass(frozen=True)
class Registration:
    """One `+CREG`/`+CGREG`/`+CEREG` answer or URC (27.007, 7.2 / 10.1.22)."""

    stat: int
    act: int | None = None

    @property
    def state(self) -> str:
        return REGISTRATION_STATES.get(self.stat, "not_registered")


@dataclass(frozen=True)
class Operator:
    """The `+COPS?` answer (27.007, 7.3): the operator's name as the module gives it."""

    name: str | None
    act: int | None


@dataclass(frozen=True)
class Credentials:
    """What `bring_up` was given, kept to bring the module up again after a reset."""

    pin: str | None = field(repr=False)
    apn: str
    user: str = ""
    password: str = field(default="", repr=False)


# --- response parsing (no I/O) -------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    value: str
    quoted: bool


def split_fields(text: str) -> list[Field]:
    """The comma-separated values of an information line after its `+XXX:` (V.250, 5.7.2):
    numbers, and strings in double quotes that may hold commas."""
    fields: list[Field] = []
    i, end = 0, len(text)
    while True:
        while i < end and text[i] == " ":
            i += 1
        if i < end and text[i] == '"':
            close = text.find('"', i + 1)
            if close < 0:
                raise ModemResponseError("a string without its closing quote", text)
            fields.append(Field(text[i + 1:close], True))
            i = close + 1
            while i < end and text[i] == " ":
                i += 1
            if i < end and text[i] != ",":
                raise ModemResponseError("text after a quoted string", text)
        else:
            comma = text.find(",", i)
            stop = end if comma < 0 else comma
            fields.append(Field(text[i:stop].strip(), False))
            i = stop
        if i >= end:
            return fields
        i += 1


def info_fields(line: str, prefix: str) -> list[Field]:
    """The fields of `line`, which must start with `prefix` (e.g. "+CSQ:")."""
    if not line.startswith(prefix):
        raise ModemResponseError(f"not a {prefix} line", line)
    return split_fields(line[len(prefix):])


def field_int(fields: list[Field], index: int, line: str) -> int:
    """Field `index` of `line` as an integer."""
    if index >= len(fields):
        raise ModemResponseError(f"field {index + 1} missing", line)
    text = fields[index].value
    if not text or not (text.isdigit() or (text[0] == "-" and text[1:].isdigit())) or not text.isascii():
        raise ModemResponseError(f"field {index + 1} is not a number", line)
    return int(text)


def _optional_int(fields: list[Field], index: int, line: str) -> int | None:
    if index >= len(fields) or fields[index].value == "":
        return None
    return field_int(fields, index, line)


def int_fields(line: str, prefix: str, count: int) -> list[int]:
    """The first `count` fields of `line` as integers (e.g. `+QIOPEN: 0,0`)."""
    fields = info_fields(line, prefix)
    return [field_int(fields, i, line) for i in range(count)]


def parse_csq(line: str) -> tuple[int, int]:
    """`+CSQ: <rssi>,<ber>` (27.007, 8.5)."""
    fields = info_fields(line, "+CSQ:")
    return field_int(fields, 0, line), field_int(fields, 1, line)


def parse_registration(line: str) -> Registration:
    """`+CREG`, `+CGREG` or `+CEREG`, as the answer to the read command (`<n>,<stat>[,...]`) or
    as the URC (`<stat>[,<lac|tac>,<ci>[,<AcT>]]`): 27.007, 7.2 and 10.1.22. The URC's second
    field, when there is one, is a quoted area code; the answer's is a bare <stat>."""
    prefix = line.split(":", 1)[0] + ":"
    if prefix not in ("+CREG:", "+CGREG:", "+CEREG:"):
        raise ModemResponseError("not a registration line", line)
    fields = info_fields(line, prefix)
    unsolicited = len(fields) == 1 or fields[1].quoted or fields[1].value == ""
    stat_index, act_index = (0, 3) if unsolicited else (1, 4)
    return Registration(field_int(fields, stat_index, line), _optional_int(fields, act_index, line))


def parse_cops(line: str) -> Operator:
    """`+COPS: <mode>[,<format>,<oper>[,<AcT>]]` (27.007, 7.3)."""
    fields = info_fields(line, "+COPS:")
    field_int(fields, 0, line)
    if len(fields) < 3:
        return Operator(None, None)
    name = fields[2].value or None
    return Operator(name, _optional_int(fields, 3, line))


def best_registration(registrations: Iterable[Registration]) -> Registration | None:
    """The most useful of the module's registrations (LTE and 2G/3G are asked apart)."""
    ranked = sorted(registrations, key=lambda r: _PREFERENCE.index(r.state))
    return ranked[0] if ranked else None


def check_pin(pin: str) -> None:
    """A SIM PIN is 4 to 8 digits (ETSI TS 102 221, 9.5). The PIN is not in the message."""
    if not (4 <= len(pin) <= 8 and pin.isascii() and pin.isdigit()):
        raise ModemConfigError("the SIM PIN must be 4 to 8 digits")


def check_at_string(value: str, what: str, *, secret: bool = False) -> None:
    """`value` can go inside an AT string parameter as it is: printable ASCII without quotes."""
    if len(value) > MAX_AT_STRING or not set(value) <= _AT_STRING:
        shown = "" if secret else f" {value!r}"
        raise ModemConfigError(f"the {what}{shown} must be printable ASCII without quotes or backslashes, "
                               f"at most {MAX_AT_STRING} characters")


def final_of(exc: AtCommandError) -> tuple[str, int | None]:
    """The result and the +CME/+CMS code of a refused command."""
    final = exc.final
    return final.result, final.code


# --- the driver ----------------------------------------------------------------------------

class Module(ABC):
    """A cellular module on an `AtRunner` (started by the caller). Use from one event loop."""

    dialect: ClassVar[str]
    socket_ids: ClassVar[range]
    max_send: ClassVar[int]  # bytes per send command
    max_read: ClassVar[int]  # bytes per read command
    drain_after_close: ClassVar[bool] = True  # received bytes stay readable after the peer's close

    def __init__(self, runner: AtRunner, *, registration_timeout: float = 180.0, poll_interval: float = 2.0,
                 max_timeouts: int = 3, boot_timeout: float = 60.0, command_timeout: float = 5.0,
                 sim_ready_timeout: float = 10.0, reset_timeout: float = 15.0) -> None:
        self._runner = runner
        self.registration_timeout = registration_timeout
        self.poll_interval = poll_interval
        self.max_timeouts = max_timeouts
        self.boot_timeout = boot_timeout
        self.command_timeout = command_timeout
        self.sim_ready_timeout = sim_ready_timeout
        self.reset_timeout = reset_timeout
        self._credentials: Credentials | None = None
        self._refused_pin: str | None = None
        self._sockets: dict[int, ModemSocket] = {}
        self._waiters: dict[tuple[str, int | None], asyncio.Future[list[int]]] = {}
        self._registration_changed = asyncio.Event()
        self._booted = asyncio.Event()
        self._timeouts = 0  # AT commands in a row without an answer
        self._resetting = False
        self._up = False
        self._context_cause: str | None = None  # why the data context must be re-activated
        self._restart_cause: str | None = None  # why the module must be brought up again
        self.recoveries: list[str] = []  # each recovery step with its cause, for the logs and tests
        self._background: set[asyncio.Task[None]] = set()
        # one recovery at a time: the one a URC starts, the one the next connection needs
        self._recovery_lock = asyncio.Lock()
        self._recovering: asyncio.Task[None] | None = None
        self._registration_state = "not_registered"  # the latest the module told
        handlers = {"+CREG:": self._on_registration, "+CEREG:": self._on_registration, "RDY": self._on_ready,
                    **self._urc_handlers()}
        self._unsubscribers = [runner.subscribe(prefix, self._guarded(handler))
                               for prefix, handler in handlers.items()]

    # --- dialect -------------------------------------------------------------------------

    @abstractmethod
    def _urc_handlers(self) -> dict[str, Callable[[str], None]]:
        """The dialect's URC prefixes and their handlers."""

    @abstractmethod
    async def _configure_context(self, credentials: Credentials) -> None:
        """Set the APN and its authentication."""

    @abstractmethod
    async def _activate(self) -> None:
        """Activate the data context (nothing when it is active already)."""

    @abstractmethod
    async def _deactivate(self) -> None:
        """Deactivate the data context (its sockets close with it)."""

    @abstractmethod
    async def _after_activate(self) -> None:
        """Settings the dialect needs once the context is active."""

    @abstractmethod
    async def _open(self, socket_id: int, host: str, port: int, timeout: float) -> None:
        """Open a TCP connection as `socket_id`; `SocketOpenError` if the module cannot."""

    @abstractmethod
    async def socket_send(self, socket_id: int, data: bytes) -> None: ...

    @abstractmethod
    async def socket_read(self, socket_id: int, size: int) -> tuple[bytes, bool]: ...

    @abstractmethod
    async def _close(self, socket_id: int, peer_closed: bool) -> None:
        """Close `socket_id` on the module (`peer_closed`: the network closed it already)."""

    # --- public API ----------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        """Brought up, with its data context active as far as the driver knows."""
        return self._up and self._context_cause is None and self._restart_cause is None

    async def bring_up(self, pin: str | None, apn: str, user: str = "", password: str = "") -> None:
        """From power-on to an active data context. `SimPinError`, `SimError`,
        `RegistrationDenied`, `NotRegistered`, `DataContextError`, `ModemTimeout`,
        `ModuleUnresponsive` or `ModemCommandError` when a step fails."""
        if pin is not None:
            check_pin(pin)
        check_at_string(apn, "APN")
        check_at_string(user, "APN user name")
        check_at_string(password, "APN password", secret=True)
        self._credentials = Credentials(pin, apn, user, password)

        async def bring() -> None:
            # a reset brings the module up with these credentials
            if self._timeouts >= self.max_timeouts:
                await self._reset(f"{self._timeouts} AT commands in a row got no answer")
                return
            try:
                async with self._recovery_lock:
                    await self._bring_up()
            except ModuleUnresponsive as exc:
                await self._reset(f"bring-up: {exc}")

        await self._translated("bring-up", bring)

    async def close(self) -> None:
        """Stop listening to the module's URCs and cancel a recovery in progress; open sockets
        are lost. The runner stays the caller's to close."""
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._unsubscribers.clear()
        self._lose_sockets("the driver was closed")
        self._up = False
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def status(self) -> ModemStatus:
        """Registration, signal, technology and operator, asked of the module now."""
        return await self._public("status", self._status)

    async def open_socket(self, host: str, port: int, timeout: float) -> ModemSocket:
        """A TCP connection to `host`:`port` through the module within `timeout` seconds, a
        lost registration waited for within them too (a reset or a new bring-up the module
        needs first has its own time limits). Every failure is a `SocketOpenError` (a
        `firmware.tls_stream.ConnectError`), with the module's error code when it gave one."""
        where = f"{host}:{port}"
        try:
            check_at_string(host, "host")
        except ModemConfigError as exc:
            raise SocketOpenError(f"cannot connect to {host!r}: {exc}") from None
        if not host or not 1 <= port <= 65535:
            raise SocketOpenError(f"cannot connect to {where}: no such host or port")

        async def opening() -> ModemSocket:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            await self._ready_for_data(timeout)
            return await self._open_socket(host, port, max(deadline - loop.time(), MIN_OPEN_TIME))

        try:
            return await self._public(f"connecting to {where}", opening)
        except SocketOpenError:
            raise
        except (ModemError, ModemSocketError) as exc:
            raise SocketOpenError(f"no connection to {where}: {exc}") from exc

    async def recover(self, cause: str = "asked by the application") -> None:
        """Re-activate the data context (after a registration loss or its deactivation by the
        network). Open sockets are lost."""

        async def recovery() -> None:
            async with self._recovery_lock:
                await self._recover(cause)

        await self._public("recovery", recovery)

    async def reset(self, cause: str = "asked by the application") -> None:
        """Restart the module (AT+CFUN=1,1), wait for it to start, and bring it up again with
        what `bring_up` was last given. Open sockets are lost."""
        await self._translated("reset", lambda: self._reset(cause))

    # --- operations ----------------------------------------------------------------------

    async def _public(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation`; reset the module first when it stopped answering, or when it stops
        during the operation (then run it again, once)."""

        async def supervised() -> T:
            if self._timeouts >= self.max_timeouts:
                await self._reset(f"{self._timeouts} AT commands in a row got no answer")
            try:
                return await operation()
            except ModuleUnresponsive as exc:
                await self._reset(f"{what}: {exc}")
                return await operation()

        return await self._translated(what, supervised)

    async def _translated(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """The AT layer's errors as the driver's."""
        try:
            return await operation()
        except AtTimeout as exc:
            raise ModemTimeout(f"{what}: the module did not answer ({exc})") from exc
        except AtCommandError as exc:
            raise ModemCommandError(what, *final_of(exc)) from exc
        except AtError as exc:
            raise ModemLinkError(f"{what}: {exc}") from exc

    async def _at(self, text: str, *, timeout: float | None = None, expect: str | None = None,
                  data: bytes | None = None) -> AtResponse:
        """One command; counts the ones in a row that get no answer."""
        try:
            response = await self._runner.command(text, timeout=timeout or self.command_timeout,
                                                  expect=expect, data=data)
        except AtTimeout:
            self._timeouts += 1
            if self._timeouts >= self.max_timeouts and not self._resetting:
                raise ModuleUnresponsive(f"{self._timeouts} AT commands in a row got no answer") from None
            raise
        except AtCommandError:
            self._timeouts = 0
            raise
        self._timeouts = 0
        return response

    async def _bring_up(self) -> None:
        credentials = self._credentials
        if credentials is None:
            raise ModemNotReady("the module was never brought up")
        self._up = False
        log.info("%s: bringing the module up (APN %s)", self.dialect, credentials.apn)
        await self._at("ATE0")
        try:
            # 27.007, 9.1: numeric +CME ERROR codes
            await self._at("AT+CMEE=1")
        except AtCommandError as exc:
            log.info("%s: AT+CMEE=1 refused (%s): errors come without codes", self.dialect, exc.final.result)
        await self._unlock_sim(credentials.pin)
        await self._registration_urcs()
        await self._wait_registered()
        await self._configure_context(credentials)
        await self._activate()
        await self._after_activate()
        self._context_cause = None
        self._restart_cause = None
        self._up = True
        log.info("%s: module up, data context active", self.dialect)

    async def _sim_code(self) -> str:
        """The `+CPIN?` answer (27.007, 8.3): "READY", "SIM PIN", "SIM PUK", ..."""
        deadline = asyncio.get_running_loop().time() + self.sim_ready_timeout
        while True:
            try:
                response = await self._at("AT+CPIN?", expect="+CPIN:")
            except AtCommandError as exc:
                result, code = final_of(exc)
                if code == CME_SIM_BUSY and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(self.poll_interval / 4)
                    continue
                if code == CME_SIM_NOT_INSERTED:
                    raise SimError("no SIM in the module", code=code) from None
                raise SimError(f"the SIM cannot be read ({result})", code=code) from None
            line = first_line(response, "+CPIN:")
            return line[len("+CPIN:"):].strip()

    async def _unlock_sim(self, pin: str | None) -> None:
        code = await self._sim_code()
        if code == "READY":
            return
        if code in ("SIM PUK", "SIM PUK2"):
            raise SimPinError("the SIM is blocked and needs its PUK", kind="puk")
        if code != "SIM PIN":
            raise SimError(f"the SIM is not ready: {code}")
        if pin is None:
            raise SimPinError("the SIM asks for its PIN and none is configured", kind="missing")
        if self._refused_pin is not None and hmac.compare_digest(self._refused_pin, pin):
            raise SimPinError("the SIM refused this PIN before; it is not tried again", kind="refused_before")
        log.info("%s: entering the SIM PIN", self.dialect)
        try:
            await self._at(f'AT+CPIN="{pin}"', timeout=max(self.command_timeout, 10.0))
        except AtCommandError as exc:
            self._refused_pin = pin
            _result, error = final_of(exc)
            log.error("%s: the SIM refused the PIN; it will not be entered again", self.dialect)
            raise SimPinError("the SIM refused the PIN", kind="wrong", code=error) from None
        except AtTimeout:
            # whether the SIM counted a try is unknown: never send this PIN again on our own
            self._refused_pin = pin
            if await self._sim_code() != "READY":
                raise SimPinError("the PIN was not confirmed", kind="unconfirmed") from None
        await self._wait_sim_ready()

    async def _wait_sim_ready(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.sim_ready_timeout
        while True:
            code = await self._sim_code()
            if code == "READY":
                return
            if code != "SIM PIN" and code.startswith("SIM PUK"):
                raise SimPinError("the SIM is blocked and needs its PUK", kind="puk")
            if asyncio.get_running_loop().time() >= deadline:
                raise SimError(f"the SIM is not ready {self.sim_ready_timeout} s after its PIN: {code}")
            await asyncio.sleep(self.poll_interval / 4)

    async def _registration_urcs(self) -> None:
        # 27.007, 7.2 / 10.1.22: <n>=2 gives the URC with location and <AcT>
        await self._at("AT+CREG=2")
        try:
            await self._at("AT+CEREG=2")
        except AtCommandError:
            log.info("%s: no AT+CEREG (no LTE): registration from AT+CREG only", self.dialect)

    async def _registration(self) -> Registration | None:
        answers: list[Registration] = []
        for command, prefix in (("AT+CEREG?", "+CEREG:"), ("AT+CREG?", "+CREG:")):
            try:
                response = await self._at(command, expect=prefix)
            except AtCommandError:
                continue
            answers.extend(parse_registration(line) for line in response.lines if line.startswith(prefix))
        best = best_registration(answers)
        self._registration_state = best.state if best is not None else "not_registered"
        return best

    async def _wait_registered(self, timeout: float | None = None) -> Registration:
        """Until registered, at most `timeout` seconds (`registration_timeout` by default)."""
        limit = self.registration_timeout if timeout is None else min(timeout, self.registration_timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            self._registration_changed.clear()
            current = await self._registration()
            state = current.state if current is not None else "not_registered"
            if current is not None and state in REGISTERED:
                log.info("%s: registered (%s)", self.dialect, state)
                return current
            if state == "denied":
                raise RegistrationDenied("the network denied the registration", state=state)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise NotRegistered(f"not registered after {limit:g} s (last: {state})", state=state)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._registration_changed.wait(), min(self.poll_interval, remaining))

    async def _status(self) -> ModemStatus:
        response = await self._at("AT+CSQ", expect="+CSQ:")
        rssi, _ber = parse_csq(first_line(response, "+CSQ:"))
        dbm = signal.rssi_to_dbm(rssi)
        registration = await self._registration()
        state = registration.state if registration is not None else "not_registered"
        operator = Operator(None, None)
        if state in REGISTERED:
            with contextlib.suppress(AtCommandError):
                cops = await self._at("AT+COPS?", expect="+COPS:")
                operator = parse_cops(first_line(cops, "+COPS:"))
        act = operator.act if operator.act is not None else registration.act if registration else None
        return ModemStatus(registered=state, rssi_dbm=dbm, bars=signal.bars(dbm),
                           technology=signal.technology(act) if state in REGISTERED else None,
                           operator=operator.name)

    async def _ready_for_data(self, registration_wait: float | None = None) -> None:
        """Bring the module up again or re-activate the context when an event asked for it; a
        registration lost is waited for at most `registration_wait` seconds."""
        if self._credentials is None:
            raise ModemNotReady("the module was never brought up")
        async with self._recovery_lock:
            if self._restart_cause is not None:
                self._step(f"bringing the module up again: {self._restart_cause}")
                await self._bring_up()
            elif not self._up:
                self._step("bringing the module up again: its last bring-up did not finish")
                await self._bring_up()
            elif self._context_cause is not None:
                await self._recover(self._context_cause, registration_wait)

    async def _open_socket(self, host: str, port: int, timeout: float) -> ModemSocket:
        free = [i for i in self.socket_ids if i not in self._sockets]
        if not free:
            raise SocketOpenError(f"all {len(self.socket_ids)} sockets of the module are in use")
        socket_id = free[0]
        sock = ModemSocket(self, socket_id, max_send=self.max_send, max_read=self.max_read,
                           peer=f"{host}:{port}")
        self._sockets[socket_id] = sock
        try:
            await self._open(socket_id, host, port, timeout)
        except BaseException:
            self._sockets.pop(socket_id, None)
            raise
        log.info("%s: socket %d connected to %s:%d", self.dialect, socket_id, host, port)
        return sock

    async def socket_close(self, socket_id: int) -> None:
        sock = self._sockets.pop(socket_id, None)
        if sock is None:
            return
        await self._close(socket_id, sock.peer_has_closed)

    async def _recover(self, cause: str, registration_wait: float | None = None) -> None:
        if self._credentials is None:
            raise ModemNotReady("the module was never brought up")
        self._step(f"re-activating the data context: {cause}")
        self._lose_sockets(f"the data context is re-activated ({cause})")
        await self._wait_registered(registration_wait)
        self._step(f"deactivating the data context ({cause})")
        try:
            await self._deactivate()
        except (AtCommandError, DataContextError) as exc:
            log.warning("%s: deactivation refused (%s); activating anyway", self.dialect, exc)
        self._step(f"activating the data context ({cause})")
        await self._activate()
        await self._after_activate()
        self._context_cause = None
        self._up = True

    async def _reset(self, cause: str) -> None:
        async with self._recovery_lock:
            await self._restart(cause)

    async def _restart(self, cause: str) -> None:
        self._step(f"resetting the module (AT+CFUN=1,1): {cause}")
        self._lose_sockets(f"the module is reset ({cause})")
        self._up = False
        self._resetting = True
        try:
            self._booted.clear()
            try:
                # 27.007, 8.2: <fun>=1 with <rst>=1 resets the MT first
                await self._at("AT+CFUN=1,1", timeout=self.reset_timeout)
            except (AtTimeout, AtCommandError, ModuleUnresponsive) as exc:
                log.warning("%s: AT+CFUN=1,1 not acknowledged (%s); waiting for the start anyway",
                            self.dialect, type(exc).__name__)
            try:
                await asyncio.wait_for(self._booted.wait(), self.boot_timeout)
            except TimeoutError:
                raise ModuleUnresponsive(f"the module did not start within {self.boot_timeout} s of "
                                         "AT+CFUN=1,1 (it needs a power cycle)") from None
            self._step("the module started again (RDY)")
            await self._wait_answering()
            self._timeouts = 0
        finally:
            self._resetting = False
        self._restart_cause = None
        if self._credentials is not None:
            self._step(f"bringing the module up again after the reset ({cause})")
            await self._bring_up()

    async def _wait_answering(self, attempts: int = 10) -> None:
        for _ in range(attempts):
            try:
                await self._at("AT", timeout=self.command_timeout)
            except (AtTimeout, AtCommandError):
                continue
            return
        raise ModuleUnresponsive(f"the module started but answered none of {attempts} AT commands")

    # --- URCs ----------------------------------------------------------------------------

    def _guarded(self, handler: Callable[[str], None]) -> Callable[[str], None]:
        def guarded(line: str) -> None:
            try:
                handler(line)
            except ModemResponseError as exc:
                log.warning("%s: unreadable URC: %s", self.dialect, exc)
        return guarded

    def _on_registration(self, line: str) -> None:
        registration = parse_registration(line)
        self._registration_state = registration.state
        if self._up and registration.state not in REGISTERED and self._context_cause is None:
            self._context_cause = f"registration lost ({registration.state}, {line.split(':')[0]})"
            self._step(f"{self._context_cause}: the data context is re-activated once registered again")
        elif registration.state in REGISTERED and self._context_cause is not None:
            self._recover_soon(f"registered again ({registration.state})")
        self._registration_changed.set()

    def _on_ready(self, line: str) -> None:
        if line.strip() != "RDY":
            return
        self._booted.set()
        if self._resetting:
            return
        self._restart_cause = "the module restarted by itself (RDY)"
        self._up = False
        self._step(self._restart_cause)
        self._lose_sockets(self._restart_cause)
        self._recover_soon("the module started")

    def _recover_soon(self, why: str) -> None:
        """Recover now in the background rather than at the next connection, so that the link
        manager's health check sees the link come back. A failure is logged; the next
        `open_socket` tries again."""
        if self._credentials is None or self._resetting:
            return
        if self._recovering is not None and not self._recovering.done():
            return

        async def recovery() -> None:
            try:
                await self._ready_for_data()
            except (ModemError, AtError, ModemSocketError) as exc:
                log.warning("%s: recovery (%s) failed: %s; tried again before the next connection",
                            self.dialect, why, exc)

        self._recovering = asyncio.get_running_loop().create_task(recovery())
        self._background.add(self._recovering)
        self._recovering.add_done_callback(self._background.discard)

    def _context_lost(self, cause: str) -> None:
        """The network deactivated the data context: sockets are gone, re-activate before the
        next connection."""
        if self._context_cause is None:
            self._context_cause = cause
        self._step(f"data context lost: {cause}")
        self._lose_sockets(f"the data context was lost ({cause})")
        if self._registration_state in REGISTERED:
            self._recover_soon("the network took the data context down")

    def _lose_sockets(self, reason: str) -> None:
        sockets, self._sockets = self._sockets, {}
        for sock in sockets.values():
            sock.lost(reason)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(ModemSocketError(reason))

    def _socket(self, socket_id: int) -> ModemSocket | None:
        return self._sockets.get(socket_id)

    def _expect(self, key: tuple[str, int | None]) -> asyncio.Future[list[int]]:
        """A future for the URC that completes a command (`+QIOPEN`, `+CIPSEND`, ...)."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._waiters[key] = future
        return future

    def _forget(self, key: tuple[str, int | None]) -> None:
        """Stop waiting for the URC of `key` (its outcome, if any, is no longer wanted)."""
        future = self._waiters.pop(key, None)
        if future is not None and future.done() and not future.cancelled():
            future.exception()

    def _resolve(self, key: tuple[str, int | None], values: list[int]) -> bool:
        future = self._waiters.pop(key, None)
        if future is None or future.done():
            return False
        future.set_result(values)
        return True

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        """Run a clean-up command a URC asked for, after the URC's handler returned."""
        task = asyncio.get_running_loop().create_task(coroutine)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _step(self, message: str) -> None:
        self.recoveries.append(message)
        log.warning("%s: %s", self.dialect, message)

    def __repr__(self) -> str:
        state = "up" if self._up else "down"
        return f"{type(self).__name__}({state}, {len(self._sockets)} sockets)"


def first_line(response: AtResponse, prefix: str) -> str:
    """The first information line of `response` that starts with `prefix`."""
    for line in response.lines:
        if line.startswith(prefix):
            return line
    raise ModemResponseError(f"no {prefix} line in the answer", " | ".join(response.lines))
