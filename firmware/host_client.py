"""The terminal's client of its acquirer host (docs/host-protocol.md).

ISO 8583 messages (`firmware.messages`) MACed under AES DUKPT keys (`firmware.terminal_keys`),
framed (`firmware.framing`) over TLS with the host's CA pinned and the terminal's certificate
(`firmware.tls_stream`), over TCP or any other byte stream given as `connect`. The connection
stays open between transactions and is opened again when it drops.

What the outside world may observe is preceded by a commit (ARCHITECTURE principle 4): the STAN
before a request leaves, the DUKPT registers before a key is used, and, when a request went out
and no valid answer came back, the reversal owed before anything else. Reversals are sent before
the next request, 0400 first and 0401 after, until the host answers 0410.

`BlockingAuthorizer` adapts the client to the kernel driver's synchronous `Authorizer`: the
client runs on an event loop in another thread (`EventLoopThread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from emv.outcome import Outcome, OutcomeKind
from emv.requests import OnlineRequest, OnlineResponse
from firmware import messages
from firmware.config import HostConfig
from firmware.framing import FrameError
from firmware.host_store import HostStore, HostStoreError, Reversal
from firmware.iso8583_spec import RESPONSE_OF
from firmware.messages import Acceptor, Fields, MacError, MessageError, NetworkCode, ReversalReason
from firmware.terminal_keys import KeySet, TerminalKeys, TerminalKeysError
from firmware.tls_stream import (
    ByteStream,
    FramedConnection,
    StreamError,
    StreamTimeout,
    TlsError,
    TlsStream,
    client_context,
    open_tcp,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
ConnectFunction = Callable[[], Awaitable[ByteStream]]

# 0410 codes after which a reversal is done: '00', and '94' (the host already had it).
REVERSAL_DONE = frozenset({"00", "94"})
# Frames kept while nobody waits for them (late answers); older ones are dropped.
MAX_QUEUED_FRAMES = 32
# How long the idle reader waits before it simply reads again.
IDLE_READ = 3600.0

# Keys a stored reversal holds besides `messages.identity(original)`: the 0400's own STAN,
# transmission time and reason, so that a 0401 repeats the 0400 exactly (docs/host-protocol.md,
# Messages), and the response's 37/38 and the card's field 55 when the 0400 carries them.
_STAN = "reversal_stan"
_AT = "reversal_at"
_REASON = "reversal_reason"
_RESPONSE = ("response_37", "response_38")
_ICC = "reversal_55"


class HostClientError(Exception):
    """The client cannot go on: TLS material that does not load, a state that cannot be saved."""


class HostUnavailable(HostClientError):
    """No link to the host, or no valid answer in time (for `echo`)."""


@dataclass(frozen=True)
class ReversalReport:
    """One attempt to send a reversal."""

    original_stan: str  # field 11 of the reversed request
    reason: str  # field 39 of the 0400 (ReversalReason)
    mti: str  # "0400", or "0401" for a repeat
    acknowledged: bool  # the host answered and the reversal left the queue
    response_code: str | None = None  # field 39 of the 0410
    problem: str | None = None  # why it is still owed


@dataclass
class AuthorizationReport:
    """What happened to the last authorization, for the sale's output and the logs."""

    stan: int | None = None
    response_code: str | None = None  # field 39 of the 0210
    rrn: str | None = None  # field 37
    approved: bool = False
    problem: str | None = None  # why the kernel was told "unable to go online"
    reversals: list[ReversalReport] = field(default_factory=list)


class _NoAnswer(Exception):
    def __init__(self, reason: ReversalReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).astimezone()


