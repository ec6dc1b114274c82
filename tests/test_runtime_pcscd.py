"""`tpe run` end to end with a scripted UI: the card through a real pcscd (vpcd) served by
`tpe sim card serve`, the authorizations over TLS on loopback to the host simulator (in this
process, on the terminal's own loop, or as `tpe sim host`).

TEST KEYS only: the test PKI is made in tmp; the DUKPT keys are the simulator's.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sim_processes import ROOT, TPE, write_config
from sim_processes import sim_host as start_sim_host

from emv.outcome import OutcomeKind
from firmware.config import load_config
from firmware.payment_records import open_payments
from firmware.runtime import Terminal
from firmware.sd_notify import Notifier
from firmware.ui_script import ScriptedUi, parse_script
from sim.card.profile import load_profile
from sim.host.server import HostSimulator
from sim.host.test_pki import make_test_pki
from ui.contract import (
    SEND_NOW,
    AskAmount,
    AskCancel,
    AskConfirm,
    AskOfflineQueue,
    AskPin,
    AskReceipt,
    Error,
    Idle,
    Money,
    Outcome,
    PresentCard,
    Processing,
)

pytestmark = pytest.mark.pcscd

FAST = {"notifier": Notifier({}), "error_pause": 0.0, "outcome_pause": 0.0, "card_wait": 15.0}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _journal(folder: Path, chain: str) -> list[tuple[str, str]]:
    with sqlite3.connect(folder / "journal.sqlite3") as db:
        return list(db.execute("SELECT type, payload FROM record WHERE chain = ? ORDER BY seq", (chain,)))


async def _until(check: Callable[[], Any], limit: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


def test_online_sale_with_pin_approved_journalled_views_in_order(pcscd_daemon, server,
                                                                  tmp_path: Path) -> None:
    server("language_de")  # visa_cda_online whose cardholder prefers German
    out = io.StringIO()
    ui = ScriptedUi(parse_script({"sale": [{"amount": 4250, "pin": "1234"}]}), out=out)

    async def scenario() -> tuple[Terminal, list[Any]]:
        async with HostSimulator(tmp_path / "pki", ledger=tmp_path / "ledger.sqlite3") as host:
            config = load_config(write_config(tmp_path, host.port, host.pki))
            terminal = Terminal(config, ui, **FAST)
            ui.on_done = lambda: terminal.request_stop("script done")
            await terminal.run_until_stopped()
            return terminal, host.ledger.entries()

    terminal, entries = asyncio.run(scenario())
    money = Money(4250, "EUR", 2)
    assert ui.views == [Idle(), PresentCard(money), Processing("reading"), Processing("authorizing"),
                        Processing("completing"), Outcome(True, money), Idle()]
    kinds = [type(q) for q in ui.questions]
    assert kinds == [AskAmount, AskCancel, AskConfirm, AskPin, AskReceipt, AskAmount]
    pin = next(q for q in ui.questions if isinstance(q, AskPin))
    assert pin.online and pin.money == money
    # the card's language came with its FCI, before the first cardholder screen
    text = out.getvalue()
    assert ui.languages == ["de"] and text.index("cardholder language de") < text.index("ask confirm")
    (report,) = terminal.reports
    assert report.outcome is not None and report.outcome.kind is OutcomeKind.APPROVED_ONLINE
    assert report.payment is not None and report.payment["state"] == "approved"
    assert report.ticket is not None and report.payment["ticket"] == report.ticket["seq"]
    receipt = next(q for q in ui.questions if isinstance(q, AskReceipt)).receipt
    assert receipt.lines == tuple(report.ticket["receipt"]) and any("42,50" in line for line in receipt.lines)
    (entry,) = entries
    assert entry.approved and entry.amount == 4250 and not entry.reversed
    state = tmp_path / "state"
    tickets = _journal(state, "ticket")
    assert len(tickets) == 1 and '"amount":4250' in tickets[0][1]
    audit = [kind for kind, _ in _journal(state, "audit")]
    assert audit[0] == "start" and audit[-1] == "stop"
    assert "1234" not in text and load_profile("language_de").applications[0].pan not in text


class _QueueUi(ScriptedUi):
    """Answers the offline queue screen with "send now" once, then goes back."""

    queues: list[tuple[Money, ...]]

    async def ask(self, question: Any) -> Any:
        if isinstance(question, AskOfflineQueue):
            self.queues = [*getattr(self, "queues", []), question.payments]
            return SEND_NOW if len(self.queues) == 1 else None
        return await super().ask(question)


def test_offline_sale_during_an_outage_is_forwarded_when_the_host_returns(pcscd_daemon, server,
                                                                         tmp_path: Path) -> None:
    server("new_card_online")  # under the floor limit, asks to go online; approves offline (Y3)
    port = _free_port()
    ui = _QueueUi(parse_script({"then": "wait", "sale": [{"amount": 1000}]}), out=io.StringIO())

    async def scenario() -> tuple[Terminal, list[Any], int, int]:
        host = HostSimulator(tmp_path / "pki", port=port, ledger=tmp_path / "ledger.sqlite3")  # not listening
        config = load_config(write_config(tmp_path, port, host.pki))
        terminal = Terminal(config, ui, link_check_interval=0.2, status_interval=0.1, forward_retry=3600,
                            **FAST)
        await terminal.start()
        try:
            await _until(lambda: sum(isinstance(q, AskAmount) for q in ui.questions) == 2)  # idle again
            await _until(lambda: ui.statuses and ui.statuses[-1].pending_count == 1)
            pending = ui.statuses[-1]
            await terminal.offline_queue()  # the merchant's "send now" while the host is still away
            await host.start()  # the host is back: the link manager's check says "up"
            await _until(lambda: terminal.recorder.queue.status().count == 0)
            await _until(lambda: ui.statuses[-1].pending_count == 0)
            entries = host.ledger.entries()
        finally:
            await terminal.stop()
            await host.stop()
        return terminal, entries, pending.pending_count, pending.pending_amounts["EUR"]

    terminal, entries, count, amount = asyncio.run(scenario())
    money = Money(1000, "EUR", 2)
    assert Error("no_network_offline") in ui.views
    assert ui.views[ui.views.index(Error("no_network_offline")) + 1] == Outcome(True, money, offline=True)
    (report,) = terminal.reports
    assert report.outcome is not None and report.outcome.kind is OutcomeKind.APPROVED_UNABLE_ONLINE
    assert report.payment is not None and report.payment["state"] == "approved_offline"
    assert (count, amount) == (1, 1000)
    assert ui.queues == [(money,), (money,)]  # sent now, not acknowledged: still there
    assert Processing("forwarding") in ui.views
    (entry,) = entries
    assert entry.advice and entry.amount == 1000 and entry.approved
    audit = [kind for kind, _ in _journal(tmp_path / "state", "audit")]
    assert "degraded_start" in audit and audit[-1] == "stop"


def test_card_pulled_during_pin_entry_shows_card_removed_and_ends_the_payment(pcscd_daemon, server,
                                                                              tmp_path: Path) -> None:
    card = server("visa_cda_online")

    def pull(question: object) -> None:
        if isinstance(question, AskPin):
            assert card.command("remove") == "ok removed"

    ui = ScriptedUi(parse_script({"sale": [{"amount": 2000, "pin": "1234"}]}), out=io.StringIO(),
                    before_answer=pull)

    async def scenario() -> tuple[Terminal, list[Any]]:
        async with HostSimulator(tmp_path / "pki", ledger=tmp_path / "ledger.sqlite3") as host:
            config = load_config(write_config(tmp_path, host.port, host.pki))
            terminal = Terminal(config, ui, **FAST)
            ui.on_done = lambda: terminal.request_stop("script done")
            await terminal.run_until_stopped()
            return terminal, host.ledger.entries()

    terminal, entries = asyncio.run(scenario())
    assert ui.views[-2:] == [Error("card_removed"), Idle()]
    assert not any(isinstance(view, Outcome) for view in ui.views)
    (report,) = terminal.reports
    assert report.error == "card_removed" and report.payment is not None
    # final, with the card's reason: nothing left the terminal, nothing is owed
    assert (report.payment["state"], report.payment["note"]) == ("declined", "card_removed")
    assert entries == []
    payments = open_payments(tmp_path / "state")
    try:
        assert payments.recover() == []  # nothing left for the next start to settle
    finally:
        payments.queue.close()


def test_a_whole_sale_through_tpe_run_logs_no_pan_pin_or_track2_and_draws_every_screen(
        pcscd_daemon, server, tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    host = start_sim_host(pki, tmp_path / "ledger.sqlite3")
    try:
        config = write_config(tmp_path, host.port, pki)
        server("visa_cda_online")
        script = tmp_path / "sale.toml"
        script.write_text('[[sale]]\namount = 10000\npin = "1234"\n')
        shots = tmp_path / "screens"
        env = {**pcscd_daemon.client_env(), "SDL_VIDEODRIVER": "dummy"}
        result = subprocess.run([*TPE, "-vv", "run", "--config", str(config), "--script", str(script),
                                 "--screenshots", str(shots)], env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=90, stdin=subprocess.DEVNULL)
    finally:
        host.stop()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "screen APPROVED 100.00 EUR" in out and "DEBUG" in out  # the APDU log ran too
    assert "  | " in out  # the receipt on the console
    pan = load_profile("visa_cda_online").applications[0].pan
    assert pan not in out
    assert not re.search(pan[:6] + r"\d*[D=]\d{4}", out)  # no track 2 equivalent
    assert not re.search(r"(?<!\d)1234(?!\d)", out), "the PIN appears in the output"
    # every screen drawn by the touchscreen off screen, in order (the demo's screenshots)
    names = [path.stem.split("-", 1)[1] for path in sorted(shots.glob("*.png"))]
    assert names == ["idle", "askamount", "askcancel", "processing", "askconfirm", "askpin", "processing",
                     "processing", "outcome", "askreceipt", "idle", "askamount"], names


def test_a_stop_during_pin_entry_lets_the_sale_end_before_the_services_stop(pcscd_daemon, server,
                                                                            tmp_path: Path) -> None:
    server("visa_cda_online")
    terminal: Terminal | None = None

    def stop_now(question: object) -> None:
        if isinstance(question, AskPin) and terminal is not None:
            terminal.request_stop("SIGTERM")  # what the signal handler calls

    script = parse_script({"then": "wait", "sale": [{"amount": 3000, "pin": "1234"}]})
    ui = ScriptedUi(script, out=io.StringIO(), before_answer=stop_now)

    async def scenario() -> list[Any]:
        nonlocal terminal
        async with HostSimulator(tmp_path / "pki", ledger=tmp_path / "ledger.sqlite3") as host:
            config = load_config(write_config(tmp_path, host.port, host.pki))
            terminal = Terminal(config, ui, **FAST)
            await terminal.run_until_stopped()
            return host.ledger.entries()

    entries = asyncio.run(scenario())
    assert terminal is not None
    (report,) = terminal.reports
    assert report.asked == ["confirm_amount", "enter_online_pin"]
    assert report.payment is not None and report.payment["state"] in ("declined", "aborted")
    assert report.outcome is not None and not report.outcome.kind.approved
    assert entries == []  # the PIN was never typed: nothing was sent
    assert [kind for kind, _ in _journal(tmp_path / "state", "audit")][-1] == "stop"
    payments = open_payments(tmp_path / "state")
    try:
        assert payments.recover() == []
    finally:
        payments.queue.close()
