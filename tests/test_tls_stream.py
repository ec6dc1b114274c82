"""TLS over any byte stream, and frames over it: real TLS servers on 127.0.0.1 (asyncio's own
TLS, independent of the MemoryBIO code under test), and a TLS server on an in-memory pipe.

The peers here read frames with `struct` and `readexactly`, not with `firmware.framing`, and
answer each frame with its bytes reversed, so an echo proves both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.framing import LARGEST_FRAME, FrameError, encode_frame
from firmware.tls_stream import (
    BadFrame,
    ConnectError,
    FramedConnection,
    StreamClosed,
    StreamError,
    StreamTimeout,
    TlsError,
    TlsStream,
    client_context,
    open_tcp,
    server_context,
)
from sim.host.test_pki import TestPki, make_test_pki

TIMEOUT = 5.0
BURST = b"BURST"  # asks the echo server for several frames in one write
OVERSIZED = b"OVERSIZED"  # asks it for a header announcing more than the client takes
HALF_THEN_CLOSE = b"HALF-CLOSE"  # a partial frame, then close_notify
HALF_THEN_ABORT = b"HALF-ABORT"  # a partial frame, then the TCP connection dropped without close_notify


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(TIMEOUT):
            return await coroutine
    return asyncio.run(bounded())


def frame(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_test_pki(tmp_path_factory.mktemp("other-pki"), seed="another test pki")


def terminal_context(pki: TestPki) -> ssl.SSLContext:
    return client_context(pki.host_ca_cert, pki.terminal_cert, pki.terminal_key)


def host_context(pki: TestPki) -> ssl.SSLContext:
    return server_context(pki.host_cert, pki.host_key, pki.terminal_ca_cert)


@dataclass
class EchoServer:
    port: int
    received: list[bytes] = field(default_factory=list)
    versions: list[str | None] = field(default_factory=list)
    client_names: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


async def _echo(server: EchoServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    ssl_object = writer.get_extra_info("ssl_object")
    server.versions.append(ssl_object.version() if ssl_object else None)
    peer = writer.get_extra_info("peercert") or {}
    server.client_names += [value for rdn in peer.get("subject", ()) for key, value in rdn
                            if key == "commonName"]
    try:
        while True:
            (length,) = struct.unpack(">H", await reader.readexactly(2))
            payload = await reader.readexactly(length)
            server.received.append(payload)
            if payload == BURST:
                writer.write(b"".join(frame(bytes([n]) * n) for n in range(20)))
            elif payload == OVERSIZED:
                writer.write(struct.pack(">H", 1001) + b"x" * 1001)
            elif payload in (HALF_THEN_CLOSE, HALF_THEN_ABORT):
                writer.write(struct.pack(">H", 100) + b"only part")
                await writer.drain()
                if payload == HALF_THEN_ABORT:
                    writer.transport.abort()
                break
            else:
                writer.write(frame(payload[::-1]))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
        server.ended.set()


@contextlib.asynccontextmanager
async def echo_server(context: ssl.SSLContext | None) -> AsyncIterator[EchoServer]:
    tasks: set[asyncio.Task[None]] = set()
    box: list[EchoServer] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        await _echo(box[0], reader, writer)

    options: dict[str, Any] = {"ssl": context, "ssl_handshake_timeout": TIMEOUT} if context else {}
    server = await asyncio.start_server(handle, "127.0.0.1", 0, **options)
    box.append(EchoServer(server.sockets[0].getsockname()[1]))
    try:
        yield box[0]
    finally:
        server.close()
        await server.wait_closed()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def connect(port: int, context: ssl.SSLContext, hostname: str = "localhost") -> TlsStream:
    return await TlsStream.connect(await open_tcp("127.0.0.1", port, TIMEOUT), context, hostname, TIMEOUT)


# --- TLS over TCP against asyncio's TLS server ---------------------------------------------


def test_tls13_handshake_and_framed_echo_both_ways(pki: TestPki) -> None:
    payloads = [b"", b"\x01", b"\x02\x00" + bytes(range(256)) * 20, bytes(range(256)) * 255 + b"\xaa" * 255]
    assert len(payloads[-1]) == LARGEST_FRAME

    async def scenario() -> None:
        async with echo_server(host_context(pki)) as server:
            tls = await connect(server.port, terminal_context(pki))
            assert tls.version == "TLSv1.3"
            assert tls.peer_certificate()["subjectAltName"] == (
                ("DNS", "localhost"), ("IP Address", "127.0.0.1"), ("IP Address", "0:0:0:0:0:0:0:1"))
            link = FramedConnection(tls, max_size=LARGEST_FRAME)
            for payload in payloads:
                await link.send(payload)
                assert await link.receive(TIMEOUT) == payload[::-1]
            # many frames in one write, each way
            await tls.write(b"".join(encode_frame(p, LARGEST_FRAME) for p in payloads))
            for payload in payloads:
                assert await link.receive(TIMEOUT) == payload[::-1]
            await link.send(BURST)
            assert [await link.receive(TIMEOUT) for _ in range(20)] == [bytes([n]) * n for n in range(20)]
            await link.close()
            await server.ended.wait()
            assert server.versions == ["TLSv1.3"]
            assert server.client_names == [pki.terminal_id]
            assert server.received == [*payloads, *payloads, BURST]

    run(scenario())


def test_tls12_only_host_is_still_accepted_with_an_aead_ecdhe_suite(pki: TestPki) -> None:
    context = host_context(pki)
    context.maximum_version = ssl.TLSVersion.TLSv1_2

    async def scenario() -> None:
        async with echo_server(context) as server:
            tls = await connect(server.port, terminal_context(pki))
            assert tls.version == "TLSv1.2"
            assert tls.cipher is not None
            assert tls.cipher.startswith("ECDHE-ECDSA-")
            assert "GCM" in tls.cipher or "CHACHA20" in tls.cipher
            link = FramedConnection(tls)
            await link.send(b"1.2")
            assert await link.receive(TIMEOUT) == b"2.1"
            await link.close()

    run(scenario())


def test_tcp_stream_sets_tcp_nodelay(pki: TestPki) -> None:
    """Frames are small and answered at once: Nagle's delay must be off (asyncio's selector
    transports turn it off too; the adapter must keep it so whatever transport it gets)."""
    async def scenario() -> None:
        async with echo_server(None) as server:
            stream = await open_tcp("127.0.0.1", server.port, TIMEOUT)
            sock = stream.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            await stream.close()

    run(scenario())


def test_open_tcp_refused_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
        run(open_tcp("127.0.0.1", port, TIMEOUT))


# --- certificates and versions refused ---------------------------------------------------------


def test_host_certificate_from_another_ca_is_refused(pki: TestPki, other_pki: TestPki) -> None:
    async def scenario() -> None:
        async with echo_server(server_context(other_pki.host_cert, other_pki.host_key,
                                              pki.terminal_ca_cert)) as server:
            with pytest.raises(TlsError, match="certificate not accepted"):
                await connect(server.port, terminal_context(pki))

    run(scenario())


def test_host_certificate_for_another_name_is_refused(pki: TestPki) -> None:
    async def scenario() -> None:
        async with echo_server(host_context(pki)) as server:
            with pytest.raises(TlsError, match="certificate not accepted: Hostname mismatch"):
                await connect(server.port, terminal_context(pki), hostname="acquirer.example")

    run(scenario())


async def exchange_refused(port: int, context: ssl.SSLContext) -> None:
    """The handshake or the first exchange fails with `TlsError`: with TLS 1.3 the host checks
    the client certificate after the client's handshake is done (RFC 8446, 4.4.2)."""
    with pytest.raises(TlsError):
        link = FramedConnection(await connect(port, context))
        await link.send(b"hello")
        await link.receive(TIMEOUT)


