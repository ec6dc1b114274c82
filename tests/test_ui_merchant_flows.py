"""The merchant's flows on the touchscreen, driven as a finger would (synthetic touches through
`TouchUi`, SDL dummy driver): the answers are the types `firmware.runtime` checks (a str of
digits or None for `AskCode`, `TicketChoice` or None, "done", `Settings` or None,
`AmountEntry` with `refund`), the texts read from the catalogues with tomllib alone."""

from __future__ import annotations

import os
import tomllib
from typing import Any

import pytest
from test_ui_screens import answer, asking, run, taps

from ui.app import TouchUi
from ui.contract import (
    LANGUAGES,
    AmountEntry,
    AskAmount,
    AskCode,
    AskPreauth,
    AskReceipt,
    AskSettings,
    AskSettlement,
    AskTicket,
    Idle,
    Money,
    PreauthChoice,
    PreauthLine,
    Receipt,
    SchemeLine,
    Settings,
    SettlementReport,
    Status,
    TicketChoice,
    TicketLine,
)
from ui.errors import UiError
from ui.i18n import LOCALES
from ui.theme import min_target_px, reference_dpi
from ui.widgets import Button

os.environ["SDL_VIDEODRIVER"] = "dummy"

NBSP = "\u00a0"
TIMEOUT = 5


def text(language: str, key: str, **params: object) -> str:
    with (LOCALES / f"{language}.toml").open("rb") as f:
        table: Any = tomllib.load(f)
    for part in key.split("."):
        table = table[part]
    return table.format(**params) if params else table


def fr(key: str, **params: object) -> str:
    return text("fr", key, **params)


def eur(cents: int) -> Money:
    return Money(cents, "EUR", 2)


def big_enough(ui: TouchUi) -> None:
    floor = min_target_px(reference_dpi())
    for button in ui.buttons():
        assert min(button.box.w, button.box.h) >= floor, (ui.screen.name, button.text, button.box)


# --- the merchant code ------------------------------------------------------------------------------

def test_code_answers_the_digits_masked_and_dropped() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskCode("refund", tries_left=3))
        shown = ui.texts()
        assert {fr("code.title"), fr("code.purpose.refund"), fr("code.tries_left", count=3)} <= set(shown)
        assert fr("code.refused") not in shown
        await taps(ui, "2", "5", "8")
        await taps(ui, fr("common.ok"))
        assert not task.done()  # a merchant code is at least four digits
        await taps(ui, "0")
        shown = ui.texts()
        assert "••••" in shown and not any("2580" in t for t in shown)
        assert "2580" not in repr(ui.screen)
        big_enough(ui)
        await taps(ui, fr("common.ok"))
        code = await answer(task)
        assert code == "2580" and isinstance(code, str)

    run(test)


def test_code_clear_eight_digits_at_most_and_cancel() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskCode("settings"))
        await taps(ui, "9", "9", fr("common.clear"), *"123456789")
        assert "•" * 8 in ui.texts() and "•" * 9 not in ui.texts()
        await taps(ui, fr("common.ok"))
        assert await answer(task) == "12345678"
        task = await asking(ui, AskCode("cancel"))
        await taps(ui, "1", fr("common.cancel"))
        assert await answer(task) is None

    run(test)


def test_code_refused_then_locked_offers_only_back() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskCode("settlement", tries_left=1, refused=True))
        expected = {fr("code.refused"), fr("code.tries_left", count=1), fr("code.purpose.settlement")}
        assert expected <= set(ui.texts())
        await taps(ui, *"4321", fr("common.ok"))
        assert await answer(task) == "4321"

        task = await asking(ui, AskCode("settlement", tries_left=0, refused=True, locked=True))
        assert fr("code.locked") in ui.texts()
        assert [b.text for b in ui.buttons()] == [fr("common.back")]
        with pytest.raises(UiError):
            ui.tap_text("1")
        await taps(ui, fr("common.back"))
        assert await answer(task) is None

    run(test)


