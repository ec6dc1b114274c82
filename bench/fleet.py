"""`make bench` figures of the fleet link (issue 9): 1,000 simulated terminals in this process,
each its own MQTT v5 connection over TLS with its own certificate (`firmware.fleet_client.
FleetLink`, the device's code), connected to one mosquitto with the per-device ACL, each sending
telemetry every 10 s; a back office subscribed to all of them.

- broker CPU: utime + stime of the mosquitto process over the steady window, percent of one core;
- latency: from a terminal's publish to the back office's receipt (same clock), p50/p95/p99;
- the reconnect storm after a broker restart: how long until every terminal is back, how the
  reconnections spread (the busiest 100 ms), with the jittered backoff of the device's code.

Report only. `python -m bench.fleet [TERMINALS] [SECONDS]` runs it alone.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.terminal import cpu_seconds, rss_mb
from firmware.config import FleetConfig
from firmware.fleet_client import FleetLink
from provisioning.fleet_office import BackOffice
from sim.fleet.broker import MosquittoBroker
from sim.fleet.pki import BACK_OFFICE, make_fleet_pki
from sim.fleet.swarm import Swarm

TERMINALS = 1000
PERIOD = 10.0  # seconds between two telemetry messages of one terminal
STEADY = 60.0  # seconds measured


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class _Latencies:
    """The back office's receipt times of the bench's telemetry."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: list[float] = []
        self.counting = False

    def message(self, client: object, userdata: object, message: object) -> None:
        payload = getattr(message, "payload", b"")
        if not self.counting or not payload:
            return
        try:
            sent = json.loads(payload)["sent"]
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            self.values.append(time.time() - sent)


async def _run(terminals: int, steady: float, folder: Path) -> dict[str, float]:
    results: dict[str, float] = {}
    pki = make_fleet_pki(folder / "pki")
    started = time.perf_counter()
    configs = []
    for n in range(terminals):
        cert, key = pki.client(f"BENCH-{n:04d}")
        configs.append((cert, key))
    results["fleet_certificates_made_s"] = round(time.perf_counter() - started, 1)
    broker = MosquittoBroker(folder / "broker", pki)
    broker.start()
    office_cert, office_key = pki.client(BACK_OFFICE)
    latencies = _Latencies()
    office = BackOffice("127.0.0.1", broker.port, ca_file=pki.ca_cert, cert_file=office_cert,
                        key_file=office_key)
    swarm = Swarm([FleetConfig(f"BENCH-{n:04d}", "127.0.0.1", broker.port, pki.ca_cert, cert, key,
                               pki.signing_public, telemetry_interval=PERIOD, reconnect_max=30)
                   for n, (cert, key) in enumerate(configs)])
    links = swarm.links
    try:
        office.__enter__()
        office.client.message_callback_add("tpe/+/telemetry", latencies.message)
        started = time.perf_counter()
        swarm.start()
        while swarm.connected < terminals:
            if time.perf_counter() - started > 120:
                raise RuntimeError(f"only {swarm.connected} terminals connected")
            await asyncio.sleep(0.05)
        results["fleet_connect_all_s"] = round(time.perf_counter() - started, 2)
        payload = {"version": "tpe 0.1.0", "route": "4G", "signal_bars": 3, "battery_percent": 80,
                   "pending_count": 0, "pending_amounts": {}, "alerts": [], "training": False,
                   "journal": {"ticket": {"seq": 1234, "sig": "0123456789abcdef"}}}

        async def telemetry(link: FleetLink) -> None:
            await asyncio.sleep(random.random() * PERIOD)  # terminals do not start in step
            while True:
                body = {**payload, "serial": link.config.serial, "sent": time.time()}
                link.publish(link.topics.telemetry, json.dumps(body).encode(), retain=True)
                await asyncio.sleep(PERIOD)

        senders = [asyncio.ensure_future(telemetry(link)) for link in links]
        await asyncio.sleep(PERIOD)  # every terminal has sent once
        latencies.counting = True
        cpu_before, wall_before = cpu_seconds(broker.pid or 0), time.perf_counter()
        ours_before = time.process_time()
        await asyncio.sleep(steady)
        cpu = cpu_seconds(broker.pid or 0) - cpu_before
        wall = time.perf_counter() - wall_before
        latencies.counting = False
        ours = time.process_time() - ours_before
        with latencies.lock:
            values = list(latencies.values)
        results["fleet_terminals"] = terminals
        results["fleet_telemetry_messages_per_s"] = round(len(values) / wall, 1)
        results["fleet_broker_cpu_percent_of_one_core"] = round(100 * cpu / wall, 2)
        results["fleet_broker_rss_mb"] = round(rss_mb(broker.pid or 0), 1)
        results["fleet_simulator_cpu_percent_of_one_core"] = round(100 * ours / wall, 1)
        results["fleet_latency_ms_p50"] = round(1000 * statistics.median(values), 2)
        results["fleet_latency_ms_p95"] = round(1000 * _percentile(values, 0.95), 2)
        results["fleet_latency_ms_p99"] = round(1000 * _percentile(values, 0.99), 2)
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)

        connections = [link.connections for link in links]
        waits = [len(link.delays) for link in links]
        broker.stop()
        while any(link.connected for link in links):
            await asyncio.sleep(0.01)
        broker.start()
        up = time.perf_counter()
        back: dict[int, float] = {}
        while len(back) < terminals:
            now = time.perf_counter()
            for n, link in enumerate(links):
                if n not in back and link.connections > connections[n]:
                    back[n] = now - up
            if now - up > 180:
                raise RuntimeError(f"only {len(back)} terminals came back")
            await asyncio.sleep(0.005)
        times = sorted(back.values())
        buckets: dict[int, int] = {}
        for moment in times:
            buckets[int(moment * 10)] = buckets.get(int(moment * 10), 0) + 1
        results["fleet_reconnect_all_s"] = round(times[-1], 2)
        results["fleet_reconnect_half_s"] = round(times[len(times) // 2], 2)
        results["fleet_reconnect_p90_s"] = round(_percentile(times, 0.9), 2)
        results["fleet_reconnect_busiest_100ms"] = max(buckets.values())
        # each terminal waits once after losing the link; every further wait followed a refused attempt
        results["fleet_reconnect_attempts_failed"] = sum(len(link.delays) - before - 1
                                                         for link, before in zip(links, waits, strict=True))
    finally:
        await swarm.stop()
        office.close()
        broker.stop()
    return results


def bench_fleet(results: dict[str, float], terminals: int = TERMINALS, steady: float = STEADY) -> None:
    with tempfile.TemporaryDirectory(prefix="tpe-bench-fleet-") as folder:
        results.update(asyncio.run(_run(terminals, steady, Path(folder))))


if __name__ == "__main__":
    found: dict[str, float] = {}
    bench_fleet(found, int(sys.argv[1]) if len(sys.argv) > 1 else TERMINALS,
                float(sys.argv[2]) if len(sys.argv) > 2 else STEADY)
    for name, value in sorted(found.items()):
        print(f"{name:<48} {value}")
