"""The terminal's client of its acquirer host (docs/host-protocol.md).

ISO 8583 messages (`firmware.messages`) MACed under AES DUKPT keys (`firmware.terminal_keys`),
framed (`firmware.framing`) over TLS with the host's CA pinned and the terminal's certificate
(`firmware.tls_stream`), over TCP or any other byte stream given as `connect`. The connection
stays open between transactions and is opened again when it drops.

What the outside world may observe is preceded by a commit (ARCHITECTURE principle 4): the STAN
before a request leaves, the DUKPT registers before a key is used, and the reversal of an
authorization, held, before the authorization leaves (`firmware.payments`): released when no
valid answer comes, cancelled when the card completes. Queued reversals are sent before the
next request, 0400 first and 0401 after, until the host answers 0410.

`forward` sends the store-and-forward queue (offline advices and reversals) in the order it was
filled, several messages in flight at once on the one connection, each marked sent (so that a
lost answer makes the next attempt a repeat) before it leaves.

`BlockingAuthorizer` adapts the client to the kernel driver's synchronous `Authorizer`: the
client runs on an event loop in another thread (`EventLoopThread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from emv.outcome import Outcome
from emv.requests import OnlineRequest, OnlineResponse
from firmware import crashpoints, messages
from firmware.config import HostConfig
from firmware.framing import FrameError
from firmware.host_store import HostStore, HostStoreError
from firmware.messages import Acceptor, Fields, MacError, MessageError, NetworkCode, ReversalReason
from firmware.payment_records import (
    PaymentRecorder,
    RecordError,
    amend_reversal,
    open_payments,
    queued_message,
    reversal_payload,
)
from firmware.payments import PaymentsError, State
from firmware.saf_queue import Item, SafItemError, SafQueueError
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
# 0230 codes after which an advice is done: booked, or '94' (the host already had it).
ADVICE_DONE = messages.APPROVED_CODES | {"94"}
# Frames kept while nobody reads them (answers in flight, late answers); older ones are dropped.
MAX_QUEUED_FRAMES = 64
# How long the idle reader waits before it simply reads again.
IDLE_READ = 3600.0

# Messages of the queue in flight at once on one connection (`forward`): enough to keep a 3G
# link busy (150 ms round trip, 384 kbit/s, about 300 bytes per advice; `make bench`).
FORWARD_WINDOW = 32


class HostClientError(Exception):
    """The client cannot go on: TLS material that does not load, a state that cannot be saved."""


class HostUnavailable(HostClientError):
    """No link to the host, or no valid answer in time (for `echo`)."""


@dataclass(frozen=True)
class ItemReport:
    """One attempt to send an item of the store-and-forward queue (a reversal, an advice)."""

    original_stan: str  # field 11 of the reversed request, or of the advice
    reason: str  # field 39 of the 0400 (ReversalReason) or of the 0220 (Y1, Y3)
    mti: str  # "0400", "0220", or "0401", "0221" for a repeat
    acknowledged: bool  # the host answered and the item left the queue
    response_code: str | None = None  # field 39 of the answer
    problem: str | None = None  # why it is still owed
    item: int = 0  # the queue item
    refused: bool = False  # the host refused it: a decline after the fact, for the merchant


@dataclass
class ForwardReport:
    """What one `forward` did."""

    items: list[ItemReport] = field(default_factory=list)
    set_aside: list[int] = field(default_factory=list)  # items whose payload does not open
    problem: str | None = None  # why forwarding stopped before the queue was empty

    @property
    def acknowledged(self) -> int:
        return sum(1 for item in self.items if item.acknowledged)


@dataclass
class AuthorizationReport:
    """What happened to the last authorization, for the sale's output and the logs."""

    stan: int | None = None
    response_code: str | None = None  # field 39 of the 0210
    rrn: str | None = None  # field 37
    approved: bool = False
    problem: str | None = None  # why the kernel was told "unable to go online"
    reversals: list[ItemReport] = field(default_factory=list)


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
                 connect: ConnectFunction | None = None, *, recorder: PaymentRecorder | None = None,
                 clock: Callable[[], datetime.datetime] = _now) -> None:
        """`recorder` keeps the payments and their queue; by default those of the state folder
        that holds `store`."""
        self.config = config
        self._store = store
        try:
            self.recorder = recorder or PaymentRecorder(open_payments(store.path.parent), store, acceptor,
                                                        clock=clock)
        except RecordError as exc:
            raise HostClientError(str(exc)) from exc
        self._payments = self.recorder.payments
        self._queue = self.recorder.queue
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
        self.payment: int | None = None  # the payment begun and not yet authorized
        self._preauth: int | None = None  # that payment, when it is a pre-authorization
        self._authorized: int | None = None  # the payment whose end `complete` records
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

    def _record(self, step: str, call: Callable[[], T]) -> T:
        """A payment step committed; `HostClientError` when it cannot be (nothing is sent then)."""
        try:
            return call()
        except (PaymentsError, SafQueueError, SafItemError, HostStoreError) as exc:
            log.critical("host link: %s could NOT be recorded: %s", step, exc)
            raise HostClientError(f"{step} could not be recorded: {exc}") from exc

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
        return await self._send_and_wait(link, data, fields, keys)

    async def _send_and_wait(self, link: _Link, data: bytes, fields: Fields, keys: KeySet) -> Fields:
        link.discard_stale()
        try:
            await link.send(data)
        except StreamError as exc:
            # part of it may have left: as good as sent
            raise _NoAnswer(ReversalReason.NO_RESPONSE, f"the link broke while sending: {exc}") from exc
        crashpoints.reach("authorization.sent")
        return await self._answer(link, fields, keys)

    def begin_payment(self, amount: int, currency: int, transaction_type: int = 0, *,
                      preauth: bool = False) -> int:
        """A payment recorded before the card is asked anything; the next `authorize` is its:
        a 0100 for a pre-authorization (`preauth`), else a 0200."""
        self.last = None
        self.payment = self._record("the payment", lambda: self.recorder.begin(
            amount, currency, transaction_type, preauth=preauth))
        self._preauth = self.payment if preauth else None
        return self.payment

    async def authorize(self, request: OnlineRequest, *, at: datetime.datetime) -> OnlineResponse:
        """A financial request (0200), or a pre-authorization (0100) for a payment begun as one,
        for the kernel's ARQC, after the reversals owed.

        Before the request leaves, its reversal is committed, held, with the payment's state
        (`firmware.payments`). Unable to go online (EMV 4.4 Book 3, 10.9) when the request
        cannot be sent, or when it was sent and no valid answer came: then the reversal is
        released and sent once before the card completes offline. `at` (timezone-aware) is the
        transaction's time (fields 7, 12, 13).
        """
        async with self._lock:
            report = AuthorizationReport()
            self.last = report
            try:
                pin_keys = self._pin_keys(request)
                payment = self.payment if self.payment is not None else self.begin_payment(
                    request.amount, request.currency, request.transaction_type)
                self.payment, self._authorized = None, payment
            except HostClientError as exc:
                log.error("host link: authorization not sent: %s", exc)
                report.problem = f"not sent: {exc}"
                return OnlineResponse.unable()
            finally:
                self.last = report
            report.reversals += (await self._forward(1, kind="reversal")).items
            try:
                stan = report.stan = self._next_stan()
                keys = pin_keys or self._begin()
                build = (messages.authorization_request if payment == self._preauth
                         else messages.financial_request)
                fields = build(request, acceptor=self._acceptor, stan=stan, at=at)
                data = messages.attach_mac(fields, keys.request_mac, ksn=keys.ksn)
                link = await self._link_up()
                owed = reversal_payload(fields, ReversalReason.NO_RESPONSE, stan=self._next_stan(),
                                        at=self._clock())
                self._record("the authorization's reversal",
                             lambda: self._payments.authorizing(payment, fields["11"], owed))
            except (HostClientError, MessageError, StreamError, FrameError) as exc:
                # nothing left: no reversal is owed (the STAN, if taken, stays unused)
                log.warning("host link: authorization not sent: %s", exc)
                report.problem = f"not sent: {exc}"
                return OnlineResponse.unable()
            crashpoints.reach("authorization.committed")
            try:
                answer = await self._send_and_wait(link, data, fields, keys)
            except _NoAnswer as exc:
                await self._unanswered(report, payment, owed, exc.reason, exc.detail)
                return OnlineResponse.unable()
            try:
                online = messages.to_online_response(answer)
            except MessageError as exc:
                await self._unanswered(report, payment, owed, ReversalReason.NO_RESPONSE,
                                       f"the answer cannot be used: {exc}")
                return OnlineResponse.unable()
            report.response_code = answer["39"]
            report.rrn = answer.get("37")
            report.approved = online.approved
            log.info("host link: STAN %06d answered %s", stan, answer["39"])
            if online.extra.get("reversal") == "required":
                # an approval this terminal cannot honour (docs/host-protocol.md, Response codes)
                cancelled = amend_reversal(owed, ReversalReason.CANCELLED, response=answer)
                self._record("the reversal", lambda: self._payments.cancelled_by_host(
                    payment, answer["39"], answer.get("37"), cancelled))
                report.reversals += (await self._forward(1, kind="reversal")).items
            else:
                # before the card's second GENERATE AC: a power cut from here on reverses ('22')
                held = amend_reversal(owed, ReversalReason.MALFUNCTION, response=answer)
                self._record("the host's answer", lambda: self._payments.answered(
                    payment, approved=online.approved, response_code=answer["39"], rrn=answer.get("37"),
                    reversal=held))
            crashpoints.reach("authorization.answered")
            return online

    async def _unanswered(self, report: AuthorizationReport, payment: int, owed: dict[str, Any],
                          reason: ReversalReason, detail: str) -> None:
        """The request may have reached the host and no valid answer came: the reversal is
        released before anything else, then sent once."""
        released = amend_reversal(owed, reason)
        self._record("the reversal", lambda: self._payments.unanswered(payment, released))
        log.warning("host link: STAN %s: %s; reversal owed (reason %s)", owed["11"], detail, reason.value)
        report.problem = detail
        report.reversals += (await self._forward(1, kind="reversal")).items

    async def complete(self, outcome: Outcome, transaction_time: datetime.datetime) -> list[ItemReport]:
        """Record how the card ended the payment of the last authorization, then send the
        reversals owed (an approval the card did not confirm is reversed: '06' with the card's
        AAC, '22' when the sale broke off)."""
        async with self._lock:
            payment = self._authorized if self._authorized is not None else self.payment
            self.payment = self._authorized = None
            if payment is None:
                return []
            state = self._record("the payment's end",
                                 lambda: self.recorder.complete(payment, outcome, transaction_time))
            if state is not State.REVERSED:  # no reversal released now: nothing new to send
                return []
            reports = (await self._forward(1, kind="reversal")).items
            if self.last is not None:
                self.last.reversals += reports
            return reports

    async def send_reversals(self) -> list[ItemReport]:
        """Send the reversals owed, oldest first, until one is not acknowledged."""
        async with self._lock:
            return (await self._forward(1, kind="reversal")).items

    async def forward(self, window: int = FORWARD_WINDOW) -> ForwardReport:
        """Send the store-and-forward queue, oldest first, up to `window` messages in flight."""
        async with self._lock:
            return await self._forward(window)

    def _outgoing(self, item: Item, report: ForwardReport) -> Fields | None:
        """The message of `item`, or None when its payload does not open or does not make a
        message: then the item is set aside for a technician, never sent."""
        try:
            return queued_message(item.kind, item.payload, repeat=item.repeat)
        except (SafItemError, MessageError, ValueError, KeyError) as exc:
            log.error("store-and-forward: item %d (%s) is damaged and set aside: %s", item.id, item.kind, exc)
            reason = str(exc)[:200]
            self._record("the damaged item", lambda: self._queue.set_aside(item.id, reason, self._clock()))
            report.set_aside.append(item.id)
            return None

    async def _forward(self, window: int, kind: str | None = None) -> ForwardReport:
        """Send queued items in order, `window` at a time on the connection; stop sending new
        ones at the first that gets no answer (the link is likely down), and when `window` is
        1, at the first not acknowledged: what is sent first is settled first."""
        report = ForwardReport()
        window = max(1, min(window, MAX_QUEUED_FRAMES))  # answers beyond the frame queue would be lost
        flights: list[_Flight] = []
        taken = 0  # the id of the last item taken: the queue's order is its ids'
        first = self._next(kind, taken)
        if first is None:
            return report  # nothing to send: no connection opened for nothing
        try:
            link = await self._link_up()
        except StreamError as exc:
            report.problem = f"no link: {exc}"
            fields = self._outgoing(first, report)  # the next in line says why it waits
            if fields is not None:
                report.items.append(_item_report(first, fields, problem=report.problem))
            log.info("store-and-forward: the queue waits: no link: %s", exc)
            return report
        stop = False
        while True:
            while not stop and len(flights) < window:
                item = self._next(kind, taken)
                if item is None:
                    break
                taken = item.id
                fields = self._outgoing(item, report)
                if fields is None:
                    continue
                keys = self._begin()
                data = messages.attach_mac(fields, keys.request_mac, ksn=keys.ksn)
                self._record("the attempt", lambda item=item: self._queue.mark_sent(item.id))
                crashpoints.reach("item.committed")
                try:
                    await link.send(data)
                except StreamError as exc:
                    report.items.append(_item_report(item, fields, problem=f"the link broke: {exc}"))
                    report.problem = f"the link broke: {exc}"
                    stop = True
                    break
                crashpoints.reach("item.sent")
                deadline = asyncio.get_running_loop().time() + self.config.timeout
                flights.append(_Flight(item, fields, keys, deadline))
            if not flights:
                return report
            outcome = await self._next_answer(link, flights)
            if isinstance(outcome, str):  # the link broke or a deadline passed
                expired = flights if link.broken else [f for f in flights if f.expired()]
                for flight in expired:
                    flights.remove(flight)
                    report.items.append(_item_report(flight.item, flight.fields, problem=outcome))
                    log.warning("store-and-forward: %s of STAN %s still owed: %s", flight.fields["t"],
                                flight.fields["11"], outcome)
                report.problem = outcome
                stop = True
                continue
            flight, answer = outcome
            flights.remove(flight)
            item_report = self._settle(flight, answer)
            report.items.append(item_report)
            if not item_report.acknowledged and window == 1:
                stop = True

    def _next(self, kind: str | None, after: int) -> Item | None:
        """The first item waiting after id `after`, of `kind` when given."""
        items = self._record("the queue", lambda: self._queue.pending(1, kind, after=after))  # type: ignore
        return items[0] if items else None

    async def _next_answer(self, link: _Link, flights: list[_Flight]) -> tuple[_Flight, Fields] | str:
        """The next verified answer to one of `flights`, or why none came (a string)."""
        while True:
            deadline = min(flight.deadline for flight in flights)
            try:
                frame = await link.next_frame(deadline)
            except StreamError as exc:
                return f"the link broke: {exc}"
            if frame is None:
                return f"no answer within {self.config.timeout:g} s"
            try:
                candidate = messages.unpack(frame)
            except MessageError as exc:
                log.warning("host link: an unreadable frame was ignored: %s", exc)
                continue
            flight = next((f for f in flights if messages.is_response_to(f.fields, candidate)), None)
            if flight is None:
                log.info("host link: a %s for STAN %s answers nothing in flight; ignored",
                         candidate.get("t"), candidate.get("11"))
                continue
            try:
                if messages.key_serial(candidate) != flight.keys.ksn:
                    raise MacError("another KSN")
                return flight, messages.verify_mac(frame, flight.keys.response_mac)
            except MacError:
                log.warning("host link: the %s for STAN %s failed its MAC check; ignored", candidate["t"],
                            candidate["11"])

    def _settle(self, flight: _Flight, answer: Fields) -> ItemReport:
        """Record the host's answer to a queue item."""
        item, fields, code = flight.item, flight.fields, answer["39"]
        if code in messages.UNABLE_CODES:
            log.warning("store-and-forward: %s of STAN %s answered %s: sent again later", fields["t"],
                        fields["11"], code)
            return _item_report(item, fields, code=code, problem=f"host answered {code}")
        now = self._clock()
        accepted = REVERSAL_DONE if item.kind == "reversal" else ADVICE_DONE
        if code in accepted:
            self._record("the answer", lambda: self._queue.mark_answered(item.id, code, now))
            log.info("store-and-forward: %s of STAN %s acknowledged (%s)", fields["t"], fields["11"], code)
            crashpoints.reach("item.answered")
            return _item_report(item, fields, code=code, acknowledged=True)
        # docs/host-protocol.md, Response codes: refused for good; out of the queue, kept for the alert
        self._record("the refusal", lambda: self._queue.mark_refused(item.id, code, now))
        if item.kind == "advice":
            log.error("store-and-forward: the host DECLINED AFTER THE FACT the offline payment of STAN %s "
                      "(%s): the merchant is alerted", fields["11"], code)
        else:
            log.error("store-and-forward: %s of STAN %s REFUSED by the host (%s); needs a technician",
                      fields["t"], fields["11"], code)
        crashpoints.reach("item.answered")
        return _item_report(item, fields, code=code, acknowledged=True, refused=True)

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

    async def reconcile(self, totals: Sequence[messages.SchemeTotals], *, batch_number: int,
                        currency: int) -> str:
        """The batch's reconciliation (0500, docs/host-protocol.md, field 63) after the queue is
        sent: the host's response code ('00' in balance, '95' out of balance). `HostUnavailable`
        without a valid answer; `MessageError` when the totals cannot be sent."""
        async with self._lock:
            await self._forward(FORWARD_WINDOW)
            fields = messages.reconciliation(totals, acceptor=self._acceptor, stan=self._next_stan(),
                                             at=self._clock(), batch_number=batch_number, currency=currency)
            try:
                answer = await self._exchange(fields, self._begin())
            except (StreamError, FrameError) as exc:
                raise HostUnavailable(f"no link: {exc}") from exc
            except _NoAnswer as exc:
                raise HostUnavailable(exc.detail) from exc
            log.info("host link: batch %06d reconciliation answered %s", batch_number, answer["39"])
            return answer["39"]


