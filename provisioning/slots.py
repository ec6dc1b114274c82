"""A/B slots on a device root (`tpe provision flash`, `boot`, `healthy`, `status`), after RAUC
and Mender: a bundle is written into the slot that is not running, checked again from disk, and
only then tried, once; the new slot becomes the active one when the firmware says it is healthy,
otherwise the next start rolls back to the slot that worked.

    <root>/slots/A, <root>/slots/B   the application's files of each slot
    <root>/slots/state.json          {"active", "slots": {"A": {"version"}, ...}, "trial", "last"}
    <root>/slots/current             a link to the slot the launcher starts (`boot`)

The state file is replaced whole (`firmware.durable.write_atomically`): a power cut at any step
of a flash leaves it naming the old slot, so the device starts what it ran before. The crash
tests cut the power at each step (`firmware.crashpoints`: flash.*).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from firmware import crashpoints, durable
from provisioning.bundle import CHUNK, Manifest, files, verify, version_key
from provisioning.device import DeviceRoot

log = logging.getLogger(__name__)

SLOTS = ("A", "B")
TRIAL_STARTS = 1  # starts a new slot gets to become healthy; the next one rolls back
Progress = Callable[[str, int], None]  # (step, percent)


class SlotsError(Exception):
    """The device root cannot be read or written, or refuses the bundle (downgrade, foreign)."""


def _hardware(device: DeviceRoot) -> str:
    try:
        return device.hardware.read_text().strip()
    except OSError:
        raise SlotsError(f"{device.hardware} is missing: the device root names no hardware") from None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def read_state(device: DeviceRoot) -> dict[str, Any]:
    raw = durable.read_json(device.slots_state, "no slot installed yet", log)
    if raw is None:
        return {"active": None, "slots": {}, "trial": None, "last": None}
    if not _valid_state(raw):
        raise SlotsError(f"{device.slots_state} is damaged: a technician must flash the device again")
    return raw


def _valid_state(raw: Any) -> bool:
    if not isinstance(raw, dict) or raw.get("active") not in (None, *SLOTS):
        return False
    installed, trial = raw.get("slots"), raw.get("trial")
    if not isinstance(installed, dict) or not set(installed) <= set(SLOTS) or not all(
            isinstance(slot, dict) and isinstance(slot.get("version"), str) for slot in installed.values()):
        return False
    if raw["active"] is not None and raw["active"] not in installed:
        return False
    if trial is not None and not (isinstance(trial, dict) and trial.get("slot") in installed
                                  and type(trial.get("starts")) is int):
        return False
    return raw.get("last") is None or isinstance(raw.get("last"), str)


def _write_state(device: DeviceRoot, state: dict[str, Any]) -> None:
    device.slots_state.parent.mkdir(parents=True, exist_ok=True)
    durable.write_atomically(device.slots_state, json.dumps(state, indent=1, sort_keys=True).encode())


def _point(current: Path, slot: Path) -> None:
    """`current` made to name `slot`, atomically (a new link renamed over the old one)."""
    temporary = current.with_name(".current.tmp")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(slot.relative_to(current.parent))
    os.replace(temporary, current)
    durable.fsync_path(current.parent)


def flash(bundle: Path, root: Path, public: ec.EllipticCurvePublicKey,
          progress: Progress | None = None) -> dict[str, Any]:
    """Install `bundle` into the inactive slot of the device at `root` and set it to be tried at
    the next start. Everything is verified before a byte is written: the signature, each file,
    the hardware, no downgrade. Returns the new state."""
    shown = progress or (lambda step, percent: None)
    device = DeviceRoot(Path(root))
    manifest = verify(bundle, public)
    shown("verified", 0)
    crashpoints.reach("flash.verified")
    state = read_state(device)
    hardware = _hardware(device)
    if manifest.hardware != hardware:
        raise SlotsError(f"the bundle is for {manifest.hardware}, this device is {hardware}")
    active = state.get("active")
    running = state["slots"].get(active, {}).get("version") if active else None
    if running is not None:
        if version_key(manifest.version) <= version_key(running):
            raise SlotsError(f"version {manifest.version} is not newer than {running}: no downgrade")
        if version_key(running) < version_key(manifest.min_version):
            raise SlotsError(f"version {manifest.version} needs {manifest.min_version} or later first")
    target = "B" if active == "A" else "A"
    slot = device.slot(target)
    if slot.exists():
        shutil.rmtree(slot)
    slot.mkdir(parents=True)
    _write_files(bundle, manifest, slot, shown)
    crashpoints.reach("flash.written")
    _check_written(manifest, slot, shown)
    crashpoints.reach("flash.checked")
    state["slots"][target] = {"version": manifest.version, "installed": _now()}
    if active is None:  # a blank device: the first slot is the one to run, no trial
        state.update(active=target, trial=None, last=f"{target} {manifest.version} installed")
    else:
        state.update(trial={"slot": target, "starts": 0},
                     last=f"{target} {manifest.version} installed, to be tried at the next start")
    _write_state(device, state)
    crashpoints.reach("flash.switched")
    if active is None:
        _point(device.current, slot)
    shown("done", 100)
    return state


def _write_files(bundle: Path, manifest: Manifest, slot: Path, shown: Progress) -> None:
    total, done, last = max(1, manifest.size), 0, -1
    for entry, stream in files(bundle, manifest):
        path = slot / entry["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            while chunk := stream.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        percent = done * 100 // total
        if percent != last:
            last = percent
            shown("writing", min(99, percent))
        crashpoints.reach("flash.writing")
    for folder in sorted({p for p in slot.rglob("*") if p.is_dir()} | {slot}, reverse=True):
        durable.fsync_path(folder)


def _check_written(manifest: Manifest, slot: Path, shown: Progress) -> None:
    """Every file read back from the disk and hashed again."""
    for entry in manifest.files:
        if durable.sha256_of(slot / entry["path"]) != entry["sha256"]:
            raise SlotsError(f"{entry['path']} reads back wrong from {slot}: the storage is failing")
    shown("checked", 100)


def boot(root: Path) -> str:
    """The slot to start now (called by the launcher before the firmware): the trial slot for
    its one start, the active one otherwise; a trial that already had its start without
    becoming healthy is rolled back here, and the state says so."""
    device = DeviceRoot(Path(root))
    state = read_state(device)
    active, trial = state.get("active"), state.get("trial")
    if active is None:
        raise SlotsError(f"nothing is installed on {root}: flash a bundle first")
    chosen = active
    if trial:
        if trial["starts"] >= TRIAL_STARTS:
            version = state["slots"].get(trial["slot"], {}).get("version")
            state.update(trial=None, last=f"rolled back from {trial['slot']} {version}: not healthy "
                                          f"after {trial['starts']} start(s); {active} runs again")
        else:
            trial["starts"] += 1
            chosen = trial["slot"]
        _write_state(device, state)
    _point(device.current, device.slot(chosen))
    return chosen


def healthy(root: Path) -> str | None:
    """The firmware is up, its reader found, its link up and its journal verified: a slot on
    trial becomes the active one (returned); None when nothing was on trial."""
    device = DeviceRoot(Path(root))
    state = read_state(device)
    trial = state.get("trial")
    if not trial:
        return None
    slot = trial["slot"]
    version = state["slots"].get(slot, {}).get("version")
    state.update(active=slot, trial=None, last=f"{slot} {version} healthy: committed")
    _write_state(device, state)
    return str(slot)


def status(root: Path) -> dict[str, Any]:
    state = read_state(DeviceRoot(Path(root)))
    return {"active": state.get("active"), "slots": state.get("slots", {}), "trial": state.get("trial"),
            "last": state.get("last")}


