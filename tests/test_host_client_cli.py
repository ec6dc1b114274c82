"""`tpe sale` chooses its authorizer before touching a reader: the configured [host], the scripted
issuer when asked, or a usage error naming what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware.cli import EXIT_USAGE, main

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "firmware" / "defaults" / "terminal.toml"


def test_no_host_section_is_a_usage_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sale", "1.00"]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert "no [host] section" in error and "--scripted-issuer" in error and str(DEFAULT_CONFIG) in error


def test_no_host_section_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sale", "1.00", "--json"]) == EXIT_USAGE
    out = json.loads(capsys.readouterr().out)
    assert out["error"] == "usage" and "[host]" in out["message"]


def test_issuer_declines_goes_with_the_scripted_issuer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sale", "1.00", "--issuer-declines", "--no-host"]) == EXIT_USAGE
    assert "--scripted-issuer" in capsys.readouterr().err


def test_scripted_issuer_and_no_host_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["sale", "1.00", "--scripted-issuer", "--no-host"])
    assert stopped.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_the_old_pin_pad_key_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "terminal.toml"
    config.write_text(DEFAULT_CONFIG.read_text().replace(
        "[pin_pad]\n", '[pin_pad]\nkey_file = "sim:host/pin_pad_test_key.toml"\n'))
    assert main(["sale", "1.00", "--scripted-issuer", "--config", str(config)]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert "pin_pad.key_file" in error and "[dukpt] initial_key_file" in error