@pytest.mark.parametrize("purpose", ["refund", "cancel", "settlement", "settings", "training"])
def test_code_says_what_it_is_for(purpose: str) -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskCode(purpose))
        assert text("en", f"code.purpose.{purpose}") in ui.texts()
        task.cancel()
        await ui.settle()

    run(test, language="en")


def test_code_withdrawn_by_another_view_answers_none() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskCode("refund"))
        await taps(ui, "1", "2")
        ui.show(Idle())
        assert await answer(task) is None

    run(test)


# --- the tickets ------------------------------------------------------------------------------------

TICKETS = (
    TicketLine(31, "cancellation", eur(-990), "2025-03-14 10:02"),
    TicketLine(30, "sale", eur(990), "2025-03-14 09:58", cancelled=True),
    TicketLine(29, "refund", eur(-1500), "2025-03-14 09:41"),
    TicketLine(28, "sale", eur(4250), "2025-03-14 09:30"),
)


def row_button(ui: TouchUi, seq: int) -> Button:
    return next(b for b in ui.buttons() if b.event.name == "ticket" and b.event.value == seq)


async def pick(ui: TouchUi, seq: int) -> None:
    ui.tap(*row_button(ui, seq).box.center)
    await ui.settle()


def test_ticket_rows_show_number_time_amount_and_flags() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskTicket(TICKETS))
        rows = {b.event.value: b.text for b in ui.buttons() if b.event.name == "ticket"}
        assert set(rows) == {31, 30, 29, 28}
        assert rows[28].split("\n") == [fr("tickets.row", seq=28, at="2025-03-14 09:30"), f"42,50{NBSP}€"]
        assert fr("tickets.cancelled") in rows[30] and fr("tickets.cancelled") not in rows[28]
        assert fr("tickets.kind.refund") in rows[29] and f"-15,00{NBSP}€" in rows[29]
        assert fr("tickets.kind.cancellation") in rows[31]
        big_enough(ui)
        task.cancel()
        await ui.settle()

    run(test)


def test_ticket_pick_then_duplicate_or_void() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskTicket(TICKETS))
        with pytest.raises(UiError):
            ui.tap_text(fr("tickets.duplicate"))  # nothing picked yet
        await pick(ui, 29)
        await taps(ui, fr("tickets.duplicate"))
        choice = await answer(task)
        assert choice == TicketChoice(29, "duplicate") and isinstance(choice, TicketChoice)

        task = await asking(ui, AskTicket(TICKETS))
        await pick(ui, 28)
        await taps(ui, fr("tickets.cancel"))
        assert await answer(task) == TicketChoice(28, "cancel")

    run(test)


def test_a_cancelled_ticket_or_a_cancellation_cannot_be_voided() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskTicket(TICKETS))
        for seq in (30, 31):
            await pick(ui, seq)
            with pytest.raises(UiError):
                ui.tap_text(fr("tickets.cancel"))
        await taps(ui, fr("tickets.duplicate"))
        assert await answer(task) == TicketChoice(31, "duplicate")

    run(test)


def test_ticket_actions_offered_only_as_asked_and_back() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskTicket(TICKETS, ("cancel",)))
        assert fr("tickets.duplicate") not in [b.text for b in ui.buttons()]
        await pick(ui, 28)
        await taps(ui, fr("common.back"))
        assert await answer(task) is None

        task = await asking(ui, AskTicket(()))
        assert fr("tickets.empty") in ui.texts()
        await taps(ui, fr("common.back"))
        assert await answer(task) is None

    run(test)


def test_ten_tickets_go_on_pages_each_reachable() -> None:
    tickets = tuple(TicketLine(100 - n, "sale", eur(100 * (n + 1)), f"2025-03-14 09:{n:02d}")
                    for n in range(10))

    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskTicket(tickets, ("duplicate",)))
        seen: set[int] = set()
        for _ in range(len(tickets)):
            seen |= {b.event.value for b in ui.buttons() if b.event.name == "ticket"}
            big_enough(ui)
            if len(seen) == len(tickets):
                break
            await taps(ui, fr("common.next"))
        assert seen == {t.seq for t in tickets}
        with pytest.raises(UiError):
            ui.tap_text(fr("common.next"))  # the last page
        await taps(ui, fr("common.previous"))
        first_shown = min(b.event.value for b in ui.buttons() if b.event.name == "ticket")
        await pick(ui, first_shown)
        await taps(ui, fr("tickets.duplicate"))
        assert await answer(task) == TicketChoice(first_shown, "duplicate")

    run(test)


