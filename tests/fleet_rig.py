"""Test support for the fleet: the mosquitto broker of the test session (started and stopped by
PID, a missing mosquitto failing the test with what to install), device configurations that point
at it, and a terminal run with a driver beside it. TEST KEYS only (sim/fleet/pki.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sim_processes import write_config
from sim_reader import FAST as READER_FAST
from sim_reader import SimReader

from firmware.config import FleetConfig, load_config
from firmware.runtime import Terminal
from firmware.ui_script import ScriptedUi, parse_script
from provisioning.fleet_office import BackOffice
from sim.fleet.broker import MosquittoBroker
from sim.fleet.pki import BACK_OFFICE, FleetPki
from sim.host.server import HostSimulator

FAST = {**READER_FAST, "status_interval": 0.1}


def office(broker: MosquittoBroker) -> BackOffice:
    cert, key = broker.pki.client(BACK_OFFICE)
    return BackOffice("127.0.0.1", broker.port, ca_file=broker.pki.ca_cert, cert_file=cert, key_file=key)


def fleet_section(pki: FleetPki, serial: str, port: int) -> str:
    """A test terminal's [fleet]: quick to reconnect, telemetry at its default period."""
    return pki.section(serial, port, reconnect_max=2)


def fleet_config(pki: FleetPki, serial: str, port: int, **options: Any) -> FleetConfig:
    cert, key = pki.client(serial)
    return FleetConfig(serial, "127.0.0.1", port, pki.ca_cert, cert, key, pki.signing_public, **options)


Driver = Callable[[Terminal], Awaitable[None]]


def run_terminal(tmp_path: Path, fleet: str, driver: Driver, sales: list[dict[str, Any]] | None = None,
                 extra: str = "") -> tuple[Terminal, ScriptedUi, list[Any]]:
    """A terminal with `fleet` ([fleet] section) and the host simulator, its script's sales
    played, then `driver` run beside it; stopped when the driver is done."""
    ui = ScriptedUi(parse_script({"sale": sales or [], "then": "wait"}), out=io.StringIO())

    async def scenario() -> tuple[Terminal, list[Any]]:
        async with contextlib.AsyncExitStack() as stack:
            host = await stack.enter_async_context(HostSimulator(tmp_path / "pki",
                                                                 ledger=tmp_path / "ledger.sqlite3"))
            config = load_config(write_config(tmp_path, host.port, host.pki, fleet + extra))
            terminal = Terminal(config, ui, reader_factory=SimReader, **FAST)  # type: ignore[arg-type]

            async def drive() -> None:
                try:
                    await asyncio.wait_for(driver(terminal), 60)
                finally:
                    terminal.request_stop("driver done")

            driving = asyncio.ensure_future(drive())
            await asyncio.wait_for(terminal.run_until_stopped(), 90)
            await driving
            return terminal, host.ledger.entries()

    terminal, entries = asyncio.run(scenario())
    return terminal, ui, entries


async def until(test: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = test()
        if found:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s")
        await asyncio.sleep(0.02)
