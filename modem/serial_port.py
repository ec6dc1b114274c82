"""The modem's serial port as an asyncio byte stream: the only module of `modem/` that imports
pyserial (ARCHITECTURE, layout).

pyserial opens the device and sets it raw (no echo, no CR/LF translation, no XON/XOFF) at the
given rate; the bytes then move with `os.read`/`os.write` on its non-blocking descriptor, woken
by the event loop's `add_reader`/`add_writer`, so no thread is needed and an idle port costs
nothing. It works the same on a USB modem's /dev/ttyUSBn and on a pty.

The stream has the shape of `firmware.tls_stream.ByteStream`: `read` returns b"" once the device
hung up (a pty whose other end closed, a USB modem unplugged) or the stream was closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Callable
from typing import Any

import serial

log = logging.getLogger(__name__)

# The errors of a device that went away: Linux gives EIO on a hung-up tty, ENXIO/ENODEV on a
# removed USB serial device.
_HANGUP = frozenset({errno.EIO, errno.ENXIO, errno.ENODEV})


class SerialPortError(Exception):
    """The serial port could not be opened, or failed while writing or reading."""


class SerialStream:
    """A raw, non-blocking serial port. One read at a time; writes are queued in order."""

    def __init__(self, port: serial.Serial, path: str) -> None:
        self._port = port
        self._fd: int = port.fileno()
        self._path = path
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._hung_up = False
        self._reading = False
        self._write_lock = asyncio.Lock()
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def path(self) -> str:
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    async def read(self, n: int) -> bytes:
        """Up to `n` bytes, at least one; b"" once the device hung up or the stream is closed."""
        if n < 1:
            raise SerialPortError(f"cannot read {n} bytes")
        if self._reading:
            raise SerialPortError(f"{self._path}: another read is already waiting")
        self._reading = True
        woken = False
        try:
            while not self._closed and not self._hung_up:
                try:
                    data = os.read(self._fd, n)
                except BlockingIOError:
                    data = b""
                except OSError as exc:
                    if exc.errno in _HANGUP:
                        self._hung_up = True
                        log.debug("%s hung up (%s)", self._path, errno.errorcode.get(exc.errno or 0))
                        break
                    raise SerialPortError(f"{self._path}: read failed: {exc.strerror}") from exc
                if data:
                    return data
                if woken:
                    # pyserial leaves VMIN = VTIME = 0: an idle tty reads as b"", so only
                    # "readable, yet nothing" is a device gone (as pyserial itself decides).
                    self._hung_up = True
                    log.debug("%s hung up (readable without data)", self._path)
                    break
                await self._wait(self._loop.add_reader, self._loop.remove_reader)
                woken = True
            return b""
        finally:
            self._reading = False

    async def write(self, data: bytes) -> None:
        """All of `data`, in order, across partial writes."""
        async with self._write_lock:
            view = memoryview(data)
            while view:
                if self._closed:
                    raise SerialPortError(f"{self._path} is closed")
                try:
                    written = os.write(self._fd, view)
                except BlockingIOError:
                    await self._wait(self._loop.add_writer, self._loop.remove_writer)
                    continue
                except OSError as exc:
                    if exc.errno in _HANGUP:
                        self._hung_up = True
                    raise SerialPortError(f"{self._path}: write failed: {exc.strerror}") from exc
                view = view[written:]

    async def close(self) -> None:
        """Stop waiting reads (they return b"") and writes (they raise), then close the device."""
        if self._closed:
            return
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        try:
            self._port.close()
        except (serial.SerialException, OSError) as exc:
            log.debug("%s: close failed: %s", self._path, exc)

    async def _wait(self, add: Callable[..., Any], remove: Callable[[int], Any]) -> None:
        """Until the descriptor is ready (or the stream is closed)."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.add(waiter)
        add(self._fd, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)
            if not self._closed:
                remove(self._fd)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "hung up" if self._hung_up else "open"
        return f"SerialStream({self._path!r}, {state})"


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def open_serial(path: str, baudrate: int = 115200) -> SerialStream:
    """Open the serial device at `path` raw at `baudrate` (8N1, no flow control), exclusively
    (no second opener through pyserial's lock). `SerialPortError` if it cannot be opened."""
    try:
        port = serial.Serial(path, baudrate, timeout=0, write_timeout=0, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SerialPortError(f"cannot open {path}: {exc}") from exc
    log.debug("opened %s at %d baud", path, baudrate)
    return SerialStream(port, path)
