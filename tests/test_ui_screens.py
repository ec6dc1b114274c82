"""The touchscreen driven as a finger would: synthetic touches through `TouchUi` on an asyncio
loop (SDL dummy driver), answers and rendered texts checked, never pixels."""

from __future__ import annotations

import asyncio
import datetime
import os
import tomllib
from collections.abc import Awaitable, Callable
from typing import Any

import pygame
import pytest

from ui.app import TouchUi
from ui.contract import (
    LANGUAGES,
    MENU_ITEMS,
    OPEN_MENU,
    SEND_NOW,
    AmountEntry,
    AskAmount,
    AskApplication,
    AskCancel,
    AskConfirm,
    AskMenu,
    AskOfflineQueue,
    AskPin,
    AskReceipt,
    AskSignature,
    Error,
    Idle,
    Money,
    Outcome,
    PresentCard,
    Processing,
    Receipt,
    Status,
)
from ui.errors import UiError
from ui.i18n import LOCALES
from ui.widgets import Keypad, SignaturePad

os.environ["SDL_VIDEODRIVER"] = "dummy"

NBSP = "\u00a0"
EUR_42_50 = Money(4250, "EUR", 2)
TIMEOUT = 5


def text(language: str, key: str) -> str:
    """A catalogue text read with tomllib alone."""
    with (LOCALES / f"{language}.toml").open("rb") as f:
        table: Any = tomllib.load(f)
    for part in key.split("."):
        table = table[part]
    return table


def run(test: Callable[[TouchUi], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        async with TouchUi(**options) as ui:
            await asyncio.wait_for(test(ui), TIMEOUT)

    asyncio.run(main())


async def asking(ui: TouchUi, question: Any) -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(ui.ask(question))
    await ui.settle()
    return task


async def taps(ui: TouchUi, *labels: str) -> None:
    for label in labels:
        ui.tap_text(label)
        await ui.settle()


async def answer(task: asyncio.Task[Any]) -> Any:
    return await asyncio.wait_for(task, TIMEOUT)


# --- the merchant's keypad ----------------------------------------------------------------------

def test_keypad_answers_the_keyed_amount_and_shows_it() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskAmount("EUR", 2))
        await taps(ui, "1", "2", "5", "0")
        assert f"12,50{NBSP}€" in ui.texts()
        await taps(ui, "Valider")
        assert await answer(task) == AmountEntry(1250, 0, refund=False)

    run(test)


def test_keypad_clear_double_zero_and_ok_on_zero() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskAmount("EUR", 2))
        await taps(ui, "9", "Effacer", "Valider")
        assert not task.done()  # nothing to pay
        await taps(ui, "3", "00", "Valider")
        assert await answer(task) == AmountEntry(300)

    run(test)


def test_keypad_tip_then_refund_mode() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskAmount("EUR", 2, tip=True))
        await taps(ui, "2", "0", "0", "0", "Valider")
        assert not task.done()  # now on the tip
        await taps(ui, "1", "5", "0")
        assert f"Pourboire{NBSP}: 1,50{NBSP}€" in ui.texts()
        await taps(ui, "Valider")
        assert await answer(task) == AmountEntry(2000, 150)

        task = await asking(ui, AskAmount("EUR", 2))
        await taps(ui, "Remboursement", "7", "5", "Valider")
        assert await answer(task) == AmountEntry(75, 0, refund=True)

    run(test)


def test_keypad_cancel_gives_none_and_the_menu_its_flow() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskAmount("EUR", 2))
        with pytest.raises(UiError):
            ui.tap_text("Menu")  # not offered
        await taps(ui, "4", "Annuler")
        assert await answer(task) is None

        task = await asking(ui, AskAmount("EUR", 2, menu=True))
        await taps(ui, "Menu")
        assert await answer(task) == OPEN_MENU
        task = await asking(ui, AskMenu())
        labels = [b.text for b in ui.buttons()]
        for item in MENU_ITEMS:
            assert text("fr", f"menu.{item}") in labels
        await taps(ui, "Télécollecte")
        assert await answer(task) == "settlement"
        task = await asking(ui, AskMenu(("history", "sale")))  # an item it does not know is left out
        assert "Télécollecte" not in [b.text for b in ui.buttons()]
        await taps(ui, "Retour")
        assert await answer(task) is None

    run(test)


