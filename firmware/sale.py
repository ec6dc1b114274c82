"""`tpe sale`: the technician's headless test transaction on the configured reader.

The authorization goes to the configured acquirer host (`firmware.host_client`), or, when asked,
to the scripted issuer of the simulator (`sim.card.issuer`), and every output says which. The
host is reached over the links of [links] (`firmware.links`): the OS network and, with a
[modem], the cellular module, brought up with its SIM PIN and APN before the first
authorization; the output names the route the sale took.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from emv import kernel
from emv.action_analysis import OFFLINE_REFUSED
from emv.apdu import Response
from emv.context import Transaction
from emv.outcome import Outcome
from emv.requests import ApproveOffline, OfflineDecision, Transmit
from firmware import crashpoints, driver, fiscal, offline_limits
from firmware.config import LINK_CELLULAR, LINK_NETWORK, AppConfig, ModemConfig
from firmware.host_client import (
    AuthorizationReport,
    BlockingAuthorizer,
    EventLoopThread,
    ForwardReport,
    HostClient,
    HostClientError,
)
from firmware.host_store import HostStore
from firmware.journal import Journal, JournalError, Record
from firmware.links import CellularLink, Link, LinkEvent, LinkManager, OsNetworkLink
from firmware.messages import Acceptor
from firmware.money import alpha, format_amount
from firmware.payment_records import PaymentRecorder, RecordError, open_payments
from firmware.payments import Payment, Payments, Recovery, State
from firmware.pin_pad import DukptPinPad, PinPad
from firmware.prompts import ConsolePrompt, ScriptedPrompt
from firmware.receipt import ReceiptError, receipt_lines, software_version
from firmware.saf_queue import SafStatus
from firmware.terminal_keys import MemorySecretStore, TerminalKeys
from firmware.tls_stream import ByteStream

log = logging.getLogger(__name__)


STATE_FILE = "host.sqlite3"  # in the [state] folder
HOST_ANSWERED = "the acquirer host answered"  # the cause of the degraded mode's end
MODEM_CLOSE_TIMEOUT = 5.0  # seconds for the module's driver and port to close on the way out


class SaleJournalError(RecordError):
    """The payment is recorded, but its ticket or a degraded-mode event could not be journalled
    (`firmware.fiscal`): the fiscal journal needs attention. `result` is the sale's result."""

    def __init__(self, message: str, result: SaleResult | None) -> None:
        super().__init__(message)
        self.result = result


class LinkSetupError(HostClientError):
    """A link to the acquirer cannot be set up: the module's port does not open, the SIM wants
    another PIN, the module does not register, the data context does not activate."""


@dataclass
class SaleResult:
    outcome: Outcome
    apdus: int
    authorizer: str | None
    asked: list[str]
    host: AuthorizationReport | None = None  # what the acquirer link did, when it was used
    route: dict[str, Any] | None = None  # `LinkManager.snapshot()` after the sale, with its events
    payment: dict[str, Any] | None = None  # the payment's record (`firmware.payments.Payment`)
    forwarded: ForwardReport | None = None  # the store-and-forward queue sent after the sale
    ticket: dict[str, Any] | None = None  # the fiscal ticket journalled: seq, type, extract, receipt
    alerts: list[str] = dataclasses.field(default_factory=list)  # for the merchant: the journal's integrity


@dataclass
class _Cellular:
    """The cellular module opened for a sale: its serial port, AT runner and driver."""

    port: Any
    runner: Any
    module: Any

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.module.close()
        with contextlib.suppress(Exception):
            await self.runner.close()
        with contextlib.suppress(Exception):
            await self.port.close()


def counting(fulfil: Callable[[Transmit], Response]) -> tuple[Callable[[Transmit], Response], list[int]]:
    """Wraps a `Transmit` handler to count the commands the kernel sent."""
    count = [0]

    def send(request: Transmit) -> Response:
        count[0] += 1
        return fulfil(request)

    return send, count


