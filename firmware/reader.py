"""PC/SC card reader adapter (pyscard's `smartcard.scard`, PC/SC part 5 / pcsc-lite API).

`PcscReader` makes blocking calls; `AsyncReader` runs them in one worker thread so the event
loop never blocks (ARCHITECTURE principle 5). Card insertion and removal are waited for with
SCardGetStatusChange, which sleeps in pcscd until something changes: no polling here.
Every PC/SC failure becomes a `ReaderError` subclass; data crosses this boundary as `bytes`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from smartcard import scard

log = logging.getLogger(__name__)

Protocol = Literal["T=0", "T=1", "any"]
_PROTOCOLS = {"T=0": scard.SCARD_PROTOCOL_T0, "T=1": scard.SCARD_PROTOCOL_T1,
              "any": scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1}
# Waits are cut into slices so `close()` from another thread is noticed (SCardCancel also works).
_WAIT_SLICE_MS = 1000


class ReaderError(Exception):
    """A PC/SC operation failed."""

    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(message if code is None else f"{message} ({_describe(code)})")


class NoServiceError(ReaderError):
    """pcscd is not running or not reachable."""


class NoReaderError(ReaderError):
    """No reader, or not the one asked for."""


class CardAbsentError(ReaderError):
    """No card in the reader, or it was pulled (during an exchange or between two)."""


class CardTimeoutError(ReaderError):
    """Nothing happened within the wait's time limit."""


def _describe(code: int) -> str:
    try:
        return f"{scard.SCardGetErrorMessage(code).strip()}, 0x{code & 0xFFFFFFFF:08X}"
    except Exception:  # pyscard may not know vendor codes
        return f"0x{code & 0xFFFFFFFF:08X}"


_ABSENT = {scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_RESET_CARD,
           scard.SCARD_W_UNPOWERED_CARD, scard.SCARD_W_UNRESPONSIVE_CARD,
           scard.SCARD_E_NOT_TRANSACTED}
_NO_READER = {scard.SCARD_E_UNKNOWN_READER, scard.SCARD_E_READER_UNAVAILABLE,
              scard.SCARD_E_NO_READERS_AVAILABLE}
_NO_SERVICE = {scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED}


def _check(code: int, what: str) -> None:
    if code == scard.SCARD_S_SUCCESS:
        return
    if code in _ABSENT:
        raise CardAbsentError(f"{what}: card absent or removed", code)
    if code in _NO_READER:
        raise NoReaderError(f"{what}: reader unavailable", code)
    if code in _NO_SERVICE:
        raise NoServiceError(f"{what}: pcscd not running", code)
    if code == scard.SCARD_E_TIMEOUT:
        raise CardTimeoutError(f"{what}: timed out", code)
    raise ReaderError(f"{what} failed", code)


@dataclass
class CardSession:
    """A connected card: raw transmit only; the T=0/T=1 APDU rules live in `emv.transport`."""

    reader: str
    atr: bytes
    protocol: Literal["T=0", "T=1"]
    _handle: int
    _owner: PcscReader

    def transmit(self, tpdu: bytes) -> bytes:
        pci = scard.SCARD_PCI_T0 if self.protocol == "T=0" else scard.SCARD_PCI_T1
        code, response = scard.SCardTransmit(self._handle, pci, list(tpdu))
        _check(code, "SCardTransmit")
        if len(response) < 2:
            # vsmartcard's vpcd (and some USB readers) report a card pulled mid-command as a
            # success with no data; every R-APDU has at least SW1 SW2 (ISO 7816-4, 5.1).
            raise CardAbsentError(f"SCardTransmit: {len(response)}-byte answer without status word, "
                                  "card pulled or mute")
        return bytes(response)

    def disconnect(self, disposition: int = scard.SCARD_UNPOWER_CARD) -> None:
        if self._handle:
            code = scard.SCardDisconnect(self._handle, disposition)
            self._handle = 0
            if code not in (scard.SCARD_S_SUCCESS, *_ABSENT, *_NO_READER):
                log.warning("SCardDisconnect: %s", _describe(code))


