"""Failover between the OS network and the cellular module with real sales: the host simulator
(`sim.host`) in-process over TLS; the OS network route is a real TCP forwarder to it, stopped
and started again to take that route down and up; the cellular route goes through the modem
simulator (Quectel dialect) on a pty, driven by `modem.quectel.QuectelModule`. The host client
connects through `firmware.sale.link_connect` over a `LinkManager`, as `tpe sale` does.

TEST KEYS only: the simulator's BDK and terminal initial key, the test PKI made in tmp.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from modem_host_rig import close_module, host_config, module_up

from emv.outcome import Outcome, OutcomeKind
from firmware.config import load_config
from firmware.host_client import EventLoopThread, HostClient
from firmware.host_store import HostStore
from firmware.links import CellularLink, LinkManager, OsNetworkLink
from firmware.messages import Acceptor
from firmware.pin_pad import DukptPinPad
from firmware.prompts import ScriptedPrompt
from firmware.sale import RoutedAuthorizer, link_connect, route_text
from firmware.terminal_keys import TerminalKeys
from firmware.tls_stream import ByteStream
from modem.quectel import QuectelModule
from modem.runner import AtRunner
from sim.host.server import HostSimulator
from sim.inprocess import fresh_card, transact
from sim.modem import ModemSimulator, NetworkConditions

CONFIG = load_config()
TERMINAL_KEYS = Path(__file__).resolve().parent.parent / "sim" / "host" / "terminal_test_keys.toml"
ACCEPTOR = Acceptor(terminal_id="TPE00001", merchant_id="000000000000001", acquirer_id="12345")
AMOUNT = 10000  # above the default floor limit: visa_cda_online goes online with an online PIN
TIMEOUT = 3.0  # the host client's answer and open time limit


class Forwarder:
    """The OS network's route to the host: a TCP relay on loopback. stop() takes the route down
    (no more connections, the open ones cut); start() brings it back on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}


class ForwardedNetworkLink(OsNetworkLink):
    """The OS network link whose route to the host is the forwarder (the machine's routing table
    in miniature): the link manager's host and port stay the host's own."""

    def __init__(self, forwarder: Forwarder) -> None:
        super().__init__("network")
        self.forwarder = forwarder

    async def open(self, host: str, port: int, timeout: float) -> ByteStream:
        return await super().open("127.0.0.1", self.forwarder.port, timeout)

    async def probe(self, host: str, port: int, timeout: float) -> str | None:
        return await super().probe("127.0.0.1", self.forwarder.port, timeout)


@dataclass
class Rig:
    thread: EventLoopThread
    host: HostSimulator
    modem: ModemSimulator
    module: QuectelModule
    runner: AtRunner
    forwarder: Forwarder
    manager: LinkManager
    client: HostClient
    authorizer: RoutedAuthorizer
    store: HostStore
    keys: TerminalKeys

    def sale(self) -> Outcome:
        prompt = ScriptedPrompt(pin="1234", pin_pad=DukptPinPad(self.keys))
        run = transact(fresh_card("visa_cda_online"), CONFIG.kernel, AMOUNT, prompt=prompt,
                       authorizer=self.authorizer)
        self.authorizer.complete(run.outcome)
        return run.outcome

    def modem_bytes(self) -> int:
        return sum(t.up_bytes + t.down_bytes for t in self.modem.traffic())


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    thread = EventLoopThread("links-modem")
    modem = ModemSimulator("quectel", NetworkConditions(rtt_ms=40), reboot_seconds=0.2, seed=5)
    store = HostStore(tmp_path / "state" / "host.sqlite3")
    keys = TerminalKeys.open(store, TERMINAL_KEYS)

    async def start() -> Rig:
        host = HostSimulator(tmp_path / "pki")
        await host.start()
        forwarder = Forwarder(host.port)
        await forwarder.start()
        runner, module = await module_up(modem)
        config = host_config(host, ACCEPTOR.acquirer_id, TIMEOUT)
        manager = LinkManager([ForwardedNetworkLink(forwarder), CellularLink(module)], host.host, host.port,
                              timeout=TIMEOUT)
        client = HostClient(config, store, keys, ACCEPTOR, connect=link_connect(manager))
        authorizer = RoutedAuthorizer(client, thread.loop, manager)
        return Rig(thread, host, modem, module, runner, forwarder, manager, client, authorizer, store, keys)

    built = thread.run(start())
    yield built

    async def stop() -> None:
        await built.client.close()
        await close_module(built.runner, built.module, modem)
        with contextlib.suppress(AssertionError):
            await built.forwarder.stop()
        await built.host.stop()

    thread.run(stop())
    thread.stop()
    store.close()


