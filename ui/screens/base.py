"""What every screen is: a state with enter / handle_event / exit (ARCHITECTURE principle 6), and
a `layout` that turns that state into widgets; drawing is `ui.render`'s.

A screen that answers a question returns `Answered(value)` from `handle_event`; `cancel_answer`
is what the question gets when the screen goes away unanswered (the firmware showed something
else): the same as the screen's own cancel button.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from ui.geometry import Box
from ui.i18n import Translator
from ui.theme import Theme
from ui.widgets import Button, Label, UiEvent, Widget


class Audience(StrEnum):
    MERCHANT = "merchant"
    CARDHOLDER = "cardholder"


@dataclass(frozen=True)
class Answered:
    value: Any


@dataclass(frozen=True)
class Env:
    """What a layout needs besides its own state: sizes, texts in the screen's language, time."""

    theme: Theme
    tr: Translator
    now: datetime.datetime

    def px(self, reference_pixels: float) -> int:
        return self.theme.px(reference_pixels)

    @property
    def target(self) -> int:
        """Height of a touch button: the reference 96 pixels, never under 9 mm."""
        return max(self.px(96), self.theme.min_target)

    @property
    def gap(self) -> int:
        return self.px(10)

    @property
    def margin(self) -> int:
        return self.px(16)

    @property
    def title_size(self) -> int:
        return self.px(32)

    @property
    def body_size(self) -> int:
        return self.px(26)

    @property
    def button_size(self) -> int:
        return self.px(30)


class Screen:
    name: ClassVar[str] = "screen"
    audience: ClassVar[Audience] = Audience.CARDHOLDER
    cancel_answer: Any = None

    def enter(self) -> None:
        """Called when the screen becomes the current one."""

    def exit(self) -> None:
        """Called when another screen replaces it."""

    def handle_event(self, event: UiEvent) -> Answered | None:
        return None

    def layout(self, area: Box, env: Env) -> list[Widget]:
        raise NotImplementedError


class ViewScreen(Screen):
    """A view of the firmware's, shown until the next one. With `cancellable` (the firmware asked
    `AskCancel`), a cancel button answers True."""

    cancel_answer = False

    def __init__(self, cancellable: bool = False) -> None:
        self.cancellable = cancellable

    def handle_event(self, event: UiEvent) -> Answered | None:
        if self.cancellable and event.name == "cancel":
            return Answered(True)
        return None

    def layout(self, area: Box, env: Env) -> list[Widget]:
        widgets: list[Widget] = []
        if self.cancellable:
            row, rest = bottom_row(area.inset(env.margin), env,
                                   [(env.tr("common.cancel"), UiEvent("cancel"), "cancel")])
            widgets.extend(row)
            area = Box(area.x, area.y, area.w, rest.bottom - area.y)
        return widgets + self.content(area, env)

    def content(self, area: Box, env: Env) -> list[Widget]:
        raise NotImplementedError


def bottom_row(area: Box, env: Env, buttons: Sequence[tuple[str, UiEvent, str]],
               height: int | None = None) -> tuple[list[Widget], Box]:
    """Buttons side by side at the bottom of `area` (text, event, style); the area left above."""
    row, rest = area.take_bottom(height or env.target, env.gap)
    cells = row.columns(len(buttons), env.gap)
    widgets: list[Widget] = [Button(cell, text, event, env.button_size, style)
                             for cell, (text, event, style) in zip(cells, buttons, strict=True)]
    return widgets, rest


def title(area: Box, env: Env, text: str, height: int | None = None,
          style: str = "screen", wrap: bool = False) -> tuple[Label, Box]:
    box, rest = area.take_top(height or env.px(48), env.gap)
    return Label(box, text, env.title_size, style, bold=True, wrap=wrap), rest


def body(area: Box, env: Env, text: str, height: int, size: int | None = None, style: str = "screen",
         bold: bool = False, wrap: bool = False) -> tuple[Label, Box]:
    box, rest = area.take_top(height, env.gap)
    return Label(box, text, size or env.body_size, style, bold=bold, wrap=wrap), rest