class PcscReader:
    """Blocking PC/SC access; call from one thread at a time (AsyncReader does that)."""

    def __init__(self) -> None:
        code, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        _check(code, "SCardEstablishContext")
        self._context = context
        self._closed = threading.Event()

    def cancel(self) -> None:
        """Wake a wait in progress (any thread): SCardCancel, PC/SC part 5."""
        self._closed.set()
        scard.SCardCancel(self._context)

    def close(self) -> None:
        """Release the context; call from the thread that uses the reader."""
        self._closed.set()
        scard.SCardReleaseContext(self._context)

    def readers(self) -> list[str]:
        code, names = scard.SCardListReaders(self._context, [])
        if code in (scard.SCARD_E_NO_READERS_AVAILABLE,):
            return []
        _check(code, "SCardListReaders")
        return list(names)

    def pick(self, name: str | None) -> str:
        """The reader called `name` (exact, else the first whose name starts with it), or the first."""
        names = self.readers()
        if not names:
            raise NoReaderError("no PC/SC reader found")
        if name is None:
            return names[0]
        for candidate in names:
            if candidate == name:
                return candidate
        for candidate in names:
            if candidate.startswith(name):
                return candidate
        raise NoReaderError(f"no reader named {name!r}; readers: {', '.join(names)}")

    def card_present(self, reader: str) -> bool:
        return bool(self._state(reader, scard.SCARD_STATE_UNAWARE, 0) & scard.SCARD_STATE_PRESENT)

    def wait_for_card(self, reader: str, timeout: float | None = None) -> None:
        """Block until a card is in `reader` (returns at once if one already is)."""
        self._wait(reader, lambda state: bool(state & scard.SCARD_STATE_PRESENT), timeout, "insertion")

    def wait_for_removal(self, reader: str, timeout: float | None = None) -> None:
        self._wait(reader, lambda state: not state & scard.SCARD_STATE_PRESENT, timeout, "removal")

    def _state(self, reader: str, known: int, timeout_ms: int) -> int:
        code, states = scard.SCardGetStatusChange(self._context, timeout_ms, [(reader, known)])
        _check(code, "SCardGetStatusChange")
        _, event_state, _ = states[0]
        if event_state & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_IGNORE):
            raise NoReaderError(f"reader {reader!r} is gone")
        return int(event_state)

    def _wait(self, reader: str, done: Callable[[int], bool], timeout: float | None,
              what: str) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        state = self._state(reader, scard.SCARD_STATE_UNAWARE, 0)
        while not done(state):
            if self._closed.is_set():
                raise ReaderError(f"reader closed while waiting for card {what}")
            left_ms = _WAIT_SLICE_MS
            if deadline is not None:
                left_ms = min(left_ms, int((deadline - time.monotonic()) * 1000))
                if left_ms <= 0:
                    raise CardTimeoutError(f"no card {what} in {timeout:.1f} s")
            try:
                state = self._state(reader, state & ~scard.SCARD_STATE_CHANGED, left_ms)
            except CardTimeoutError:
                continue

    def connect_when_ready(self, reader: str, timeout: float | None = None,
                           protocol: Protocol = "any") -> CardSession:
        """Wait for a card and connect; a card seen present but gone (pulled, or a reader state
        not yet updated after a swap) is waited for again until `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.wait_for_card(reader, left)
            try:
                return self.connect(reader, protocol)
            except CardAbsentError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                state = self._state(reader, scard.SCARD_STATE_UNAWARE, 0)
                with contextlib.suppress(CardTimeoutError):
                    self._state(reader, state & ~scard.SCARD_STATE_CHANGED, _WAIT_SLICE_MS)

    def connect(self, reader: str, protocol: Protocol = "any") -> CardSession:
        code, handle, active = scard.SCardConnect(
            self._context, reader, scard.SCARD_SHARE_EXCLUSIVE, _PROTOCOLS[protocol])
        _check(code, f"SCardConnect to {reader!r}")
        code, _name, _state, _proto, atr = scard.SCardStatus(handle)
        _check(code, "SCardStatus")
        active_name: Literal["T=0", "T=1"] = "T=0" if active == scard.SCARD_PROTOCOL_T0 else "T=1"
        return CardSession(reader, bytes(atr), active_name, handle, self)


T = TypeVar("T")


class AsyncReader:
    """Runs a `PcscReader` in one worker thread and awaits its results from the event loop."""

    def __init__(self, factory: Callable[[], PcscReader] = PcscReader) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                               thread_name_prefix="pcsc")
        self._reader: PcscReader = self._executor.submit(factory).result()

    async def run(self, call: Callable[[PcscReader], T], timeout: float | None = None) -> T:
        """Run `call(reader)` in the worker; a hung driver gives CardTimeoutError, not a hang."""
        future = asyncio.get_running_loop().run_in_executor(self._executor, call, self._reader)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise CardTimeoutError(f"reader did not answer in {timeout} s") from None

    async def readers(self) -> list[str]:
        return await self.run(lambda r: r.readers())

    async def wait_for_card(self, reader: str, timeout: float | None = None) -> None:
        await self.run(lambda r: r.wait_for_card(reader, timeout))

    async def wait_for_removal(self, reader: str, timeout: float | None = None) -> None:
        await self.run(lambda r: r.wait_for_removal(reader, timeout))

    async def connect(self, reader: str, protocol: Protocol = "any") -> CardSession:
        return await self.run(lambda r: r.connect(reader, protocol))

    async def transmit(self, session: CardSession, tpdu: bytes, timeout: float = 30.0) -> bytes:
        return await self.run(lambda _r: session.transmit(tpdu), timeout)

    def close(self) -> None:
        self._reader.cancel()
        self._executor.submit(self._reader.close)
        self._executor.shutdown(wait=True, cancel_futures=False)
