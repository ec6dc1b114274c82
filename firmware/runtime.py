"""`tpe run`: the terminal itself, one asyncio event loop on the main thread (ARCHITECTURE
principle 5) and its services, each with a clean start and stop:

- the fiscal journal: `fiscal.start` (version, digest of the configuration file, truncation
  guard) at start, `fiscal.stop` at stop;
- the payments, settled after a power cut (`sale.recover`) before anything is sent;
- the acquirer host's client over the link manager, on this loop (the kernel's worker thread
  reaches it through `sale.RoutedAuthorizer`), the link manager's health checks
  (`LinkManager.run`) and the store-and-forward `Forwarder`, woken after an offline sale;
- the status bar (`ui.contract.Status`), pushed every second and when something changes;
- the PC/SC reader (`firmware.reader.AsyncReader`): one worker thread waits for the card while
  the present-card screen shows, and runs the kernel on it;
- the UI: any `ui.contract.UiPort`, the touchscreen's run task when it has one;
- the systemd notifications (`firmware.sd_notify`): READY, WATCHDOG from this loop, STOPPING.

The sale: amount asked -> present card -> the card -> the kernel in the reader's thread with the
cardholder's questions on the UI (`firmware.ui_prompt`) and the host client -> outcome ->
receipt of the journalled ticket -> idle. SIGTERM or SIGINT stop the terminal in order: a
question on screen is answered "cancelled", the sale in progress runs to its end through the
kernel and the payments' state machine (never killed mid-commit), then the services stop and
the journal records the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import hashlib
import inspect
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emv.outcome import Outcome as CardOutcome
from emv.outcome import OutcomeKind
from emv.requests import HostStatus, OnlineRequest, OnlineResponse
from firmware import driver, e_receipt, fiscal, fleet_config, merchant_settings, sale, settlement
from firmware.config import LINK_CELLULAR, AppConfig, UpdateConfig
from firmware.fleet import FleetService
from firmware.forwarder import RETRY, Forwarder
from firmware.host_client import AuthorizationReport, HostClient, HostClientError, HostUnavailable
from firmware.host_store import HostStore, HostStoreError
from firmware.journal import Journal, JournalError
from firmware.links import LinkManager
from firmware.merchant_code import CodeGuard, parse_hash
from firmware.messages import MessageError, ReversalReason
from firmware.money import CURRENCIES, MAX_AMOUNT, alpha
from firmware.payment_records import REFUND, PaymentRecorder, RecordError, amend_reversal
from firmware.payments import Payment, PaymentsError, State
from firmware.pin_pad import PinPad, PinPadError
from firmware.printer import EscPosPrinter, PrinterError
from firmware.reader import AsyncReader, CardSession, CardTimeoutError, PcscReader, ReaderError
from firmware.receipt import ReceiptError, receipt_lines, software_version
from firmware.saf_figures import SafFigures, figures
from firmware.saf_queue import SafQueueError
from firmware.sd_notify import Notifier
from firmware.terminal_keys import TerminalKeys, TerminalKeysError
from firmware.ui_prompt import LanguageWatch, UiPrompt
from firmware.ui_script import ScriptedUi
from provisioning import slots
from ui.contract import (
    OPEN_MENU,
    SEND_NOW,
    AmountEntry,
    AskAmount,
    AskCancel,
    AskCode,
    AskMenu,
    AskOfflineQueue,
    AskPreauth,
    AskReceipt,
    AskSettings,
    AskSettlement,
    AskTicket,
    Error,
    Idle,
    Money,
    Outcome,
    PreauthChoice,
    PreauthLine,
    PresentCard,
    Processing,
    Receipt,
    SchemeLine,
    Settings,
    SettlementReport,
    Status,
    TicketChoice,
    TicketLine,
    UiPort,
    View,
)

log = logging.getLogger(__name__)

CARD_WAIT = 60.0  # seconds the present-card screen waits for a card before going back to idle
CARD_SLICE = 1.0  # seconds of each wait for the card in pcscd
ERROR_PAUSE = 3.0  # seconds an error screen stays before idle
OUTCOME_PAUSE = 2.0  # seconds the outcome stays before the receipt or idle
STATUS_INTERVAL = 1.0  # the status bar's clock
FIGURES_INTERVAL = 30.0  # the queue's figures, the route's kind and the battery read again
LINK_CHECK_INTERVAL = 30.0
STOP_TIMEOUT = 5.0  # seconds for each service to stop (the sale in progress is always awaited)
OFFLINE_KINDS = (OutcomeKind.APPROVED_OFFLINE, OutcomeKind.APPROVED_UNABLE_ONLINE)
# Status.alerts keys this module raises, besides the queue's (`saf_alerts`)
ALERT_JOURNAL_INTEGRITY = "journal_integrity"  # the fiscal journal's start-up check failed
ALERT_JOURNAL_ERROR = "journal_error"  # a ticket or event could not be journalled
SAF_ALERTS = {"overdue": "saf_overdue", "declined_after_the_fact": "declined_after_the_fact",
              "set_aside": "saf_set_aside"}


class _NotVoidable(Exception):
    """The bank already has the payment for good: a refund, not a void, gives the money back."""


class StartError(Exception):
    """A service the terminal cannot run without did not start: `kind` ("state", "journal",
    "host") and why. What had started is stopped again."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass
class SaleReport:
    """What one pass through the sale flow did (tests, logs)."""

    amount: int
    refund: bool = False
    preauth: bool = False
    outcome: CardOutcome | None = None
    payment: dict[str, Any] | None = None  # `Payment.as_dict()`
    ticket: dict[str, Any] | None = None  # seq, type, extract, receipt lines
    host: AuthorizationReport | None = None
    error: str | None = None  # the `Error` view's kind when one ended the flow
    asked: list[str] = field(default_factory=list)  # the kernel's cardholder requests
    unjournalled: list[str] = field(default_factory=list)


@dataclass
class _Done:
    """The worker thread's result of one card transaction."""

    outcome: CardOutcome
    payment: dict[str, Any] | None
    ticket: dict[str, Any] | None
    host: AuthorizationReport | None
    unjournalled: list[str]
    alerts: list[str]


class _ShowingAuthorizer:
    """The host's authorizer, telling the merchant what happens: "authorizing", then, when the
    bank could not be reached, that the payment goes on offline within the limits."""

    def __init__(self, inner: driver.Authorizer, prompt: UiPrompt) -> None:
        self._inner = inner
        self._prompt = prompt

    def authorize(self, request: OnlineRequest) -> OnlineResponse:
        self._prompt.show(Processing("authorizing"))
        response = self._inner.authorize(request)
        self._prompt.show(Error("no_network_offline") if response.status is HostStatus.UNABLE
                          else Processing("completing"))
        return response


class TrainingAuthorizer:
    """Training mode's bank: every online request approved here, '00', without a message
    leaving the terminal (no issuer authentication data: EMV 4.4 Book 3, 10.9, the card decides
    at its second GENERATE AC)."""

    def __init__(self, prompt: UiPrompt) -> None:
        self._prompt = prompt
        self.asked = 0

    def authorize(self, request: OnlineRequest) -> OnlineResponse:
        self.asked += 1
        self._prompt.show(Processing("authorizing"))
        return OnlineResponse(HostStatus.RESPONDED, approved=True, response_code=b"00",
                              authorization_code=b"TRAIN0", host_reference="TRAINING")


