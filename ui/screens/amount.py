"""The merchant's amount keypad: `Idle` (waiting, keys inactive) and `AskAmount`.

Amounts are keyed in minor units from the right, as on a cash register: 1, 2, 5, 0 gives 12.50.
With a tip offered, OK on the amount moves to the tip; OK on the tip answers. A pre-authorization
and a completion have a keypad of their own (`AskAmount.purpose`); a completion's amount is at
most the amount pre-authorized (`AskAmount.maximum`): OK on more does nothing.
"""

from __future__ import annotations

from ui.contract import AMOUNT_PURPOSES, OPEN_MENU, AmountEntry, AskAmount, Money
from ui.geometry import Box
from ui.i18n import Translator
from ui.screens.base import Answered, Audience, Env, Screen, bottom_row
from ui.widgets import Button, Keypad, Label, UiEvent, Widget

MAX_DIGITS = 9  # 9 999 999.99 with two decimals: beyond any card sale
KEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", None, "0", "00")
CLEAR_CELL = 9


class AmountScreen(Screen):
    name = "amount"
    audience = Audience.MERCHANT
    cancel_answer = None

    def __init__(self, question: AskAmount | None, currency: str = "EUR", exponent: int = 2) -> None:
        self.question = question
        self.currency = question.currency if question else currency
        self.exponent = question.exponent if question else exponent
        self.values = {"amount": 0, "tip": 0}
        self.field = "amount"
        self.refund = question is not None and question.refund
        self.purpose = question.purpose if question and question.purpose in AMOUNT_PURPOSES else "sale"
        self.maximum = question.maximum if question else None

    @property
    def active(self) -> bool:
        return self.question is not None

    @property
    def switchable(self) -> bool:
        """Sale and refund both offered: the keypad did not open in refund mode (the merchant
        code was given for a refund) and a refund may be asked for."""
        question = self.question
        return (question is not None and not question.refund and question.refund_allowed
                and self.purpose == "sale")

    def handle_event(self, event: UiEvent) -> Answered | None:
        question = self.question
        if question is None:
            return None
        match event.name:
            case "digit":
                value = self.values[self.field] * 10 ** len(event.value) + int(event.value)
                if value and len(str(value)) <= MAX_DIGITS:
                    self.values[self.field] = value
            case "clear":
                self.values[self.field] = 0
            case "field" if question.tip:
                self.field = event.value
            case "mode" if self.switchable:
                self.refund = event.value == "refund"
            case "ok":
                return self._ok(question)
            case "cancel":
                return Answered(None)
            case "menu" if question.menu:
                return Answered(OPEN_MENU)
        return None

    def _ok(self, question: AskAmount) -> Answered | None:
        if self.values["amount"] == 0 or (self.maximum is not None and self.values["amount"] > self.maximum):
            self.field = "amount"
            return None
        if question.tip and self.field == "amount":
            self.field = "tip"
            return None
        return Answered(AmountEntry(self.values["amount"], self.values["tip"] if question.tip else 0,
                                    self.refund))

    def layout(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        buttons = [(tr("common.cancel"), UiEvent("cancel"), "cancel")]
        if self.question is not None and self.question.menu:
            buttons.append((tr("keypad.menu"), UiEvent("menu"), "button"))
        buttons.append((tr("common.ok"), UiEvent("ok"), "ok"))
        row, area = bottom_row(area, env, buttons)
        widgets.extend(row)

        field_h = max(env.px(72), env.theme.min_target)
        modes, area = area.take_top(field_h, env.gap)
        if self.active and not self.switchable:
            mode = tr("keypad.refund") if self.refund else tr(f"keypad.{self.purpose}")
            widgets.append(Label(modes, mode, env.title_size, "alert" if self.refund else "screen", bold=True,
                                 fill=self.refund))
        elif self.active:
            sale_box, refund_box = modes.columns(2, env.gap)
            widgets.append(Button(sale_box, tr("keypad.sale"), UiEvent("mode", "sale"), env.button_size,
                                  "field_idle" if self.refund else "field"))
            widgets.append(Button(refund_box, tr("keypad.refund"), UiEvent("mode", "refund"),
                                  env.button_size, "field" if self.refund else "field_idle"))
        else:
            widgets.append(Label(modes, tr("keypad.ready"), env.title_size, bold=True))

        if self.question is not None and self.question.tip:
            for key in ("amount", "tip"):
                box, area = area.take_top(field_h, env.gap)
                text = tr(f"keypad.{key}", amount=self._money(self.values[key], tr))
                widgets.append(Button(box, text, UiEvent("field", key), env.button_size,
                                      "field" if self.field == key else "field_idle"))
        else:
            box, area = area.take_top(env.px(100), env.gap)
            widgets.append(Label(box, self._money(self.values["amount"], tr), env.px(64), "field",
                                 bold=True, fill=True))
        if self.maximum is not None:
            over = self.values["amount"] > self.maximum
            box, area = area.take_top(env.px(40), env.gap)
            widgets.append(Label(box, tr("keypad.maximum", amount=self._money(self.maximum, tr)), env.px(26),
                                 "alert" if over else "dim", bold=over))

        cells = area.grid(4, 3, env.gap)
        widgets.append(Keypad(area, KEYS, 3, env.gap, env.px(40)))
        widgets.append(Button(cells[CLEAR_CELL], tr("common.clear"), UiEvent("clear"), env.button_size,
                              "correct"))
        return widgets if self.active else [_disabled(w) for w in widgets]

    def _money(self, amount: int, tr: Translator) -> str:
        return tr.money(Money(amount, self.currency, self.exponent))


def _disabled(widget: Widget) -> Widget:
    """Idle: the keypad is drawn but does nothing until the firmware asks for an amount."""
    if isinstance(widget, Button):
        return Button(widget.box, widget.text, widget.event, widget.size, "disabled", enabled=False)
    if isinstance(widget, Keypad):
        return Keypad(widget.box, widget.keys, widget.cols, widget.gap, widget.size, widget.event_name,
                      "disabled", enabled=False)
    return widget
