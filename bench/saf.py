"""`make bench` figures of the store-and-forward queue (`firmware.saf_queue`): the queue forwarded
to the host over a simulated 3G module, and the commits per second of the durable store under it.

The forwarding runs the terminal's own code in this process (`HostClient.forward`, TLS, the
Quectel driver on the module's pty) and the two simulators each in a process of their own,
`tpe sim modem` and `tpe sim host`: on the device the radio is the module's and the host is
far away, so neither takes the terminal's CPU. The radio's time is the simulator's
(`sim.modem.network`), which loses channel time when its event loop is busy; sharing one loop
with the terminal, as `bench_modem` does for single authorizations, would charge the
terminal for both simulators' work.

Report only: a run that does not end with every item acknowledged, and booked once by the
host, stops the bench with `RuntimeError`.
"""

from __future__ import annotations

import contextlib
import datetime
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from emv.outcome import Outcome, OutcomeKind

ROOT = Path(__file__).resolve().parent.parent
KEYS_FILE = ROOT / "sim" / "host" / "terminal_test_keys.toml"  # TEST KEYS of the host simulator
AT = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
OFFLINE_PROFILE = "offline_approving"  # a TC on the first GENERATE AC under the floor limit
OFFLINE_AMOUNT = 1000
TERMINAL_ID = "TPE00001"
QUEUED = 1000
WIDE_WINDOW = 32  # the advices in flight that fill 3G's bandwidth-delay product (see bench_forward)
FIRST_STAN = 1001  # the advices' own STANs; the client's counter gives the echo STAN 1


@dataclass(frozen=True)
class ForwardRun:
    """One `HostClient.forward` of `count` queued advices."""

    count: int
    window: int
    seconds: float
    up_bytes: int  # payload bytes on air, TLS records included (TCP/IP headers are not simulated)
    down_bytes: int
    acknowledged: int
    booked_once: int  # advices of this run in the host's ledger, or -1 if a STAN is there twice
    terminal_cpu_seconds: float  # this process: client, TLS, AT driver, queue and key store

    def bandwidth_seconds(self, bandwidth_kbit: float) -> float:
        """What the link's bandwidth alone needs. Each direction of the simulated radio is a
        channel of its own at `bandwidth_kbit` (sim/modem/network.py, `Radio`): the busier
        direction sets the time."""
        return max(self.up_bytes, self.down_bytes) * 8 / (bandwidth_kbit * 1000)


def offline_outcome() -> Outcome:
    """One real offline approval (TC, Y1) of a simulated card; no authorizer at all."""
    from firmware.config import load_config
    from firmware.prompts import ScriptedPrompt
    from sim.inprocess import fresh_card, transact

    run = transact(fresh_card(OFFLINE_PROFILE), load_config().kernel, OFFLINE_AMOUNT, prompt=ScriptedPrompt())
    if run.outcome.kind not in (OutcomeKind.APPROVED_OFFLINE, OutcomeKind.APPROVED_UNABLE_ONLINE):
        raise RuntimeError(f"the offline sale ended {run.outcome.kind.value}")
    return run.outcome


def acceptor() -> Any:
    from firmware import messages

    return messages.Acceptor(terminal_id=TERMINAL_ID, merchant_id="000000000000001", acquirer_id="12345")


def advice_of(outcome: Outcome, stan: int) -> dict[str, str]:
    from firmware import messages

    return dict(messages.offline_advice(outcome, acceptor=acceptor(), stan=stan, at=AT, transaction_time=AT))


