"""Shared fixtures: a private pcscd (started and stopped by PID) and cards served to it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from sim import pcscd
from sim.vpcd import VirtualCardLink


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
