"""The merchant's screens besides the keypad: the menu of flows and the offline queue."""

from __future__ import annotations

from ui.contract import MENU_ITEMS, SEND_NOW, AskMenu, AskOfflineQueue, Money
from ui.geometry import Box
from ui.screens.base import Answered, Audience, Env, Screen, body, bottom_row, title
from ui.widgets import Button, Label, UiEvent, Widget

KNOWN_ALERTS = ("saf_overdue", "declined_after_the_fact")
MAX_ALERTS = 2
MAX_QUEUE_LINES = 6


def alert_key(alert: str) -> str:
    return f"alert.{alert}" if alert in KNOWN_ALERTS else "alert.other"


class MenuScreen(Screen):
    name = "menu"
    audience = Audience.MERCHANT
    cancel_answer = None

    def __init__(self, question: AskMenu, alerts: tuple[str, ...] = ()) -> None:
        self.items = tuple(item for item in question.items if item in MENU_ITEMS)
        self.alerts = alerts

    def handle_event(self, event: UiEvent) -> Answered | None:
        if event.name == "menu_item" and event.value in self.items:
            return Answered(event.value)
        if event.name == "back":
            return Answered(None)
        return None

    def layout(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        row, area = bottom_row(area, env, [(tr("common.back"), UiEvent("back"), "button")])
        widgets.extend(row)
        label, area = title(area, env, tr("menu.title"))
        widgets.append(label)
        for alert in self.alerts[:MAX_ALERTS]:
            label, area = body(area, env, tr(alert_key(alert)), env.px(56), size=env.px(20), style="alert",
                               wrap=True)
            widgets.append(Label(label.box, label.text, label.size, "alert", wrap=True, fill=True))
        rows = -(-len(self.items) // 2)
        if rows:
            cells = area.grid(rows, 2, env.gap)
            for cell, item in zip(cells, self.items, strict=False):
                widgets.append(Button(cell, tr(f"menu.{item}"), UiEvent("menu_item", item), env.px(26)))
        return widgets


class OfflineQueueScreen(Screen):
    name = "offline_queue"
    audience = Audience.MERCHANT
    cancel_answer = None

    def __init__(self, question: AskOfflineQueue) -> None:
        self.payments = question.payments

    def handle_event(self, event: UiEvent) -> Answered | None:
        if event.name == "send" and self.payments:
            return Answered(SEND_NOW)
        if event.name == "back":
            return Answered(None)
        return None

    def layout(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        buttons = [(tr("common.back"), UiEvent("back"), "button")]
        if self.payments:
            buttons.append((tr("queue.send"), UiEvent("send"), "ok"))
        row, area = bottom_row(area, env, buttons)
        widgets.extend(row)
        label, area = title(area, env, tr("queue.title"), env.px(56), wrap=True)
        widgets.append(label)
        if not self.payments:
            label, area = body(area, env, tr("queue.empty"), env.px(60), style="dim", wrap=True)
            return [*widgets, label]
        label, area = body(area, env, tr("queue.count", count=len(self.payments)), env.px(44), bold=True)
        widgets.append(label)
        totals: dict[tuple[str, int], int] = {}
        for money in self.payments:
            key = (money.currency, money.exponent)
            totals[key] = totals.get(key, 0) + money.amount
        total_text = " + ".join(tr.money(Money(amount, currency, exponent))
                                for (currency, exponent), amount in sorted(totals.items()))
        label, area = body(area, env, tr("queue.total", amounts=total_text), env.px(44))
        widgets.append(label)
        shown = self.payments[:MAX_QUEUE_LINES]
        for money in shown:
            box, area = area.take_top(env.px(40), env.px(4))
            widgets.append(Label(box, tr.money(money), env.px(28), "paper", align="right", fill=True))
        if len(self.payments) > len(shown):
            label, area = body(area, env, tr("queue.more", count=len(self.payments) - len(shown)), env.px(40),
                               style="dim")
            widgets.append(label)
        return widgets
