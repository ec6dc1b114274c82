"""The AT parser (modem/at_parser.py): answers written from the dialect documents (V.250 result
codes, 3GPP TS 27.007 +CME ERROR, Quectel AT+QISEND/AT+QIRD, SIMCom AT+CIPSEND/AT+CIPRXGET),
each fed whole, one byte at a time and in random pieces; and any bytes at all."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modem.at_parser import (
    AtEvent,
    AtParseError,
    AtParser,
    Data,
    Echo,
    Final,
    Line,
    Prompt,
)

PARSER = Path(__file__).resolve().parent.parent / "modem" / "at_parser.py"
FORBIDDEN = {"serial", "socket", "asyncio", "os", "io", "select", "selectors", "threading", "subprocess",
             "fcntl", "termios", "pty", "ssl", "sqlite3", "firmware", "logging", "time"}

ParseError = "parse error"  # what `run` records in place of an AtParseError


def run(parser: AtParser, chunks: list[bytes]) -> list[AtEvent | str]:
    """Feed `chunks` in order; each AtParseError is recorded where it fell, then parsing goes on."""
    out: list[AtEvent | str] = []
    for chunk in chunks:
        pending = chunk
        while True:
            try:
                out += parser.feed(pending)
                break
            except AtParseError as exc:
                out += exc.events
                out.append(ParseError)
                pending = b""
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# Binary socket payload that looks like AT framing: line ends, finals, a prompt, an echo.
TRICKY = b"\r\nOK\r\n> AT\rERROR\n\x00\xff+QIRD: 3\r\n"

CASES: dict[str, tuple[dict[str, int], bytes, list[AtEvent | str]]] = {
    "information line and OK": (
        {}, b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n", [Line("+CSQ: 20,99"), Final("OK")]),
    "bare CR and bare LF line ends": (
        {}, b"+CSQ: 20,99\r\rOK\n\nERROR\n", [Line("+CSQ: 20,99"), Final("OK"), Final("ERROR")]),
    "LF CR is two line ends": (
        {}, b"\n\rOK\n\r", [Final("OK")]),
    "echo on: the command line comes back first": (
        {}, b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n", [Echo("AT+CSQ"), Line("+CSQ: 20,99"), Final("OK")]),
    "echo in lower case": (
        {}, b"at\r\r\nOK\r\n", [Echo("at"), Final("OK")]),
    "spaces around a line dropped, blank lines skipped": (
        {}, b"\r\n  +CPIN: READY \t\r\n   \r\n\r\nOK  \r\n", [Line("+CPIN: READY"), Final("OK")]),
    "Quectel send: prompt, then SEND OK": (
        {}, b"\r\n> \r\nSEND OK\r\n", [Prompt(), Final("SEND OK")]),
    "SIMCom send: bare prompt, then OK and the URC": (
        {}, b"\r\n>\r\nOK\r\n\r\n+CIPSEND: 0,5,5\r\n", [Prompt(), Final("OK"), Line("+CIPSEND: 0,5,5")]),
    "a text right after the prompt is a line of its own": (
        {}, b"> +QIURC: \"closed\",0\r\n", [Prompt(), Line('+QIURC: "closed",0')]),
    "send failed": (
        {}, b"\r\n> \r\nSEND FAIL\r\n", [Prompt(), Final("SEND FAIL")]),
    "numeric CME and CMS errors": (
        {}, b"\r\n+CME ERROR: 10\r\n\r\n+CMS ERROR: 500\r\n",
        [Final("CME", code=10), Final("CMS", code=500)]),
    "verbose CME error keeps its text": (
        {}, b"\r\n+CME ERROR: SIM not inserted\r\n", [Final("CME", text="SIM not inserted")]),
    "NO CARRIER, CONNECT and CONNECT with a rate": (
        {}, b"\r\nNO CARRIER\r\n\r\nCONNECT\r\n\r\nCONNECT 115200\r\n",
        [Final("NO CARRIER"), Final("CONNECT"), Final("CONNECT", text="115200")]),
    "look-alikes of finals are information lines": (
        {}, b"OK2\r\nCONNECT OK\r\n+CME ERRORS\r\nSEND\r\n",
        [Line("OK2"), Line("CONNECT OK"), Line("+CME ERRORS"), Line("SEND")]),
    "Quectel read: binary block that looks like AT framing": (
        {}, b"\r\n+QIRD: " + str(len(TRICKY)).encode() + b"\r\n" + TRICKY + b"\r\n\r\nOK\r\n",
        [Line(f"+QIRD: {len(TRICKY)}"), Data(TRICKY), Final("OK")]),
    "Quectel read in UDP service mode names the peer": (
        {}, b'\r\n+QIRD: 4,"10.0.0.1",5000\r\n\r\nOK\r\n\r\nOK\r\n',
        [Line('+QIRD: 4,"10.0.0.1",5000'), Data(b"\r\nOK"), Final("OK")]),
    "Quectel read with nothing to read": (
        {}, b"\r\n+QIRD: 0\r\n\r\nOK\r\n", [Line("+QIRD: 0"), Data(b""), Final("OK")]),
    "Quectel read query carries no data": (
        {}, b"\r\n+QIRD: 10,4,6\r\n\r\nOK\r\n", [Line("+QIRD: 10,4,6"), Final("OK")]),
    "SIMCom read: binary block after +CIPRXGET: 2": (
        {}, b"\r\n+CIPRXGET: 2,1,7,3\r\nOK\r\n>\r\n\r\nOK\r\n",
        [Line("+CIPRXGET: 2,1,7,3"), Data(b"OK\r\n>\r\n"), Final("OK")]),
    "SIMCom unread length and hex mode carry no binary block": (
        {}, b"\r\n+CIPRXGET: 4,1,30\r\n\r\n+CIPRXGET: 3,1,2,0\r\n4F4B\r\nOK\r\n",
        [Line("+CIPRXGET: 4,1,30"), Line("+CIPRXGET: 3,1,2,0"), Line("4F4B"), Final("OK")]),
    "URCs in the middle of an answer are lines": (
        {}, b'\r\n+COPS: 0,0,"Orange F",7\r\n\r\n+QIURC: "recv",0\r\n\r\n+CEREG: 5\r\n\r\nOK\r\n',
        [Line('+COPS: 0,0,"Orange F",7'), Line('+QIURC: "recv",0'), Line("+CEREG: 5"), Final("OK")]),
    "bytes that are not UTF-8 are replaced": (
        {}, b"\xff\xfe\x80abc\r\n\xc3\xa9t\xc3\xa9\r\nOK\r\n",
        [Line("\ufffd\ufffd\ufffdabc"), Line("\u00e9t\u00e9"), Final("OK")]),
    "an overlong line is an error, then OK is read": (
        {"max_line": 16}, b"\r\n" + b"x" * 40 + b"\r\n\r\nOK\r\n", [ParseError, Final("OK")]),
    "a line of exactly max_line is fine": (
        {"max_line": 16}, b"y" * 16 + b"\r\n" + b"z" * 17 + b"\nOK\r\n",
        [Line("y" * 16), ParseError, Final("OK")]),
    "a data block over max_data is an error, then lines again from the next line end": (
        {"max_data": 8}, b"\r\n+QIRD: 10\r\n" + b"0123456789" + b"\r\n\r\nOK\r\n",
        [Line("+QIRD: 10"), ParseError, Final("OK")]),
}


def reference(name: str) -> tuple[dict[str, int], bytes, list[AtEvent | str]]:
    return CASES[name]


@pytest.mark.parametrize("name", list(CASES))
def test_case_fed_whole(name: str) -> None:
    limits, data, expected = reference(name)
    assert run(AtParser(**limits), [data]) == expected


@pytest.mark.parametrize("name", list(CASES))
def test_case_fed_byte_by_byte(name: str) -> None:
    limits, data, expected = reference(name)
    assert run(AtParser(**limits), [data[i:i + 1] for i in range(len(data))]) == expected


@pytest.mark.parametrize("name", list(CASES))
@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_case_fed_in_random_pieces(name: str, cuts: list[int]) -> None:
    limits, data, expected = reference(name)
    assert run(AtParser(**limits), split(data, cuts)) == expected


def test_prompt_is_emitted_before_any_line_end_or_space() -> None:
    parser = AtParser()
    assert parser.feed(b"\r\n>") == [Prompt()]
    # the space of "> " comes later and is swallowed; what follows is the next answer
    assert parser.feed(b" ") == []
    assert parser.feed(b"\r\nSEND OK\r\n") == [Final("SEND OK")]


def test_data_echoed_after_the_prompt_starts_after_its_space() -> None:
    # Quectel AT+QISDE=1 echoes the data sent after "> ": the caller announces it.
    parser = AtParser()
    assert parser.feed(b"\r\n>") == [Prompt()]
    parser.expect_data(3)
    assert parser.feed(b" OK\r\r\nSEND OK\r\n") == [Data(b"OK\r"), Final("SEND OK")]


def test_line_pending_while_a_line_is_unfinished() -> None:
    parser = AtParser()
    assert not parser.line_pending
    parser.feed(b"\r\n+QIURC: ")
    assert parser.line_pending
    parser.feed(b'"recv",0\r\n')
    assert not parser.line_pending
    parser.feed(b"+QIRD: 4\r\nab")
    assert not parser.line_pending  # inside a binary block
    parser.feed(b"cd\r\n")
    assert not parser.line_pending


def test_greater_than_inside_a_line_is_text() -> None:
    assert AtParser().feed(b'+COPS: 0,0,"A>B",7\r\n') == [Line('+COPS: 0,0,"A>B",7')]


def test_binary_block_starts_after_the_lf_of_a_split_cr_lf() -> None:
    parser = AtParser()
    assert parser.feed(b"+QIRD: 3\r") == [Line("+QIRD: 3")]
    assert parser.feed(b"\nab") == []
    assert parser.feed(b"c\r\n\r\nOK\r\n") == [Data(b"abc"), Final("OK")]


def test_data_repr_gives_the_length_only() -> None:
    assert "secret" not in repr(Data(b"secret payload"))
    assert "14" in repr(Data(b"secret payload"))


def test_final_line_is_the_result_code_as_sent() -> None:
    for raw in ("OK", "+CME ERROR: 10", "+CME ERROR: SIM not inserted", "+CMS ERROR: 500", "CONNECT 115200",
                "NO CARRIER", "SEND FAIL"):
        event = AtParser().feed(raw.encode() + b"\r\n")[0]
        assert isinstance(event, Final)
        assert event.line == raw


# expect_data: a header the parser has no rule for, announced by its caller.

def test_expect_data_with_the_header_line_still_open() -> None:
    parser = AtParser(data_headers=())
    assert parser.feed(b"\r\n+XREAD: 5") == []
    parser.expect_data(5)
    assert parser.feed(b"\r\nab\r\nc\r\nOK\r\n") == [Line("+XREAD: 5"), Data(b"ab\r\nc"), Final("OK")]


def test_expect_data_right_after_the_header_line() -> None:
    parser = AtParser(data_headers=())
    assert parser.feed(b"\r\n+XREAD: 3\r") == [Line("+XREAD: 3")]
    parser.expect_data(3)
    assert parser.feed(b"\nOK>\r\nOK\r\n") == [Data(b"OK>"), Final("OK")]


def test_expect_data_of_zero_bytes() -> None:
    parser = AtParser(data_headers=())
    parser.feed(b"+XREAD: 0\r\n")
    parser.expect_data(0)
    assert parser.feed(b"\r\nOK\r\n") == [Data(b""), Final("OK")]


def test_without_header_rules_a_read_is_lines() -> None:
    assert AtParser(data_headers=()).feed(b"+QIRD: 2\r\nOK\r\n") == [Line("+QIRD: 2"), Final("OK")]


def test_header_rules_given_at_construction() -> None:
    parser = AtParser(data_headers=[(re.compile(r"\+XREAD: (\d+),(\d+)"), 2)])
    assert parser.feed(b"+XREAD: 9,2\r\nOK\r\nOK\r\n") == [Line("+XREAD: 9,2"), Data(b"OK"), Final("OK")]


@pytest.mark.parametrize("length", [-1, 4097])
def test_expect_data_out_of_range(length: int) -> None:
    with pytest.raises(AtParseError):
        AtParser().expect_data(length)


def test_expect_data_twice() -> None:
    parser = AtParser()
    parser.expect_data(4)
    with pytest.raises(AtParseError):
        parser.expect_data(4)
    assert parser.feed(b"abcd\r\nOK\r\n") == [Data(b"abcd"), Final("OK")]


def test_error_carries_the_events_before_it_and_keeps_the_rest() -> None:
    parser = AtParser(max_line=8)
    with pytest.raises(AtParseError) as raised:
        parser.feed(b"+A: 1\r\n" + b"x" * 20 + b"\r\n+B: 2\r\nOK\r\n")
    assert raised.value.events == [Line("+A: 1")]
    assert parser.feed(b"") == [Line("+B: 2"), Final("OK")]


def test_overlong_line_raises_before_its_end_arrives() -> None:
    parser = AtParser(max_line=8)
    assert parser.feed(b"x" * 8) == []
    with pytest.raises(AtParseError):
        parser.feed(b"x")
    # still inside the overlong line: dropped, no second error
    assert parser.feed(b"x" * 100) == []
    assert parser.feed(b"\r\nOK\r\n") == [Final("OK")]


# Any bytes at all.

TOKENS = [b"\r", b"\n", b"\r\n", b">", b" ", b"OK", b"ERROR", b"AT", b"+QIRD: ", b"+CIPRXGET: 2,0,",
          b",0", b"+CME ERROR: ", b"SEND OK", b"CONNECT ", b"\xff", b"\x00", b"9", b"3", b"12"]
NOISE = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=8)), max_size=60).map(b"".join)
SMALL = {"max_line": 48, "max_data": 40}


def recovered(parser: AtParser) -> list[AtEvent | str]:
    """Enough bytes to end any partial line and any binary block of up to `max_data` bytes,
    then an OK."""
    return run(parser, [b"\r\n" + b"x" * SMALL["max_data"] + b"\r\nOK\r\n"])


@settings(max_examples=400, deadline=None)
@given(noise=NOISE, cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=10))
def test_any_bytes_give_the_same_events_however_split(noise: bytes, cuts: list[int]) -> None:
    whole = run(AtParser(**SMALL), [noise])
    assert run(AtParser(**SMALL), split(noise, cuts)) == whole
    assert run(AtParser(**SMALL), [noise[i:i + 1] for i in range(len(noise))]) == whole
    for event in whole:
        assert event == ParseError or isinstance(event, Echo | Line | Final | Prompt | Data)


@settings(max_examples=400, deadline=None)
@given(noise=st.one_of(NOISE, st.binary(max_size=300)))
def test_parser_keeps_working_after_any_bytes(noise: bytes) -> None:
    parser = AtParser(**SMALL)
    for event in run(parser, [noise]):
        if isinstance(event, Data):
            assert len(event.payload) <= SMALL["max_data"]
        if isinstance(event, Line | Echo):
            assert len(event.text.encode()) <= 3 * SMALL["max_line"]
    assert recovered(parser)[-1] == Final("OK")


# ARCHITECTURE, principle 1: the parser does no I/O.

def test_parser_imports_no_io_library() -> None:
    offenders = []
    for node in ast.walk(ast.parse(PARSER.read_text(), str(PARSER))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else ["relative import"]
        offenders += [n for n in names if n.split(".")[0] in FORBIDDEN or n == "relative import"]
    assert offenders == []


def test_parser_never_calls_open_or_print() -> None:
    calls = [f"{n.lineno}: {n.func.id}" for n in ast.walk(ast.parse(PARSER.read_text()))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("open", "print")]
    assert calls == []
