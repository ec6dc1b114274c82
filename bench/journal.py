"""`make bench` figures of the fiscal journal (`firmware.journal`, `firmware.journal_verify`):
appends per second with durability, the verification of 1,000,000 records (wall time, peak
memory of the verifier and of its pool of processes, compared with 100,000 records to show that
memory stays flat), and the database's size per 1,000,000 records.

Each verification runs in a fresh process (`python -m bench.journal verify FOLDER`) so that its
peak memory is its own: the verifier's VmHWM, and the largest peak among its worker processes
(`getrusage(RUSAGE_CHILDREN)`, read once the pool is shut down).

Report only: a journal that does not verify stops the bench with `RuntimeError`.
"""

from __future__ import annotations

import datetime
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LARGE = 1_000_000
SMALL = 100_000
BATCH = 10_000  # records per append_many when building (one commit each)
APPEND_SECONDS = 3.0
# A card tender's reference as firmware.fiscal writes it (no card data beyond the masked PAN).
REFERENCE = {"payment": 0, "outcome": "approved_online", "aid": "A0000000031010",
             "pan_masked": "497010******0010", "atc": "0001", "authorization_code": "123456"}


def ticket(n: int) -> tuple[str, dict[str, Any]]:
    """The n-th ticket of a day's trade: mostly card sales, some cash, some split, a refund now
    and then; amounts in cents."""
    amount = 500 + (n * 7919) % 9500
    if n % 50 == 49:
        return "refund", {"amount": -amount, "currency": "EUR",
                          "tenders": [{"type": "cash", "amount": -amount}]}
    if n % 5 == 1:
        tenders = [{"type": "cash", "amount": amount}]
    elif n % 10 == 3:
        tenders = [{"type": "card", "amount": amount - 400, "reference": {**REFERENCE, "payment": n}},
                   {"type": "meal_voucher", "amount": 400}]
    else:
        tenders = [{"type": "card", "amount": amount, "reference": {**REFERENCE, "payment": n,
                                                                   "atc": f"{n % 65536:04X}"}}]
    return "sale", {"amount": amount, "currency": "EUR", "tenders": tenders}


def build(folder: Path, count: int) -> float:
    """`count` records: tickets by `BATCH` in one commit each, and after each batch a day's
    closure with its totals (so that verification recomputes them). Returns the seconds."""
    from firmware.journal import Journal

    day = datetime.date(2026, 1, 1)
    journal = Journal(folder)
    started = time.perf_counter()
    written, first = 0, 1
    perpetual = {"total": 0, "absolute": 0}
    while written < count:
        size = min(BATCH, count - written)
        totals = {"total": 0, "sales": 0, "refunds": 0, "count": 0, "tenders": {}}
        items = []
        for n in range(first, first + size):
            kind, payload = ticket(n)
            amount = payload["amount"]
            totals["total"] += amount
            totals["sales" if amount > 0 else "refunds"] += amount
            totals["count"] += 1
            paid = totals["tenders"]
            for tender in payload["tenders"]:
                paid[tender["type"]] = paid.get(tender["type"], 0) + tender["amount"]
            perpetual["total"] += amount
            perpetual["absolute"] += abs(amount)
            items.append(("ticket", kind, payload))
        journal.append_many(items)
        written += size
        if written < count:
            journal.append("closure", "day", {
                "period": day.isoformat(), "from": first, "to": first + size - 1, "totals": {"EUR": totals},
                "perpetual": {"EUR": dict(perpetual)}, "heads": journal.heads()})
            written += 1
            day += datetime.timedelta(days=1)
        first += size
    journal.close()  # the last connection: the WAL is checkpointed into the database file
    return time.perf_counter() - started


def appends_per_second(folder: Path) -> float:
    """One record per commit, each synced (WAL, synchronous=FULL) with its heads file."""
    from firmware.journal import Journal

    journal = Journal(folder)
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < APPEND_SECONDS:
        kind, payload = ticket(count)
        journal.append("ticket", kind, payload)
        count += 1
    journal.close()
    return count / elapsed


def _peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def verify_here(folder: Path) -> dict[str, Any]:
    """Run in the fresh process: verify, then the peaks of this process and of its workers."""
    from firmware.journal_verify import verify_database

    started = time.perf_counter()
    report = verify_database(folder)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "ok": report.ok, "records": sum(report.records.values()),
            "problems": [str(p) for p in report.problems[:5]], "verifier_peak_kb": _peak_kb(),
            "worker_peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}


def verify_in_child(folder: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "bench.journal", "verify", str(folder)], cwd=ROOT,
                          capture_output=True, text=True, check=True, timeout=1800)
    found = json.loads(done.stdout)
    if not found["ok"]:
        raise RuntimeError(f"the bench journal does not verify: {found['problems']}")
    return found


def bench_journal(results: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        results["journal_appends_per_second_durable"] = round(appends_per_second(tmp / "appends"), 1)
        small_build = build(tmp / "small", SMALL)
        small = verify_in_child(tmp / "small")
        large_build = build(tmp / "large", LARGE)
        large = verify_in_child(tmp / "large")
        size = (tmp / "large" / "journal.sqlite3").stat().st_size
    results["journal_build_1m_records_s"] = round(large_build, 1)
    results["journal_build_records_per_second"] = round(LARGE / large_build)
    results["journal_verify_1m_records_s"] = round(large["seconds"], 1)
    results["journal_verify_records_per_second"] = round(large["records"] / large["seconds"])
    results["journal_verify_1m_verifier_peak_rss_mb"] = round(large["verifier_peak_kb"] / 1024, 1)
    results["journal_verify_1m_worker_peak_rss_mb"] = round(large["worker_peak_kb"] / 1024, 1)
    results["journal_verify_100k_records_s"] = round(small["seconds"], 1)
    results["journal_verify_100k_verifier_peak_rss_mb"] = round(small["verifier_peak_kb"] / 1024, 1)
    results["journal_verify_100k_worker_peak_rss_mb"] = round(small["worker_peak_kb"] / 1024, 1)
    results["journal_build_100k_records_s"] = round(small_build, 1)
    results["journal_database_mb_per_1m_records"] = round(size / 1e6 * 1_000_000 / large["records"], 1)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "verify":
        print(json.dumps(verify_here(Path(argv[1]))))
        return 0
    results: dict[str, float] = {}
    bench_journal(results)
    for key, value in sorted(results.items()):
        print(f"{key:48} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
