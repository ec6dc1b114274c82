"""The merchant code (`AskCode`) before a guarded flow: digits masked as dots, what the code is
for, a wrong code with the tries left, a locked guard with only "back". The digits answer the
question and are dropped; the firmware checks them (`firmware.merchant_code`)."""

from __future__ import annotations

from ui.contract import CODE_PURPOSES, AskCode
from ui.geometry import Box
from ui.screens.base import Answered, Audience, Env, Screen, body, bottom_row, title
from ui.screens.pin import DOT, key_layout
from ui.widgets import Keypad, Label, UiEvent, Widget

MIN_DIGITS, MAX_DIGITS = 4, 8  # a merchant code is 4 to 8 digits (`firmware.merchant_code`)
DIGITS = "0123456789"


class CodeScreen(Screen):
    name = "code"
    audience = Audience.MERCHANT
    cancel_answer = None

    def __init__(self, question: AskCode) -> None:
        self.question = question
        self.keys = key_layout(None)
        self._digits: list[str] = []

    def __repr__(self) -> str:
        return f"CodeScreen(purpose={self.question.purpose!r}, entered={len(self._digits)} digits)"

    @property
    def entered(self) -> int:
        return len(self._digits)

    def handle_event(self, event: UiEvent) -> Answered | None:
        locked = self.question.locked
        match event.name:
            case "digit" if not locked and len(self._digits) < MAX_DIGITS and event.value in DIGITS:
                self._digits.append(event.value)
            case "clear":
                self._digits.clear()
            case "ok" if not locked and len(self._digits) >= MIN_DIGITS:
                code = "".join(self._digits)
                self._digits.clear()
                return Answered(code)
            case "cancel":
                self._digits.clear()
                return Answered(None)
        return None

    def exit(self) -> None:
        self._digits.clear()

    def layout(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        question = self.question
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        if question.locked:
            buttons = [(tr("common.back"), UiEvent("cancel"), "button")]
        else:
            buttons = [(tr("common.cancel"), UiEvent("cancel"), "cancel"),
                       (tr("common.clear"), UiEvent("clear"), "correct"),
                       (tr("common.ok"), UiEvent("ok"), "ok")]
        row, area = bottom_row(area, env, buttons)
        widgets.extend(row)
        label, area = title(area, env, tr("code.title"), env.px(44))
        widgets.append(label)
        if question.purpose in CODE_PURPOSES:
            label, area = body(area, env, tr(f"code.purpose.{question.purpose}"), env.px(36), style="dim")
            widgets.append(label)
        if question.locked:
            label, area = body(area, env, tr("code.locked"), env.px(150), bold=True, wrap=True)
            widgets.append(Label(label.box, label.text, label.size, "alert", bold=True, wrap=True, fill=True))
            return widgets
        if question.refused:
            label, area = body(area, env, tr("code.refused"), env.px(40), bold=True)
            widgets.append(Label(label.box, label.text, label.size, "alert", bold=True, fill=True))
        if question.tries_left is not None:
            label, area = body(area, env, tr("code.tries_left", count=question.tries_left), env.px(32),
                               size=env.px(22), style="dim")
            widgets.append(label)
        box, area = area.take_top(env.px(64), env.gap)
        widgets.append(Label(box, DOT * len(self._digits), env.px(52), "field", bold=True, fill=True))
        widgets.append(Keypad(area, self.keys, 3, env.gap, env.px(40)))
        return widgets
