"""What the tests running the host client over the simulated cellular module share: the module
brought up on the modem simulator's pty, the host configuration for the host simulator, and
closing them in order. TEST KEYS only: the host simulator's test PKI."""

from __future__ import annotations

from typing import Any

from firmware.config import HostConfig
from modem.module import Module
from modem.quectel import QuectelModule
from modem.runner import AtRunner
from modem.serial_port import open_serial
from modem.simcom import SimcomModule
from sim.host.server import HostSimulator
from sim.modem import ModemSimulator

APN = "internet.test"
DRIVERS: dict[str, type[Module]] = {"quectel": QuectelModule, "simcom": SimcomModule}


async def module_up(modem: ModemSimulator, dialect: str = "quectel") -> tuple[AtRunner, Any]:
    """The module's driver over the simulator's pty, registered and with its data context up."""
    runner = AtRunner(await open_serial(await modem.open()))
    await runner.start()
    module = DRIVERS[dialect](runner, registration_timeout=5.0, poll_interval=0.1)
    await module.bring_up(None, APN)
    return runner, module


def host_config(host: HostSimulator, acquirer_id: str, timeout: float) -> HostConfig:
    """[host] for the running host simulator, its test PKI pinned."""
    pki = host.pki
    return HostConfig(address=host.host, port=host.port, server_name="localhost", ca_file=pki.host_ca_cert,
                      cert_file=pki.terminal_cert, key_file=pki.terminal_key, acquirer_id=acquirer_id,
                      timeout=timeout)


async def close_module(runner: AtRunner, module: Any, modem: ModemSimulator) -> None:
    await module.close()
    await runner.close()
    await modem.close()