# --- the settlement ---------------------------------------------------------------------------------

REPORT = SettlementReport(41, (SchemeLine("A000000042", 3, eur(12000), 1, eur(1500)),
                               SchemeLine("A000000004", 2, eur(3050), 0, eur(0))),
                          "in_balance", day_closed=True)


def test_settlement_report_totals_and_verdict() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskSettlement(REPORT))
        shown = set(ui.texts())
        # totals computed here: 120,00 + 30,50 in 5 debits, 15,00 in 1 credit
        assert {fr("settlement.batch", batch=41), fr("settlement.result.in_balance"),
                fr("settlement.day_closed"),
                fr("settlement.total"), fr("settlement.debits", count=5, amount=f"150,50{NBSP}€"),
                fr("settlement.credits", count=1, amount=f"15,00{NBSP}€"), "CB", "Mastercard",
                fr("settlement.debits", count=3, amount=f"120,00{NBSP}€")} <= shown
        big_enough(ui)
        await taps(ui, fr("receipt.done"))
        assert await answer(task) == "done"

    run(test)


@pytest.mark.parametrize("result", ["out_of_balance", "host_unreachable", "refused", "something_new"])
def test_settlement_verdict_in_plain_words(result: str) -> None:
    key = result if result != "something_new" else "other"

    async def test(ui: TouchUi) -> None:
        line = SchemeLine("A0000000999", 1, eur(5), 0, eur(0))
        task = await asking(ui, AskSettlement(SettlementReport(7, (line,), result)))
        shown = set(ui.texts())
        assert {fr(f"settlement.result.{key}"), fr("settlement.day_open"), "A0000000999"} <= shown
        ui.show(Idle())  # withdrawn: answers as "done" would
        assert await answer(task) == "done"

    run(test)


# --- the settings -----------------------------------------------------------------------------------

def test_settings_language_shuffle_and_training() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskSettings(Settings("fr", shuffle=False, training=False)))
        labels = [b.text for b in ui.buttons()]
        for autonym in ("Français", "English", "Español", "Italiano", "Deutsch", "Nederlands", "Svenska",
                        "Português"):
            assert autonym in labels
        big_enough(ui)
        off, on = fr("settings.off"), fr("settings.on")
        await taps(ui, "Svenska", fr("settings.shuffle", state=off), fr("settings.training", state=off))
        assert {fr("settings.shuffle", state=on), fr("settings.training", state=on)} <= set(ui.texts())
        await taps(ui, fr("common.ok"))
        settings = await answer(task)
        assert settings == Settings("sv", shuffle=True, training=True) and isinstance(settings, Settings)

        task = await asking(ui, AskSettings(Settings("de", shuffle=True, training=True)))
        await taps(ui, "English", fr("common.cancel"))
        assert await answer(task) is None

    run(test)


def test_settings_language_then_merchant_screens_in_it() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskSettings(Settings("fr", shuffle=False, training=False)))
        await taps(ui, "Nederlands", fr("common.ok"))
        chosen = await answer(task)
        ui.set_merchant_language(chosen.language)  # what the firmware does with the answer
        task = await asking(ui, AskCode("settings"))
        assert text("nl", "code.title") in ui.texts()
        task.cancel()
        await ui.settle()

    run(test)


# --- refund mode, receipt marks, training band ----------------------------------------------------

def test_keypad_opened_in_refund_mode_stays_there() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskAmount("EUR", 2, refund=True))
        assert fr("keypad.refund") in ui.texts()
        with pytest.raises(UiError):
            ui.tap_text(fr("keypad.sale"))  # no switch back to a sale
        await taps(ui, "7", "5", fr("common.ok"))
        assert await answer(task) == AmountEntry(75, 0, refund=True)

    run(test)


