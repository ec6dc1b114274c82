"""The power cut at every step: `tpe sale` killed with SIGKILL at each crash point it goes through
(firmware/crashpoints.py), then started again (`tpe saf flush`: recovery, then forwarding), then
the host simulator's ledger compared with the terminal's payments.

The flows: an online sale, an online refund, a sale whose answer the host loses (its reversal),
an offline approval (its advice), and the tunnel: an answer lost, the authorization reversed,
the card approving offline after all (Y3) and its advice forwarded later. A first run of each
flow records the points it reaches; then one run per point cuts the power there. Every run must
end with: each payment the terminal holds as approved booked exactly once at the host, every
other payment booked nowhere (its authorization reversed), nothing waiting in the queue,
nothing held.

The card, pcscd, the host and the terminal are real processes. TEST KEYS only (sim/, tests/).
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, TPE
from sim_processes import sim_host as start_sim_host
from sim_processes import write_config

from firmware import crashpoints
from firmware.journal import Journal
from sim.host.ledger import Ledger
from sim.host.test_pki import TestPki, make_test_pki
from sim.pcscd import PrivatePcscd

pytestmark = pytest.mark.pcscd

APPROVED = ("approved", "approved_offline")
FLUSHES = 4  # a flush after a cut may meet the host's armed fault once more


@dataclass(frozen=True)
class Flow:
    profile: str
    args: tuple[str, ...]
    host_commands: tuple[str, ...]
    must_reach: tuple[str, ...]  # points the flow goes through whatever the run
    config_edits: tuple[tuple[str, str], ...] = ()


# under the floor limit, and no random selection for online (Book 3, 10.6.2)
_NO_RANDOM_ONLINE = (("random_target_percent = 20", "random_target_percent = 0"),
                     ("random_max_target_percent = 50", "random_max_target_percent = 0"))

FLOWS = {
    "sale": Flow("visa_cda_online", ("100.00", "--pin", "1234"), (),
                 ("payment.started", "authorization.committed", "authorization.sent",
                  "authorization.answered", "card.completed", "payment.completed", "ticket.journalled")),
    "refund": Flow("visa_cda_online", ("30.00", "--pin", "1234", "--refund"), (),
                   ("payment.started", "authorization.committed", "authorization.sent",
                    "authorization.answered", "card.completed", "payment.completed", "ticket.journalled")),
    "reversal": Flow("visa_cda_online", ("100.00", "--pin", "1234"), ("drop 1",),
                     ("payment.started", "authorization.committed", "authorization.sent",
                      "item.committed", "item.sent", "item.answered", "card.completed", "payment.completed")),
    "offline": Flow("offline_approving", ("10.00",), (),
                    ("payment.started", "card.completed", "payment.completed", "ticket.journalled",
                     "item.committed", "item.sent", "item.answered"),
                    _NO_RANDOM_ONLINE),
    # the tunnel: the answer is lost, the authorization reversed, the card approves offline (Y3),
    # and the advice goes out with the next flush
    "unable_online": Flow("new_card_online", ("10.00",), ("drop 1",),
                          ("payment.started", "authorization.committed", "authorization.sent",
                           "item.committed", "item.sent", "item.answered", "card.completed",
                           "payment.completed", "ticket.journalled"),
                          _NO_RANDOM_ONLINE),
}


@dataclass
class Terminal:
    """One terminal's configuration and state folder, and the host it talks to."""

    folder: Path
    config: Path
    host: object
    ledger: Path

    def tpe(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TPE, *args, "--config", str(self.config)], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[list[Terminal]]:
    started: list[Terminal] = []
    pki: list[TestPki] = []

    def make(name: str, flow: Flow) -> Terminal:
        if not pki:
            pki.append(make_test_pki(tmp_path / "pki"))
        folder = tmp_path / name
        folder.mkdir()
        (folder / "pki").symlink_to(pki[0].folder)
        ledger = folder / "ledger.sqlite3"
        host = start_sim_host(pki[0], ledger)
        for command in flow.host_commands:
            assert host.command(command).startswith("ok")
        config = write_config(folder, host.port, pki[0])
        text = config.read_text().replace("timeout = 10", "timeout = 1")
        for old, new in flow.config_edits:
            assert old in text
            text = text.replace(old, new)
        config.write_text(text)
        terminal = Terminal(folder, config, host, ledger)
        started.append(terminal)
        return terminal

    yield make  # type: ignore[misc]
    for terminal in started:
        terminal.host.stop()  # type: ignore[attr-defined]


