"""What the touchscreen looks like, checked without comparing pixels to pictures: touch targets
of at least 9 mm, text contrast of at least 7:1 over what is really beneath it, every text fitting
its box in the eight languages, the QR code module for module, screenshots written."""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path

import pygame
import pytest
import segno

from ui.app import TouchUi
from ui.contract import LANGUAGES, AskReceipt, Receipt
from ui.gallery import Shot, shoot, shots
from ui.qr import QUIET_ZONE, qr_matrix, qr_surface
from ui.render import DrawnText
from ui.theme import STYLES, contrast_ratio, hex_rgb, min_target_px, reference_dpi
from ui.widgets import Button

os.environ["SDL_VIDEODRIVER"] = "dummy"

MIN_BUTTON_PX = 66  # 9 mm on the 5-inch 480x800 reference panel


def _every_screen(language: str, size: tuple[int, int] = (480, 800),
                  out: Path | None = None) -> list[tuple[str, list[Button], list[DrawnText]]]:
    frames: list[tuple[str, list[Button], list[DrawnText]]] = []

    async def main() -> None:
        ui = TouchUi(language=language, size=size, pin_shuffle_seed=5)
        ui.open()
        try:
            def record(shot: Shot) -> None:
                frames.append((shot.name, ui.buttons(), ui.drawn()))

            await shoot(ui, out, on_frame=record)
        finally:
            ui.close()

    asyncio.run(main())
    return frames


@pytest.fixture(scope="module")
def french_frames():
    return _every_screen("fr")


def test_the_reference_panel_needs_66_pixels_for_9_mm() -> None:
    # 480x800 on 5 inches: sqrt(480^2 + 800^2) / 5 = 186.6 dpi; 9 mm = 9 / 25.4 inch = 66.1 px
    assert reference_dpi() == pytest.approx(186.6, abs=0.1)
    assert min_target_px(reference_dpi()) == 67
    assert min_target_px(254) == 90  # 9 mm at 254 dpi (10 px/mm) is exactly 90


def test_every_button_of_every_screen_is_a_large_touch_target(french_frames) -> None:
    assert len(french_frames) == len(shots())
    seen = 0
    for name, buttons, _ in french_frames:
        for button in buttons:
            seen += 1
            assert min(button.box.w, button.box.h) >= MIN_BUTTON_PX, (name, button.text, button.box)
    assert seen > 150


def test_touch_targets_hold_on_a_larger_panel() -> None:
    # 720x1200 on 5 inches: 280 dpi, 9 mm = 99.2 px
    floor = min_target_px(math.hypot(720, 1200) / 5)
    assert floor == 100
    for name, buttons, _ in _every_screen("de", size=(720, 1200)):
        for button in buttons:
            assert min(button.box.w, button.box.h) >= floor, (name, button.text, button.box)


def test_wcag_contrast_formula_on_known_pairs() -> None:
    assert contrast_ratio((255, 255, 255), (0, 0, 0)) == pytest.approx(21.0)
    assert contrast_ratio((0, 0, 0), (0, 0, 0)) == pytest.approx(1.0)
    # WebAIM's contrast checker: #777777 on white is 4.48:1, #595959 on white 7.0:1
    assert contrast_ratio(hex_rgb("#777777"), (255, 255, 255)) == pytest.approx(4.48, abs=0.01)
    assert contrast_ratio(hex_rgb("#595959"), (255, 255, 255)) == pytest.approx(7.0, abs=0.01)


def test_every_theme_style_has_aaa_contrast() -> None:
    for name, style in STYLES.items():
        assert contrast_ratio(style.fg, style.bg) >= 7.0, name


def test_every_text_drawn_has_aaa_contrast_over_what_is_beneath_it(french_frames) -> None:
    for name, _, drawn in french_frames:
        for d in drawn:
            ratio = contrast_ratio(STYLES[d.style].fg, d.background)
            assert ratio >= 7.0, (name, d.text, d.style, d.background, round(ratio, 2))


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_text_fits_its_box(language: str) -> None:
    for name, _, drawn in _every_screen(language):
        for d in drawn:
            assert d.fits, (language, name, d.text, d.box)


def test_qr_code_surface_matches_segno_module_for_module() -> None:
    data = "https://receipts.example/t/000127?k=8d5c0e"
    code = segno.make(data, error="m", micro=False)
    modules = 17 + 4 * code.version  # ISO/IEC 18004, 5.3.1: version V has 17 + 4V modules a side
    matrix = qr_matrix(data)
    assert len(matrix) == modules and all(len(row) == modules for row in matrix)
    px = 3
    surface = qr_surface(data, px)
    assert surface.get_size() == ((modules + 2 * QUIET_ZONE) * px,) * 2
    for row, line in enumerate(code.matrix):
        for col, dark in enumerate(line):
            at = ((col + QUIET_ZONE) * px + 1, (row + QUIET_ZONE) * px + 1)
            assert (surface.get_at(at)[:3] == (0, 0, 0)) == bool(dark), (row, col)
    for edge in range(QUIET_ZONE * px):
        assert surface.get_at((edge, edge))[:3] == (255, 255, 255)


def test_receipt_screen_draws_the_qr_code(tmp_path: Path) -> None:
    async def main() -> Path:
        async with TouchUi() as ui:
            task = asyncio.get_running_loop().create_task(
                ui.ask(AskReceipt(Receipt(("TOTAL 42,50",), qr="https://r.example/t/9"))))
            await ui.settle()
            path = ui.screenshot(tmp_path / "receipt.png")
            task.cancel()
            return path

    image = pygame.image.load(str(asyncio.run(main())))
    dark = sum(1 for x in range(0, 480, 4) for y in range(100, 330, 4)
               if image.get_at((x, y))[:3] == (0, 0, 0))
    assert dark > 100  # the code's dark modules, where the receipt screen puts it


def test_screenshots_of_every_screen_are_written(tmp_path: Path) -> None:
    frames = _every_screen("fr", out=tmp_path)
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == len(frames)
    assert pygame.image.load(str(files[0])).get_size() == (480, 800)
