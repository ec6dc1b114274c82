"""`make bench` figures of the terminal itself (`tpe run` and the touchscreen, issue 8).

- boot: from spawning `tpe run` (headless SDL, the real touchscreen off screen) to its sd_notify
  READY=1, sent once every service runs and the idle screen is up;
- idle: the CPU that process uses over 30 s of idle screen (utime + stime from /proc), as a
  percentage of one core;
- frames: the time to draw the busiest screens (the receipt with its QR code, the PIN pad) in
  this process: the first frame, then the median and 95th percentile of 200;
- memory: the resident set of `tpe run --screenshots` after 10, 50, 100, 200 and 300 scripted
  sales through pcscd, the card simulator and the host simulator, and its growth per 100 sales
  after the warm-up (from sale 100 to sale 300): the goal of issue 8 is under 80 MB after 100
  sales and no growth.

Report only: a run that does not complete raises RuntimeError.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TPE = [sys.executable, "-m", "firmware.cli"]
IDLE_SECONDS = 30.0
SALES = 300
RSS_AT = (10, 50, 100, 200, 300)
WARM_UP = 100  # sales before the caches are full; the growth is measured from there to SALES
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (proc(5))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _config(folder: Path, extra: str = "") -> Path:
    path = folder / "terminal.toml"
    path.write_text((ROOT / "firmware" / "defaults" / "terminal.toml").read_text()
                    + f'\n[state]\nfolder = "{folder / "state"}"\n{extra}')
    return path


def bench_boot_and_idle(results: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        script = folder / "idle.toml"
        script.write_text('then = "wait"\n')
        notify = folder / "notify.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(str(notify))
        listener.settimeout(30)
        env = os.environ | {"SDL_VIDEODRIVER": "dummy", "NOTIFY_SOCKET": str(notify)}
        started = time.perf_counter()
        process = subprocess.Popen([*TPE, "run", "--config", str(_config(folder)), "--script", str(script),
                                    "--screenshots", str(folder / "shots")], env=env, cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   stdin=subprocess.DEVNULL)
        try:
            while b"READY=1" not in listener.recv(4096):
                pass
            results["terminal_boot_to_ready_s"] = round(time.perf_counter() - started, 3)
            time.sleep(2)  # the first screens drawn and saved
            before = cpu_seconds(process.pid)
            time.sleep(IDLE_SECONDS)
            used = cpu_seconds(process.pid) - before
            results["terminal_idle_cpu_percent_of_one_core"] = round(100 * used / IDLE_SECONDS, 2)
            results["terminal_idle_rss_mb"] = round(rss_mb(process.pid), 1)
        finally:
            process.terminate()
            process.wait(30)
            listener.close()


def bench_frames(results: dict[str, float]) -> None:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    from ui.app import TouchUi
    from ui.contract import AskPin, AskReceipt, Money, Receipt, Status

    lines = tuple(f"Line {n:2d}                    {n},00 EUR" for n in range(14))
    questions = {"receipt_qr": AskReceipt(Receipt(lines, qr="https://receipts.example/t/000001-D505-15A5",
                                                  printable=True)),
                 "pin_pad": AskPin(Money(4250, "EUR", 2), online=True, tries_left=3)}

    async def measure() -> None:
        ui = TouchUi(headless=True)
        ui.open()
        try:
            for name, question in questions.items():
                waiting = asyncio.get_running_loop().create_task(ui.ask(question))
                await asyncio.sleep(0)
                times = []
                for n in range(200):
                    ui.set_status(Status(route="4G", signal_bars=n % 5, pending_count=n))  # a change to draw
                    began = time.perf_counter()
                    ui.texts()  # draws the frame the change asks for
                    times.append((time.perf_counter() - began) * 1000)
                waiting.cancel()
                results[f"ui_frame_{name}_ms_first"] = round(times[0], 2)  # text and QR code laid out
                results[f"ui_frame_{name}_ms_median"] = round(statistics.median(times), 2)
                results[f"ui_frame_{name}_ms_p95"] = round(sorted(times)[int(0.95 * len(times))], 2)
        finally:
            ui.close()

    asyncio.run(measure())


def bench_sales_memory(results: dict[str, float]) -> None:
    from sim import pcscd
    from sim.host.server import load_or_make_pki

    daemon = pcscd.start()
    started: list[subprocess.Popen[str]] = []
    try:
        work = daemon.workdir
        host = subprocess.Popen([*TPE, "sim", "host", "--listen", "127.0.0.1:0", "--pki", str(work / "pki"),
                                 "--ledger", str(work / "ledger.sqlite3")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)
        started.append(host)
        assert host.stdout is not None
        port = int(host.stdout.readline().strip().rsplit(":", 1)[1])
        assert host.stdin is not None  # money enough on the card's account for every sale
        host.stdin.write(f"balance visa_cda_online {SALES * 10000}\n")
        host.stdin.flush()
        if not host.stdout.readline().startswith("ok"):
            raise RuntimeError("the host simulator did not take the balance")
        card = subprocess.Popen([*TPE, "sim", "card", "serve", "--profile", "visa_cda_online", "--port",
                                 str(daemon.vpcd_port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, cwd=ROOT)
        started.append(card)
        assert card.stdout is not None
        card.stdout.readline()
        pki = load_or_make_pki(work / "pki")
        config = _config(work, f'\n[host]\naddress = "127.0.0.1"\nport = {port}\nserver_name = "localhost"\n'
                               f'ca_file = "{pki.host_ca_cert}"\ncert_file = "{pki.terminal_cert}"\n'
                               f'key_file = "{pki.terminal_key}"\nacquirer_id = "12345"\ntimeout = 10.0\n')
        script = work / "sales.toml"
        script.write_text('then = "stop"\n' + '[[sale]]\namount = 4250\npin = "1234"\n' * SALES)
        env = daemon.client_env() | {"SDL_VIDEODRIVER": "dummy"}
        run = subprocess.Popen([*TPE, "run", "--config", str(config), "--script", str(script),
                                "--screenshots", str(work / "shots")], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               stdin=subprocess.DEVNULL)
        assert run.stdout is not None
        approved = 0
        began = time.perf_counter()
        for line in run.stdout:
            if line.startswith("screen APPROVED"):
                approved += 1
                if approved in RSS_AT:
                    results[f"terminal_rss_mb_after_{approved}_sales"] = round(rss_mb(run.pid), 1)
        run.wait(60)
        if approved != SALES:
            raise RuntimeError(f"tpe run approved {approved} of {SALES} scripted sales")
        results["terminal_scripted_sale_s_mean"] = round((time.perf_counter() - began) / SALES, 3)
        grown = (results[f"terminal_rss_mb_after_{SALES}_sales"]
                 - results[f"terminal_rss_mb_after_{WARM_UP}_sales"])
        results["terminal_rss_mb_growth_per_100_sales_after_warm_up"] = round(
            100 * grown / (SALES - WARM_UP), 2)
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(10)
        daemon.stop()


def bench_terminal(results: dict[str, float]) -> None:
    bench_boot_and_idle(results)
    bench_frames(results)
    bench_sales_memory(results)


if __name__ == "__main__":
    figures: dict[str, float] = {}
    bench_terminal(figures)
    for key, value in sorted(figures.items()):
        print(f"{key:48} {value}")
