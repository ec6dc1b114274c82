"""The acquirer host client (firmware/host_client.py) against the real host simulator (sim/host).

Every sale runs the real kernel on a simulated card (`sim.inprocess.transact`) in the test's
thread; the client and the host simulator share an event loop in another thread
(`EventLoopThread`), the kernel reaching the client through `BlockingAuthorizer`. The host checks
MACs, PIN blocks and ARQCs with its own keys; faults (`sim/host/faults.py`) drop, close or spoil
its answers.

TEST KEYS only: the simulator's BDK and terminal initial key, the test PKI made in tmp.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from emv.outcome import Outcome, OutcomeKind
from firmware import messages
from firmware.config import HostConfig, load_config
from firmware.dukpt import split_ksn
from firmware.host_client import BlockingAuthorizer, EventLoopThread, HostClient, HostUnavailable
from firmware.host_store import HostStore
from firmware.keystore import Keystore
from firmware.messages import Acceptor
from firmware.payment_records import PaymentRecorder
from firmware.payments import Payments
from firmware.pin_pad import DukptPinPad
from firmware.prompts import ScriptedPrompt
from firmware.saf_queue import FILE_NAME, Item, SafQueue
from firmware.terminal_keys import TerminalKeys
from firmware.tls_stream import ConnectError
from sim.host.server import HostSimulator
from sim.inprocess import Run, fresh_card, transact

CONFIG = load_config()
TERMINAL_KEYS = Path(__file__).resolve().parent.parent / "sim" / "host" / "terminal_test_keys.toml"
ACCEPTOR = Acceptor(terminal_id="TPE00001", merchant_id="000000000000001", acquirer_id="12345")
AMOUNT = 10000  # above the default floor limit: visa_cda_online goes online with an online PIN
TIMEOUT = 1.0
UNABLE = (OutcomeKind.APPROVED_UNABLE_ONLINE, OutcomeKind.DECLINED_UNABLE_ONLINE)


class RecordingQueue(SafQueue):
    """The real store-and-forward queue, with the order of its reversal writes kept for the test."""

    def __init__(self, path: Path, events: list[str]) -> None:
        super().__init__(path, Keystore.open(path.parent))
        self.events = events

    def insert(self, db: Any, kind: Any, payload: dict[str, Any], **options: Any) -> int:
        item = super().insert(db, kind, payload, **options)
        if kind == "reversal":
            self.events.append(f"record {payload['11']}")
        return item

    def release(self, item_id: int, payload: dict[str, Any] | None = None, db: Any = None) -> None:
        super().release(item_id, payload, db)
        self.events.append("released")

    def mark_sent(self, item_id: int) -> None:
        super().mark_sent(item_id)
        self.events.append("attempted")

    def mark_answered(self, item_id: int, response_code: str, at: Any) -> None:
        super().mark_answered(item_id, response_code, at)
        self.events.append("acknowledged")


@dataclass
class Rig:
    tmp: Path
    thread: EventLoopThread
    host: HostSimulator
    events: list[str] = field(default_factory=list)  # store writes and frames the host received
    seen: list[messages.Fields] = field(default_factory=list)  # requests the host received
    clients: list[HostClient] = field(default_factory=list)
    stores: list[HostStore] = field(default_factory=list)
    queues: list[SafQueue] = field(default_factory=list)
    on_request: Callable[[messages.Fields], None] | None = None

    def run(self, coroutine: Any) -> Any:
        return self.thread.run(coroutine)

    def terminal(self, *, timeout: float = TIMEOUT,
                 connect: Any = None) -> tuple[HostClient, BlockingAuthorizer, TerminalKeys]:
        """A terminal's client over its state database in tmp (the same file every time: a
        second call is the terminal after a restart)."""
        store = HostStore(self.tmp / "state" / "host.sqlite3")
        self.stores.append(store)
        queue = RecordingQueue(self.tmp / "state" / FILE_NAME, self.events)
        self.queues.append(queue)
        keys = TerminalKeys.open(store, TERMINAL_KEYS)
        pki = self.host.pki
        config = HostConfig(address="127.0.0.1", port=self.host.port, server_name="localhost",
                            ca_file=pki.host_ca_cert, cert_file=pki.terminal_cert, key_file=pki.terminal_key,
                            acquirer_id=ACCEPTOR.acquirer_id, timeout=timeout)
        client = HostClient(config, store, keys, ACCEPTOR, connect,
                            recorder=PaymentRecorder(Payments(queue), store, ACCEPTOR))
        self.clients.append(client)
        return client, BlockingAuthorizer(client, self.thread.loop), keys

    def restart(self) -> None:
        """The terminal loses power: its connection and its open database go."""
        for client in self.clients:
            self.run(client.close())
        for store in self.stores:
            store.close()
        for queue in self.queues:
            queue.close()
        self.clients.clear()
        self.stores.clear()
        self.queues.clear()

    def sale(self, authorizer: BlockingAuthorizer, keys: TerminalKeys, *, pin: str = "1234",
             profile: str = "visa_cda_online", seed: int = 1) -> Run:
        prompt = ScriptedPrompt(pin=pin, pin_pad=DukptPinPad(keys))
        run = transact(fresh_card(profile), CONFIG.kernel, AMOUNT, prompt=prompt, authorizer=authorizer,
                       seed=seed)
        authorizer.complete(run.outcome)
        return run

    def pending(self) -> list[Item]:
        """The reversals owed, held or not."""
        queue = self.queues[-1]
        return [item for item in queue.pending(kind="reversal") + queue.held()]


def _start_host(rig_tmp: Path, **options: Any) -> Callable[[], Any]:
    async def start() -> HostSimulator:
        host = HostSimulator(rig_tmp / "pki", **options)
        await host.start()
        return host
    return start


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**host_options: Any) -> Rig:
        thread = EventLoopThread()
        host = thread.run(_start_host(tmp_path, **host_options)())
        rig = Rig(tmp_path, thread, host)
        handle = host.processor.handle

        def watched(frame: bytes) -> Any:
            # what the host received, and how many reversals the terminal had on disk by then
            request = messages.unpack(frame)
            rig.seen.append(request)
            rig.events.append(f"host got {request['t']} {request['11']}")
            if rig.on_request is not None:
                rig.on_request(request)
            return handle(frame)

        host.processor.handle = watched  # type: ignore[method-assign]
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.restart()
        rig.run(rig.host.stop())
        rig.thread.stop()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


def card_requests(rig: Rig) -> list[messages.Fields]:
    return [request for request in rig.seen if request["t"] in ("0200", "0400", "0401")]


# --- approved, declined --------------------------------------------------------------------

def test_approved_sale_with_the_arpc_accepted_by_the_card(rig: Rig) -> None:
    client, authorizer, _keys = rig.terminal()
    run = rig.sale(authorizer, _keys)
    outcome = run.outcome
    assert outcome.kind is OutcomeKind.APPROVED_ONLINE
    assert (outcome.first_cryptogram_type, outcome.cryptogram_type) == ("ARQC", "TC")
    assert outcome.issuer_authentication == "passed"  # the card checked the host's ARPC
    assert outcome.response_code == b"00"
    (entry,) = rig.host.ledger.entries()
    assert entry.approved and not entry.reversed and entry.amount == AMOUNT and entry.mti == "0200"
    assert entry.terminal_id == ACCEPTOR.terminal_id
    assert outcome.host_reference == entry.rrn
    assert outcome.authorization_code == (entry.approval_code or "").encode()
    report = client.last
    assert report is not None
    assert (report.response_code, report.rrn, report.approved) == ("00", entry.rrn, True)
    assert report.reversals == []
    assert f"{report.stan:06d}" == entry.stan
    # the PIN block and the MAC of the 0200 share one KSN (docs/host-protocol.md, field 52)
    (request,) = card_requests(rig)
    assert "52" in request and split_ksn(bytes.fromhex(request["53"]))[1] == 1
    assert rig.pending() == []


def test_wrong_online_pin_is_declined_55(rig: Rig) -> None:
    client, authorizer, keys = rig.terminal()
    run = rig.sale(authorizer, keys, pin="9999")
    assert run.outcome.kind is OutcomeKind.DECLINED_ONLINE
    assert run.outcome.response_code == b"55"
    assert client.last is not None and client.last.response_code == "55" and client.last.reversals == []
    (entry,) = rig.host.ledger.entries()
    assert entry.response_code == "55" and not entry.approved
    assert rig.pending() == []


def test_an_approval_the_card_then_declines_is_reversed(rig: Rig) -> None:
    client, authorizer, keys = rig.terminal()
    prompt = ScriptedPrompt(pin="1234", pin_pad=DukptPinPad(keys))
    run = transact(fresh_card("visa_cda_online"), CONFIG.kernel, AMOUNT, prompt=prompt, authorizer=authorizer)
    assert run.outcome.kind is OutcomeKind.APPROVED_ONLINE
    # as if the card had answered AAC to the second GENERATE AC
    declined: Outcome = dataclasses.replace(run.outcome, kind=OutcomeKind.DECLINED_ONLINE,
                                            cryptogram_type="AAC")
    (report,) = authorizer.complete(declined)
    assert report.acknowledged and (report.mti, report.reason) == ("0400", "06")
    assert authorizer.complete(declined) == []  # reversed once
    reversal = card_requests(rig)[-1]
    assert reversal["t"] == "0400" and reversal["39"] == "06"
    assert bytes.fromhex(reversal["55"]) == run.outcome.chip_data
    (entry,) = rig.host.ledger.entries()
    assert entry.reversed
    assert client.last is not None and client.last.reversals == [report]


def test_an_approval_this_terminal_cannot_honour_is_declined_and_reversed(rig: Rig) -> None:
    client, authorizer, keys = rig.terminal()
    rig.host.faults.decline_next(1, "10")  # approved for a partial amount (docs/host-protocol.md)
    run = rig.sale(authorizer, keys)
    assert run.outcome.kind is OutcomeKind.DECLINED_ONLINE
    assert client.last is not None and client.last.response_code == "10"
    (reversal,) = client.last.reversals
    assert (reversal.mti, reversal.reason, reversal.acknowledged) == ("0400", "17", True)
    answer_rrn = rig.host.ledger.entries()[0].rrn
    sent = card_requests(rig)[-1]
    assert sent["t"] == "0400" and sent["37"] == answer_rrn  # the response's reference goes back
    assert rig.pending() == []


def test_a_pin_block_of_another_ksn_is_never_sent(rig: Rig) -> None:
    client, authorizer, keys = rig.terminal()

    class OtherKsn:
        label = "changes the KSN of the PIN block"

        def authorize(self, request: Any) -> Any:
            return authorizer.authorize(dataclasses.replace(request, pin_key_serial=bytes(12)))

    prompt = ScriptedPrompt(pin="1234", pin_pad=DukptPinPad(keys))
    run = transact(fresh_card("visa_cda_online"), CONFIG.kernel, AMOUNT, prompt=prompt, authorizer=OtherKsn())
    assert run.outcome.kind in UNABLE
    assert client.last is not None and client.last.problem is not None and "KSN" in client.last.problem
    assert rig.seen == [] and rig.pending() == []


# --- no answer: the reversal first -----------------------------------------------------------

def test_timeout_records_one_reversal_before_the_0400_then_repeats_0401_after_a_drop(rig: Rig) -> None:
    client, authorizer, keys = rig.terminal()
    rig.host.faults.arm("drop")  # the host books the 0200 and never answers

    def close_on_0400(request: messages.Fields) -> None:
        if request["t"] == "0400":  # ... and drops the connection instead of answering the 0400
            rig.host.faults.arm("close")

    rig.on_request = close_on_0400
    run = rig.sale(authorizer, keys)
    assert run.outcome.kind in UNABLE
    sale_stan = card_requests(rig)[0]["11"]
    # committed held before the 0200 left, released when no answer came, marked sent before the 0400
    assert rig.events == [f"record {sale_stan}", f"host got 0200 {sale_stan}", "released", "attempted",
                          f"host got 0400 {card_requests(rig)[1]['11']}"]
    report = client.last
    assert report is not None and report.problem is not None and "no answer" in report.problem
    (first,) = report.reversals
    assert (first.mti, first.reason, first.acknowledged) == ("0400", "68", False)
    (owed,) = rig.pending()
    assert owed.attempts == 1 and owed.payload["11"] == sale_stan

    rig.events.clear()
    (second,) = rig.run(client.send_reversals())
    assert (second.mti, second.acknowledged, second.response_code) == ("0401", True, "00")
    assert rig.events == ["attempted", f"host got 0401 {card_requests(rig)[1]['11']}", "acknowledged"]
    assert rig.pending() == []
    assert rig.run(client.send_reversals()) == []  # acknowledged once: nothing more to send
    assert client.links_opened == 2  # the dropped connection was opened again

    original, reversal, repeat = card_requests(rig)
    assert reversal["90"][:20] == "0200" + original["11"] + original["7"]
    # a repeat is the same message: same STAN and field 7, a new KSN and MAC
    assert {k: v for k, v in repeat.items() if k not in ("t", "53", "64", "128")} == \
        {k: v for k, v in reversal.items() if k not in ("t", "53", "64", "128")}
    assert repeat["53"] != reversal["53"] != original["53"]
    assert not any(key in reversal for key in ("2", "14", "35", "52"))  # no card data
    (entry,) = rig.host.ledger.entries()
    assert entry.reversed
    database = sqlite3.connect(rig.tmp / "state" / FILE_NAME)
    assert database.execute("SELECT COUNT(*) FROM item WHERE kind = 'reversal'").fetchone() == (1,)
    database.close()


def test_a_late_answer_is_ignored_and_the_reversal_sent_again_later(rig: Rig) -> None:
    client, authorizer, keys = rig.terminal()
    rig.host.faults.set_delay(1.6 * TIMEOUT)  # answers come after the client gave up
    run = rig.sale(authorizer, keys)
    assert run.outcome.kind in UNABLE
    assert client.last is not None and client.last.response_code is None  # the late 0210 was not used
    (owed,) = rig.pending()
    assert owed.attempts == 1
    rig.host.faults.set_delay(0)
    time.sleep(1.5 * TIMEOUT)  # the late 0410 of the first 0400 arrives meanwhile, and is dropped
    (report,) = rig.run(client.send_reversals())
    assert report.mti == "0401" and report.acknowledged
    assert rig.pending() == []
    assert client.links_opened == 1  # a slow host is no reason to reconnect


def test_an_answer_with_a_bad_mac_is_ignored_and_reversed_as_such(rig: Rig) -> None:
    client, authorizer, keys = rig.terminal()
    rig.host.faults.arm("bad_mac")
    run = rig.sale(authorizer, keys)
    assert run.outcome.kind in UNABLE  # the host's approval was never used
    assert run.outcome.issuer_authentication is None
    report = client.last
    assert report is not None and report.response_code is None and report.rrn is None
    assert report.problem is not None and "MAC" in report.problem
    (reversal,) = report.reversals
    assert (reversal.mti, reversal.reason, reversal.acknowledged) == ("0400", "63", True)
    (entry,) = rig.host.ledger.entries()
    assert entry.approved and entry.reversed  # booked by the host, undone by the reversal


def test_garbage_instead_of_an_answer_counts_as_no_answer(rig: Rig) -> None:
    client, authorizer, keys = rig.terminal()
    rig.host.faults.arm("garbage")
    run = rig.sale(authorizer, keys)
    assert run.outcome.kind in UNABLE
    assert client.last is not None
    assert [r.reason for r in client.last.reversals] == ["68"] and client.last.reversals[0].acknowledged


def test_the_reversals_owed_go_before_the_next_authorization(rig: Rig) -> None:
    client, authorizer, keys = rig.terminal()
    rig.host.faults.arm("drop", 2)  # the 0210 and the 0410 are lost
    rig.sale(authorizer, keys)
    assert len(rig.pending()) == 1
    run = rig.sale(authorizer, keys, seed=2)
    assert run.outcome.kind is OutcomeKind.APPROVED_ONLINE
    assert [r["t"] for r in card_requests(rig)] == ["0200", "0400", "0401", "0200"]
    assert client.last is not None and [r.mti for r in client.last.reversals] == ["0401"]
    assert rig.pending() == []


def test_no_host_listening_is_unable_without_a_reversal(rig: Rig) -> None:
    client, authorizer, keys = rig.terminal()
    rig.run(rig.host.stop())
    run = rig.sale(authorizer, keys)
    assert run.outcome.kind in UNABLE
    assert client.last is not None and client.last.problem is not None
    assert client.last.problem.startswith("not sent")
    assert rig.pending() == [] and rig.seen == []
    with pytest.raises(HostUnavailable):
        rig.run(client.echo())


def test_without_a_link_and_nothing_owed_the_sale_waits_for_one_connection_attempt(rig: Rig) -> None:
    attempts: list[int] = []

    async def unreachable() -> Any:
        attempts.append(1)
        raise ConnectError("no route to the host")

    client, authorizer, keys = rig.terminal(connect=unreachable)
    run = rig.sale(authorizer, keys)
    assert run.outcome.kind in UNABLE and len(attempts) == 1  # not one more for an empty queue
    assert rig.run(client.forward()).items == [] and len(attempts) == 1


def test_an_offline_approval_is_advised_and_a_decline_after_the_fact_is_kept_for_the_merchant(
        rig: Rig) -> None:
    client, authorizer, _keys = rig.terminal()
    outcomes = []
    for seed in (1, 3):  # seeds under which random selection (Book 3, 10.6.2) keeps the sale offline
        authorizer.begin_payment(1000, 978)
        run = transact(fresh_card("offline_approving"), CONFIG.kernel, 1000, prompt=ScriptedPrompt(),
                       authorizer=authorizer, seed=seed)
        authorizer.complete(run.outcome)
        outcomes.append(run.outcome.kind)
        if seed == 1:  # the first advice is booked; then the issuer blocks the account
            (booked,) = authorizer.forward().items
            assert booked.acknowledged and not booked.refused and booked.mti == "0220"
            rig.host.accounts.block("offline_approving")
    assert outcomes == [OutcomeKind.APPROVED_OFFLINE] * 2
    (refused,) = authorizer.forward().items
    assert refused.acknowledged and refused.refused and refused.response_code == "62"
    queue = client.recorder.queue
    (alert,) = queue.declined_after_the_fact()
    assert alert.id == refused.item and alert.code == "62" and queue.status().count == 0
    first, second = rig.host.ledger.entries()
    assert (first.mti, first.approved, second.mti, second.approved) == ("0220", True, "0220", False)
    assert authorizer.forward().items == []  # refused for good: never sent again


# --- STAN, KSN, connection ------------------------------------------------------------------

def test_stan_and_ksn_are_never_reused_across_a_restart(rig: Rig) -> None:
    _client, authorizer, keys = rig.terminal()
    rig.sale(authorizer, keys)
    rig.restart()
    _client, authorizer, keys = rig.terminal()
    run = rig.sale(authorizer, keys, seed=2)
    assert run.outcome.kind is OutcomeKind.APPROVED_ONLINE  # not '94' duplicate
    first, second = rig.host.ledger.entries()
    assert int(second.stan) > int(first.stan)  # (each authorization also takes its reversal's STAN)
    ksns = [request["53"] for request in card_requests(rig)]
    assert len(set(ksns)) == 2 and split_ksn(bytes.fromhex(ksns[1]))[1] > split_ksn(bytes.fromhex(ksns[0]))[1]


def test_the_connection_is_reused_across_sales(rig: Rig) -> None:
    client, authorizer, keys = rig.terminal()
    assert rig.run(client.echo()) == "00"
    for seed in (1, 2):
        assert rig.sale(authorizer, keys, seed=seed).outcome.kind is OutcomeKind.APPROVED_ONLINE
    assert client.links_opened == 1 and rig.host.stats.connections == 1


def test_the_connection_is_opened_again_after_the_host_closed_it(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(idle_timeout=0.3)
    client, authorizer, keys = rig.terminal()
    assert rig.sale(authorizer, keys).outcome.kind is OutcomeKind.APPROVED_ONLINE
    deadline = time.monotonic() + 5
    while rig.host.connections and time.monotonic() < deadline:  # the host closes the idle link
        time.sleep(0.05)
    time.sleep(0.1)  # its close_notify reaches the client
    assert rig.sale(authorizer, keys, seed=2).outcome.kind is OutcomeKind.APPROVED_ONLINE
    assert client.links_opened == 2 and rig.host.stats.connections == 2
    assert rig.pending() == []  # a connection closed between sales owes the host nothing


def test_the_loop_thread_stops_with_tasks_left(tmp_path: Path) -> None:
    thread = EventLoopThread()

    async def forever() -> None:
        await asyncio.Event().wait()

    thread.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(forever()))
    assert thread.run(asyncio.sleep(0, result=7)) == 7
    thread.stop()
    assert thread.loop.is_closed()
    thread.stop()  # twice does nothing
