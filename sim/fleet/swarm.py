"""Many simulated terminals' fleet links in one event loop (`firmware.fleet_client.FleetLink`,
the devices' own code): the reconnection tests and `make bench`'s 1,000 terminals."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from firmware.config import FleetConfig
from firmware.fleet_client import FleetLink


class Swarm:
    def __init__(self, configs: Sequence[FleetConfig]) -> None:
        self.links = [FleetLink(config, on_connected=lambda: None, on_message=lambda topic, payload: None)
                      for config in configs]
        self.tasks: list[asyncio.Future[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.ensure_future(link.run()) for link in self.links]

    @property
    def connected(self) -> int:
        return sum(link.connected for link in self.links)

    async def stop(self) -> None:
        """Each link said goodbye, then its task ended."""
        for link in self.links:
            await link.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
