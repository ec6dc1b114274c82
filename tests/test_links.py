"""The link manager over real loopback TCP: the OS network first, a backup route second."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from firmware.links import MAX_EVENTS, LinkDown, LinkEvent, LinkManager, OsNetworkLink
from firmware.tls_stream import ByteStream, ConnectError, open_tcp


class Acquirer:
    """A TCP server that answers `ping` with `pong`; stop() and start() again on the same port."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read(4)
            if data == b"ping":
                writer.write(b"pong")
                await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(answer, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


class RouteLink:
    """A second real route to the acquirer: loopback TCP to another port (where the cellular
    module's socket will stand)."""

    def __init__(self, name: str, acquirer: Acquirer) -> None:
        self.name = name
        self.acquirer = acquirer

    async def open(self, host: str, port: int, timeout: float) -> ByteStream:
        return await open_tcp("127.0.0.1", self.acquirer.port, timeout)

    async def probe(self, host: str, port: int, timeout: float) -> str | None:
        try:
            stream = await self.open(host, port, timeout)
        except Exception as exc:
            return str(exc)
        await stream.close()
        return None

    def details(self) -> dict[str, Any]:
        return {"signal_dbm": -81, "operator": "TEST"}


async def ping(stream: ByteStream) -> bytes:
    await stream.write(b"ping")
    answer = await stream.read(4)
    await stream.close()
    return answer


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_failover_to_the_backup_and_failback_with_causes() -> None:
    async def scenario() -> list[LinkEvent]:
        primary, backup = Acquirer(), Acquirer()
        await primary.start()
        await backup.start()
        manager = LinkManager([OsNetworkLink(), RouteLink("cellular", backup)], "127.0.0.1", primary.port,
                              timeout=2)
        seen: list[LinkEvent] = []
        manager.subscribe(seen.append)
        await manager.check()
        assert manager.current is not None and manager.current.name == "network"
        assert await ping(await manager.connect()) == b"pong"
        await primary.stop()  # the Wi-Fi goes
        assert await ping(await manager.connect()) == b"pong"  # a sale goes on at once
        assert manager.current.name == "cellular"
        await manager.check()
        assert manager.current.name == "cellular"  # the network still fails its probe
        await primary.start()  # the Wi-Fi comes back on the same port
        await manager.check()
        assert manager.current.name == "network"
        snapshot = manager.snapshot()
        assert snapshot["route"] == "network" and snapshot["last_event"]["kind"] == "failback"
        await backup.stop()
        await primary.stop()
        return seen

    events = run(scenario())
    assert [(e.kind, e.previous, e.link) for e in events] == [
        ("up", None, "network"), ("failover", "network", "cellular"), ("failback", "cellular", "network")]
    assert "Connect" in events[1].cause or "refused" in events[1].cause.lower()


def test_all_links_down_is_a_typed_error_with_every_cause() -> None:
    async def scenario() -> tuple[LinkDown, LinkManager]:
        primary, backup = Acquirer(), Acquirer()
        await primary.start()
        await backup.start()
        manager = LinkManager([OsNetworkLink(), RouteLink("cellular", backup)], "127.0.0.1", primary.port,
                              timeout=1)
        await manager.check()
        await primary.stop()
        await backup.stop()
        with pytest.raises(LinkDown) as caught:
            await manager.connect()
        return caught.value, manager

    error, manager = run(scenario())
    assert set(error.causes) == {"network", "cellular"}
    assert isinstance(error, ConnectError)  # the host client's "not sent", never a crash
    assert manager.current is None and manager.events[-1].kind == "down"
    assert manager.snapshot()["route"] is None


def test_the_backup_details_are_what_the_snapshot_shows() -> None:
    async def scenario() -> dict[str, Any]:
        backup = Acquirer()
        await backup.start()
        manager = LinkManager([OsNetworkLink(), RouteLink("cellular", backup)], "127.0.0.1", 1, timeout=1)
        await manager.check()  # nothing listens on port 1: the network link fails its probe
        snapshot = manager.snapshot()
        await backup.stop()
        return snapshot

    snapshot = run(scenario())
    assert snapshot["route"] == "cellular" and snapshot["details"]["operator"] == "TEST"
    assert snapshot["links"]["network"]["up"] is False and snapshot["links"]["network"]["cause"]


def test_a_failing_subscriber_does_not_stop_the_switch() -> None:
    async def scenario() -> LinkManager:
        primary = Acquirer()
        await primary.start()
        manager = LinkManager([OsNetworkLink()], "127.0.0.1", primary.port, timeout=1)

        def broken(event: LinkEvent) -> None:
            raise RuntimeError("subscriber bug")

        manager.subscribe(broken)
        await manager.check()
        await primary.stop()
        return manager

    manager = run(scenario())
    assert manager.current is not None and manager.current.name == "network"


def test_a_manager_needs_a_link() -> None:
    with pytest.raises(ValueError):
        LinkManager([], "127.0.0.1", 1)


def test_a_flapping_link_keeps_only_the_last_changes() -> None:
    async def scenario() -> LinkManager:
        primary = Acquirer()
        await primary.start()
        manager = LinkManager([OsNetworkLink()], "127.0.0.1", primary.port, timeout=1)
        for _ in range(MAX_EVENTS):  # up, down, up, down...: twice as many changes as are kept
            await manager.check()
            await primary.stop()
            await manager.check()
            await primary.start()
        await primary.stop()
        return manager

    manager = run(scenario())
    assert manager.announced == 2 * MAX_EVENTS and len(manager.events) == MAX_EVENTS
    assert [e.kind for e in list(manager.events)[-2:]] == ["up", "down"]
