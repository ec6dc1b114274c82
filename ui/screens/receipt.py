"""The receipt: the journalled ticket's lines as the firmware made them (`firmware.receipt`, not
translated: the fiscal text is the ticket's), the e-receipt's QR code, and "print" / "done".
French law prints the paper ticket only on request (Code de l'environnement, L541-15-10 IV, from
loi AGEC 2020-105, art. 49). A duplicate (`fiscal.reprint`) and a training ticket are marked above
the ticket and again at its foot, so that a photo of the screen still says it."""

from __future__ import annotations

from ui.contract import AskReceipt, Receipt
from ui.geometry import Box
from ui.screens.base import Answered, Env, Screen, body, bottom_row, title
from ui.widgets import Label, Panel, QrCode, UiEvent, Widget

MIN_LINE_PX = 12  # below this the lines are cut, not shrunk


class ReceiptScreen(Screen):
    """`AskReceipt` (with buttons) or the `Receipt` view (without)."""

    name = "receipt"
    cancel_answer = "done"

    def __init__(self, receipt: Receipt, question: AskReceipt | None = None) -> None:
        self.receipt = receipt
        self.question = question

    def handle_event(self, event: UiEvent) -> Answered | None:
        if self.question is None:
            return None
        if event.name == "print" and self.receipt.printable:
            return Answered("print")
        if event.name == "done":
            return Answered("done")
        return None

    def layout(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        if self.question is not None:
            buttons = []
            if self.receipt.printable:
                buttons.append((tr("receipt.print"), UiEvent("print"), "button"))
            buttons.append((tr("receipt.done"), UiEvent("done"), "ok"))
            row, area = bottom_row(area, env, buttons)
            widgets.extend(row)
        label, area = title(area, env, tr("receipt.title"), env.px(44))
        widgets.append(label)
        marks = [tr(key) for key, on in (("receipt.duplicate", self.receipt.duplicate),
                                          ("receipt.training", self.receipt.training)) if on]
        if marks:
            box, area = area.take_top(env.px(40), env.px(4))
            widgets.append(Label(box, " · ".join(marks), env.px(26), "alert", bold=True, fill=True))
        if self.receipt.qr:
            box, area = area.take_top(env.px(190), env.px(4))
            side = box.h
            widgets.append(QrCode(Box(box.center[0] - side // 2, box.y, side, side), self.receipt.qr))
            label, area = body(area, env, tr("receipt.scan"), env.px(30), size=env.px(22), style="dim")
            widgets.append(label)
        widgets.append(Panel(area, "paper"))
        if marks:
            foot, area = area.take_bottom(env.px(36))
            widgets.append(Label(foot, " · ".join(marks), env.px(24), "alert", bold=True, fill=True))
        widgets.extend(_lines(area.inset(env.px(8)), self.receipt.lines, env))
        return widgets


def _lines(area: Box, lines: tuple[str, ...], env: Env) -> list[Widget]:
    if not lines or area.h <= 0:
        return []
    line_h = min(env.px(24), area.h // len(lines))
    shown = lines
    if line_h < env.px(MIN_LINE_PX):
        line_h = env.px(MIN_LINE_PX)
        shown = (*lines[: max(1, area.h // line_h - 1)], "…")
    out: list[Widget] = []
    for n, line in enumerate(shown):
        box = Box(area.x, area.y + n * line_h, area.w, line_h)
        out.append(Label(box, line, line_h, "paper", align="left", mono=True))
    return out