def terminal_keys_of(config: AppConfig, store: HostStore) -> TerminalKeys | None:
    """The terminal's DUKPT keys kept in `store`; None without a [dukpt] section."""
    if config.dukpt is None:
        return None
    return TerminalKeys.open(store, config.dukpt.initial_key_file)


def pin_pad_of(config: AppConfig, keys: TerminalKeys | None = None) -> PinPad | None:
    """The PIN pad over the terminal's DUKPT `keys`; None without a [dukpt] section.

    Without `keys`, the registers live in memory and start again from the initial key at every
    call, repeating KSNs: for in-process tests and the bench only. A terminal talking to a host
    passes the `TerminalKeys` of its state database."""
    if keys is None:
        if config.dukpt is None:
            return None
        keys = TerminalKeys.open(MemorySecretStore(), config.dukpt.initial_key_file)
    return DukptPinPad(keys)


def state_store(config: AppConfig) -> HostStore:
    """The durable state of the host link (STAN, DUKPT registers, reversals owed)."""
    return HostStore(config.state.folder / STATE_FILE)


def recorder_of(config: AppConfig, store: HostStore) -> PaymentRecorder:
    """The payments of the [state] folder, recorded with the acquirer identity of [host] (when
    there is one) for their advices. `payment_records.RecordError` when they cannot be opened."""
    payments = open_payments(config.state.folder)
    return PaymentRecorder(payments, store, acceptor_of(config) if config.host is not None else None)


def recover(payments: Payments, config: AppConfig | None = None) -> list[Recovery]:
    """Settle the payments a power cut left unfinished (`Payments.recover`), before anything
    is sent; each decision is logged. With `config`, approved payments left without their
    ticket get it in the fiscal journal of its [state] folder (`recover_tickets`)."""
    decisions = payments.recover()
    for decision in decisions:
        log.warning("recovery: payment %d: %s -> %s: %s", decision.payment, decision.was.value,
                    decision.now.value, decision.note)
    if config is not None:
        recover_tickets(config, payments)
    return decisions


# How far back in the ticket chain recovery looks for a ticket journalled just before a power
# cut kept it from being recorded on its payment.
TICKETS_LOOKED_AT = 1000


def recover_tickets(config: AppConfig, payments: Payments) -> list[int]:
    """Journal the ticket of every approved payment that has none recorded, unless the journal
    already holds one for it (a power cut between the journal and the payment's record): each
    payment gets exactly one ticket. Returns the payments that got one now. `SaleJournalError`
    when the journal cannot be written."""
    missing = payments.without_ticket()
    if not missing:
        return []
    try:
        journal = Journal(config.state.folder)
    except JournalError as exc:
        raise SaleJournalError(f"the tickets of {len(missing)} payment(s) cannot be journalled: {exc}",
                               None) from exc
    done: list[int] = []
    try:
        head = journal.head("ticket")
        found: dict[int, int] = {}
        since = max(1, head.seq - TICKETS_LOOKED_AT) if head is not None else 1
        for record in journal.records("ticket", since=since):
            for tender in record.data.get("tenders", []):
                reference = tender.get("reference") or {}
                if isinstance(reference.get("payment"), int):
                    found[reference["payment"]] = record.seq
        for payment in missing:
            seq = found.get(payment.id)
            if seq is None:
                seq = stored_ticket(journal, payment).seq
                done.append(payment.id)
                log.warning("recovery: payment %d was approved without its ticket: journalled as ticket %d",
                            payment.id, seq)
            payments.set_ticket(payment.id, seq)
    except (JournalError, fiscal.FiscalError) as exc:
        log.critical("recovery: tickets NOT journalled: %s", exc)
        raise SaleJournalError(f"the tickets of approved payments cannot be journalled: {exc}", None) from exc
    finally:
        journal.close()
    return done


