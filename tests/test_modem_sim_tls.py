"""End to end through the modem simulator: the terminal's TLS (firmware.tls_stream) to the host
simulator (sim.host) over a Quectel data socket, under a slow radio, one real sale approved.

TEST KEYS: the host's test PKI and the terminal's DUKPT test key (sim/host).

The byte stream over the AT socket is written here from the Quectel manual (AT+QISEND,
AT+QIRD), independent of the `modem` package, with plain reads and writes on the pty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from test_host_sim_support import Terminal, kernel_request

from firmware import messages
from firmware.tls_stream import FramedConnection, TlsStream
from sim.host.server import HostSimulator
from sim.host.test_pki import make_test_pki
from sim.modem import ModemSimulator, NetworkConditions

TIMEOUT = 20.0


class QuectelStream:
    """A `ByteStream` over Quectel socket 0: AT+QISEND to write, AT+QIRD (polled) to read."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.buffer = bytearray()
        self.arrived = asyncio.Event()
        self.lock = asyncio.Lock()
        self.sent = self.received = 0
        self.closed = False
        asyncio.get_running_loop().add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self.buffer += os.read(self.fd, 65536)
            self.arrived.set()

    async def _until(self, *markers: bytes) -> bytes:
        """Everything up to the first of `markers` (included)."""
        while True:
            found = [(index, marker) for marker in markers if (index := self.buffer.find(marker)) >= 0]
            if found:
                index, marker = min(found)
                data = bytes(self.buffer[:index + len(marker)])
                del self.buffer[:index + len(marker)]
                return data
            self.arrived.clear()
            await self.arrived.wait()

    async def _exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.arrived.clear()
            await self.arrived.wait()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def command(self, line: str, final: bytes = b"\r\nOK\r\n") -> bytes:
        async with self.lock:
            os.write(self.fd, line.encode() + b"\r")
            return await self._until(final, b"ERROR\r\n")

    async def connect(self, host: str, port: int) -> None:
        assert (await self.command("ATE0")).endswith(b"OK\r\n")
        assert (await self.command("AT+QIACT=1")).endswith(b"OK\r\n")
        answer = await self.command(f'AT+QIOPEN=1,0,"TCP","{host}",{port},0,0', b"+QIOPEN: 0,")
        assert answer.endswith(b"+QIOPEN: 0,")
        assert await self._until(b"\r\n") == b"0\r\n"

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            chunk = bytes(view[:1460])
            async with self.lock:
                os.write(self.fd, f"AT+QISEND=0,{len(chunk)}\r".encode())
                await self._until(b"> ")
                os.write(self.fd, chunk)
                answer = await self._until(b"SEND OK\r\n", b"SEND FAIL\r\n", b"ERROR\r\n")
            if answer.endswith(b"SEND FAIL\r\n"):
                await asyncio.sleep(0.02)
                continue
            assert answer.endswith(b"SEND OK\r\n"), answer
            self.sent += len(chunk)
            view = view[len(chunk):]

    async def read(self, size: int) -> bytes:
        while not self.closed:
            async with self.lock:
                os.write(self.fd, f"AT+QIRD=0,{min(size, 1500)}\r".encode())
                skipped = await self._until(b"+QIRD: ")
                length = int((await self._until(b"\r\n"))[:-2])
                data = await self._exact(length) if length else b""
                await self._until(b"\r\nOK\r\n")
            if b'+QIURC: "closed",0' in skipped + bytes(self.buffer):
                self.closed = True
            if data:
                self.received += len(data)
                return data
            await asyncio.sleep(0.01)
        return b""

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            await self.command("AT+QICLOSE=0")
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


def test_a_sale_over_tls_through_the_simulated_modem(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    make_test_pki(pki)
    request = kernel_request("sda_only")
    conditions = NetworkConditions(rtt_ms=80, bandwidth_kbit=384)

    async def main() -> None:
        async with HostSimulator(pki) as host, ModemSimulator("quectel", conditions) as modem:
            assert modem.path is not None
            terminal = Terminal(host.pki)
            raw = QuectelStream(modem.path)
            await raw.connect("127.0.0.1", host.port)
            started = time.monotonic()
            tls = await TlsStream.connect(raw, terminal.context, "localhost", TIMEOUT)
            handshake = time.monotonic() - started
            link = FramedConnection(tls)
            _, data, keys = terminal.sale(request, pin=None)
            await link.send(data)
            answer = messages.verify_mac(await link.receive(TIMEOUT), keys.response_mac)
            assert answer["39"] == "00"
            await link.close()
            # At least one round trip for the handshake; every byte goes over the air (the
            # close_notify a moment after the close).
            assert handshake >= 0.08
            for _ in range(100):
                [traffic] = modem.traffic()
                if traffic.up_bytes == raw.sent:
                    break
                await asyncio.sleep(0.01)
            assert (traffic.up_bytes, traffic.down_bytes) == (raw.sent, raw.received + traffic.unread)
            assert raw.sent > len(data) and raw.received > 0
            [entry] = host.ledger.entries()
            assert entry.approved

    asyncio.run(asyncio.wait_for(main(), 60))