class _Link:
    """One framed TLS connection and the task reading it: frames wait in a queue, and a link the
    peer closed is known before the next request is sent on it."""

    def __init__(self, connection: FramedConnection) -> None:
        self._connection = connection
        self._frames: asyncio.Queue[bytes | StreamError] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self.broken: StreamError | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                frame = await self._connection.receive(IDLE_READ)
            except StreamTimeout:
                continue
            except StreamError as exc:
                self.broken = exc
                self._push(exc)
                return
            self._push(frame)

    def _push(self, item: bytes | StreamError) -> None:
        if self._frames.full():
            self._frames.get_nowait()
            log.warning("host link: too many frames nobody waits for; the oldest was dropped")
        self._frames.put_nowait(item)

    def discard_stale(self) -> None:
        """Drop frames that arrived while no request was waiting (answers given up on)."""
        while not self._frames.empty():
            item = self._frames.get_nowait()
            if isinstance(item, StreamError):
                self._frames.put_nowait(item)
                return
            log.info("host link: a late frame of %d bytes was dropped", len(item))

    async def send(self, data: bytes) -> None:
        if self.broken is not None:
            raise self.broken
        await self._connection.send(data)

    async def next_frame(self, deadline: float) -> bytes | None:
        """The next frame, or None once the loop clock reaches `deadline`; the link's error when
        it broke."""
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            if remaining > 0:
                item = await asyncio.wait_for(self._frames.get(), remaining)
            else:
                item = self._frames.get_nowait()
        except (TimeoutError, asyncio.QueueEmpty):
            return None
        if isinstance(item, StreamError):
            self._frames.put_nowait(item)  # every later wait sees it too
            raise item
        return item

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._connection.close()


