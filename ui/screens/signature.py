"""Signature capture: the cardholder draws with a finger or the mouse (EMV 4.4 Book 3, 10.5:
signature as the CVM, checked by the merchant); clear starts again, OK needs a stroke."""

from __future__ import annotations

from ui.contract import AskSignature
from ui.geometry import Box
from ui.screens.base import Answered, Env, Screen, body, bottom_row
from ui.widgets import SignaturePad, UiEvent, Widget

MAX_POINTS = 4000  # a signature is a few hundred points: a cap keeps a stuck finger from growing memory


class SignatureScreen(Screen):
    name = "signature"
    cancel_answer = False

    def __init__(self, question: AskSignature) -> None:
        self.question = question
        self.strokes: list[list[tuple[int, int]]] = []
        self._points = 0

    @property
    def signed(self) -> bool:
        return any(len(stroke) > 1 for stroke in self.strokes)

    def handle_event(self, event: UiEvent) -> Answered | None:
        match event.name:
            case "stroke":
                kind, x, y = event.value
                if kind == "start":
                    self.strokes.append([(x, y)])
                    self._points += 1
                elif self.strokes and self._points < MAX_POINTS and self.strokes[-1][-1] != (x, y):
                    self.strokes[-1].append((x, y))
                    self._points += 1
            case "clear":
                self.strokes.clear()
                self._points = 0
            case "ok" if self.signed:
                return Answered(True)
            case "cancel":
                return Answered(False)
        return None

    def layout(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        row, area = bottom_row(area, env, [(tr("common.cancel"), UiEvent("cancel"), "cancel"),
                                           (tr("common.clear"), UiEvent("clear"), "correct"),
                                           (tr("common.ok"), UiEvent("ok"), "ok")])
        widgets.extend(row)
        label, area = body(area, env, tr("signature.title"), env.px(48), size=env.title_size, bold=True)
        widgets.append(label)
        label, area = body(area, env, tr.money(self.question.money), env.px(44), size=env.px(36), bold=True)
        widgets.append(label)
        label, area = body(area, env, tr("signature.hint"), env.px(36), style="dim")
        widgets.append(label)
        widgets.append(SignaturePad(area, tuple(tuple(stroke) for stroke in self.strokes)))
        return widgets
