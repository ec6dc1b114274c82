"""The card's end of the vsmartcard vpcd protocol: serves a `SimCard` to pcscd.

vpcd (the pcscd driver) listens on a TCP port; a virtual card connects to it. Each message,
both ways, is a 2-byte big-endian length then the payload. From vpcd, a 1-byte payload is a
control code (00 power off, 01 power on, 02 reset, 04 ask for the ATR), anything longer is a
command APDU answered by the response APDU. A connected card is an inserted card; closing the
connection removes it. (vsmartcard `vpcd.h`/`vicc.py`.)
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

POWER_OFF, POWER_ON, RESET, GET_ATR = 0x00, 0x01, 0x02, 0x04


class VpcdError(ConnectionError):
    """The link to the vpcd driver broke or could not be made."""


class Card(Protocol):
    @property
    def atr(self) -> bytes: ...
    def power_on(self) -> bytes: ...
    def power_off(self) -> None: ...
    def process(self, capdu: bytes) -> bytes: ...


# Card-side processing time per instruction, in ms: typical of contact EMV cards (RSA signing
# dominates INTERNAL AUTHENTICATE and GENERATE AC with CDA).
DEFAULT_PROCESSING_MS: dict[int, float] = {
    0xA4: 8, 0xA8: 25, 0xB2: 8, 0xCA: 5, 0x20: 30, 0x84: 5, 0x88: 180, 0xAE: 60,
    0x82: 20, 0xC0: 2,
}
CDA_EXTRA_MS = 180.0


@dataclass(frozen=True)
class Timing:
    """Makes the simulated card as slow as a real one on the wire (ISO 7816-3, 7.1).

    A character takes 12 etu at `bit_rate` (start, 8 data, parity, 2 guard); procedure bytes
    and the status word are counted with the data.
    """

    bit_rate: int = 9600
    processing_ms: dict[int, float] = field(default_factory=lambda: dict(DEFAULT_PROCESSING_MS))

    def delay(self, capdu: bytes, rapdu: bytes) -> float:
        wire = (len(capdu) + len(rapdu) + 1) * 12 / self.bit_rate
        ins = capdu[1] if len(capdu) > 1 else 0
        work = self.processing_ms.get(ins, 5.0)
        if ins == 0xAE and len(capdu) > 2 and capdu[2] & 0x10:
            work += CDA_EXTRA_MS
        return wire + work / 1000


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise VpcdError("vpcd closed the connection")
        buf += chunk
        # vpcd writes the length and the payload in two sends with Nagle on: a delayed ACK from
        # us would hold its payload back 40 ms. Linux resets TCP_QUICKACK after use (tcp(7)).
        if hasattr(socket, "TCP_QUICKACK"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    return bytes(buf)


class VirtualCardLink:
    """Serves one card on one vpcd slot; `insert()`/`remove()` connect or disconnect it."""

    def __init__(self, card: Card, host: str = "127.0.0.1", port: int = 35963,
                 timing: Timing | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.card = card
        self.host = host
        self.port = port
        self.timing = timing
        self._sleep = sleep
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.exchanges = 0

    @property
    def inserted(self) -> bool:
        return self._sock is not None

    def insert(self, timeout: float = 10.0) -> None:
        """Connect to vpcd (retrying while pcscd starts) and serve in a background thread."""
        with self._lock:
            if self._sock is not None:
                return
            if self._thread is not None:
                self._thread.join()  # the previous card's thread, still finishing a command
            deadline = time.monotonic() + timeout
            while True:
                try:
                    sock = socket.create_connection((self.host, self.port), timeout=2.0)
                    break
                except OSError as exc:
                    if time.monotonic() >= deadline:
                        raise VpcdError(f"cannot reach vpcd on {self.host}:{self.port}: {exc}") from exc
                    time.sleep(0.05)
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True,
                                            name=f"vpcd-card-{self.port}")
            self._thread.start()
        log.info("card inserted in vpcd slot on port %d", self.port)

    def remove(self) -> None:
        """Pull the card: close the connection (vpcd then reports the card absent)."""
        with self._lock:
            sock, self._sock = self._sock, None
            thread = self._thread
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            self._thread = None
        self.card.power_off()
        log.info("card removed from vpcd slot on port %d", self.port)

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                (length,) = struct.unpack(">H", _read_exact(sock, 2))
                message = _read_exact(sock, length) if length else b""
                reply = self._handle(message)
                if self._sock is not sock:
                    return  # pulled while processing: a removed card answers nothing
                if reply is not None:
                    sock.sendall(struct.pack(">H", len(reply)) + reply)
        except (VpcdError, OSError) as exc:
            if self._sock is sock:
                log.warning("vpcd link on port %d ended: %s", self.port, exc)
                with self._lock:
                    self._sock = None
                self.card.power_off()

    def _handle(self, message: bytes) -> bytes | None:
        if len(message) == 1:
            code = message[0]
            if code == GET_ATR:
                return self.card.atr
            if code in (POWER_ON, RESET):
                self.card.power_on()
            elif code == POWER_OFF:
                self.card.power_off()
            else:
                log.warning("unknown vpcd control code %02X", code)
            return None
        if not message:
            return None
        response = self.card.process(message)
        self.exchanges += 1
        if self.timing is not None:
            self._sleep(self.timing.delay(message, response))
        return response
