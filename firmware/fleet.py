"""The terminal's side of the fleet (docs/fleet-protocol.md): status, telemetry, the signed
remote configuration and the back office's jobs, over `firmware.fleet_client.FleetLink` on the
terminal's event loop. The broker being away never holds up a sale: everything here runs in its
own tasks and drops what it cannot send.

No card data ever leaves through here: telemetry is built from the status bar's figures, the
journal's chain heads and the time of the last payment, and uploaded logs go through the same
masking as standard output (`firmware.logs.mask_card_data`).
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware import durable, fiscal, fleet_config
from firmware.fleet_client import FleetLink
from firmware.fleet_protocol import (
    FleetProtocolError,
    JobRequest,
    document_digest,
    dumps,
    job_state,
    open_desired,
    parse_job,
)
from firmware.journal import JournalError
from firmware.logs import FORMAT, mask_card_data
from firmware.receipt import software_version
from provisioning import slots
from provisioning.bundle import BundleError
from ui.contract import Status

if TYPE_CHECKING:
    from firmware.runtime import Terminal

log = logging.getLogger(__name__)

JOBS_FILE = "fleet-jobs.json"  # in the [state] folder: the jobs already handled
JOBS_KEPT = 200
LOG_LINES = 500  # the last log lines an "upload_logs" job sends
CHANGE_SPACING = 2.0  # seconds at least between two telemetry messages sent on a change


class LogRing(logging.Handler):
    """The last `LOG_LINES` log lines, masked as on standard output (for "upload_logs")."""

    def __init__(self, size: int = LOG_LINES) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s " + FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(mask_card_data(self.format(record)))
        except Exception:
            self.handleError(record)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class FleetService:
    """One terminal's fleet link. `terminal` gives the figures and runs the jobs."""

    def __init__(self, terminal: Terminal) -> None:
        config = terminal.config.fleet
        if config is None:
            raise ValueError("no [fleet] section")
        self.terminal = terminal
        self.config = config
        key = serialization.load_pem_public_key(Path(config.signing_key).read_bytes())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError(f"{config.signing_key}: the fleet key is an ECDSA P-256 public key")
        self.fleet_key = key
        self.link = FleetLink(config, on_connected=self._connected, on_message=self._message)
        self.topics = self.link.topics
        self.reported: dict[str, Any] = {"version": terminal.remote.version, "state": "applied",
                                         "reason": None, "digest": terminal.remote.digest}
        self.ring = LogRing()
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self._handled = self._load_handled()
        self._last_key: Any = None
        self._last_sent = -1e9
        self._started = _now()

    # --- the link's life ---------------------------------------------------------------------------

    async def run(self) -> None:
        logging.getLogger().addHandler(self.ring)
        telemetry = asyncio.get_running_loop().create_task(self._periodic(), name="fleet-telemetry")
        try:
            await self.link.run()
        finally:
            telemetry.cancel()
            logging.getLogger().removeHandler(self.ring)

    async def stop(self) -> None:
        for task in list(self.jobs.values()):
            task.cancel()
        await asyncio.gather(*self.jobs.values(), return_exceptions=True)
        self.send_telemetry()  # the last figures stay retained for the back office
        await self.link.stop(dumps({"state": "offline", "at": _now().isoformat(), "cause": "stopped"}))

    def _connected(self) -> None:
        self.link.publish(self.topics.status, dumps({"state": "online", "version": software_version(),
                                                     "at": _now().isoformat()}), retain=True)
        self.link.publish(self.topics.reported, dumps(self.reported), retain=True)
        self.link.subscribe(self.topics.desired, self.topics.jobs)
        self.send_telemetry()

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.config.telemetry_interval)
            self.send_telemetry()

    # --- telemetry ---------------------------------------------------------------------------------

    def telemetry(self, status: Status | None = None) -> dict[str, Any]:
        """The figures the back office sees: no card data, ever."""
        terminal = self.terminal
        status = status or terminal.status()
        journal = terminal.journal
        heads = {}
        if journal is not None:
            heads = {chain: {"seq": head["seq"], "sig": head["sig"][:16]}
                     for chain, head in journal.heads().items()}
        last = None
        if terminal.recorder is not None:
            try:
                payments = terminal.recorder.payments.all(last=1)
                last = payments[-1].updated.isoformat() if payments else None
            except Exception as exc:
                log.warning("fleet: the last payment cannot be read: %s", exc)
        return {
            "serial": self.config.serial, "version": software_version(), "at": _now().isoformat(),
            "uptime_s": int((_now() - self._started).total_seconds()),
            "route": status.route, "signal_bars": status.signal_bars,
            "battery_percent": status.battery_percent, "charging": status.charging,
            "pending_count": status.pending_count, "pending_amounts": dict(status.pending_amounts),
            "last_payment": last, "reader": "present" if terminal.reader is not None else "missing",
            "printer": "configured" if terminal.config.printer is not None else "none",
            "journal": heads, "alerts": list(status.alerts), "training": status.training,
            "config_version": self.terminal.remote.version, "slots": self._slots(),
        }

    def _slots(self) -> dict[str, Any] | None:
        """The A/B slots when the terminal runs from them: which is active, its version, whether
        one is on trial, and the last result (a rollback is reported here)."""
        update = self.terminal.config.update
        if update is None:
            return None
        try:
            found = slots.status(update.root)
        except (slots.SlotsError, OSError) as exc:
            return {"error": str(exc)}
        active = found.get("active")
        version = found["slots"].get(active, {}).get("version") if active else None
        return {"active": active, "version": version, "trial": found.get("trial"), "last": found.get("last")}

    def send_telemetry(self, status: Status | None = None) -> bool:
        self._last_sent = asyncio.get_running_loop().time()
        return self.link.publish(self.topics.telemetry, dumps(self.telemetry(status)), retain=True)

    def payment_done(self) -> None:
        """A payment ended: the back office sees it at once (at most every `CHANGE_SPACING` s)."""
        if asyncio.get_running_loop().time() - self._last_sent >= CHANGE_SPACING:
            self.send_telemetry()

    def observe(self, status: Status) -> None:
        """The status bar's figures of now: telemetry goes out when something that matters
        changed (route, signal, the queue, alerts, training, the battery by tenths)."""
        battery = None if status.battery_percent is None else status.battery_percent // 10
        key = (status.route, status.signal_bars, status.pending_count,
               tuple(sorted(status.pending_amounts.items())), status.alerts, status.training, battery)
        if key == self._last_key:
            return
        first = self._last_key is None
        self._last_key = key
        if not first and asyncio.get_running_loop().time() - self._last_sent >= CHANGE_SPACING:
            self.send_telemetry(status)

    # --- messages ----------------------------------------------------------------------------------

    def _message(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.desired:
            if payload:
                self.apply_desired(payload)
            return
        prefix = self.topics.job("")
        if topic.startswith(prefix) and "/" not in topic[len(prefix):]:
            self._job(topic[len(prefix):], payload)

    def apply_desired(self, payload: bytes) -> dict[str, Any]:
        """A desired configuration: signature, device, version and content checked, then kept
        (atomically) and put in force, journalled as a `config_change`; reported either way."""
        terminal = self.terminal
        current = terminal.remote.version
        digest = document_digest(payload)  # names the push this report answers
        if digest == terminal.remote.digest:  # the retained document again, on reconnection: in force
            return self.reported
        try:
            desired = open_desired(payload, self.fleet_key)
            new = fleet_config.check(terminal.config, desired, serial=self.config.serial, current=current)
            fleet_config.save(terminal.config.state.folder, desired, digest)
        except (FleetProtocolError, fleet_config.RemoteConfigError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            log.warning("fleet: desired configuration refused: %s", reason)
            self.reported = {"version": current, "state": "rejected", "reason": reason, "digest": digest,
                             "at": _now().isoformat()}
            self.link.publish(self.topics.reported, dumps(self.reported), retain=True)
            return self.reported
        terminal.apply_config(new, fleet_config.Overlay(desired.version, desired.sections, digest))
        if terminal.journal is not None:
            try:
                fiscal.audit(terminal.journal, "config_change", source="fleet", version=desired.version,
                             sections=sorted(desired.sections))
            except (JournalError, fiscal.FiscalError) as exc:
                log.critical("fiscal journal: the remote configuration %d could NOT be journalled: %s",
                             desired.version, exc)
        log.info("fleet: configuration %d applied (%s)", desired.version,
                 ", ".join(sorted(desired.sections)))
        self.reported = {"version": desired.version, "state": "applied", "reason": None, "digest": digest,
                         "sections": sorted(desired.sections), "at": _now().isoformat()}
        self.link.publish(self.topics.reported, dumps(self.reported), retain=True)
        self.send_telemetry()
        return self.reported

    # --- jobs --------------------------------------------------------------------------------------

    def _load_handled(self) -> list[str]:
        path = Path(self.terminal.config.state.folder) / JOBS_FILE
        raw = durable.read_json(path, "jobs may run again", log)
        return [item for item in raw if isinstance(item, str)][-JOBS_KEPT:] if isinstance(raw, list) else []

    def _remember(self, job_id: str) -> None:
        self._handled = [*self._handled, job_id][-JOBS_KEPT:]
        try:
            durable.write_atomically(Path(self.terminal.config.state.folder) / JOBS_FILE,
                                     json.dumps(self._handled).encode())
        except OSError as exc:
            log.error("fleet: the jobs handled cannot be kept: %s", exc)

    def _state(self, job: JobRequest, state: str, **details: Any) -> None:
        self.link.publish(self.topics.job_state(job.id), job_state(job, state, at=_now(), **details),
                          retain=True)

    def _job(self, topic_id: str, payload: bytes) -> None:
        if not payload:
            return  # a retained job cleared by the back office
        try:
            job = parse_job(topic_id, payload)
        except FleetProtocolError as exc:
            log.warning("fleet: job %s refused: %s", topic_id, exc.reason)
            refusal = {"id": topic_id, "state": "rejected", "detail": exc.reason, "at": _now().isoformat()}
            self.link.publish(self.topics.job_state(topic_id), dumps(refusal), retain=True)
            return
        if job.id in self._handled or job.id in self.jobs:
            log.info("fleet: job %s already handled", job.id)
            return
        self._remember(job.id)
        self._state(job, "accepted", progress=0)
        task = asyncio.get_running_loop().create_task(self._run_job(job), name=f"fleet-job-{job.id}")
        self.jobs[job.id] = task
        task.add_done_callback(lambda _t, job_id=job.id: self.jobs.pop(job_id, None))

    async def _run_job(self, job: JobRequest) -> None:
        log.info("fleet: job %s (%s) running", job.id, job.kind)
        self._state(job, "running", progress=0)
        try:
            result = await getattr(self, f"_job_{job.kind}")(job)
        except asyncio.CancelledError:
            self._state(job, "failed", detail="the terminal stopped")
            raise
        except _JobFailed as exc:
            log.warning("fleet: job %s failed: %s", job.id, exc)
            self._state(job, "failed", detail=str(exc))
            return
        except Exception as exc:  # a job's bug must not take the terminal down
            log.exception("fleet: job %s failed", job.id)
            self._state(job, "failed", detail=f"{type(exc).__name__}: {exc}")
            return
        self._state(job, "succeeded", progress=100, result=result)
        log.info("fleet: job %s succeeded", job.id)

    async def _job_settlement(self, job: JobRequest) -> dict[str, Any]:
        report = await self.terminal.settle(ask=False)
        if report is None:
            raise _JobFailed("no settlement on this terminal (no host or journal)")
        return {"batch": report.batch, "result": report.result, "day_closed": report.day_closed,
                "schemes": len(report.schemes)}

    async def _job_send_queue(self, job: JobRequest) -> dict[str, Any]:
        forwarder = self.terminal.forwarder
        if forwarder is None:
            raise _JobFailed("no store-and-forward queue on this terminal (no host)")
        await forwarder.forward_once()
        self.terminal.queue_changed()
        status = self.terminal.status()
        return {"pending_count": status.pending_count, "pending_amounts": dict(status.pending_amounts)}

    async def _job_upload_logs(self, job: JobRequest) -> dict[str, Any]:
        lines = list(self.ring.lines)
        chunk = 100
        for start in range(0, len(lines), chunk):
            self.link.publish(self.topics.job_logs(job.id),
                              dumps({"from": start, "lines": lines[start:start + chunk]}))
            self._state(job, "running", progress=min(99, (start + chunk) * 100 // max(1, len(lines))))
            await asyncio.sleep(0)
        return {"lines": len(lines)}

    async def _job_firmware_update(self, job: JobRequest) -> dict[str, Any]:
        """The bundle the job names (a path on the device, or file://), checked against the
        job's SHA-256 when given, installed by the bench's installer into the inactive slot
        (provisioning/slots.py, the fleet key's signature checked there), then an orderly
        restart: the launcher starts the new slot on trial."""
        update = self.terminal.config.update
        if update is None:
            raise _JobFailed("this terminal runs from no A/B slots ([update] root)")
        source = str(job.params.get("bundle") or job.params.get("url") or "")
        if source.startswith("file://"):
            source = source[len("file://"):]
        if not source or "://" in source:
            raise _JobFailed("the job names no bundle on the device (a path or a file:// address)")
        wanted = job.params.get("sha256")
        if wanted is not None and await asyncio.to_thread(durable.sha256_of, Path(source)) != wanted:
            raise _JobFailed("the bundle is not the one the job names (SHA-256)")

        loop = asyncio.get_running_loop()

        def progress(step: str, percent: int) -> None:  # in the installer's thread
            loop.call_soon_threadsafe(lambda: self._state(job, "running", progress=percent, detail=step))

        try:
            state = await asyncio.to_thread(slots.flash, Path(source), update.root, self.fleet_key, progress)
        except (BundleError, slots.SlotsError, OSError) as exc:
            raise _JobFailed(f"not installed: {exc}") from exc
        trial = state.get("trial") or {}
        version = state["slots"].get(trial.get("slot"), {}).get("version")
        loop.call_later(1.0, self.terminal.request_stop, "firmware update installed: restart on the new slot")
        return {"slot": trial.get("slot"), "version": version, "restart": True}


class _JobFailed(Exception):
    """A job that cannot be done here: the reason goes to the back office."""