def test_host_requires_a_client_certificate(pki: TestPki) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(cafile=pki.host_ca_cert)

    async def scenario() -> None:
        async with echo_server(host_context(pki)) as server:
            await exchange_refused(server.port, anonymous)
            assert server.received == []

    run(scenario())


def test_host_refuses_a_client_certificate_from_another_terminal_ca(pki: TestPki, other_pki: TestPki) -> None:
    stranger = client_context(pki.host_ca_cert, other_pki.terminal_cert, other_pki.terminal_key)

    async def scenario() -> None:
        async with echo_server(host_context(pki)) as server:
            await exchange_refused(server.port, stranger)
            assert server.received == []

    run(scenario())


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls11_only_host_is_refused(pki: TestPki) -> None:
    legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    legacy.load_cert_chain(pki.host_cert, pki.host_key)
    legacy.minimum_version = legacy.maximum_version = ssl.TLSVersion.TLSv1_1
    legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    permissive.load_verify_locations(cafile=pki.host_ca_cert)
    permissive.minimum_version = ssl.TLSVersion.TLSv1_1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")

    async def scenario() -> None:
        async with echo_server(legacy) as server:
            # the host does speak TLS 1.1 to a client that allows it ...
            _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=permissive,
                                                      server_hostname="localhost")
            assert writer.get_extra_info("ssl_object").version() == "TLSv1.1"
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            # ... and the terminal refuses it
            with pytest.raises(TlsError, match="TLS handshake failed"):
                await connect(server.port, terminal_context(pki))

    run(scenario())