def test_idle_keypad_does_nothing_until_asked() -> None:
    async def test(ui: TouchUi) -> None:
        ui.show(Idle())
        await ui.settle()
        assert "Terminal prêt" in ui.texts()
        assert all(not b.enabled for b in ui.buttons())
        with pytest.raises(UiError):
            ui.tap_text("5")

    run(test)


# --- the PIN pad --------------------------------------------------------------------------------

def test_pin_pad_returns_the_digits_and_draws_only_dots() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskPin(EUR_42_50, online=True, tries_left=2))
        assert "Essais restants\u00a0: 2" in ui.texts()
        assert text("fr", "pin.title_online") in ui.texts()
        await taps(ui, "4", "3", "2", "1")
        shown = ui.texts()
        assert "••••" in shown
        assert not any("4321" in t for t in shown)
        assert "4321" not in repr(ui.screen)
        await taps(ui, "Valider")
        assert await answer(task) == "4321"

    run(test)


def test_pin_pad_needs_four_digits_takes_twelve_and_corrects() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskPin(EUR_42_50, online=False, last_try=True))
        assert text("fr", "pin.title_offline") in ui.texts()
        assert "Dernier essai" in ui.texts()
        await taps(ui, "1", "2", "3", "Valider")
        assert not task.done()  # ISO 9564-1: at least four digits
        await taps(ui, "Corriger")
        assert "•" not in "".join(ui.texts())
        await taps(ui, *"1234567890123")
        assert "•" * 12 in ui.texts()
        await taps(ui, "Valider")
        assert await answer(task) == "123456789012"

        task = await asking(ui, AskPin(EUR_42_50, online=True))
        await taps(ui, "1", "Annuler")
        assert await answer(task) is None

    run(test)


def _digit_order(ui: TouchUi) -> list[str]:
    buttons = [b for b in ui.buttons() if b.event.name == "digit"]
    return [b.text for b in sorted(buttons, key=lambda b: (b.box.y, b.box.x))]


def test_plain_pin_pad_is_laid_out_like_a_phone() -> None:
    async def test(ui: TouchUi) -> None:
        await asking(ui, AskPin(EUR_42_50, online=True))
        assert _digit_order(ui) == list("1234567890")

    run(test)


def test_shuffled_pin_pads_differ_by_seed_and_still_give_the_digits() -> None:
    layouts = []
    for seed in (1, 2):
        async def test(ui: TouchUi) -> None:
            task = await asking(ui, AskPin(EUR_42_50, online=True, shuffled=True))
            layouts.append(_digit_order(ui))
            await taps(ui, "9", "0", "5", "7", "Valider")
            assert await answer(task) == "9057"

        run(test, pin_shuffle_seed=seed)
    assert layouts[0] != layouts[1]
    assert sorted(layouts[0]) == sorted(layouts[1]) == sorted("0123456789")


# --- the other cardholder screens ------------------------------------------------------------------

def test_application_choice_returns_the_index() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskApplication(("CB", "VISA DEBIT", "MASTERCARD")))
        assert text("fr", "choice.title") in ui.texts()
        await taps(ui, "VISA DEBIT")
        assert await answer(task) == 1
        task = await asking(ui, AskApplication(("CB", "VISA")))
        await taps(ui, "Annuler")
        assert await answer(task) is None

    run(test)


def test_amount_confirmation() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskConfirm(EUR_42_50))
        assert f"42,50{NBSP}€" in ui.texts()
        await taps(ui, "Valider")
        assert await answer(task) is True
        task = await asking(ui, AskConfirm(EUR_42_50))
        await taps(ui, "Annuler")
        assert await answer(task) is False

    run(test)


