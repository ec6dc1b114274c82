"""The cardholder's screens before the PIN: present the card, choose the application of a
co-badged card (EMV 4.4 Book 1, 12.4: the cardholder may choose), confirm the amount."""

from __future__ import annotations

from ui.contract import AskApplication, AskConfirm, PresentCard
from ui.geometry import Box
from ui.screens.base import Answered, Env, Screen, ViewScreen, body, bottom_row, title
from ui.widgets import Button, Icon, Label, UiEvent, Widget


class PresentCardScreen(ViewScreen):
    name = "present_card"

    def __init__(self, view: PresentCard, cancellable: bool = False) -> None:
        super().__init__(cancellable)
        self.view = view

    def content(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        kind = tr("present.refund" if self.view.refund else "present.preauth" if self.view.preauth
                  else "present.sale")
        label, area = body(area, env, kind, env.px(40), style="dim")
        widgets.append(label)
        box, area = area.take_top(env.px(110), env.gap)
        widgets.append(Label(box, tr.money(self.view.money), env.px(72), bold=True))
        icon_box, area = area.take_top(env.px(220), env.gap)
        side = min(icon_box.w, icon_box.h)
        widgets.append(Icon(Box(icon_box.center[0] - side // 2, icon_box.y, side, side), "card", "info"))
        label, area = title(area, env, tr("present.insert"), env.px(56))
        widgets.append(label)
        return widgets


class ApplicationScreen(Screen):
    name = "application"
    cancel_answer = None

    def __init__(self, question: AskApplication) -> None:
        self.question = question

    def handle_event(self, event: UiEvent) -> Answered | None:
        if event.name == "choose" and 0 <= event.value < len(self.question.labels):
            return Answered(event.value)
        if event.name == "cancel":
            return Answered(None)
        return None

    def layout(self, area: Box, env: Env) -> list[Widget]:
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        row, area = bottom_row(area, env, [(env.tr("common.cancel"), UiEvent("cancel"), "cancel")])
        widgets.extend(row)
        label, area = title(area, env, env.tr("choice.title"), env.px(64))
        widgets.append(label)
        labels = self.question.labels
        if labels:
            height = min(env.px(120), (area.h - env.gap * (len(labels) - 1)) // len(labels))
            height = max(height, env.theme.min_target)
            for index, text in enumerate(labels):
                box, area = area.take_top(height, env.gap)
                widgets.append(Button(box, text, UiEvent("choose", index), env.px(36)))
        return widgets


class ConfirmScreen(Screen):
    name = "confirm"
    cancel_answer = False

    def __init__(self, question: AskConfirm) -> None:
        self.question = question

    def handle_event(self, event: UiEvent) -> Answered | None:
        if event.name in ("ok", "cancel"):
            return Answered(event.name == "ok")
        return None

    def layout(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        row, area = bottom_row(area, env, [(tr("common.cancel"), UiEvent("cancel"), "cancel"),
                                           (tr("common.ok"), UiEvent("ok"), "ok")], env.px(120))
        widgets.extend(row)
        label, area = title(area, env, tr("confirm.title"), env.px(64))
        widgets.append(label)
        box, area = area.take_top(env.px(140), env.gap)
        widgets.append(Label(box, tr.money(self.question.money), env.px(80), "field", bold=True, fill=True))
        label, area = body(area, env, tr("confirm.question"), env.px(100), wrap=True)
        widgets.append(label)
        return widgets