def test_tls13_minimum_refuses_a_tls12_host(pki: TestPki) -> None:
    context = host_context(pki)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    strict = client_context(pki.host_ca_cert, pki.terminal_cert, pki.terminal_key,
                            min_version=ssl.TLSVersion.TLSv1_3)

    async def scenario() -> None:
        async with echo_server(context) as server:
            with pytest.raises(TlsError):
                await connect(server.port, strict)

    run(scenario())


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_contexts_refuse_a_minimum_under_tls12(pki: TestPki) -> None:
    with pytest.raises(TlsError):
        client_context(pki.host_ca_cert, pki.terminal_cert, pki.terminal_key,
                       min_version=ssl.TLSVersion.TLSv1_1)
    with pytest.raises(TlsError):
        server_context(pki.host_cert, pki.host_key, pki.terminal_ca_cert, min_version=ssl.TLSVersion.TLSv1)


def test_client_context_trusts_the_pinned_ca_only(pki: TestPki) -> None:
    context = terminal_context(pki)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    names = [value for ca in context.get_ca_certs() for rdn in ca["subject"] for key, value in rdn
             if key == "commonName"]
    assert names == ["TEST Acquirer Host CA"]


def test_missing_files_are_tls_errors(pki: TestPki, tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="CA certificate"):
        client_context(tmp_path / "none.pem", pki.terminal_cert, pki.terminal_key)
    with pytest.raises(TlsError, match="with its key"):
        client_context(pki.host_ca_cert, pki.terminal_cert, pki.host_key)


# --- failures during the handshake ------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_server(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                     ) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def test_a_silent_host_times_the_handshake_out(pki: TestPki) -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await release.wait()
            writer.close()

        async with raw_server(silent) as port:
            raw = await open_tcp("127.0.0.1", port, TIMEOUT)
            with pytest.raises(TlsError, match=r"took over 0\.2 s"):
                await TlsStream.connect(raw, terminal_context(pki), "localhost", 0.2)
            release.set()
            with pytest.raises(StreamClosed):
                await raw.write(b"x")

    run(scenario())


def test_a_host_closing_during_the_handshake_is_a_tls_error(pki: TestPki) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    async def scenario() -> None:
        async with raw_server(hang_up) as port:
            with pytest.raises(TlsError, match="handshake failed"):
                await connect(port, terminal_context(pki))

    run(scenario())


# --- framing limits and closes over TLS --------------------------------------------------------


def test_frame_over_max_is_refused_when_sending_and_when_receiving(pki: TestPki) -> None:
    async def scenario() -> None:
        async with echo_server(host_context(pki)) as server:
            link = FramedConnection(await connect(server.port, terminal_context(pki)), max_size=1000)
            with pytest.raises(FrameError):
                await link.send(b"y" * 1001)
            await link.send(b"y" * 1000)
            assert await link.receive(TIMEOUT) == b"y" * 1000
            await link.send(OVERSIZED)
            with pytest.raises(BadFrame, match="1001 bytes"):
                await link.receive(TIMEOUT)
            with pytest.raises(BadFrame):
                await link.receive(TIMEOUT)
            await link.close()
            await server.ended.wait()
            assert server.received == [b"y" * 1000, OVERSIZED]

    run(scenario())


def test_host_closing_mid_frame_is_stream_closed_with_the_bytes_lost(pki: TestPki) -> None:
    async def scenario() -> None:
        async with echo_server(host_context(pki)) as server:
            link = FramedConnection(await connect(server.port, terminal_context(pki)))
            await link.send(HALF_THEN_CLOSE)
            with pytest.raises(StreamClosed, match="middle of a frame") as caught:
                await link.receive(TIMEOUT)
            assert caught.value.pending == 2 + len(b"only part")
            await link.close()

    run(scenario())


