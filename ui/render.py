"""Drawing: widgets onto a pygame surface. The only module of the screens' side that draws.

Each text drawn is recorded (`DrawnText`) with its style and the colour actually beneath it,
sampled before the text goes on: tests read texts instead of pixels, and check contrast on
what the screen really shows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pygame

from ui.geometry import Box
from ui.qr import module_px_for, qr_surface
from ui.theme import Rgb, Style, Theme
from ui.widgets import (
    Battery,
    Button,
    Icon,
    Keypad,
    Label,
    Panel,
    ProgressBar,
    QrCode,
    SignalBars,
    SignaturePad,
    Widget,
    flatten,
)

# Fonts with the glyphs of the eight languages and the euro sign: DejaVu when installed (Debian
# fonts-dejavu-core, on Raspberry Pi OS by default), else pygame's bundled font.
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
FONT_FILES = {"regular": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf", "mono": "DejaVuSansMono.ttf"}
MIN_TEXT_PX = 12
LOW_BATTERY = 20  # percent: the level turns amber below
CACHE_SIZE = 128
SPACES = str.maketrans({"\u00a0": " ", "\u202f": " "})  # no-break spaces: laid out as words, drawn as spaces


def find_fonts() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for kind, name in FONT_FILES.items():
        path = next((d / name for d in FONT_DIRS if (d / name).is_file()), None)
        found[kind] = str(path) if path else None
    return found


@dataclass(frozen=True)
class DrawnText:
    text: str
    style: str
    box: Box
    background: Rgb  # the colour under the text's box, before the text was drawn
    is_button: bool = False
    fits: bool = True  # False: even the smallest size overflows the box


class Fonts:
    def __init__(self, paths: dict[str, str | None] | None = None) -> None:
        self._paths = paths if paths is not None else find_fonts()
        self._cache: dict[tuple[str, int], pygame.font.Font] = {}

    def get(self, size: int, bold: bool = False, mono: bool = False) -> pygame.font.Font:
        kind = "mono" if mono else "bold" if bold else "regular"
        key = (kind, size)
        font = self._cache.get(key)
        if font is None:
            font = pygame.font.Font(self._paths.get(kind), size)
            self._cache[key] = font
        return font


def wrap_words(text: str, font: pygame.font.Font, width: int) -> list[str]:
    """Lines no wider than `width` where the words allow (a single long word stays whole)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and font.size(candidate.translate(SPACES))[0] > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


