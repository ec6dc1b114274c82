"""Offline resilience under a flapping radio (the ledger proof).

A stream of sales, some approved by the card offline (an advice to forward), some online with a
PIN, while the cellular network drops and comes back at random: cuts land before an authorization
reaches the host, after the host booked it (the host holds its answers back a little), and in the
middle of forwarding advices and reversals. Once the network stays up and the queue is
forwarded, the host's ledger must hold exactly what the terminal recorded: each approved payment
booked once and not reversed, nothing counting for any other payment, no entry booked twice or
for no payment, nothing left in the queue.

The rig is the terminal's own: the host simulator (`sim.host`) over TLS, reached only through the
modem simulator (Quectel dialect, 3G-like round trip) on a pty driven by
`modem.quectel.QuectelModule` behind a `LinkManager`; each sale is `firmware.sale.run_sale`
(payment recorded, kernel with the host client as authorizer, the card's end recorded, reversals
sent, the queue forwarded when the link worked), as `tpe sale` does.

TEST KEYS only: the simulator's BDK and terminal initial key, the test PKI made in tmp.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from modem_host_rig import close_module, host_config, module_up

from firmware import driver
from firmware.config import load_config
from firmware.host_client import EventLoopThread, HostClient
from firmware.host_store import HostStore
from firmware.links import CellularLink, LinkManager
from firmware.messages import Acceptor
from firmware.payments import Payment, State
from firmware.pin_pad import DukptPinPad
from firmware.saf_queue import Item
from firmware.sale import RoutedAuthorizer, SaleResult, link_connect, run_sale
from firmware.terminal_keys import TerminalKeys
from modem.quectel import QuectelModule
from modem.runner import AtRunner
from sim.host.accounts import AccountRules
from sim.host.ledger import Entry
from sim.host.server import HostSimulator
from sim.inprocess import WHEN, fresh_card
from sim.modem import ModemSimulator, NetworkConditions

CONFIG = load_config()
TERMINAL_KEYS = Path(__file__).resolve().parent.parent / "sim" / "host" / "terminal_test_keys.toml"
ACCEPTOR = Acceptor(terminal_id="TPE00001", merchant_id="000000000000001", acquirer_id="12345")
TIMEOUT = 3.0  # the host client's answer and open time limit
# The card's end is recorded with the sale's time, which goes into the advice: timezone-aware.
SALE_TIME = WHEN.replace(tzinfo=datetime.UTC)

Sale = tuple[str, int, str | None]  # card profile, amount, online PIN
OFFLINE: Sale = ("offline_approving", 1000, None)  # 10.00: the card approves offline (Y1), an advice
ONLINE: Sale = ("visa_cda_online", 10000, "1234")  # 100.00 with an online PIN: always online

SEED = 20261126
SALES = 40
RTT_MS = 80  # the radio's round trip
HOST_DELAY = 0.15  # seconds the host holds an answer back after booking the request
UP_SECONDS = (0.3, 1.5)  # how long the radio stays registered between two outages
DOWN_SECONDS = (0.05, 0.4)  # how long an outage lasts
SETTLE = 0.5  # seconds for the module to see a registration lost (its URC) before a sale
FINAL_FORWARDS = 5  # forwards allowed to drain the queue once the network stays up


@dataclass
class Flapper:
    """Drops and restores the modem simulator's network at seeded random intervals, on the rig's
    loop (where the simulator runs); the network is left up when stopped."""

    modem: ModemSimulator
    rng: random.Random
    outages: int = 0
    _task: asyncio.Task[None] | None = None

    async def _flap(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.rng.uniform(*UP_SECONDS))
                self.modem.set_registration("searching")
                self.outages += 1
                await asyncio.sleep(self.rng.uniform(*DOWN_SECONDS))
                self.modem.set_registration("home")
        finally:
            self.modem.set_registration("home")

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flap())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


@dataclass
class Rig:
    thread: EventLoopThread
    host: HostSimulator
    modem: ModemSimulator
    module: QuectelModule
    runner: AtRunner
    manager: LinkManager
    client: HostClient
    authorizer: RoutedAuthorizer
    keys: TerminalKeys

    def sale(self, sale: Sale, seed: int) -> SaleResult:
        """`tpe sale` on a fresh card; `seed` makes the kernel's random numbers (unpredictable
        number, random selection for online processing)."""
        profile, amount, pin = sale
        card = fresh_card(profile)
        pin_pad = DukptPinPad(self.keys) if pin is not None else None
        return run_sale(CONFIG, amount, driver.card_sender(card.process, card.protocol), pin=pin,
                        authorizer=self.authorizer, pin_pad=pin_pad, when=SALE_TIME,
                        rng=random.Random(seed).randbytes)

    def ledger(self) -> list[Entry]:
        async def entries() -> list[Entry]:  # read on the host's loop, which writes it
            return self.host.ledger.entries()

        return self.thread.run(entries())


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    thread = EventLoopThread("link-flapping")
    modem = ModemSimulator("quectel", NetworkConditions(rtt_ms=RTT_MS), reboot_seconds=0.2, seed=5)
    store = HostStore(tmp_path / "state" / "host.sqlite3")
    keys = TerminalKeys.open(store, TERMINAL_KEYS)

    async def start() -> Rig:
        # money enough on the cards that no online sale is declined for funds
        host = HostSimulator(tmp_path / "pki", rules=AccountRules(opening_balance=100_000_000))
        await host.start()
        runner, module = await module_up(modem)
        config = host_config(host, ACCEPTOR.acquirer_id, TIMEOUT)
        manager = LinkManager([CellularLink(module)], host.host, host.port, timeout=TIMEOUT)
        client = HostClient(config, store, keys, ACCEPTOR, connect=link_connect(manager))
        authorizer = RoutedAuthorizer(client, thread.loop, manager)
        return Rig(thread, host, modem, module, runner, manager, client, authorizer, keys)

    built = thread.run(start())
    yield built

    async def stop() -> None:
        await built.client.close()
        await close_module(built.runner, built.module, modem)
        await built.host.stop()

    thread.run(stop())
    thread.stop()
    store.close()


@dataclass
class Figures:
    """What the run went through: the report, and the proof that the test exercised outages."""

    outages: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # the card's, per kind
    authorizations: int = 0  # 0200s the terminal tried to send
    not_sent: int = 0  # the request never left: no link, or the link broke while opening
    cut_unbooked: int = 0  # it left, the link broke, and the host never booked it
    cut_booked: int = 0  # the host booked it, and its answer was lost in the cut
    reversals: int = 0  # reversals the host acknowledged
    reversed_entries: int = 0  # bookings the reversals undid
    repeats: int = 0  # queue items sent more than once (0221, 0401)
    forwarding_cuts: int = 0  # forwards after a sale that stopped with items still owed
    final_forwards: int = 0  # forwards it took to drain the queue once the network stayed up

    def __str__(self) -> str:
        outcomes = ", ".join(f"{count} {kind}" for kind, count in sorted(self.outcomes.items()))
        return (f"{self.outages} outages; outcomes: {outcomes}; {self.authorizations} authorizations: "
                f"{self.not_sent} not sent, {self.cut_unbooked} cut before the host booked them, "
                f"{self.cut_booked} cut after; {self.reversals} reversals acknowledged, "
                f"{self.reversed_entries} of them undoing a booking; {self.repeats} items repeated; "
                f"{self.forwarding_cuts} forwardings cut; {self.final_forwards} forwards to drain")


def advice_stan(payment: Payment, items: dict[int, Item]) -> str | None:
    """Field 11 of the payment's advice, as the queue keeps it."""
    return None if payment.advice_item is None else str(items[payment.advice_item].payload["11"])


