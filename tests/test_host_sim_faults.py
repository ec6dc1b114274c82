"""Fault injection of the host simulator (sim/host/faults.py), set in-process and through the
standard input of `tpe sim host` (a real process, stopped by SIGTERM).

TEST KEYS: sim/host/*.toml and the simulator profiles' issuer master keys.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from test_host_sim_support import AMOUNT, TIMEOUT, Terminal, kernel_request, now

from emv.sensitive import pan_token
from firmware import messages
from firmware.messages import MacError, MessageError, ReversalReason
from firmware.tls_stream import StreamClosed, StreamTimeout
from sim.card.profile import load_profile
from sim.host.faults import FaultError, Faults, ResponseFault
from sim.host.ledger import Ledger
from sim.host.serve import CommandError, execute
from sim.host.server import HostSimulator, load_or_make_pki
from sim.host.test_pki import make_test_pki

ROOT = Path(__file__).resolve().parent.parent
OPENING = 50_000


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("host-pki")
    make_test_pki(folder)
    return folder


def with_host(pki_dir: Path, test: Callable[[HostSimulator, Terminal], Awaitable[Any]],
              **options: Any) -> Any:
    async def main() -> Any:
        async with asyncio.timeout(60), HostSimulator(pki_dir, **options) as host:
            return await test(host, Terminal(host.pki))
    return asyncio.run(main())


def visa_balance(host: HostSimulator) -> int:
    return host.ledger.balance(pan_token(load_profile("sda_only").applications[0].pan))


# --- Each fault, in-process -----------------------------------------------------------------

def test_delay_holds_the_answer_back(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> list[float]:
        took = []
        for delay in (0.4, 0.0):
            host.faults.set_delay(delay)
            _, data, keys = terminal.sale(kernel_request("sda_only"), pin=None)
            start = time.monotonic()
            assert (await terminal.exchange(host.port, data, keys))["39"] == "00"
            took.append(time.monotonic() - start)
        return took

    slow, fast = with_host(pki_dir, test)
    assert slow >= 0.4 and fast < 0.4


def test_a_dropped_answer_is_booked_and_its_reversal_gives_the_money_back(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        host.faults.arm(ResponseFault.DROP)
        fields, data, _ = terminal.sale(kernel_request("sda_only"), pin=None)
        link = await terminal.connect(host.port)
        await link.send(data)
        with pytest.raises(StreamTimeout):
            await link.receive(0.5)
        assert [entry.approved for entry in host.ledger.entries()] == [True]
        assert visa_balance(host) == OPENING - AMOUNT
        # the terminal reverses (reason 68) on the same connection, which the host still serves
        reversal = messages.reversal(fields, stan=terminal.next_stan(), at=now(),
                                     reason=ReversalReason.NO_RESPONSE)
        reversal_data, reversal_keys = terminal.signed(reversal)
        await link.send(reversal_data)
        answer = messages.verify_mac(await link.receive(TIMEOUT), reversal_keys.response_mac)
        await link.close()
        assert answer["39"] == "00" and visa_balance(host) == OPENING
        assert host.faults.armed(ResponseFault.DROP) == 0

    with_host(pki_dir, test)


def test_close_instead_of_answering(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        host.faults.arm("close")
        _, data, _ = terminal.sale(kernel_request("sda_only"), pin=None)
        link = await terminal.connect(host.port)
        await link.send(data)
        with pytest.raises(StreamClosed):
            await link.receive(TIMEOUT)
        await link.close()
        assert len(host.ledger.entries()) == 1
        _, data, keys = terminal.sale(kernel_request("sda_only"), pin=None)
        assert (await terminal.exchange(host.port, data, keys))["39"] == "00"  # once only

    with_host(pki_dir, test)


def test_garbage_instead_of_the_answer(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        host.faults.arm(ResponseFault.GARBAGE, 2)
        for _ in range(2):
            _, data, _ = terminal.sale(kernel_request("sda_only"), pin=None)
            link = await terminal.connect(host.port)
            await link.send(data)
            garbage = await link.receive(TIMEOUT)
            await link.close()
            with pytest.raises(MessageError):
                messages.unpack(garbage)
        assert len(host.ledger.entries()) == 2

    with_host(pki_dir, test)


def test_bad_mac_on_the_answer(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        host.faults.arm(ResponseFault.BAD_MAC)
        _, data, keys = terminal.sale(kernel_request("sda_only"), pin=None)
        link = await terminal.connect(host.port)
        await link.send(data)
        answer = await link.receive(TIMEOUT)
        await link.close()
        assert messages.unpack(answer)["39"] == "00"  # a well-formed approval...
        with pytest.raises(MacError):  # ...that the terminal must not trust
            messages.verify_mac(answer, keys.response_mac)
        assert len(host.ledger.entries()) == 1

    with_host(pki_dir, test)


def test_decline_the_next_n_with_a_code(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> list[tuple[str, bool]]:
        host.faults.decline_next(2, "91")
        results = []
        for _ in range(3):
            _, data, keys = terminal.sale(kernel_request("sda_only"), pin=None)
            answer = await terminal.exchange(host.port, data, keys)
            results.append((answer["39"], "55" in answer))
        assert [entry.response_code for entry in host.ledger.entries()] == ["91", "91", "00"]
        return results

    assert with_host(pki_dir, test) == [("91", True), ("91", True), ("00", True)]


def test_faults_are_checked() -> None:
    faults = Faults()
    with pytest.raises(FaultError):
        faults.arm("explode")
    with pytest.raises(FaultError):
        faults.arm(ResponseFault.DROP, -1)
    with pytest.raises(FaultError):
        faults.set_delay(-0.1)
    with pytest.raises(FaultError):
        faults.set_delay(float("nan"))
    for code in ("00", "11", "5", "5!", "505"):
        with pytest.raises(FaultError):
            faults.decline_next(1, code)
    faults.arm(ResponseFault.BAD_MAC)
    faults.arm(ResponseFault.CLOSE)
    taken = [faults.take_response_fault() for _ in range(3)]
    assert taken == [ResponseFault.CLOSE, ResponseFault.BAD_MAC, None]
    faults.decline_next(1, "05")
    faults.set_delay(2)
    faults.clear()
    assert faults.take_decline() is None and faults.delay == 0


# --- Commands -------------------------------------------------------------------------------

def test_commands_set_faults_scripts_and_accounts(pki_dir: Path) -> None:
    host = HostSimulator(pki_dir)
    try:
        assert execute(host, ["drop", "2"]) == "ok drop 2"
        assert host.faults.armed(ResponseFault.DROP) == 2
        assert execute(host, ["badmac"]) == "ok badmac 1"
        assert execute(host, ["delay", "0.25"]) == "ok delay 0.25"
        assert execute(host, ["decline", "3", "51"]) == "ok decline 3 51"
        assert host.faults.declines_left == 3
        status = execute(host, ["status"])
        assert "drop=2" in status and "bad_mac=1" in status and "delay=0.25" in status
        assert execute(host, ["clear"]) == "ok clear" and host.faults.describe().startswith("delay=0 ")
        execute(host, ["script", "put", "9F14", "07"])
        execute(host, ["script", "block"])
        execute(host, ["script", "template", "71"])
        assert host.scripts.put_data == {0x9F14: b"\x07"}
        assert host.scripts.block and host.scripts.template == 0x71
        execute(host, ["script", "clear"])
        assert host.scripts.empty
        assert execute(host, ["balance", "sda_only", "1234"]) == "ok balance sda_only 1234"
        assert execute(host, ["block", "sda_only"]) == "ok block sda_only"
        token = pan_token(load_profile("sda_only").applications[0].pan)
        account = host.ledger.account(token)
        assert account is not None and account.blocked
        for bad in (["delay", "soon"], ["drop", "-1"], ["decline", "1", "00"], ["script", "template", "73"],
                    ["script", "put", "XYZ", "00"], ["block", "no_such_profile"],
                    ["balance", "sda_only", "1.5"],
                    ["launch"]):
            with pytest.raises(CommandError):
                execute(host, bad)
    finally:
        host.ledger.close()


def _start(pki: Path, ledger: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "firmware.cli", "sim", "host", "--listen", "127.0.0.1:0", "--pki", str(pki),
         "--ledger", str(ledger)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    assert first.startswith("ok host listening on 127.0.0.1:"), first
    return process, int(first.rsplit(":", 1)[1])


def _command(process: subprocess.Popen[str], line: str) -> str:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def test_tpe_sim_host_serves_takes_commands_and_stops_on_sigterm(tmp_path: Path) -> None:
    pki, ledger = tmp_path / "pki", tmp_path / "ledger.sqlite3"
    pki.mkdir()
    process, port = _start(pki, ledger)
    try:
        assert (pki / "test-host-cert.pem").is_file()  # made in the empty folder
        assert _command(process, "drop 1") == "ok drop 1"
        assert _command(process, "frobnicate").startswith("error ")

        async def client() -> None:
            terminal = Terminal(load_or_make_pki(pki))
            _, data, keys = terminal.sale(kernel_request("sda_only"), pin=None)
            link = await terminal.connect(port)
            await link.send(data)
            with pytest.raises(StreamTimeout):  # dropped
                await link.receive(0.5)
            _, data, keys = terminal.sale(kernel_request("sda_only"), pin=None)
            await link.send(data)
            assert messages.verify_mac(await link.receive(TIMEOUT), keys.response_mac)["39"] == "00"
            await link.close()

        asyncio.run(client())
        status = _command(process, "status")
        assert status.startswith("ok status") and "frames=2" in status and "answered=1" in status
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0 and out.strip().endswith("ok host stopped")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with Ledger(ledger) as book:
        assert [entry.approved for entry in book.entries()] == [True, True]


def test_tpe_sim_host_quits_on_command_and_refuses_a_bad_address(tmp_path: Path) -> None:
    process, _ = _start(tmp_path / "pki", tmp_path / "ledger.sqlite3")
    out, _ = process.communicate("quit\n", timeout=TIMEOUT)
    assert process.returncode == 0 and out.strip() == "ok host stopped"
    bad = subprocess.run([sys.executable, "-m", "firmware.cli", "sim", "host", "--listen", "nowhere",
                          "--pki", str(tmp_path / "pki")], capture_output=True, text=True, cwd=ROOT,
                         timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and bad.stdout.startswith("error ")
