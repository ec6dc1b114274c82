"""Lists the merchant picks a row from, then an action: the last tickets (`AskTicket`), newest
first, for a duplicate or a void; the open pre-authorizations (`AskPreauth`), oldest first, to
complete or release. Each row is a button; rows that do not fit go on further pages. A ticket
already cancelled, or a cancellation itself, cannot be voided."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ui.contract import (
    PREAUTH_ACTIONS,
    TICKET_ACTIONS,
    AskPreauth,
    AskTicket,
    PreauthChoice,
    PreauthLine,
    TicketChoice,
    TicketLine,
)
from ui.geometry import Box
from ui.screens.base import Answered, Audience, Env, Screen, body, bottom_row, title
from ui.widgets import Button, UiEvent, Widget

ROW_PX = 76  # reference pixels of a row: two lines of text, a large touch target
KINDS = ("refund", "cancellation")  # a sale needs no word


def voidable(ticket: TicketLine) -> bool:
    return not ticket.cancelled and ticket.kind != "cancellation"


class PickScreen(Screen):
    """A paged list of rows, one picked, then one of `actions` (catalogue section `section`:
    title, empty, pick and a text per action)."""

    audience = Audience.MERCHANT
    cancel_answer = None
    section = ""
    row_event = "row"  # the name of the event a row's button emits

    def __init__(self, rows: Sequence[Any], actions: tuple[str, ...]) -> None:
        self.rows = tuple(rows)
        self.actions = actions
        self.selected: int | None = None  # the key of the row picked
        self.page = 0
        self._per_page = len(self.rows) or 1

    def key(self, row: Any) -> int:
        raise NotImplementedError

    def row_text(self, row: Any, env: Env) -> str:
        raise NotImplementedError

    def answer(self, key: int, action: str) -> Any:
        raise NotImplementedError

    def row_allows(self, row: Any, action: str) -> bool:
        return True

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.rows) // self._per_page))

    def _row(self, key: int | None) -> Any:
        return next((row for row in self.rows if self.key(row) == key), None)

    def allowed(self, action: str) -> bool:
        row = self._row(self.selected)
        return row is not None and action in self.actions and self.row_allows(row, action)

    def handle_event(self, event: UiEvent) -> Answered | None:
        match event.name:
            case name if name == self.row_event and self._row(event.value) is not None:
                self.selected = event.value
            case "page":
                self.page = min(max(0, self.page + event.value), self.pages - 1)
            case "action" if self.selected is not None and self.allowed(event.value):
                return Answered(self.answer(self.selected, event.value))
            case "back":
                return Answered(None)
        return None

    def layout(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        buttons = [(tr("common.back"), UiEvent("back"), "button")]
        row, area = bottom_row(area, env, [*buttons, *((tr(f"{self.section}.{a}"), UiEvent("action", a), "ok")
                                                      for a in self.actions)])
        widgets.extend(b if b.event.name != "action" or self.allowed(b.event.value)
                       else Button(b.box, b.text, b.event, b.size, "disabled", enabled=False)
                       for b in row if isinstance(b, Button))
        label, area = title(area, env, tr(f"{self.section}.title"), env.px(44))
        widgets.append(label)
        if not self.rows:
            label, area = body(area, env, tr(f"{self.section}.empty"), env.px(60), style="dim", wrap=True)
            return [*widgets, label]
        label, area = body(area, env, tr(f"{self.section}.pick"), env.px(30), size=env.px(22), style="dim")
        widgets.append(label)
        row_h = max(env.px(ROW_PX), env.theme.min_target)
        fit = max(1, (area.h + env.gap) // (row_h + env.gap))
        if fit < len(self.rows):
            nav, area = area.take_bottom(max(env.px(72), env.theme.min_target), env.gap)
            fit = max(1, (area.h + env.gap) // (row_h + env.gap))
            self._per_page = fit
            self.page = min(self.page, self.pages - 1)
            prev_box, page_box, next_box = nav.columns(3, env.gap)
            for box, key, step in ((prev_box, "common.previous", -1), (next_box, "common.next", 1)):
                enabled = 0 <= self.page + step < self.pages
                widgets.append(Button(box, tr(key), UiEvent("page", step), env.px(24),
                                      "button" if enabled else "disabled", enabled))
            label, _ = body(page_box, env, f"{self.page + 1}/{self.pages}", page_box.h, size=env.px(26))
            widgets.append(label)
        else:
            self._per_page = len(self.rows)
            self.page = 0
        start = self.page * self._per_page
        for item in self.rows[start:start + self._per_page]:
            box, area = area.take_top(row_h, env.gap)
            style = "field" if self.key(item) == self.selected else "button"
            widgets.append(Button(box, self.row_text(item, env), UiEvent(self.row_event, self.key(item)),
                                  env.px(24), style))
        return widgets


class TicketScreen(PickScreen):
    name = "tickets"
    section = "tickets"
    row_event = "ticket"

    def __init__(self, question: AskTicket) -> None:
        super().__init__(question.tickets, tuple(a for a in question.actions if a in TICKET_ACTIONS))

    @property
    def tickets(self) -> tuple[TicketLine, ...]:
        return self.rows

    def key(self, row: TicketLine) -> int:
        return row.seq

    def row_allows(self, row: TicketLine, action: str) -> bool:
        return action != "cancel" or voidable(row)

    def answer(self, key: int, action: str) -> TicketChoice:
        return TicketChoice(key, action)

    def row_text(self, row: TicketLine, env: Env) -> str:
        return row_text(row, env)


class PreauthScreen(PickScreen):
    name = "preauths"
    section = "preauth"
    row_event = "preauth"

    def __init__(self, question: AskPreauth) -> None:
        super().__init__(question.preauths, tuple(a for a in question.actions if a in PREAUTH_ACTIONS))

    def key(self, row: PreauthLine) -> int:
        return row.payment

    def answer(self, key: int, action: str) -> PreauthChoice:
        return PreauthChoice(key, action)

    def row_text(self, row: PreauthLine, env: Env) -> str:
        """Two lines: the number and the time; the amount reserved and the card, masked."""
        tr = env.tr
        words = [tr.money(row.money), *([row.pan_masked] if row.pan_masked else [])]
        return f"{tr('preauth.row', number=row.payment, at=row.at)}\n{' · '.join(words)}"


def row_text(ticket: TicketLine, env: Env) -> str:
    """Two lines: the number and the time; the amount, the kind and the flags."""
    tr = env.tr
    words = [tr.money(ticket.money)]
    if ticket.kind in KINDS:
        words.append(tr(f"tickets.kind.{ticket.kind}"))
    if ticket.cancelled:
        words.append(tr("tickets.cancelled"))
    if ticket.training:
        words.append(tr("tickets.training"))
    return f"{tr('tickets.row', seq=ticket.seq, at=ticket.at)}\n{' · '.join(words)}"