def config_digest(config: AppConfig) -> str | None:
    """SHA-256 of the configuration file's bytes, for the journal's `config_change` event."""
    try:
        return hashlib.sha256(Path(config.source).read_bytes()).hexdigest()
    except OSError as exc:
        log.warning("configuration digest unavailable: %s", exc)
        return None


def os_route_kind(proc: Path = Path("/proc/net/route"), sys_net: Path = Path("/sys/class/net")) -> str:
    """"wifi" when the OS's default route leaves through a wireless interface, else "ethernet"."""
    try:
        for line in proc.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000":  # destination 0.0.0.0: the default route
                return "wifi" if (sys_net / fields[0] / "wireless").exists() else "ethernet"
    except OSError:
        pass
    return "ethernet"


def battery(power: Path = Path("/sys/class/power_supply")) -> tuple[int | None, bool]:
    """The first battery's charge in percent and whether it charges (Linux power_supply class)."""
    try:
        supplies = sorted(power.iterdir())
    except OSError:
        return None, False
    for supply in supplies:
        try:
            if (supply / "type").read_text().strip() != "Battery":
                continue
            percent = int((supply / "capacity").read_text().strip())
            charging = (supply / "status").read_text().strip() == "Charging"
        except (OSError, ValueError):
            continue
        return max(0, min(100, percent)), charging
    return None, False


def saf_alerts(found: SafFigures) -> tuple[str, ...]:
    return tuple(SAF_ALERTS.get(alert, alert) for alert in found.alerts)


class CardReader:
    """The PC/SC reader of [reader] in one worker thread: waits for a card, runs the kernel on
    it in the same thread (pcsc-lite calls stay on one thread), disconnects."""

    def __init__(self, name: str | None, factory: Callable[[], PcscReader] = PcscReader) -> None:
        self._reader = AsyncReader(factory)
        self._wanted = name
        self.name: str | None = None
        self._letting_go: set[asyncio.Future[None]] = set()

    async def card(self, timeout: float) -> CardSession:
        """The card, once one is in the reader (`CardTimeoutError` after `timeout` s). Waits in
        slices of `CARD_SLICE` s in pcscd (SCardGetStatusChange sleeps there), so that a
        cancelled wait frees the reader's thread soon; a card connected just as the wait was
        cancelled is let go."""
        name = await self.find()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise CardTimeoutError(f"no card in {timeout:g} s")
            wait = min(CARD_SLICE, left)
            attempt = asyncio.ensure_future(
                self._reader.run(lambda r, wait=wait: r.connect_when_ready(name, wait)))
            try:
                return await asyncio.shield(attempt)
            except CardTimeoutError:
                continue
            except asyncio.CancelledError:
                attempt.add_done_callback(self._let_go)
                raise

    def _let_go(self, attempt: asyncio.Future[CardSession]) -> None:
        if not attempt.cancelled() and attempt.exception() is None:
            task = asyncio.ensure_future(self.disconnect(attempt.result()))
            self._letting_go.add(task)
            task.add_done_callback(self._letting_go.discard)

    async def find(self) -> str:
        """The reader's name, once PC/SC lists it (`ReaderError` otherwise)."""
        if self.name is None:
            self.name = await self._reader.run(lambda r: r.pick(self._wanted))
        return self.name

    async def run(self, call: Callable[[], Any]) -> Any:
        return await self._reader.run(lambda _r: call())

    async def disconnect(self, session: CardSession) -> None:
        with contextlib.suppress(ReaderError):
            await self._reader.run(lambda _r: session.disconnect())

    def close(self) -> None:
        self._reader.close()


