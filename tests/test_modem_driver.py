"""The module driver's pure parts: 27.007 signal and technology mapping, the parsing of its
answers and URCs, the checks of what goes into AT string parameters, and `ModemSocket` over a
scripted in-memory driver (no AT, no pty).

Expected values come from 3GPP TS 27.007 (8.5 <rssi> table, 7.2/10.1.22 <stat>, 7.3 <AcT>) and
from the example lines of the Quectel and SIMCom manuals.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.tls_stream import ConnectError, StreamError
from modem import signal
from modem.module import (
    Credentials,
    ModemConfigError,
    ModemResponseError,
    Registration,
    best_registration,
    check_at_string,
    check_pin,
    int_fields,
    parse_cops,
    parse_csq,
    parse_registration,
    split_fields,
)
from modem.socket_stream import ModemSocket, ModemSocketError, SocketOpenError

# --- signal ---------------------------------------------------------------------------------

# 27.007, 8.5: 0 -113 dBm or less, 1 -111 dBm, 2..30 -109..-53 dBm, 31 -51 dBm or greater
@pytest.mark.parametrize(("rssi", "dbm"), [(0, -113), (1, -111), (2, -109), (10, -93), (20, -73),
                                           (30, -53), (31, -51)])
def test_rssi_to_dbm_follows_the_27007_table(rssi: int, dbm: int) -> None:
    assert signal.rssi_to_dbm(rssi) == dbm


@pytest.mark.parametrize("rssi", [99, 199, 32, 98, -1, 192, 1000])
def test_unknown_or_out_of_range_rssi_is_no_signal(rssi: int) -> None:
    assert signal.rssi_to_dbm(rssi) is None
    assert signal.bars(signal.rssi_to_dbm(rssi)) == 0


def test_tdscdma_range_in_one_db_steps() -> None:
    # 27.007, 8.5: 100 is -116 dBm or less, 101 -115 dBm, ..., 191 -25 dBm or greater
    assert [signal.rssi_to_dbm(r) for r in (100, 101, 190, 191)] == [-116, -115, -26, -25]


# the vendors' CSQ bands: 0-1 none, 2-9 marginal, 10-14 OK, 15-19 good, 20-31 excellent
@pytest.mark.parametrize(("rssi", "expected"), [(0, 0), (1, 0), (2, 1), (5, 1), (6, 2), (9, 2), (10, 3),
                                                (14, 3), (15, 4), (19, 4), (20, 5), (31, 5)])
def test_bars_at_the_band_edges(rssi: int, expected: int) -> None:
    assert signal.bars(signal.rssi_to_dbm(rssi)) == expected


@given(st.integers(-200, 0), st.integers(-200, 0))
def test_bars_never_drop_when_the_signal_gets_stronger(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert 0 <= signal.bars(low) <= signal.bars(high) <= signal.MAX_BARS


@pytest.mark.parametrize(("act", "name"), [(0, "2G"), (3, "2G"), (2, "3G"), (6, "3G"), (7, "4G"), (9, "4G"),
                                           (None, None), (12, None), (-1, None)])
def test_technology_from_act(act: int | None, name: str | None) -> None:
    assert signal.technology(act) == name


# --- answers and URCs ----------------------------------------------------------------------

def test_csq() -> None:
    assert parse_csq("+CSQ: 20,99") == (20, 99)
    assert parse_csq("+CSQ:31,0") == (31, 0)


@pytest.mark.parametrize("line", ["+CSQ: ", "+CSQ: x,99", "+CSQ: 20", "+CREG: 0,1", "+CSQ: 20,-"])
def test_csq_that_cannot_be_read(line: str) -> None:
    with pytest.raises(ModemResponseError):
        parse_csq(line)


@pytest.mark.parametrize(("line", "stat", "act", "state"), [
    # read command answers: <n>,<stat>[,<lac|tac>,<ci>[,<AcT>]]
    ("+CREG: 0,1", 1, None, "home"),
    ("+CREG: 2,5,\"00C3\",\"0000B1F1\",2", 5, 2, "roaming"),
    ("+CEREG: 2,1,\"1A2B\",\"01A2B3C\",7", 1, 7, "home"),
    ("+CEREG: 2,3", 3, None, "denied"),
    ("+CEREG: 0,2", 2, None, "searching"),
    ("+CEREG: 0,0", 0, None, "not_registered"),
    ("+CEREG: 0,4", 4, None, "not_registered"),
    ("+CGREG: 0,1", 1, None, "home"),
    # URCs: <stat>[,<lac|tac>,<ci>[,<AcT>]]
    ("+CREG: 1", 1, None, "home"),
    ("+CEREG: 5", 5, None, "roaming"),
    ("+CEREG: 3", 3, None, "denied"),
    ("+CEREG: 1,\"1A2B\",\"01A2B3C\",7", 1, 7, "home"),
    ("+CREG: 5,\"00C3\",\"0000B1F1\",0", 5, 0, "roaming"),
    ("+CEREG: 2,,,", 2, None, "searching"),
])
def test_registration_answers_and_urcs(line: str, stat: int, act: int | None, state: str) -> None:
    registration = parse_registration(line)
    assert (registration.stat, registration.act, registration.state) == (stat, act, state)


@pytest.mark.parametrize("line", ["+CREG:", "+CREG: x", "+COPS: 0,1", "+CEREG: 2,\"1A2B", "CEREG: 1"])
def test_registration_that_cannot_be_read(line: str) -> None:
    with pytest.raises(ModemResponseError):
        parse_registration(line)


def test_the_best_registration_wins() -> None:
    lte_denied, umts_home = Registration(3, 7), Registration(1, 2)
    assert best_registration([lte_denied, umts_home]) == umts_home
    assert best_registration([Registration(0), Registration(2)]) == Registration(2)
    assert best_registration([Registration(0), Registration(3)]) == Registration(3)
    assert best_registration([Registration(5), Registration(1)]) == Registration(1)
    assert best_registration([]) is None


def test_cops() -> None:
    operator = parse_cops('+COPS: 0,0,"Orange F",7')
    assert (operator.name, operator.act) == ("Orange F", 7)
    assert parse_cops('+COPS: 0,2,"20801",2').name == "20801"
    assert parse_cops('+COPS: 1,0,"A, B & C"').act is None
    assert parse_cops('+COPS: 1,0,"A, B & C"').name == "A, B & C"
    assert (parse_cops("+COPS: 0").name, parse_cops("+COPS: 0").act) == (None, None)


def test_fields_and_quotes() -> None:
    fields = split_fields(' "recv",3')
    assert [(f.value, f.quoted) for f in fields] == [("recv", True), ("3", False)]
    assert [f.value for f in split_fields("1,,2")] == ["1", "", "2"]
    assert int_fields("+QIOPEN: 0,566", "+QIOPEN:", 2) == [0, 566]
    with pytest.raises(ModemResponseError):
        split_fields('"open')
    with pytest.raises(ModemResponseError):
        split_fields('"a"b,1')


@given(st.text(max_size=60))
def test_parsers_raise_their_own_error_or_parse(text: str) -> None:
    for parse, prefix in ((parse_csq, "+CSQ: "), (parse_registration, "+CEREG: "),
                          (parse_registration, "+CREG:"), (parse_cops, "+COPS: ")):
        with contextlib.suppress(ModemResponseError):
            parse(prefix + text)  # type: ignore[operator]
    with contextlib.suppress(ModemResponseError):
        split_fields(text)


# --- what may go into a command line ---------------------------------------------------------

@pytest.mark.parametrize("pin", ["1234", "0000", "12345678"])
def test_pins_the_sim_takes(pin: str) -> None:
    check_pin(pin)


@pytest.mark.parametrize("pin", ["123", "123456789", "12a4", "", "１２３４", '12"4'])
def test_pins_refused_without_showing_them(pin: str) -> None:
    with pytest.raises(ModemConfigError) as caught:
        check_pin(pin)
    assert pin == "" or pin not in str(caught.value)


@pytest.mark.parametrize("value", ['in"ternet', "a\r\nAT+CFUN=0", "back\\slash", "é", "x" * 101])
def test_at_strings_that_could_break_the_command_line(value: str) -> None:
    with pytest.raises(ModemConfigError):
        check_at_string(value, "APN")


def test_a_refused_password_is_not_in_the_message() -> None:
    with pytest.raises(ModemConfigError) as caught:
        check_at_string('s3cr"et', "APN password", secret=True)
    assert "s3cr" not in str(caught.value)


def test_kept_credentials_do_not_show_the_pin_or_password() -> None:
    shown = repr(Credentials("9876", "apn.test", "user", "pa55word"))
    assert "apn.test" in shown and "9876" not in shown and "pa55word" not in shown


def test_socket_errors_are_stream_errors() -> None:
    # the acquirer link drops the connection on any StreamError, and counts ConnectError as "no link"
    assert issubclass(ModemSocketError, StreamError)
    assert issubclass(SocketOpenError, ConnectError) and issubclass(SocketOpenError, ModemSocketError)


# --- ModemSocket over a scripted driver --------------------------------------------------------

class ScriptedDriver:
    """What a module holds for one connection: bytes received and not yet read, bytes sent."""

    def __init__(self, *, reports_rest: bool = False) -> None:
        # Quectel's AT+QIRD says nothing of what is left (read until empty); SIMCom's
        # AT+CIPRXGET=2 gives <rest_len>
        self.reports_rest = reports_rest
        self.held = bytearray()
        self.sent: list[bytes] = []
        self.reads: list[int] = []
        self.closed: list[int] = []
        self.fail_reads: deque[ModemSocketError] = deque()
        self.on_read: object = None

    def arrive(self, sock: ModemSocket, data: bytes) -> None:
        self.held += data
        sock.data_waiting()

    async def socket_send(self, socket_id: int, data: bytes) -> None:
        self.sent.append(data)

    async def socket_read(self, socket_id: int, size: int) -> tuple[bytes, bool]:
        self.reads.append(size)
        if self.fail_reads:
            raise self.fail_reads.popleft()
        data = bytes(self.held[:size])
        del self.held[:size]
        more = bool(self.held) if self.reports_rest else bool(data)
        if callable(self.on_read):
            self.on_read()  # something the module says while the read command runs
        return data, more

    async def socket_close(self, socket_id: int) -> None:
        self.closed.append(socket_id)


def _socket(driver: ScriptedDriver, *, max_send: int = 4, max_read: int = 5) -> ModemSocket:
    return ModemSocket(driver, 3, max_send=max_send, max_read=max_read, peer="host:1")


def test_read_waits_for_the_receive_urc_then_reads_until_empty() -> None:
    async def scenario() -> None:
        driver = ScriptedDriver()
        sock = _socket(driver)
        reader = asyncio.ensure_future(sock.read(100))
        await asyncio.sleep(0.01)
        assert not reader.done() and driver.reads == []  # nothing is asked before the URC
        driver.arrive(sock, b"hello world")
        assert await reader == b"hello"  # one read command of max_read bytes
        assert await sock.read(3) == b" wo"
        assert await sock.read(100) == b"rl"
        assert await sock.read(100) == b"d"
        # the module said nothing more: the next read waits again after the empty read
        waiting = asyncio.ensure_future(sock.read(10))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        assert driver.reads == [5, 5, 5, 5]
        driver.arrive(sock, b"!")
        assert await waiting == b"!"
    asyncio.run(scenario())


def test_writes_go_in_chunks_the_module_takes() -> None:
    async def scenario() -> None:
        driver = ScriptedDriver()
        sock = _socket(driver, max_send=4)
        await sock.write(b"0123456789")
        assert driver.sent == [b"0123", b"4567", b"89"]
        await sock.write(b"")
        assert len(driver.sent) == 3
    asyncio.run(scenario())


def test_peer_close_gives_the_bytes_held_then_end_of_stream() -> None:
    async def scenario() -> None:
        driver = ScriptedDriver()
        sock = _socket(driver)
        driver.held += b"last words"
        sock.peer_closed(drain=True)
        received = b""
        while chunk := await sock.read(100):
            received += chunk
        assert received == b"last words"
        assert await sock.read(1) == b""
        with pytest.raises(ModemSocketError):
            await sock.write(b"more")
        await sock.close()
        await sock.close()
        assert driver.closed == [3]
    asyncio.run(scenario())


def test_peer_close_wakes_a_waiting_reader_with_end_of_stream() -> None:
    async def scenario() -> None:
        driver = ScriptedDriver()
        sock = _socket(driver)
        reader = asyncio.ensure_future(sock.read(10))
        await asyncio.sleep(0.01)
        driver.fail_reads.append(ModemSocketError("no such connection"))
        sock.peer_closed(drain=True)
        assert await reader == b""  # a read refused after the close is the end, not an error
    asyncio.run(scenario())


def test_a_read_refused_while_open_is_an_error() -> None:
    async def scenario() -> None:
        driver = ScriptedDriver()
        sock = _socket(driver)
        driver.fail_reads.append(ModemSocketError("AT+QIRD refused", code=567))
        sock.data_waiting()
        with pytest.raises(ModemSocketError) as caught:
            await sock.read(10)
        assert caught.value.code == 567
    asyncio.run(scenario())


def test_a_lost_socket_fails_its_reader_and_is_not_closed_on_the_module() -> None:
    async def scenario() -> None:
        driver = ScriptedDriver()
        sock = _socket(driver)
        reader = asyncio.ensure_future(sock.read(10))
        await asyncio.sleep(0.01)
        sock.lost("the module restarted")
        with pytest.raises(ModemSocketError, match="restarted"):
            await reader
        with pytest.raises(ModemSocketError):
            await sock.write(b"x")
        await sock.close()
        assert driver.closed == []  # the id may already be another connection's
    asyncio.run(scenario())


def test_a_urc_during_a_read_is_not_forgotten() -> None:
    async def scenario() -> None:
        driver = ScriptedDriver(reports_rest=True)
        sock = _socket(driver, max_read=4)
        driver.held += b"abcd"

        def more_arrives() -> None:
            driver.on_read = None
            driver.arrive(sock, b"ef")

        driver.on_read = more_arrives
        sock.data_waiting()
        # the read empties the module ("rest 0"), then its URC for the next bytes comes
        received = await sock.read(10) + await asyncio.wait_for(sock.read(10), 1.0)
        assert received == b"abcdef"
        assert driver.reads == [4, 4]
    asyncio.run(scenario())


def test_use_after_close() -> None:
    async def scenario() -> None:
        sock = _socket(ScriptedDriver())
        await sock.close()
        with pytest.raises(ModemSocketError):
            await sock.read(1)
        with pytest.raises(ModemSocketError):
            await sock.write(b"x")
        with pytest.raises(ModemSocketError):
            await _socket(ScriptedDriver()).read(0)
    asyncio.run(scenario())
