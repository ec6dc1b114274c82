"""A TCP connection the cellular module holds, as a `firmware.tls_stream.ByteStream`.

The bytes go through AT data commands (Quectel EC2x TCP/IP AT Commands Manual: AT+QISEND,
AT+QIRD in buffer access mode; SIMCom SIM7600 TCPIP Application Note: AT+CIPSEND,
AT+CIPRXGET=2 in manual receive mode). The module tells that data waits with a URC; `ModemSocket`
then reads it into its buffer, so `read` gives what is there and waits only when nothing is.
The dialect's commands are the driver's (`SocketDriver`, implemented by `modem.module.Module`).

Every failure is a `ModemSocketError`, a `StreamError`, so the acquirer link drops the connection
as it does for TCP: TLS above sees only ciphertext in and out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from firmware.tls_stream import ConnectError, StreamError

log = logging.getLogger(__name__)


class ModemSocketError(StreamError):
    """A data socket of the module failed: a command refused (`code`, the module's error code
    when it gave one), no answer in time, closed, or lost with the data context or a restart."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason if code is None else f"{reason} (error {code})")


class SocketOpenError(ModemSocketError, ConnectError):
    """The module could not open the connection (its `+QIOPEN`/`+CIPOPEN` error in `code`)."""


class SocketDriver(Protocol):
    """The dialect's data commands for one socket id, each one AT exchange."""

    async def socket_send(self, socket_id: int, data: bytes) -> None:
        """Send `data` (at most the module's limit per command); `ModemSocketError` if refused."""
        ...

    async def socket_read(self, socket_id: int, size: int) -> tuple[bytes, bool]:
        """Up to `size` bytes the module holds for the socket, and whether more may be waiting
        (b"" when none)."""
        ...

    async def socket_close(self, socket_id: int) -> None:
        """Close the connection and free the id (the peer may have closed it already)."""
        ...


class ModemSocket:
    """One TCP connection of the module. One task may read while another writes.

    `read` gives b"" once the network has closed the connection (`+QIURC: "closed"`,
    `+IPCLOSE`) and the bytes the module still held were read. A socket lost with the data
    context or a module restart raises `ModemSocketError` instead.
    """

    def __init__(self, driver: SocketDriver, socket_id: int, *, max_send: int, max_read: int,
                 peer: str = "") -> None:
        self._driver = driver
        self.socket_id = socket_id
        self.max_send = max_send
        self.max_read = max_read
        self.peer = peer
        self._buffer = bytearray()
        self._pending = False  # the module said data waits, or a read did not empty it
        self._notices = 0  # receive URCs so far: one during a read command is not lost
        self._peer_closed = False
        self._broken: ModemSocketError | None = None
        self._closed = False
        self._wake = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()

    # --- what the driver reports from URCs ----------------------------------------------

    def data_waiting(self) -> None:
        """A receive URC came for this socket."""
        self._pending = True
        self._notices += 1
        self._wake.set()

    def peer_closed(self, *, drain: bool) -> None:
        """The network closed the connection. With `drain`, the module still gives the bytes it
        received before the close (Quectel buffer mode), read before the end of stream."""
        self._peer_closed = True
        if drain:
            self._pending = True
        self._wake.set()

    def lost(self, reason: str) -> None:
        """The socket is gone without a close (data context down, module restarted)."""
        if self._broken is None and not self._closed:
            self._broken = ModemSocketError(reason)
        self._wake.set()

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def peer_has_closed(self) -> bool:
        return self._peer_closed

    # --- ByteStream ---------------------------------------------------------------------

    async def read(self, n: int) -> bytes:
        """Up to `n` bytes, at least one; b"" once the network closed the connection."""
        if n <= 0:
            raise ModemSocketError(f"cannot read {n} bytes")
        async with self._read_lock:
            while True:
                self._wake.clear()
                if self._closed:
                    raise ModemSocketError("the socket is closed")
                if self._buffer:
                    data = bytes(self._buffer[:n])
                    del self._buffer[:n]
                    return data
                if self._broken is not None:
                    raise self._broken
                if self._pending:
                    await self._fetch()
                    continue
                if self._peer_closed:
                    return b""
                await self._wake.wait()

    async def _fetch(self) -> None:
        notices = self._notices
        try:
            data, more = await self._driver.socket_read(self.socket_id, self.max_read)
        except ModemSocketError:
            if self._peer_closed:
                # what the module held went with the connection
                self._pending = False
                return
            raise
        self._buffer += data
        # a receive URC that came while the command ran announces data after this read
        self._pending = (bool(data) and more) or self._notices != notices

    async def write(self, data: bytes) -> None:
        """All of `data`, in chunks the module takes per command."""
        async with self._write_lock:
            view = memoryview(data)
            while view:
                self._check_writable()
                chunk = bytes(view[:self.max_send])
                await self._driver.socket_send(self.socket_id, chunk)
                view = view[len(chunk):]

    def _check_writable(self) -> None:
        if self._closed:
            raise ModemSocketError("the socket is closed")
        if self._broken is not None:
            raise self._broken
        if self._peer_closed:
            raise ModemSocketError("the network closed the connection")

    async def close(self) -> None:
        """Close the connection on the module and free its id. Closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._broken is not None:
            return  # the module no longer has it; its id may already be another socket's
        try:
            await self._driver.socket_close(self.socket_id)
        except ModemSocketError as exc:
            log.info("modem socket %d: close not confirmed: %s", self.socket_id, exc)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "peer closed" if self._peer_closed else "open"
        return f"ModemSocket({self.socket_id}, {self.peer or '?'}, {state})"
