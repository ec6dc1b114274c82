"""The acquirer link over the cellular module, end to end: a kernel sale on a simulated card
(`sim.inprocess.transact`), the host client (`firmware.host_client`) whose connection is a
`ModemSocket` of the driver, the modem simulator on a real pty carrying the bytes over its
simulated radio to the host simulator (`sim.host`) on loopback. TLS runs through the modem:
the module only ever carries ciphertext.

TEST KEYS only: the simulator's BDK and terminal initial key, the test PKI made in tmp.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from modem_host_rig import close_module, host_config, module_up

from emv.outcome import OutcomeKind
from firmware.config import HostConfig, load_config
from firmware.host_client import BlockingAuthorizer, EventLoopThread, HostClient, HostUnavailable
from firmware.host_store import HostStore
from firmware.messages import Acceptor
from firmware.pin_pad import DukptPinPad
from firmware.prompts import ScriptedPrompt
from firmware.terminal_keys import TerminalKeys
from firmware.tls_stream import TlsError, TlsStream, client_context
from modem.module import Module
from modem.runner import AtRunner
from sim.host.server import HostSimulator
from sim.inprocess import fresh_card, transact
from sim.modem import ModemSimulator, NetworkConditions

CONFIG = load_config()
TERMINAL_KEYS = Path(__file__).resolve().parent.parent / "sim" / "host" / "terminal_test_keys.toml"
ACCEPTOR = Acceptor(terminal_id="TPE00001", merchant_id="000000000000001", acquirer_id="12345")
AMOUNT = 10000  # above the default floor limit: visa_cda_online goes online with an online PIN
OPEN_TIMEOUT = 3.0


@dataclass
class Rig:
    thread: EventLoopThread
    host: HostSimulator
    modem: ModemSimulator
    module: Module
    runner: AtRunner
    tmp: Path

    def config(self) -> HostConfig:
        return host_config(self.host, ACCEPTOR.acquirer_id, 10.0)

    async def connect(self) -> object:
        return await self.module.open_socket(self.host.host, self.host.port, OPEN_TIMEOUT)


@pytest.fixture(params=["quectel", "simcom"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    dialect: str = request.param
    thread = EventLoopThread("modem-link")
    # a radio with a real round trip and a cellular uplink's bandwidth
    modem = ModemSimulator(dialect, NetworkConditions(rtt_ms=60, bandwidth_kbit=2000), reboot_seconds=0.2,
                           seed=2)

    async def start() -> Rig:
        host = HostSimulator(tmp_path / "pki")
        await host.start()
        runner, module = await module_up(modem, dialect)
        return Rig(thread, host, modem, module, runner, tmp_path)

    built = thread.run(start())
    yield built

    async def stop() -> None:
        await close_module(built.runner, built.module, modem)
        await built.host.stop()

    thread.run(stop())
    thread.stop()


def test_tls_handshake_through_the_modem(rig: Rig) -> None:
    pki = rig.host.pki
    context = client_context(pki.host_ca_cert, pki.terminal_cert, pki.terminal_key)

    async def scenario() -> tuple[str | None, dict[str, object]]:
        sock = await rig.connect()
        tls = await TlsStream.connect(sock, context, "localhost", 10.0)  # type: ignore[arg-type]
        try:
            return tls.version, tls.peer_certificate()
        finally:
            await tls.close()

    version, certificate = rig.thread.run(scenario())
    assert version in ("TLSv1.3", "TLSv1.2")
    assert certificate.get("subject")
    (traffic,) = rig.modem.traffic()
    assert traffic.up_bytes > 0 and traffic.down_bytes > 0


def test_a_host_name_the_certificate_does_not_hold_is_refused(rig: Rig) -> None:
    pki = rig.host.pki
    context = client_context(pki.host_ca_cert, pki.terminal_cert, pki.terminal_key)

    async def scenario() -> None:
        sock = await rig.connect()
        await TlsStream.connect(sock, context, "acquirer.example", 10.0)  # type: ignore[arg-type]

    with pytest.raises(TlsError, match="certificate"):
        rig.thread.run(scenario())
    # the refused connection was closed on the module
    rig.thread.run(asyncio.sleep(0.3))
    assert not rig.modem.status().sockets


def test_sale_approved_online_over_the_modem(rig: Rig) -> None:
    store = HostStore(rig.tmp / "state" / "host.sqlite3")
    try:
        keys = TerminalKeys.open(store, TERMINAL_KEYS)
        client = HostClient(rig.config(), store, keys, ACCEPTOR, connect=rig.connect)
        authorizer = BlockingAuthorizer(client, rig.thread.loop)
        prompt = ScriptedPrompt(pin="1234", pin_pad=DukptPinPad(keys))
        run = transact(fresh_card("visa_cda_online"), CONFIG.kernel, AMOUNT, prompt=prompt,
                       authorizer=authorizer)
        authorizer.complete(run.outcome)
        outcome = run.outcome
        assert outcome.kind is OutcomeKind.APPROVED_ONLINE
        assert (outcome.first_cryptogram_type, outcome.cryptogram_type) == ("ARQC", "TC")
        assert outcome.issuer_authentication == "passed"  # the card checked the host's ARPC
        (entry,) = rig.host.ledger.entries()
        assert entry.approved and entry.amount == AMOUNT and entry.terminal_id == ACCEPTOR.terminal_id
        assert outcome.host_reference == entry.rrn
        assert client.links_opened == 1
        (traffic,) = rig.modem.traffic()
        assert traffic.state == "connected" and traffic.up_bytes > 0 and traffic.down_bytes > 0
        rig.thread.run(client.close())
    finally:
        store.close()


def test_the_link_comes_back_after_the_network_drops_it(rig: Rig) -> None:
    store = HostStore(rig.tmp / "state" / "host.sqlite3")
    loop = rig.thread.loop
    try:
        keys = TerminalKeys.open(store, TERMINAL_KEYS)
        client = HostClient(rig.config(), store, keys, ACCEPTOR, connect=rig.connect)
        assert rig.thread.run(client.echo()) == "00"
        # the radio goes and stays away: the module loses its registration and data context
        rig.modem.set_registration("searching")
        started = time.monotonic()
        with pytest.raises(HostUnavailable):
            rig.thread.run(client.echo())
        assert time.monotonic() - started < OPEN_TIMEOUT + 2.0  # the open's time limit holds
        rig.modem.set_registration("home")
        assert rig.thread.run(client.echo()) == "00"
        assert client.links_opened == 2
        # a short loss, noticed between two requests: the next connection waits for the network
        losses = len(rig.module.recoveries)
        rig.modem.set_registration("searching")
        deadline = time.monotonic() + 5.0
        while not any(s.startswith("data context lost") for s in rig.module.recoveries[losses:]):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.05)  # the host link's reader sees its socket fail
        loop.call_soon_threadsafe(loop.call_later, 0.5, rig.modem.set_registration, "home")
        assert rig.thread.run(client.echo()) == "00"
        assert client.links_opened == 3
        activations = [s for s in rig.module.recoveries if s.startswith("activating the data context")]
        assert len(activations) == 2  # the attempt while the network was away never got that far
        rig.thread.run(client.close())
    finally:
        store.close()
