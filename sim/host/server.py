"""The host simulator: an asyncio TLS server acting as acquirer and issuer for terminals under test.

    async with HostSimulator(pki_dir) as host:
        ...  # terminals connect to 127.0.0.1:host.port with the test PKI of pki_dir
        host.faults.arm("drop")
        host.ledger.entries()

Each connection: TLS 1.2+ with a client certificate of the terminals' CA (`server_context`),
then frames of `firmware.framing` carrying ISO 8583 messages, each answered in turn by
`sim.host.processing`. Anything a peer sends, however broken (no TLS, a refused certificate,
an oversized frame, garbage, unknown MTIs), ends at worst its own connection, with a log line
that holds no card data; the server goes on serving the others.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from firmware.framing import DEFAULT_MAX_FRAME
from firmware.tls_stream import (
    BadFrame,
    FramedConnection,
    StreamClosed,
    StreamTimeout,
    TcpStream,
    TlsError,
    TlsStream,
    server_context,
)
from sim.card.issuer import IssuerScripts, SimulatedIssuer
from sim.host.accounts import AccountRules, Accounts
from sim.host.faults import Faults, ResponseFault
from sim.host.keys import HostKeys, load_host_keys
from sim.host.ledger import Ledger
from sim.host.processing import HostProcessor
from sim.host.test_pki import TestPki, make_test_pki

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0
# The names make_test_pki writes (sim/host/test_pki.py).
_PKI_FILES = {
    "host_ca_cert": "test-host-ca-cert.pem", "host_ca_key": "test-host-ca-key.pem",
    "host_cert": "test-host-cert.pem", "host_key": "test-host-key.pem",
    "terminal_ca_cert": "test-terminal-ca-cert.pem", "terminal_ca_key": "test-terminal-ca-key.pem",
    "terminal_cert": "test-terminal-cert.pem", "terminal_key": "test-terminal-key.pem",
}


class HostError(Exception):
    """The host simulator cannot start: PKI folder, keys, ledger or address unusable."""


def load_or_make_pki(folder: Path) -> TestPki:
    """The test PKI in `folder`: made there with `make_test_pki` when the folder is missing or
    empty, else read from the files it wrote."""
    if not folder.exists() or not any(folder.iterdir()):
        return make_test_pki(folder)
    paths = {name: folder / file for name, file in _PKI_FILES.items()}
    missing = sorted(file.name for file in paths.values() if not file.is_file())
    if missing:
        raise HostError(f"{folder} is neither empty nor a test PKI folder: {missing[0]} is missing")
    return TestPki(folder=folder, terminal_id="", **paths)


@dataclass
class HostStats:
    connections: int = 0
    tls_failures: int = 0
    frames: int = 0
    answered: int = 0
    unanswered: int = 0  # frames no answer could be built for: connection closed
    broken_connections: int = 0  # oversized frames, TLS failures after the handshake, internal errors

    def describe(self) -> str:
        return " ".join(f"{name}={value}" for name, value in vars(self).items())


class HostSimulator:
    """The acquirer and issuer host for terminals under test (TEST keys, simulated cards).

    `pki_dir` holds the test PKI (made there when empty). `ledger` is a file (SQLite, WAL), an
    open `Ledger`, or None for one in memory. `rules` seeds and checks the accounts of the cards
    of `profiles` (all simulator profiles by default). `port` 0 picks a free port: read
    `host.port` once started.
    """

    def __init__(self, pki_dir: Path, *, host: str = "127.0.0.1", port: int = 0,
                 ledger: Ledger | Path | str | None = None, keys: HostKeys | None = None,
                 rules: AccountRules | None = None, profiles: Iterable[str] | None = None,
                 faults: Faults | None = None, scripts: IssuerScripts | None = None,
                 clock: Callable[[], datetime.datetime] | None = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.pki = load_or_make_pki(Path(pki_dir))
        self.host = host
        self.port = port
        self._own_ledger = not isinstance(ledger, Ledger)
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger)
        self.faults = faults or Faults()
        self.scripts = scripts or IssuerScripts()
        self.issuer = SimulatedIssuer(profiles)
        self.accounts = Accounts(self.issuer, self.ledger, rules or AccountRules())
        self.processor = HostProcessor(keys or load_host_keys(), self.issuer, self.accounts, self.ledger,
                                       self.faults, lambda: self.scripts, clock)
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.max_frame = max_frame
        self.stats = HostStats()
        self._context = server_context(self.pki.host_cert, self.pki.host_key, self.pki.terminal_ca_cert)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    def __repr__(self) -> str:
        return f"HostSimulator({self.host}:{self.port}, {self.ledger!r})"

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._tasks)

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._connection, self.host, self.port)
        except OSError as exc:
            raise HostError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("host simulator listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening, end every connection, close the ledger when the host opened it."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_ledger:
            self.ledger.close()

    async def __aenter__(self) -> HostSimulator:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # type: ignore[arg-type]
        peer = _peer(writer)
        self.stats.connections += 1
        raw = TcpStream(reader, writer)
        try:
            try:
                tls = await TlsStream.accept(raw, self._context, self.handshake_timeout)
            except TlsError as exc:
                self.stats.tls_failures += 1
                log.warning("%s: TLS refused: %s", peer, exc)
                return
            connection = FramedConnection(tls, self.max_frame)
            try:
                await self._serve(connection, peer)
            finally:
                await connection.close()
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # stopping: end as a finished task, which asyncio's stream callback expects
        except Exception:  # a bug here must not stop the host: this connection ends, others go on
            self.stats.broken_connections += 1
            log.exception("%s: connection ended by an internal error", peer)
        finally:
            await raw.close()
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]

    async def _serve(self, connection: FramedConnection, peer: str) -> None:
        while True:
            try:
                frame = await connection.receive(self.idle_timeout)
            except StreamTimeout:
                log.info("%s: idle for %g s, closing", peer, self.idle_timeout)
                return
            except (BadFrame, TlsError) as exc:
                self.stats.broken_connections += 1
                log.warning("%s: %s, closing", peer, exc)
                return
            except StreamClosed:
                log.info("%s: closed by the terminal", peer)
                return
            self.stats.frames += 1
            answer = self.processor.handle(frame)
            log.info("%s: %s", peer, answer.summary)
            if answer.data is None:
                self.stats.unanswered += 1
                return
            if self.faults.delay:
                await asyncio.sleep(self.faults.delay)
            fault = self.faults.take_response_fault()
            data = answer.data
            if fault is ResponseFault.DROP:
                log.info("%s: fault: answer dropped", peer)
                continue
            if fault is ResponseFault.CLOSE:
                log.info("%s: fault: connection closed instead of answering", peer)
                return
            if fault is ResponseFault.GARBAGE:
                log.info("%s: fault: garbage sent instead of the answer", peer)
                data = b"\xff" + os.urandom(len(data) - 1)  # never an MTI: never a message
            elif fault is ResponseFault.BAD_MAC:
                log.info("%s: fault: answer sent with a wrong MAC", peer)
                data = data[:-1] + bytes([data[-1] ^ 0x01])
            await connection.send(data)
            self.stats.answered += 1


def _peer(writer: asyncio.StreamWriter) -> str:
    name = writer.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return "peer"

