"""`tpe saf status`, `tpe saf flush` and `tpe payments`: what waits for the host, read from the
encrypted queue in the state folder, and the payments with their state."""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
from pathlib import Path

from sim_processes import write_config

from firmware.keystore import Keystore
from firmware.messages import ReversalReason
from firmware.payment_records import reversal_payload
from firmware.payments import Payments
from firmware.saf_queue import FILE_NAME, SafQueue
from sim.host.test_pki import make_test_pki

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "firmware" / "defaults" / "terminal.toml"


def tpe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def config_with_state(tmp_path: Path) -> Path:
    path = tmp_path / "terminal.toml"
    path.write_text(DEFAULT_CONFIG.read_text() + '\n[state]\nfolder = "state"\n')
    return path


def test_status_counts_and_sums_what_waits(tmp_path: Path) -> None:
    config = config_with_state(tmp_path)
    state = tmp_path / "state"
    queue = SafQueue(state / FILE_NAME, Keystore.open(state))
    at = datetime.datetime(2026, 11, 26, 9, 30, tzinfo=datetime.UTC)
    queue.add("advice", {"stan": 1}, amount=1250, currency=978, created=at)
    queue.add("advice", {"stan": 2}, amount=800, currency=978, created=at + datetime.timedelta(minutes=5))
    queue.add("reversal", {"stan": 3}, amount=4000, currency=978, created=at + datetime.timedelta(minutes=9))
    result = tpe("saf", "status", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["count"] == 3
    assert status["amount_per_currency"] == {"EUR": 2050}  # offline approvals, not reversals
    assert status["oldest"].startswith("2026-11-26T09:30")
    text = tpe("saf", "status", "--config", str(config)).stdout
    assert "Waiting     3" in text and "Amount      20.50 EUR" in text


def test_status_of_an_empty_queue(tmp_path: Path) -> None:
    result = tpe("saf", "status", "--json", "--config", str(config_with_state(tmp_path)))
    status = json.loads(result.stdout)
    assert (status["count"], status["oldest"], status["amount_per_currency"]) == (0, None, {})
    assert status["alerts"] == [] and not status["overdue"]


def test_status_alerts_the_merchant(tmp_path: Path) -> None:
    config = config_with_state(tmp_path)
    state = tmp_path / "state"
    queue = SafQueue(state / FILE_NAME, Keystore.open(state))
    now = datetime.datetime.now(datetime.UTC)
    late = queue.add("advice", {"stan": 1}, amount=500, currency=978,
                     created=now - datetime.timedelta(hours=25))
    refused = queue.add("advice", {"stan": 2}, amount=700, currency=978, created=now)
    queue.mark_refused(refused, "05", now)
    damaged = queue.add("reversal", {"stan": 3}, amount=900, currency=978, created=now)
    queue.set_aside(damaged, "the seal does not open", now)
    status = json.loads(tpe("saf", "status", "--json", "--config", str(config)).stdout)
    # the packaged [offline] max_age_hours is 24
    assert status["overdue"] and status["oldest_age_s"] > 24 * 3600
    assert (status["count"], status["declined_after_the_fact"], status["set_aside"]) == (1, 1, 1)
    assert status["alerts"] == ["overdue", "declined_after_the_fact", "set_aside"]
    text = tpe("saf", "status", "--config", str(config)).stdout
    assert text.count("ALERT") == 3 and "DECLINED" in text
    queue.mark_answered(late, "00", now)
    assert json.loads(tpe("saf", "status", "--json", "--config", str(config)).stdout)["overdue"] is False


def test_payments_are_listed_with_their_state_and_no_card_number(tmp_path: Path) -> None:
    config = config_with_state(tmp_path)
    state = tmp_path / "state"
    payments = Payments(SafQueue(state / FILE_NAME, Keystore.open(state)))
    first = payments.begin("sale", 1250, 978)
    payments.completed(first, outcome="approved_offline", approved=True, offline=True,
                       pan_masked="476173******0051", advice={"2": "4761739001010051"})
    payments.begin("refund", 300, 978)
    listed = json.loads(tpe("payments", "--json", "--config", str(config)).stdout)
    assert [(p["id"], p["kind"], p["state"]) for p in listed] == [(1, "sale", "approved_offline"),
                                                                 (2, "refund", "started")]
    text = tpe("payments", "--last", "1", "--config", str(config)).stdout
    assert "refund" in text and "sale" not in text and "4761739001010051" not in text


def test_flush_without_a_link_says_what_waits_and_sets_damaged_items_aside(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nobody listens there once closed
    config = write_config(tmp_path, port, pki)
    state = tmp_path / "state"
    queue = SafQueue(state / FILE_NAME, Keystore.open(state))
    now = datetime.datetime.now(datetime.UTC)
    queue.add("advice", {"stan": 1}, amount=500, currency=978, created=now)  # makes no message
    damaged = tpe("saf", "flush", "--json", "--config", str(config))
    assert damaged.returncode == 6, damaged.stdout + damaged.stderr
    assert json.loads(damaged.stdout)["set_aside"] == [1]
    original = {"t": "0200", "2": "4761739001010010", "3": "000000", "4": "000000001250", "7": "1126120000",
                "11": "000001", "12": "120000", "13": "1126", "22": "051", "32": "12345", "41": "TPE00001",
                "42": "000000000000001", "49": "978", "55": "9F2701"}
    queue.add("reversal", reversal_payload(original, ReversalReason.NO_RESPONSE, stan=2, at=now),
              amount=1250, currency=978, created=now)
    result = tpe("saf", "flush", "--json", "--config", str(config))
    assert result.returncode == 7, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["waiting"] == 1 and out["acknowledged"] == 0 and "no link" in out["problem"]
    assert "4761739001010010" not in result.stdout + result.stderr
