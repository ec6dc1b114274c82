"""Shared fixtures: a private pcscd (started and stopped by PID) and cards served to it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sim import pcscd
from sim.fleet.broker import BrokerError, MosquittoBroker
from sim.fleet.pki import FleetPki, make_fleet_pki
from sim.vpcd import VirtualCardLink

TPE = [sys.executable, "-m", "firmware.cli"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def terminal_state_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The terminal's durable state (STAN, DUKPT registers, reversals) of every `tpe` run in the
    tests, in-process or child process, goes to a folder of the test session, never ~/.local."""
    folder = tmp_path_factory.mktemp("xdg-state")
    previous = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = previous


@pytest.fixture(scope="session")
def pcscd_daemon() -> Iterator[pcscd.PrivatePcscd]:
    """A pcscd of the test session's own; a missing pcscd or vpcd fails the test, saying what
    to install, never skips it."""
    try:
        daemon = pcscd.start(debug=os.environ.get("TPE_PCSCD_DEBUG") == "1")
    except pcscd.PcscdError as exc:
        pytest.fail(f"{exc}", pytrace=False)
    # libpcsclite reads the socket path once per process: set it before any PC/SC call here.
    previous = os.environ.get("PCSCLITE_CSOCK_NAME")
    os.environ["PCSCLITE_CSOCK_NAME"] = str(daemon.socket_path)
    yield daemon
    if os.environ.get("TPE_PCSCD_DEBUG") == "1":
        print(daemon.log()[-20000:])
    daemon.stop()
    if previous is None:
        os.environ.pop("PCSCLITE_CSOCK_NAME", None)
    else:
        os.environ["PCSCLITE_CSOCK_NAME"] = previous


@pytest.fixture
def serve_card(pcscd_daemon: pcscd.PrivatePcscd) -> Iterator[Callable[..., VirtualCardLink]]:
    """Insert a card object in the virtual reader; removed again after the test."""
    links: list[VirtualCardLink] = []

    def insert(card: object, **kwargs: object) -> VirtualCardLink:
        link = VirtualCardLink(card, port=pcscd_daemon.vpcd_port, **kwargs)  # type: ignore[arg-type]
        link.insert()
        links.append(link)
        return link

    yield insert
    for link in links:
        link.remove()


class Server:
    """`tpe sim card serve` as a child process, stopped by its own PID."""

    def __init__(self, daemon: pcscd.PrivatePcscd, profile: str, *extra: str) -> None:
        self.process = subprocess.Popen(
            [*TPE, "sim", "card", "serve", "--profile", profile, "--port", str(daemon.vpcd_port), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.banner = self.readline()

    def readline(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def command(self, line: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.readline()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def server(pcscd_daemon: pcscd.PrivatePcscd) -> Iterator[Callable[..., Server]]:
    """`tpe sim card serve` child processes, each stopped by its own PID after the test."""
    started: list[Server] = []

    def start(profile: str, *extra: str) -> Server:
        s = Server(pcscd_daemon, profile, *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def fleet_pki(tmp_path_factory: pytest.TempPathFactory) -> FleetPki:
    return make_fleet_pki(tmp_path_factory.mktemp("fleet-pki"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, fleet_pki: FleetPki) -> Iterator[MosquittoBroker]:
    """mosquitto of the test session (TLS, per-device ACL), stopped by its PID; a missing
    mosquitto fails the test saying what to install, never skips it."""
    server = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), fleet_pki)
    try:
        server.start()
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()
