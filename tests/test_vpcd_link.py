"""The card side of the vpcd protocol, against a loopback peer that speaks it like vpcd."""

from __future__ import annotations

import socket
import struct

import pytest

from sim.vpcd import Timing, VirtualCardLink, VpcdError


class RecordingCard:
    atr = bytes.fromhex("3B6500002063CBA000")

    def __init__(self) -> None:
        self.events: list[str] = []

    def power_on(self) -> bytes:
        self.events.append("on")
        return self.atr

    def power_off(self) -> None:
        self.events.append("off")

    def process(self, capdu: bytes) -> bytes:
        self.events.append(capdu.hex())
        return capdu[::-1] + b"\x90\x00"


def _exchange(conn: socket.socket, payload: bytes, reply: bool = True) -> bytes | None:
    conn.sendall(struct.pack(">H", len(payload)) + payload)
    if not reply:
        return None
    (n,) = struct.unpack(">H", conn.recv(2, socket.MSG_WAITALL))
    return conn.recv(n, socket.MSG_WAITALL)


@pytest.fixture
def vpcd_peer() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    yield server
    server.close()


def test_protocol_control_codes_and_apdus(vpcd_peer: socket.socket) -> None:
    card = RecordingCard()
    link = VirtualCardLink(card, port=vpcd_peer.getsockname()[1])
    link.insert()
    conn, _ = vpcd_peer.accept()
    with conn:
        assert _exchange(conn, b"\x04") == card.atr
        _exchange(conn, b"\x01", reply=False)
        assert _exchange(conn, bytes.fromhex("00B2010C00")) == bytes.fromhex("000C01B200") + b"\x90\x00"
        _exchange(conn, b"\x02", reply=False)
        _exchange(conn, b"\x00", reply=False)
        assert _exchange(conn, b"\x04") == card.atr
    link.remove()
    assert card.events[:3] == ["on", "00b2010c00", "on"]
    assert "off" in card.events
    assert link.exchanges == 1 and not link.inserted


def test_peer_closing_is_a_removal(vpcd_peer: socket.socket) -> None:
    card = RecordingCard()
    link = VirtualCardLink(card, port=vpcd_peer.getsockname()[1])
    link.insert()
    conn, _ = vpcd_peer.accept()
    conn.close()
    for _ in range(200):
        if not link.inserted:
            break
        import time
        time.sleep(0.01)
    assert not link.inserted and card.events[-1] == "off"


def test_unreachable_vpcd_is_a_typed_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(VpcdError):
        VirtualCardLink(RecordingCard(), port=port).insert(timeout=0.3)


def test_timing_follows_bit_rate_and_command_cost() -> None:
    timing = Timing(bit_rate=9600, processing_ms={0xB2: 10.0})
    read_record = bytes.fromhex("00B2010C00")
    delay = timing.delay(read_record, bytes(100) + b"\x90\x00")
    # (5 + 102 + 1 procedure byte) characters of 12 etu at 9600 bit/s, plus 10 ms
    assert delay == pytest.approx(108 * 12 / 9600 + 0.010)
    cda = timing.delay(bytes.fromhex("80AE9000"), b"\x90\x00")
    arqc = timing.delay(bytes.fromhex("80AE8000"), b"\x90\x00")
    assert cda > arqc


def test_timing_mode_sleeps_per_exchange(vpcd_peer: socket.socket) -> None:
    slept: list[float] = []
    link = VirtualCardLink(RecordingCard(), port=vpcd_peer.getsockname()[1], timing=Timing(),
                           sleep=slept.append)
    link.insert()
    conn, _ = vpcd_peer.accept()
    with conn:
        _exchange(conn, bytes.fromhex("00A4040007A0000000031010"))
    link.remove()
    assert len(slept) == 1 and slept[0] > 0.008
