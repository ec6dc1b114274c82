"""The store-and-forward figures the merchant sees: `tpe saf status`, the UI's status bar and the
fleet telemetry all read them from here, so that they agree."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from firmware.money import alpha
from firmware.offline_limits import OfflineLimits, overdue
from firmware.saf_queue import SafQueue


@dataclass(frozen=True)
class SafFigures:
    count: int  # items waiting for the host (offline approvals and reversals)
    amount_per_currency: dict[int, int]  # offline approvals waiting, minor units per ISO 4217 code
    oldest: datetime.datetime | None
    oldest_age_s: float | None
    overdue: bool  # the oldest has waited longer than the [offline] max_age: an alert
    declined_after_the_fact: int  # offline approvals the host then refused: an alert
    set_aside: int  # damaged items kept for a technician: an alert

    @property
    def alerts(self) -> list[str]:
        out = []
        if self.overdue:
            out.append("overdue")
        if self.declined_after_the_fact:
            out.append("declined_after_the_fact")
        if self.set_aside:
            out.append("set_aside")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count,
                "amount_per_currency": {alpha(c): a for c, a in self.amount_per_currency.items()},
                "oldest": self.oldest.isoformat() if self.oldest else None,
                "oldest_age_s": None if self.oldest_age_s is None else round(self.oldest_age_s, 1),
                "overdue": self.overdue, "declined_after_the_fact": self.declined_after_the_fact,
                "set_aside": self.set_aside, "alerts": self.alerts}


def figures(queue: SafQueue, limits: OfflineLimits, now: datetime.datetime) -> SafFigures:
    """The queue's figures at `now` (timezone-aware). Raises `SafQueueError`."""
    status = queue.status()
    age = (now - status.oldest_created).total_seconds() if status.oldest_created else None
    return SafFigures(status.count, status.amount_per_currency, status.oldest_created, age,
                      overdue(limits, status, now), len(queue.declined_after_the_fact()),
                      len(queue.set_aside_items()))
