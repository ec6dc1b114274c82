"""The merchant's flows through `tpe run`'s Terminal with a scripted UI: the card simulated in
this process behind a stand-in for the PC/SC reader, the authorizations over TLS on loopback to
the host simulator. TEST KEYS only: the test PKI is made in tmp, the DUKPT keys are the
simulator's, the merchant code is a test code hashed here."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sim_processes import write_config
from sim_reader import FAST, SimReader

from firmware.config import load_config
from firmware.merchant_code import CodeGuard, MerchantCodeError, hash_code, matches, parse_hash
from firmware.runtime import Terminal
from firmware.ui_script import ScriptedUi, parse_script
from sim.host.server import HostSimulator
from sim.printer import PrinterSimulator
from ui.contract import AskAmount, AskCode, AskMenu, AskPreauth, AskReceipt, AskSettlement, Error, Outcome

TEST_CODE = "4711"  # TEST merchant code
def _rows(folder: Path, chain: str) -> list[tuple[str, str]]:
    with sqlite3.connect(folder / "journal.sqlite3") as db:
        return list(db.execute("SELECT type, payload FROM record WHERE chain = ? ORDER BY seq", (chain,)))


def _run(tmp_path: Path, sales: list[dict[str, Any]], profile: str = "visa_cda_online",
         merchant: str | None = None, printer: PrinterSimulator | None = None, host_up: bool = True,
         before_answer: Any = None) -> tuple[Terminal, ScriptedUi, list[Any], str]:
    stored = hash_code(TEST_CODE, log2_n=10).text()
    extra = merchant if merchant is not None else f'[merchant]\ncode_hash = "{stored}"\n'
    out = io.StringIO()
    ui = ScriptedUi(parse_script({"sale": sales}), out=out)

    async def scenario() -> tuple[Terminal, list[Any]]:
        async with contextlib.AsyncExitStack() as stack:
            host = await stack.enter_async_context(HostSimulator(tmp_path / "pki",
                                                                 ledger=tmp_path / "ledger.sqlite3"))
            if printer is not None:
                await stack.enter_async_context(printer)
                extra_printer = f'[printer]\nport = "{printer.path}"\n'
            else:
                extra_printer = ""
            config = load_config(write_config(tmp_path, host.port, host.pki, extra + extra_printer))
            if not host_up:
                await host.stop()  # the outage: nothing listens on the host's port
            terminal = Terminal(config, ui, reader_factory=lambda: SimReader(profile), **FAST)  # type: ignore[arg-type]
            ui.on_done = lambda: terminal.request_stop("script done")
            if before_answer is not None:
                ui.before_answer = lambda question: before_answer(terminal, question)
            await asyncio.wait_for(terminal.run_until_stopped(), 60)
            return terminal, host.ledger.entries() if host_up else []

    terminal, entries = asyncio.run(scenario())
    return terminal, ui, entries, out.getvalue()


# --- the merchant code ------------------------------------------------------------------------

def test_code_hash_round_trip_and_refusals() -> None:
    stored = hash_code("123456", log2_n=10)
    again = parse_hash(stored.text())
    assert matches("123456", again) and not matches("123457", again) and not matches("12x456", again)
    assert "123456" not in stored.text() and "123456" not in repr(stored)
    assert hash_code("123456", log2_n=10).salt != stored.salt  # a fresh salt each time
    for bad in ("", "scrypt$1$2", "bcrypt$10$8$1$00$00", "scrypt$99$8$1$" + "00" * 16 + "$" + "00" * 32):
        with pytest.raises(MerchantCodeError):
            parse_hash(bad)
    with pytest.raises(MerchantCodeError):
        hash_code("12")


def test_code_guard_locks_after_max_tries_and_unlocks_later() -> None:
    now = [0.0]
    guard = CodeGuard(hash_code("2468", log2_n=10), max_tries=2, lockout=60, clock=lambda: now[0])
    assert guard.check("0000").result == "refused"
    assert guard.check("1111").result == "refused" and guard.locked()
    assert guard.check("2468").result == "locked"  # even the right code while locked
    now[0] = 61.0
    assert guard.check("2468").result == "ok" and guard.failures == 0


# --- flows end to end -------------------------------------------------------------------------

def test_refund_from_the_menu_needs_the_code_and_journals_the_logins(tmp_path: Path) -> None:
    terminal, ui, entries, out = _run(tmp_path, [
        {"amount": 1500, "pin": "1234"},
        {"menu": "refund", "code": "0000"},  # wrong: refused, back to the keypad
        {"menu": "refund", "code": TEST_CODE, "amount": 700, "pin": "1234"},
    ])
    codes = [q for q in ui.questions if isinstance(q, AskCode)]
    assert [c.refused for c in codes] == [False, True, False]
    refund = terminal.reports[-1]
    assert refund.refund and refund.payment is not None and refund.payment["kind"] == "refund"
    assert refund.payment["state"] == "approved"
    state = tmp_path / "state"
    logins = [payload for kind, payload in _rows(state, "audit") if kind == "login"]
    assert len(logins) == 2 and '"result":"refused"' in logins[0] and '"result":"ok"' in logins[1]
    assert all('"role":"merchant"' in login for login in logins)
    assert [kind for kind, _ in _rows(state, "ticket")] == ["sale", "refund"]
    assert sorted(e.processing_code[:2] for e in entries) == ["00", "20"]
    asked = [line for line in out.splitlines() if "merchant code" in line]
    assert len(asked) == 3 and not any(TEST_CODE in line or "0000" in line for line in asked)


def test_void_of_an_online_sale_cancels_the_ticket_and_reverses_it_at_the_host(tmp_path: Path) -> None:
    _, ui, entries, _ = _run(tmp_path, [
        {"amount": 2300, "pin": "1234"},
        {"menu": "cancel", "code": TEST_CODE, "ticket": 1},
        {"menu": "offline_queue"},
    ])
    state = tmp_path / "state"
    tickets = _rows(state, "ticket")
    assert [kind for kind, _ in tickets] == ["sale", "cancellation"] and '"cancels":1' in tickets[1][1]
    receipts = [q.receipt for q in ui.questions if isinstance(q, AskReceipt)]
    assert any("ANNULATION" in line for line in receipts[-1].lines)
    (entry,) = [e for e in entries if e.mti == "0200"]
    assert entry.amount == 2300 and entry.reversed  # the 0400 (reason 17) went through the queue


def test_settlement_reconciles_at_the_host_and_closes_the_day(tmp_path: Path) -> None:
    _, ui, entries, _ = _run(tmp_path, [
        {"amount": 1200, "pin": "1234"},
        {"amount": 3400, "pin": "1234"},
        {"menu": "settlement", "code": TEST_CODE},
        {"menu": "settlement", "code": TEST_CODE},
    ])
    reports = [q.report for q in ui.questions if isinstance(q, AskSettlement)]
    first, second = reports
    assert first.result == "in_balance" and first.day_closed and first.batch == 1
    (scheme,) = first.schemes
    assert scheme.scheme == "A000000003" and scheme.debit_count == 2 and scheme.debit.amount == 4600
    assert second.batch == 2 and second.schemes == () and second.result == "in_balance"
    assert not second.day_closed  # the day was closed once
    assert [kind for kind, _ in _rows(tmp_path / "state", "closure")] == ["day"]
    assert sorted(e.mti for e in entries) == ["0200", "0200"]


def test_duplicate_receipt_is_marked_and_journalled(tmp_path: Path) -> None:
    _, ui, _, _ = _run(tmp_path, [{"amount": 990, "pin": "1234"}, {"menu": "duplicate", "ticket": 1}])
    receipts = [q.receipt for q in ui.questions if isinstance(q, AskReceipt)]
    assert receipts[-1].duplicate and any("DUPLICATA 1" in line for line in receipts[-1].lines)
    assert [kind for kind, _ in _rows(tmp_path / "state", "duplicate")] == ["duplicate"]


def test_training_sale_never_reaches_the_host_and_is_watermarked(tmp_path: Path) -> None:
    terminal, ui, entries, _ = _run(tmp_path, [
        {"menu": "training", "code": TEST_CODE},
        {"amount": 5000, "pin": "1234"},
    ])
    assert entries == []  # nothing reached the host
    state = tmp_path / "state"
    assert _rows(state, "ticket") == [] and [k for k, _ in _rows(state, "training-ticket")] == ["sale"]
    assert [k for k, _ in _rows(state, "audit") if k.startswith("training")] == ["training_start"]
    receipt = [q.receipt for q in ui.questions if isinstance(q, AskReceipt)][-1]
    assert receipt.training and any("FORMATION" in line for line in receipt.lines)
    assert terminal.reports[-1].payment is None


def test_guarded_flows_are_not_offered_without_a_code(tmp_path: Path) -> None:
    _, ui, _, _ = _run(tmp_path, [{"menu": "refund"}], merchant="")
    (menu,) = [q for q in ui.questions if isinstance(q, AskMenu)]
    assert "refund" not in menu.items and "settings" not in menu.items and "duplicate" in menu.items
    assert not [q for q in ui.questions if isinstance(q, AskCode)]


def test_print_on_request_prints_the_receipt_shown_on_the_printer(tmp_path: Path) -> None:
    printer = PrinterSimulator()
    _terminal, ui, _entries, _out = _run(tmp_path, [{"amount": 4250, "pin": "1234", "receipt": "print"}],
                                         printer=printer)
    (asked,) = [q.receipt for q in ui.questions if isinstance(q, AskReceipt)]
    assert asked.printable  # a printer is configured: "print" offered
    assert [line.rstrip() for line in printer.lines] == [line.rstrip() for line in asked.lines]
    assert printer.errors == []


def test_the_settlement_report_prints_on_request(tmp_path: Path) -> None:
    printer = PrinterSimulator()
    sales = [{"amount": 1200, "pin": "1234"}, {"menu": "settlement", "code": TEST_CODE, "receipt": "print"}]
    _, ui, _, _ = _run(tmp_path, sales, printer=printer)
    (asked,) = [q for q in ui.questions if isinstance(q, AskSettlement)]
    assert asked.printable
    printed = [line.strip() for line in printer.lines]
    assert printed[0] == "TELECOLLECTE" and "A000000003" in printed and "Totaux concordants" in printed
    assert any(line.startswith("Debits 1") and line.endswith("12.00 EUR") for line in printed), printed


# --- pre-authorizations ---------------------------------------------------------------------------

def _payments(folder: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(folder / "saf.sqlite3")) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM payment ORDER BY id")]


def _items(folder: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(folder / "saf.sqlite3")) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT id, kind, amount, ref, settled, code FROM item ORDER BY id")
        return [dict(row) for row in rows]


def test_a_pre_authorization_reserves_and_its_completion_books_the_final_amount(tmp_path: Path) -> None:
    _, ui, entries, out = _run(tmp_path, [
        {"menu": "preauth", "amount": 15000, "pin": "1234"},
        {"menu": "completion", "code": TEST_CODE, "amount": 9000},
        {"menu": "settlement", "code": TEST_CODE},
    ])
    preauth, completion = sorted(entries, key=lambda e: e.id)
    assert (preauth.mti, preauth.amount, preauth.response_code) == ("0100", 15000, "00")
    assert (completion.mti, completion.amount, completion.completes) == ("0220", 9000, preauth.id)
    state = tmp_path / "state"
    reserved, completed = _payments(state)
    assert (reserved["kind"], reserved["state"], reserved["ticket"]) == ("preauth", "approved", None)
    assert (completed["kind"], completed["state"]) == ("completion", "approved")
    assert completed["original"] == reserved["id"]
    assert completed["pan_masked"] == reserved["pan_masked"] and "*" in completed["pan_masked"]
    (ticket,) = _rows(state, "ticket")  # the pre-authorization sold nothing: one ticket, the completion's
    assert ticket[0] == "sale" and '"amount":9000' in ticket[1]
    assert f'"payment":{completed["id"]}' in ticket[1]
    assert '"aid":"A0000000031010"' in ticket[1]  # kept from the card for the settlement's scheme
    outcomes = [v for v in ui.views if isinstance(v, Outcome)]
    assert outcomes[0].preauth and outcomes[0].approved and not outcomes[1].preauth
    amounts = [q for q in ui.questions if isinstance(q, AskAmount) and q.purpose != "sale"]
    assert [(q.purpose, q.maximum) for q in amounts] == [("preauth", None), ("completion", 15000)]
    (report,) = [q.report for q in ui.questions if isinstance(q, AskSettlement)]
    (scheme,) = report.schemes
    assert report.result == "in_balance" and (scheme.debit_count, scheme.debit.amount) == (1, 9000)
    (asked,) = [q for q in ui.questions if isinstance(q, AskPreauth)]
    assert [(line.payment, line.money.amount) for line in asked.preauths] == [(reserved["id"], 15000)]
    assert "4761739001010010" not in out and "PRE-AUTHORIZATION APPROVED" in out


def test_a_released_pre_authorization_is_reversed_at_the_host_and_sells_nothing(tmp_path: Path) -> None:
    _, ui, entries, _ = _run(tmp_path, [
        {"menu": "preauth", "amount": 8000, "pin": "1234"},
        {"menu": "completion", "code": TEST_CODE, "release": True},
        {"menu": "completion", "code": TEST_CODE},  # nothing left open
        {"menu": "settlement", "code": TEST_CODE},
    ])
    (entry,) = entries
    assert entry.mti == "0100" and entry.reversed  # the 0400, reason 17, went through the queue
    state = tmp_path / "state"
    (payment,) = _payments(state)
    assert (payment["kind"], payment["state"]) == ("preauth", "reversed")
    assert payment["note"] == "released by the merchant"
    assert _rows(state, "ticket") == []
    lists = [q.preauths for q in ui.questions if isinstance(q, AskPreauth)]
    assert [len(listed) for listed in lists] == [1, 0, 0]  # listed again after the release, then empty
    (report,) = [q.report for q in ui.questions if isinstance(q, AskSettlement)]
    assert report.result == "in_balance" and report.schemes == ()


def test_a_completion_over_the_amount_reserved_is_refused(tmp_path: Path) -> None:
    _, _, entries, _ = _run(tmp_path, [
        {"menu": "preauth", "amount": 5000, "pin": "1234"},
        {"menu": "completion", "code": TEST_CODE, "amount": 5001},
    ])
    assert [e.mti for e in entries] == ["0100"]
    state = tmp_path / "state"
    assert [p["kind"] for p in _payments(state)] == ["preauth"] and _rows(state, "ticket") == []
    assert [i["kind"] for i in _items(state)] == ["reversal"]  # the 0100's, cancelled when the card approved


def test_a_pre_authorization_without_the_bank_is_declined_never_approved_offline(tmp_path: Path) -> None:
    # new_card_online: a sale of this card is approved offline during an outage (Y3)
    _, ui, _, _ = _run(tmp_path, [{"menu": "preauth", "amount": 1000, "pin": "1234"}], "new_card_online",
                       host_up=False)
    (outcome,) = [v for v in ui.views if isinstance(v, Outcome)]
    assert outcome.preauth and not outcome.approved and outcome.reason == "offline_refused:preauth"
    state = tmp_path / "state"
    (payment,) = _payments(state)
    assert payment["kind"] == "preauth" and payment["state"] == "declined"
    assert _items(state) == []  # the 0100 never left (no connection): nothing owed
    assert _rows(state, "ticket") == []


# --- voids the bank may or may not have ------------------------------------------------------------

def test_void_of_an_offline_approval_withdraws_its_advice_before_it_leaves(tmp_path: Path) -> None:
    _, ui, _, _ = _run(tmp_path, [
        {"amount": 1000, "pin": "1234"},
        {"menu": "cancel", "code": TEST_CODE, "ticket": 1},
    ], "new_card_online", host_up=False)
    state = tmp_path / "state"
    (payment,) = _payments(state)
    assert payment["state"] == "approved_offline"
    advice = next(i for i in _items(state) if i["id"] == payment["advice_item"])
    assert (advice["settled"], advice["code"]) == ("cancelled", "voided by the merchant")
    assert [kind for kind, _ in _rows(state, "ticket")] == ["sale", "cancellation"]
    assert Error("void_refused") not in ui.views


def test_void_of_a_settled_sale_is_refused_and_the_ticket_stands(tmp_path: Path) -> None:
    _, ui, entries, _ = _run(tmp_path, [
        {"amount": 2300, "pin": "1234"},
        {"menu": "settlement", "code": TEST_CODE},
        {"menu": "cancel", "code": TEST_CODE, "ticket": 1},
    ])
    assert Error("void_refused") in ui.views
    assert [kind for kind, _ in _rows(tmp_path / "state", "ticket")] == ["sale"]
    (entry,) = entries
    assert not entry.reversed


def test_settings_changed_on_the_screen_are_kept_for_the_next_start(tmp_path: Path) -> None:
    first, _, _, _ = _run(tmp_path, [{"menu": "settings", "code": TEST_CODE, "set_language": "de",
                                      "training": True}])
    assert (first.settings.language, first.settings.training) == ("de", True)
    again, ui, entries, _ = _run(tmp_path, [{"amount": 700, "pin": "1234"}])
    assert (again.settings.language, again.settings.training, again.settings.shuffle) == ("de", True, False)
    assert ui.statuses[-1].training and entries == []  # still in training: nothing reached the host
    state = tmp_path / "state"
    assert [k for k, _ in _rows(state, "training-ticket")] == ["sale"] and _rows(state, "ticket") == []
    (state / "settings.json").write_text("{not json")
    third, _, _, _ = _run(tmp_path, [])
    assert (third.settings.language, third.settings.training) == ("fr", False)  # the configuration's


@pytest.mark.parametrize("when", [AskSettlement, AskCode])
def test_a_stop_during_the_settlement_ends_the_terminal_in_order(tmp_path: Path, when: type) -> None:
    def stop(terminal: Terminal, question: Any) -> None:
        if isinstance(question, when):
            terminal.request_stop("SIGTERM")

    terminal, ui, _, _ = _run(tmp_path, [{"amount": 1200, "pin": "1234"},
                                         {"menu": "settlement", "code": TEST_CODE},
                                         {"amount": 3400, "pin": "1234"}], before_answer=stop)
    assert terminal.stop_cause == "SIGTERM" and ui.played == 2  # the sale after it never began
    audit = [kind for kind, _ in _rows(tmp_path / "state", "audit")]
    assert audit[-1] == "stop"


def test_the_receipt_offers_the_e_receipt_address_of_its_ticket(tmp_path: Path) -> None:
    stored = hash_code(TEST_CODE, log2_n=10).text()
    section = ('[receipt]\nurl = "https://receipts.example/{terminal}/{ticket}?s={extract}"\n'
               f'[merchant]\ncode_hash = "{stored}"\n')
    _, ui, _, _ = _run(tmp_path, [{"amount": 4250, "pin": "1234"}, {"menu": "duplicate", "ticket": 1},
                                  {"menu": "training", "code": TEST_CODE}, {"amount": 100, "pin": "1234"}],
                       merchant=section)
    sale, duplicate, training = [q.receipt for q in ui.questions if isinstance(q, AskReceipt)]
    ((_, payload),) = _rows(tmp_path / "state", "ticket")
    assert json.loads(payload)["amount"] == 4250  # the one real ticket; its extract is on the receipt
    signature = next(line for line in sale.lines if line.startswith("Signature")).split()[-1]
    assert sale.qr is not None and sale.qr.startswith("https://receipts.example/")
    assert sale.qr.endswith(f"/1?s={signature}") and duplicate.qr == sale.qr
    assert training.qr is None  # a training ticket is worth nothing: no e-receipt
