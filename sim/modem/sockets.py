"""The simulated module's data sockets: real TCP connections carried over the simulated radio.

A `DataSocket` connects to the host given in the open command with `asyncio.open_connection`
(so TLS to `tpe sim host` runs end to end through the simulator). What the terminal sends goes
up the radio's uplink and is written to the connection when it arrives; what the peer sends is
read from the connection, comes down the radio's downlink and waits in the module's receive
buffer until the terminal reads it. Opening costs one round trip (the TCP handshake over the
air) plus the module's own delay. Bytes that crossed the air are counted per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass

from sim.modem.network import NetworkConditions, Radio

# What the module keeps of the peer's data before it stops reading the connection (TCP then
# closes its window at the peer).
RECEIVE_BUFFER = 64 * 1024
READ_CHUNK = 4096


@dataclass(frozen=True)
class SocketTraffic:
    """The payload bytes one socket carried over the air: `up` from the terminal, `down` to it;
    `unread` of them wait in the module for the terminal. `state` as `DataSocket.state`."""

    socket_id: int
    host: str
    port: int
    state: str
    up_bytes: int
    down_bytes: int
    unread: int


class DataSocket:
    """One TCP client connection of the module.

    `state`: "opening", "connected", "closing" (the peer or the network closed it; the terminal
    may still read what was received, then must close it), "closed" (the terminal closed it).
    """

    def __init__(self, socket_id: int, host: str, port: int, radio: Radio,
                 conditions: Callable[[], NetworkConditions], *, context: int = 1,
                 push: bool = False) -> None:
        self.socket_id = socket_id
        self.host = host
        self.port = port
        self.context = context
        self.push = push
        self.state = "opening"
        self.local_port = 0
        self.received = bytearray()
        self.notified = False  # a "data arrived" URC is out and the buffer not yet emptied
        self.sent_total = 0
        self.acked = 0
        self.received_total = 0
        self.read_total = 0
        self.up_bytes = 0
        self.down_bytes = 0
        self.on_data: Callable[[DataSocket], None] = lambda _sock: None
        self.on_peer_closed: Callable[[DataSocket], None] = lambda _sock: None
        self._radio = radio
        self._conditions = conditions
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._up_alive = True
        self._down_alive = True
        self._up_in_flight = 0
        self._down_in_flight = 0
        self._room = asyncio.Event()

    def __repr__(self) -> str:
        return f"DataSocket({self.socket_id}, {self.host}:{self.port}, {self.state})"

    @property
    def unacked(self) -> int:
        return self.sent_total - self.acked

    @property
    def up_in_flight(self) -> int:
        return self._up_in_flight

    def traffic(self) -> SocketTraffic:
        return SocketTraffic(self.socket_id, self.host, self.port, self.state, self.up_bytes, self.down_bytes,
                             len(self.received))

    async def connect(self, timeout: float) -> str | None:
        """Open the connection; None when connected, else why not: "dns", "refused", "timeout"
        or "aborted" (closed while opening). Takes at least one RTT plus the module's delay."""
        loop = asyncio.get_running_loop()
        conditions = self._conditions()
        ready_at = loop.time() + (conditions.rtt_ms + conditions.open_delay_ms) / 1000
        failure: str | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            failure = "timeout"
        except socket.gaierror:
            failure = "dns"
        except (OSError, UnicodeError, ValueError):
            failure = "refused"
        if loop.time() < ready_at:
            await asyncio.sleep(ready_at - loop.time())
        if failure is not None:
            return failure
        if self.state != "opening":
            writer.transport.abort()
            return "aborted"
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.local_port = writer.get_extra_info("sockname", ("", 0))[1]
        self._writer = writer
        self.state = "connected"
        self._reader_task = loop.create_task(self._read_loop(reader))
        return None

    # -- uplink ------------------------------------------------------------------------------

    def send(self, data: bytes, on_air: Callable[[], None] | None = None) -> None:
        """Hand `data` to the radio; it reaches the peer RTT/2 after it has been serialised.
        `on_air()` is called once the last of it has been serialised."""
        self.sent_total += len(data)
        self._up_in_flight += len(data)
        self._radio.uplink.submit(data, self._up_on_air, self._up_arrived)
        if on_air is not None:
            self._radio.uplink.submit(b"", lambda _size: on_air(), lambda _piece: None)

    def _up_on_air(self, size: int) -> None:
        if self._up_alive:
            self.up_bytes += size

    def _up_arrived(self, piece: bytes) -> None:
        self._up_in_flight -= len(piece)
        if not self._up_alive or self._writer is None or self._writer.is_closing():
            return
        self._writer.write(piece)
        # The peer's TCP acknowledgement takes the way back: RTT/2 more.
        delay = self._conditions().rtt_ms / 2000
        asyncio.get_running_loop().call_later(delay, self._acked, len(piece))

    def _acked(self, size: int) -> None:
        self.acked += size

    # -- downlink ----------------------------------------------------------------------------

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                while len(self.received) + self._down_in_flight >= RECEIVE_BUFFER:
                    self._room.clear()
                    await self._room.wait()
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                self._down_in_flight += len(data)
                self._radio.downlink.submit(data, self._down_on_air, self._down_arrived)
        except OSError:
            pass
        self._radio.downlink.submit(b"", self._down_on_air, self._down_ended)

    def _down_on_air(self, size: int) -> None:
        if self._down_alive:
            self.down_bytes += size

    def _down_arrived(self, piece: bytes) -> None:
        self._down_in_flight -= len(piece)
        if not self._down_alive:
            return
        self.received += piece
        self.received_total += len(piece)
        self.on_data(self)

    def _down_ended(self, _piece: bytes) -> None:
        if not self._down_alive or self.state != "connected":
            return
        self.state = "closing"
        self._up_alive = False
        if self._writer is not None:
            self._writer.close()
        self.on_peer_closed(self)

    def read(self, size: int) -> bytes:
        """Up to `size` bytes of the receive buffer."""
        data = bytes(self.received[:size])
        del self.received[:size]
        self.read_total += len(data)
        if not self.received:
            self.notified = False
        self._room.set()
        return data

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """The terminal closes the socket: what it sent still goes out, then a FIN."""
        was = self.state
        self.state = "closed"
        self._down_alive = False
        self._stop_reading()
        if was == "connected" and self._writer is not None:
            writer = self._writer
            self._radio.uplink.submit(b"", lambda _size: None, lambda _piece: writer.close())
        else:
            self.abort(final_state="closed")

    def abort(self, final_state: str = "closing") -> None:
        """The network or a restart tears the connection down: nothing in flight arrives."""
        self.state = final_state
        self._up_alive = False
        self._down_alive = False
        self._stop_reading()
        if self._writer is not None:
            self._writer.transport.abort()

    def _stop_reading(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = None
        self._room.set()
