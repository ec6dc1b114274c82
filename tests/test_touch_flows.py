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
    AskAmount,
    AskCode,
    AskConfirm,
    AskMenu,
    AskPin,
    AskReceipt,
    Outcome,
    Question,
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
