"""How the simulated module reads command lines (ITU-T V.250, 5.2-5.4) and the 27.007 <rssi>
mapping, with property tests: any input is either read or refused with the parser's own error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.modem.at_syntax import (
    AtSyntaxError,
    BasicCommand,
    ExtendedCommand,
    Line,
    LineScanner,
    parse_arguments,
    split_command_line,
)
from sim.modem.network import csq_rssi


def scan(data: bytes, max_line: int = 1024) -> list[Line]:
    scanner = LineScanner(max_line)
    return [line for byte in data if (line := scanner.push(byte)) is not None]


def test_command_forms() -> None:
    assert split_command_line("") == []
    assert split_command_line("E0") == [BasicCommand("E", 0)]
    assert split_command_line("e1&w") == [BasicCommand("E", 1), BasicCommand("&W", None)]
    assert split_command_line("+csq") == [ExtendedCommand("+CSQ", "action")]
    assert split_command_line("+CREG?") == [ExtendedCommand("+CREG", "read")]
    assert split_command_line("+CREG=?") == [ExtendedCommand("+CREG", "test")]
    assert split_command_line('+QIOPEN=1,0,"TCP","a,b;c",80') == [
        ExtendedCommand("+QIOPEN", "set", (1, 0, "TCP", "a,b;c", 80))]
    assert split_command_line("+CSQ;+CREG?") == [ExtendedCommand("+CSQ", "action"),
                                                 ExtendedCommand("+CREG", "read")]
    assert split_command_line("E0+CSQ") == [BasicCommand("E", 0), ExtendedCommand("+CSQ", "action")]
    assert split_command_line('+X = 1 , , "a b"') == [ExtendedCommand("+X", "set", (1, None, "a b"))]
    assert parse_arguments("") == (None,)


@pytest.mark.parametrize("body", ['+X="abc', "+", "+=1", "+X=-1", "+X=abc", "&", "&1", '+X=1"2"',
                                  "+X?junk", "+X=?1", "E99999999999", "+X=12345678901", "-"])
def test_malformed_command_lines(body: str) -> None:
    with pytest.raises(AtSyntaxError):
        split_command_line(body)


def test_scanner_finds_lines_after_the_prefix() -> None:
    assert scan(b"noise\x00\xffAT+CSQ\r") == [Line("+CSQ", b"AT+CSQ\r")]
    assert scan(b"at\r\nAt+x\r") == [Line("", b"at\r"), Line("+x", b"At+x\r")]
    assert scan(b"AT+CSX\x08Q\r") == [Line("+CSQ", b"AT+CSQ\r")]
    assert scan(b"AT\x08\x08\x08\r") == [Line("", b"AT\r")]  # backspace stops at the prefix
    assert scan(b"AT+C\x01S\x1bQ\r") == [Line("+CSQ", b"AT+CSQ\r")]  # other controls ignored
    assert scan(b"A/") == [Line("", b"A/", repeat=True)]
    assert scan(b"AAT\r") == [Line("", b"AT\r")]
    assert scan(b"AT+CSQ") == []  # no S3 yet
    long = scan(b"AT" + b"X" * 20 + b"\rAT\r", max_line=10)
    assert [(line.overflow, line.body) for line in long] == [(True, "XXXXXXXX"), (False, "")]


@given(st.text(max_size=200))
def test_any_text_is_commands_or_a_syntax_error(body: str) -> None:
    try:
        commands = split_command_line(body)
    except AtSyntaxError:
        return
    for command in commands:
        assert isinstance(command, BasicCommand | ExtendedCommand)
        if isinstance(command, ExtendedCommand):
            assert command.name.startswith("+") and len(command.name) > 1
            assert all(arg is None or isinstance(arg, int | str) for arg in command.args)


@given(st.binary(max_size=3000), st.integers(min_value=2, max_value=64))
def test_any_bytes_are_scanned_without_failing(data: bytes, max_line: int) -> None:
    for line in scan(data, max_line):
        assert len(line.body) <= max_line
        assert line.echo.upper().startswith(b"AT") or line.repeat
        assert all(0x20 <= ord(char) != 0x7F for char in line.body)


@pytest.mark.parametrize(("dbm", "rssi"), [(-150, 0), (-113, 0), (-112, 0), (-111, 1), (-109, 2),
                                           (-75, 19), (-53, 30), (-51, 31), (0, 31), (None, 99)])
def test_rssi_of_27007_table(dbm: int | None, rssi: int) -> None:
    # 3GPP TS 27.007, 8.5: 0 <= -113 dBm, 1 = -111 dBm, 2..30 = -109..-53 dBm, 31 >= -51 dBm.
    assert csq_rssi(dbm) == rssi


@given(st.integers(min_value=-150, max_value=-1))
def test_rssi_grows_with_the_signal(dbm: int) -> None:
    assert 0 <= csq_rssi(dbm) <= csq_rssi(dbm + 1) <= 31
