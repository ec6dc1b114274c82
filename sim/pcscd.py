"""A pcscd of our own: private socket, private reader config, the vsmartcard-vpcd driver.

Tests and the demo start one instead of touching the machine's pcscd: a technician's bench may
run the system pcscd with a real reader, and CI has no systemd to start one. pcsc-lite 1.9
reads no socket path of its own, but it accepts a listening socket from systemd socket
activation (`LISTEN_FDS`/`LISTEN_PID`, sd_listen_fds(3)); we hand it one bound to a private
path, and PC/SC clients find it through `PCSCLITE_CSOCK_NAME`.

pcscd writes /run/pcscd/pcscd.pid whoever starts it; that is the one shared file it touches.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
READER_FRIENDLY_NAME = "Virtual PCD"
# vpcd's default port (0x8C7B), used by `tpe sim card serve` when no port is given.
DEFAULT_VPCD_PORT = 35963
INSTALL_HINT = "apt-get install pcscd vsmartcard-vpcd (or run `make test`, which installs them)"


class PcscdError(RuntimeError):
    """pcscd could not be started or is missing."""


def pcscd_binary() -> Path:
    found = shutil.which("pcscd") or next(
        (p for p in ("/usr/sbin/pcscd", "/sbin/pcscd") if os.access(p, os.X_OK)), None)
    if not found:
        raise PcscdError(f"pcscd is not installed: {INSTALL_HINT}")
    if not VPCD_DRIVER.exists():
        raise PcscdError(f"the vpcd driver {VPCD_DRIVER} is not installed: {INSTALL_HINT}")
    return Path(found)


def free_port_pair() -> int:
    """A TCP port P with P and P+1 free on loopback: vpcd opens one port per slot (two slots)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("0.0.0.0", port))
                b.bind(("0.0.0.0", port + 1))
        except OSError:
            continue
        return port
    raise PcscdError("no free pair of TCP ports for the vpcd driver")


def reader_name(slot: int = 0) -> str:
    """The name pcscd gives the vpcd slot (slot 0 listens on the port, slot 1 on port+1)."""
    return f"{READER_FRIENDLY_NAME} 00 {slot:02d}"


@dataclass
class PrivatePcscd:
    """A running private pcscd; `stop()` ends exactly the process this object started."""

    workdir: Path
    vpcd_port: int
    socket_path: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    _owns_workdir: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a PC/SC client process (pyscard, `tpe card read`, pcsc_scan)."""
        env = dict(os.environ if base is None else base)
        env["PCSCLITE_CSOCK_NAME"] = str(self.socket_path)
        return env

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrivatePcscd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(workdir: Path | None = None, vpcd_port: int | None = None,
          debug: bool = False) -> PrivatePcscd:
    """Start a private pcscd serving the vpcd driver on `vpcd_port` (and `vpcd_port + 1`)."""
    binary = pcscd_binary()
    owns = workdir is None
    work = Path(tempfile.mkdtemp(prefix="tpe-pcscd-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    port = vpcd_port if vpcd_port is not None else free_port_pair()
    conf_dir = work / "reader.conf.d"
    conf_dir.mkdir(exist_ok=True)
    # reader.conf(5); vpcd takes its port from the DEVICENAME suffix ('/dev/null' = listen).
    (conf_dir / "vpcd").write_text(
        f'FRIENDLYNAME "{READER_FRIENDLY_NAME}"\n'
        f"DEVICENAME   /dev/null:0x{port:04X}\n"
        f"LIBPATH      {VPCD_DRIVER}\n"
        f"CHANNELID    0x{port:04X}\n")
    socket_path = work / "pcscd.comm"
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(32)
    os.chmod(socket_path, 0o666)
    log_path = work / "pcscd.log"
    fd = listener.fileno()
    # sd_listen_fds(3): the socket must be fd 3 and LISTEN_PID the pid that execs pcscd. bash
    # (dash takes one-digit descriptors only) moves it to 3; `exec` keeps the pid for pcscd.
    flag = "--debug" if debug else "--info"
    script = (f'exec 3<&{fd}; [ {fd} -eq 3 ] || exec {fd}<&-; '
              f'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" --foreground --config "$1" {flag}')
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["/bin/bash", "-c", script, str(binary), str(conf_dir)], pass_fds=(fd,), stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    listener.close()
    daemon = PrivatePcscd(work, port, socket_path, process, log_path, owns)
    _wait_ready(daemon, timeout=10.0)
    return daemon


def _wait_ready(daemon: PrivatePcscd, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise PcscdError(f"pcscd exited with {daemon.process.returncode}: {daemon.log()[-2000:]}")
        text = daemon.log()
        if "daemon ready" in text:
            if "Started by systemd" not in text:
                daemon.stop()
                raise PcscdError("pcscd ignored the private socket (socket activation failed)")
            return
        time.sleep(0.02)
    daemon.stop()
    raise PcscdError(f"pcscd did not become ready in {timeout:.0f} s: {daemon.log()[-2000:]}")