class HostClient:
    """The acquirer link of one terminal. Use from one event loop; calls are serialized."""

    def __init__(self, config: HostConfig, store: HostStore, keys: TerminalKeys, acceptor: Acceptor,
                 connect: ConnectFunction | None = None, *,
                 clock: Callable[[], datetime.datetime] = _now) -> None:
        self.config = config
        self._store = store
        self._keys = keys
        self._acceptor = acceptor
        self._connect = connect or self._tcp
        self._clock = clock
        try:
            self._context = client_context(config.ca_file, config.cert_file, config.key_file)
        except TlsError as exc:
            raise HostClientError(str(exc)) from exc
        self._link: _Link | None = None
        self._lock = asyncio.Lock()
        self._approved: tuple[Fields, Fields] | None = None  # the last approved request, its answer
        self.links_opened = 0  # TLS handshakes completed
        self.last: AuthorizationReport | None = None

    @property
    def label(self) -> str:
        return f"acquirer host {self.config.address}:{self.config.port}"

    def __repr__(self) -> str:
        return f"HostClient({self.label}, terminal {self._acceptor.terminal_id})"

    # --- the link ---------------------------------------------------------------------------

    async def _tcp(self) -> ByteStream:
        return await open_tcp(self.config.address, self.config.port, self.config.timeout)

    async def _link_up(self) -> _Link:
        """The open link, or a new one when there is none or it broke (StreamError if that fails)."""
        if self._link is not None and self._link.broken is None:
            return self._link
        if self._link is not None:
            log.info("host link: %s; connecting again", self._link.broken)
            await self._drop()
        raw = await self._connect()
        tls = await TlsStream.connect(raw, self._context, self.config.server_name, self.config.timeout)
        self._link = _Link(FramedConnection(tls, self.config.max_frame))
        self.links_opened += 1
        log.info("host link: connected to %s (%s, %s)", self.label, tls.version, tls.cipher)
        return self._link

    async def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(StreamError):
                await link.close()

    async def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        async with self._lock:
            await self._drop()

    # --- keys and state ---------------------------------------------------------------------

    def _begin(self) -> KeySet:
        try:
            return self._keys.begin()
        except TerminalKeysError as exc:
            raise HostClientError(f"no DUKPT key for the message: {exc}") from exc

    def _next_stan(self) -> int:
        try:
            return self._store.next_stan()
        except HostStoreError as exc:
            raise HostClientError(f"no STAN: {exc}") from exc

    def _pin_keys(self, request: OnlineRequest) -> KeySet | None:
        """The KeySet whose PIN key enciphered the request's PIN block: its MAC uses the same KSN."""
        if request.pin_block is None:
            return None
        try:
            keys = self._keys.current()
        except TerminalKeysError as exc:
            raise HostClientError("a PIN block without the DUKPT keys it was made with") from exc
        if request.pin_key_serial != keys.ksn:
            raise HostClientError("the PIN block's KSN is not the transaction in progress")
        return keys

    def _owe_reversal(self, original: Mapping[str, str], reason: ReversalReason, *,
                      response: Mapping[str, str] | None = None, icc_data: bytes | None = None) -> Reversal:
        """Commit the reversal of `original` to the store; nothing is sent before this returns."""
        at = self._clock()
        entry: dict[str, str | int] = {**messages.identity(original), _REASON: reason.value,
                                       _AT: at.isoformat()}
        if response is not None:
            entry.update({key: response[key[-2:]] for key in _RESPONSE if key[-2:] in response})
        if icc_data is not None:
            entry[_ICC] = icc_data.hex().upper()
        try:
            entry[_STAN] = self._store.next_stan()
            reversal = self._store.record_reversal(entry, at.isoformat())
        except HostStoreError as exc:
            log.critical("host link: the reversal of STAN %s could NOT be recorded: %s", original["11"], exc)
            raise HostClientError(f"the reversal could not be recorded: {exc}") from exc
        log.warning("host link: reversal of STAN %s owed (reason %s)", original["11"], reason.value)
        return reversal

    # --- exchanges --------------------------------------------------------------------------

    async def _answer(self, link: _Link, request: Fields, keys: KeySet) -> Fields:
        """The host's verified answer to `request`. Frames that answer something else are
        logged and ignored; an answer whose MAC fails is ignored too (it counts as no answer,
        docs/host-protocol.md, MAC). `_NoAnswer` at the deadline or when the link breaks."""
        deadline = asyncio.get_running_loop().time() + self.config.timeout
        mac_failed = False

        def no_answer(detail: str) -> _NoAnswer:
            reason = ReversalReason.MAC_FAILURE if mac_failed else ReversalReason.NO_RESPONSE
            return _NoAnswer(reason, detail + (" (an answer failed its MAC check)" if mac_failed else ""))

        while True:
            try:
                frame = await link.next_frame(deadline)
            except StreamError as exc:
                raise no_answer(f"the link broke: {exc}") from exc
            if frame is None:
                raise no_answer(f"no answer within {self.config.timeout:g} s")
            try:
                candidate = messages.unpack(frame)
            except MessageError as exc:
                log.warning("host link: an unreadable frame was ignored: %s", exc)
                continue
            if not messages.is_response_to(request, candidate):
                log.info("host link: a %s for STAN %s answers no request in progress; ignored",
                         candidate.get("t"), candidate.get("11"))
                continue
            if messages.key_serial(candidate) != keys.ksn:
                mac_failed = True
                log.warning("host link: the %s for STAN %s names another KSN; ignored", candidate["t"],
                            candidate["11"])
                continue
            try:
                return messages.verify_mac(frame, keys.response_mac)
            except MacError:
                mac_failed = True
                log.warning("host link: the %s for STAN %s failed its MAC check; ignored", candidate["t"],
                            candidate["11"])

    async def _exchange(self, fields: Fields, keys: KeySet) -> Fields:
        """Send `fields` MACed under `keys` and wait for the answer. `MessageError`,
        `FrameError` (too large) or `StreamError` (no link) when nothing was sent; `_NoAnswer`
        once the message may have left."""
        data = messages.attach_mac(fields, keys.request_mac, ksn=keys.ksn)
        link = await self._link_up()
        link.discard_stale()
        try:
            await link.send(data)
        except StreamError as exc:
            # part of it may have left: as good as sent
            raise _NoAnswer(ReversalReason.NO_RESPONSE, f"the link broke while sending: {exc}") from exc
        return await self._answer(link, fields, keys)

    async def authorize(self, request: OnlineRequest, *, at: datetime.datetime) -> OnlineResponse:
        """A financial request (0200) for the kernel's ARQC, after the reversals owed.

        Unable to go online (EMV 4.4 Book 3, 10.9) when the request cannot be sent, or when it
        was sent and no valid answer came: then the reversal is committed first, then sent, and
        the card completes offline. `at` (timezone-aware) is the transaction's time (fields 7,
        12, 13).
        """
        async with self._lock:
            report = AuthorizationReport()
            self.last = report
            self._approved = None
            try:
                pin_keys = self._pin_keys(request)
            except HostClientError as exc:
                log.error("host link: authorization not sent: %s", exc)
                report.problem = f"not sent: {exc}"
                return OnlineResponse.unable()
            report.reversals += await self._send_pending()
            try:
                stan = report.stan = self._next_stan()
                keys = pin_keys or self._begin()
                fields = messages.financial_request(request, acceptor=self._acceptor, stan=stan, at=at)
                answer = await self._exchange(fields, keys)
            except (HostClientError, MessageError, StreamError, FrameError) as exc:
                # nothing left: no reversal is owed (the STAN, if taken, stays unused)
                log.warning("host link: authorization not sent: %s", exc)
                report.problem = f"not sent: {exc}"
                return OnlineResponse.unable()
            except _NoAnswer as exc:
                await self._unanswered(report, fields, exc.reason, exc.detail)
                return OnlineResponse.unable()
            try:
                online = messages.to_online_response(answer)
            except MessageError as exc:
                await self._unanswered(report, fields, ReversalReason.NO_RESPONSE,
                                       f"the answer cannot be used: {exc}")
                return OnlineResponse.unable()
            report.response_code = answer["39"]
            report.rrn = answer.get("37")
            report.approved = online.approved
            log.info("host link: STAN %06d answered %s", stan, answer["39"])
            if online.extra.get("reversal") == "required":
                # an approval this terminal cannot honour (docs/host-protocol.md, Response codes)
                owed = self._owe_reversal(fields, ReversalReason.CANCELLED, response=answer)
                report.reversals.append(await self._send_reversal(owed))
            elif online.approved:
                self._approved = (fields, answer)
            return online

    async def _unanswered(self, report: AuthorizationReport, request: Fields, reason: ReversalReason,
                          detail: str) -> None:
        """The request may have reached the host and no valid answer came: the reversal is
        committed before anything else, then sent once."""
        owed = self._owe_reversal(request, reason)
        log.warning("host link: STAN %s: %s", request["11"], detail)
        report.problem = detail
        report.reversals.append(await self._send_reversal(owed))

    async def reverse_last(self, reason: ReversalReason, *,
                           icc_data: bytes | None = None) -> ReversalReport | None:
        """Reverse the last authorization the host approved, when the sale did not complete:
        the card declined it ('06', with the card's AAC in `icc_data`) or the transaction broke
        off ('22'). None when there is no such approval."""
        async with self._lock:
            if self._approved is None:
                return None
            request, answer = self._approved
            self._approved = None
            owed = self._owe_reversal(request, reason, response=answer, icc_data=icc_data)
            report = await self._send_reversal(owed)
            if self.last is not None:
                self.last.reversals.append(report)
            return report

    async def send_reversals(self) -> list[ReversalReport]:
        """Send the reversals owed, oldest first, until one is not acknowledged."""
        async with self._lock:
            return await self._send_pending()

    async def _send_pending(self) -> list[ReversalReport]:
        reports: list[ReversalReport] = []
        try:
            pending = self._store.pending_reversals()
        except HostStoreError as exc:
            raise HostClientError(f"the reversals owed cannot be read: {exc}") from exc
        for owed in pending:
            report = await self._send_reversal(owed)
            reports.append(report)
            if not report.acknowledged:
                break
        return reports

    def _reversal_message(self, owed: Reversal) -> Fields:
        original = owed.original
        stan = original.get(_STAN)
        at = original.get(_AT)
        answer: dict[str, str] | None = None
        if any(key in original for key in _RESPONSE):
            answer = {key: str(original[key]) for key in ("7", "11", "41")}
            answer["t"] = RESPONSE_OF[str(original["t"])]
            answer.update({key[-2:]: str(original[key]) for key in _RESPONSE if key in original})
        icc = original.get(_ICC)
        fields = messages.reversal(
            {key: str(value) for key, value in original.items()},
            stan=stan if isinstance(stan, int) else self._next_stan(),
            at=datetime.datetime.fromisoformat(at) if isinstance(at, str) else self._clock(),
            reason=ReversalReason(str(original.get(_REASON, ReversalReason.NO_RESPONSE.value))),
            response=answer, icc_data=bytes.fromhex(icc) if isinstance(icc, str) else None)
        return messages.repeat(fields) if owed.repeat else fields

    async def _send_reversal(self, owed: Reversal) -> ReversalReport:
        """One attempt: the 0400 (0401 once sent before) until a valid 0410 or a failure."""
        try:
            fields = self._reversal_message(owed)
        except (MessageError, ValueError) as exc:
            log.error("host link: reversal %d cannot be built and stays owed: %s", owed.id, exc)
            return ReversalReport(str(owed.original.get("11")), str(owed.original.get(_REASON)), "?",
                                  False, problem=f"not built: {exc}")

        def report(acknowledged: bool, code: str | None = None, problem: str | None = None) -> ReversalReport:
            return ReversalReport(str(owed.original["11"]), fields["39"], fields["t"], acknowledged, code,
                                  problem)

        try:
            await self._link_up()
            # before it leaves: a lost 0410 makes the next attempt a 0401
            self._store.reversal_attempted(owed.id)
            answer = await self._exchange(fields, self._begin())
        except HostStoreError as exc:
            raise HostClientError(f"the reversal attempt cannot be recorded: {exc}") from exc
        except (StreamError, FrameError, MessageError, _NoAnswer) as exc:
            detail = exc.detail if isinstance(exc, _NoAnswer) else str(exc)
            log.warning("host link: %s of STAN %s still owed: %s", fields["t"], owed.original["11"], detail)
            return report(False, problem=detail)
        code = answer["39"]
        if code in messages.UNABLE_CODES:
            log.warning("host link: %s of STAN %s answered %s: sent again later", fields["t"],
                        owed.original["11"], code)
            return report(False, code, f"host answered {code}")
        if code not in REVERSAL_DONE:
            # docs/host-protocol.md, Response codes: refused for good; out of the queue
            log.error("host link: %s of STAN %s REFUSED by the host (%s); needs a technician", fields["t"],
                      owed.original["11"], code)
        try:
            self._store.reversal_acknowledged(owed.id, self._clock().isoformat())
        except HostStoreError as exc:
            raise HostClientError(f"the acknowledged reversal cannot be recorded: {exc}") from exc
        log.info("host link: %s of STAN %s acknowledged (%s)", fields["t"], owed.original["11"], code)
        return report(True, code)

    async def echo(self) -> str:
        """An echo test (0800, code 301): the host's response code. `HostUnavailable` without
        a valid answer."""
        async with self._lock:
            fields = messages.network_request(NetworkCode.ECHO, acceptor=self._acceptor,
                                              stan=self._next_stan(), at=self._clock())
            try:
                answer = await self._exchange(fields, self._begin())
            except (StreamError, FrameError, MessageError) as exc:
                raise HostUnavailable(f"no link: {exc}") from exc
            except _NoAnswer as exc:
                raise HostUnavailable(exc.detail) from exc
            return answer["39"]


