"""How the payment ended (`Outcome`, the reason in plain words: `ui.reasons`) and what went wrong
(`Error` kinds)."""

from __future__ import annotations

from ui.contract import Error, Outcome
from ui.geometry import Box
from ui.reasons import reason_key
from ui.screens.base import Env, ViewScreen, body, title
from ui.widgets import Icon, Label, Panel, Widget

ERROR_KINDS = ("card_removed", "no_network_offline", "reader_missing", "card_error", "try_again",
               "printer", "void_refused")


class OutcomeScreen(ViewScreen):
    name = "outcome"

    def __init__(self, view: Outcome, cancellable: bool = False) -> None:
        super().__init__(cancellable)
        self.view = view

    def content(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        view = self.view
        style = "approved" if view.approved else "declined"
        band, area = area.take_top(env.px(300), env.gap)
        widgets: list[Widget] = [Panel(band, style)]
        icon_box, rest = band.inset(env.margin).take_top(env.px(170), env.gap)
        side = min(icon_box.w, icon_box.h)
        widgets.append(Icon(Box(icon_box.center[0] - side // 2, icon_box.y, side, side),
                            "tick" if view.approved else "cross", style))
        verdict = "approved" if view.approved else "declined"
        widgets.append(Label(rest, tr(f"outcome.preauth_{verdict}" if view.preauth else f"outcome.{verdict}"),
                             env.px(40), style, bold=True))
        area = area.inset(env.margin, 0)
        label, area = body(area, env, tr.money(view.money), env.px(64), size=env.px(48), bold=True)
        widgets.append(label)
        key = reason_key(view.reason, view.approved)
        if key is not None:
            label, area = body(area, env, tr(key), env.px(120), wrap=True)
            widgets.append(label)
        if view.approved and view.offline:
            label, area = body(area, env, tr("outcome.offline"), env.px(80), style="info", wrap=True)
            widgets.append(Label(label.box, label.text, label.size, "info", wrap=True, fill=True))
        if view.signature_required:
            label, area = body(area, env, tr("outcome.signature"), env.px(48), style="alert", bold=True)
            widgets.append(Label(label.box, label.text, label.size, "alert", bold=True, fill=True))
        return widgets


class ErrorScreen(ViewScreen):
    name = "error"

    def __init__(self, view: Error, cancellable: bool = False) -> None:
        super().__init__(cancellable)
        self.view = view

    def content(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        kind = self.view.kind if self.view.kind in ERROR_KINDS else "other"
        area = area.inset(env.margin)
        _, area = area.take_top(env.px(60))
        icon_box, area = area.take_top(env.px(180), env.gap)
        side = min(icon_box.w, icon_box.h)
        widgets: list[Widget] = [Icon(Box(icon_box.center[0] - side // 2, icon_box.y, side, side),
                                      "alert", "alert")]
        label, area = title(area, env, tr(f"error.{kind}.title"), env.px(100), wrap=True)
        widgets.append(label)
        label, area = body(area, env, tr(f"error.{kind}.detail"), env.px(160), wrap=True)
        widgets.append(label)
        return widgets
