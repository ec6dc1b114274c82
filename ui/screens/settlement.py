"""The settlement report (`AskSettlement`): the batch, each scheme's debits and credits, the
totals, the host's verdict in plain words (ISO 8583 0510 field 39: '00' reconciled, '95' out of
balance), whether the fiscal day was closed, "print" when a printer is configured, and "done"."""

from __future__ import annotations

from ui.contract import SETTLEMENT_RESULTS, AskSettlement, Money, SchemeLine
from ui.geometry import Box
from ui.screens.base import Answered, Audience, Env, Screen, body, bottom_row, title
from ui.widgets import Label, Panel, UiEvent, Widget

BLOCK_PX = 76  # reference pixels of a heading and two lines
RESULT_STYLES = {"in_balance": "approved", "out_of_balance": "alert", "host_unreachable": "alert",
                 "refused": "declined"}
# Registered application provider identifiers (ISO/IEC 7816-5) of the common schemes, shown by name.
RID_BRANDS = {"A000000003": "Visa", "A000000004": "Mastercard", "A000000042": "CB",
              "A000000025": "American Express", "A000000065": "JCB", "A000000152": "Discover",
              "A000000333": "UnionPay"}


def scheme_name(scheme: str) -> str:
    return RID_BRANDS.get(scheme.upper(), scheme)


class SettlementScreen(Screen):
    name = "settlement"
    audience = Audience.MERCHANT
    cancel_answer = "done"

    def __init__(self, question: AskSettlement) -> None:
        self.report = question.report
        self.printable = question.printable

    def handle_event(self, event: UiEvent) -> Answered | None:
        if event.name == "print" and self.printable:
            return Answered("print")
        return Answered("done") if event.name == "done" else None

    def layout(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        report = self.report
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        buttons = [(tr("receipt.print"), UiEvent("print"), "button")] if self.printable else []
        buttons.append((tr("receipt.done"), UiEvent("done"), "ok"))
        row, area = bottom_row(area, env, buttons)
        widgets.extend(row)
        label, area = title(area, env, tr("settlement.title"), env.px(44))
        widgets.append(label)
        label, area = body(area, env, tr("settlement.batch", batch=report.batch), env.px(34), style="dim")
        widgets.append(label)
        result = report.result if report.result in SETTLEMENT_RESULTS else "other"
        label, area = body(area, env, tr(f"settlement.result.{result}"), env.px(84), bold=True, wrap=True)
        widgets.append(Label(label.box, label.text, label.size, RESULT_STYLES.get(result, "alert"), bold=True,
                             wrap=True, fill=True))
        day = "settlement.day_closed" if report.day_closed else "settlement.day_open"
        label, area = body(area, env, tr(day), env.px(34), size=env.px(22), style="dim")
        widgets.append(label)
        if not report.schemes:
            label, area = body(area, env, tr("settlement.empty"), env.px(50), wrap=True)
            return [*widgets, label]
        block = env.px(BLOCK_PX)
        for currency in sorted({(s.debit.currency, s.debit.exponent) for s in report.schemes}):
            lines = [s for s in report.schemes if (s.debit.currency, s.debit.exponent) == currency]
            box, area = area.take_top(block, env.gap)
            widgets.extend(_block(box, tr("settlement.total"), lines, Money(0, *currency), env, "paper"))
        more_h = env.px(30)
        shown = report.schemes
        if len(shown) * (block + env.gap) - env.gap > area.h:
            shown = shown[:max(0, (area.h - more_h) // (block + env.gap))]
        for line in shown:
            box, area = area.take_top(block, env.gap)
            widgets.extend(_block(box, scheme_name(line.scheme), [line], line.debit, env, "screen"))
        if len(report.schemes) > len(shown):
            label, area = body(area, env, tr("queue.more", count=len(report.schemes) - len(shown)), more_h,
                               size=env.px(22), style="dim")
            widgets.append(label)
        return widgets


def _block(box: Box, heading: str, lines: list[SchemeLine], zero: Money, env: Env,
           style: str) -> list[Widget]:
    """A heading, then the count and amount of the debits and of the credits of `lines`."""
    tr = env.tr
    head, rest = box.take_top(env.px(26))
    debit_box, credit_box = rest.rows(2, 0)
    size = env.px(21)
    debit = Money(sum(s.debit.amount for s in lines), zero.currency, zero.exponent)
    credit = Money(sum(s.credit.amount for s in lines), zero.currency, zero.exponent)
    panel: list[Widget] = [Panel(box, style)] if style != "screen" else []
    inset = env.px(8) if panel else 0
    debits = tr("settlement.debits", count=sum(s.debit_count for s in lines), amount=tr.money(debit))
    credits = tr("settlement.credits", count=sum(s.credit_count for s in lines), amount=tr.money(credit))
    return [*panel,
            Label(head.inset(inset, 0), heading, env.px(23), style, align="left", bold=True),
            Label(debit_box.inset(inset, 0), debits, size, style, align="left"),
            Label(credit_box.inset(inset, 0), credits, size, style, align="left")]
