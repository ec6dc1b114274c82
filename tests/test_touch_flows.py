"""Full flows of `tpe run`'s Terminal through the real touchscreen, headless (SDL_VIDEODRIVER=dummy):
a driver taps the labels a merchant and a cardholder would tap (synthetic touches through
`TouchUi`), the card simulated in this process behind a stand-in for the PC/SC reader, the
authorizations over TLS on loopback to the host simulator. The tests assert on the terminal's
reports, the fiscal journal, the host's ledger and the texts drawn (read from the catalogues
with tomllib alone), never on pixels. TEST KEYS only: the test PKI is made in tmp, the DUKPT
keys are the simulator's, the merchant code is a test code hashed here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim_processes import write_config

from firmware.config import load_config
from firmware.merchant_code import hash_code
from firmware.reader import CardAbsentError
from firmware.runtime import Terminal
from firmware.sd_notify import Notifier
from sim.host.server import HostSimulator
from sim.inprocess import fresh_card
from ui.app import TouchUi
from ui.contract import (
    LANGUAGES,
    AskAmount,
    AskApplication,
    AskCode,
    AskConfirm,
    AskMenu,
    AskOfflineQueue,
    AskPin,
    AskPreauth,
    AskReceipt,
    AskSettlement,
    AskTicket,
    Error,
    Outcome,
    Question,
    SettlementReport,
    View,
)
from ui.i18n import LOCALES
from ui.widgets import UiEvent

os.environ["SDL_VIDEODRIVER"] = "dummy"  # read when the display opens, in the terminal's UI task

TEST_CODE = "4711"  # TEST merchant code
TEST_PIN = "1234"  # the simulated cards' TEST PIN
STEP = 8.0  # seconds a screen may take to come
FLOW = 20.0  # seconds a whole flow may take
PAUSES = {"notifier": Notifier({}), "error_pause": 0.3, "outcome_pause": 0.3, "card_wait": 5.0,
          "status_interval": 0.1}


def text(language: str, key: str, **params: object) -> str:
    with (LOCALES / f"{language}.toml").open("rb") as f:
        table: Any = tomllib.load(f)
    for part in key.split("."):
        table = table[part]
    return table.format(**params) if params else table


def fr(key: str, **params: object) -> str:
    return text("fr", key, **params)


# --- the card behind a stand-in for the PC/SC reader ------------------------------------------

class _Session:
    def __init__(self, card: Any, reader: SimReader) -> None:
        self.card = card
        self.protocol = card.protocol
        self.atr = b""
        self._reader = reader

    def transmit(self, tpdu: bytes) -> bytes:
        if self._reader.pulled:
            raise CardAbsentError("the card was removed")
        return self.card.process(tpdu)

    def disconnect(self, *_: Any) -> None:
        return None


class SimReader:
    """Stands where `firmware.reader.PcscReader` is: one simulated card of `profile`, always
    present, until `pulled` is set: then every command fails as a card pulled out would."""

    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.pulled = False
        self.sessions = 0

    def pick(self, name: str | None) -> str:
        return "sim reader"

    def connect_when_ready(self, name: str, timeout: float | None = None) -> _Session:
        self.sessions += 1
        return _Session(fresh_card(self.profile), self)

    def close(self) -> None:
        return None

    def cancel(self) -> None:
        return None


# --- the touchscreen, with what it showed -----------------------------------------------------

class RecordingUi(TouchUi):
    """The touchscreen, keeping every view shown with the texts drawn for it."""

    def __init__(self, **options: Any) -> None:
        super().__init__(headless=True, **options)
        self.shown: list[tuple[View, list[str]]] = []
        self.asked: list[Question] = []

    def show(self, view: View) -> None:
        super().show(view)
        self.shown.append((view, self.texts()))

    async def ask(self, question: Question) -> Any:
        self.asked.append(question)
        return await super().ask(question)

    def texts_of(self, kind: type) -> list[list[str]]:
        return [texts for view, texts in self.shown if isinstance(view, kind)]


async def until(ui: TouchUi, ready: Callable[[], bool], what: str, timeout: float = STEP) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ready():
        if loop.time() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s: {ui.screen.name} screen, "
                                 f"asking {type(ui.asking).__name__}, texts {ui.texts()}")
        await asyncio.sleep(0.01)


async def asked(ui: TouchUi, kind: type, what: str | None = None) -> Any:
    await until(ui, lambda: isinstance(ui.asking, kind), what or kind.__name__)
    await ui.settle()
    return ui.asking


async def taps(ui: TouchUi, *labels: str) -> None:
    for label in labels:
        ui.tap_text(label)
        await ui.settle()


async def tap_event(ui: TouchUi, event: UiEvent) -> None:
    (button,) = [b for b in ui.buttons() if b.event == event and b.enabled]
    ui.tap(*button.box.center)
    await ui.settle()


async def key_amount(ui: TouchUi, cents: int, *, refund: bool = False) -> None:
    await asked(ui, AskAmount, "amount keypad")
    if refund:
        await taps(ui, fr("keypad.refund"))
    await taps(ui, *str(cents), fr("common.ok"))


async def key_pin(ui: TouchUi, language: str, pin: str = TEST_PIN) -> tuple[AskPin, list[str]]:
    """The cardholder confirms the amount when asked, then types the PIN, on screens in
    `language` (the card's preference, 5F2D); the question and the texts of the PIN pad."""
    await until(ui, lambda: isinstance(ui.asking, AskPin | AskConfirm), "PIN pad")
    if isinstance(ui.asking, AskConfirm):
        await ui.settle()
        await taps(ui, text(language, "common.ok"))
        await asked(ui, AskPin)
    await ui.settle()
    question = ui.asking
    assert isinstance(question, AskPin)
    shown = ui.texts()
    await taps(ui, *pin, text(language, "common.ok"))
    return question, shown


async def receipt_done(ui: TouchUi, language: str = "fr") -> AskReceipt:
    """"Done" on the receipt, a cardholder's screen: in the card's language after a card payment."""
    question = await asked(ui, AskReceipt, "receipt")
    await taps(ui, text(language, "receipt.done"))
    return question


async def merchant_code(ui: TouchUi, purpose: str) -> None:
    question = await asked(ui, AskCode, "merchant code")
    assert question.purpose == purpose
    assert fr(f"code.purpose.{purpose}") in ui.texts()
    await taps(ui, *TEST_CODE, fr("common.ok"))


async def open_menu(ui: TouchUi, item: str) -> None:
    await asked(ui, AskAmount, "amount keypad")
    await taps(ui, fr("keypad.menu"))
    await asked(ui, AskMenu, "menu")
    await taps(ui, fr(f"menu.{item}"))


async def online_sale(ui: TouchUi, cents: int) -> None:
    await key_amount(ui, cents)
    await key_pin(ui, "en")
    await receipt_done(ui, "en")


# --- one terminal, its host and a driver --------------------------------------------------------

@dataclass
class Bench:
    terminal: Terminal
    ui: RecordingUi
    reader: SimReader
    host: HostSimulator
    folder: Path
    entries: list[Any] = field(default_factory=list)

    def ledger_count(self) -> int:
        """The host's entries, read from its ledger's file (the host may be stopped)."""
        with contextlib.closing(sqlite3.connect(self.folder / "ledger.sqlite3")) as db:
            (count,) = db.execute("SELECT count(*) FROM entries").fetchone()
        return int(count)

    def journal(self, chain: str) -> list[tuple[str, str]]:
        with contextlib.closing(sqlite3.connect(self.folder / "state" / "journal.sqlite3")) as db:
            return list(db.execute("SELECT type, payload FROM record WHERE chain = ? ORDER BY seq", (chain,)))


Driver = Callable[[Bench], Awaitable[None]]


def play(tmp_path: Path, driver: Driver, profile: str = "visa_cda_online", *, host_up: bool = True,
         **terminal_options: Any) -> Bench:
    """The terminal with the touchscreen and `driver` tapping on it, until the driver is done;
    the host's ledger read after the terminal stopped."""
    stored = hash_code(TEST_CODE, log2_n=10).text()

    async def scenario() -> Bench:
        host = HostSimulator(tmp_path / "pki", ledger=tmp_path / "ledger.sqlite3")
        await host.start()
        config = load_config(write_config(tmp_path, host.port, host.pki,
                                          f'[merchant]\ncode_hash = "{stored}"\n'))
        if not host_up:
            await host.stop()  # the outage: nothing listens on the host's port
        ui = RecordingUi()
        reader = SimReader(profile)
        options = {**PAUSES, **terminal_options}
        terminal = Terminal(config, ui, reader_factory=lambda: reader, **options)  # type: ignore[arg-type]
        bench = Bench(terminal, ui, reader, host, tmp_path)

        async def drive() -> None:
            try:
                await asyncio.wait_for(driver(bench), FLOW)
            finally:
                terminal.request_stop("flow done")

        try:
            driving = asyncio.ensure_future(drive())
            await terminal.run_until_stopped()
            await driving
            if host_up:
                bench.entries = host.ledger.entries()
        finally:
            await host.stop()
        return bench

    return asyncio.run(scenario())


# --- the flows --------------------------------------------------------------------------------

def test_online_sale_with_pin_is_booked_at_the_host_and_journalled(tmp_path: Path) -> None:
    async def driver(bench: Bench) -> None:
        ui = bench.ui
        await key_amount(ui, 1250)
        question, shown = await key_pin(ui, "en")  # visa_cda_online: 5F2D 'enfr'
        assert question.online and text("en", "pin.title_online") in shown
        assert not any(TEST_PIN in t for t in ui.texts())
        receipt = await receipt_done(ui, "en")
        assert any("12,50" in line for line in receipt.receipt.lines)

    bench = play(tmp_path, driver)
    (report,) = bench.terminal.reports
    assert report.payment is not None and report.payment["state"] == "approved"
    (approved,) = bench.ui.texts_of(Outcome)
    assert text("en", "outcome.approved") in approved  # the cardholder's language until idle
    assert any("12.50" in t for t in approved)
    (entry,) = bench.entries
    assert entry.mti == "0200" and entry.amount == 1250 and entry.approved and not entry.reversed
    tickets = bench.journal("ticket")
    assert [kind for kind, _ in tickets] == ["sale"]
    ticket = json.loads(tickets[0][1])
    (tender,) = ticket["tenders"]
    assert ticket["amount"] == 1250 and tender["reference"]["authorization_code"] == entry.approval_code


async def cardholder(ui: TouchUi, language: str) -> AskReceipt:
    """The cardholder's part, whatever the card asks (amount confirmation, PIN), until the
    receipt, whose "done" is tapped."""
    await until(ui, lambda: isinstance(ui.asking, AskPin | AskConfirm | AskReceipt), "cardholder screen")
    while not isinstance(ui.asking, AskReceipt):
        if isinstance(ui.asking, AskConfirm | AskPin):
            await key_pin(ui, language)
        await until(ui, lambda: isinstance(ui.asking, AskPin | AskConfirm | AskReceipt), "receipt")
    return await receipt_done(ui, language)


def test_co_badged_card_shows_both_brands_and_pays_with_the_one_tapped(tmp_path: Path) -> None:
    seen: list[list[str]] = []

    async def driver(bench: Bench) -> None:
        ui = bench.ui
        await key_amount(ui, 800)
        choice = await asked(ui, AskApplication, "brand choice")
        seen.append(ui.texts())
        assert [b.text for b in ui.buttons() if b.event.name == "choose"] == list(choice.labels)
        await taps(ui, "Visa")
        await cardholder(ui, "fr")  # cb_visa_cobadged: 5F2D 'fren'

    bench = play(tmp_path, driver, "cb_visa_cobadged")
    (choice_texts,) = seen
    assert fr("choice.title") in choice_texts and {"CB", "Visa"} <= set(choice_texts)
    (entry,) = bench.entries
    assert entry.approved and entry.amount == 800 and entry.rid == "A000000003"  # Visa's RID, not CB's
    (ticket,) = [json.loads(payload) for _, payload in bench.journal("ticket")]
    assert ticket["tenders"][0]["reference"]["aid"] == "A0000000031010"


def test_a_german_card_switches_the_cardholder_screens_to_german_and_back(tmp_path: Path) -> None:
    pin_texts: list[list[str]] = []

    async def driver(bench: Bench) -> None:
        ui = bench.ui
        await key_amount(ui, 1999)
        await until(ui, lambda: isinstance(ui.asking, AskPin | AskConfirm), "PIN pad")
        _, shown = await key_pin(ui, "de")
        pin_texts.append(shown)
        await receipt_done(ui, "de")
        await asked(ui, AskAmount, "amount keypad")
        pin_texts.append(ui.texts())  # the merchant's keypad, in French again

    bench = play(tmp_path, driver, "language_de")
    pin, keypad = pin_texts
    assert text("de", "pin.title_online") in pin and fr("pin.title_online") not in pin
    (outcome,) = bench.ui.texts_of(Outcome)
    assert text("de", "outcome.approved") in outcome
    assert fr("keypad.menu") in keypad and text("de", "keypad.menu") not in keypad
    assert bench.entries[0].approved


def test_refund_behind_the_merchant_code_is_credited_at_the_host(tmp_path: Path) -> None:
    async def driver(bench: Bench) -> None:
        ui = bench.ui
        await online_sale(ui, 3000)
        await open_menu(ui, "refund")
        await merchant_code(ui, "refund")
        await asked(ui, AskAmount, "refund keypad")
        assert ui.asking.refund
        await taps(ui, *"1200", fr("common.ok"))
        await cardholder(ui, "en")

    bench = play(tmp_path, driver)
    _, refund = bench.terminal.reports
    assert refund.refund and refund.payment is not None and refund.payment["state"] == "approved"
    assert [kind for kind, _ in bench.journal("ticket")] == ["sale", "refund"]
    logins = [json.loads(p) for k, p in bench.journal("audit") if k == "login"]
    assert [(login["purpose"], login["result"]) for login in logins] == [("refund", "ok")]
    debit, credit = sorted(bench.entries, key=lambda e: e.processing_code)
    assert (debit.processing_code[:2], debit.amount) == ("00", 3000)
    assert (credit.processing_code[:2], credit.amount, credit.approved) == ("20", 1200, True)


def test_void_from_the_tickets_cancels_it_and_reverses_it_at_the_host(tmp_path: Path) -> None:
    async def driver(bench: Bench) -> None:
        ui = bench.ui
        await online_sale(ui, 2300)
        await open_menu(ui, "cancel")
        await merchant_code(ui, "cancel")
        tickets = await asked(ui, AskTicket, "tickets")
        (line,) = tickets.tickets
        await tap_event(ui, UiEvent("ticket", line.seq))
        await taps(ui, fr("tickets.cancel"))
        receipt = await receipt_done(ui)
        assert any("ANNULATION" in row for row in receipt.receipt.lines)
        await until(ui, lambda: any(e.reversed for e in bench.host.ledger.entries()), "reversal at the host")

    bench = play(tmp_path, driver)
    assert [kind for kind, _ in bench.journal("ticket")] == ["sale", "cancellation"]
    (entry,) = bench.entries
    assert entry.amount == 2300 and entry.reversed


def test_pre_authorization_then_completion_for_less_books_the_final_amount(tmp_path: Path) -> None:
    shown: dict[str, list[str]] = {}

    async def driver(bench: Bench) -> None:
        ui = bench.ui
        await open_menu(ui, "preauth")
        await asked(ui, AskAmount, "pre-authorization keypad")
        assert fr("keypad.preauth") in ui.texts()
        assert fr("keypad.refund") not in [b.text for b in ui.buttons()]  # no switch to a refund
        await taps(ui, *"15000", fr("common.ok"))
        await key_pin(ui, "en")
        approved = text("en", "outcome.preauth_approved")
        await until(ui, lambda: approved in ui.texts(), "pre-authorization approved")
        await open_menu(ui, "completion")
        await merchant_code(ui, "completion")
        listed = await asked(ui, AskPreauth, "open pre-authorizations")
        (line,) = listed.preauths
        shown["list"] = ui.texts()
        await tap_event(ui, UiEvent("preauth", line.payment))
        await taps(ui, fr("preauth.complete"))
        await asked(ui, AskAmount, "final amount")
        await taps(ui, *"15001", fr("common.ok"))  # more than reserved: OK does nothing
        await ui.settle()
        assert isinstance(ui.asking, AskAmount) and ui.asking.purpose == "completion"
        shown["over"] = ui.texts()
        await taps(ui, fr("common.clear"), *"9000", fr("common.ok"))
        await receipt_done(ui)
        await until(ui, lambda: any(e.mti == "0220" for e in bench.host.ledger.entries()), "the 0220")

    bench = play(tmp_path, driver)
    maximum = fr("keypad.maximum", amount=fr("format.money", amount="150,00", symbol="€"))
    assert fr("preauth.title") in shown["list"]
    assert any("150,00" in t and "******" in t for t in shown["list"])  # the amount and the card, masked
    reserve, completion = sorted(bench.entries, key=lambda e: e.id)
    assert (reserve.mti, reserve.amount) == ("0100", 15000)
    assert (completion.mti, completion.amount, completion.completes) == ("0220", 9000, reserve.id)
    ((kind, payload),) = bench.journal("ticket")
    assert kind == "sale" and '"amount":9000' in payload
    assert maximum in shown["over"] and "150,01\u00a0€" in shown["over"]


def test_settlement_report_shows_the_totals_and_the_host_reconciles(tmp_path: Path) -> None:
    report: list[list[str]] = []
    reconciled: list[str | None] = []

    async def driver(bench: Bench) -> None:
        ui = bench.ui
        await online_sale(ui, 1200)
        await online_sale(ui, 3400)
        await open_menu(ui, "settlement")
        await merchant_code(ui, "settlement")
        await asked(ui, AskSettlement, "settlement report")
        report.append(ui.texts())
        assert fr("receipt.print") not in [b.text for b in ui.buttons()]  # no printer configured
        await taps(ui, fr("receipt.done"))
        await asked(ui, AskAmount, "amount keypad")
        (first, *_) = bench.host.ledger.entries()
        reconciled.append(bench.host.ledger.reconciliation(first.terminal_id, 1))

    bench = play(tmp_path, driver)
    (shown,) = report
    total = fr("format.money", amount="46,00", symbol="€")
    assert {fr("settlement.title"), fr("settlement.batch", batch=1), fr("settlement.result.in_balance"),
            fr("settlement.day_closed"), "Visa", fr("settlement.debits", count=2, amount=total)} <= set(shown)
    assert sorted(e.amount for e in bench.entries) == [1200, 3400]
    assert all(e.batch == 1 for e in bench.entries)  # the host put both into the batch reconciled
    assert reconciled == ["00"]
    assert [kind for kind, _ in bench.journal("closure")] == ["day"]


def test_card_pulled_during_the_pin_shows_card_removed_and_nothing_is_booked(tmp_path: Path) -> None:
    async def driver(bench: Bench) -> None:
        ui = bench.ui
        await key_amount(ui, 2000)
        await until(ui, lambda: isinstance(ui.asking, AskPin | AskConfirm), "PIN pad")
        if isinstance(ui.asking, AskConfirm):
            await taps(ui, text("en", "common.ok"))
            await asked(ui, AskPin)
        bench.reader.pulled = True  # the card leaves the reader while the PIN pad shows
        await taps(ui, *TEST_PIN, text("en", "common.ok"))
        await until(ui, lambda: any(isinstance(v, Error) for v, _ in ui.shown), "error screen")
        await asked(ui, AskAmount, "amount keypad")

    bench = play(tmp_path, driver)
    ((view, shown),) = [(v, t) for v, t in bench.ui.shown if isinstance(v, Error)]
    assert view.kind == "card_removed"
    assert text("en", "error.card_removed.title") in shown  # still in the card's language
    assert not bench.ui.texts_of(Outcome)
    (report,) = bench.terminal.reports
    assert report.error == "card_removed"
    assert bench.entries == [] and bench.journal("ticket") == []


def test_offline_sale_during_an_outage_is_approved_within_limits_and_queued(tmp_path: Path) -> None:
    status: list[list[str]] = []

    async def driver(bench: Bench) -> None:
        ui = bench.ui
        await key_amount(ui, 1000)
        await until(ui, lambda: isinstance(ui.asking, AskReceipt | AskPin | AskConfirm), "receipt")
        await cardholder(ui, "en")
        pending = fr("status.pending", count=1)
        await until(ui, lambda: any(pending in t for t in ui.texts()), "pending count on the status bar")
        status.append(ui.texts())

    bench = play(tmp_path, driver, "new_card_online", host_up=False)
    no_network = [t for v, t in bench.ui.shown if v == Error("no_network_offline")]
    # the cardholder's screen in the card's language (5F2D 'en'), the merchant's status bar in French
    assert no_network and {text("en", "error.no_network_offline.title"), fr("status.no_link")} <= set(
        no_network[0])
    (outcome,) = [v for v, _ in bench.ui.shown if isinstance(v, Outcome)]
    assert outcome.approved and outcome.offline
    (report,) = bench.terminal.reports
    assert report.payment is not None and report.payment["state"] == "approved_offline"
    assert bench.ledger_count() == 0  # the host never heard of it
    (bar,) = status
    assert fr("status.pending", count=1) in bar and fr("status.no_link") in bar
    assert [kind for kind, _ in bench.journal("ticket")] == ["sale"]


def test_send_now_from_the_offline_queue_forwards_the_advice_when_the_host_is_back(tmp_path: Path) -> None:
    shown: dict[str, list[str]] = {}

    async def driver(bench: Bench) -> None:
        ui = bench.ui
        await key_amount(ui, 1000)
        await until(ui, lambda: isinstance(ui.asking, AskReceipt | AskPin | AskConfirm), "receipt")
        await cardholder(ui, "en")
        back = HostSimulator(tmp_path / "pki", port=bench.host.port, ledger=tmp_path / "ledger.sqlite3")
        await back.start()  # the host answers again, before the forwarder's next periodic try
        try:
            await open_menu(ui, "offline_queue")
            queue = await asked(ui, AskOfflineQueue, "offline queue")
            assert [money.amount for money in queue.payments] == [1000]
            shown["queue"] = ui.texts()
            await taps(ui, fr("queue.send"))
            await until(ui, lambda: isinstance(ui.asking, AskOfflineQueue) and not ui.asking.payments,
                        "the queue emptied")
            shown["after"] = ui.texts()
            await taps(ui, fr("common.back"))
            bench.entries = back.ledger.entries()
        finally:
            await back.stop()

    bench = play(tmp_path, driver, "new_card_online", host_up=False, forward_retry=3600.0)
    assert fr("queue.count", count=1) in shown["queue"] and fr("queue.empty") in shown["after"]
    (advice,) = bench.entries
    assert (advice.mti, advice.amount, advice.approved) == ("0220", 1000, True)
    (report,) = bench.terminal.reports
    assert report.payment is not None and report.payment["state"] == "approved_offline"


def test_a_stop_while_the_settlement_report_is_on_screen_ends_the_terminal(tmp_path: Path) -> None:
    async def driver(bench: Bench) -> None:
        ui = bench.ui
        await open_menu(ui, "settlement")
        await merchant_code(ui, "settlement")
        await asked(ui, AskSettlement, "settlement report")
        # the driver returns: the terminal is asked to stop with the report's question open

    started = time.monotonic()
    bench = play(tmp_path, driver)
    assert time.monotonic() - started < FLOW
    assert bench.terminal.stop_cause == "flow done" and bench.terminal.settlements
    assert [kind for kind, _ in bench.journal("audit")][-1] == "stop"


# --- the printer on the touchscreen -------------------------------------------------------------

def test_settlement_report_offers_print_only_with_a_printer_and_the_printer_error_is_translated() -> None:
    async def main() -> None:
        async with RecordingUi() as ui:
            report = SettlementReport(3, (), "in_balance", day_closed=True)
            plain = asyncio.ensure_future(ui.ask(AskSettlement(report)))
            await ui.settle()
            assert fr("receipt.print") not in [b.text for b in ui.buttons()]
            await taps(ui, fr("receipt.done"))
            assert await asyncio.wait_for(plain, STEP) == "done"
            printable = asyncio.ensure_future(ui.ask(AskSettlement(report, printable=True)))
            await ui.settle()
            await taps(ui, fr("receipt.print"))
            assert await asyncio.wait_for(printable, STEP) == "print"
            for language in LANGUAGES:
                ui.set_merchant_language(language)
                ui.show(Error("printer"))
                wanted = {text(language, "error.printer.title"), text(language, "error.printer.detail")}
                assert wanted <= set(ui.texts()), language

    asyncio.run(main())
