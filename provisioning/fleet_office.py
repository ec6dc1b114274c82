"""The fleet's back office (`tpe fleet`): sees every terminal's status and telemetry, pushes
signed configurations and starts jobs (docs/fleet-protocol.md). A short-lived MQTT v5 client
with the back office's certificate (the broker's ACL lets it see all of `tpe/`), run on paho's
own network thread: a command-line tool, not the terminal's event loop.
"""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.fleet_protocol import (
    ROOT,
    DesiredConfig,
    Topics,
    check_serial,
    document_digest,
    job_request,
    sign_desired,
)

CONNECT_TIMEOUT = 10.0
FINAL_STATES = ("succeeded", "failed", "rejected")


class OfficeError(Exception):
    """The broker cannot be reached or refuses the back office."""


class OfficeTimeout(OfficeError):
    """An answer did not come in time: the terminal may be away (what was pushed waits)."""


class BackOffice:
    """`with BackOffice(...) as office:` connected to the broker at `address`:`port`."""

    def __init__(self, address: str, port: int, *, ca_file: Path, cert_file: Path, key_file: Path,
                 client_id: str | None = None) -> None:
        self.address, self.port = address, port
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=client_id or f"backoffice-{uuid.uuid4().hex[:8]}")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
        context.load_cert_chain(str(cert_file), str(key_file))
        self.client.tls_set_context(context)
        self._lock = threading.Lock()
        self._retained: dict[str, bytes] = {}  # the latest payload of each topic seen
        self._seen: list[tuple[float, str, bytes]] = []
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._message

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if not reason.is_failure:
            self._connected.set()

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._retained[message.topic] = bytes(message.payload)
            self._seen.append((time.monotonic(), message.topic, bytes(message.payload)))
            del self._seen[:-10000]

    def __enter__(self) -> BackOffice:
        try:
            self.client.connect(self.address, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise OfficeError(f"no broker at {self.address}:{self.port}: {exc}") from exc
        self.client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT):
            self.close()
            raise OfficeError(f"the broker at {self.address}:{self.port} did not accept the back office")
        self.client.subscribe(f"{ROOT}/#", qos=1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # --- reading -----------------------------------------------------------------------------------

    def wait_for(self, test: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = test()
            if found:
                return found
            time.sleep(0.02)
        raise OfficeTimeout(f"no {what} within {timeout:g} s")

    def latest(self, topic: str) -> dict[str, Any] | None:
        with self._lock:
            payload = self._retained.get(topic)
        if not payload:
            return None
        try:
            value = json.loads(payload)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def devices(self, settle: float = 1.0) -> dict[str, dict[str, Any]]:
        """Every device's retained status, after `settle` seconds for the retained messages."""
        time.sleep(settle)
        with self._lock:
            topics = [topic for topic in self._retained
                      if topic.count("/") == 2 and topic.endswith("/status")]
        out = {}
        for topic in sorted(topics):
            status = self.latest(topic)
            if status is not None:
                out[topic.split("/")[1]] = status
        return out

    def telemetry(self, serial: str, timeout: float = 5.0) -> dict[str, Any]:
        topic = Topics(check_serial(serial)).telemetry
        return self.wait_for(lambda: self.latest(topic), timeout, f"telemetry of {serial}")

    def messages(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for _, seen, payload in self._seen if seen == topic]

    # --- acting ------------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> str:
        """Publish with QoS 1 and wait for the broker's PUBACK; its reason ("Success" or why not)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(CONNECT_TIMEOUT)
        return "Success" if info.rc == mqtt.MQTT_ERR_SUCCESS and info.is_published() else f"rc {info.rc}"

    def push_config(self, serial: str, version: int, sections: dict[str, Any],
                    signing_key: Path | ec.EllipticCurvePrivateKey) -> str:
        """A desired configuration for `serial`, signed with the fleet key, published retained;
        the digest its report will name (`reported`)."""
        key = (signing_key if isinstance(signing_key, ec.EllipticCurvePrivateKey)
               else load_signing_key(signing_key))
        desired = DesiredConfig(check_serial(serial), version, datetime.datetime.now(datetime.UTC), sections)
        envelope = sign_desired(key, desired)
        self.publish(Topics(serial).desired, envelope, retain=True)
        return document_digest(envelope)

    def reported(self, serial: str, digest: str, timeout: float = 10.0) -> dict[str, Any]:
        """The device's report on the push of `digest`: applied, or rejected with the reason."""
        topic = Topics(check_serial(serial)).reported

        def answer() -> dict[str, Any] | None:
            report = self.latest(topic)
            return report if report and report.get("digest") == digest else None

        return self.wait_for(answer, timeout, f"report of configuration {digest} from {serial}")

    def start_job(self, serial: str, kind: str, params: dict[str, Any] | None = None) -> str:
        """A job for `serial`, retained until done so that a device away receives it on its
        return; the job's id."""
        job_id = f"{datetime.datetime.now(datetime.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        self.publish(Topics(check_serial(serial)).job(job_id), job_request(job_id, kind, params), retain=True)
        return job_id

    def follow(self, serial: str, job_id: str, timeout: float = 60.0,
               on_state: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """The job's states as they come, until its final one (which is returned); the job's
        request is then cleared from the broker."""
        topic = Topics(check_serial(serial)).job_state(job_id)
        shown: list[bytes] = []

        def final() -> dict[str, Any] | None:
            for payload in self.messages(topic)[len(shown):]:
                shown.append(payload)
                state = json.loads(payload) if payload else {}
                if on_state is not None:
                    on_state(state)
                if state.get("state") in FINAL_STATES:
                    return state
            return None

        state = self.wait_for(final, timeout, f"end of job {job_id} on {serial}")
        self.publish(Topics(serial).job(job_id), b"", retain=True)
        return state


def load_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise OfficeError(f"{path} is not an ECDSA key")
    return key
