"""The fleet protocol's topics and documents (docs/fleet-protocol.md), without I/O: what the
device publishes and what it accepts, each parser raising `FleetProtocolError` with what it
read and why it refused it.

One tree per device, `tpe/<serial>/`: the broker's ACL keeps each device to its own, so the
tree moves unchanged from one mosquitto to a clustered broker (MQTT v5, no broker extension).
Desired configurations are signed by the fleet key (ECDSA P-256, SHA-256, raw r||s as the
journal's, `firmware.journal.sign`) over the exact UTF-8 bytes of the document string they
carry, so no canonical form has to be agreed on.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from firmware import journal

ROOT = "tpe"
SERIAL = re.compile(r"[A-Za-z0-9_-]{1,32}")  # no '/', '+', '#': one topic level, no wildcard
MAX_DOCUMENT = 64 * 1024  # bytes of a desired configuration or a job request
JOB_KINDS = ("firmware_update", "settlement", "send_queue", "upload_logs")
JOB_STATES = ("accepted", "running", "succeeded", "failed", "rejected")
JOB_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class FleetProtocolError(ValueError):
    """A document that is not one of the protocol's: `what` it was taken for, and why."""

    def __init__(self, what: str, reason: str) -> None:
        self.what, self.reason = what, reason
        super().__init__(f"{what}: {reason}")


def check_serial(serial: str) -> str:
    if not isinstance(serial, str) or not SERIAL.fullmatch(serial):
        raise FleetProtocolError("serial", "1 to 32 letters, digits, '-' or '_'")
    return serial


@dataclass(frozen=True)
class Topics:
    """The topics of device `serial`."""

    serial: str

    def __post_init__(self) -> None:
        check_serial(self.serial)

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.serial}"

    @property
    def status(self) -> str:  # retained: online / offline (the last will)
        return f"{self.base}/status"

    @property
    def telemetry(self) -> str:  # retained: the latest figures
        return f"{self.base}/telemetry"

    @property
    def desired(self) -> str:  # retained, from the back office: the signed configuration
        return f"{self.base}/config/desired"

    @property
    def reported(self) -> str:  # retained: what the device applied, or why it refused
        return f"{self.base}/config/reported"

    @property
    def jobs(self) -> str:  # the back office's requests, one topic level per job
        return f"{self.base}/jobs/+"

    def job(self, job_id: str) -> str:
        return f"{self.base}/jobs/{job_id}"

    def job_state(self, job_id: str) -> str:  # retained: the job's progress and end
        return f"{self.base}/jobs/{job_id}/state"

    def job_logs(self, job_id: str) -> str:  # the logs an "upload_logs" job sends
        return f"{self.base}/jobs/{job_id}/logs"


def dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _object(payload: bytes, what: str) -> dict[str, Any]:
    if not isinstance(payload, bytes | bytearray):
        raise FleetProtocolError(what, "not bytes")
    if len(payload) > MAX_DOCUMENT:
        raise FleetProtocolError(what, f"larger than {MAX_DOCUMENT} bytes")
    try:
        value = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FleetProtocolError(what, f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FleetProtocolError(what, "not a JSON object")
    return value


def _time(value: Any, what: str, key: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise FleetProtocolError(what, f"{key} is an ISO 8601 time with its zone")
    return moment


# --- desired configuration ---------------------------------------------------------------------

@dataclass(frozen=True)
class DesiredConfig:
    """A desired configuration the fleet key signed: for `serial`, `version` (each newer one
    larger), and the sections it sets (`firmware.fleet_config.REMOTE_SECTIONS`)."""

    serial: str
    version: int
    issued: datetime.datetime
    sections: dict[str, Any] = field(default_factory=dict)


def document_digest(payload: bytes) -> str:
    """What a configuration report names the push it answers by (SHA-256, 16 hex digits)."""
    return hashlib.sha256(payload).hexdigest()[:16]


def sign_desired(private: ec.EllipticCurvePrivateKey, desired: DesiredConfig) -> bytes:
    """The envelope the back office publishes (retained) on `Topics.desired`."""
    document = json.dumps({"serial": desired.serial, "version": desired.version,
                           "issued": desired.issued.isoformat(), "sections": desired.sections},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    signature = journal.sign(private, document.encode())
    return dumps({"document": document, "signature": signature.hex(),
                  "key_id": journal.key_id(private.public_key())})


def open_desired(payload: bytes, public: ec.EllipticCurvePublicKey) -> DesiredConfig:
    """The desired configuration of `payload`, its signature checked against the fleet key.
    `FleetProtocolError` for anything else (what = "desired")."""
    what = "desired"
    envelope = _object(payload, what)
    document, signature = envelope.get("document"), envelope.get("signature")
    if not isinstance(document, str) or not isinstance(signature, str):
        raise FleetProtocolError(what, "an envelope holds a document string and its signature")
    try:
        raw = bytes.fromhex(signature)
    except ValueError:
        raise FleetProtocolError(what, "the signature is hexadecimal") from None
    try:
        signed = document.encode()
    except UnicodeEncodeError:
        raise FleetProtocolError(what, "the document is not Unicode text") from None
    if not journal.verify(public, signed, raw):
        raise FleetProtocolError(what, "the signature is not the fleet key's")
    body = _object(signed, what)
    serial, version, sections = body.get("serial"), body.get("version"), body.get("sections")
    if not isinstance(serial, str) or not SERIAL.fullmatch(serial):
        raise FleetProtocolError(what, "no device serial")
    if type(version) is not int or version < 1:
        raise FleetProtocolError(what, "the version is an integer from 1")
    if not isinstance(sections, dict) or not all(isinstance(value, dict) for value in sections.values()):
        raise FleetProtocolError(what, "sections is an object of tables")
    return DesiredConfig(serial, version, _time(body.get("issued"), what, "issued"), sections)


# --- jobs --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobRequest:
    id: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


def job_request(job_id: str, kind: str, params: dict[str, Any] | None = None) -> bytes:
    return dumps({"id": job_id, "kind": kind, "params": params or {}})


def parse_job(topic_id: str, payload: bytes) -> JobRequest:
    """The job request published on `Topics.job(topic_id)`. `FleetProtocolError` (what = "job")."""
    what = "job"
    body = _object(payload, what)
    job_id, kind, params = body.get("id"), body.get("kind"), body.get("params", {})
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id) or job_id != topic_id:
        raise FleetProtocolError(what, "the id is the topic's last level (letters, digits, '.', '-', '_')")
    if kind not in JOB_KINDS:
        raise FleetProtocolError(what, f"the kind is one of {', '.join(JOB_KINDS)}")
    if not isinstance(params, dict):
        raise FleetProtocolError(what, "params is an object")
    return JobRequest(job_id, kind, params)


def job_state(job: JobRequest, state: str, *, progress: int | None = None, detail: str | None = None,
              at: datetime.datetime, result: dict[str, Any] | None = None) -> bytes:
    if state not in JOB_STATES:
        raise FleetProtocolError("job state", f"one of {', '.join(JOB_STATES)}")
    return dumps({"id": job.id, "kind": job.kind, "state": state, "progress": progress, "detail": detail,
                  "result": result or {}, "at": at.isoformat()})
