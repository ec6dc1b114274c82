"""The simulated radio measurably applies its conditions: one-way delay RTT/2 each way, a socket
open costs one RTT plus the module's delay, bandwidth is a serialisation delay (bytes * 8 /
bandwidth) in both directions, changes apply in the middle of a transfer, and the bytes on air
are counted per socket. Times are measured on the terminal's side of the pty."""

from __future__ import annotations

import time

import pytest
from test_modem_sim_support import (
    OK,
    Terminal,
    echo,
    pattern,
    peer,
    quectel_online,
    running,
    simcom_online,
    sink,
    source,
)

from sim.modem import ConditionsError, ModemSimulator, NetworkConditions

SIZE = 48_000  # 48 kB at 384 kbit/s: 48000 * 8 / 384000 = 1.0 s


def _send(term: Terminal, data: bytes) -> None:
    term.send(f"AT+QISEND=0,{len(data)}\r")
    term.expect(b"\r\n> ")
    term.send(data)
    term.expect(b"\r\nSEND OK\r\n")


def _read_all(term: Terminal, size: int, timeout: float = 10.0) -> bytes:
    """AT+QIRD until `size` bytes have come (polling while the buffer is empty)."""
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < size:
        assert time.monotonic() < deadline, f"only {len(got)} of {size} bytes"
        term.send("AT+QIRD=0,1500\r")
        _, data = term.read_block(b"+QIRD: ")
        got += data
        if not data:
            time.sleep(0.01)
    return bytes(got)


def test_quectel_open_and_round_trip_take_the_rtt() -> None:
    conditions = NetworkConditions(rtt_ms=150, open_delay_ms=20)
    with peer(echo) as server, running(conditions=conditions, echo=False) as (_sim, term):
        term.exchange("AT+QIACT=1", OK, timeout=2)
        started = time.monotonic()
        term.send(f'AT+QIOPEN=1,0,"TCP","127.0.0.1",{server.port},0,0\r')
        term.expect(OK + b"\r\n+QIOPEN: 0,0\r\n")
        assert 0.170 <= time.monotonic() - started < 0.45  # handshake RTT + module delay
        term.send("AT+QISEND=0,4\r")
        term.expect(b"\r\n> ")
        started = time.monotonic()
        term.send(b"ping")
        term.expect(b"\r\nSEND OK\r\n")
        term.expect(b'\r\n+QIURC: "recv",0\r\n')
        assert 0.150 <= time.monotonic() - started < 0.400


def test_simcom_round_trip_takes_the_rtt() -> None:
    with peer(echo) as server, running("simcom", conditions=NetworkConditions(rtt_ms=150)) as (_sim, term):
        simcom_online(term, server.port)
        term.send("AT+CIPSEND=0,4\r")
        term.expect(b"\r\n> ")
        started = time.monotonic()
        term.send(b"ping")
        term.expect(OK + b"\r\n+CIPSEND: 0,4,4\r\n")
        term.expect(b"\r\n+CIPRXGET: 1,0\r\n")
        assert 0.150 <= time.monotonic() - started < 0.400


def test_downlink_bandwidth_is_a_serialisation_delay() -> None:
    conditions = NetworkConditions(bandwidth_kbit=384)
    with peer(source(SIZE)) as server, running(conditions=conditions) as (sim, term):
        quectel_online(term, server.port)
        started = time.monotonic()
        _send(term, b"G")
        data = _read_all(term, SIZE)
        elapsed = time.monotonic() - started
        assert data == pattern(SIZE)
        assert 0.95 <= elapsed < 1.5, elapsed
        [traffic] = sim.traffic()
        assert (traffic.up_bytes, traffic.down_bytes, traffic.unread) == (1, SIZE, 0)
        status = sim.status()
        assert (status.up_bytes, status.down_bytes) == (1, SIZE)


