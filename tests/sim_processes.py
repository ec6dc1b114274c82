"""Test support: `tpe sim ...` child processes, the terminal configuration that points at them,
and `tpe sale` as a child process. TEST KEYS only (test PKI in tmp, simulator DUKPT keys)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sim import pcscd
from sim.host.test_pki import TestPki

TPE = [sys.executable, "-m", "firmware.cli"]
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "firmware" / "defaults" / "terminal.toml"


class SimProcess:
    """A `tpe sim ...` child process with a banner line, driven on stdin, stopped by its PID."""

    def __init__(self, args: list[str], banner: str) -> None:
        self.process = subprocess.Popen([*TPE, "sim", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.process.stdout is not None
        self.banner = self.process.stdout.readline().strip()
        if not self.banner.startswith(banner):
            self.stop()
            pytest.fail(f"tpe sim {args[0]} did not start: {self.banner!r}")

    @property
    def port(self) -> int:
        """The port of a `... listening on HOST:PORT` banner."""
        return int(self.banner.rpartition(":")[2])

    def command(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def sim_host(pki: TestPki, ledger: Path) -> SimProcess:
    return SimProcess(["host", "--listen", "127.0.0.1:0", "--pki", str(pki.folder), "--ledger", str(ledger)],
                      "ok host listening on ")


def write_config(tmp_path: Path, port: int, pki: TestPki, extra: str = "") -> Path:
    """The packaged default with a [host] on the simulator, the state in tmp, and `extra`."""
    path = tmp_path / "terminal.toml"
    path.write_text(DEFAULT_CONFIG.read_text() + f"""
[host]
address = "127.0.0.1"
port = {port}
server_name = "localhost"
ca_file = "pki/{pki.host_ca_cert.name}"
cert_file = "pki/{pki.terminal_cert.name}"
key_file = "pki/{pki.terminal_key.name}"
acquirer_id = "12345"
timeout = 10

[state]
folder = "state"
{extra}""")
    return path


def sale(daemon: pcscd.PrivatePcscd, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TPE, "-v", "sale", *args], env=daemon.client_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