def test_signature_needs_a_stroke_and_clear_wipes_it() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskSignature(EUR_42_50))
        pad = next(w for w in ui.widgets() if isinstance(w, SignaturePad))
        await taps(ui, "Valider")
        assert not task.done()
        x, y = pad.box.x + 20, pad.box.y + 40
        ui.drag([(x, y), (x + 60, y + 30), (x + 120, y - 10), (x + 200, y + 20)])
        await ui.settle()
        drawn = next(w for w in ui.widgets() if isinstance(w, SignaturePad))
        assert drawn.strokes == (((20, 40), (80, 70), (140, 30), (220, 60)),)
        await taps(ui, "Effacer", "Valider")
        assert not task.done()
        ui.drag([(x, y), (x + 50, y + 50)])
        await ui.settle()
        await taps(ui, "Valider")
        assert await answer(task) is True

        task = await asking(ui, AskSignature(EUR_42_50))
        await taps(ui, "Annuler")
        assert await answer(task) is False

    run(test)


def test_receipt_print_and_done() -> None:
    lines = ("TAXI 75", "TOTAL EUR   42,50")

    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskReceipt(Receipt(lines, qr="https://r.example/t/1", printable=True)))
        shown = ui.texts()
        assert set(lines) <= set(shown)
        assert text("fr", "receipt.scan") in shown
        await taps(ui, "Imprimer")
        assert await answer(task) == "print"
        task = await asking(ui, AskReceipt(Receipt(lines)))
        assert text("fr", "receipt.scan") not in ui.texts()
        with pytest.raises(UiError):
            ui.tap_text("Imprimer")  # no printer configured
        await taps(ui, "Terminé")
        assert await answer(task) == "done"

    run(test)


def test_present_card_cancel_and_the_firmware_moving_on() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskCancel(PresentCard(EUR_42_50)))
        assert {"Insérez la carte", f"42,50{NBSP}€"} <= set(ui.texts())
        await taps(ui, "Annuler")
        assert await answer(task) is True

        task = await asking(ui, AskCancel(PresentCard(EUR_42_50)))
        ui.show(Processing("reading"))  # the card came
        assert await answer(task) is False
        await ui.settle()
        assert ui.screen.name == "processing"
        assert {"Lecture de la carte", "Ne retirez pas la carte"} <= set(ui.texts())

        ui.show(PresentCard(EUR_42_50, refund=True))
        await ui.settle()
        assert "Remboursement" in ui.texts()
        assert "Annuler" not in ui.texts()  # a plain view: nothing to cancel

    run(test)


def test_offline_queue_lists_amounts_and_sends() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskOfflineQueue((Money(1250, "EUR", 2), Money(4200, "EUR", 2))))
        shown = ui.texts()
        expected = {f"12,50{NBSP}€", f"42,00{NBSP}€", f"En attente{NBSP}: 2", f"Total{NBSP}: 54,50{NBSP}€"}
        assert expected <= set(shown)
        await taps(ui, "Envoyer")
        assert await answer(task) == SEND_NOW
        task = await asking(ui, AskOfflineQueue(()))
        assert text("fr", "queue.empty") in ui.texts()
        with pytest.raises(UiError):
            ui.tap_text("Envoyer")
        await taps(ui, "Retour")
        assert await answer(task) is None

    run(test)


# --- languages ------------------------------------------------------------------------------------

