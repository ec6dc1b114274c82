"""Forwards the store-and-forward queue by itself: when a link comes up (the link manager's
"up", "failover" and "failback" events), when woken (after an offline sale), and every `retry`
seconds while something waits. A service of the firmware's event loop; the host client's lock
keeps a forwarding out of a sale's way and the reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from firmware.host_client import FORWARD_WINDOW, ForwardReport, HostClient, HostClientError
from firmware.links import LinkEvent, LinkManager
from firmware.saf_queue import SafQueueError

log = logging.getLogger(__name__)

LINK_BACK = frozenset({"up", "failover", "failback"})
RETRY = 60.0  # seconds between attempts while items wait and no link event comes
KEPT_REPORTS = 16


class Forwarder:
    def __init__(self, client: HostClient, links: LinkManager | None = None, *, retry: float = RETRY,
                 window: int = FORWARD_WINDOW) -> None:
        self._client = client
        self._retry = retry
        self._window = window
        self._wake = asyncio.Event()
        self.reports: list[ForwardReport] = []  # the last few, for the UI and telemetry
        if links is not None:
            links.subscribe(self._on_link_event)

    def _on_link_event(self, event: LinkEvent) -> None:
        if event.kind in LINK_BACK:
            self._wake.set()

    def wake(self) -> None:
        """Forward now (call on the event loop), e.g. after an offline approval."""
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._retry)
            self._wake.clear()
            await self.forward_once()

    async def forward_once(self) -> ForwardReport | None:
        """One forwarding when something waits; None when nothing did or it could not start."""
        try:
            if self._client.recorder.queue.status().count == 0:
                return None
            report = await self._client.forward(self._window)
        except (HostClientError, SafQueueError) as exc:
            log.error("store-and-forward: forwarding failed: %s", exc)
            return None
        self.reports = [*self.reports, report][-KEPT_REPORTS:]
        refused = sum(1 for item in report.items if item.refused)
        log.info("store-and-forward: %d sent, %d acknowledged%s%s", len(report.items), report.acknowledged,
                 f", {refused} DECLINED AFTER THE FACT" if refused else "",
                 f"; {report.problem}" if report.problem else "")
        return report