def test_keypad_without_refund_allowed_offers_no_refund() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskAmount("EUR", 2, refund_allowed=False))
        assert fr("keypad.refund") not in [b.text for b in ui.buttons()]
        assert fr("keypad.sale") in ui.texts()
        await taps(ui, "5", fr("common.ok"))
        assert await answer(task) == AmountEntry(5, 0, refund=False)

    run(test)


def test_receipt_marks_duplicate_and_training() -> None:
    lines = ("TAXI 75", "TOTAL EUR   42,50")

    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskReceipt(Receipt(lines)))
        assert fr("receipt.duplicate") not in " ".join(ui.texts())
        task.cancel()
        await ui.settle()
        task = await asking(ui, AskReceipt(Receipt(lines, duplicate=True)))
        shown = ui.texts()
        assert shown.count(fr("receipt.duplicate")) == 2 and set(lines) <= set(shown)
        task.cancel()
        await ui.settle()
        task = await asking(ui, AskReceipt(Receipt(lines, duplicate=True, training=True)))
        marks = [t for t in ui.texts() if fr("receipt.training") in t]
        assert len(marks) == 2 and all(fr("receipt.duplicate") in t for t in marks)
        await taps(ui, fr("receipt.done"))
        assert await answer(task) == "done"

    run(test)


@pytest.mark.parametrize("language", LANGUAGES)
def test_training_band_on_every_screen_while_on(language: str) -> None:
    async def test(ui: TouchUi) -> None:
        ui.set_status(Status(route="4G", training=True))
        ui.show(Idle())
        await ui.settle()
        band = text(language, "status.training")
        assert band in ui.texts()
        task = await asking(ui, AskCode("training"))
        assert band in ui.texts()
        big_enough(ui)
        task.cancel()
        await ui.settle()
        ui.set_status(Status(route="4G"))
        await ui.settle()
        assert band not in ui.texts()

    run(test, language=language)


# --- pre-authorizations -------------------------------------------------------------------------------

def test_an_open_pre_authorization_is_picked_then_released() -> None:
    preauths = (PreauthLine(7, eur(15000), "2025-03-14 08:10", "476173******0010"),
                PreauthLine(9, eur(4000), "2025-03-14 09:30", None))

    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskPreauth(preauths))
        rows = {b.event.value: b.text for b in ui.buttons() if b.event.name == "preauth"}
        first, second = fr("preauth.row", number=7, at="2025-03-14 08:10"), fr("preauth.row", number=9,
                                                                                at="2025-03-14 09:30")
        assert rows == {7: f"{first}\n150,00\u00a0€ · 476173******0010", 9: f"{second}\n40,00\u00a0€"}
        actions = {b.text: b.enabled for b in ui.buttons() if b.event.name == "action"}
        assert actions == {fr("preauth.complete"): False, fr("preauth.release"): False}  # nothing picked
        big_enough(ui)
        (row,) = [b for b in ui.buttons() if b.event.name == "preauth" and b.event.value == 9]
        ui.tap(*row.box.center)
        await ui.settle()
        await taps(ui, fr("preauth.release"))
        assert await answer(task) == PreauthChoice(9, "release")
        task = await asking(ui, AskPreauth(()))
        assert fr("preauth.empty") in ui.texts()
        await taps(ui, fr("common.back"))
        assert await answer(task) is None

    run(test)


def test_the_completion_keypad_refuses_more_than_was_reserved() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskAmount("EUR", 2, purpose="completion", maximum=5000, refund_allowed=False))
        assert fr("keypad.completion") in ui.texts() and fr("keypad.refund") not in ui.texts()
        await taps(ui, *"5001", fr("common.ok"))
        assert not task.done()
        await taps(ui, fr("common.clear"), *"5000", fr("common.ok"))
        assert await answer(task) == AmountEntry(5000)

    run(test)