# --- the kernel driver's side -------------------------------------------------------------------

class EventLoopThread:
    """An asyncio event loop running in a thread of its own, for synchronous callers."""

    def __init__(self, name: str = "host-link") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        """Cancel what still runs on the loop, stop it and close it."""
        if self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._cancel_tasks(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    @staticmethod
    async def _cancel_tasks() -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> EventLoopThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BlockingAuthorizer:
    """`firmware.driver.Authorizer` over a `HostClient` running on `loop` in another thread."""

    def __init__(self, client: HostClient, loop: asyncio.AbstractEventLoop, *,
                 clock: Callable[[], datetime.datetime] = _now) -> None:
        self._client = client
        self._loop = loop
        self._clock = clock

    @property
    def label(self) -> str:
        return self._client.label

    @property
    def client(self) -> HostClient:
        return self._client

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def authorize(self, request: OnlineRequest) -> OnlineResponse:
        return self._run(self._client.authorize(request, at=self._clock()))

    def complete(self, outcome: Outcome) -> ReversalReport | None:
        """After the kernel's outcome: an approval the card did not end with a TC is reversed
        (docs/host-protocol.md, Reversal reasons: '06' card declined, '22' not completed)."""
        if outcome.kind.approved:
            return None
        if outcome.kind is OutcomeKind.DECLINED_ONLINE:
            icc = outcome.chip_data if outcome.cryptogram_type == "AAC" and outcome.chip_data else None
            return self._run(self._client.reverse_last(ReversalReason.CARD_DECLINED, icc_data=icc))
        return self._run(self._client.reverse_last(ReversalReason.MALFUNCTION))

    def __repr__(self) -> str:
        return f"BlockingAuthorizer({self.label})"