def _sale(daemon: PrivatePcscd, terminal: Terminal, flow: Flow,
          env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TPE, "-v", "sale", *flow.args, "--json", "--config", str(terminal.config)],
                          env=daemon.client_env() | env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def _check_books(terminal: Terminal) -> dict[str, int]:
    """The ledger against the terminal's payments, after recovery and forwarding."""
    for _ in range(FLUSHES):
        flushed = terminal.tpe("saf", "flush", "--json")
        if flushed.returncode == 0:
            break
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    status = json.loads(terminal.tpe("saf", "status", "--json").stdout)
    assert status["count"] == 0 and status["alerts"] == [], status
    listed = terminal.tpe("payments", "--json")
    assert listed.returncode == 0, listed.stderr
    payments = json.loads(listed.stdout)
    assert terminal.host.command("quit") == "ok host stopped"  # type: ignore[attr-defined]
    terminal.host.process.wait(10)  # type: ignore[attr-defined]
    with Ledger(terminal.ledger) as book:
        entries = book.entries()
    booked = [e for e in entries if e.approved and not e.reversed]
    assert len({(e.mti, e.stan) for e in entries}) == len(entries)  # nothing booked twice
    assert len(payments) == 1, payments
    (payment,) = payments
    assert payment["state"] in (*APPROVED, "declined", "reversed", "aborted"), payment
    if payment["state"] in APPROVED:
        assert [e.amount for e in booked] == [payment["amount"]], (payment, entries)
    else:
        assert booked == [], (payment, entries)
    # the fiscal journal: one ticket per approved payment, whatever the cut, and it is recorded
    journal = Journal(terminal.folder / "state")
    tickets = [record for record in journal.records("ticket")
               if record.data["tenders"][0].get("reference", {}).get("payment") == payment["id"]]
    journal.close()
    if payment["state"] in APPROVED:
        assert [t.seq for t in tickets] == [payment["ticket"]], (payment, tickets)
        assert abs(tickets[0].data["amount"]) == payment["amount"]
    else:
        assert tickets == [] and payment["ticket"] is None
    return {"entries": len(entries), "reversed": sum(e.reversed for e in entries)}


def _trace(pcscd_daemon: object, server: object, terminals: object, name: str, tmp_path: Path) -> list[str]:
    flow = FLOWS[name]
    terminal = terminals(f"{name}-trace", flow)  # type: ignore[operator]
    card = server(flow.profile)  # type: ignore[operator]
    trace = tmp_path / f"{name}.trace"
    done = _sale(pcscd_daemon, terminal, flow, {crashpoints.ENV_TRACE: str(trace)})
    card.stop()
    assert done.returncode in (0, 5), done.stdout + done.stderr
    _check_books(terminal)
    reached = list(dict.fromkeys(trace.read_text().split()))
    assert set(flow.must_reach) <= set(reached), reached
    assert set(reached) <= set(crashpoints.POINTS)
    return reached


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_a_power_cut_at_every_point_loses_nothing_and_books_nothing_twice(
        pcscd_daemon, server, terminals, tmp_path: Path, name: str) -> None:
    flow = FLOWS[name]
    points = _trace(pcscd_daemon, server, terminals, name, tmp_path)
    outcomes: dict[str, str] = {}
    for point in points:
        terminal = terminals(f"{name}-{point}", flow)
        card = server(flow.profile)  # a new card each time: its own offline counters start again
        cut = _sale(pcscd_daemon, terminal, flow, {crashpoints.ENV_POINT: point})
        card.stop()
        assert cut.returncode == -signal.SIGKILL, (point, cut.returncode, cut.stdout + cut.stderr)
        _check_books(terminal)
        listed = json.loads(terminal.tpe("payments", "--json").stdout)
        outcomes[point] = listed[0]["state"]
    # what the cut leaves, per point: approved only once the result is committed
    print(f"{name}: {len(points)} injection points, {len(points) + 1} runs: {outcomes}")
    if name in ("sale", "refund", "reversal"):
        assert outcomes["authorization.sent"] == "reversed"
        assert outcomes["card.completed"] == "reversed"  # the card's TC was never recorded
    if name in ("sale", "refund"):
        assert outcomes["payment.completed"] == outcomes["ticket.journalled"] == "approved"
    if name == "offline":
        assert outcomes["payment.completed"] == outcomes["item.sent"] == "approved_offline"
    if name == "unable_online":
        assert outcomes["payment.completed"] == "approved_offline"  # its advice forwarded by the flush
