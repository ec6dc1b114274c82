"""The modem's serial port (modem/serial_port.py) on a real pty: the test holds the master end
and plays the modem with plain `os.read`/`os.write`."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from modem.serial_port import SerialPortError, SerialStream, open_serial

TIMEOUT = 10.0
MODEM = Path(__file__).resolve().parent.parent / "modem"


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(TIMEOUT):
            return await coroutine
    return asyncio.run(bounded())


@contextlib.contextmanager
def pty_pair() -> Iterator[tuple[int, str]]:
    """A pty: the master fd (non-blocking) for the test, the slave's path for the code under test."""
    master, slave = os.openpty()
    os.set_blocking(master, False)
    path = os.ttyname(slave)
    try:
        yield master, path
    finally:
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)


async def master_read(master: int, n: int) -> bytes:
    """Exactly `n` bytes from the master end."""
    loop = asyncio.get_running_loop()
    got = bytearray()
    while len(got) < n:
        try:
            got += os.read(master, n - len(got))
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_reader(master, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_reader(master)
    return bytes(got)


async def stream_read(stream: SerialStream, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = await stream.read(n - len(got))
        assert chunk, "end of stream before all bytes arrived"
        got += chunk
    return bytes(got)


EVERY_BYTE = bytes(range(256)) * 2  # CR, LF, XON/XOFF, NUL, 0xFF: the port must be raw


def test_round_trip_of_every_byte_value() -> None:
    async def scenario() -> None:
        with pty_pair() as (master, path):
            stream = await open_serial(path)
            try:
                await stream.write(EVERY_BYTE)
                assert await master_read(master, len(EVERY_BYTE)) == EVERY_BYTE
                os.write(master, EVERY_BYTE)
                assert await stream_read(stream, len(EVERY_BYTE)) == EVERY_BYTE
            finally:
                await stream.close()
    run(scenario())


def test_a_write_larger_than_the_tty_buffer_waits_for_the_peer_and_arrives_whole() -> None:
    payload = os.urandom(1 << 20)

    async def scenario() -> None:
        with pty_pair() as (master, path):
            stream = await open_serial(path)
            try:
                writing = asyncio.create_task(stream.write(payload))
                await asyncio.sleep(0.1)
                assert not writing.done()  # blocked on a full tty buffer, not busy-looping
                received = await master_read(master, len(payload))
                await writing
                assert received == payload
            finally:
                await stream.close()
    run(scenario())


def test_reads_give_what_is_there_without_waiting_for_more() -> None:
    async def scenario() -> None:
        with pty_pair() as (master, path):
            stream = await open_serial(path)
            try:
                os.write(master, b"\r\nOK\r\n")
                assert await stream_read(stream, 6) == b"\r\nOK\r\n"
                later = asyncio.create_task(stream.read(100))
                await asyncio.sleep(0.05)
                assert not later.done()
                os.write(master, b"> ")
                assert await later == b"> "
            finally:
                await stream.close()
    run(scenario())


def test_hang_up_of_the_other_end_is_end_of_stream() -> None:
    async def scenario() -> None:
        with pty_pair() as (master, path):
            stream = await open_serial(path)
            try:
                os.write(master, b"RDY\r\n")
                assert await stream_read(stream, 5) == b"RDY\r\n"
                pending = asyncio.create_task(stream.read(10))
                await asyncio.sleep(0.05)
                os.close(master)
                assert await pending == b""
                assert await stream.read(10) == b""
                with pytest.raises(SerialPortError):
                    await stream.write(b"AT\r")
            finally:
                await stream.close()
    run(scenario())


def test_close_ends_a_waiting_read_and_refuses_writes() -> None:
    async def scenario() -> None:
        with pty_pair() as (_master, path):
            stream = await open_serial(path)
            pending = asyncio.create_task(stream.read(10))
            await asyncio.sleep(0.05)
            await stream.close()
            assert await pending == b""
            assert stream.closed
            assert await stream.read(10) == b""
            with pytest.raises(SerialPortError):
                await stream.write(b"AT\r")
            await stream.close()
            # the device is free again
            again = await open_serial(path)
            await again.close()
    run(scenario())


def test_close_ends_a_write_blocked_on_a_full_buffer() -> None:
    async def scenario() -> None:
        with pty_pair() as (_master, path):
            stream = await open_serial(path)
            writing = asyncio.create_task(stream.write(bytes(1 << 20)))
            await asyncio.sleep(0.05)
            assert not writing.done()
            await stream.close()
            with pytest.raises(SerialPortError):
                await writing
    run(scenario())


def test_one_read_at_a_time() -> None:
    async def scenario() -> None:
        with pty_pair() as (_master, path):
            stream = await open_serial(path)
            try:
                first = asyncio.create_task(stream.read(10))
                await asyncio.sleep(0.01)
                with pytest.raises(SerialPortError):
                    await stream.read(10)
                with pytest.raises(SerialPortError):
                    await stream.read(0)
            finally:
                await stream.close()
            assert await first == b""
    run(scenario())


def test_missing_device(tmp_path: Path) -> None:
    with pytest.raises(SerialPortError, match="cannot open"):
        run(open_serial(str(tmp_path / "ttyUSB9")))


def test_a_file_that_is_not_a_tty(tmp_path: Path) -> None:
    plain = tmp_path / "not-a-tty"
    plain.write_bytes(b"")
    with pytest.raises(SerialPortError):
        run(open_serial(str(plain)))


def test_bad_baud_rate() -> None:
    with pty_pair() as (_master, path), pytest.raises(SerialPortError):
        run(open_serial(path, baudrate=-1))


def test_a_port_already_open_is_refused() -> None:
    async def scenario() -> None:
        with pty_pair() as (_master, path):
            stream = await open_serial(path)
            try:
                with pytest.raises(SerialPortError):
                    await open_serial(path)
            finally:
                await stream.close()
    run(scenario())


def test_pyserial_only_in_the_port_adapter() -> None:
    # ARCHITECTURE, layout: modem/ may import pyserial only in the port adapter.
    offenders = []
    for path in sorted(MODEM.rglob("*.py")):
        if path.name == "serial_port.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "serial"]
    assert offenders == []