def _child(*args: str) -> tuple[subprocess.Popen[str], str]:
    """`tpe <args>` in its own process, and the first line it prints (its address)."""
    child = subprocess.Popen([sys.executable, "-m", "firmware.cli", *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if not line.startswith("ok "):
        child.kill()
        child.wait(10)
        raise RuntimeError(f"tpe {' '.join(args[:2])} did not start: {line or 'no output'}")
    return child, line


class ForwardRig:
    """The host simulator and the module simulator in processes of their own, the Quectel
    driver on the module's pty with its data context up, and a `HostClient` whose link goes
    through it, opened (TCP over the air, TLS) by an echo."""

    def __init__(self, folder: Path, *, rtt_ms: float, bandwidth_kbit: float) -> None:
        self.folder = folder
        self.rtt_ms = rtt_ms
        self.bandwidth_kbit = bandwidth_kbit
        self.outcome = offline_outcome()
        self._stan = FIRST_STAN
        self._cleanup = contextlib.ExitStack()

    def __enter__(self) -> ForwardRig:
        try:
            self._start()
        except BaseException:
            self._cleanup.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._cleanup.close()

    def _stop_child(self, child: subprocess.Popen[str]) -> None:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)

    def _start(self) -> None:
        from firmware.config import HostConfig
        from firmware.host_client import EventLoopThread, HostClient
        from firmware.host_store import HostStore
        from firmware.terminal_keys import TerminalKeys
        from modem.quectel import QuectelModule
        from modem.runner import AtRunner
        from modem.serial_port import open_serial
        from sim.host.server import load_or_make_pki

        self.ledger_file = self.folder / "ledger.sqlite3"
        host, line = _child("sim", "host", "--listen", "127.0.0.1:0", "--pki", str(self.folder / "pki"),
                            "--ledger", str(self.ledger_file))
        self._cleanup.callback(self._stop_child, host)
        port = int(line.rsplit(":", 1)[1])
        self._modem, line = _child("sim", "modem", "--dialect", "quectel", "--rtt", f"{self.rtt_ms:g}",
                                   "--bandwidth", f"{self.bandwidth_kbit:g}", "--technology", "3G",
                                   "--seed", "7")
        self._cleanup.callback(self._stop_child, self._modem)
        pty = line.rsplit(" ", 1)[1]
        self.thread = thread = EventLoopThread("bench-saf")
        self._cleanup.callback(thread.stop)

        async def bring_up() -> tuple[AtRunner, QuectelModule]:
            runner = AtRunner(await open_serial(pty))
            await runner.start()
            module = QuectelModule(runner, registration_timeout=30.0, poll_interval=0.2)
            await module.bring_up(None, "internet.test")
            return runner, module

        runner, module = thread.run(bring_up())
        self._cleanup.callback(lambda: thread.run(runner.close()))
        self._cleanup.callback(lambda: thread.run(module.close()))

        async def open_socket():  # type: ignore[no-untyped-def]
            return await module.open_socket("127.0.0.1", port, 30.0)

        pki = load_or_make_pki(self.folder / "pki")  # the files the host made at its start
        store = HostStore(self.folder / "terminal" / "host.sqlite3")
        self._cleanup.callback(store.close)
        config = HostConfig(address="127.0.0.1", port=port, server_name="localhost", ca_file=pki.host_ca_cert,
                            cert_file=pki.terminal_cert, key_file=pki.terminal_key, acquirer_id="12345",
                            timeout=30.0)
        # its payments and queue: saf.sqlite3 of the folder that holds the HostStore
        self.client = client = HostClient(config, store, TerminalKeys.open(store, KEYS_FILE), acceptor(),
                                          open_socket)
        self._cleanup.callback(client.recorder.queue.close)
        self._cleanup.callback(lambda: thread.run(client.close()))
        if thread.run(client.echo()) != "00":
            raise RuntimeError("the host did not answer the echo over the module")

    def traffic(self) -> tuple[int, int]:
        """Bytes on air up and down so far, every socket (the simulator's `status`)."""
        assert self._modem.stdin is not None and self._modem.stdout is not None
        self._modem.stdin.write("status\n")
        self._modem.stdin.flush()
        line = self._modem.stdout.readline()
        words = dict(word.split("=", 1) for word in line.split() if "=" in word)
        if "up_bytes" not in words:
            raise RuntimeError(f"the modem simulator's status has no byte counts: {line.strip()[:80]}")
        return int(words["up_bytes"]), int(words["down_bytes"])

    def forward(self, count: int, window: int) -> ForwardRun:
        """Queue `count` advices of the offline sale, each under a STAN of its own, as the sale
        would (one committed `add` each); then time one `forward(window)` on the open link."""
        from sim.host.ledger import Ledger

        stans = range(self._stan, self._stan + count)
        self._stan += count
        queue = self.client.recorder.queue
        for stan in stans:
            queue.add("advice", advice_of(self.outcome, stan), amount=self.outcome.amount,
                      currency=self.outcome.currency, created=AT)
        up, down = self.traffic()
        started, cpu = time.perf_counter(), time.process_time()
        report = self.thread.run(self.client.forward(window))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        up_after, down_after = self.traffic()
        wanted = {f"{stan:06d}" for stan in stans}
        with Ledger(self.ledger_file) as ledger:
            booked = [entry.stan for entry in ledger.entries(terminal_id=TERMINAL_ID)
                      if entry.advice and entry.stan in wanted]
        once = len(booked) if len(set(booked)) == len(booked) else -1
        run = ForwardRun(count, window, seconds, up_after - up, down_after - down, report.acknowledged, once,
                         cpu)
        if run.acknowledged != count or run.booked_once != count:
            raise RuntimeError(f"forward(window={window}) of {count} advices: {run.acknowledged} "
                               f"acknowledged, {run.booked_once} booked once by the host ({report.problem})")
        return run


def _record(results: dict[str, float], name: str, run: ForwardRun, bandwidth_kbit: float) -> None:
    bandwidth = run.bandwidth_seconds(bandwidth_kbit)
    results[f"{name}_seconds"] = round(run.seconds, 2)
    results[f"{name}_bytes_on_air"] = run.up_bytes + run.down_bytes
    results[f"{name}_bandwidth_only_seconds"] = round(bandwidth, 2)  # busier direction
    results[f"{name}_vs_bandwidth_only"] = round(run.seconds / bandwidth, 3)
    results[f"{name}_acknowledged"] = run.acknowledged
    results[f"{name}_host_advices_booked_once"] = run.booked_once
    results[f"{name}_terminal_cpu_ms_per_item"] = round(run.terminal_cpu_seconds / run.count * 1000, 2)


def bench_forward(results: dict[str, float], *, rtt_ms: float, bandwidth_kbit: float) -> None:
    """1,000 queued offline payments forwarded at `rtt_ms` and `bandwidth_kbit`: with the
    default window, with WIDE_WINDOW, and one in flight. Goal: default <= 1.25 x bandwidth only.

    A 0220 takes 304 bytes up (TLS record included) and its 0230 149 down: 6.3 ms of a
    384 kbit/s uplink. Filling a 150 ms round trip takes (RTT + both serialisations + the host)
    / 6.3 ms, some 26 advices in flight, hence WIDE_WINDOW."""
    from firmware.host_client import FORWARD_WINDOW

    with tempfile.TemporaryDirectory() as folder, \
            ForwardRig(Path(folder), rtt_ms=rtt_ms, bandwidth_kbit=bandwidth_kbit) as rig:
        default = rig.forward(QUEUED, FORWARD_WINDOW)
        wide = rig.forward(QUEUED, WIDE_WINDOW)
        single = rig.forward(QUEUED, 1)
    results["saf_forward_3g_default_window"] = FORWARD_WINDOW
    results["saf_forward_3g_bytes_up_per_advice"] = round(default.up_bytes / default.count, 1)
    results["saf_forward_3g_bytes_down_per_advice"] = round(default.down_bytes / default.count, 1)
    _record(results, f"saf_forward_3g_{QUEUED}_window{FORWARD_WINDOW}", default, bandwidth_kbit)
    _record(results, f"saf_forward_3g_{QUEUED}_window{WIDE_WINDOW}", wide, bandwidth_kbit)
    _record(results, f"saf_forward_3g_{QUEUED}_window1", single, bandwidth_kbit)
    results[f"saf_forward_3g_{QUEUED}_window1_ms_per_item"] = round(single.seconds / single.count * 1000, 1)


def filesystem_of(path: Path) -> str:
    """The type of the file system that holds `path`: the longest mount point of /proc/mounts
    above it ("unknown" without /proc)."""
    resolved = str(path.resolve())
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            point = parts[1].replace("\\040", " ")
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, parts[2]
    return kind


def _per_second(action: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        action()
    return count / (time.perf_counter() - started)


def bench_commits(results: dict[str, float]) -> None:
    """Commits per second of the durable store (SQLite WAL, synchronous FULL: one fsync per
    commit) in a temporary folder; the file system's type is in the figures' names."""
    from firmware.keystore import Keystore
    from firmware.payments import Payments
    from firmware.saf_queue import FILE_NAME, SafQueue

    outcome = offline_outcome()
    advice = advice_of(outcome, 1)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        name = f"saf_store_on_{filesystem_of(tmp)}"
        queue = SafQueue(tmp / FILE_NAME, Keystore.open(tmp))
        try:
            count = 500
            results[f"{name}_add_advice_per_second"] = round(_per_second(lambda: queue.add(
                "advice", advice, amount=outcome.amount, currency=outcome.currency, created=AT), count))
            ids = iter([item.id for item in queue.pending(count)])
            results[f"{name}_mark_answered_per_second"] = round(_per_second(
                lambda: queue.mark_answered(next(ids), "00", AT), count))
            payments = Payments(queue)
            reversal = {"t": "0200", "11": "000001", "reversal_stan": 2, "reversal_reason": "22"}

            def cycle() -> None:
                # begin, authorizing, answered, completed: four commits
                payment = payments.begin("sale", OFFLINE_AMOUNT, outcome.currency)
                payments.authorizing(payment, "000001", reversal)
                payments.answered(payment, approved=True, response_code="00", rrn="000000000001",
                                  reversal=reversal)
                payments.completed(payment, outcome="approved_online", approved=True, offline=False,
                                   pan_masked=outcome.pan_masked)

            results[f"{name}_payment_cycles_per_second"] = round(_per_second(cycle, 200))
        finally:
            queue.close()


def bench_saf(results: dict[str, float], *, rtt_ms: float, bandwidth_kbit: float) -> None:
    bench_commits(results)
    bench_forward(results, rtt_ms=rtt_ms, bandwidth_kbit=bandwidth_kbit)
