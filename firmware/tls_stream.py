"""The acquirer link's transport: TLS over any asyncio byte stream, and frames over it.

TLS runs on `ssl.MemoryBIO` buffers (`SSLContext.wrap_bio`) instead of a socket, so the same
code secures a TCP connection on the OS network and a modem's AT data socket, whose bytes come
and go through AT commands. Framing (`firmware.framing`) is apart from TLS, and both apart from
the ISO 8583 packer.

Every failure is a `StreamError`: `ConnectError`, `StreamClosed`, `StreamTimeout`, `TlsError`,
`BadFrame`. After any of them but `StreamTimeout`, drop the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from firmware.framing import DEFAULT_MAX_FRAME, FrameDecoder, FrameError, encode_frame

# Large enough for a whole TLS record with its overhead (RFC 8446, 5.2: 2^14 + 256 bytes).
READ_CHUNK = 17 * 1024
# The time a close_notify alert gets to leave before the stream is closed anyway.
CLOSE_TIMEOUT = 2.0
# RFC 9325, 4.2: TLS 1.2 only with forward secrecy and AEAD; TLS 1.3 suites are all fine.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class StreamError(Exception):
    """Base of every error of the acquirer link's transport."""


class ConnectError(StreamError):
    """The connection could not be opened (refused, unreachable, no route, timed out)."""


class StreamClosed(StreamError):
    """The peer closed or reset the connection, or it was used after `close`.

    `pending` counts the bytes of an unfinished frame lost with it (0 between frames).
    """

    def __init__(self, reason: str, *, pending: int = 0) -> None:
        self.reason = reason
        self.pending = pending
        super().__init__(reason)


class StreamTimeout(StreamError):
    """Nothing whole arrived in time. The connection itself is still consistent."""


class TlsError(StreamError):
    """The TLS layer failed: handshake refused or timed out, certificate not accepted, alert
    received, protocol violation, or the peer closed the connection without close_notify."""


class BadFrame(StreamError):
    """The peer broke the framing (a frame over the agreed size)."""


class ByteStream(Protocol):
    """A reliable, ordered, bidirectional byte stream. I/O failures raise `StreamError`s."""

    async def read(self, n: int) -> bytes:
        """Up to `n` bytes, at least one; b"" once the peer has closed its side."""
        ...

    async def write(self, data: bytes) -> None:
        """All of `data`, in order; returns when the stream can take more."""
        ...

    async def close(self) -> None:
        ...


