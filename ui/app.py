"""`TouchUi`: the `ui.contract.UiPort` of the touchscreen, pygame polled from the asyncio loop
(ARCHITECTURE principle 5).

`run()` pumps pygame's events and draws a frame only when something changed: a view, a
question, the status, a touch, the minute on the clock. Between rounds it sleeps on the loop, a
few milliseconds while a finger is on the glass or was lately, `idle_poll` otherwise, and wakes
at once when the firmware shows or asks something. An idle terminal draws nothing.

A question (`ask`) shows its screen until the screen answers; then the last view comes back.
A question still open when the firmware shows another view or asks another question gets the
answer of its screen's cancel button (None, False, "done": the question's own "no"), because the
screen that could answer it is gone; an `ask` cancelled by its caller just leaves the screen.

Test helpers (`tap`, `tap_text`, `drag`, `settle`, `texts`, `screenshot`) post the same touch
events as the glass does and read back what was drawn; they run with SDL_VIDEODRIVER=dummy.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pygame

from ui.contract import Idle, Question, Status, View
from ui.errors import UiError
from ui.geometry import Box
from ui.i18n import DEFAULT_LANGUAGE, Catalogue, Translator, load_catalogues, pick_language
from ui.render import DrawnText, Fonts, Renderer
from ui.screens import Audience, Env, Screen, screen_for_question, screen_for_view, status_bar
from ui.theme import Theme, reference_dpi
from ui.widgets import Button, PointerTracker, UiEvent, Widget, flatten

ACTIVE_POLL = 0.01  # seconds between polls while touched and for ACTIVE_SECONDS after
IDLE_POLL = 0.1  # a first touch after a quiet spell waits at most this; 10 wake-ups a second: ~0.3% CPU
ACTIVE_SECONDS = 2.0
INPUT_EVENTS = (pygame.QUIT, pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP, pygame.MOUSEMOTION,
                pygame.FINGERDOWN, pygame.FINGERUP, pygame.FINGERMOTION, pygame.WINDOWEXPOSED,
                pygame.VIDEOEXPOSE)


@dataclass
class _Pending:
    question: Question
    screen: Screen
    future: asyncio.Future[Any]


class TouchUi:
    """The touchscreen. `language` is the merchant's (French by default); `pin_shuffle_seed`
    makes shuffled PIN pads reproducible (tests), else they come from os.urandom."""

    def __init__(self, *, size: tuple[int, int] = (480, 800), language: str = DEFAULT_LANGUAGE,
                 dpi: float | None = None, fullscreen: bool = False, headless: bool = False,
                 pin_shuffle_seed: int | None = None, catalogues: dict[str, Catalogue] | None = None,
                 fonts: dict[str, str | None] | None = None,
                 now: Callable[[], datetime.datetime] | None = None, used_keys: set[str] | None = None,
                 idle_poll: float = IDLE_POLL) -> None:
        self.theme = Theme(size, dpi if dpi is not None else reference_dpi(size))
        self._catalogues = catalogues if catalogues is not None else load_catalogues()
        if language not in self._catalogues:
            raise UiError(f"no catalogue for language {language!r}")
        self._merchant_language = language
        self._cardholder_language = language
        self._fullscreen = fullscreen
        self._headless = headless
        self._font_paths = fonts
        self._now = now or (lambda: datetime.datetime.now().astimezone())
        self._used = used_keys
        self._idle_poll = idle_poll
        self._shuffle: random.Random = (random.Random(pin_shuffle_seed) if pin_shuffle_seed is not None
                                        else random.SystemRandom())
        self._translators: dict[str, Translator] = {}
        self._status = Status()
        self._clock_base: tuple[datetime.datetime, float] | None = None
        self._clock_text = ""
        self._view_screen: Screen = screen_for_view(Idle())
        self._screen: Screen = self._view_screen
        self._pending: _Pending | None = None
        self._tracker = PointerTracker()
        self._finger: int | None = None
        self._surface: pygame.Surface | None = None
        self._renderer: Renderer | None = None
        self._frame: list[Widget] = []
        self._drawn: list[DrawnText] = []
        self._dirty = True
        self._running = False
        self._waker: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_input = -ACTIVE_SECONDS
        self.frames = 0  # frames drawn since open: idle must not draw
        self.quit_requested = False  # the window was closed (desktop)

    # --- UiPort --------------------------------------------------------------------------------

    def show(self, view: View) -> None:
        screen = screen_for_view(view)
        self._withdraw()
        if isinstance(view, Idle):
            self._cardholder_language = self._merchant_language
        self._view_screen = screen
        self._set_screen(screen)

    async def ask(self, question: Question) -> Any:
        screen = screen_for_question(question, self._shuffle, self._status.alerts)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._withdraw()
        self._pending = _Pending(question, screen, future)
        self._set_screen(screen)
        try:
            return await future
        finally:
            if self._pending is not None and self._pending.future is future:
                self._pending = None
                self._set_screen(self._view_screen)

    def set_status(self, status: Status) -> None:
        self._status = status
        self._clock_base = (status.clock, time.monotonic()) if status.clock is not None else None
        self._changed()

    def cardholder_language(self, preferences: Sequence[str]) -> str:
        self._cardholder_language = pick_language(preferences, self._catalogues, self._merchant_language)
        self._changed()
        return self._cardholder_language

    # --- settings ------------------------------------------------------------------------------

    @property
    def merchant_language(self) -> str:
        return self._merchant_language

    def set_merchant_language(self, language: str) -> None:
        if language not in self._catalogues:
            raise UiError(f"no catalogue for language {language!r}")
        if self._cardholder_language == self._merchant_language:
            self._cardholder_language = language
        self._merchant_language = language
        self._changed()

    @property
    def screen(self) -> Screen:
        """The screen on show (tests assert on its state)."""
        return self._screen

    @property
    def asking(self) -> Question | None:
        return self._pending.question if self._pending else None

    # --- loop ----------------------------------------------------------------------------------

    def open(self) -> None:
        if self._surface is not None:
            return
        if self._headless:
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        pygame.display.init()
        pygame.font.init()
        flags = pygame.FULLSCREEN if self._fullscreen else 0
        self._surface = pygame.display.set_mode(self.theme.size, flags)
        pygame.display.set_caption("TPE")
        if self._fullscreen:
            pygame.mouse.set_visible(False)
        pygame.event.set_blocked(None)
        pygame.event.set_allowed(list(INPUT_EVENTS))
        self._renderer = Renderer(self.theme, Fonts(self._font_paths))
        self._dirty = True

    def close(self) -> None:
        self._running = False
        if self._surface is not None:
            self._surface = None
            self._renderer = None
            pygame.display.quit()
            pygame.font.quit()

    async def run(self) -> None:
        """Pump events and draw until `stop()` or the window is closed."""
        self.open()
        loop = asyncio.get_running_loop()
        self._running = True
        while self._running:
            self._step()
            if not self._running:
                break
            busy = self._tracker.pressed is not None or time.monotonic() - self._last_input < ACTIVE_SECONDS
            waker: asyncio.Future[None] = loop.create_future()
            self._waker = waker
            timer = loop.call_later(ACTIVE_POLL if busy else self._idle_poll, _wake, waker)
            try:
                await waker
            finally:
                timer.cancel()
                self._waker = None

    def stop(self) -> None:
        self._running = False
        self._wake_up()

    async def __aenter__(self) -> TouchUi:
        self.open()
        self._task = asyncio.get_running_loop().create_task(self.run())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.stop()
        if self._task is not None:
            await self._task
            self._task = None
        self.close()

    # --- what was drawn, and synthetic touches (tests, the scripted demo) ----------------------

    def texts(self) -> list[str]:
        """The strings on the current frame, in drawing order (status bar first)."""
        self._refresh()
        return [d.text for d in self._drawn]

    def drawn(self) -> list[DrawnText]:
        self._refresh()
        return list(self._drawn)

    def widgets(self) -> list[Widget]:
        """The current screen's widgets, composites expanded."""
        self._refresh()
        return list(flatten(self._frame))

    def buttons(self) -> list[Button]:
        return [w for w in self.widgets() if isinstance(w, Button)]

    def screenshot(self, path: str | Path) -> Path:
        self._refresh()
        if self._surface is None:
            raise UiError("the display is not open")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        pygame.image.save(self._surface, str(target))
        return target

    def tap(self, x: float, y: float) -> None:
        """A finger down and up at (x, y), in pixels."""
        self.drag([(x, y)])

    def drag(self, points: Sequence[tuple[float, float]]) -> None:
        """A finger put down on the first point, moved through the others, lifted on the last."""
        if not points:
            return
        self.open()
        w, h = self.theme.size

        def post(kind: int, x: float, y: float) -> None:
            pygame.event.post(pygame.event.Event(kind, touch_id=0, finger_id=0, x=x / w, y=y / h,
                                                 dx=0.0, dy=0.0, pressure=1.0))

        post(pygame.FINGERDOWN, *points[0])
        for x, y in points[1:]:
            post(pygame.FINGERMOTION, x, y)
        post(pygame.FINGERUP, *points[-1])
        self._wake_up()

    def tap_text(self, label: str) -> None:
        """Tap the enabled button that reads `label` on the current frame."""
        for button in self.buttons():
            if button.text == label and button.enabled:
                self.tap(*button.box.center)
                return
        raise UiError(f"no button {label!r} on the {self._screen.name} screen")

    async def settle(self) -> None:
        """Handle every event posted so far, draw, and let answered questions return."""
        self._step()
        for _ in range(3):
            await asyncio.sleep(0)
        self._step()

    # --- internals -----------------------------------------------------------------------------

    def _translator(self, language: str) -> Translator:
        tr = self._translators.get(language)
        if tr is None:
            tr = Translator(self._catalogues, language, self._used)
            self._translators[language] = tr
        return tr

    def _set_screen(self, screen: Screen) -> None:
        if screen is not self._screen:
            self._screen.exit()
            self._screen = screen
            screen.enter()
        self._tracker.reset()
        self._finger = None
        self._changed()

    def _withdraw(self) -> None:
        """The open question's screen is going away: it answers as its cancel button would."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.future.done():
            pending.future.set_result(pending.screen.cancel_answer)

    def _changed(self) -> None:
        self._dirty = True
        self._wake_up()

    def _wake_up(self) -> None:
        if self._waker is not None and not self._waker.done():
            self._waker.set_result(None)

    def _clock(self) -> datetime.datetime:
        if self._clock_base is not None:
            at, mono = self._clock_base
            return at + datetime.timedelta(seconds=time.monotonic() - mono)
        return self._now()

    def _step(self) -> None:
        if self._surface is None:
            return
        for event in pygame.event.get():
            self._handle(event)
        clock = f"{self._clock():%H:%M}"
        if clock != self._clock_text:
            self._dirty = True
        if self._dirty:
            self._render()

    def _refresh(self) -> None:
        self.open()
        if self._dirty:
            self._render()

    def _handle(self, event: pygame.event.Event) -> None:
        w, h = self.theme.size
        kind = event.type
        if kind == pygame.QUIT:
            self.quit_requested = True
            self._running = False
        elif kind in (pygame.WINDOWEXPOSED, pygame.VIDEOEXPOSE):
            self._dirty = True
        elif kind == pygame.FINGERDOWN:
            if self._finger is None:
                self._finger = event.finger_id
                self._pointer("down", event.x * w, event.y * h)
        elif kind in (pygame.FINGERMOTION, pygame.FINGERUP):
            if event.finger_id == self._finger:
                self._pointer("move" if kind == pygame.FINGERMOTION else "up", event.x * w, event.y * h)
                if kind == pygame.FINGERUP:
                    self._finger = None
        elif getattr(event, "touch", False):
            return  # SDL's mouse copy of a touch, already handled as a finger
        elif kind == pygame.MOUSEBUTTONDOWN and event.button == 1:
            self._pointer("down", *event.pos)
        elif kind == pygame.MOUSEMOTION and event.buttons[0]:
            self._pointer("move", *event.pos)
        elif kind == pygame.MOUSEBUTTONUP and event.button == 1:
            self._pointer("up", *event.pos)

    def _pointer(self, kind: str, x: float, y: float) -> None:
        self._last_input = time.monotonic()
        if kind == "down":
            self._refresh()  # hit-test what the current screen shows, not a stale frame
            events = self._tracker.down(self._frame, x, y)
            self._dirty = True
        elif kind == "move":
            events = self._tracker.move(x, y)
        else:
            events = self._tracker.up(x, y)
            self._dirty = True
        for event in events:
            self._dispatch(event)

    def _dispatch(self, event: UiEvent) -> None:
        screen = self._screen
        answer = screen.handle_event(event)
        self._dirty = True
        pending = self._pending
        if answer is None or pending is None or pending.screen is not screen:
            return
        self._pending = None
        self._set_screen(self._view_screen)
        if not pending.future.done():
            pending.future.set_result(answer.value)

    def _render(self) -> None:
        if self._surface is None or self._renderer is None:
            return
        now = self._clock()
        self._clock_text = f"{now:%H:%M}"
        w, h = self.theme.size
        merchant = Env(self.theme, self._translator(self._merchant_language), now)
        top = status_bar.height(merchant, self._status)
        bar = status_bar.widgets(self._status, Box(0, 0, w, top), merchant)
        language = (self._merchant_language if self._screen.audience is Audience.MERCHANT
                    else self._cardholder_language)
        env = Env(self.theme, self._translator(language), now)
        screen_widgets = self._screen.layout(Box(0, top, w, h - top), env)
        self._surface.fill(self.theme.style("screen").bg)
        self._drawn = self._renderer.draw(self._surface, [*bar, *screen_widgets], self._tracker.pressed)
        self._frame = screen_widgets
        pygame.display.flip()
        self._dirty = False
        self.frames += 1


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
