"""The fleet protocol's documents without a broker (firmware/fleet_protocol.py), the remote
configuration's checks (firmware/fleet_config.py) and the [fleet] section. TEST KEYS only."""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.config import ConfigError, StateConfig, load_config, parse_config
from firmware.fleet_client import backoff
from firmware.fleet_config import FILE_NAME, NONE, RemoteConfigError, check, effective, load_overlay, save
from firmware.fleet_protocol import (
    DesiredConfig,
    FleetProtocolError,
    Topics,
    dumps,
    open_desired,
    parse_job,
    sign_desired,
)
from sim.host.test_pki import seeded_key

KEY = seeded_key("fleet protocol tests", "signing")  # TEST KEY
OTHER = seeded_key("fleet protocol tests", "someone else")  # TEST KEY
NOW = datetime.datetime(2026, 12, 4, 10, 0, tzinfo=datetime.UTC)
DEFAULTS = Path(__file__).resolve().parents[1] / "firmware" / "defaults"


def desired(version: int = 1, serial: str = "TPE-1", **sections: dict[str, object]) -> DesiredConfig:
    return DesiredConfig(serial, version, NOW, sections or {"offline": {"max_amount": 2000}})


def test_a_signed_document_opens_with_the_fleet_key_only() -> None:
    envelope = sign_desired(KEY, desired(7))
    opened = open_desired(envelope, KEY.public_key())
    assert (opened.serial, opened.version, opened.sections) == ("TPE-1", 7, {"offline": {"max_amount": 2000}})
    with pytest.raises(FleetProtocolError, match="fleet key"):
        open_desired(envelope, OTHER.public_key())
    body = json.loads(envelope)
    body["document"] = body["document"].replace("2000", "9000")  # one figure changed after signing
    with pytest.raises(FleetProtocolError, match="fleet key"):
        open_desired(dumps(body), KEY.public_key())


@given(st.binary(max_size=2000))
def test_any_payload_opens_or_is_refused_with_the_protocols_error(payload: bytes) -> None:
    try:
        open_desired(payload, KEY.public_key())
    except FleetProtocolError as exc:
        assert exc.what == "desired"


@given(st.text(max_size=40), st.binary(max_size=500))
def test_any_job_parses_or_is_refused_with_the_protocols_error(topic_id: str, payload: bytes) -> None:
    try:
        job = parse_job(topic_id, payload)
    except FleetProtocolError as exc:
        assert exc.what == "job"
    else:
        assert job.id == topic_id


def test_topics_refuse_a_serial_that_would_escape_its_tree() -> None:
    assert Topics("TPE-7").job_state("j1") == "tpe/TPE-7/jobs/j1/state"
    for bad in ("", "a/b", "+", "#", "x" * 33, "é"):
        with pytest.raises(FleetProtocolError):
            Topics(bad)


def test_backoff_is_full_jitter_under_its_cap() -> None:
    assert backoff(0, 300, lambda: 0.999) < 1 and backoff(10, 300, lambda: 0.5) == 150.0
    assert backoff(100, 300, lambda: 1.0) == 300 and backoff(3, 300, lambda: 0.0) == 0


def _config(tmp_path: Path):
    return dataclasses.replace(load_config(), state=StateConfig(tmp_path))


def test_a_remote_configuration_is_checked_like_the_file_and_kept(tmp_path: Path) -> None:
    config = _config(tmp_path)
    new = check(config, desired(2, offline={"enabled": True, "max_amount": 777}), serial="TPE-1", current=1)
    assert new.offline.max_amount == 777 and new.kernel == config.kernel
    for wanted, why in ((desired(1), "not newer"), (desired(5, serial="TPE-2"), "for device"),
                        (desired(5, host={"address": "x"}), "not remotely configurable"),
                        (desired(5, offline={"max_amount": "lots"}), "offline.max_amount"),
                        (desired(5, merchant={"language": "xx"}), "merchant.language")):
        with pytest.raises(RemoteConfigError, match=why):
            check(config, wanted, serial="TPE-1", current=1)
    assert effective(config)[1] == NONE and load_overlay(tmp_path) == NONE  # nothing pushed yet
    save(tmp_path, desired(2, offline={"enabled": True, "max_amount": 777}), "0123456789abcdef")
    in_force, overlay = effective(config)
    assert (overlay.version, overlay.digest) == (2, "0123456789abcdef") and in_force.offline.max_amount == 777


@pytest.mark.parametrize(("content", "read"), [
    (b"{", 0), (b"[]", 0), (b'{"version": 0, "sections": {}}', 0),
    (b'{"version": 3, "sections": {"host": {}}}', 0),
    (b'{"version": 3, "sections": {}, "digest": 7}', 0),
    (b'{"version": 3, "sections": {"offline": {"max_amount": -1}}}', 3),  # reads, but the file refuses it
])
def test_an_overlay_that_does_not_read_or_fit_is_left_out(tmp_path: Path, content: bytes, read: int) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    config = _config(tmp_path)
    in_force, overlay = effective(config)
    assert overlay == NONE and in_force.offline == config.offline
    assert load_overlay(tmp_path).version == read


def test_the_fleet_section_names_its_bad_key(fleet_pki) -> None:
    cert, key = fleet_pki.client("TPE-CONF")
    base = (f'serial = "TPE-CONF"\naddress = "127.0.0.1"\nca_file = "{fleet_pki.ca_cert}"\n'
            f'cert_file = "{cert}"\nkey_file = "{key}"\nsigning_key = "{fleet_pki.signing_public}"\n')
    text = (DEFAULTS / "terminal.toml").read_text() + "\n[fleet]\n"
    fleet = parse_config(text + base, "t.toml", DEFAULTS).fleet
    assert fleet is not None
    assert (fleet.port, fleet.telemetry_interval, fleet.session_expiry) == (8883, 300.0, 604800)
    for extra, bad in (('serial = "a/b"', "fleet.serial"),
                       ("telemetry_interval = 1", "fleet.telemetry_interval"),
                       (f'signing_key = "{cert}"', "fleet.signing_key"), ("colour = 1", "fleet.colour")):
        lines = [line for line in base.splitlines() if not line.startswith(extra.split(" ")[0] + " ")]
        with pytest.raises(ConfigError) as caught:
            parse_config(text + "\n".join([*lines, extra]) + "\n", "t.toml", DEFAULTS)
        assert caught.value.key == bad
