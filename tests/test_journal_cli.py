"""`tpe journal verify | archive | export | status`: exit statuses, every problem listed, the
journal of the configuration's [state] folder."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_journal_verify import sample, tampered

from firmware.journal import FILE_NAME, HEAD_FILE, PUBLIC_KEY_FILE

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "firmware" / "defaults" / "terminal.toml"


def tpe(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration whose [state] folder holds the sample journal."""
    path = tmp_path / "terminal.toml"
    path.write_text(DEFAULT_CONFIG.read_text() + '\n[state]\nfolder = "state"\n')
    sample(tmp_path / "state").journal.close()
    return path


def test_verify_exits_0_on_an_intact_journal(config: Path) -> None:
    state = config.parent / "state"
    result = tpe("journal", "verify", str(state))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "INTACT" in result.stdout and f"{PUBLIC_KEY_FILE} beside the database" in result.stdout
    given = json.loads(tpe("journal", "verify", str(state / FILE_NAME), "--pubkey",
                           str(state / PUBLIC_KEY_FILE), "--json").stdout)
    assert given["ok"] and given["origin_proven"] and given["records"]["ticket"] == 9


def test_verify_exits_8_and_lists_every_problem(config: Path, tmp_path: Path) -> None:
    def damage(db: sqlite3.Connection) -> None:
        db.execute("UPDATE record SET payload = replace(payload, '1250', '1350') "
                   "WHERE chain = 'ticket' AND seq = 1")
        db.execute("DELETE FROM record WHERE chain = 'audit' AND seq = 2")

    copy = tampered(config.parent / "state", tmp_path / "copy", damage)
    result = tpe("journal", "verify", str(copy))
    assert result.returncode == 8
    assert "BROKEN" in result.stdout
    assert "  ticket 1: bad signature" in result.stdout.splitlines()
    assert "  audit: sequence gap: record 2 is missing" in result.stdout.splitlines()
    report = json.loads(tpe("journal", "verify", str(copy), "--json").stdout)
    assert not report["ok"]
    listed = {(p["chain"], p["seq"]) for p in report["problems"]}
    assert {("ticket", 1), ("audit", None)} <= listed
    assert len(report["problems"]) == sum(line.startswith("  ") and ":" in line
                                          for line in result.stdout.split("BROKEN")[1].splitlines())


def test_verify_exits_2_when_it_cannot_start(config: Path, tmp_path: Path) -> None:
    assert tpe("journal", "verify", str(tmp_path / "nothing")).returncode == 2
    (tmp_path / "bad.pem").write_text("not a key")
    result = tpe("journal", "verify", str(config.parent / "state"), "--pubkey", str(tmp_path / "bad.pem"))
    assert result.returncode == 2 and "PEM" in result.stderr
    missing = tpe("journal", "verify", str(config.parent / "state"), "--pubkey", str(tmp_path / "none"))
    assert missing.returncode == 2
    assert tpe("journal", "verify").returncode == 2


def test_archive_then_verify_the_archive(config: Path, tmp_path: Path) -> None:
    result = tpe("journal", "archive", "--period", "2026-11", "--out", str(tmp_path / "archives"),
                 "--config", str(config))
    assert result.returncode == 0, result.stderr
    (path,) = (tmp_path / "archives").iterdir()
    assert f"Archive     {path}" in result.stdout and "Records     18" in result.stdout
    pubkey = str(config.parent / "state" / PUBLIC_KEY_FILE)
    checked = tpe("journal", "verify", str(path), "--pubkey", pubkey)
    assert checked.returncode == 0 and "INTACT" in checked.stdout and "the key given" in checked.stdout
    assert tpe("journal", "verify", str(config.parent / "state")).returncode == 0  # the act journalled
    bad = tpe("journal", "archive", "--period", "2026-13", "--config", str(config))
    assert bad.returncode == 2 and "YYYY-MM" in bad.stderr


def test_archive_goes_to_the_state_folder_by_default(config: Path) -> None:
    assert tpe("journal", "archive", "--period", "2026-12", "--config", str(config)).returncode == 0
    assert len(list((config.parent / "state" / "archives").glob("journal-2026-12-*.zip"))) == 1