@dataclass
class _Flight:
    """A queue item sent and waiting for its answer."""

    item: Item
    fields: Fields
    keys: KeySet
    deadline: float

    def expired(self) -> bool:
        return asyncio.get_running_loop().time() >= self.deadline


def _item_report(item: Item, fields: Fields, *, code: str | None = None, acknowledged: bool = False,
                 refused: bool = False, problem: str | None = None) -> ItemReport:
    original = fields.get("90", "")[4:10] if item.kind == "reversal" else fields["11"]
    return ItemReport(original or "?", fields.get("39", "?"), fields["t"], acknowledged, code, problem,
                      item.id, refused)


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

    def begin_payment(self, amount: int, currency: int, transaction_type: int = 0, *,
                      preauth: bool = False) -> int:
        return self._client.begin_payment(amount, currency, transaction_type, preauth=preauth)

    def forward(self, window: int = FORWARD_WINDOW) -> ForwardReport:
        return self._run(self._client.forward(window))

    def complete(self, outcome: Outcome,
                 transaction_time: datetime.datetime | None = None) -> list[ItemReport]:
        """After the kernel's outcome: the payment's end recorded, and the reversals owed sent
        (docs/host-protocol.md, Reversal reasons: '06' card declined, '22' not completed)."""
        return self._run(self._client.complete(outcome, transaction_time or self._clock()))

    def __repr__(self) -> str:
        return f"BlockingAuthorizer({self.label})"

