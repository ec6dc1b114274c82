"""Which way the terminal reaches its acquirer: the OS network (Wi-Fi/Ethernet) first, the
cellular module as backup, each health-checked; failover and failback announced with their cause.

`LinkManager.connect` is what the host client's `connect` calls, so TLS runs over whichever link
is current (over a modem socket, the module only carries ciphertext). The manager never blocks a
sale waiting for a link that is down: a failed open moves to the next link at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from firmware.tls_stream import ByteStream, ConnectError, StreamError, open_tcp

log = logging.getLogger(__name__)


class LinkDown(ConnectError):
    """No link can reach the acquirer now; `causes` says why, per link. A `ConnectError`, so
    the host client treats it as "not sent" (or "reversal still owed"), never as a crash."""

    def __init__(self, causes: dict[str, str]) -> None:
        self.causes = causes
        super().__init__("; ".join(f"{name}: {cause}" for name, cause in causes.items()) or "no link")


class Link(Protocol):
    name: str

    async def open(self, host: str, port: int, timeout: float) -> ByteStream: ...

    async def probe(self, host: str, port: int, timeout: float) -> str | None:
        """None when the link can reach host:port now, else why not."""
        ...

    def details(self) -> dict[str, Any]:
        """What the UI and telemetry show of it (signal, operator, technology)."""
        ...


class OsNetworkLink:
    """Wi-Fi or Ethernet through the operating system's routes."""

    def __init__(self, name: str = "network") -> None:
        self.name = name

    async def open(self, host: str, port: int, timeout: float) -> ByteStream:
        return await open_tcp(host, port, timeout)

    async def probe(self, host: str, port: int, timeout: float) -> str | None:
        try:
            stream = await open_tcp(host, port, timeout)
        except StreamError as exc:
            return str(exc) or type(exc).__name__
        with contextlib.suppress(StreamError):
            await stream.close()
        return None

    def details(self) -> dict[str, Any]:
        return {}


class CellularLink:
    """The 3G/4G module (`modem.module.Module`): a socket over AT commands, the module's status
    (registration, signal, technology, operator) as its health and details."""

    def __init__(self, module: Any, name: str = "cellular") -> None:
        self.name = name
        self.module = module
        self._status: Any = None

    async def open(self, host: str, port: int, timeout: float) -> ByteStream:
        stream: ByteStream = await self.module.open_socket(host, port, timeout)
        return stream

    async def probe(self, host: str, port: int, timeout: float) -> str | None:
        try:
            self._status = await asyncio.wait_for(self.module.status(), timeout)
        except Exception as exc:  # any driver failure (AT timeout, port closed) is "down"
            return f"{type(exc).__name__}: {exc}"
        if self._status.registered not in ("home", "roaming"):
            return f"not registered ({self._status.registered})"
        if not self.module.is_up:
            return "data context not active"
        return None

    def details(self) -> dict[str, Any]:
        status = self._status
        if status is None:
            return {}
        return {"registered": status.registered, "signal_dbm": status.rssi_dbm, "bars": status.bars,
                "technology": status.technology, "operator": status.operator}


@dataclass(frozen=True)
class LinkEvent:
    kind: str  # "failover", "failback", "down", "up"
    link: str | None  # the link in use after the event
    previous: str | None
    cause: str
    at: datetime.datetime


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class _State:
    cause: str | None = None  # why the link is down; None when it answered last time
    checked: datetime.datetime | None = None


MAX_EVENTS = 100  # link changes kept in `LinkManager.events`

