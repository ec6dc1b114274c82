"""The forwarder sends the queue by itself when the link comes back (firmware/forwarder.py),
against the real host simulator over TLS on loopback. TEST KEYS only (sim/, tests/)."""

from __future__ import annotations

import asyncio
import datetime
import socket
from pathlib import Path

from firmware.config import HostConfig
from firmware.forwarder import Forwarder
from firmware.host_client import HostClient
from firmware.host_store import HostStore
from firmware.links import LinkManager, OsNetworkLink
from firmware.messages import Acceptor, ReversalReason
from firmware.payment_records import reversal_payload
from firmware.terminal_keys import TerminalKeys
from sim.host.server import HostSimulator

TERMINAL_KEYS = Path(__file__).resolve().parent.parent / "sim" / "host" / "terminal_test_keys.toml"
ACCEPTOR = Acceptor(terminal_id="TPE00001", merchant_id="000000000000001", acquirer_id="12345")


def _original(stan: int) -> dict[str, str]:
    return {"t": "0200", "2": "4761739001010010", "3": "000000", "4": "000000001250", "7": "1126120000",
            "11": f"{stan:06d}", "12": "120000", "13": "1126", "22": "051", "32": "12345", "41": "TPE00001",
            "42": "000000000000001", "49": "978", "55": "9F2701"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_queue_goes_out_when_the_link_comes_back_without_being_asked(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int, list[str]]:
        port = _free_port()
        host = HostSimulator(tmp_path / "pki", port=port)  # makes its test PKI; not listening yet
        store = HostStore(tmp_path / "state" / "host.sqlite3")
        keys = TerminalKeys.open(store, TERMINAL_KEYS)
        config = HostConfig(address="127.0.0.1", port=port, server_name="localhost",
                            ca_file=host.pki.host_ca_cert, cert_file=host.pki.terminal_cert,
                            key_file=host.pki.terminal_key, acquirer_id=ACCEPTOR.acquirer_id, timeout=2)
        links = LinkManager([OsNetworkLink()], "127.0.0.1", port, timeout=1)
        client = HostClient(config, store, keys, ACCEPTOR, connect=links.connect)
        queue = client.recorder.queue
        now = datetime.datetime.now(datetime.UTC)
        for stan in (1, 2, 3):
            payload = reversal_payload(_original(stan), ReversalReason.NO_RESPONSE, stan=10 + stan, at=now)
            queue.add("reversal", payload, amount=1250, currency=978, created=now)
        forwarder = Forwarder(client, links, retry=3600)  # only the link event can wake it
        task = asyncio.get_running_loop().create_task(forwarder.run())
        try:
            await links.check()  # nobody listens: the link is down, nothing is sent
            await asyncio.sleep(0.2)
            before = queue.status().count
            await host.start()
            await links.check()  # the link answers again: "up"
            for _ in range(100):
                if queue.status().count == 0:
                    break
                await asyncio.sleep(0.05)
            after = queue.status().count
            received = [str(report.items[0].mti) for report in forwarder.reports if report.items]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
            await host.stop()
            store.close()
        return before, after, received

    before, after, received = asyncio.run(scenario())
    assert before == 3 and after == 0  # nothing went out while down, everything once it was up
    assert received == ["0400"]  # one forwarding, woken by the link event