class Terminal:
    """The firmware's services and the merchant's sale flow on one event loop.

    `ui` is any `UiPort`; `notifier` the systemd notification socket (by default from the
    environment); `reader_factory` opens the PC/SC context. The pauses and intervals are
    seconds (tests shorten them)."""

    def __init__(self, config: AppConfig, ui: UiPort, *, notifier: Notifier | None = None,
                 reader_factory: Callable[[], PcscReader] = PcscReader, card_wait: float = CARD_WAIT,
                 error_pause: float = ERROR_PAUSE, outcome_pause: float = OUTCOME_PAUSE,
                 status_interval: float = STATUS_INTERVAL, figures_interval: float = FIGURES_INTERVAL,
                 link_check_interval: float = LINK_CHECK_INTERVAL, forward_retry: float = RETRY) -> None:
        # the configuration in force: the file's, with what the fleet pushed (firmware/fleet_config.py)
        config, self.remote = fleet_config.effective(config)
        self.config = config
        self.ui = ui
        self.notifier = notifier if notifier is not None else Notifier()
        self._reader_factory = reader_factory
        self.card_wait = card_wait
        self.error_pause = error_pause
        self.outcome_pause = outcome_pause
        self.status_interval = status_interval
        self.figures_interval = figures_interval
        self.link_check_interval = link_check_interval
        self.forward_retry = forward_retry
        self.store: HostStore | None = None
        self.pin_pad: PinPad | None = None
        self.recorder: PaymentRecorder | None = None
        self.journal: Journal | None = None
        self.links: LinkManager | None = None
        self.client: HostClient | None = None
        self.authorizer: sale.RoutedAuthorizer | None = None
        self.forwarder: Forwarder | None = None
        self.reader: CardReader | None = None
        self.fleet: FleetService | None = None
        self.reports: list[SaleReport] = []  # the last sales, newest last
        self.alerts: set[str] = set()
        self.stop_cause: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cellular: Any = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._flows: asyncio.Task[None] | None = None
        self._worker: asyncio.Future[Any] | None = None  # the card transaction in progress
        self._prompt: UiPrompt | None = None
        self._stop_requested = asyncio.Event()
        self._poke = asyncio.Event()
        self._figures: SafFigures | None = None
        self._figures_at = -1e9
        self._route_kind = "ethernet"
        self._battery: tuple[int | None, bool] = (None, False)
        self._seen_reports = 0
        self._stopped = False
        merchant = config.merchant
        self.guard = (CodeGuard(parse_hash(merchant.code_hash), max_tries=merchant.max_tries,
                                lockout=merchant.lockout) if merchant.code_hash else None)
        self.settings = merchant_settings.load(config.state.folder, Settings(
            language=merchant.language, shuffle=config.pin_pad.shuffle, training=False))
        self.settlements: list[SettlementReport] = []  # the settlements done, newest last

    # --- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start every service, then the sale flow; READY=1 once done. `StartError` when the
        state, the journal or the host client cannot be opened (what started is stopped)."""
        self._loop = asyncio.get_running_loop()
        try:
            await self._start_services()
        except BaseException:
            await self._stop_services("start failed")
            raise
        self._flows = self._loop.create_task(self._serve(), name="sale-flow")
        self.notifier.ready("idle")
        log.info("terminal: started (%s)", software_version())

    async def _start_services(self) -> None:
        config = self.config
        try:
            self.store = sale.state_store(config)
            keys = sale.terminal_keys_of(config, self.store)
        except (HostStoreError, TerminalKeysError) as exc:
            raise StartError("state", str(exc)) from exc
        self.pin_pad = sale.pin_pad_of(config, keys) if keys is not None else None
        if config.host is not None:
            try:
                self.recorder = sale.recorder_of(config, self.store)
            except RecordError as exc:
                raise StartError("state", str(exc)) from exc
            try:  # before the journal opens: recovery journals the tickets a power cut lost
                sale.recover(self.recorder.payments, config)
            except sale.SaleJournalError as exc:
                log.critical("recovery: %s", exc)
                self.alerts.add(ALERT_JOURNAL_ERROR)
        else:
            log.warning("terminal: no [host] section: no authorization online, no payment recorded")
        try:
            self.journal = Journal(config.state.folder)
            problems = fiscal.start(self.journal, software_version(), config_digest=config_digest(config))
        except (JournalError, fiscal.FiscalError) as exc:
            raise StartError("journal", f"the fiscal journal cannot be started: {exc}") from exc
        if problems:
            self.alerts.add(ALERT_JOURNAL_INTEGRITY)
        if config.host is not None and keys is not None and self.recorder is not None:
            await self._start_host(self.store, keys, self.recorder)
        self._open_reader()
        loop = asyncio.get_running_loop()
        if self.links is not None and self.forwarder is not None:
            self._tasks["links"] = loop.create_task(self.links.run(), name="link-checks")
            self._tasks["forwarder"] = loop.create_task(self.forwarder.run(), name="forwarder")
        self._apply_language(self.settings.language)
        run_ui = getattr(self.ui, "run", None)
        if callable(run_ui) and inspect.iscoroutinefunction(run_ui):
            task = self._tasks["ui"] = loop.create_task(run_ui(), name="ui")
            task.add_done_callback(self._ui_ended)
        self._start_fleet()
        if self.config.update is not None:
            self._tasks["health"] = loop.create_task(self._health(self.config.update), name="health")
        self._tasks["status"] = loop.create_task(self._publish_status(), name="status")
        self._tasks["watchdog"] = loop.create_task(self.notifier.keep_alive(), name="watchdog")

    async def _start_host(self, store: HostStore, keys: TerminalKeys, recorder: PaymentRecorder) -> None:
        config = self.config
        host = config.host
        if host is None:
            return
        problems: dict[str, str] = {}
        if config.modem is not None and LINK_CELLULAR in config.links.order:
            try:
                self._cellular = await sale.open_cellular(config.modem)
            except sale.LinkSetupError as exc:
                if config.links.order == (LINK_CELLULAR,):
                    raise StartError("host", str(exc)) from exc
                log.warning("link: cellular left out: %s", exc)
                problems[LINK_CELLULAR] = str(exc)
        try:
            self.links = sale.link_manager(config, self._cellular.module if self._cellular else None)
            self.links.check_interval = self.link_check_interval
            self.client = HostClient(host, store, keys, sale.acceptor_of(config),
                                     connect=sale.link_connect(self.links), recorder=recorder)
        except HostClientError as exc:
            raise StartError("host", str(exc)) from exc
        self.authorizer = sale.RoutedAuthorizer(self.client, asyncio.get_running_loop(), self.links, problems)
        self.forwarder = Forwarder(self.client, self.links, retry=self.forward_retry)
        self.links.subscribe(lambda _event: self._poke.set())

    def _start_fleet(self) -> None:
        """The fleet link ([fleet]) in its own task: a broker away, or fleet files that do not
        load, never keep the terminal from selling."""
        if self.config.fleet is None:
            return
        try:
            self.fleet = FleetService(self)
        except (OSError, ValueError) as exc:
            log.error("fleet: not started: %s", exc)
            return
        self._tasks["fleet"] = asyncio.get_running_loop().create_task(self.fleet.run(), name="fleet")

    async def _health(self, update: UpdateConfig) -> None:
        """A slot on trial after an update (provisioning/slots.py) is committed once the
        firmware runs with its reader found, its link to the host up and its journal verified;
        by the deadline otherwise, the terminal stops and the next start rolls back."""
        try:
            trial = slots.status(update.root).get("trial")
        except (slots.SlotsError, OSError) as exc:
            log.error("update: the slots of %s cannot be read: %s", update.root, exc)
            return
        if not trial:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + update.health_deadline
        problems: list[str] = ["not checked yet"]
        while loop.time() < deadline:
            problems = await self._health_problems()
            if not problems:
                committed = slots.healthy(update.root)
                log.info("update: slot %s is healthy: committed", committed)
                self._audit("software_update", slot=committed, result="committed")
                return
            await asyncio.sleep(min(2.0, max(0.1, deadline - loop.time())))
        log.critical("update: slot %s not healthy after %g s (%s): stopping, the next start rolls back",
                     trial.get("slot"), update.health_deadline, "; ".join(problems))
        self._audit("software_update", slot=trial.get("slot"), result="unhealthy", problems=problems)
        self.request_stop("not healthy after the update")

    async def _health_problems(self) -> list[str]:
        problems = []
        reader = self._open_reader()
        if reader is None:
            problems.append("no card reader")
        else:
            try:
                await reader.find()
            except ReaderError as exc:
                problems.append(f"no card reader: {exc}")
        if self.links is not None:
            await self.links.check()
            if self.links.current is None:
                problems.append("no link to the host")
        if self.journal is None or ALERT_JOURNAL_INTEGRITY in self.alerts:
            problems.append("the journal did not verify")
        return problems

    @property
    def remote_version(self) -> int:
        """The version of the remote configuration in force (0: none)."""
        return self.remote.version

    def apply_config(self, config: AppConfig, remote: fleet_config.Overlay) -> None:
        """A configuration the fleet pushed (`remote`, which `firmware.fleet_config.check`
        accepted) in force from the next sale: the offline limits, the merchant's code and
        tips, the e-receipt and the printer are read from `self.config` where they are used."""
        if config.merchant != self.config.merchant:
            merchant = config.merchant
            self.guard = (CodeGuard(parse_hash(merchant.code_hash), max_tries=merchant.max_tries,
                                    lockout=merchant.lockout) if merchant.code_hash else None)
        self.config = config
        self.remote = remote
        self.queue_changed()

    def queue_changed(self) -> None:
        """Read the queue's figures again at the next status."""
        self._figures_at = -1e9
        self._poke.set()

    def _ui_ended(self, task: asyncio.Task[Any]) -> None:
        """The UI's own task ended (its window closed, or it failed): the terminal stops."""
        if task.cancelled() or self._stop_requested.is_set():
            return
        if task.exception() is not None:
            log.error("the UI stopped: %r", task.exception())
        self.request_stop("the UI stopped")

    def _open_reader(self) -> CardReader | None:
        if self.reader is None:
            try:
                self.reader = CardReader(self.config.reader.name, self._reader_factory)
            except ReaderError as exc:
                log.warning("reader: not available: %s", exc)
        return self.reader

    def request_stop(self, cause: str = "stop requested") -> None:
        """Begin the orderly shutdown (call on the loop, e.g. from a signal handler): the
        question on screen is answered "cancelled"; `run_until_stopped` then stops."""
        if self._stop_requested.is_set():
            return
        self.stop_cause = cause
        log.info("terminal: stopping (%s)", cause)
        self.notifier.stopping()
        self._stop_requested.set()
        if self._prompt is not None:
            self._prompt.cancel()

    async def stop(self) -> None:
        """Stop the sale flow (the card transaction in progress runs to its end), then every
        service; the journal records the stop. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if not self._stop_requested.is_set():
            self.request_stop("stopped")
        if self._prompt is not None:
            self._prompt.cancel()
        if self._flows is not None:
            if self._worker is not None:  # never cut a sale mid-commit: let the kernel end it
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._worker)
            self._flows.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flows
        await self._stop_services(self.stop_cause or "stopped")
        log.info("terminal: stopped")

    async def _stop_services(self, cause: str) -> None:
        if self.fleet is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.fleet.stop(), STOP_TIMEOUT)
        await self._stop_ui()
        for name in ("health", "fleet", "forwarder", "links", "status", "watchdog"):
            task = self._tasks.pop(name, None)
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, STOP_TIMEOUT)
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.close(), STOP_TIMEOUT)
        if self._cellular is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._cellular.close(), sale.MODEM_CLOSE_TIMEOUT)
            self._cellular = None
        if self.reader is not None:
            reader, self.reader = self.reader, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(reader.close), STOP_TIMEOUT)
        if self.journal is not None:
            try:
                fiscal.stop(self.journal, cause=cause)
            except (JournalError, fiscal.FiscalError) as exc:
                log.critical("fiscal journal: the stop could NOT be journalled: %s", exc)
            self.journal.close()
            self.journal = None
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                self.recorder.queue.close()
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()

    async def _stop_ui(self) -> None:
        """The UI's `stop()`, its run task awaited (cancelled if it lingers), then `close()`."""
        for method in ("stop", "close"):
            call = getattr(self.ui, method, None)
            if callable(call):
                try:
                    result = call()
                    if inspect.isawaitable(result):
                        await asyncio.wait_for(result, STOP_TIMEOUT)
                except Exception:
                    log.exception("the UI's %s failed", method)
            task = self._tasks.pop("ui", None)
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, STOP_TIMEOUT)

    async def run_until_stopped(self) -> None:
        """Start, serve until SIGTERM, SIGINT or `request_stop`, stop. Call on the main thread."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            await self.start()
            await self._stop_requested.wait()
        finally:
            await self.stop()
            for sig in signals:
                loop.remove_signal_handler(sig)

    # --- the sale flow -----------------------------------------------------------------------

    async def _serve(self) -> None:
        while not self._stop_requested.is_set():
            try:
                await self.sale_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one sale must not take the terminal down
                log.exception("sale flow failed")
                self._show(Error("try_again"))
                await asyncio.sleep(self.error_pause)

    def _show(self, view: View) -> None:
        try:
            self.ui.show(view)
        except Exception:
            log.exception("the UI failed to show %s", type(view).__name__)

    def _money(self, amount: int) -> Money:
        terminal = self.config.kernel.terminal
        return Money(amount, alpha(terminal.currency), terminal.currency_exponent)

    async def sale_once(self, *, refund: bool = False, preauth: bool = False) -> SaleReport | None:
        """One pass: the amount, the card, the kernel, the outcome, the receipt; None when the
        merchant keyed no amount. A refund needs the merchant code (asked here unless `refund`:
        the menu asked it already). A pre-authorization (`preauth`, from the menu) reserves the
        amount: no tip, no ticket, completed or released later (`preauths`)."""
        terminal = self.config.kernel.terminal
        self._show(Idle())
        plain = not (refund or preauth)
        entry = await self.ui.ask(AskAmount(alpha(terminal.currency), terminal.currency_exponent,
                                            tip=self.config.merchant.tips and plain, menu=plain,
                                            refund=refund,
                                            refund_allowed=self.guard is not None and not preauth,
                                            purpose="preauth" if preauth else "sale"))
        if entry is None or self._stop_requested.is_set():
            return None
        if entry == OPEN_MENU:
            await self.merchant_menu()
            return None
        if not (isinstance(entry, AmountEntry) and _minor_units(entry.amount, 1)
                and _minor_units(entry.tip, 0) and entry.amount + entry.tip <= MAX_AMOUNT):
            log.error("sale: the amount screen answered %r: not an amount", type(entry).__name__)
            return None
        if preauth:
            entry = AmountEntry(entry.amount)
        if entry.refund and not refund and not await self.merchant_code("refund"):
            return None
        if refund and not entry.refund:
            entry = AmountEntry(entry.amount, 0, True)
        amount = entry.amount + entry.tip
        report = SaleReport(amount, refund=bool(entry.refund), preauth=preauth)
        self._remember(report)
        money = self._money(amount)
        reader = self._open_reader()
        if reader is None:
            return await self._error(report, "reader_missing")
        try:
            view = PresentCard(money, refund=report.refund, preauth=preauth)
            session = await self._present_card(reader, view)
        except CardTimeoutError:
            log.info("sale: no card within %g s", self.card_wait)
            return report
        except ReaderError as exc:
            log.error("reader: %s", exc)
            await self._drop_reader()
            return await self._error(report, "reader_missing")
        if session is None:
            log.info("sale: cancelled on the present-card screen")
            report.error = "cancelled"
            return report
        try:
            self._show(Processing("reading"))
            done = await self._transact(reader, session, report, money)
        finally:
            await reader.disconnect(session)
        if done is None:
            return await self._error(report, "try_again")
        self._after_card(done)
        view = _outcome_view(done.outcome, money, preauth=preauth)
        if isinstance(view, Error):
            return await self._error(report, view.kind)
        self._show(view)
        lines = (done.ticket or {}).get("receipt")
        if self._stop_requested.is_set():
            return report
        await asyncio.sleep(self.outcome_pause)
        if lines and done.ticket is not None:
            await self._receipt(Receipt(tuple(lines), qr=self._e_receipt(done.ticket.get("seq"),
                                                                         done.ticket.get("extract")),
                                        training=self.settings.training))
        return report

    def _e_receipt(self, seq: Any, extract: Any) -> str | None:
        """The e-receipt's address of ticket `seq` ([receipt] url), or None: no service
        configured, or a training ticket (worth nothing)."""
        receipt = self.config.receipt
        if receipt is None or self.settings.training:
            return None
        if not isinstance(seq, int) or not isinstance(extract, str):
            return None
        return e_receipt.fill(receipt.url, terminal=self.config.kernel.terminal.terminal_id, ticket=seq,
                              extract=extract)

    async def _receipt(self, receipt: Receipt) -> None:
        """The receipt on screen (AGEC: printed only on request), printed on the [printer]."""
        printer = self.config.printer
        answer = await self.ui.ask(AskReceipt(dataclasses.replace(receipt, printable=printer is not None)))
        if answer != "print":
            return
        if printer is None:
            log.info("receipt: printing asked, no printer configured")
            return
        try:
            await EscPosPrinter.from_config(printer).print_receipt(receipt.lines)
        except PrinterError as exc:
            log.error("receipt: not printed: %s", exc)
            self._show(Error("printer"))
            await asyncio.sleep(self.error_pause)

    # --- the merchant's menu -------------------------------------------------------------------

    GUARDED = ("refund", "completion", "cancel", "settlement", "settings", "training")  # the merchant code
    HOST_ONLY = ("preauth", "completion", "settlement", "offline_queue")

    def menu_items(self) -> tuple[str, ...]:
        """The flows offered (`ui.contract.MENU_ITEMS`): those behind the merchant code only
        with a code configured, those of the bank only with a host, and no pre-authorization
        in training mode."""
        items = ["refund", "preauth", "completion", "cancel", "settlement", "duplicate", "history",
                 "offline_queue", "settings", "training"]
        return tuple(item for item in items
                     if (self.guard is not None or item not in self.GUARDED)
                     and (self.client is not None or item not in self.HOST_ONLY)
                     and (self.journal is not None or item not in ("cancel", "duplicate", "history",
                                                                    "completion"))
                     and not (self.settings.training and item in ("preauth", "completion")))

    async def merchant_menu(self) -> None:
        """The menu the keypad opened, then the flow chosen; "back" goes back to the keypad."""
        choice = await self.ui.ask(AskMenu(self.menu_items()))
        if choice not in self.menu_items():
            return
        if choice in self.GUARDED and not await self.merchant_code(choice):
            return
        if choice == "offline_queue":
            await self.offline_queue()
        elif choice == "refund":
            await self.sale_once(refund=True)
        elif choice == "preauth":
            await self.sale_once(preauth=True)
        elif choice == "completion":
            await self.preauths()
        elif choice == "cancel":
            await self.tickets(("cancel",), code_given=True)
        elif choice in ("duplicate", "history"):
            await self.tickets(("duplicate",) if choice == "duplicate" else ("duplicate", "cancel"))
        elif choice == "settlement":
            await self.settle()
        elif choice == "settings":
            await self.change_settings()
        elif choice == "training":
            await self.set_training(not self.settings.training)

    async def merchant_code(self, purpose: str) -> bool:
        """The merchant code asked until it is right, the merchant goes back, or the guard
        locks; each check is journalled as a `login` audit event (role, purpose, result)."""
        guard = self.guard
        if guard is None:
            return False
        question = AskCode(purpose, tries_left=guard.max_tries - guard.failures, locked=guard.locked())
        while True:
            code = await self.ui.ask(question)
            if question.locked or not isinstance(code, str):
                return False
            attempt = guard.check(code)
            self._audit("login", role="merchant", purpose=purpose, result=attempt.result)
            if attempt.result == "ok":
                return True
            log.warning("merchant code refused for %s (%d wrong in a row)", purpose, attempt.failures)
            question = AskCode(purpose, tries_left=attempt.tries_left, refused=True,
                               locked=attempt.result == "locked" or guard.locked())

    def _audit(self, event: str, **details: Any) -> None:
        if self.journal is None:
            return
        try:
            fiscal.audit(self.journal, event, **details)
        except (JournalError, fiscal.FiscalError) as exc:
            log.critical("fiscal journal: the %s event could NOT be journalled: %s", event, exc)
            self.alerts.add(ALERT_JOURNAL_ERROR)

    # --- tickets: history, duplicate, void ----------------------------------------------------

    HISTORY = 10  # tickets listed

    def ticket_lines(self) -> tuple[TicketLine, ...]:
        if self.journal is None:
            return ()
        entries = settlement.history(self.journal, last=self.HISTORY, training=self.settings.training)
        return tuple(TicketLine(e.seq, e.kind, Money(e.amount, e.currency,
                                                             CURRENCIES.get(e.currency, (0, 2))[1]),
                                _local_minute(e.at), e.cancelled, e.training) for e in entries)

    async def tickets(self, actions: tuple[str, ...], *, code_given: bool = False) -> None:
        """The last tickets; the one picked is printed again (duplicate) or voided (merchant
        code, unless `code_given`)."""
        choice = await self.ui.ask(AskTicket(self.ticket_lines(), actions))
        if not (isinstance(choice, TicketChoice) and choice.action in actions):
            return
        if choice.action == "duplicate":
            await self.duplicate(choice.seq)
        elif choice.action == "cancel" and (code_given or await self.merchant_code("cancel")):
            await self.void(choice.seq)

    async def duplicate(self, seq: int) -> list[str] | None:
        """A duplicate of ticket `seq` journalled (`fiscal.reprint`) and its receipt shown,
        marked DUPLICATA."""
        journal, training = self.journal, self.settings.training
        if journal is None:
            return None
        try:
            copy = fiscal.reprint(journal, seq, training=training)
            original = next(journal.records(fiscal.chain_of("ticket", training), since=seq))
            lines = receipt_lines(copy, version=software_version(), original=original,
                                  merchant=self.config.kernel.terminal.merchant_name_location or None)
        except (JournalError, fiscal.FiscalError, ReceiptError, StopIteration) as exc:
            log.error("duplicate of ticket %d: %s", seq, exc)
            await self._error(SaleReport(0), "try_again")
            return None
        await self._receipt(Receipt(tuple(lines), qr=self._e_receipt(original.seq, original.extract),
                                    duplicate=True, training=training))
        return lines

    async def void(self, seq: int) -> dict[str, Any] | None:
        """Ticket `seq` cancelled in the journal (`fiscal.cancel`), and the card payment it
        records undone at the bank (`_bank_undo`): an online approval not yet settled is
        reversed (0400, reason '17'); an advice (offline approval, completion) that has not
        left yet is withdrawn from the queue. A payment the bank already has for good (its
        batch settled, its advice sent) is refused with `Error("void_refused")`, the ticket
        left as it is: the merchant makes a refund. Returns what was done."""
        journal, training = self.journal, self.settings.training
        if journal is None:
            return None
        listed = settlement.history(journal, last=1000, training=training)
        entry = next((e for e in listed if e.seq == seq), None)
        undo: tuple[str, Payment] | None = None
        if entry is not None and entry.payment is not None and not training:
            try:
                undo = self._bank_undo(entry.payment)
            except _NotVoidable as exc:
                log.warning("void of ticket %d refused: %s", seq, exc)
                await self._error(SaleReport(0), "void_refused")
                return {"ticket": seq, "cancellation": None, "refused": str(exc)}
        try:
            record = fiscal.cancel(journal, seq, training=training)
        except (JournalError, fiscal.FiscalError) as exc:
            log.error("void of ticket %d: %s", seq, exc)
            await self._error(SaleReport(0), "try_again")
            return None
        done: dict[str, Any] = {"ticket": seq, "cancellation": record.seq, "reversal": None,
                                "withdrawn": None}
        if undo is not None:
            how, payment = undo
            done["reversal" if how == "reverse" else "withdrawn"] = self._undo(how, payment)
            self._wake_forwarder()
        try:
            lines = receipt_lines(record, version=software_version(),
                                  merchant=self.config.kernel.terminal.merchant_name_location or None)
        except ReceiptError as exc:
            log.error("void of ticket %d: no receipt: %s", seq, exc)
            return done
        await self._receipt(Receipt(tuple(lines), qr=self._e_receipt(record.seq, record.extract),
                                    training=training))
        return done

    def _bank_undo(self, payment_id: int) -> tuple[str, Payment] | None:
        """How a void undoes payment `payment_id` at the bank: ("reverse", payment) for an online
        approval of the open batch, ("withdraw", payment) for an advice still waiting unsent;
        None when nothing reached the bank. `_NotVoidable` when the bank has it for good."""
        recorder = self.recorder
        if recorder is None:
            return None
        try:
            payment = recorder.payments.get(payment_id)
            batch = settlement.load_state(self.config.state.folder)
            advice = recorder.queue.get(payment.advice_item) if payment.advice_item is not None else None
        except (PaymentsError, SafQueueError, settlement.SettlementError) as exc:
            raise _NotVoidable(f"payment {payment_id} cannot be read: {exc}") from exc
        if payment.id <= batch.last_payment:
            raise _NotVoidable(f"payment {payment_id} is in a settled batch")
        if advice is not None:
            if advice.settled is not None or advice.attempts > 0:
                raise _NotVoidable(f"the advice of payment {payment_id} has gone to the bank")
            return "withdraw", payment
        if payment.state is State.APPROVED and payment.reversal_item is not None:
            return "reverse", payment
        return None

    def _undo(self, how: str, payment: Payment) -> int | None:
        """The reversal (reason '17') of `payment` queued, or its advice withdrawn; the queue
        item, or None when that could not be written (logged, alerted: the ticket is already
        cancelled, a technician must finish the job)."""
        recorder = self.recorder
        if recorder is None:
            return None
        try:
            now = datetime.datetime.now(datetime.UTC)
            if how == "withdraw" and payment.advice_item is not None:
                recorder.queue.cancel(payment.advice_item, "voided by the merchant", now)
                log.info("void: payment %d: its advice, item %d, withdrawn", payment.id, payment.advice_item)
                return payment.advice_item
            if payment.reversal_item is None:
                return None
            original = recorder.queue.get(payment.reversal_item).payload
            payload = amend_reversal(original, ReversalReason.CANCELLED)
            item = recorder.queue.add("reversal", payload, amount=payment.amount, currency=payment.currency,
                                      created=now, ref=f"void-{payment.id}")
        except Exception as exc:  # the ticket is cancelled: the bank's side needs a technician
            log.critical("void: payment %d could NOT be undone at the bank: %s", payment.id, exc)
            self.alerts.add(ALERT_JOURNAL_ERROR)
            return None
        log.info("void: payment %d reversed (reason 17), queue item %d", payment.id, item)
        return item

    # --- settlement ---------------------------------------------------------------------------

    async def settle(self, *, ask: bool = True) -> SettlementReport | None:
        """The end-of-day settlement: the totals per scheme since the last one, the 0500 and
        its 0510, the batch number moved on once the host took the batch, the fiscal day
        closed, the report shown (unless not `ask`: a fleet job)."""
        if self.client is None or self.recorder is None or self.journal is None:
            return None
        folder = self.config.state.folder
        currency = self.config.kernel.terminal.currency
        if ask:
            self._show(Processing("forwarding"))
        try:
            state = settlement.load_state(folder)
            totals, last = settlement.scheme_totals(self.recorder.payments.all(), self.journal,
                                                    after=state.last_payment, currency=currency)
        except (settlement.SettlementError, JournalError) as exc:
            log.error("settlement: %s", exc)
            return None
        try:
            code = await self.client.reconcile(totals, batch_number=state.batch, currency=currency)
        except (HostUnavailable, HostClientError, MessageError) as exc:
            log.warning("settlement: batch %d not sent: %s", state.batch, exc)
            code = None
        result = ("host_unreachable" if code is None else "in_balance" if code == "00"
                  else "out_of_balance" if code == "95" else "refused")
        if code in ("00", "95"):  # the host closed the batch either way
            try:
                settlement.save_state(folder, settlement.next_state(state, last))
            except settlement.SettlementError as exc:
                log.critical("settlement: %s", exc)
        closed = False
        if code is not None:
            try:
                fiscal.close(self.journal, "day", datetime.date.today().isoformat())
                closed = True
            except (JournalError, fiscal.FiscalError) as exc:
                log.warning("settlement: the fiscal day is not closed: %s", exc)
        self.queue_changed()
        exponent = self.config.kernel.terminal.currency_exponent
        code_alpha = alpha(currency)
        report = SettlementReport(state.batch, tuple(
            SchemeLine(t.rid.hex().upper(), t.debit_count, Money(t.debit_amount, code_alpha, exponent),
                       t.credit_count, Money(t.credit_amount, code_alpha, exponent)) for t in totals),
            result, closed)
        self.settlements.append(report)
        printer = self.config.printer
        if not ask:
            return report
        if await self.ui.ask(AskSettlement(report, printable=printer is not None)) == "print" and printer:
            try:
                await EscPosPrinter.from_config(printer).print_receipt(
                    settlement.report_lines(report, width=printer.width))
            except PrinterError as exc:
                log.error("settlement: the report is not printed: %s", exc)
                self._show(Error("printer"))
                await asyncio.sleep(self.error_pause)
        return report

    # --- settings -----------------------------------------------------------------------------

    def _apply_language(self, language: str) -> bool:
        """The merchant's screens in `language`; False when the UI refused it."""
        setter = getattr(self.ui, "set_merchant_language", None)
        if callable(setter):
            try:
                setter(language)
            except Exception:
                log.exception("the UI refused the language %s", language)
                return False
        return True

    def _save_settings(self) -> None:
        try:
            merchant_settings.save(self.config.state.folder, self.settings)
        except merchant_settings.SettingsError as exc:
            log.error("settings: not kept for the next start: %s", exc)

    async def change_settings(self) -> None:
        """The settings screen; what the merchant changed is kept for the next start."""
        answer = await self.ui.ask(AskSettings(self.settings))
        if not isinstance(answer, Settings):
            return
        if answer.language != self.settings.language and not self._apply_language(answer.language):
            answer = Settings(self.settings.language, answer.shuffle, answer.training)
        training = answer.training
        self.settings = Settings(answer.language, answer.shuffle, self.settings.training)
        self._save_settings()
        if training != self.settings.training:
            await self.set_training(training)

    async def set_training(self, on: bool) -> None:
        """Training mode on or off, journalled (`fiscal.training_start`/`training_end`): its
        sales are approved here, never sent to the bank, their tickets in the training chains."""
        if on == self.settings.training:
            return
        if self.journal is not None:
            try:
                (fiscal.training_start if on else fiscal.training_end)(self.journal, role="merchant")
            except (JournalError, fiscal.FiscalError) as exc:
                log.critical("fiscal journal: training mode NOT changed: %s", exc)
                return
        self.settings = Settings(self.settings.language, self.settings.shuffle, on)
        self._save_settings()
        self._poke.set()

    async def offline_queue(self) -> None:
        """The offline payments waiting for the bank, until the merchant goes back; "send now"
        forwards the queue at once."""
        while self.recorder is not None:
            try:
                items = self.recorder.queue.pending(1000, "advice")
            except SafQueueError as exc:
                log.error("offline queue: %s", exc)
                return
            payments = tuple(self._money_in(item.amount, item.currency) for item in items)
            if await self.ui.ask(AskOfflineQueue(payments)) != SEND_NOW or self.forwarder is None:
                return
            self._show(Processing("forwarding"))
            await self.forwarder.forward_once()
            self.queue_changed()

    # --- pre-authorizations ---------------------------------------------------------------------

    async def preauths(self) -> None:
        """The open pre-authorizations until the merchant goes back or completes one: each is
        completed for its final amount (`complete`) or released (`release`)."""
        while self.recorder is not None:
            try:
                open_ = {p.id: p for p in self.recorder.payments.open_preauths()}
            except PaymentsError as exc:
                log.error("pre-authorizations: %s", exc)
                return
            lines = tuple(PreauthLine(p.id, self._money_in(p.amount, p.currency),
                                      _local_minute(p.created.isoformat()), p.pan_masked)
                          for p in open_.values())
            choice = await self.ui.ask(AskPreauth(lines))
            if not isinstance(choice, PreauthChoice) or choice.payment not in open_:
                return
            if choice.action == "complete":
                await self.complete(open_[choice.payment])
                return
            if choice.action == "release":
                self.release(choice.payment)

    async def complete(self, preauth: Payment) -> dict[str, Any] | None:
        """Pre-authorization `preauth` completed: the final amount asked (at most the amount
        reserved), the completion's 0220 queued with its payment, the ticket journalled and
        shown; the forwarder sends the advice at once. Returns the completion's record."""
        recorder, journal = self.recorder, self.journal
        if recorder is None or journal is None:
            return None
        terminal = self.config.kernel.terminal
        reserved = self._money_in(preauth.amount, preauth.currency)
        entry = await self.ui.ask(AskAmount(reserved.currency, reserved.exponent, refund_allowed=False,
                                            purpose="completion", maximum=preauth.amount))
        if not (isinstance(entry, AmountEntry) and _minor_units(entry.amount, 1)
                and entry.amount <= preauth.amount):
            return None
        try:
            payment_id = recorder.complete_preauth(preauth.id, entry.amount)
        except RecordError as exc:
            log.error("completion: %s", exc)
            await self._error(SaleReport(entry.amount), "try_again")
            return None
        self._wake_forwarder()
        money = self._money_in(entry.amount, preauth.currency)
        lines: list[str] | None = None
        qr = None
        try:
            payment = recorder.payments.get(payment_id)
            ticket = sale.stored_ticket(journal, payment)
            recorder.payments.set_ticket(payment_id, ticket.seq)
            qr = self._e_receipt(ticket.seq, ticket.extract)
            lines = receipt_lines(ticket, version=software_version(),
                                  merchant=terminal.merchant_name_location or None)
        except (JournalError, fiscal.FiscalError, PaymentsError, ReceiptError) as exc:
            # the payment stands; recovery journals a missing ticket at the next start
            log.critical("completion: payment %d: the ticket could NOT be journalled: %s", payment_id, exc)
            self.alerts.add(ALERT_JOURNAL_ERROR)
        self._show(Outcome(True, money))
        if not self._stop_requested.is_set():
            await asyncio.sleep(self.outcome_pause)
            if lines:
                await self._receipt(Receipt(tuple(lines), qr=qr))
        return recorder.payments.get(payment_id).as_dict()

    def release(self, preauth_id: int) -> int | None:
        """Pre-authorization `preauth_id` released: its reversal (reason '17') queued and sent."""
        if self.recorder is None:
            return None
        try:
            item = self.recorder.release_preauth(preauth_id)
        except RecordError as exc:
            log.error("release: %s", exc)
            return None
        self._wake_forwarder()
        return item

    def _wake_forwarder(self) -> None:
        """Something was queued for the bank: forward it now, and read the queue's figures again."""
        if self.forwarder is not None:
            self.forwarder.wake()
        self.queue_changed()
        if self.fleet is not None:
            self.fleet.payment_done()

    def _money_in(self, amount: int, currency: int) -> Money:
        code = alpha(currency)
        exponent = CURRENCIES.get(code, (0, self.config.kernel.terminal.currency_exponent))[1]
        return Money(amount, code, exponent)

    # --- the card ----------------------------------------------------------------------------

    async def _present_card(self, reader: CardReader, view: PresentCard) -> CardSession | None:
        """The card, or None when the merchant cancels on the screen (`AskCancel`) first; the
        question is withdrawn when the card comes first."""
        card = asyncio.ensure_future(reader.card(self.card_wait))
        cancel = asyncio.ensure_future(self.ui.ask(AskCancel(view)))
        cancelled = False
        try:
            await asyncio.wait({card, cancel}, return_when=asyncio.FIRST_COMPLETED)
            if cancel.done() and not cancel.cancelled():
                if cancel.exception() is not None:
                    log.error("the UI failed on the present-card screen: %r", cancel.exception())
                cancelled = cancel.exception() is None and cancel.result() is True
            if not cancelled:
                await asyncio.wait({card})
        finally:
            for task in (cancel, card):
                if not task.done():
                    task.cancel()
            await asyncio.gather(cancel, card, return_exceptions=True)
        if cancelled:
            if not card.cancelled() and card.exception() is None:
                await reader.disconnect(card.result())  # it came at the same moment: let it go
            return None
        return card.result()

    async def _transact(self, reader: CardReader, session: CardSession, report: SaleReport,
                        money: Money) -> _Done | None:
        """The card transaction in the reader's thread, awaited whole even when the flow is
        cancelled (stop): the payments' state machine ends it or recovery settles it."""
        prompt = UiPrompt(self.ui, asyncio.get_running_loop(), pin_pad=self.pin_pad, exponent=money.exponent,
                          shuffle=self.settings.shuffle)
        self._prompt = prompt
        if self._stop_requested.is_set():
            prompt.cancel()
        self._worker = asyncio.ensure_future(
            reader.run(lambda: self._card_transaction(session, report, prompt)))
        try:
            return await asyncio.shield(self._worker)
        except (HostClientError, RecordError, PinPadError, SafQueueError) as exc:
            log.error("sale: %s", exc)
            return None
        finally:
            report.asked = list(prompt.asked)
            self._worker = None
            self._prompt = None

    def _card_transaction(self, session: CardSession, report: SaleReport, prompt: UiPrompt) -> _Done:
        """In the reader's thread: `sale.run_sale` with the touchscreen as the cardholder's
        prompt and the host client of this loop."""
        fulfil = LanguageWatch(driver.card_sender(session.transmit, session.protocol, errors=(ReaderError,)),
                               prompt)
        if self.settings.training:
            return self._training_transaction(fulfil, report, prompt)
        authorizer = self.authorizer
        paid = sale.card_payment(
            self.config, report.amount, fulfil, prompt, authorizer=authorizer,
            online=_ShowingAuthorizer(authorizer, prompt) if authorizer is not None else None,
            recorder=self.recorder, journal=self.journal, transaction_type=REFUND if report.refund else 0,
            preauth=report.preauth)
        outcome, record, ticket = paid.outcome, paid.payment, paid.ticket
        host, unjournalled, alerts = paid.host, paid.unjournalled, paid.alerts
        if outcome.language:
            prompt.prefer_languages(outcome.language)
        done = _Done(outcome, record, ticket, host, unjournalled, alerts)
        # the report is complete even when the flow is cancelled (stop) before it resumes
        report.outcome, report.payment, report.ticket = outcome, record, ticket
        report.host, report.unjournalled = host, unjournalled
        return done

    def _training_transaction(self, fulfil: Any, report: SaleReport, prompt: UiPrompt) -> _Done:
        """A training sale: the card and the kernel for real, the bank played here
        (`TrainingAuthorizer`), nothing recorded as a payment, the ticket in the training chain."""
        paid = sale.card_payment(self.config, report.amount, fulfil, prompt, authorizer=None,
                                 online=TrainingAuthorizer(prompt), recorder=None, journal=None,
                                 transaction_type=REFUND if report.refund else 0)
        outcome = paid.outcome
        if outcome.language:
            prompt.prefer_languages(outcome.language)
        ticket, unjournalled = None, []
        if outcome.kind.approved and self.journal is not None:
            currency = alpha(self.config.kernel.terminal.currency)
            try:
                journalled = sale.card_ticket(self.journal, report.amount, currency,
                                              fiscal.card_reference(outcome, None), refund=report.refund,
                                              training=True)
                lines = receipt_lines(journalled, version=software_version(),
                                      merchant=self.config.kernel.terminal.merchant_name_location or None)
                ticket = {"seq": journalled.seq, "type": journalled.type, "extract": journalled.extract,
                          "receipt": lines, "training": True}
            except (JournalError, fiscal.FiscalError, ReceiptError) as exc:
                unjournalled.append(str(exc))
        report.outcome, report.ticket, report.unjournalled = outcome, ticket, unjournalled
        return _Done(outcome, None, ticket, None, unjournalled, [])

    def _after_card(self, done: _Done) -> None:
        if done.unjournalled or done.alerts:
            self.alerts.add(ALERT_JOURNAL_ERROR if done.unjournalled else ALERT_JOURNAL_INTEGRITY)
        if done.payment is not None and done.payment["state"] == State.APPROVED_OFFLINE.value \
                and self.forwarder is not None:
            self.forwarder.wake()
        self.queue_changed()
        if self.fleet is not None:
            self.fleet.payment_done()

    async def _error(self, report: SaleReport, kind: str) -> SaleReport:
        report.error = kind
        self._show(Error(kind))
        if not self._stop_requested.is_set():
            await asyncio.sleep(self.error_pause)
        return report

    async def _drop_reader(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(reader.close)

    def _remember(self, report: SaleReport) -> None:
        self.reports = [*self.reports[-15:], report]

    # --- the status bar ------------------------------------------------------------------------

    async def _publish_status(self) -> None:
        """Every `status_interval` s (the clock) and at once when poked (a link event, a sale)."""
        while True:
            status = self.status()
            try:
                self.ui.set_status(status)
            except Exception:
                log.exception("the UI failed to take the status")
            if self.fleet is not None:
                self.fleet.observe(status)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.status_interval)
            self._poke.clear()
            if self.forwarder is not None and len(self.forwarder.reports) != self._seen_reports:
                self._seen_reports = len(self.forwarder.reports)
                self._figures_at = -1e9

    def status(self) -> Status:
        """The status bar now: route and signal, battery, the queue's figures, clock, alerts."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._figures_at >= self.figures_interval:
            self._figures_at = loop.time()
            self._figures = self._read_figures()
            self._route_kind = os_route_kind()
            self._battery = battery()
        route, bars = None, 0
        if self.links is not None:
            snapshot = self.links.snapshot()
            name = snapshot["route"]
            details = snapshot.get("details") or {}
            if name == LINK_CELLULAR:
                route = details.get("technology") or "4G"
                bars = int(details.get("bars") or 0)
            elif name is not None:
                route, bars = self._route_kind, 4
        found = self._figures
        alerts = set(self.alerts) | set(saf_alerts(found) if found else ())
        pending = {alpha(code): amount for code, amount in found.amount_per_currency.items()} if found else {}
        percent, charging = self._battery
        return Status(route=route, signal_bars=max(0, min(4, bars)), battery_percent=percent,
                      charging=charging, pending_count=found.count if found else 0, pending_amounts=pending,
                      clock=datetime.datetime.now().astimezone().replace(microsecond=0),
                      alerts=tuple(sorted(alerts)), training=self.settings.training)

    def _read_figures(self) -> SafFigures | None:
        if self.recorder is None:
            return None
        try:
            return figures(self.recorder.queue, self.config.offline, datetime.datetime.now(datetime.UTC))
        except SafQueueError as exc:
            log.error("status: the queue's figures cannot be read: %s", exc)
            return self._figures


def _local_minute(at: str) -> str:
    """A journal time (UTC, ISO 8601) in local time to the minute."""
    try:
        moment = datetime.datetime.fromisoformat(at.replace("Z", "+00:00"))
        return moment.astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return at


def _minor_units(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_AMOUNT


def _outcome_view(outcome: CardOutcome, money: Money, *, preauth: bool = False) -> Outcome | Error:
    """What the merchant and the cardholder see of the kernel's outcome."""
    kind, reason = outcome.kind, outcome.reason
    if kind.approved:
        return Outcome(True, money, offline=kind in OFFLINE_KINDS,
                       signature_required=outcome.signature_required, preauth=preauth)
    if reason in ("card_removed", "card_removed_during_completion"):
        return Error("card_removed")
    if kind is OutcomeKind.TRY_AGAIN:
        return Error("try_again")
    if reason == "card_error":
        return Error("card_error")
    return Outcome(False, money, reason=reason, preauth=preauth)


def touch_ui(*, headless: bool = False) -> Any:
    """The pygame touchscreen (`ui.app.TouchUi`), imported only when `tpe run` shows one:
    full screen on the device's display (SDL_VIDEODRIVER=kmsdrm, deploy/tpe.service), a window
    on a desktop, off screen when `headless`. `ImportError` when it is not installed."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame's banner is no log line
    from ui.app import TouchUi

    return TouchUi(fullscreen=os.environ.get("SDL_VIDEODRIVER") == "kmsdrm", headless=headless)


def main(config: AppConfig, ui: UiPort, **options: Any) -> int:
    """`tpe run`'s body: the terminal until it is stopped; 0 after an orderly stop. A
    `ScriptedUi` plays without pauses (nobody watches) and stops the terminal after its last
    sale. `StartError` when a service did not start."""
    if isinstance(ui, ScriptedUi):
        options = {"error_pause": 0.0, "outcome_pause": 0.0, **options}
    terminal = Terminal(config, ui, **options)
    if isinstance(ui, ScriptedUi) and ui.on_done is None:
        ui.on_done = lambda: terminal.request_stop("script done")
    asyncio.run(terminal.run_until_stopped())
    return 0
