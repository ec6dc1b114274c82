"""The merchant's settings changed on the touchscreen (language, PIN pad shuffle, training mode),
kept in the [state] folder so that a restart (a power cut, a firmware update) finds them as the
merchant left them. The configuration file gives the first values; the file written here wins
once it exists. A file that cannot be read is logged and the configuration's values apply: a
broken settings file never stops the terminal."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from firmware import durable
from ui.contract import LANGUAGES, Settings

log = logging.getLogger(__name__)

FILE_NAME = "settings.json"  # in the [state] folder


class SettingsError(Exception):
    """The settings cannot be written."""


def load(folder: Path, default: Settings) -> Settings:
    """The settings saved in `folder`, or `default` when there are none or they do not read."""
    path = Path(folder) / FILE_NAME
    raw = durable.read_json(path, "the configuration's settings apply", log)
    if raw is None:
        return default
    language = raw.get("language") if isinstance(raw, dict) else None
    shuffle = raw.get("shuffle") if isinstance(raw, dict) else None
    training = raw.get("training") if isinstance(raw, dict) else None
    if language not in LANGUAGES or not isinstance(shuffle, bool) or not isinstance(training, bool):
        log.error("settings: %s holds no settings: the configuration's apply", path)
        return default
    return Settings(language, shuffle, training)


def save(folder: Path, settings: Settings) -> None:
    """Written whole or not at all (`durable.write_atomically`). `SettingsError`."""
    path = Path(folder) / FILE_NAME
    data = json.dumps({"language": settings.language, "shuffle": settings.shuffle,
                       "training": settings.training}, sort_keys=True).encode()
    try:
        durable.write_atomically(path, data)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot be written: {exc}") from exc
