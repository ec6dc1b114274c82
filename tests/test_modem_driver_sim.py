"""The module drivers (Quectel, SIMCom) against the modem simulator (sim/modem) through a real
pty: `modem.serial_port.open_serial` -> `AtRunner` -> driver. Bring-up with and without SIM PIN,
registration outcomes, signal, data sockets to TCP peers on loopback (written here with the
standard library), and the recoveries: network close, registration loss, module restart, a
module that stops answering.

The expected values come from the simulator's settings (dBm, registration, technology) mapped
by 3GPP TS 27.007 tables, not from the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from modem.module import (
    DataContextError,
    ModemTimeout,
    Module,
    NotRegistered,
    RegistrationDenied,
    SimPinError,
)
from modem.quectel import QuectelModule
from modem.runner import AtRunner
from modem.serial_port import open_serial
from modem.simcom import SimcomModule
from modem.socket_stream import ModemSocket, ModemSocketError, SocketOpenError
from sim.modem import ModemSimulator, NetworkConditions

DIALECTS = ("quectel", "simcom")
DRIVERS: dict[str, type[Module]] = {"quectel": QuectelModule, "simcom": SimcomModule}
APN = "internet.test"
TEST_PIN = "4321"  # the simulated SIM's PIN in these tests (a test value)
WAIT = 10.0


def run(coroutine: Awaitable[Any], timeout: float = 30.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coroutine
    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def rig(dialect: str, *, conditions: NetworkConditions | None = None, pin: str | None = None,
              **driver_options: Any) -> AsyncIterator[tuple[ModemSimulator, Module]]:
    """The simulator on a pty in this loop, and a driver on the pty's terminal side."""
    options: dict[str, Any] = {"registration_timeout": 3.0, "poll_interval": 0.1, "boot_timeout": 5.0,
                               "command_timeout": 2.0}
    options.update(driver_options)
    async with ModemSimulator(dialect, conditions, pin=pin, reboot_seconds=0.2, seed=1) as sim:
        assert sim.path is not None
        port = await open_serial(sim.path)
        runner = AtRunner(port)
        await runner.start()
        module = DRIVERS[dialect](runner, **options)
        try:
            yield sim, module
        finally:
            await module.close()
            await runner.close()


