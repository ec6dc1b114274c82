"""Tells systemd how the firmware is doing: the sd_notify protocol (sd_notify(3)), without a
dependency. One datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET, a path or,
starting with '@', a name in the abstract namespace.

READY=1 once the services run (Type=notify), WATCHDOG=1 every half of $WATCHDOG_USEC from the
event loop itself (WatchdogSec=: a loop that hangs stops sending it, and systemd restarts the
firmware), STOPPING=1 when the orderly shutdown begins. Without $NOTIFY_SOCKET (a technician's
shell, the tests) every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def socket_address(name: str) -> str | bytes:
    """The address of $NOTIFY_SOCKET's value: '@' stands for the abstract namespace's NUL byte
    (unix(7), Abstract sockets)."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


class Notifier:
    """The service manager's notification socket, or nothing when there is none."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        self.watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send "KEY=VALUE" lines as one datagram; False when there is no socket or it failed (a
        notification never stops the firmware)."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(socket_address(self.address))
                sock.sendall(message)
        except OSError as exc:
            log.warning("sd_notify: %s not sent: %s", assignments[0] if assignments else "", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    async def keep_alive(self) -> None:
        """WATCHDOG=1 every half watchdog interval, until cancelled; returns at once when systemd
        asked for no watchdog. Runs on the event loop, so that a blocked loop goes quiet."""
        if self.watchdog_interval is None or self.address is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(self.watchdog_interval / 2)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds of $WATCHDOG_USEC, when it is meant for this process ($WATCHDOG_PID unset or
    ours, sd_watchdog_enabled(3)); None otherwise."""
    text = env.get("WATCHDOG_USEC")
    if not text:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(text)
    except ValueError:
        log.warning("sd_notify: WATCHDOG_USEC=%r is not a number of microseconds: no watchdog", text)
        return None
    return usec / 1_000_000 if usec > 0 else None
