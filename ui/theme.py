"""Colours, text styles and touch-target size of the touchscreen.

Contrast follows WCAG 2.1 (success criterion 1.4.6, level AAA: 7:1 for text): every style pairs
a text colour with the background it is drawn on, and `contrast_ratio` is the WCAG formula, so a
test can check every style the renderer uses.

Touch targets follow the common 9 mm minimum for finger input. The DPI assumption: the reference
panel is 480x800 pixels on a 5-inch diagonal, sqrt(480**2 + 800**2) / 5 = 186.6 dpi, so 9 mm is
9 / 25.4 * 186.6 = 66.1 pixels. Another panel passes its own DPI to `Theme`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

Rgb = tuple[int, int, int]

REFERENCE_SIZE = (480, 800)
REFERENCE_DIAGONAL_INCHES = 5.0
MIN_TARGET_MM = 9.0
MIN_CONTRAST = 7.0  # WCAG 2.1, 1.4.6 (AAA)
MM_PER_INCH = 25.4


def reference_dpi(size: tuple[int, int] = REFERENCE_SIZE,
                  diagonal_inches: float = REFERENCE_DIAGONAL_INCHES) -> float:
    return math.hypot(*size) / diagonal_inches


def min_target_px(dpi: float) -> int:
    """The smallest side of a touch target, in pixels, at `dpi` (rounded first: 9 mm at 254 dpi
    is 90 pixels, not 90.000000001)."""
    return math.ceil(round(MIN_TARGET_MM / MM_PER_INCH * dpi, 6))


def hex_rgb(value: str) -> Rgb:
    value = value.removeprefix("#")
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))


def relative_luminance(colour: Rgb) -> float:
    """WCAG 2.1, definition of relative luminance (sRGB)."""
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: Rgb, b: Rgb) -> float:
    """WCAG 2.1, definition of contrast ratio: (L1 + 0.05) / (L2 + 0.05), L1 the lighter."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@dataclass(frozen=True)
class Style:
    """Text colour `fg` drawn on `bg`."""

    fg: Rgb
    bg: Rgb


# One style per role; widgets name their style, the renderer looks it up here.
STYLES: dict[str, Style] = {
    "screen": Style(hex_rgb("#FFFFFF"), hex_rgb("#101418")),
    "dim": Style(hex_rgb("#C8CDD2"), hex_rgb("#101418")),
    "status": Style(hex_rgb("#FFFFFF"), hex_rgb("#1B2430")),
    "button": Style(hex_rgb("#FFFFFF"), hex_rgb("#2E3540")),
    "disabled": Style(hex_rgb("#C8CDD2"), hex_rgb("#1B2430")),
    "pressed": Style(hex_rgb("#000000"), hex_rgb("#B0BEC5")),
    "ok": Style(hex_rgb("#000000"), hex_rgb("#3DDC84")),
    "cancel": Style(hex_rgb("#FFFFFF"), hex_rgb("#A0001E")),
    "correct": Style(hex_rgb("#000000"), hex_rgb("#FFD60A")),
    "field": Style(hex_rgb("#000000"), hex_rgb("#FFFFFF")),
    "field_idle": Style(hex_rgb("#FFFFFF"), hex_rgb("#2E3540")),
    "paper": Style(hex_rgb("#000000"), hex_rgb("#FFFFFF")),
    "approved": Style(hex_rgb("#000000"), hex_rgb("#3DDC84")),
    "declined": Style(hex_rgb("#FFFFFF"), hex_rgb("#A0001E")),
    "alert": Style(hex_rgb("#000000"), hex_rgb("#FFB300")),
    "info": Style(hex_rgb("#000000"), hex_rgb("#8FD9FF")),
}


@dataclass(frozen=True)
class Theme:
    """Sizes for one panel. Layouts are drawn for the 480-pixel-wide reference and scaled by
    `scale`; `min_target` is the 9 mm floor at this panel's `dpi`."""

    size: tuple[int, int] = REFERENCE_SIZE
    dpi: float = field(default_factory=reference_dpi)
    styles: dict[str, Style] = field(default_factory=lambda: dict(STYLES))

    @property
    def scale(self) -> float:
        return self.size[0] / REFERENCE_SIZE[0]

    @property
    def min_target(self) -> int:
        return min_target_px(self.dpi)

    def px(self, reference_pixels: float) -> int:
        """A length of the 480-wide reference layout, on this panel."""
        return round(reference_pixels * self.scale)

    def style(self, name: str) -> Style:
        return self.styles[name]
