"""The e-receipt's QR code (ISO/IEC 18004), made by segno, as a pygame surface."""

from __future__ import annotations

import pygame
import segno

from ui.errors import UiError

QUIET_ZONE = 4  # ISO/IEC 18004:2015, 9.1: four modules of light margin on every side
DARK = (0, 0, 0)
LIGHT = (255, 255, 255)


def qr_matrix(data: str) -> tuple[tuple[bool, ...], ...]:
    """The modules, True for dark, without the quiet zone: a full QR code (no Micro QR), error
    correction level M at least (segno raises it when the version has room)."""
    try:
        code = segno.make(data, error="m", micro=False)
    except (segno.DataOverflowError, ValueError) as exc:
        raise UiError(f"no QR code for this address: {exc}") from exc
    return tuple(tuple(bool(module) for module in row) for row in code.matrix)


def qr_surface(data: str, module_px: int) -> pygame.Surface:
    """The code drawn `module_px` pixels a module, quiet zone included."""
    if module_px < 1:
        raise UiError("a QR module needs at least one pixel")
    matrix = qr_matrix(data)
    side = (len(matrix) + 2 * QUIET_ZONE) * module_px
    surface = pygame.Surface((side, side))
    surface.fill(LIGHT)
    for row, modules in enumerate(matrix):
        for col, dark in enumerate(modules):
            if dark:
                surface.fill(DARK, ((col + QUIET_ZONE) * module_px, (row + QUIET_ZONE) * module_px,
                                    module_px, module_px))
    return surface


def module_px_for(data: str, side: int) -> int:
    """The largest module size that fits the code and its quiet zone in `side` pixels."""
    return max(1, side // (len(qr_matrix(data)) + 2 * QUIET_ZONE))