def test_card_language_switches_cardholder_screens_only() -> None:
    async def test(ui: TouchUi) -> None:
        ui.set_status(Status(route="4G", signal_bars=2, pending_count=1, pending_amounts={"EUR": 990}))
        assert ui.cardholder_language(["ja", "de"]) == "de"
        task = await asking(ui, AskConfirm(EUR_42_50))
        shown = ui.texts()
        assert {"Bestätigen", "Abbrechen", text("de", "confirm.title")} <= set(shown)
        assert "1 en attente" in shown  # the status bar is the merchant's, in French
        await taps(ui, "Bestätigen")
        assert await answer(task) is True

        task = await asking(ui, AskAmount("EUR", 2))  # the merchant's keypad stays French
        assert {"Valider", "Vente"} <= set(ui.texts())
        task.cancel()
        await ui.settle()

        ui.show(Outcome(False, EUR_42_50, reason="issuer_declined"))
        await ui.settle()
        assert "Ihre Bank hat die Zahlung abgelehnt." in ui.texts()

        ui.show(Idle())  # the sale is over: back to the merchant's language
        task = await asking(ui, AskConfirm(EUR_42_50))
        assert "Valider" in ui.texts()
        task.cancel()
        await ui.settle()

        assert ui.cardholder_language(["ja"]) == "fr"

    run(test)


@pytest.mark.parametrize("language", LANGUAGES)
def test_outcome_reasons_render_translated(language: str) -> None:
    async def test(ui: TouchUi) -> None:
        ui.cardholder_language([language])
        for reason, key in (("offline_refused:amount_limit", "reason.offline_amount_limit"),
                            ("expired_application", "reason.card_expired"),
                            ("a_word_nobody_knows", "reason.declined_other")):
            ui.show(Outcome(False, EUR_42_50, reason=reason))
            await ui.settle()
            assert {text(language, key), text(language, "outcome.declined")} <= set(ui.texts()), reason
        ui.show(Outcome(True, EUR_42_50, offline=True))
        await ui.settle()
        assert {text(language, "outcome.approved"), text(language, "outcome.offline")} <= set(ui.texts())

    run(test)


def test_plain_words_for_the_cardholder_in_english() -> None:
    async def test(ui: TouchUi) -> None:
        ui.show(Outcome(False, EUR_42_50, reason="offline_refused:amount_limit"))
        await ui.settle()
        assert "This amount is over the limit for payments without a connection to the bank." in ui.texts()
        assert "€42.50" in ui.texts()

    run(test, language="en")


@pytest.mark.parametrize("kind", ["card_removed", "no_network_offline", "reader_missing", "card_error",
                                  "try_again", "printer_on_fire"])
def test_error_screens(kind: str) -> None:
    known = kind != "printer_on_fire"

    async def test(ui: TouchUi) -> None:
        ui.show(Error(kind))
        await ui.settle()
        key = kind if known else "other"
        assert {text("fr", f"error.{key}.title"), text("fr", f"error.{key}.detail")} <= set(ui.texts())

    run(test)


# --- the status bar ---------------------------------------------------------------------------------

def test_status_bar_texts() -> None:
    clock = datetime.datetime(2025, 6, 1, 14, 7, tzinfo=datetime.UTC)

    async def test(ui: TouchUi) -> None:
        ui.set_status(Status(route="wifi", signal_bars=2, battery_percent=42, pending_count=3,
                             pending_amounts={"EUR": 12345, "JPY": 500}, clock=clock,
                             alerts=("saf_overdue",)))
        ui.show(Processing("authorizing"))
        await ui.settle()
        shown = ui.texts()
        for expected in ("Wi-Fi", f"42{NBSP}%", "3 en attente", f"123,45{NBSP}€ + 500{NBSP}¥", "14:07", "!"):
            assert expected in shown, expected
        ui.set_status(Status())
        await ui.settle()
        shown = ui.texts()
        assert "Hors ligne" in shown
        assert "!" not in shown and not any("en attente" in t for t in shown)

    run(test)


def test_status_bar_in_the_merchants_language() -> None:
    async def test(ui: TouchUi) -> None:
        ui.set_status(Status(route="4G", battery_percent=80, pending_count=1, pending_amounts={"EUR": 500}))
        ui.cardholder_language(["fr"])
        await ui.settle()
        assert {"4G", "80%", "1 waiting", "€5.00"} <= set(ui.texts())
        ui.set_merchant_language("sv")
        await ui.settle()
        assert {"1 väntar", f"80{NBSP}%"} <= set(ui.texts())
        with pytest.raises(UiError):
            ui.set_merchant_language("tlh")

    run(test, language="en")