class Renderer:
    def __init__(self, theme: Theme, fonts: Fonts | None = None) -> None:
        self.theme = theme
        self.fonts = fonts or Fonts()
        self._fits: OrderedDict[tuple[object, ...], tuple[int, tuple[str, ...], bool]] = OrderedDict()
        self._texts: OrderedDict[tuple[object, ...], pygame.Surface] = OrderedDict()
        self._qr: OrderedDict[tuple[str, int], pygame.Surface] = OrderedDict()

    # --- frame -------------------------------------------------------------------------------

    def draw(self, surface: pygame.Surface, widgets: Iterable[Widget],
             pressed: object = None) -> list[DrawnText]:
        drawn: list[DrawnText] = []
        for widget in flatten(widgets):
            self._draw(surface, widget, pressed, drawn)
        return drawn

    def _draw(self, surface: pygame.Surface, widget: Widget, pressed: object, drawn: list[DrawnText]) -> None:
        match widget:
            case Label():
                style = self.theme.style(widget.style)
                if widget.fill:
                    pygame.draw.rect(surface, style.bg, _rect(widget.box))
                self._text(surface, widget.text, widget.box, widget.size, widget.style, align=widget.align,
                           bold=widget.bold, wrap=widget.wrap, mono=widget.mono, drawn=drawn)
            case Button():
                name = "pressed" if widget == pressed else widget.style
                style = self.theme.style(name)
                pygame.draw.rect(surface, style.bg, _rect(widget.box), border_radius=self.theme.px(10))
                pad = self.theme.px(8)
                self._text(surface, widget.text, widget.box.inset(pad, pad // 2), widget.size, name,
                           bold=True, wrap=True, drawn=drawn, is_button=True)
            case Panel():
                pygame.draw.rect(surface, self.theme.style(widget.style).bg, _rect(widget.box))
            case Icon():
                self._icon(surface, widget)
            case SignalBars():
                self._signal(surface, widget)
            case Battery():
                self._battery(surface, widget)
            case ProgressBar():
                style = self.theme.style(widget.style)
                pygame.draw.rect(surface, style.bg, _rect(widget.box), width=max(2, self.theme.px(3)))
                share = max(0.0, min(1.0, widget.fraction))
                filled = Box(widget.box.x, widget.box.y, round(widget.box.w * share), widget.box.h)
                pygame.draw.rect(surface, style.bg, _rect(filled))
            case QrCode():
                self._qrcode(surface, widget)
            case SignaturePad():
                self._signature(surface, widget)
            case Keypad():  # flattened above
                pass

    # --- text --------------------------------------------------------------------------------

    def fit(self, text: str, box: Box, size: int, *, bold: bool = False, wrap: bool = False,
            mono: bool = False) -> tuple[int, tuple[str, ...]]:
        """The largest font size up to `size` at which `text` fits `box` (wrapped into lines
        when `wrap`), and its lines; MIN_TEXT_PX when none does."""
        size, lines, _ = self._fit(text, box, size, bold, wrap, mono)
        return size, lines

    def _fit(self, text: str, box: Box, size: int, bold: bool, wrap: bool,
             mono: bool) -> tuple[int, tuple[str, ...], bool]:
        key = (text, box.w, box.h, size, bold, wrap, mono)
        cached = self._fits.get(key)
        if cached is not None:
            self._fits.move_to_end(key)
            return cached
        best: tuple[int, tuple[str, ...], bool] | None = None
        for candidate in range(max(size, MIN_TEXT_PX), MIN_TEXT_PX - 1, -1):
            font = self.fonts.get(candidate, bold, mono)
            lines = tuple(wrap_words(text, font, box.w)) if wrap else (text,)
            widest = max(font.size(line.translate(SPACES))[0] for line in lines)
            if widest <= box.w and font.get_linesize() * len(lines) <= max(box.h, font.get_height()):
                best = (candidate, lines, True)
                break
        if best is None:
            font = self.fonts.get(MIN_TEXT_PX, bold, mono)
            best = (MIN_TEXT_PX, tuple(wrap_words(text, font, box.w)) if wrap else (text,), False)
        self._fits[key] = best
        if len(self._fits) > CACHE_SIZE:
            self._fits.popitem(last=False)
        return best

    def _text(self, surface: pygame.Surface, text: str, box: Box, size: int, style_name: str, *,
              align: str = "center", bold: bool = False, wrap: bool = False, mono: bool = False,
              drawn: list[DrawnText], is_button: bool = False) -> None:
        if not text:
            return
        style = self.theme.style(style_name)
        background = _sample(surface, box)
        size, lines, fits = self._fit(text, box, size, bold, wrap, mono)
        drawn.append(DrawnText(text, style_name, box, background, is_button, fits))
        font = self.fonts.get(size, bold, mono)
        line_h = font.get_linesize()
        y = box.y + (box.h - line_h * len(lines)) // 2
        for line in lines:
            image = self._text_surface(line, size, bold, mono, style)
            if align == "left":
                x = box.x
            elif align == "right":
                x = box.right - image.get_width()
            else:
                x = box.x + (box.w - image.get_width()) // 2
            surface.blit(image, (x, y))
            y += line_h

    def _text_surface(self, line: str, size: int, bold: bool, mono: bool, style: Style) -> pygame.Surface:
        key = (line, size, bold, mono, style.fg)
        image = self._texts.get(key)
        if image is None:
            image = self.fonts.get(size, bold, mono).render(line.translate(SPACES), True, style.fg)
            self._texts[key] = image
            if len(self._texts) > CACHE_SIZE:
                self._texts.popitem(last=False)
        else:
            self._texts.move_to_end(key)
        return image

    # --- drawings ----------------------------------------------------------------------------

    def _icon(self, surface: pygame.Surface, icon: Icon) -> None:
        style = self.theme.style(icon.style)
        box = icon.box
        cx, cy = box.center
        r = min(box.w, box.h) // 2
        line = max(3, r // 8)
        if icon.kind in ("tick", "cross"):
            pygame.draw.circle(surface, style.fg, (cx, cy), r, width=line)
            if icon.kind == "tick":
                points = [(cx - r * 0.45, cy + r * 0.02), (cx - r * 0.12, cy + r * 0.35),
                          (cx + r * 0.48, cy - r * 0.3)]
                pygame.draw.lines(surface, style.fg, False, points, width=line + 2)
            else:
                d = r * 0.4
                pygame.draw.line(surface, style.fg, (cx - d, cy - d), (cx + d, cy + d), width=line + 2)
                pygame.draw.line(surface, style.fg, (cx - d, cy + d), (cx + d, cy - d), width=line + 2)
        elif icon.kind == "alert":
            base = box.bottom - r * 0.15
            pygame.draw.polygon(surface, style.bg, [(cx, box.y + r * 0.15), (box.right, base), (box.x, base)])
            pygame.draw.line(surface, style.fg, (cx, cy - r * 0.3), (cx, cy + r * 0.35), width=line + 2)
            pygame.draw.circle(surface, style.fg, (cx, cy + r * 0.6), line)
        else:  # card: a card going into the reader, chip first
            w, h = round(r * 1.1), round(r * 1.4)
            card = pygame.Rect(cx - w // 2, cy - r, w, h)
            pygame.draw.rect(surface, style.bg, card, border_radius=max(4, r // 10))
            chip = pygame.Rect(cx - r // 5, card.bottom - r // 2, r * 2 // 5, r // 3)
            pygame.draw.rect(surface, style.fg, chip, border_radius=3)
            top = card.bottom + r // 10
            arrow = [(cx - r // 3, top), (cx + r // 3, top), (cx, top + r // 3)]
            pygame.draw.polygon(surface, style.bg, arrow)

    def _signal(self, surface: pygame.Surface, bars: SignalBars) -> None:
        style = self.theme.style(bars.style)
        n = 4
        gap = max(1, bars.box.w // 12)
        w = (bars.box.w - gap * (n - 1)) // n
        for i in range(n):
            h = bars.box.h * (i + 1) // n
            rect = pygame.Rect(bars.box.x + i * (w + gap), bars.box.bottom - h, w, h)
            pygame.draw.rect(surface, style.fg, rect, width=0 if i < bars.bars else 1)

    def _battery(self, surface: pygame.Surface, battery: Battery) -> None:
        style = self.theme.style(battery.style)
        box = battery.box
        tip_w = max(2, box.w // 10)
        body = pygame.Rect(box.x, box.y, box.w - tip_w, box.h)
        pygame.draw.rect(surface, style.fg, body, width=2)
        pygame.draw.rect(surface, style.fg, (body.right, box.y + box.h // 4, tip_w, box.h // 2))
        if battery.charging:
            colour = self.theme.style("ok").bg
        elif battery.percent < LOW_BATTERY:
            colour = self.theme.style("alert").bg
        else:
            colour = style.fg
        inner = body.inflate(-6, -6)
        inner.width = round(inner.width * battery.percent / 100)
        if inner.width > 0:
            pygame.draw.rect(surface, colour, inner)

    def _qrcode(self, surface: pygame.Surface, qr: QrCode) -> None:
        side = min(qr.box.w, qr.box.h)
        key = (qr.data, side)
        image = self._qr.get(key)
        if image is None:
            image = qr_surface(qr.data, module_px_for(qr.data, side))
            self._qr[key] = image
            if len(self._qr) > 8:
                self._qr.popitem(last=False)
        surface.blit(image, (qr.box.x + (qr.box.w - image.get_width()) // 2,
                             qr.box.y + (qr.box.h - image.get_height()) // 2))

    def _signature(self, surface: pygame.Surface, pad: SignaturePad) -> None:
        style = self.theme.style(pad.style)
        rect = _rect(pad.box)
        pygame.draw.rect(surface, style.bg, rect)
        baseline = pad.box.y + pad.box.h * 3 // 4
        margin = self.theme.px(24)
        pygame.draw.line(surface, (120, 120, 120), (pad.box.x + margin, baseline),
                         (pad.box.right - margin, baseline), width=2)
        width = max(2, self.theme.px(4))
        for stroke in pad.strokes:
            points = [(pad.box.x + x, pad.box.y + y) for x, y in stroke]
            if len(points) > 1:
                pygame.draw.lines(surface, style.fg, False, points, width=width)
            elif points:
                pygame.draw.circle(surface, style.fg, points[0], width // 2)


def _rect(box: Box) -> pygame.Rect:
    return pygame.Rect(box.x, box.y, box.w, box.h)


def _sample(surface: pygame.Surface, box: Box) -> Rgb:
    x, y = box.center
    x = min(max(x, 0), surface.get_width() - 1)
    y = min(max(y, 0), surface.get_height() - 1)
    colour = surface.get_at((x, y))
    return (colour.r, colour.g, colour.b)


def texts(drawn: Sequence[DrawnText]) -> list[str]:
    return [d.text for d in drawn]