class TcpStream:
    """A `ByteStream` over an asyncio TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Frames are small and answered at once: no Nagle delay on them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """As `asyncio.BaseTransport.get_extra_info` ("socket", "peername", "sockname", ...)."""
        return self._writer.get_extra_info(name, default)

    async def read(self, n: int) -> bytes:
        try:
            return await self._reader.read(n)
        except OSError as exc:
            raise StreamClosed(f"the connection broke while reading ({type(exc).__name__})") from exc

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise StreamClosed("the connection is closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            raise StreamClosed(f"the connection broke while writing ({type(exc).__name__})") from exc

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    def __repr__(self) -> str:
        return f"TcpStream({self.get_extra_info('peername')})"


async def open_tcp(host: str, port: int, timeout: float) -> TcpStream:
    """Connect to `host`:`port`; `ConnectError` if that fails or takes over `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError as exc:
        raise ConnectError(f"no connection to {host}:{port} within {timeout} s") from exc
    except OSError as exc:
        raise ConnectError(f"no connection to {host}:{port}: {exc.strerror or type(exc).__name__}") from exc
    return TcpStream(reader, writer)


def _describe(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not accepted: {exc.verify_message}"
    return exc.reason or type(exc).__name__


class TlsStream:
    """A TLS client connection over any `ByteStream`, itself a `ByteStream`.

    The TLS record layer goes through two `ssl.MemoryBIO`s: bytes read from the raw stream are
    fed in, bytes OpenSSL produces are written out. One task may read while another writes.
    """

    def __init__(self, raw: ByteStream, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:
        self._raw = raw
        self._tls = tls
        self._incoming = incoming
        self._outgoing = outgoing
        self._write_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def connect(cls, raw: ByteStream, context: ssl.SSLContext, server_hostname: str,
                      timeout: float) -> TlsStream:
        """Run the client handshake over `raw` (RFC 8446, 4 / RFC 5246, 7.3) within `timeout`
        seconds. On failure `raw` is closed and `TlsError` raised.

        With TLS 1.3 the server checks the client certificate after the client has finished
        (RFC 8446, 4.4.2): a refused client certificate shows as `TlsError` on the first read.
        """
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        try:
            tls = context.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_hostname)
        except (ssl.SSLError, ValueError) as exc:
            await raw.close()
            raise TlsError(f"cannot start TLS to {server_hostname!r}: {exc}") from exc
        return await cls._shake(raw, tls, incoming, outgoing, timeout)

    @classmethod
    async def accept(cls, raw: ByteStream, context: ssl.SSLContext, timeout: float) -> TlsStream:
        """The server side: run the handshake as server over `raw` within `timeout` seconds (the
        host simulator's acceptor); `TlsError` (and `raw` closed) when it fails, the client
        certificate included."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        try:
            tls = context.wrap_bio(incoming, outgoing, server_side=True)
        except (ssl.SSLError, ValueError) as exc:
            await raw.close()
            raise TlsError(f"cannot start TLS: {exc}") from exc
        return await cls._shake(raw, tls, incoming, outgoing, timeout)

    @classmethod
    async def _shake(cls, raw: ByteStream, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                     outgoing: ssl.MemoryBIO, timeout: float) -> TlsStream:
        stream = cls(raw, tls, incoming, outgoing)
        try:
            async with asyncio.timeout(timeout):
                await stream._handshake()
        except TimeoutError as exc:
            await raw.close()
            raise TlsError(f"the TLS handshake took over {timeout} s") from exc
        except StreamError as exc:
            await raw.close()
            if isinstance(exc, TlsError):
                raise
            raise TlsError(f"the connection failed during the TLS handshake: {exc}") from exc
        return stream

    @property
    def version(self) -> str | None:
        """The negotiated protocol, "TLSv1.3" or "TLSv1.2"."""
        return self._tls.version()

    @property
    def cipher(self) -> str | None:
        cipher = self._tls.cipher()
        return cipher[0] if cipher else None

    def peer_certificate(self) -> dict[str, Any]:
        """The verified server certificate, as `ssl.SSLSocket.getpeercert` gives it."""
        return self._tls.getpeercert() or {}

    async def _flush(self) -> None:
        async with self._write_lock:
            data = self._outgoing.read()
            if data:
                await self._raw.write(data)

    async def _fill_or_fail(self) -> None:
        """Feed the next bytes of the raw stream to TLS. Its end is told to TLS once (which then
        reads b"" after a close_notify, or raises `SSLEOFError`); asked for more after that,
        the record in progress can never end: `TlsError`."""
        if self._incoming.eof:
            raise TlsError("the peer closed the connection in the middle of a TLS record")
        data = await self._raw.read(READ_CHUNK)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill_or_fail()
                continue
            except ssl.SSLError as exc:
                # the alert OpenSSL wrote tells the peer why (RFC 8446, 6.2)
                with contextlib.suppress(StreamError):
                    await self._flush()
                raise TlsError(f"TLS handshake failed: {_describe(exc)}") from exc
            await self._flush()
            return

    async def read(self, n: int) -> bytes:
        """Up to `n` bytes of application data; b"" after the peer's close_notify (RFC 8446,
        6.1). An end of the raw stream without close_notify raises `TlsError`."""
        if self._closed:
            raise StreamClosed("the TLS stream is closed")
        while True:
            try:
                data = self._tls.read(n)
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill_or_fail()
                continue
            except ssl.SSLEOFError as exc:
                raise TlsError("the peer closed the connection without close_notify") from exc
            except ssl.SSLError as exc:
                raise TlsError(f"TLS failure while reading: {_describe(exc)}") from exc
            # SSLObject.read gives b"" once the peer's close_notify came. Reading may also have
            # produced records to send back (RFC 8446, 4.6.3 KeyUpdate).
            await self._flush()
            return data

    async def write(self, data: bytes) -> None:
        """Encrypt all of `data` and write the records to the raw stream in one write."""
        if self._closed:
            raise StreamClosed("the TLS stream is closed")
        view = memoryview(data)
        try:
            while view:
                written = self._tls.write(view)
                view = view[written:]
        except ssl.SSLZeroReturnError as exc:
            raise StreamClosed("the peer has closed the TLS connection") from exc
        except ssl.SSLError as exc:
            raise TlsError(f"TLS failure while writing: {_describe(exc)}") from exc
        await self._flush()

    async def close(self) -> None:
        """Send close_notify (RFC 8446, 6.1), then close the raw stream. Does not wait for the
        peer's close_notify. Closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        # SSLWantReadError: our close_notify is out, the peer's has not come (not needed)
        with contextlib.suppress(ssl.SSLError):
            self._tls.unwrap()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._flush()
        except (TimeoutError, StreamError):
            pass
        finally:
            await self._raw.close()

    def __repr__(self) -> str:
        return f"TlsStream({self.version or 'handshake not done'} over {self._raw!r})"


def _tls_context(protocol: int, min_version: ssl.TLSVersion) -> ssl.SSLContext:
    if min_version not in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        raise TlsError(f"the minimum TLS version is 1.2 or 1.3, not {min_version.name}")
    context = ssl.SSLContext(protocol)
    context.minimum_version = min_version
    # the highest both sides have is chosen: TLS 1.3 whenever the peer can
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    # RFC 5280 checks in full (basic constraints critical, key identifiers present, ...)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def _load(context: ssl.SSLContext, ca_file: Path, cert_file: Path, key_file: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load the CA certificate {ca_file}: {type(exc).__name__}") from exc
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load the certificate {cert_file} with its key: {type(exc).__name__}") from exc


def client_context(ca_file: Path, cert_file: Path, key_file: Path, *,
                   min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> ssl.SSLContext:
    """The terminal's TLS context: the host is verified against the pinned CA of `ca_file` only
    (no system store) with its name checked, and the terminal shows its client certificate."""
    context = _tls_context(ssl.PROTOCOL_TLS_CLIENT, min_version)
    # PROTOCOL_TLS_CLIENT: CERT_REQUIRED and check_hostname; set again so no default can drift.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    _load(context, ca_file, cert_file, key_file)
    return context


def server_context(cert_file: Path, key_file: Path, client_ca_file: Path, *,
                   min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> ssl.SSLContext:
    """The host simulator's TLS context: it shows its certificate and requires a client
    certificate issued by the terminals' CA of `client_ca_file` (RFC 8446, 4.3.2)."""
    context = _tls_context(ssl.PROTOCOL_TLS_SERVER, min_version)
    context.verify_mode = ssl.CERT_REQUIRED
    _load(context, client_ca_file, cert_file, key_file)
    return context


class FramedConnection:
    """Length-prefixed frames (`firmware.framing`) over a `ByteStream`."""

    def __init__(self, stream: ByteStream, max_size: int = DEFAULT_MAX_FRAME) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(max_size)
        self._frames: deque[bytes] = deque()
        self._broken: StreamError | None = None

    @property
    def max_size(self) -> int:
        return self._decoder.max_size

    @property
    def stream(self) -> ByteStream:
        return self._stream

    async def send(self, payload: bytes) -> None:
        """Write one frame in one write. A payload over `max_size` raises `FrameError` and
        nothing is sent."""
        await self._stream.write(encode_frame(payload, self._decoder.max_size))

    async def receive(self, timeout: float) -> bytes:
        """The next frame. `StreamTimeout` if none is whole within `timeout` seconds (the bytes
        of a partial frame are kept for the next call); `StreamClosed` if the peer closed (with
        `pending` > 0 in the middle of a frame); `BadFrame` if it broke the framing."""
        if self._frames:
            return self._frames.popleft()
        if self._broken is not None:
            raise self._broken
        try:
            async with asyncio.timeout(timeout):
                while not self._frames:
                    await self._read_more()
        except TimeoutError as exc:
            raise StreamTimeout(f"no whole frame within {timeout} s") from exc
        return self._frames.popleft()

    async def _read_more(self) -> None:
        data = await self._stream.read(READ_CHUNK)
        if not data:
            pending = self._decoder.pending
            where = f"in the middle of a frame ({pending} bytes received)" if pending else "between frames"
            self._broken = StreamClosed(f"the peer closed the connection {where}", pending=pending)
            raise self._broken
        try:
            self._frames.extend(self._decoder.feed(data))
        except FrameError as exc:
            self._broken = BadFrame(exc.reason)
            raise self._broken from exc

    async def close(self) -> None:
        await self._stream.close()

    def __repr__(self) -> str:
        return f"FramedConnection({self._stream!r}, max {self.max_size})"