# --- the loop and the questions ---------------------------------------------------------------------

def test_a_view_shown_during_a_question_answers_it_as_cancelled() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskPin(EUR_42_50, online=True))
        await taps(ui, "1", "2")
        ui.show(Error("card_removed"))  # card pulled mid-PIN
        assert await answer(task) is None
        await ui.settle()
        assert ui.screen.name == "error" and ui.asking is None

        first = await asking(ui, AskConfirm(EUR_42_50))
        second = await asking(ui, AskApplication(("A", "B")))
        assert await answer(first) is False
        await taps(ui, "B")
        assert await answer(second) == 1

    run(test)


def test_an_ask_cancelled_by_the_firmware_leaves_the_last_view() -> None:
    async def test(ui: TouchUi) -> None:
        ui.show(Processing("reading"))
        task = await asking(ui, AskSignature(EUR_42_50))
        assert ui.screen.name == "signature"
        task.cancel()
        await ui.settle()
        assert task.cancelled()
        assert ui.screen.name == "processing" and ui.asking is None

    run(test)


def test_a_question_answered_returns_to_the_last_view() -> None:
    async def test(ui: TouchUi) -> None:
        ui.show(Processing("authorizing"))
        task = await asking(ui, AskConfirm(EUR_42_50))
        await taps(ui, "Valider")
        assert await answer(task) is True
        await ui.settle()
        assert ui.screen.name == "processing"

    run(test)


def test_mouse_works_and_touch_copies_of_the_mouse_are_ignored() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskAmount("EUR", 2))
        one = next(b for b in ui.buttons() if b.text == "1")
        at = one.box.center
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, button=1, pos=at, touch=False))
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, button=1, pos=at, touch=False))
        await ui.settle()
        ui.tap(*at)  # a finger, and the mouse copy SDL makes of it
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, button=1, pos=at, touch=True))
        pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, button=1, pos=at, touch=True))
        await ui.settle()
        assert f"0,11{NBSP}€" in ui.texts()
        task.cancel()
        await ui.settle()

    run(test)


def test_sliding_off_a_button_does_not_press_it() -> None:
    async def test(ui: TouchUi) -> None:
        task = await asking(ui, AskConfirm(EUR_42_50))
        ok = next(b for b in ui.buttons() if b.text == "Valider")
        ui.drag([ok.box.center, (ok.box.center[0], ok.box.y - 200)])
        await ui.settle()
        assert not task.done()
        await taps(ui, "Annuler")
        assert await answer(task) is False

    run(test)


def test_idle_draws_nothing_and_the_clock_redraws_once_a_minute() -> None:
    now = [datetime.datetime(2025, 6, 1, 14, 7, 58, tzinfo=datetime.UTC)]

    async def test(ui: TouchUi) -> None:
        ui.show(Idle())
        await ui.settle()
        frames = ui.frames
        await asyncio.sleep(0.25)
        assert ui.frames == frames
        now[0] += datetime.timedelta(seconds=3)
        for _ in range(100):  # the next poll notices the minute; a loaded machine may be slow to poll
            await asyncio.sleep(0.02)
            if ui.frames > frames:
                break
        assert ui.frames == frames + 1
        assert "14:08" in ui.texts()

    run(test, now=lambda: now[0], idle_poll=0.02)


def test_keypad_widget_lays_keys_on_a_grid() -> None:
    from ui.geometry import Box

    pad = Keypad(Box(0, 0, 300, 400), ("1", "2", "3", None, "0", None), 3, 0, 30)
    assert [b.text for b in pad.buttons] == ["1", "2", "3", "0"]
    assert [b.box for b in pad.buttons] == [Box(0, 0, 100, 200), Box(100, 0, 100, 200), Box(200, 0, 100, 200),
                                            Box(100, 200, 100, 200)]
