"""`tpe sim modem` as a real process: the pty it prints, its standard-input commands acting on
what the terminal sees, SIGTERM and quit; and the command parser on its own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_modem_sim_support import OK, Terminal, echo, peer, quectel_online

from sim.modem import ModemSimulator
from sim.modem.serve import CommandError, execute

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _start(*options: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "firmware.cli", "sim", "modem", *options],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=ENV)
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    match = re.fullmatch(r"ok modem (quectel|simcom) on (/dev/\S+)", first)
    assert match, first
    return process, match.group(2)


def _command(process: subprocess.Popen[str], line: str) -> str:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def test_tpe_sim_modem_takes_commands_and_stops_on_sigterm() -> None:
    process, path = _start("--dialect", "quectel", "--rtt", "50", "--pin", "1234", "--signal", "-90",
                           "--reboot-seconds", "0.3", "--seed", "1")
    term = Terminal(path)
    try:
        term.exchange("ATE0", b"ATE0\r" + OK)
        term.exchange("AT+CPIN?", b"\r\n+CPIN: SIM PIN\r\n" + OK)
        term.exchange("AT+CSQ", b"\r\n+CSQ: 11,99\r\n" + OK)  # -90 dBm: (113 - 90) / 2 rounded down
        status = _command(process, "status")
        assert status.startswith("ok status dialect=quectel ") and "sim=pin" in status
        assert "rtt_ms=50 " in status and "registration=none" in status and "sockets=none" in status
        assert _command(process, "rtt 100") == "ok rtt 100"
        assert _command(process, "bandwidth 384") == "ok bandwidth 384"
        assert _command(process, "bandwidth off") == "ok bandwidth off"
        assert _command(process, "signal -51") == "ok signal -51"
        term.exchange("AT+CSQ", b"\r\n+CSQ: 31,99\r\n" + OK)
        assert _command(process, "signal none") == "ok signal none"
        term.exchange("AT+CSQ", b"\r\n+CSQ: 99,99\r\n" + OK)
        assert _command(process, "cme 14 next") == "ok cme 14 next"
        term.exchange("AT", b"\r\n+CME ERROR: 14\r\n")
        assert _command(process, "slow 200") == "ok slow 200"
        started = time.monotonic()
        term.exchange("AT", OK)
        assert time.monotonic() - started >= 0.2
        assert _command(process, "slow 0") == "ok slow 0"
        assert _command(process, "garbage 16") == "ok garbage 16"
        assert len(term.read_exact(16)) == 16
        term.send('AT+CPIN="1234"\r')
        term.expect(OK + b"\r\n+CPIN: READY\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n")
        with peer(echo) as server:
            term.exchange("AT+QIACT=1", OK)
            quectel_online(term, server.port, first=False)
            assert _command(process, "register roaming") == "ok register roaming"
            assert _command(process, "close-sockets") == "ok close-sockets 1"
            term.expect(b'\r\n+QIURC: "closed",0\r\n')
            status = _command(process, "status")
            assert "registration=roaming" in status and "pdp=1" in status
            assert re.search(r"sockets=0:closing:127\.0\.0\.1:\d+:up=0:down=0$", status), status
        assert _command(process, "register none") == "ok register none"
        term.expect(b'\r\n+QIURC: "pdpdeact",1\r\n')
        assert _command(process, "reboot") == "ok reboot"
        term.expect(b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: SIM PIN\r\n\r\n+QUSIM: 1\r\n", 3)
        assert _command(process, "frobnicate").startswith("error unknown command")
        assert _command(process, "register mars").startswith("error register none|home|")
        assert _command(process, "rtt soon") == "error the RTT is a number"
        assert _command(process, "rtt -5").startswith("error rtt_ms is a number")
        assert _command(process, "cme 14 later").startswith("error unknown command")
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0 and out.strip().endswith("ok modem stopped")
    finally:
        term.close()
        if process.poll() is None:
            process.kill()
            process.wait()


def test_tpe_sim_modem_quits_on_command_and_refuses_bad_options() -> None:
    process, path = _start("--dialect", "simcom")
    term = Terminal(path)
    try:
        term.exchange("ATI", b"ATI\r\r\nManufacturer: SIMCOM INCORPORATED\r\nModel: SIMCOM_SIM7600E-H\r\n"
                             b"Revision: SIM7600M22_V2.0\r\nIMEI: 350000000000005\r\n+GCAP: +CGSM\r\n" + OK)
        out, _ = process.communicate("quit\n", timeout=TIMEOUT)
        assert process.returncode == 0 and out.strip() == "ok modem stopped"
    finally:
        term.close()
    bad = subprocess.run([sys.executable, "-m", "firmware.cli", "sim", "modem", "--rtt", "-1"],
                         capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=TIMEOUT, check=False)
    assert bad.returncode == 2 and bad.stdout.startswith("error rtt_ms")
    bad = subprocess.run([sys.executable, "-m", "firmware.cli", "sim", "modem", "--pin", "12"],
                         capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=TIMEOUT, check=False)
    assert bad.returncode == 2 and "PIN" in bad.stdout


@pytest.mark.parametrize("words", [["rtt"], ["rtt", "1", "2"], ["bandwidth", "0"], ["bandwidth", "fast"],
                                   ["signal", "-75.5"], ["signal", "10"], ["register"], ["cme", "x"],
                                   ["cme", "-1"], ["slow", "inf"], ["garbage", "0"], ["garbage", "x"],
                                   ["reboot", "now"], ["status", "all"], ["close-sockets", "1"]])
def test_bad_commands_are_refused(words: list[str]) -> None:
    sim = ModemSimulator()
    with pytest.raises(CommandError):
        execute(sim, words)
    assert execute(sim, ["status"]).startswith("ok status dialect=quectel ")
