"""The PIN pad: 4 to 12 digits (ISO 9564-1, 5.1), never displayed; the entry field shows one dot
per digit. The command keys sit in the last row, cancel (red), clear (yellow), enter (green), as
EN 1332-3 lays out a POS PIN entry device with no room for a fourth column.

The shuffled layout places the ten digits at random on the ten keys, once per entry: from a
seeded `random.Random` in tests, else from `random.SystemRandom` (os.urandom).
"""

from __future__ import annotations

import random

from ui.contract import AskPin
from ui.geometry import Box
from ui.screens.base import Answered, Env, Screen, body, bottom_row
from ui.widgets import Keypad, Label, UiEvent, Widget

MIN_DIGITS = 4
MAX_DIGITS = 12
DIGITS = "1234567890"
DOT = "•"


def key_layout(shuffle: random.Random | None) -> tuple[str | None, ...]:
    """Twelve cells, three by four: digits on nine cells and the middle of the last row."""
    digits = list(DIGITS)
    if shuffle is not None:
        shuffle.shuffle(digits)
    return (*digits[:9], None, digits[9], None)


class PinScreen(Screen):
    name = "pin"
    cancel_answer = None

    def __init__(self, question: AskPin, shuffle: random.Random | None = None) -> None:
        self.question = question
        self.keys = key_layout(shuffle if question.shuffled else None)
        self._digits: list[str] = []

    def __repr__(self) -> str:
        return f"PinScreen(online={self.question.online}, entered={len(self._digits)} digits)"

    @property
    def entered(self) -> int:
        return len(self._digits)

    def handle_event(self, event: UiEvent) -> Answered | None:
        match event.name:
            case "digit" if len(self._digits) < MAX_DIGITS and event.value in DIGITS:
                self._digits.append(event.value)
            case "correct":
                self._digits.clear()
            case "ok" if len(self._digits) >= MIN_DIGITS:
                pin = "".join(self._digits)
                self._digits.clear()
                return Answered(pin)
            case "cancel":
                self._digits.clear()
                return Answered(None)
        return None

    def exit(self) -> None:
        self._digits.clear()

    def layout(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        row, area = bottom_row(area, env, [(tr("common.cancel"), UiEvent("cancel"), "cancel"),
                                           (tr("pin.correct"), UiEvent("correct"), "correct"),
                                           (tr("common.ok"), UiEvent("ok"), "ok")])
        widgets.extend(row)
        heading = tr("pin.title_online") if self.question.online else tr("pin.title_offline")
        label, area = body(area, env, heading, env.px(68), size=env.px(28), bold=True, wrap=True)
        widgets.append(label)
        label, area = body(area, env, tr.money(self.question.money), env.px(40), size=env.px(34), bold=True)
        widgets.append(label)
        if self.question.last_try:
            label, area = body(area, env, tr("pin.last_try"), env.px(36), style="alert", bold=True)
            widgets.append(Label(label.box, label.text, label.size, "alert", bold=True, fill=True))
        elif self.question.tries_left is not None:
            label, area = body(area, env, tr("pin.tries_left", count=self.question.tries_left), env.px(36),
                               style="dim")
            widgets.append(label)
        box, area = area.take_top(env.px(72), env.gap)
        widgets.append(Label(box, DOT * len(self._digits), env.px(56), "field", bold=True, fill=True))
        widgets.append(Keypad(area, self.keys, 3, env.gap, env.px(40)))
        return widgets