@contextlib.asynccontextmanager
async def tcp_peer(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                   ) -> AsyncIterator[int]:
    """A TCP server on loopback running `handle` per connection; its port."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def read_exactly(sock: ModemSocket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = await sock.read(size - len(received))
        if not chunk:
            break
        received += chunk
    return received


async def until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


# --- bring-up, SIM, registration, signal -----------------------------------------------------

@pytest.mark.parametrize("dialect", DIALECTS)
def test_bring_up_and_status(dialect: str) -> None:
    async def scenario() -> None:
        async with rig(dialect) as (sim, module):
            await module.bring_up(None, APN)
            assert module.is_up
            status = await module.status()
            # the simulator's default network: -75 dBm is rssi 19 (27.007, 8.5), i.e. -75 dBm
            assert status.registered == "home"
            assert status.rssi_dbm == -75 and status.bars == 4
            assert status.technology == "4G" and status.operator == "TestNet"
            detail = sim.status().detail
            assert ("pdp=1" in detail) if dialect == "quectel" else ("net=open rxget=1" in detail)
    run(scenario())


# (simulated dBm, the dBm +CSQ can tell: 27.007, 8.5 in 2 dB steps, bars)
@pytest.mark.parametrize(("dbm", "reported", "bars"), [(-45, -51, 5), (-73, -73, 5), (-80, -81, 4),
                                                       (-90, -91, 3), (-98, -99, 2), (-106, -107, 1),
                                                       (-113, -113, 0), (-120, -113, 0), (None, None, 0)])
def test_signal_bars_at_several_levels(dbm: int | None, reported: int | None, bars: int) -> None:
    async def scenario() -> None:
        async with rig("quectel", conditions=NetworkConditions(signal_dbm=dbm)) as (_sim, module):
            await module.bring_up(None, APN)
            status = await module.status()
            assert (status.rssi_dbm, status.bars) == (reported, bars)
    run(scenario())


@pytest.mark.parametrize(("technology", "expected"), [("2G", "2G"), ("3G", "3G"), ("4G", "4G")])
def test_technology_from_the_operator_act(technology: str, expected: str) -> None:
    async def scenario() -> None:
        async with rig("simcom", conditions=NetworkConditions(technology=technology)) as (_sim, module):
            await module.bring_up(None, APN)
            assert (await module.status()).technology == expected
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_sim_pin_entered_from_the_configuration(dialect: str) -> None:
    async def scenario() -> None:
        async with rig(dialect, pin=TEST_PIN) as (sim, module):
            assert sim.status().sim == "pin"
            await module.bring_up(TEST_PIN, APN)
            assert sim.status().sim == "ready" and sim.pin_tries == 3
            assert (await module.status()).registered == "home"
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_wrong_pin_is_tried_once_and_never_again(dialect: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with rig(dialect, pin=TEST_PIN) as (sim, module):
            with pytest.raises(SimPinError) as caught:
                await module.bring_up("1111", APN)
            assert caught.value.kind == "wrong" and caught.value.code == 16  # 27.007: incorrect password
            assert sim.pin_tries == 2  # one try spent
            with pytest.raises(SimPinError) as again:
                await module.bring_up("1111", APN)
            assert again.value.kind == "refused_before"
            with pytest.raises(SimPinError) as after_reset:
                await module.reset("test")
            assert after_reset.value.kind == "refused_before"
            assert sim.status().sim == "pin"
            # the technician fixes the configuration: the right PIN goes in
            await module.bring_up(TEST_PIN, APN)
            assert sim.status().sim == "ready" and module.is_up
            assert (await module.status()).registered == "home"

    run(scenario())
    assert "1111" not in caplog.text and TEST_PIN not in caplog.text


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_sim_asking_for_a_pin_none_configured(dialect: str) -> None:
    async def scenario() -> None:
        async with rig(dialect, pin=TEST_PIN) as (sim, module):
            with pytest.raises(SimPinError) as caught:
                await module.bring_up(None, APN)
            assert caught.value.kind == "missing" and sim.pin_tries == 3
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_registration_denied(dialect: str) -> None:
    async def scenario() -> None:
        async with rig(dialect, conditions=NetworkConditions(registration="denied")) as (_sim, module):
            with pytest.raises(RegistrationDenied):
                await module.bring_up(None, APN)
            assert not module.is_up
            assert (await module.status()).registered == "denied"
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_roaming_is_registered(dialect: str) -> None:
    async def scenario() -> None:
        async with rig(dialect, conditions=NetworkConditions(registration="roaming")) as (_sim, module):
            await module.bring_up(None, APN)
            status = await module.status()
            assert status.registered == "roaming" and status.technology == "4G"
    run(scenario())


def test_no_registration_in_time() -> None:
    async def scenario() -> None:
        conditions = NetworkConditions(registration="searching")
        async with rig("quectel", conditions=conditions, registration_timeout=0.5) as (_sim, module):
            with pytest.raises(NotRegistered) as caught:
                await module.bring_up(None, APN)
            assert caught.value.state == "searching"
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_bring_up_waits_for_the_attach(dialect: str) -> None:
    async def scenario() -> None:
        conditions = NetworkConditions(attach_ms=600)
        # polling slower than the attach: the +CREG/+CEREG URC is what ends the wait early
        async with rig(dialect, conditions=conditions, poll_interval=2.5) as (_sim, module):
            loop = asyncio.get_running_loop()
            started = loop.time()
            await module.bring_up(None, APN)
            assert 0.5 <= loop.time() - started < 2.4
    run(scenario())


def test_the_apn_the_network_wants() -> None:
    async def scenario() -> None:
        conditions = NetworkConditions(required_apn="payments.apn")
        async with rig("quectel", conditions=conditions) as (_sim, module):
            with pytest.raises(DataContextError) as caught:
                await module.bring_up(None, "other.apn")
            assert "activate" in caught.value.reason
            await module.bring_up(None, "payments.apn", "user", "pass")
            assert module.is_up
    run(scenario())


# --- data sockets ----------------------------------------------------------------------------

@pytest.mark.parametrize("dialect", DIALECTS)
def test_socket_round_trip_with_binary_data(dialect: str) -> None:
    payload = os.urandom(7000) + b'\r\nOK\r\n+QIURC: "recv",0\r\n> +CIPRXGET: 1,0\r\nSEND OK\r\n'

    async def scenario() -> None:
        async with rig(dialect) as (sim, module), tcp_peer(echo) as port:
            await module.bring_up(None, APN)
            sock = await module.open_socket("127.0.0.1", port, 5.0)
            await sock.write(payload)
            assert await read_exactly(sock, len(payload)) == payload
            (traffic,) = sim.traffic()
            assert traffic.up_bytes == len(payload) and traffic.down_bytes == len(payload)
            await sock.close()
            await until(lambda: not sim.status().sockets)
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_several_sockets_get_their_own_ids(dialect: str) -> None:
    async def scenario() -> None:
        async with rig(dialect) as (sim, module), tcp_peer(echo) as port:
            await module.bring_up(None, APN)
            sockets = [await module.open_socket("127.0.0.1", port, 5.0) for _ in range(3)]
            assert [s.socket_id for s in sockets] == [0, 1, 2]
            for index, sock in enumerate(sockets):
                await sock.write(bytes([index]) * 10)
            for index, sock in enumerate(sockets):
                assert await read_exactly(sock, 10) == bytes([index]) * 10
            await sockets[1].close()
            again = await module.open_socket("127.0.0.1", port, 5.0)
            assert again.socket_id == 1
            assert len(sim.status().sockets) == 3
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_peer_close_gives_everything_then_end_of_stream(dialect: str) -> None:
    message = bytes(range(256)) * 20

    async def talk_and_leave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(message)
        await writer.drain()

    async def scenario() -> None:
        async with rig(dialect) as (_sim, module), tcp_peer(talk_and_leave) as port:
            await module.bring_up(None, APN)
            sock = await module.open_socket("127.0.0.1", port, 5.0)
            await until(lambda: sock.peer_has_closed)
            assert await read_exactly(sock, len(message) + 1) == message
            assert await sock.read(100) == b""
            with pytest.raises(ModemSocketError):
                await sock.write(b"too late")
            await sock.close()
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_network_closes_the_socket_mid_read(dialect: str) -> None:
    async def scenario() -> None:
        async with rig(dialect) as (sim, module), tcp_peer(echo) as port:
            await module.bring_up(None, APN)
            sock = await module.open_socket("127.0.0.1", port, 5.0)
            await sock.write(b"ping")
            assert await read_exactly(sock, 4) == b"ping"
            reader = asyncio.ensure_future(sock.read(100))
            await asyncio.sleep(0.05)
            assert sim.close_sockets() == 1
            assert await asyncio.wait_for(reader, WAIT) == b""
            with pytest.raises(ModemSocketError):
                await sock.write(b"x")
            await sock.close()
            # the id is free again and the module still connects
            sock = await module.open_socket("127.0.0.1", port, 5.0)
            assert sock.socket_id == 0
    run(scenario())


@pytest.mark.parametrize(("dialect", "code"), [("quectel", 552), ("simcom", 3)])
def test_cme_error_on_open(dialect: str, code: int) -> None:
    async def scenario() -> None:
        async with rig(dialect) as (sim, module), tcp_peer(echo) as port:
            await module.bring_up(None, APN)
            sim.inject_cme(code)
            with pytest.raises(SocketOpenError) as caught:
                await module.open_socket("127.0.0.1", port, 5.0)
            assert caught.value.code == code
            sock = await module.open_socket("127.0.0.1", port, 5.0)
            await sock.write(b"after")
            assert await read_exactly(sock, 5) == b"after"
    run(scenario())


# the module's own error codes for a refused TCP connection: Quectel 566 "socket connect failed",
# SIMCom 1 "network failure"
@pytest.mark.parametrize(("dialect", "code"), [("quectel", 566), ("simcom", 1)])
def test_connection_refused_carries_the_modules_code(dialect: str, code: int) -> None:
    async def scenario() -> None:
        async with rig(dialect) as (_sim, module):
            await module.bring_up(None, APN)
            async with tcp_peer(echo) as port:
                pass  # closed again: nothing listens there
            with pytest.raises(SocketOpenError) as caught:
                await module.open_socket("127.0.0.1", port, 5.0)
            assert caught.value.code == code
            async with tcp_peer(echo) as live:
                sock = await module.open_socket("127.0.0.1", live, 5.0)
                assert sock.socket_id == 0  # the failed id was given back
    run(scenario())


def test_open_before_bring_up_and_bad_hosts_are_open_errors() -> None:
    async def scenario() -> None:
        async with rig("quectel") as (_sim, module):
            with pytest.raises(SocketOpenError):
                await module.open_socket("127.0.0.1", 9, 1.0)
            for host, port in (('evil",1\rAT+CFUN=0', 443), ("", 443), ("host", 0), ("host", 70000)):
                with pytest.raises(SocketOpenError):
                    await module.open_socket(host, port, 1.0)
    run(scenario())


# --- recoveries ------------------------------------------------------------------------------

@pytest.mark.parametrize("dialect", DIALECTS)
def test_registration_loss_then_the_context_is_activated_again(dialect: str) -> None:
    async def scenario() -> None:
        async with rig(dialect) as (sim, module), tcp_peer(echo) as port:
            await module.bring_up(None, APN)
            sock = await module.open_socket("127.0.0.1", port, 5.0)
            reader = asyncio.ensure_future(sock.read(10))
            await asyncio.sleep(0.05)
            sim.set_registration("searching")
            with pytest.raises(ModemSocketError):
                await asyncio.wait_for(reader, WAIT)
            assert not module.is_up  # what the link manager's health check reads
            sim.set_registration("home")
            # back without waiting for a connection to ask: the link manager sees it up again
            await until(lambda: module.is_up)
            assert sim.status().detail in ("pdp=1", "net=open rxget=1")
            sock = await module.open_socket("127.0.0.1", port, 5.0)
            await sock.write(b"back")
            assert await read_exactly(sock, 4) == b"back"
            steps = " | ".join(module.recoveries)
            lost = "pdpdeact" if dialect == "quectel" else "NETWORK CLOSED UNEXPECTEDLY"
            assert lost in steps and "activating the data context" in steps
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_recover_on_request(dialect: str) -> None:
    async def scenario() -> None:
        async with rig(dialect) as (_sim, module), tcp_peer(echo) as port:
            await module.bring_up(None, APN)
            old = await module.open_socket("127.0.0.1", port, 5.0)
            await module.recover("link manager health check failed")
            with pytest.raises(ModemSocketError):
                await old.read(1)
            sock = await module.open_socket("127.0.0.1", port, 5.0)
            await sock.write(b"ok")
            assert await read_exactly(sock, 2) == b"ok"
            assert any("health check" in step for step in module.recoveries)
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_module_restarting_by_itself_is_brought_up_again(dialect: str) -> None:
    async def scenario() -> None:
        async with rig(dialect, pin=TEST_PIN) as (sim, module), tcp_peer(echo) as port:
            await module.bring_up(TEST_PIN, APN)
            old = await module.open_socket("127.0.0.1", port, 5.0)
            sim.reboot()
            await until(lambda: any("restarted by itself" in step for step in module.recoveries))
            with pytest.raises(ModemSocketError):
                await old.read(1)
            await until(lambda: module.is_up)
            sock = await module.open_socket("127.0.0.1", port, 5.0)
            await sock.write(b"again")
            assert await read_exactly(sock, 5) == b"again"
            assert sim.status().sim == "ready"  # the accepted PIN was entered again
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_reset_on_request(dialect: str) -> None:
    async def scenario() -> None:
        async with rig(dialect) as (sim, module), tcp_peer(echo) as port:
            await module.bring_up(None, APN)
            await module.reset("firmware update applied")
            assert module.is_up and sim.status().commands > 0
            steps = " | ".join(module.recoveries)
            assert "AT+CFUN=1,1" in steps and "started again (RDY)" in steps
            sock = await module.open_socket("127.0.0.1", port, 5.0)
            await sock.write(b"x")
            assert await read_exactly(sock, 1) == b"x"
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_module_that_stops_answering_is_reset(dialect: str) -> None:
    async def scenario() -> None:
        async with rig(dialect, command_timeout=0.3, max_timeouts=3, reset_timeout=10.0) as (sim, module):
            await module.bring_up(None, APN)
            sim.set_slow(1000)  # every answer a second late: each command times out

            async def healed_by_the_restart() -> None:
                await until(lambda: sim.status().rebooting, timeout=20.0)
                sim.set_slow(0)

            healer = asyncio.ensure_future(healed_by_the_restart())
            for _ in range(2):
                with pytest.raises(ModemTimeout):
                    await module.status()
            # the third command in a row without an answer: reset, bring-up, then the status
            status = await module.status()
            assert status.registered == "home"
            await healer
            steps = " | ".join(module.recoveries)
            assert "resetting the module (AT+CFUN=1,1)" in steps and "3 AT commands in a row" in steps
            assert module.is_up
    run(scenario(), timeout=60.0)