def test_uplink_bandwidth_and_a_full_send_buffer() -> None:
    conditions = NetworkConditions(bandwidth_kbit=384)
    data = pattern(SIZE)
    with peer(sink) as server, running(conditions=conditions, send_buffer=16 * 1024) as (sim, term):
        quectel_online(term, server.port)
        started = time.monotonic()
        failed = 0
        offset = 0
        while offset < SIZE:
            chunk = data[offset:offset + 1460]
            term.send(f"AT+QISEND=0,{len(chunk)}\r")
            term.expect(b"\r\n> ")
            term.send(chunk)
            answer = term.read_until(b"\r\n", 5) + term.read_until(b"\r\n", 5)
            if answer == b"\r\nSEND FAIL\r\n":
                failed += 1
                time.sleep(0.02)
                continue
            assert answer == b"\r\nSEND OK\r\n", answer
            offset += len(chunk)
        deadline = time.monotonic() + 5
        while len(server.received) < SIZE and time.monotonic() < deadline:
            time.sleep(0.005)
        elapsed = server.arrivals[-1][0] - started
        assert bytes(server.received) == data
        assert 0.95 <= elapsed < 1.5, elapsed
        assert failed > 0  # 16 kB of unacknowledged data is all the module takes
        term.exchange("AT+QISEND=0,0", f"\r\n+QISEND: {SIZE},{SIZE},0\r\n".encode() + OK)
        [traffic] = sim.traffic()
        assert traffic.up_bytes == SIZE


def test_a_bandwidth_change_applies_in_the_middle_of_a_transfer() -> None:
    conditions = NetworkConditions(bandwidth_kbit=384)
    with peer(source(SIZE)) as server, running(conditions=conditions) as (sim, term):
        quectel_online(term, server.port)
        started = time.monotonic()
        _send(term, b"G")
        time.sleep(0.3)
        sim.set_bandwidth(None)
        data = _read_all(term, SIZE)
        assert data == pattern(SIZE)
        assert 0.3 <= time.monotonic() - started < 0.7


def test_an_rtt_change_applies_to_the_next_packet() -> None:
    with peer(echo) as server, running(echo=False) as (sim, term):
        term.exchange("AT+QIACT=1", OK)
        quectel_online(term, server.port, first=False)
        for rtt in (300, 0):
            sim.set_rtt(rtt)
            term.send("AT+QISEND=0,4\r")
            term.expect(b"\r\n> ")
            started = time.monotonic()
            term.send(b"ping")
            term.expect(b"\r\nSEND OK\r\n")
            term.expect(b'\r\n+QIURC: "recv",0\r\n')
            elapsed = time.monotonic() - started
            assert rtt / 1000 <= elapsed < rtt / 1000 + 0.15, (rtt, elapsed)
            term.send("AT+QIRD=0\r")
            assert term.read_block(b"+QIRD: ")[1] == b"ping"


def test_slow_module_holds_every_answer() -> None:
    with running(echo=False) as (sim, term):
        sim.set_slow(250)
        started = time.monotonic()
        term.exchange("AT", OK)
        assert 0.25 <= time.monotonic() - started < 0.5
        sim.set_slow(0)
        started = time.monotonic()
        term.exchange("AT", OK)
        assert time.monotonic() - started < 0.1


@pytest.mark.parametrize("changes", [
    {"rtt_ms": -1}, {"rtt_ms": float("nan")}, {"bandwidth_kbit": 0}, {"bandwidth_kbit": -5},
    {"signal_dbm": 3}, {"signal_dbm": -75.5}, {"registration": "mars"}, {"technology": "5G"},
    {"answer_delay_ms": 10**9}, {"plmn": "0010"}, {"operator": 'say "hi"'},
])
def test_conditions_out_of_range_are_refused_and_change_nothing(changes: dict[str, object]) -> None:
    with pytest.raises(ConditionsError):
        NetworkConditions(**changes)  # type: ignore[arg-type]
    sim = ModemSimulator()
    with pytest.raises(ConditionsError):
        sim.set_conditions(**changes)
    assert sim.conditions == NetworkConditions()
