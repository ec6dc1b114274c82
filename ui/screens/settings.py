"""The merchant's settings (`AskSettings`): the language of the merchant's screens, each written
in its own name, the PIN pad's shuffle and training mode on or off; OK answers the new
`Settings`, cancel None."""

from __future__ import annotations

from ui.contract import AskSettings, Settings
from ui.geometry import Box
from ui.screens.base import Answered, Audience, Env, Screen, body, bottom_row, title
from ui.widgets import Button, UiEvent, Widget

# Each language in its own name (CLDR's localeDisplayNames of the language in itself), so a
# merchant who cannot read the current language still finds theirs.
AUTONYMS = {"fr": "Français", "en": "English", "es": "Español", "it": "Italiano", "de": "Deutsch",
            "nl": "Nederlands", "sv": "Svenska", "pt": "Português"}
TOGGLE_PX = 72


class SettingsScreen(Screen):
    name = "settings"
    audience = Audience.MERCHANT
    cancel_answer = None

    def __init__(self, question: AskSettings) -> None:
        self.languages = tuple(lang for lang in question.languages if lang in AUTONYMS)
        self.language = question.current.language
        self.shuffle = question.current.shuffle
        self.training = question.current.training

    def handle_event(self, event: UiEvent) -> Answered | None:
        match event.name:
            case "language" if event.value in self.languages:
                self.language = event.value
            case "shuffle":
                self.shuffle = not self.shuffle
            case "training":
                self.training = not self.training
            case "ok":
                return Answered(Settings(self.language, self.shuffle, self.training))
            case "cancel":
                return Answered(None)
        return None

    def layout(self, area: Box, env: Env) -> list[Widget]:
        tr = env.tr
        area = area.inset(env.margin)
        widgets: list[Widget] = []
        row, area = bottom_row(area, env, [(tr("common.cancel"), UiEvent("cancel"), "cancel"),
                                           (tr("common.ok"), UiEvent("ok"), "ok")])
        widgets.extend(row)
        label, area = title(area, env, tr("settings.title"), env.px(44))
        widgets.append(label)
        toggle_h = max(env.px(TOGGLE_PX), env.theme.min_target)
        for event, on, key, on_style in (("training", self.training, "settings.training", "alert"),
                                          ("shuffle", self.shuffle, "settings.shuffle", "field")):
            box, area = area.take_bottom(toggle_h, env.gap)
            state = tr("settings.on" if on else "settings.off")
            widgets.append(Button(box, tr(key, state=state), UiEvent(event), env.px(26),
                                  on_style if on else "field_idle"))
        label, area = body(area, env, tr("settings.language"), env.px(30), size=env.px(22), style="dim")
        widgets.append(label)
        rows = -(-len(self.languages) // 2)
        if rows:
            cells = area.grid(rows, 2, env.gap)
            for cell, language in zip(cells, self.languages, strict=False):
                widgets.append(Button(cell, AUTONYMS[language], UiEvent("language", language), env.px(28),
                                      "field" if language == self.language else "button"))
        return widgets