def test_failover_to_cellular_and_failback_with_a_sale_each_time(rig: Rig) -> None:
    first = rig.sale()
    assert first.kind is OutcomeKind.APPROVED_ONLINE
    assert rig.manager.current is not None and rig.manager.current.name == "network"
    assert rig.forwarder.accepted == 1 and rig.modem_bytes() == 0

    # the OS network's route goes away: the open connection is cut, new ones are refused
    rig.thread.run(rig.forwarder.stop())
    rig.thread.run(asyncio.sleep(0.2))  # the client's reader sees its connection end
    second = rig.sale()
    assert second.kind is OutcomeKind.APPROVED_ONLINE
    assert second.issuer_authentication == "passed"
    assert rig.client.last is not None and rig.client.last.reversals == []
    failover = rig.manager.events[-1]
    assert (failover.kind, failover.previous, failover.link) == ("failover", "network", "cellular")
    assert failover.cause.startswith("ConnectError")  # why the OS network failed, not just "down"
    route = rig.authorizer.route()
    assert route_text(route) == "cellular (4G, -75 dBm, TestNet)"
    assert [e["kind"] for e in route["events"]] == ["up", "failover"]
    on_air = rig.modem_bytes()
    assert on_air > 0  # the second sale's TLS went over the simulated radio

    # the route comes back: the health check fails back, the next sale takes the OS network
    rig.thread.run(rig.forwarder.start())
    rig.thread.run(rig.manager.check())
    failback = rig.manager.events[-1]
    assert (failback.kind, failback.previous, failback.link) == ("failback", "cellular", "network")
    rig.thread.run(asyncio.sleep(0.1))  # the connection over the modem is closed
    third = rig.sale()
    assert third.kind is OutcomeKind.APPROVED_ONLINE
    assert rig.forwarder.accepted == 3  # the health check's probe, then the third sale's connection
    assert rig.modem_bytes() <= on_air + 200  # at most the closing alert of the old socket
    assert route_text(rig.authorizer.route()) == "network"

    entries = rig.host.ledger.entries()
    assert [(e.approved, e.reversed, e.amount) for e in entries] == [(True, False, AMOUNT)] * 3
    assert [e.rrn for e in entries] == [first.host_reference, second.host_reference, third.host_reference]


def test_an_outage_in_the_middle_of_an_authorization_over_the_modem_is_reversed_once(rig: Rig) -> None:
    rig.thread.run(rig.forwarder.stop())  # only the cellular route is left
    rig.host.faults.set_delay(1.0)  # the host books the request, then holds its answer

    async def lose_the_network_once_booked() -> None:
        while not rig.host.ledger.entries():
            await asyncio.sleep(0.01)
        rig.modem.set_registration("searching")  # the radio goes: the context and sockets with it

    watcher = asyncio.run_coroutine_threadsafe(lose_the_network_once_booked(), rig.thread.loop)
    outage = rig.sale()
    watcher.result(1)
    assert outage.kind is not OutcomeKind.APPROVED_ONLINE  # unable to go online: the card decided
    report = rig.client.last
    assert report is not None and report.response_code is None
    assert report.problem is not None and "link broke" in report.problem
    (attempt,) = report.reversals  # recorded, tried once, still owed: no link
    assert (attempt.mti, attempt.reason, attempt.acknowledged) == ("0400", "68", False)
    assert attempt.original_stan == f"{report.stan:06d}"
    assert len(rig.client.recorder.queue.pending(kind="reversal")) == 1
    (booked,) = rig.host.ledger.entries()
    assert booked.approved and not booked.reversed

    # the radio comes back: the reversal leaves before the next sale's request
    rig.host.faults.set_delay(0)
    rig.modem.set_registration("home")
    after = rig.sale()
    assert after.kind is OutcomeKind.APPROVED_ONLINE
    assert rig.client.last is not None
    (sent,) = rig.client.last.reversals
    assert sent.acknowledged and sent.original_stan == attempt.original_stan and sent.response_code == "00"
    assert rig.client.recorder.queue.pending(kind="reversal") == []
    entries = rig.host.ledger.entries()
    assert len(entries) == 2  # the outage's request booked once, never twice
    assert entries[0].reversed and int(entries[0].stan) == report.stan
    assert entries[1].approved and not entries[1].reversed
    assert rig.manager.current is not None and rig.manager.current.name == "cellular"