def bookings_of(payment: Payment, items: dict[int, Item], entries: list[Entry]) -> list[Entry]:
    """The payment's authorization (0200 under its STAN) and advice (0220 under the advice's)."""
    advice = advice_stan(payment, items)
    return [entry for entry in entries
            if (entry.mti, entry.stan) in (("0200", payment.stan), ("0220", advice))]


def check_ledger(payments: list[Payment], items: dict[int, Item], entries: list[Entry]) -> None:
    """The host's ledger holds exactly what the terminal recorded."""
    twice = [key for key, count in Counter((e.mti, e.stan) for e in entries).items() if count > 1]
    assert twice == [], f"booked twice: {twice}"
    claimed: set[int] = set()
    for payment in payments:
        mine = bookings_of(payment, items, entries)
        claimed |= {entry.id for entry in mine}
        counting = [entry for entry in mine if entry.counts]
        where = f"payment {payment.id} ({payment.state.value}, STAN {payment.stan}): {mine}"
        reversal = items.get(payment.reversal_item) if payment.reversal_item is not None else None
        if payment.state is State.APPROVED:
            assert len(counting) == 1, where
            assert (counting[0].mti, counting[0].amount, counting[0].rrn) == ("0200", payment.amount,
                                                                               payment.rrn), where
            assert reversal is not None and reversal.settled == "cancelled", where
        elif payment.state is State.APPROVED_OFFLINE:
            assert len(counting) == 1, where
            assert (counting[0].mti, counting[0].advice, counting[0].amount) == ("0220", True,
                                                                                 payment.amount), where
            advice = items[payment.advice_item]  # type: ignore[index]
            assert (advice.settled, advice.code) == ("answered", "00"), where
        else:
            assert payment.state in (State.DECLINED, State.REVERSED, State.ABORTED), where
            assert counting == [] and payment.advice_item is None, where
        if reversal is not None:  # cancelled when the card completed, else acknowledged by the host
            assert reversal.settled in ("answered", "cancelled"), where
    assert [entry for entry in entries if entry.id not in claimed] == [], "booked for no payment"