def stored_ticket(journal: Journal, payment: Payment) -> Record:
    """The ticket of approved `payment` from what it recorded (its card reference, no card in
    the reader): a completion's, or one a power cut kept from being journalled. `JournalError`,
    `fiscal.FiscalError`."""
    reference = ({**payment.card, "payment": payment.id} if payment.card else
                 {"payment": payment.id, "outcome": payment.outcome, "pan_masked": payment.pan_masked})
    ticket = card_ticket(journal, payment.amount, alpha(payment.currency), reference,
                         refund=payment.kind == "refund")
    log.info("fiscal journal: payment %d (%s) is ticket %d (%s)", payment.id, payment.kind, ticket.seq,
             ticket.extract)
    return ticket


def card_ticket(journal: Journal, amount: int, currency: str, reference: dict[str, Any], *, refund: bool,
                training: bool = False) -> Record:
    """The ticket of one card payment of `amount` minor units (positive) in `currency` (alpha):
    a sale, or a refund with the amounts negative; `reference` is the card tender's
    (`fiscal.card_reference`)."""
    sign = -1 if refund else 1
    tender = fiscal.Tender("card", sign * amount, reference)
    record = fiscal.record_refund if refund else fiscal.record_sale
    return record(journal, sign * amount, currency, [tender], training=training)


def acceptor_of(config: AppConfig) -> Acceptor:
    """Fields 41, 42 and 32: the terminal and merchant of [terminal], the acquirer of [host]."""
    if config.host is None:
        raise ValueError("no [host] section")
    terminal = config.kernel.terminal
    return Acceptor(terminal_id=terminal.terminal_id, merchant_id=terminal.merchant_id,
                    acquirer_id=config.host.acquirer_id)


