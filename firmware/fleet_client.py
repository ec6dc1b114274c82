"""The device's MQTT link to the fleet broker (paho-mqtt 2.x, MQTT v5 over TLS), run on the
terminal's event loop (ARCHITECTURE principle 5) through paho's external-loop calls: the
socket's readiness drives `loop_read`/`loop_write`, a one-second tick drives `loop_misc`
(keepalive). Only the TCP connect and TLS handshake, which block in paho, run in a worker thread.

- Client id and certificate common name: the device serial (the broker's ACL keys on it).
- Persistent session (clean start off, session expiry from [fleet]): jobs published while the
  device was away are delivered when it comes back.
- Last will: `{"state": "offline"}` retained on the status topic, published by the broker when
  the link dies; an orderly stop publishes it itself before disconnecting.
- Reconnection with exponential backoff and full jitter (a random wait between 0 and
  min(reconnect_max, 2^attempt s)): paho's own reconnection waits the same delay on every
  device, so a fleet would come back in lockstep after a broker restart and knock it over again.
  (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015.)

Nothing here waits for the broker on the sale's path: publishing while disconnected drops the
message (the next connection publishes fresh status and telemetry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware.config import FleetConfig
from firmware.fleet_protocol import Topics, dumps

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between loop_misc calls (keepalive, timeouts)
CONNECT_TIMEOUT = 15.0  # seconds for TCP and TLS
OFFLINE = {"state": "offline"}


def backoff(attempt: int, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(cap, 2^attempt)) seconds."""
    return rng() * min(cap, 2.0 ** min(attempt, 30))


class FleetLink:
    """One device's connection. `on_connected()` runs on the loop after each CONNACK (publish
    the status, subscribe); `on_message(topic, payload)` for each message received."""

    def __init__(self, config: FleetConfig, *, on_connected: Callable[[], None],
                 on_message: Callable[[str, bytes], None], rng: Callable[[], float] = random.random) -> None:
        self.config = config
        self.topics = Topics(config.serial)
        self._on_connected = on_connected
        self._on_message = on_message
        self._rng = rng
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.serial, protocol=mqtt.MQTTv5,
                             reconnect_on_failure=False)
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(config.ca_file))
        context.load_cert_chain(str(config.cert_file), str(config.key_file))
        client.tls_set_context(context)
        client.will_set(self.topics.status, dumps(OFFLINE), qos=1, retain=True)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        client.on_socket_close = self._socket_closed
        self.client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down: asyncio.Event | None = None
        self._up: asyncio.Future[Any] | None = None
        self._sock: Any = None
        self.connected = False
        self.connections = 0  # CONNACKs accepted since start
        self.attempt = 0  # failed attempts since the last connection
        self.delays: list[float] = []  # the last waits before reconnecting (tests, bench)
        self._stopping = False

    # --- paho's callbacks (on the loop, or from the connecting thread: posted to the loop) ------

    def _post(self, call: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            call(*args)
        else:
            loop.call_soon_threadsafe(call, *args)

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._post(self._want_write, sock)

    def _want_write(self, sock: Any) -> None:
        if self._loop is not None and sock is not None and sock.fileno() >= 0:
            self._loop.add_writer(sock, self._write)

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._post(self._no_write, sock)

    def _no_write(self, sock: Any) -> None:
        if self._loop is not None and sock is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(sock)

    def _socket_closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._post(self._forget, sock)

    def _forget(self, sock: Any) -> None:
        if self._loop is not None and sock is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
        if sock is self._sock:
            self._sock = None

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        self._post(self._settle_connect, reason)

    def _settle_connect(self, reason: Any) -> None:
        if self._up is not None and not self._up.done():
            self._up.set_result(reason)

    def _disconnected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                      properties: Any) -> None:
        self._post(self._went_down, reason)

    def _went_down(self, reason: Any) -> None:
        self.connected = False
        if self._up is not None and not self._up.done():
            self._up.set_result(reason)
        if self._down is not None:
            self._down.set()

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._on_message(message.topic, bytes(message.payload))
        except Exception:  # a bad message must not take the link down
            log.exception("fleet: the message on %s could not be handled", message.topic)

    # --- socket readiness ------------------------------------------------------------------------

    def _read(self) -> None:
        self.client.loop_read()
        sock = self._sock
        # TLS may hold decrypted bytes the socket's readiness no longer shows
        while sock is not None and isinstance(sock, ssl.SSLSocket) and sock.pending() and self._sock is sock:
            self.client.loop_read()

    def _write(self) -> None:
        self.client.loop_write()

    # --- the connection's life -------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, stay connected, reconnect with backoff and jitter; until cancelled."""
        self._loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                try:
                    await self._session()
                except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as exc:
                    log.info("fleet: no connection to %s:%d: %s", self.config.address, self.config.port, exc)
                if self._stopping:
                    return
                delay = backoff(self.attempt, self.config.reconnect_max, self._rng)
                self.delays = [*self.delays[-99:], delay]
                self.attempt += 1
                await asyncio.sleep(delay)
        finally:
            self._drop_socket()

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        self._up = loop.create_future()
        self._down = asyncio.Event()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.config.session_expiry
        await asyncio.wait_for(asyncio.to_thread(
            self.client.connect, self.config.address, self.config.port, self.config.keepalive,
            clean_start=False, properties=properties), CONNECT_TIMEOUT)
        sock = self._sock = self.client.socket()
        if sock is None:
            raise ConnectionError("the socket closed while connecting")
        loop.add_reader(sock, self._read)
        if self.client.want_write():
            self._want_write(sock)
        ticker = loop.create_task(self._tick())
        try:
            reason = await asyncio.wait_for(self._up, CONNECT_TIMEOUT)
            if getattr(reason, "is_failure", True):
                raise ConnectionError(f"the broker refused the connection: {reason}")
            self.connected = True
            self.connections += 1
            self.attempt = 0
            log.info("fleet: connected to %s:%d as %s", self.config.address, self.config.port,
                     self.config.serial)
            self._on_connected()
            await self._down.wait()
            log.info("fleet: connection lost")
        finally:
            ticker.cancel()
            self.connected = False
            self._drop_socket()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.client.loop_misc()

    def _drop_socket(self) -> None:
        """The socket of a session that ended, taken off the loop and closed (paho closes its
        own on a lost link; a refused connection leaves it open)."""
        sock, self._sock = self._sock, None
        self._forget(sock)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> bool:
        """Publish now if connected (True), else drop it (False): the next connection sends
        fresh state."""
        if not self.connected:
            return False
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def subscribe(self, *topics: str) -> None:
        if self.connected:
            self.client.subscribe([(topic, 1) for topic in topics])

    async def stop(self, last_status: bytes | None = None, timeout: float = 2.0) -> None:
        """Orderly end: `last_status` (retained) published and flushed, then DISCONNECT (the
        broker keeps the will to itself)."""
        self._stopping = True
        if self.connected and last_status is not None:
            info = self.client.publish(self.topics.status, last_status, qos=1, retain=True)
            deadline = asyncio.get_running_loop().time() + timeout
            while not info.is_published() and self.connected and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        if self.connected:
            self.client.disconnect()
            deadline = asyncio.get_running_loop().time() + timeout
            while self.connected and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        if self._down is not None:
            self._down.set()
