"""Processing, with the step in progress (`Processing.step` keys)."""

from __future__ import annotations

from ui.contract import Processing
from ui.geometry import Box
from ui.screens.base import Env, ViewScreen, body, title
from ui.widgets import ProgressBar, Widget

# The steps of a card payment, in order; the bar shows how far along it is.
CARD_STEPS = ("reading", "authorizing", "completing")
OTHER_STEPS = ("forwarding",)


class ProcessingScreen(ViewScreen):
    name = "processing"

    def __init__(self, view: Processing, cancellable: bool = False) -> None:
        super().__init__(cancellable)
        self.view = view

    def content(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        step = self.view.step
        known = step in CARD_STEPS or step in OTHER_STEPS
        _, area = area.take_top(env.px(160))
        text = tr(f"processing.{step}" if known else "processing.other")
        label, area = title(area, env, text, env.px(96), wrap=True)
        widgets.append(label)
        if step in CARD_STEPS:
            bar, area = area.take_top(env.px(28), env.px(24))
            fraction = (CARD_STEPS.index(step) + 1) / (len(CARD_STEPS) + 1)
            widgets.append(ProgressBar(bar.inset(env.px(40), 0), fraction))
            label, area = body(area, env, tr("processing.keep_card"), env.px(80), style="dim", wrap=True)
            widgets.append(label)
        label, area = body(area, env, tr("processing.wait"), env.px(48), style="dim")
        widgets.append(label)
        return widgets

