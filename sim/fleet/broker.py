"""mosquitto, the fleet's MQTT broker, started on loopback for tests and the demo: TLS with the
fleet's TEST PKI (`sim.fleet.pki`), a client certificate required and its common name taken as
the user name, and an ACL that keeps each device to its own tree (docs/fleet-protocol.md): a
device may only publish and subscribe under `tpe/<its serial>/`; the back office sees them all.

The broker is a child process stopped by its PID, never a system service, so a technician's
own broker is left alone. Its sessions and retained messages persist in its folder, so a restart
(`restart`) keeps them, as a production broker does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from sim.fleet.pki import BACK_OFFICE, FleetPki

START_TIMEOUT = 10.0


class BrokerError(Exception):
    """mosquitto is missing or does not start (the reason, with its log's last lines)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


ACL = f"""# The back office sees every device; a device only its own tree (%u: its certificate's CN).
user {BACK_OFFICE}
topic readwrite tpe/#

pattern readwrite tpe/%u/#
"""


class MosquittoBroker:
    """mosquitto on 127.0.0.1:`port` (a free one by default) with its files in `folder`."""

    def __init__(self, folder: Path, pki: FleetPki, port: int = 0) -> None:
        self.folder = Path(folder)
        self.pki = pki
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.folder / "mosquitto.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "acl").write_text(ACL)
        root = "user root\n" if os.geteuid() == 0 else ""  # keep reading the owner-only TEST key
        config = self.folder / "mosquitto.conf"
        config.write_text(
            f"{root}per_listener_settings false\nallow_anonymous false\n"
            f"persistence true\npersistence_location {self.folder}/\nautosave_interval 1\n"
            f"log_dest file {self.log}\nlog_type error\nlog_type warning\nlog_type notice\n"
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {self.pki.ca_cert}\ncertfile {self.pki.broker_cert}\n"
            f"keyfile {self.pki.broker_key}\n"
            f"require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.2\n"
            f"acl_file {self.folder / 'acl'}\nmax_queued_messages 1000\n")
        return config

    def start(self) -> None:
        places = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")  # /usr/sbin is not on every PATH
        binary = shutil.which("mosquitto") or next((p for p in places if os.access(p, os.X_OK)), None)
        if binary is None:
            raise BrokerError("mosquitto is not installed: install the Debian package mosquitto "
                              "(make test and make demo do it as root: scripts/install-system-deps.sh)")
        config = self._write_config()
        self.process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise BrokerError(f"mosquitto exited ({self.process.returncode}): {err.strip()}"
                                  f"{self._tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {START_TIMEOUT:g} s"
                          f"{self._tail()}")

    def _tail(self) -> str:
        try:
            return "; log: " + " | ".join(self.log.read_text().splitlines()[-5:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the broker this object started (by PID), SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stderr is not None:
            process.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
