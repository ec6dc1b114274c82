"""Helpers of the modem simulator tests: the terminal side of the pty with plain os.read/os.write,
and TCP peers on loopback written with the standard library only (no code of the simulator)."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sim.modem import ModemSimulator

TIMEOUT = 5.0
OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
# Binary data that looks like AT traffic: a simulator that parses it instead of counting it breaks.
NASTY = (b'\r\nOK\r\n+QIURC: "recv",0\r\n> \r\nERROR\r\n+CIPRXGET: 1,0\r\nSEND OK\r\n\x00\xff\x1a\x1b'
         + bytes(range(256)) + b"AT+QICLOSE=0\r")


class Terminal:
    """The terminal's end of the pty: writes bytes, reads exactly what is asked for."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._buffer = bytearray()

    def close(self) -> None:
        os.close(self.fd)

    def send(self, data: bytes | str) -> None:
        view = memoryview(data.encode() if isinstance(data, str) else data)
        while view:
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], TIMEOUT)
                continue
            view = view[written:]

    def _fill(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([self.fd], [], [], left)
        if ready:
            with suppress(BlockingIOError):
                self._buffer += os.read(self.fd, 65536)
        return True

    def read_exact(self, size: int, timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self._buffer) < size:
            if not self._fill(deadline):
                raise AssertionError(f"wanted {size} bytes, got {bytes(self._buffer)!r}")
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read_until(self, marker: bytes, timeout: float = TIMEOUT) -> bytes:
        """Everything up to and including `marker`."""
        deadline = time.monotonic() + timeout
        while (index := self._buffer.find(marker)) < 0:
            if not self._fill(deadline):
                raise AssertionError(f"no {marker!r} in {bytes(self._buffer)!r}")
        data = bytes(self._buffer[:index + len(marker)])
        del self._buffer[:index + len(marker)]
        return data

    def expect(self, expected: bytes, timeout: float = TIMEOUT) -> None:
        got = self.read_exact(len(expected), timeout)
        assert got == expected, f"expected {expected!r}, got {got!r}"

    def quiet(self, seconds: float = 0.2) -> bytes:
        """What arrives within `seconds` (and was left over)."""
        deadline = time.monotonic() + seconds
        while self._fill(deadline):
            pass
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def exchange(self, line: str, expected: bytes, timeout: float = TIMEOUT) -> None:
        """Send a command line, check the exact answer, and that nothing else follows."""
        self.send(line + "\r")
        self.expect(expected, timeout)
        assert self.quiet(0.05) == b""

    def command(self, line: str, timeout: float = TIMEOUT) -> bytes:
        """Send a command line; its answer up to OK or an error final (URCs before it included)."""
        self.send(line + "\r")
        deadline = time.monotonic() + timeout
        while True:
            for final in (b"\r\nOK\r\n", b"ERROR\r\n", b"SEND OK\r\n", b"SEND FAIL\r\n"):
                index = self._buffer.find(final)
                if index >= 0:
                    data = bytes(self._buffer[:index + len(final)])
                    del self._buffer[:index + len(final)]
                    return data
            if not self._fill(deadline):
                raise AssertionError(f"no final answer to {line!r}: {bytes(self._buffer)!r}")

    def read_block(self, header: bytes, timeout: float = TIMEOUT) -> tuple[bytes, bytes]:
        """After a read command: skip to `header`, take the rest of its line (its fields) and the
        length-prefixed data that follows; check the CR LF and OK after it. The length is the
        first field (+QIRD: <n>) or the third (+CIPRXGET: 2,<id>,<n>,<rest>)."""
        self.read_until(header, timeout)
        fields = self.read_until(b"\r\n", timeout)[:-2]
        numbers = [int(value) for value in fields.split(b",")]
        size = numbers[0] if header.startswith(b"+QIRD") else numbers[1]
        if size == 0:  # "+QIRD: 0" is a line like any other
            self.expect(OK, timeout)
            return fields, b""
        data = self.read_exact(size, timeout)
        self.expect(b"\r\n" + OK, timeout)
        return fields, data


@contextmanager
def running(dialect: str = "quectel", **options: Any) -> Iterator[tuple[ModemSimulator, Terminal]]:
    """A simulator in its own thread and the terminal's end of its pty."""
    sim = ModemSimulator(dialect, **options)
    path = sim.start()
    terminal = Terminal(path)
    try:
        yield sim, terminal
    finally:
        terminal.close()
        sim.stop()


class Peer:
    """A TCP server on loopback; `handler(connection, peer)` serves each connection in a thread."""

    def __init__(self, handler: Callable[[socket.socket, Peer], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.handler = handler
        self.connections: list[socket.socket] = []
        self.received = bytearray()
        self.arrivals: list[tuple[float, int]] = []  # (monotonic time, bytes received so far)
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            self.handler(connection, self)
        except OSError:
            pass
        finally:
            self.ended.set()

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


def echo(connection: socket.socket, peer: Peer) -> None:
    while data := connection.recv(65536):
        peer.received += data
        connection.sendall(data)


def sink(connection: socket.socket, peer: Peer) -> None:
    while data := connection.recv(65536):
        peer.received += data
        peer.arrivals.append((time.monotonic(), len(peer.received)))


def source(size: int) -> Callable[[socket.socket, Peer], None]:
    """On each byte received, send `size` bytes of a known pattern."""
    def serve(connection: socket.socket, peer: Peer) -> None:
        while data := connection.recv(1):
            peer.received += data
            connection.sendall(pattern(size))
    return serve


def say_and_close(text: bytes) -> Callable[[socket.socket, Peer], None]:
    def serve(connection: socket.socket, _peer: Peer) -> None:
        connection.sendall(text)
        connection.close()
    return serve


def pattern(size: int) -> bytes:
    return bytes((index * 7 + index // 251) & 0xFF for index in range(size))


@contextmanager
def peer(handler: Callable[[socket.socket, Peer], None]) -> Iterator[Peer]:
    server = Peer(handler)
    try:
        yield server
    finally:
        server.close()


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def peer_sees_end(server: Peer, timeout: float = TIMEOUT) -> bool:
    """True once the peer's connection has ended (EOF or reset)."""
    return server.ended.wait(timeout)


def quectel_online(terminal: Terminal, port: int, socket_id: int = 0, *, first: bool = True) -> None:
    """Echo off, a PDP context, and socket `socket_id` connected to `port`."""
    if first:
        terminal.exchange("ATE0", b"ATE0\r" + OK)
        terminal.exchange('AT+QICSGP=1,1,"internet","","",1', OK)
        terminal.exchange("AT+QIACT=1", OK)
    terminal.send(f'AT+QIOPEN=1,{socket_id},"TCP","127.0.0.1",{port},0,0\r')
    terminal.expect(OK + f"\r\n+QIOPEN: {socket_id},0\r\n".encode())


def simcom_online(terminal: Terminal, port: int, link: int = 0, *, first: bool = True) -> None:
    """Echo off, manual receive, the packet network open, and link `link` connected to `port`."""
    if first:
        terminal.exchange("ATE0", b"ATE0\r" + OK)
        terminal.exchange("AT+CIPRXGET=1", OK)
        terminal.send("AT+NETOPEN\r")
        terminal.expect(OK + b"\r\n+NETOPEN: 0\r\n")
    terminal.send(f'AT+CIPOPEN={link},"TCP","127.0.0.1",{port}\r')
    terminal.expect(OK + f"\r\n+CIPOPEN: {link},0\r\n".encode())