def test_host_dropping_tcp_without_close_notify_is_a_tls_error(pki: TestPki) -> None:
    async def scenario() -> None:
        async with echo_server(host_context(pki)) as server:
            link = FramedConnection(await connect(server.port, terminal_context(pki)))
            await link.send(HALF_THEN_ABORT)
            with pytest.raises(TlsError, match="without close_notify"):
                await link.receive(TIMEOUT)
            await link.close()

    run(scenario())


def test_a_closed_tls_stream_refuses_io_and_closes_once(pki: TestPki) -> None:
    async def scenario() -> None:
        async with echo_server(host_context(pki)) as server:
            tls = await connect(server.port, terminal_context(pki))
            await tls.close()
            await tls.close()
            with pytest.raises(StreamClosed):
                await tls.write(b"late")
            with pytest.raises(StreamClosed):
                await tls.read(10)

    run(scenario())


# --- the same TLS over an in-memory pipe: no socket at all ----------------------------------


class PipeEnd:
    """One end of an in-memory byte pipe made of two queues (b"" in a queue is the end)."""

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes]) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._buffer = b""
        self._ended = False
        self.closed = False
        self.writes: list[int] = []

    async def read(self, n: int) -> bytes:
        if not self._buffer and not self._ended:
            self._buffer = await self._inbox.get()
            self._ended = not self._buffer
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    async def write(self, data: bytes) -> None:
        if self.closed:
            raise StreamClosed("pipe closed")
        self.writes.append(len(data))
        if data:
            self._outbox.put_nowait(bytes(data))

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._outbox.put_nowait(b"")


def pipe() -> tuple[PipeEnd, PipeEnd]:
    one: asyncio.Queue[bytes] = asyncio.Queue()
    two: asyncio.Queue[bytes] = asyncio.Queue()
    return PipeEnd(one, two), PipeEnd(two, one)


@dataclass
class MemoryServerLog:
    received: list[bytes] = field(default_factory=list)
    version: str | None = None
    client_name: str | None = None
    ending: str = ""


