"""Boxes on the screen, in pixels, without pygame: screens lay widgets out with these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def center(self) -> tuple[int, int]:
        return (self.x + self.w // 2, self.y + self.h // 2)

    def contains(self, x: float, y: float) -> bool:
        return self.x <= x < self.right and self.y <= y < self.bottom

    def inset(self, dx: int, dy: int | None = None) -> Box:
        dy = dx if dy is None else dy
        return Box(self.x + dx, self.y + dy, max(0, self.w - 2 * dx), max(0, self.h - 2 * dy))

    def take_top(self, h: int, gap: int = 0) -> tuple[Box, Box]:
        """The top `h` pixels, and what is left below them after `gap`."""
        h = min(h, self.h)
        rest = max(0, self.h - h - gap)
        return Box(self.x, self.y, self.w, h), Box(self.x, self.bottom - rest, self.w, rest)

    def take_bottom(self, h: int, gap: int = 0) -> tuple[Box, Box]:
        """The bottom `h` pixels, and what is left above them after `gap`."""
        h = min(h, self.h)
        rest = max(0, self.h - h - gap)
        return Box(self.x, self.bottom - h, self.w, h), Box(self.x, self.y, self.w, rest)

    def columns(self, n: int, gap: int) -> list[Box]:
        return [Box(c.y, c.x, c.h, c.w) for c in self._transposed().rows(n, gap)]

    def rows(self, n: int, gap: int) -> list[Box]:
        """`n` boxes of equal height stacked with `gap` between them."""
        return self.rows_weighted([1] * n, gap)

    def rows_weighted(self, weights: Sequence[float], gap: int) -> list[Box]:
        free = self.h - gap * (len(weights) - 1)
        total = sum(weights)
        out: list[Box] = []
        y = self.y
        for i, weight in enumerate(weights):
            h = self.bottom - y if i == len(weights) - 1 else round(free * weight / total)
            out.append(Box(self.x, y, self.w, h))
            y += h + gap
        return out

    def grid(self, rows: int, cols: int, gap: int) -> list[Box]:
        """Row by row, left to right."""
        return [cell for row in self.rows(rows, gap) for cell in row.columns(cols, gap)]

    def _transposed(self) -> Box:
        return Box(self.y, self.x, self.h, self.w)
