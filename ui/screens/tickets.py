"""The last tickets (`AskTicket`), newest first, each row a button: the merchant picks one, then
one of the actions offered (a duplicate, a void). A ticket already cancelled, or a cancellation
itself, cannot be voided. Rows that do not fit go on further pages."""

from __future__ import annotations

from ui.contract import TICKET_ACTIONS, AskTicket, TicketChoice, TicketLine
from ui.geometry import Box
from ui.screens.base import Answered, Audience, Env, Screen, body, bottom_row, title
from ui.widgets import Button, UiEvent, Widget

ROW_PX = 76  # reference pixels of a ticket row: two lines of text, a large touch target
KINDS = ("refund", "cancellation")  # a sale needs no word


def voidable(ticket: TicketLine) -> bool:
    return not ticket.cancelled and ticket.kind != "cancellation"


class TicketScreen(Screen):
    name = "tickets"
    audience = Audience.MERCHANT
    cancel_answer = None

    def __init__(self, question: AskTicket) -> None:
        self.tickets = question.tickets
        self.actions = tuple(a for a in question.actions if a in TICKET_ACTIONS)
        self.selected: int | None = None  # the seq picked
        self.page = 0
        self._per_page = len(self.tickets) or 1

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.tickets) // self._per_page))

    def _ticket(self, seq: int | None) -> TicketLine | None:
        return next((t for t in self.tickets if t.seq == seq), None)

    def allowed(self, action: str) -> bool:
        ticket = self._ticket(self.selected)
        return ticket is not None and action in self.actions and (action != "cancel" or voidable(ticket))

    def handle_event(self, event: UiEvent) -> Answered | None:
        match event.name:
            case "ticket" if self._ticket(event.value) is not None:
                self.selected = event.value
            case "page":
                self.page = min(max(0, self.page + event.value), self.pages - 1)
            case "action" if self.selected is not None and self.allowed(event.value):
                return Answered(TicketChoice(self.selected, event.value))
            case "back":
                return Answered(None)
        return None

    def layout(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        buttons = [(tr("common.back"), UiEvent("back"), "button")]
        row, area = bottom_row(area, env, [*buttons, *((tr(f"tickets.{a}"), UiEvent("action", a), "ok")
                                                      for a in self.actions)])
        widgets.extend(b if b.event.name != "action" or self.allowed(b.event.value)
                       else Button(b.box, b.text, b.event, b.size, "disabled", enabled=False)
                       for b in row if isinstance(b, Button))
        label, area = title(area, env, tr("tickets.title"), env.px(44))
        widgets.append(label)
        if not self.tickets:
            label, area = body(area, env, tr("tickets.empty"), env.px(60), style="dim", wrap=True)
            return [*widgets, label]
        label, area = body(area, env, tr("tickets.pick"), env.px(30), size=env.px(22), style="dim")
        widgets.append(label)
        row_h = max(env.px(ROW_PX), env.theme.min_target)
        fit = max(1, (area.h + env.gap) // (row_h + env.gap))
        if fit < len(self.tickets):
            nav, area = area.take_bottom(max(env.px(72), env.theme.min_target), env.gap)
            fit = max(1, (area.h + env.gap) // (row_h + env.gap))
            self._per_page = fit
            self.page = min(self.page, self.pages - 1)
            prev_box, page_box, next_box = nav.columns(3, env.gap)
            for box, key, step in ((prev_box, "tickets.previous", -1), (next_box, "tickets.next", 1)):
                enabled = 0 <= self.page + step < self.pages
                widgets.append(Button(box, tr(key), UiEvent("page", step), env.px(24),
                                      "button" if enabled else "disabled", enabled))
            label, _ = body(page_box, env, f"{self.page + 1}/{self.pages}", page_box.h, size=env.px(26))
            widgets.append(label)
        else:
            self._per_page = len(self.tickets)
            self.page = 0
        start = self.page * self._per_page
        for ticket in self.tickets[start:start + self._per_page]:
            box, area = area.take_top(row_h, env.gap)
            style = "field" if ticket.seq == self.selected else "button"
            widgets.append(Button(box, row_text(ticket, env), UiEvent("ticket", ticket.seq), env.px(24),
                                  style))
        return widgets


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
