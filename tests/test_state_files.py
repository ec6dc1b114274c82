"""The small state files the terminal reads at start (the merchant's settings, the fleet's
configuration overlay, the jobs handled): whatever a power cut or a hand edit left there, the
terminal starts with its configuration's values, and logs why."""

from __future__ import annotations

import logging
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware import durable, fleet_config, merchant_settings
from ui.contract import Settings

DEFAULT = Settings("fr", shuffle=False, training=False)
HEALTH = [HealthCheck.function_scoped_fixture]


@settings(max_examples=100, suppress_health_check=HEALTH)
@given(st.binary(max_size=500))
def test_any_settings_file_gives_settings(tmp_path: Path, content: bytes) -> None:
    (tmp_path / merchant_settings.FILE_NAME).write_bytes(content)
    found = merchant_settings.load(tmp_path, DEFAULT)
    assert isinstance(found, Settings) and found.language in ("fr", "en", "es", "it", "de", "nl", "sv", "pt")


@settings(max_examples=100, suppress_health_check=HEALTH)
@given(st.binary(max_size=500))
def test_any_overlay_file_gives_an_overlay(tmp_path: Path, content: bytes) -> None:
    (tmp_path / fleet_config.FILE_NAME).write_bytes(content)
    overlay = fleet_config.load_overlay(tmp_path)
    assert overlay.version >= 0 and set(overlay.sections) <= set(fleet_config.REMOTE_SECTIONS)


def test_settings_round_trip_and_a_broken_file_is_logged(tmp_path: Path, caplog) -> None:
    merchant_settings.save(tmp_path, Settings("sv", shuffle=True, training=True))
    assert merchant_settings.load(tmp_path, DEFAULT) == Settings("sv", shuffle=True, training=True)
    (tmp_path / merchant_settings.FILE_NAME).write_text("{")
    with caplog.at_level(logging.ERROR):
        assert merchant_settings.load(tmp_path, DEFAULT) == DEFAULT
    assert "cannot be read" in caplog.text
    assert durable.read_json(tmp_path / "missing.json", "none", logging.getLogger("t")) is None