async def memory_bio_echo_server(end: PipeEnd, context: ssl.SSLContext, log: MemoryServerLog) -> None:
    """A TLS server written straight on `ssl.SSLObject`, reading frames with `struct`."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)

    async def pump_in() -> None:
        data = await end.read(65536)
        if data:
            incoming.write(data)
        else:
            incoming.write_eof()

    async def pump_out() -> None:
        data = outgoing.read()
        if data:
            await end.write(data)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            await pump_out()
            await pump_in()
    await pump_out()
    log.version = tls.version()
    log.client_name = dict(rdn[0] for rdn in tls.getpeercert()["subject"])["commonName"]
    buffer = b""
    while True:
        try:
            data = tls.read(65536)
        except ssl.SSLWantReadError:
            await pump_in()
            continue
        except ssl.SSLEOFError:
            log.ending = "eof without close_notify"
            return
        if not data:  # ssl.SSLObject.read after the peer's close_notify
            log.ending = "close_notify"
            return
        buffer += data
        while len(buffer) >= 2 and len(buffer) >= 2 + struct.unpack_from(">H", buffer)[0]:
            length = struct.unpack_from(">H", buffer)[0]
            payload, buffer = buffer[2:2 + length], buffer[2 + length:]
            log.received.append(payload)
            tls.write(frame(payload[::-1]))
            await pump_out()


def test_tls_over_an_in_memory_pipe_needs_no_socket(pki: TestPki, monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = [b"", b"\x01", b"pipe" * 1000, b"m" * LARGEST_FRAME]

    def no_socket(*args: object, **kwargs: object) -> None:
        raise AssertionError("a socket was opened")

    async def scenario() -> None:
        monkeypatch.setattr(socket, "socket", no_socket)
        client_end, server_end = pipe()
        log = MemoryServerLog()
        server = asyncio.create_task(memory_bio_echo_server(server_end, host_context(pki), log))
        tls = await TlsStream.connect(client_end, terminal_context(pki), "localhost", TIMEOUT)
        assert tls.version == "TLSv1.3"
        link = FramedConnection(tls, max_size=LARGEST_FRAME)
        for payload in payloads:
            before = len(client_end.writes)
            await link.send(payload)
            assert len(client_end.writes) == before + 1  # one frame, one write
            assert await link.receive(TIMEOUT) == payload[::-1]
        await tls.write(b"".join(encode_frame(p, LARGEST_FRAME) for p in payloads))
        assert [await link.receive(TIMEOUT) for _ in payloads] == [p[::-1] for p in payloads]
        await link.close()
        await server
        assert log.received == payloads * 2
        assert (log.version, log.client_name, log.ending) == ("TLSv1.3", pki.terminal_id, "close_notify")
        assert client_end.closed

    run(scenario())


def test_wrong_ca_over_the_pipe_is_a_tls_error_and_closes_the_pipe(pki: TestPki, other_pki: TestPki) -> None:
    async def scenario() -> None:
        client_end, server_end = pipe()
        server = asyncio.create_task(memory_bio_echo_server(
            server_end, server_context(other_pki.host_cert, other_pki.host_key, pki.terminal_ca_cert),
            MemoryServerLog()))
        with pytest.raises(TlsError, match="certificate not accepted"):
            await TlsStream.connect(client_end, terminal_context(pki), "localhost", TIMEOUT)
        assert client_end.closed
        with pytest.raises(ssl.SSLError, match="ALERT"):
            await server

    run(scenario())


# --- framing over a plain pipe -------------------------------------------------------------


def test_frames_over_a_plain_pipe_split_timeout_and_close() -> None:
    async def scenario() -> None:
        near, far = pipe()
        link = FramedConnection(near, max_size=100)
        with pytest.raises(FrameError):
            await link.send(b"z" * 101)
        assert near.writes == []
        await link.send(b"abc")
        assert near.writes == [5]
        assert await far.read(100) == b"\x00\x03abc"

        await far.write(b"\x00\x04ab")
        with pytest.raises(StreamTimeout):
            await link.receive(0.05)
        await far.write(b"cd\x00\x01e")
        assert await link.receive(TIMEOUT) == b"abcd"
        assert await link.receive(TIMEOUT) == b"e"

        await far.write(b"\x00\x09par")
        await far.close()
        with pytest.raises(StreamClosed) as caught:
            await link.receive(TIMEOUT)
        assert caught.value.pending == 5
        with pytest.raises(StreamClosed):
            await link.receive(TIMEOUT)

    run(scenario())


def test_clean_close_between_frames_and_oversized_header_over_a_pipe() -> None:
    async def scenario() -> None:
        near, far = pipe()
        link = FramedConnection(near, max_size=100)
        await far.write(b"\x00\x01A")
        await far.close()
        assert await link.receive(TIMEOUT) == b"A"
        with pytest.raises(StreamClosed, match="between frames") as caught:
            await link.receive(TIMEOUT)
        assert caught.value.pending == 0

        near, far = pipe()
        link = FramedConnection(near, max_size=100)
        await far.write(b"\x00\x65")
        with pytest.raises(BadFrame) as bad:
            await link.receive(TIMEOUT)
        assert isinstance(bad.value, StreamError)

    run(scenario())


# --- the test PKI ---------------------------------------------------------------------------


def test_test_pki_certificates(pki: TestPki) -> None:
    host = x509.load_pem_x509_certificate(pki.host_cert.read_bytes())
    terminal = x509.load_pem_x509_certificate(pki.terminal_cert.read_bytes())
    host_ca = x509.load_pem_x509_certificate(pki.host_ca_cert.read_bytes())
    terminal_ca = x509.load_pem_x509_certificate(pki.terminal_ca_cert.read_bytes())
    names = host.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    assert terminal.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == pki.terminal_id
    assert host.issuer == host_ca.subject and terminal.issuer == terminal_ca.subject
    host.verify_directly_issued_by(host_ca)
    terminal.verify_directly_issued_by(terminal_ca)
    usage = terminal.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    now = datetime.datetime.now(datetime.UTC)
    for certificate in (host, terminal, host_ca, terminal_ca):
        key = certificate.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"
        assert certificate.not_valid_before_utc < now - datetime.timedelta(hours=23)
        assert certificate.not_valid_after_utc > now + datetime.timedelta(days=3650)
    for path in pki.folder.iterdir():
        assert path.name.startswith("test-")
        assert path.read_text().startswith("# TEST ")


def test_test_pki_is_the_same_for_a_seed_and_differs_between_seeds(pki: TestPki, other_pki: TestPki,
                                                                   tmp_path: Path) -> None:
    again = make_test_pki(tmp_path, terminal_id=pki.terminal_id)

    def public(path: Path) -> bytes:
        return x509.load_pem_x509_certificate(path.read_bytes()).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    for name in ("host_ca_cert", "host_cert", "terminal_ca_cert", "terminal_cert"):
        assert public(getattr(again, name)) == public(getattr(pki, name))
        assert public(getattr(other_pki, name)) != public(getattr(pki, name))
