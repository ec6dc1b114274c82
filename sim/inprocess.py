"""One kernel transaction against a simulated card in this process, for tests, the scenario
matrix and `make bench`: the card's `process` stands where the reader would be."""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emv import kernel
from emv.apdu import Response
from emv.context import Transaction
from emv.kernel_config import KernelConfig
from emv.outcome import Outcome
from emv.requests import ApproveOffline, OfflineDecision, Transmit
from firmware import driver
from sim.card.card import SimCard
from sim.card.profile import load_profile

WHEN = datetime.datetime(2026, 11, 26, 12, 0, 0)


@dataclass
class Run:
    outcome: Outcome
    apdus: int
    card: SimCard
    commands: list[str]  # command names sent, in order


def fresh_card(profile: str, seed: int = 1, today: datetime.date | None = None) -> SimCard:
    day = today or WHEN.date()
    card = SimCard(load_profile(profile), rng=random.Random(seed), today=lambda: day)
    card.power_on()
    return card


def transact(card: SimCard, config: KernelConfig, amount: int, *, prompt: Any = None,
             authorizer: Any = None, seed: int = 1, when: datetime.datetime = WHEN,
             fulfil: Callable[[Transmit], Response] | None = None,
             transaction_log: Callable[[str], int] | None = None,
             offline: Callable[[ApproveOffline], OfflineDecision] | None = None, **transaction: Any) -> Run:
    """Run one sale on `card` (already powered on) and count the commands the kernel sent.
    `offline` answers the kernel's `ApproveOffline` (None: every offline approval allowed)."""
    rng = random.Random(seed)
    send = fulfil or driver.card_sender(card.process, card.protocol)
    commands: list[str] = []

    def counted(request: Transmit) -> Response:
        commands.append(request.command.name)
        return send(request)

    txn = Transaction(amount=amount, when=when, **transaction)
    outcome = driver.run(kernel.transaction(config, txn, rng=rng.randbytes, transaction_log=transaction_log),
                         counted, prompt, authorizer, offline)
    return Run(outcome, len(commands), card, commands)