def test_export_writes_the_csv_and_journals_it(config: Path, tmp_path: Path) -> None:
    result = tpe("journal", "export", "--format", "csv", "--decimal-comma", "--config", str(config),
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "tickets-all.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b";12,50;" in data
    status = json.loads(tpe("journal", "status", "--json", "--config", str(config)).stdout)
    assert status["heads"]["audit"]["type"] == "export"
    out = tmp_path / "nov.csv"
    assert tpe("journal", "export", "--format", "csv", "--period", "2026-11", "--out", str(out),
               "--config", str(config)).returncode == 0 and out.exists()
    assert tpe("journal", "export", "--format", "xml", "--config", str(config)).returncode == 2
    bad_period = tpe("journal", "export", "--format", "csv", "--period", "nov", "--config", str(config))
    assert bad_period.returncode == 2


def test_status_shows_the_heads_and_the_guard(config: Path) -> None:
    result = tpe("journal", "status", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["guard_ok"] and status["heads"]["ticket"]["seq"] == 9
    assert status["heads"]["training-ticket"]["seq"] == 1 and len(status["key"]) == 16
    text = tpe("journal", "status", "--config", str(config)).stdout
    assert "heads file and database agree" in text


def test_status_reports_a_lost_tail_and_leaves_it_for_the_terminal_to_journal(config: Path,
                                                                              tmp_path: Path) -> None:
    state = config.parent / "state"
    shutil.copy(state / HEAD_FILE, tmp_path / "head")
    tampered(state, tmp_path / "cut",
             lambda db: db.execute("DELETE FROM record WHERE chain = 'ticket' AND seq = 9"))
    for name in (FILE_NAME, FILE_NAME + "-wal", FILE_NAME + "-shm"):
        (state / name).unlink(missing_ok=True)
    shutil.copy(tmp_path / "cut" / FILE_NAME, state / FILE_NAME)
    for _ in range(2):  # read-only: reported every time until the terminal journals it
        result = tpe("journal", "status", "--config", str(config))
        assert result.returncode == 8
        alert = f"ALERT       ticket: truncated: {HEAD_FILE} names seq 9, the chain ends at seq 8"
        assert alert in result.stdout
    assert (state / HEAD_FILE).read_bytes() == (tmp_path / "head").read_bytes()


def test_close_a_day_then_the_journal_still_verifies(tmp_path: Path) -> None:
    from firmware import fiscal
    from firmware.journal import Journal

    path = tmp_path / "terminal.toml"
    path.write_text(DEFAULT_CONFIG.read_text() + '\n[state]\nfolder = "state"\n')
    journal = Journal(tmp_path / "state")
    fiscal.record_sale(journal, 1250, "EUR", [{"type": "cash", "amount": 1250}])
    fiscal.record_sale(journal, 800, "EUR", [{"type": "cheque", "amount": 500},
                                             {"type": "meal_voucher", "amount": 300}])
    fiscal.record_refund(journal, -500, "EUR", [{"type": "cash", "amount": -500}])
    journal.close()
    closed = tpe("journal", "close", "day", "--period", "2026-11-26", "--json", "--config", str(path))
    assert closed.returncode == 0, closed.stdout + closed.stderr
    out = json.loads(closed.stdout)
    assert (out["from"], out["to"], out["period"]) == (1, 3, "2026-11-26")
    assert out["totals"]["EUR"]["total"] == 1250 + 800 - 500 and out["totals"]["EUR"]["count"] == 3
    assert out["perpetual"]["EUR"] == {"total": 1550, "absolute": 2550}
    again = tpe("journal", "close", "day", "--period", "2026-11-26", "--config", str(path))
    assert again.returncode == 2 and "usage error" in again.stderr
    text = tpe("journal", "close", "month", "--period", "2026-11", "--config", str(path)).stdout
    assert "Total       15.50 EUR (3 ticket(s))" in text
    assert tpe("journal", "verify", str(tmp_path / "state")).returncode == 0
