"""The configuration the fleet pushes (docs/fleet-protocol.md, Remote configuration): whole
sections of the terminal's file, checked exactly as the file itself is (`config.parse_document`),
kept in the [state] folder as an overlay written atomically, and in force from the next sale
without a restart. Sections that decide where money goes or which keys are used ([host],
[dukpt], [state], the kernel's) are not remotely configurable: a technician changes those.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware import durable
from firmware.config import AppConfig, ConfigError, parse_document, read_document
from firmware.fleet_protocol import DesiredConfig

log = logging.getLogger(__name__)

REMOTE_SECTIONS = ("offline", "merchant", "receipt", "printer")
FILE_NAME = "fleet-config.json"  # in the [state] folder


class RemoteConfigError(Exception):
    """A desired configuration refused: `reason` says why (reported back to the fleet)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Overlay:
    version: int  # 0: nothing pushed yet
    sections: dict[str, Any]
    digest: str | None = None  # the push it came from (`fleet_protocol.document_digest`)


NONE = Overlay(0, {})


def load_overlay(folder: Path) -> Overlay:
    """The overlay in force, or `NONE` (a file that does not read is logged and ignored)."""
    path = Path(folder) / FILE_NAME
    raw = durable.read_json(path, "the file's configuration applies", log)
    if raw is None:
        return NONE
    version, sections = (raw.get("version"), raw.get("sections")) if isinstance(raw, dict) else (None, None)
    digest = raw.get("digest") if isinstance(raw, dict) else None
    if type(version) is not int or version < 1 or not isinstance(sections, dict) \
            or not set(sections) <= set(REMOTE_SECTIONS) or not isinstance(digest, str | None):
        log.error("remote configuration: %s holds no overlay: the file's configuration applies", path)
        return NONE
    return Overlay(version, sections, digest)


def merged(config: AppConfig, overlay: Overlay) -> AppConfig:
    """`config`'s file with `overlay`'s sections in place of its own, checked as a whole.
    `ConfigError` when the result is not a valid configuration."""
    document = read_document(config.source)
    document.update(overlay.sections)
    return parse_document(document, str(config.source), Path(config.source).parent)


def effective(config: AppConfig) -> tuple[AppConfig, Overlay]:
    """The configuration in force at start: the file's, with the overlay of its [state] folder
    when one was applied; and that overlay (`NONE` without). An overlay the file no longer
    accepts (a file edited by hand since) is logged and left out."""
    overlay = load_overlay(config.state.folder)
    if overlay.version == 0:
        return config, NONE
    try:
        return merged(config, overlay), overlay
    except ConfigError as exc:
        log.error("remote configuration %d no longer fits the file (%s): left out", overlay.version, exc)
        return config, NONE


def check(config: AppConfig, desired: DesiredConfig, *, serial: str, current: int) -> AppConfig:
    """The configuration `desired` would put in force: for this device, newer than `current`,
    only remote sections, valid as a whole. `RemoteConfigError` with the reason otherwise."""
    if desired.serial != serial:
        raise RemoteConfigError(f"for device {desired.serial}, not {serial}")
    if desired.version <= current:
        raise RemoteConfigError(f"version {desired.version} is not newer than {current}")
    foreign = sorted(set(desired.sections) - set(REMOTE_SECTIONS))
    if foreign:
        raise RemoteConfigError(f"[{foreign[0]}] is not remotely configurable "
                                f"(only {', '.join(REMOTE_SECTIONS)})")
    try:
        return merged(config, Overlay(desired.version, desired.sections))
    except ConfigError as exc:
        raise RemoteConfigError(f"invalid: {exc.key}: {exc.reason}") from None


def save(folder: Path, desired: DesiredConfig, digest: str) -> None:
    """The overlay of push `digest` written whole or not at all (`durable.write_atomically`).
    OSError."""
    data = json.dumps({"version": desired.version, "sections": desired.sections, "digest": digest},
                      sort_keys=True).encode()
    durable.write_atomically(Path(folder) / FILE_NAME, data)