@dataclass
class LinkManager:
    """`links` in order of preference (the OS network first, cellular last)."""

    links: Sequence[Link]
    host: str
    port: int
    timeout: float = 10.0
    check_interval: float = 30.0
    clock: Callable[[], datetime.datetime] = _now
    current: Link | None = None
    # the last link changes (a flapping Wi-Fi in a taxi makes thousands a day): a bounded record
    events: deque[LinkEvent] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    announced: int = 0  # link changes since start, kept or not
    _subscribers: list[Callable[[LinkEvent], None]] = field(default_factory=list)
    _states: dict[str, _State] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.links:
            raise ValueError("a link manager needs at least one link")
        self._states = {link.name: _State() for link in self.links}

    def subscribe(self, callback: Callable[[LinkEvent], None]) -> None:
        self._subscribers.append(callback)

    def _announce(self, kind: str, link: Link | None, previous: Link | None, cause: str) -> None:
        event = LinkEvent(kind, link.name if link else None, previous.name if previous else None, cause,
                          self.clock())
        self.events.append(event)
        self.announced += 1
        log.info("link %s: %s -> %s (%s)", kind, event.previous, event.link, cause)
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:  # a subscriber's bug must not take the link down
                log.exception("link event subscriber failed")

    def _switch(self, link: Link | None, cause: str) -> None:
        previous = self.current
        if link is previous:
            return
        self.current = link
        if link is None:
            kind = "down"
        elif previous is None:
            kind = "up"
        elif self.links.index(link) < self.links.index(previous):
            kind = "failback"
        else:
            kind = "failover"
        self._announce(kind, link, previous, cause)

    async def _attempt(self, link: Link, action: Callable[[Link], Awaitable[Any]]) -> tuple[Any, str | None]:
        state = self._states[link.name]
        state.checked = self.clock()
        try:
            result = await action(link)
        except (TimeoutError, StreamError, OSError) as exc:
            state.cause = f"{type(exc).__name__}: {exc}"
            return None, state.cause
        except Exception as exc:  # a driver error (modem, AT) is a link failure, not a crash
            state.cause = f"{type(exc).__name__}: {exc}"
            return None, state.cause
        state.cause = None
        return result, None

    async def connect(self) -> ByteStream:
        """A byte stream to the acquirer over the best link that opens now."""
        causes: dict[str, str] = {}
        order = list(self.links)
        if self.current is not None:  # the current one first, then by preference
            order.remove(self.current)
            order.insert(0, self.current)
        for link in order:
            stream, cause = await self._attempt(link, lambda k: k.open(self.host, self.port, self.timeout))
            if cause is None:
                self._switch(link, causes.get(self.current.name, "link opened") if self.current
                             else "link opened")
                return stream
            causes[link.name] = cause
        self._switch(None, "; ".join(f"{name}: {cause}" for name, cause in causes.items()))
        raise LinkDown(causes)

    async def check(self) -> None:
        """One health pass: fail over when the current link fails its probe, fail back when a
        more preferred link answers again."""
        for link in self.links:
            _, cause = await self._attempt(link, self._probe)
            if cause is None:
                if link is not self.current:
                    reason = ("preferred link answers again" if self.current is not None
                              else "link answers")
                    if self.current is not None and self._states[self.current.name].cause:
                        reason = self._states[self.current.name].cause or reason
                    self._switch(link, reason)
                return
        self._switch(None, "; ".join(f"{k}: {s.cause}" for k, s in self._states.items() if s.cause))

    async def _probe(self, link: Link) -> None:
        cause = await link.probe(self.host, self.port, self.timeout)
        if cause is not None:
            raise StreamError(cause)

    async def run(self) -> None:
        """Health checks every `check_interval` seconds until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self.check_interval)

    def snapshot(self) -> dict[str, Any]:
        """The current route and what the UI and telemetry show of it."""
        last = self.events[-1] if self.events else None
        return {
            "route": self.current.name if self.current else None,
            "details": self.current.details() if self.current else {},
            "links": {name: {"up": state.cause is None and state.checked is not None, "cause": state.cause}
                      for name, state in self._states.items()},
            "last_event": None if last is None else {
                "kind": last.kind, "link": last.link, "previous": last.previous, "cause": last.cause,
                "at": last.at.isoformat()},
        }
