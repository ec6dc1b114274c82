"""Widgets: what a screen puts on the frame, as plain data (ARCHITECTURE principle 6).

Screens build widgets from their state; `ui.render` draws them; `PointerTracker` turns pointer
presses on them into semantic events (`UiEvent`): a button's event, a signature pad's stroke
points. No widget draws pixels or knows pygame.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ui.geometry import Box


@dataclass(frozen=True)
class UiEvent:
    """A semantic event: `name` ("digit", "ok", "cancel", "choose", "stroke", ...) and a value."""

    name: str
    value: Any = None


@dataclass(frozen=True)
class Label:
    box: Box
    text: str
    size: int  # font height in pixels, the most it may have: a long text is drawn smaller
    style: str = "screen"
    align: Literal["left", "center", "right"] = "center"
    bold: bool = False
    wrap: bool = False  # break into lines at spaces instead of shrinking
    fill: bool = False  # paint the box with the style's background first
    mono: bool = False  # fixed-width font: receipt lines keep their columns


@dataclass(frozen=True)
class Button:
    box: Box
    text: str
    event: UiEvent
    size: int
    style: str = "button"
    enabled: bool = True


@dataclass(frozen=True)
class Panel:
    box: Box
    style: str


@dataclass(frozen=True)
class Icon:
    box: Box
    kind: Literal["tick", "cross", "alert", "card"]
    style: str


@dataclass(frozen=True)
class SignalBars:
    box: Box
    bars: int  # 0..4
    style: str = "status"


@dataclass(frozen=True)
class Battery:
    box: Box
    percent: int
    charging: bool
    style: str = "status"


@dataclass(frozen=True)
class ProgressBar:
    box: Box
    fraction: float  # 0..1
    style: str = "info"


@dataclass(frozen=True)
class QrCode:
    box: Box
    data: str


@dataclass(frozen=True)
class SignaturePad:
    """A drawing area: a press inside it and its moves emit `UiEvent("stroke", (kind, x, y))`
    with kind "start", "move" or "end" and coordinates relative to the pad."""

    box: Box
    strokes: tuple[tuple[tuple[int, int], ...], ...]
    style: str = "paper"


@dataclass(frozen=True)
class Keypad:
    """A grid of keys: each key a `Button` emitting `UiEvent(event_name, key)`; None leaves a cell
    empty. Digits for the amount and PIN pads."""

    box: Box
    keys: Sequence[str | None]
    cols: int
    gap: int
    size: int
    event_name: str = "digit"
    style: str = "button"
    enabled: bool = True
    buttons: tuple[Button, ...] = field(init=False)

    def __post_init__(self) -> None:
        rows = -(-len(self.keys) // self.cols)
        cells = self.box.grid(rows, self.cols, self.gap)
        buttons = tuple(Button(cell, key, UiEvent(self.event_name, key), self.size, self.style,
                               self.enabled)
                        for cell, key in zip(cells, self.keys, strict=False) if key is not None)
        object.__setattr__(self, "buttons", buttons)


Widget = Label | Button | Panel | Icon | SignalBars | Battery | ProgressBar | QrCode | SignaturePad | Keypad


def flatten(widgets: Iterable[Widget]) -> Iterator[Widget]:
    """Composite widgets (`Keypad`) replaced by their parts, in drawing order."""
    for widget in widgets:
        if isinstance(widget, Keypad):
            yield from widget.buttons
        else:
            yield widget


@dataclass
class PointerTracker:
    """Presses on the current frame's widgets, as semantic events. A button fires when the press
    is released inside the button it started on (sliding off cancels it); a signature pad gets
    every point of the stroke that started on it."""

    pressed: Button | SignaturePad | None = None

    def down(self, widgets: Sequence[Widget], x: float, y: float) -> list[UiEvent]:
        self.pressed = None
        for widget in reversed(list(flatten(widgets))):
            if isinstance(widget, Button) and widget.enabled and widget.box.contains(x, y):
                self.pressed = widget
                return []
            if isinstance(widget, SignaturePad) and widget.box.contains(x, y):
                self.pressed = widget
                return [_stroke("start", widget, x, y)]
        return []

    def move(self, x: float, y: float) -> list[UiEvent]:
        if isinstance(self.pressed, SignaturePad):
            return [_stroke("move", self.pressed, x, y)]
        return []

    def up(self, x: float, y: float) -> list[UiEvent]:
        pressed, self.pressed = self.pressed, None
        if isinstance(pressed, Button) and pressed.box.contains(x, y):
            return [pressed.event]
        if isinstance(pressed, SignaturePad):
            return [_stroke("end", pressed, x, y)]
        return []

    def reset(self) -> None:
        self.pressed = None


def _stroke(kind: str, pad: SignaturePad, x: float, y: float) -> UiEvent:
    px = min(max(round(x) - pad.box.x, 0), pad.box.w - 1)
    py = min(max(round(y) - pad.box.y, 0), pad.box.h - 1)
    return UiEvent("stroke", (kind, px, py))