class RoutedAuthorizer(BlockingAuthorizer):
    """The host client's authorizer with the link manager its connections go through."""

    def __init__(self, client: HostClient, loop: asyncio.AbstractEventLoop, links: LinkManager,
                 problems: dict[str, str] | None = None) -> None:
        super().__init__(client, loop)
        self.links = links
        self.problems = dict(problems or {})  # links left out at start, and why
        self._seen = 0  # link events already reported
        self._closing: set[asyncio.Task[None]] = set()
        links.subscribe(self._on_link_event)

    def _on_link_event(self, event: LinkEvent) -> None:
        """On failback the connection still runs over the backup link: close it, so that the
        next exchange opens one over the preferred link (the client's lock keeps a request in
        progress whole). Called on the client's loop."""
        if event.kind != "failback":
            return
        task = asyncio.get_running_loop().create_task(self.client.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def route(self) -> dict[str, Any]:
        """The route in use now (the cellular module's signal and operator asked afresh) and the
        link events since the last call."""
        return self._run(self._route())

    async def _route(self) -> dict[str, Any]:
        manager = self.links
        current = manager.current
        if isinstance(current, CellularLink):
            await current.probe(manager.host, manager.port, manager.timeout)
        snapshot = manager.snapshot()
        fresh = min(manager.announced - self._seen, len(manager.events))
        snapshot["events"] = [{"kind": e.kind, "link": e.link, "previous": e.previous, "cause": e.cause}
                              for e in list(manager.events)[len(manager.events) - fresh:]]
        self._seen = manager.announced
        snapshot["problems"] = dict(self.problems)
        return snapshot


async def open_cellular(modem: ModemConfig) -> _Cellular:
    """The module of [modem] on its serial port, brought up with its SIM PIN and APN.
    `LinkSetupError` says why when it cannot be; the PIN is never part of the message."""
    from modem.module import ModemError, SimPinError
    from modem.quectel import QuectelModule
    from modem.runner import AtRunner
    from modem.serial_port import SerialPortError, open_serial
    from modem.simcom import SimcomModule

    drivers = {"quectel": QuectelModule, "simcom": SimcomModule}
    where = f"cellular module ({modem.dialect}) on {modem.port}"
    try:
        port = await open_serial(modem.port, modem.baudrate)
    except (SerialPortError, OSError) as exc:
        raise LinkSetupError(f"{where}: the port does not open: {exc}") from None
    runner = AtRunner(port)
    await runner.start()
    module = drivers[modem.dialect](runner, registration_timeout=modem.registration_timeout)
    cellular = _Cellular(port, runner, module)
    try:
        await module.bring_up(modem.sim_pin, modem.apn, modem.user, modem.password)
    except SimPinError as exc:
        await cellular.close()
        raise LinkSetupError(f"{where}: SIM PIN ({exc.kind}): {exc}; the PIN is not tried again, "
                             "check modem.sim_pin") from None
    except ModemError as exc:
        await cellular.close()
        raise LinkSetupError(f"{where}: {type(exc).__name__}: {exc}") from None
    return cellular


def link_manager(config: AppConfig, cellular: Any = None) -> LinkManager:
    """The links of [links] order to the [host]: `cellular` is the module's driver (or None)."""
    if config.host is None:
        raise ValueError("no [host] section")
    links: list[Link] = []
    for name in config.links.order:
        if name == LINK_NETWORK:
            links.append(OsNetworkLink(LINK_NETWORK))
        elif name == LINK_CELLULAR and cellular is not None:
            links.append(CellularLink(cellular, LINK_CELLULAR))
    if not links:
        raise LinkSetupError("no link to the acquirer: every configured link failed to start")
    return LinkManager(links, config.host.address, config.host.port, timeout=config.host.timeout)


def link_connect(manager: LinkManager) -> Callable[[], Awaitable[ByteStream]]:
    """`HostClient`'s connect over `manager` (no link is `LinkDown`, a `ConnectError`)."""
    return manager.connect


@contextlib.contextmanager
def acquirer(config: AppConfig, store: HostStore, keys: TerminalKeys) -> Iterator[RoutedAuthorizer]:
    """The configured acquirer host as the kernel's authorizer, its client on an event loop
    thread, its connections over the links of [links] (the cellular module brought up first);
    the connection, the module and the thread are closed on the way out. `LinkSetupError` when
    no link can start (a cellular module that fails next to another link is left out, and said)."""
    if config.host is None:
        raise ValueError("no [host] section")
    thread = EventLoopThread()
    cellular: _Cellular | None = None
    try:
        problems: dict[str, str] = {}
        if config.modem is not None and LINK_CELLULAR in config.links.order:
            try:
                cellular = thread.run(open_cellular(config.modem))
            except LinkSetupError as exc:
                if config.links.order == (LINK_CELLULAR,):
                    raise
                log.warning("link: cellular left out: %s", exc)
                problems[LINK_CELLULAR] = str(exc)
        manager = link_manager(config, cellular.module if cellular else None)
        client = HostClient(config.host, store, keys, acceptor_of(config), connect=link_connect(manager),
                            recorder=recorder_of(config, store))
        recover(client.recorder.payments, config)
        try:
            yield RoutedAuthorizer(client, thread.loop, manager, problems)
        finally:
            thread.run(client.close())
    finally:
        if cellular is not None:
            with contextlib.suppress(Exception):
                thread.run(asyncio.wait_for(cellular.close(), MODEM_CLOSE_TIMEOUT))
        thread.stop()


@dataclass
class CardPayment:
    """One payment on a card: the kernel's outcome and what was recorded of it."""

    outcome: Outcome
    apdus: int
    payment: dict[str, Any] | None  # `Payment.as_dict`, when recorded
    ticket: dict[str, Any] | None  # the fiscal ticket journalled
    host: AuthorizationReport | None  # what the host link did
    unjournalled: list[str]  # what the fiscal journal could not take
    alerts: list[str]  # for the merchant: the journal's integrity


def card_payment(config: AppConfig, amount: int, fulfil: Callable[[Transmit], Response], prompt: Any, *,
                 authorizer: Any = None, online: Any = None, recorder: PaymentRecorder | None = None,
                 journal: Journal | None = None, transaction_type: int = 0,
                 when: datetime.datetime | None = None, preauth: bool = False,
                 rng: Callable[[int], bytes] = os.urandom) -> CardPayment:
    """The card's part of a sale, whatever asks the cardholder (`prompt`: the console, a script,
    the touchscreen): the payment begun (`firmware.payments`), the kernel run with the [offline]
    limits, the payment completed (an approval the card declines is reversed), and an approved
    one journalled as a ticket (`journal_sale`) and recorded on its payment.

    `authorizer` records and completes the payment through the host client
    (`BlockingAuthorizer`); `online`, when given, is what the kernel asks instead (a wrapper
    showing progress); without an authorizer, `recorder` records the payment.

    A pre-authorization (`preauth`) goes to the host as a 0100, is never approved offline, and
    gets no ticket: its completion is the sale."""
    if preauth and transaction_type != 0:
        raise ValueError("a pre-authorization is for goods and services ('9C' 00)")
    send, count = counting(fulfil)
    txn = Transaction(amount=amount, when=when or datetime.datetime.now().astimezone(),
                      transaction_type=transaction_type)
    currency = config.kernel.terminal.currency
    payment: int | None = None
    if isinstance(authorizer, BlockingAuthorizer):
        recorder = authorizer.client.recorder
        payment = authorizer.begin_payment(amount, currency, transaction_type, preauth=preauth)
    elif recorder is not None:
        payment = recorder.begin(amount, currency, transaction_type, preauth=preauth)
    outcome = driver.run(kernel.transaction(config.kernel, txn, rng=rng), send, prompt,
                         online if online is not None else authorizer,
                         offline_policy(config, recorder, preauth=preauth))
    for event in outcome.events:  # kernel decisions: no card data (emv.context.Context.note)
        log.info("kernel: %s", event)
    log.info("sale: %s%s, %s APDUs, TVR %s, TSI %s", outcome.kind.value,
             f" ({outcome.reason})" if outcome.reason else "", count[0], outcome.tvr.hex().upper(),
             outcome.tsi.hex().upper())
    host = None
    if isinstance(authorizer, BlockingAuthorizer):
        authorizer.complete(outcome, txn.when)
        host = authorizer.client.last
    elif recorder is not None and payment is not None:
        recorder.complete(payment, outcome, txn.when)
    record = None
    if recorder is not None and payment is not None:
        record = recorder.payments.get(payment).as_dict()
    alerts: list[str] = []
    ticket, unjournalled = journal_sale(config, journal, outcome, record, host, alerts)
    if ticket is not None and recorder is not None and payment is not None:
        crashpoints.reach("ticket.journalled")
        recorder.payments.set_ticket(payment, ticket["seq"])
        record = recorder.payments.get(payment).as_dict()
    return CardPayment(outcome, count[0], record, ticket, host, unjournalled, alerts)


def run_sale(config: AppConfig, amount: int, fulfil: Callable[[Transmit], Response], *,
             pin: str | None, choice: int | str = 0, authorizer: Any = None,
             pin_pad: PinPad | None = None, interactive: bool = False,
             when: datetime.datetime | None = None, rng: Callable[[int], bytes] = os.urandom,
             transaction_type: int = 0, recorder: PaymentRecorder | None = None,
             journal: Journal | None = None) -> SaleResult:
    """One sale (or refund, `transaction_type` 0x20) on the console or a script
    (`card_payment`); `authorizer` None means no host (unable to go online), `pin_pad` None no
    online PIN. With the acquirer host, the queue is forwarded after a sale whose link worked.
    `SaleJournalError` (a `RecordError`, with the result) when the journal cannot be written:
    the payment itself is recorded."""
    prompt: Any = ConsolePrompt(pin_pad=pin_pad) if interactive else ScriptedPrompt(
        pin=pin, pin_pad=pin_pad, choice=choice)
    done = card_payment(config, amount, fulfil, prompt, authorizer=authorizer, recorder=recorder,
                        journal=journal, transaction_type=transaction_type, when=when, rng=rng)
    host, record = done.host, done.payment
    route = None
    forwarded = None
    if isinstance(authorizer, BlockingAuthorizer) and (host is None or host.problem is None):
        forwarded = authorizer.forward()  # not when the link just failed this sale
    if isinstance(authorizer, RoutedAuthorizer):
        route = authorizer.route()
        log.info("sale: route %s", route_text(route))
    label = getattr(authorizer, "label", None) if authorizer is not None else None
    asked = list(getattr(prompt, "asked", []))
    result = SaleResult(done.outcome, done.apdus, label, asked, host, route, record, forwarded, done.ticket,
                        done.alerts)
    if done.unjournalled:
        prefix = "" if record is None else f"payment {record['id']} ({record['state']}) is recorded, but "
        raise SaleJournalError(f"{prefix}the fiscal journal in {config.state.folder} could not be written: "
                               f"{'; '.join(done.unjournalled)}", result)
    return result


def journal_sale(config: AppConfig, journal: Journal | None, outcome: Outcome, payment: dict[str, Any] | None,
                 host: AuthorizationReport | None,
                 alerts: list[str] | None = None) -> tuple[dict[str, Any] | None, list[str]]:
    """Journal an approved `payment` (its record, `Payment.as_dict`) as a ticket with one card
    tender, its reference the payment and the card's `outcome` (`fiscal.card_reference`); and,
    when an authorization was tried (`host`), the degraded mode's start when it could not reach
    the host, its end when it did. `journal` None: that of the [state] folder, opened here, its
    heads file checked first (docs/journal-format.md, Truncation guard): each problem is
    journalled as an integrity failure and added to `alerts` for the merchant.

    Returns the ticket (seq, type, signature extract, receipt lines) or None, and what could not
    be journalled, each problem logged as critical."""
    approved = (payment is not None and payment["amount"] > 0 and payment["kind"] != "preauth"
                and payment["state"] in (State.APPROVED.value, State.APPROVED_OFFLINE.value))
    if not approved and host is None:
        return None, []
    problems: list[str] = []
    ticket = None
    try:
        opened = journal if journal is not None else Journal(config.state.folder)
    except JournalError as exc:
        opened, problems = None, [str(exc)]
    try:
        if journal is None and opened is not None:
            try:
                for problem in opened.check_guard():
                    log.critical("fiscal journal: %s", problem)
                    fiscal.audit(opened, "integrity_failure", problem=problem)
                    if alerts is not None:
                        alerts.append(f"fiscal journal: {problem}")
            except (JournalError, fiscal.FiscalError) as exc:
                problems.append(f"the heads check: {exc}")
        if approved and opened is not None and payment is not None:
            try:
                ticket = _ticket(config, opened, outcome, payment)
            except (JournalError, fiscal.FiscalError) as exc:
                problems.append(f"the ticket of payment {payment['id']}: {exc}")
        if host is not None and opened is not None:
            try:
                fiscal.degraded(opened, host.problem is not None, host.problem or HOST_ANSWERED)
            except (JournalError, fiscal.FiscalError) as exc:
                problems.append(f"the degraded mode's event: {exc}")
    finally:
        if journal is None and opened is not None:
            opened.close()
    for problem in problems:
        log.critical("fiscal journal: NOT written: %s", problem)
    return ticket, problems


def _ticket(config: AppConfig, journal: Journal, outcome: Outcome, payment: dict[str, Any]) -> dict[str, Any]:
    record = card_ticket(journal, payment["amount"], alpha(payment["currency"]),
                         fiscal.card_reference(outcome, payment["id"]), refund=payment["kind"] == "refund")
    log.info("fiscal journal: payment %d is ticket %d (%s)", payment["id"], record.seq, record.extract)
    merchant = config.kernel.terminal.merchant_name_location or None
    try:
        lines: list[str] | None = receipt_lines(record, version=software_version(), merchant=merchant)
    except ReceiptError as exc:  # the ticket is journalled: it can be printed again as a duplicate
        log.error("fiscal journal: ticket %d: no receipt: %s", record.seq, exc)
        lines = None
    return {"seq": record.seq, "type": record.type, "extract": record.extract, "receipt": lines}


def route_text(route: dict[str, Any]) -> str:
    """"cellular (4G, -75 dBm, TestNet)", "network", or "none" with the causes."""
    name = route.get("route")
    if name is None:
        causes = "; ".join(f"{link}: {state['cause']}" for link, state in route.get("links", {}).items()
                           if state.get("cause"))
        return f"none ({causes})" if causes else "none (no connection was needed)"
    details = route.get("details") or {}
    parts = [details.get("technology"),
             None if details.get("signal_dbm") is None else f"{details['signal_dbm']} dBm",
             details.get("operator")]
    shown = ", ".join(str(part) for part in parts if part)
    return f"{name} ({shown})" if shown else str(name)


def offline_policy(config: AppConfig, recorder: PaymentRecorder | None, *,
                   preauth: bool = False) -> driver.OfflinePolicy:
    """The [offline] limits against the queue as it is when the kernel asks; a terminal with no
    queue to keep an advice in (no [host]) approves nothing offline beyond the limits of an
    empty queue; a pre-authorization is never approved offline."""

    def decide(request: ApproveOffline) -> OfflineDecision:
        status = recorder.queue.status() if recorder is not None else SafStatus(0, {}, None)
        decision = offline_limits.decide(config.offline, request, status, datetime.datetime.now(datetime.UTC),
                                         preauth=preauth)
        if not decision.allowed:
            log.warning("sale: no offline approval: %s", decision.reason)
        return decision

    return decide


def with_currency(config: AppConfig, number: int, exponent: int) -> AppConfig:
    terminal = dataclasses.replace(config.kernel.terminal, currency=number, currency_exponent=exponent)
    return dataclasses.replace(config, kernel=dataclasses.replace(config.kernel, terminal=terminal))


def host_summary(report: AuthorizationReport) -> dict[str, Any]:
    return dataclasses.asdict(report)


def as_json(result: SaleResult) -> dict[str, Any]:
    out = result.outcome.summary()
    out["apdus"] = result.apdus
    out["authorizer"] = result.authorizer or "none (unable to go online)"
    out["prompts"] = result.asked
    if result.host is not None:
        out["host"] = host_summary(result.host)
    if result.route is not None:
        out["route"] = result.route
    if refusal := _refusal(result.outcome):
        out["message"] = refusal
    if result.payment is not None:
        out["payment"] = result.payment
    if result.forwarded is not None:
        out["forwarded"] = forward_summary(result.forwarded)
    if result.ticket is not None:
        out["ticket"] = result.ticket
    if result.alerts:
        out["alerts"] = result.alerts
    return out


def _refusal(outcome: Outcome) -> str | None:
    """The sentence for the cardholder when the offline limits refused the payment."""
    if outcome.reason and outcome.reason.startswith(OFFLINE_REFUSED):
        return offline_limits.message(outcome.reason)
    return None


def forward_summary(report: ForwardReport) -> dict[str, Any]:
    return {"sent": len(report.items), "acknowledged": report.acknowledged,
            "refused": [item.item for item in report.items if item.refused],
            "set_aside": report.set_aside, "problem": report.problem}


def _route_rows(route: dict[str, Any] | None) -> list[tuple[str, Any]]:
    if route is None:
        return []
    rows: list[tuple[str, Any]] = [("Route", route_text(route))]
    rows += [("Link", f"{e['kind']} {e['previous'] or '-'} -> {e['link'] or '-'}: {e['cause']}")
             for e in route.get("events", []) if e["kind"] in ("failover", "failback", "down")]
    rows += [("Link", f"{name} left out: {cause}") for name, cause in route.get("problems", {}).items()]
    return rows


def _host_rows(report: AuthorizationReport | None) -> list[tuple[str, Any]]:
    if report is None:
        return []
    rows: list[tuple[str, Any]] = [
        ("STAN", None if report.stan is None else f"{report.stan:06d}"),
        ("Host answer", report.response_code),
        ("Host link", report.problem),
    ]
    for reversal in report.reversals:
        state = (f"acknowledged ({reversal.response_code})" if reversal.acknowledged
                 else f"still owed: {reversal.problem}")
        rows.append(("Reversal", f"{reversal.mti} of STAN {reversal.original_stan} "
                                 f"(reason {reversal.reason}): {state}"))
    return rows


def _forwarded_text(report: ForwardReport | None) -> str | None:
    if report is None or not (report.items or report.problem or report.set_aside):
        return None
    text = f"{report.acknowledged} of {len(report.items)} acknowledged"
    refused = sum(1 for item in report.items if item.refused)
    if refused:
        text += f", {refused} DECLINED AFTER THE FACT"
    if report.set_aside:
        text += f", {len(report.set_aside)} set aside (damaged)"
    return text + (f"; {report.problem}" if report.problem else "")


def as_text(result: SaleResult) -> str:
    o = result.outcome
    lines = [f"Authorizer  {result.authorizer or 'none: sale completed as unable to go online'}",
             f"Outcome     {o.kind.value.upper().replace('_', ' ')}" + (f" ({o.reason})" if o.reason else ""),
             f"Amount      {format_amount(o.amount, o.exponent)} {alpha(o.currency)}"]
    rows = [
        ("Application", f"{o.label or ''} {o.aid.hex().upper() if o.aid else ''}".strip() or None),
        ("PAN", o.pan_masked),
        ("PAN seq.", o.pan_sequence_number),
        ("Cryptogram", f"{o.first_cryptogram_type} -> {o.cryptogram_type}" if o.first_cryptogram_type
         and o.first_cryptogram_type != o.cryptogram_type else o.cryptogram_type),
        ("ATC", o.atc.hex().upper() if o.atc else None),
        ("ODA", o.oda),
        ("CVM", o.cvm),
        ("Signature", "required on the receipt" if o.signature_required else None),
        ("TVR", o.tvr.hex().upper()),
        ("TSI", o.tsi.hex().upper()),
        ("CVM results", o.cvm_results.hex().upper()),
        ("Response", o.response_code.decode("ascii", "replace") if o.response_code else None),
        ("Auth. code", o.authorization_code.decode("ascii", "replace") if o.authorization_code else None),
        ("RRN", o.host_reference),
        ("Issuer auth", o.issuer_authentication),
        ("Scripts", o.script_results.hex().upper() or None),
        ("Language", ", ".join(o.language) or None),
        *_host_rows(result.host),
        ("Message", _refusal(o)),
        ("Payment", f"{result.payment['id']}: {result.payment['state'].replace('_', ' ')}"
         if result.payment else None),
        ("Forwarded", _forwarded_text(result.forwarded)),
        ("Ticket", f"{result.ticket['seq']} ({result.ticket['type']}, signature {result.ticket['extract']})"
         if result.ticket else None),
        *_route_rows(result.route),
        ("APDUs", result.apdus),
    ]
    lines += [f"{key:11} {value}" for key, value in rows if value is not None]
    lines += [f"ALERT       {alert}" for alert in result.alerts]
    if result.ticket and result.ticket.get("receipt"):
        lines += ["", *result.ticket["receipt"]]
    return "\n".join(lines)


def interactive_console() -> bool:
    return sys.stdin.isatty()