def tally(figures: Figures, results: list[SaleResult], payments: list[Payment], items: dict[int, Item],
          entries: list[Entry]) -> None:
    booked = {(entry.mti, entry.stan) for entry in entries}
    for result, payment in zip(results, payments, strict=True):
        assert result.payment is not None and result.payment["id"] == payment.id
        figures.outcomes[result.outcome.kind.value] += 1
        host = result.host
        if host is not None and host.stan is not None:
            figures.authorizations += 1
            if host.problem is not None and host.problem.startswith("not sent"):
                figures.not_sent += 1
            elif host.problem is not None and ("0200", payment.stan) in booked:
                figures.cut_booked += 1
            elif host.problem is not None:
                figures.cut_unbooked += 1
        if result.forwarded is not None and result.forwarded.problem is not None:
            figures.forwarding_cuts += 1
    figures.reversals = sum(1 for item in items.values()
                            if item.kind == "reversal" and item.settled == "answered")
    figures.reversed_entries = sum(1 for entry in entries if entry.reversed)
    figures.repeats = sum(1 for item in items.values() if item.attempts > 1)


def test_a_flapping_radio_leaves_every_payment_booked_exactly_as_recorded(rig: Rig) -> None:
    choices = random.Random(SEED)
    flapper = Flapper(rig.modem, random.Random(SEED + 1))
    rig.host.faults.set_delay(HOST_DELAY)
    results: list[SaleResult] = []
    started = time.monotonic()
    rig.thread.run(flapper.start())
    try:
        for number in range(SALES):
            results.append(rig.sale(choices.choice((OFFLINE, ONLINE)), seed=SEED + number))
    finally:
        rig.thread.run(flapper.stop())

    # a last, long outage: an online sale cannot leave, an offline one's advice has to wait
    rig.modem.set_registration("searching")
    rig.thread.run(asyncio.sleep(SETTLE))
    stranded = [rig.sale(ONLINE, seed=SEED + SALES), rig.sale(OFFLINE, seed=SEED + SALES + 1)]
    results += stranded
    rig.modem.set_registration("home")
    rig.host.faults.set_delay(0)
    cut_off, waiting = stranded
    assert cut_off.host is not None and (cut_off.host.problem or "").startswith("not sent"), cut_off.host
    assert cut_off.outcome.kind.value == "declined_unable_online"  # an online PIN is never honoured offline
    assert waiting.outcome.kind.value == "approved_offline"
    assert waiting.forwarded is not None and waiting.forwarded.acknowledged == 0

    # the network stays up: the queue drains within a few forwards
    figures = Figures(outages=flapper.outages + 1)
    queue = rig.client.recorder.queue
    while queue.pending() and figures.final_forwards < FINAL_FORWARDS:
        figures.final_forwards += 1
        rig.authorizer.forward()
    elapsed = time.monotonic() - started

    entries = rig.ledger()
    payments = rig.client.recorder.payments.all()
    items = {item: queue.get(item) for payment in payments
             for item in (payment.reversal_item, payment.advice_item) if item is not None}
    tally(figures, results, payments, items, entries)
    print(f"\n{len(results)} sales in {elapsed:.1f} s: {figures}")

    assert queue.pending() == [] and queue.held() == [], f"the queue did not drain: {figures}"
    assert queue.declined_after_the_fact() == [] and queue.set_aside_items() == [], figures
    assert rig.client.recorder.payments.all(unfinished=True) == [], figures
    check_ledger(payments, items, entries)
    # the run went through what it is meant to; the bounds are generous, as timing (and a busy
    # machine) decides where each cut lands: a few times more of each in a typical run
    assert figures.outages >= 10 and figures.final_forwards >= 1, figures
    assert figures.cut_booked >= 2 and figures.reversed_entries >= 2 and figures.reversals >= 3, figures
    assert figures.repeats >= 2 and figures.forwarding_cuts >= 1, figures
    assert figures.outcomes["approved_online"] >= 5 and figures.outcomes["approved_offline"] >= 5, figures
