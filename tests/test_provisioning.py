"""Provisioning at the bench and flashing (provisioning/): a device folder made a terminal and run
against the simulators, bundles refused before any write when tampered with, power cuts at each
step of a flash, a new slot that does not become healthy rolled back. TEST KEYS only: the
workshop is made in tmp, the BDK is the host simulator's TEST BDK."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_processes import ROOT, TPE

from firmware.config import ConfigError, load_config, load_initial_key
from firmware.dukpt import derive_initial_key
from firmware.journal import Journal
from provisioning import slots
from provisioning.bundle import BundleError, application_files, build, parse_manifest, verify
from provisioning.device import DeviceRoot, key_check_value, load_bdk, provision
from provisioning.slots import SlotsError
from provisioning.workshop import ProvisionError, Workshop, init_workshop
from sim.host.keys import HOST_KEYS_FILE
from sim.host.test_pki import seeded_key

IDS = {"serial": "TPE-0042", "terminal_id": "TPE00042", "merchant_id": "000000000000042",
       "broker": "127.0.0.1:8883"}


def _provisioned(tmp_path: Path, **extra: Any) -> tuple[Workshop, DeviceRoot]:
    workshop = Workshop(tmp_path / "workshop")
    if not workshop.ca_cert.exists():
        init_workshop(workshop.folder)
    device = DeviceRoot(tmp_path / "device")
    provision(device.root, workshop, bdk_file=HOST_KEYS_FILE, **{**IDS, **extra})
    return workshop, device


def _audit(device: DeviceRoot) -> list[dict[str, Any]]:
    journal = Journal(device.state)
    try:
        return [record.data for record in journal.records("audit")]
    finally:
        journal.close()


def test_a_device_gets_its_identity_certificate_and_initial_key(tmp_path: Path) -> None:
    workshop, device = _provisioned(tmp_path)
    identity = json.loads(device.identity.read_text())
    assert (identity["serial"], identity["terminal_id"], identity["merchant_id"]) == (
        "TPE-0042", "TPE00042", "000000000000042")
    assert identity["hardware"] == "tpe-rpi" and device.hardware.read_text() == "tpe-rpi\n"
    for private in ("device-key.pem", "dukpt-initial-key.toml"):
        assert stat.S_IMODE((device.keys / private).stat().st_mode) == 0o600
    assert stat.S_IMODE(device.keys.stat().st_mode) == 0o700
    certificate = x509.load_pem_x509_certificate((device.keys / "device-cert.pem").read_bytes())
    ca = x509.load_pem_x509_certificate(workshop.ca_cert.read_bytes())
    certificate.verify_directly_issued_by(ca)
    assert certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "TPE-0042"
    key = serialization.load_pem_private_key((device.keys / "device-key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == certificate.public_key().public_numbers()  # type: ignore[union-attr]
    # the initial key is the BDK's for this initial key ID (X9.24-3-2017, 6.3.3), and the KCVs say so
    bdk, bdk_id = load_bdk(HOST_KEYS_FILE)
    config = load_config(device.config)
    assert config.dukpt is not None
    stored = config.dukpt.initial_key_file.read_text()
    initial_key_id = bytes.fromhex(identity["initial_key_id"])
    initial_key = derive_initial_key(bdk, initial_key_id)
    assert initial_key_id[:4] == bdk_id and f'"{initial_key.hex().upper()}"' in stored
    assert identity["initial_key_kcv"] == key_check_value(initial_key)
    assert identity["bdk_kcv"] == key_check_value(bdk) and bdk.hex().upper() not in device.config.read_text()
    assert (config.kernel.terminal.terminal_id, config.fleet.serial) == ("TPE00042", "TPE-0042")  # type: ignore[union-attr]
    assert config.update is not None and config.update.root == device.root.resolve()
    (event,) = [e for e in _audit(device) if e["event"] == "config_change"]
    assert event["source"] == "provisioning" and event["initial_key_kcv"] == identity["initial_key_kcv"]
    assert not any(bdk.hex().upper() in json.dumps(e) for e in _audit(device))


def test_each_device_gets_its_own_derivation_id(tmp_path: Path) -> None:
    workshop, first = _provisioned(tmp_path)
    other = DeviceRoot(tmp_path / "other")
    provision(other.root, workshop, bdk_file=HOST_KEYS_FILE, **{**IDS, "serial": "TPE-0043"})
    ids = {json.loads(d.identity.read_text())["initial_key_id"] for d in (first, other)}
    assert len(ids) == 2


def test_refusals_are_clear_and_force_is_journalled(tmp_path: Path) -> None:
    workshop, device = _provisioned(tmp_path)
    with pytest.raises(ProvisionError, match="already provisioned"):
        provision(device.root, workshop, bdk_file=HOST_KEYS_FILE, **IDS)
    before = json.loads(device.identity.read_text())["initial_key_id"]
    provision(device.root, workshop, bdk_file=HOST_KEYS_FILE, force=True, **{**IDS, "serial": "TPE-0044"})
    after = json.loads(device.identity.read_text())
    assert after["serial"] == "TPE-0044" and after["initial_key_id"] != before
    forced = [e for e in _audit(device) if e["event"] == "config_change"][-1]
    assert forced["replaced"] == "TPE-0042"
    for bad, why in (({"serial": "TPE/1"}, "serial"), ({"terminal_id": "tpe1"}, "terminal id"),
                     ({"hardware": "a board"}, "hardware id"),
                     ({"merchant_id": "42"}, "merchant id"), ({"broker": "host:port"}, "broker")):
        with pytest.raises(ProvisionError, match=why):
            provision(tmp_path / "blank", workshop, bdk_file=HOST_KEYS_FILE, **{**IDS, **bad})
    with pytest.raises(ProvisionError, match="ca init"):
        provision(tmp_path / "blank", Workshop(tmp_path / "no-workshop"), bdk_file=HOST_KEYS_FILE, **IDS)
    assert not (tmp_path / "blank").exists()  # refused before anything was written
    with pytest.raises(ProvisionError, match="already holds"):
        init_workshop(workshop.folder)


# --- bundles and slots -----------------------------------------------------------------------------

def _bundle(tmp_path: Path, workshop: Workshop, version: str, *, hardware: str = "tpe-rpi",
            min_version: str = "0", name: str | None = None) -> Path:
    out = tmp_path / (name or f"bundle-{version}.tar")
    files = [item for item in application_files(ROOT) if item[0].startswith("firmware/")][:40]
    build(out, files, version=version, hardware=hardware, min_version=min_version,
          signing_key=workshop.private_key(workshop.fleet_key))
    return out


def _public(workshop: Workshop) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(workshop.fleet_public.read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _rewrite(bundle: Path, out: Path, change: Any) -> Path:
    """A copy of `bundle` whose members pass through `change(name, data) -> data`."""
    with tarfile.open(bundle) as source, tarfile.open(out, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            data = change(member.name, data)
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            target.addfile(info, io.BytesIO(data))
    return out


def test_a_flash_goes_to_the_other_slot_is_tried_once_and_committed_when_healthy(tmp_path: Path) -> None:
    workshop, device = _provisioned(tmp_path)
    steps: list[tuple[str, int]] = []
    state = slots.flash(_bundle(tmp_path, workshop, "1.0.0"), device.root, _public(workshop),
                        lambda step, percent: steps.append((step, percent)))
    assert state["active"] == "A" and state["trial"] is None
    assert (device.root / "slots" / "current").resolve().name == "A"
    assert steps[0] == ("verified", 0) and steps[-1] == ("done", 100)
    assert any(step == "writing" for step, _ in steps)
    slots.flash(_bundle(tmp_path, workshop, "1.1.0"), device.root, _public(workshop))
    assert slots.status(device.root)["trial"] == {"slot": "B", "starts": 0}
    assert slots.boot(device.root) == "B" and (device.root / "slots" / "current").resolve().name == "B"
    assert (device.root / "slots" / "B" / "firmware" / "apdu_log.py").read_bytes() == (
        ROOT / "firmware" / "apdu_log.py").read_bytes()
    assert slots.healthy(device.root) == "B"
    status = slots.status(device.root)
    assert status["active"] == "B" and status["trial"] is None and "healthy" in status["last"]
    assert slots.boot(device.root) == "B" and slots.healthy(device.root) is None


def test_a_new_slot_that_never_becomes_healthy_is_rolled_back(tmp_path: Path) -> None:
    workshop, device = _provisioned(tmp_path)
    slots.flash(_bundle(tmp_path, workshop, "1.0.0"), device.root, _public(workshop))
    slots.flash(_bundle(tmp_path, workshop, "2.0.0"), device.root, _public(workshop))
    assert slots.boot(device.root) == "B"  # its one trial start: it hangs or fails its checks
    assert slots.boot(device.root) == "A"  # the next start rolls back
    status = slots.status(device.root)
    assert status["active"] == "A" and status["trial"] is None
    assert status["last"].startswith("rolled back from B")
    assert (device.root / "slots" / "current").resolve().name == "A"


@pytest.mark.parametrize("tamper", ["file byte", "manifest", "other key", "missing file", "extra file",
                                    "downgrade", "foreign hardware", "too new"])
def test_a_bad_bundle_is_refused_before_anything_is_written(tmp_path: Path, tamper: str) -> None:
    workshop, device = _provisioned(tmp_path)
    slots.flash(_bundle(tmp_path, workshop, "2.0.0"), device.root, _public(workshop))
    before = slots.status(device.root)
    good = _bundle(tmp_path, workshop, "2.1.0")
    bad = tmp_path / "bad.tar"
    if tamper == "file byte":
        _rewrite(good, bad, lambda name, data: data[:10] + bytes([data[10] ^ 1]) + data[11:]
                 if name == "files/firmware/apdu_log.py" else data)
    elif tamper == "manifest":
        _rewrite(good, bad, lambda name, data: data.replace(b'"2.1.0"', b'"9.1.0"') if name == "manifest.json"
                 else data)
    elif tamper == "other key":
        other = Workshop(tmp_path / "other-workshop")
        init_workshop(other.folder)
        bad = _bundle(tmp_path, other, "2.1.0", name="other.tar")
    elif tamper == "missing file":
        with tarfile.open(good) as source, tarfile.open(bad, "w") as target:
            for member in source.getmembers()[:-1]:
                target.addfile(member, source.extractfile(member))
    elif tamper == "extra file":
        _rewrite(good, bad, lambda name, data: data)
        with tarfile.open(bad, "a") as target:
            info = tarfile.TarInfo("files/evil.py")
            info.size = 4
            target.addfile(info, io.BytesIO(b"boom"))
    elif tamper == "downgrade":
        bad = _bundle(tmp_path, workshop, "1.9.0")
    elif tamper == "foreign hardware":
        bad = _bundle(tmp_path, workshop, "2.1.0", hardware="other-board", name="foreign.tar")
    else:
        bad = _bundle(tmp_path, workshop, "3.0.0", min_version="2.5.0")
    with pytest.raises((BundleError, SlotsError)):
        slots.flash(bad, device.root, _public(workshop))
    assert slots.status(device.root) == before and not (device.root / "slots" / "B").exists()


@pytest.mark.parametrize("point", ["flash.verified", "flash.writing", "flash.written", "flash.checked",
                                   "flash.switched"])
def test_a_power_cut_during_a_flash_leaves_the_old_slot_to_start(tmp_path: Path, point: str) -> None:
    workshop, device = _provisioned(tmp_path)
    slots.flash(_bundle(tmp_path, workshop, "1.0.0"), device.root, _public(workshop))
    bundle = _bundle(tmp_path, workshop, "1.1.0")
    env = {**os.environ, "TPE_CRASH_AT": point, "TPE_CRASH_AFTER": "3" if point == "flash.writing" else "1"}
    flash = [*TPE, "provision", "flash", str(bundle), "--target", str(device.root),
             "--fleet-key", str(workshop.fleet_public)]
    cut = subprocess.run(flash, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert cut.returncode == -9, cut.stderr  # SIGKILL: the battery died
    started = slots.boot(device.root)
    if point == "flash.switched":  # the switch was on disk: the new slot gets its trial start
        assert started == "B"
    else:
        assert started == "A" and slots.status(device.root)["slots"]["A"]["version"] == "1.0.0"
    again = subprocess.run(flash, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if point != "flash.switched":  # flashing again after the cut works
        assert again.returncode == 0 and "to be tried at the next start" in again.stdout, again.stderr


def test_the_bench_commands_show_progress_and_refuse_clearly(tmp_path: Path) -> None:
    def tpe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TPE, "provision", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)

    workshop = tmp_path / "ws"
    assert tpe("ca", "init", "--workshop", str(workshop)).returncode == 0
    assert tpe("ca", "init", "--workshop", str(workshop)).returncode == 2
    device = ["--workshop", str(workshop), "--root", str(tmp_path / "dev"), "--serial", "TPE-7",
              "--tid", "TPE00007", "--mid", "000000000000007", "--broker", "127.0.0.1",
              "--bdk", str(HOST_KEYS_FILE)]
    made = tpe("device", *device)
    assert made.returncode == 0 and "KCV initial key" in made.stdout and "KCV BDK" in made.stdout
    refused = tpe("device", *device)
    assert refused.returncode == 2 and "already provisioned" in refused.stderr
    bundle = tmp_path / "b.tar"
    built = tpe("bundle", "build", "--version", "1.0.0", "--signing-key",
                str(workshop / "fleet-signing-key.pem"), "--out", str(bundle))
    assert built.returncode == 0 and "version 1.0.0" in built.stdout
    flashed = tpe("flash", str(bundle), "--target", str(tmp_path / "dev"), "--fleet-key",
                  str(workshop / "fleet-signing-public.pem"))
    assert flashed.returncode == 0 and "writing " in flashed.stdout and "done 100%" in flashed.stdout
    assert json.loads(tpe("status", "--target", str(tmp_path / "dev")).stdout)["active"] == "A"
    foreign = tpe("flash", str(bundle), "--target", str(tmp_path / "dev"), "--fleet-key",
                  str(tmp_path / "ws" / "provisioning-ca-cert.pem"))
    assert foreign.returncode == 2



def test_the_initial_key_can_travel_and_stay_as_a_tr31_key_block(tmp_path: Path) -> None:
    kbpk = tmp_path / "kbpk.toml"  # TEST KEY: the device's key block protection key
    kbpk.write_text('kbpk = "' + "2B7E151628AED2A6ABF7158809CF4F3C" + '"\n')
    _, device = _provisioned(tmp_path, kbpk_file=kbpk)
    stored = (device.keys / "dukpt-initial-key.toml").read_text()
    identity = json.loads(device.identity.read_text())
    bdk, _ = load_bdk(HOST_KEYS_FILE)
    initial_key = derive_initial_key(bdk, bytes.fromhex(identity["initial_key_id"]))
    assert "key_block = \"D" in stored and initial_key.hex().upper() not in stored
    loaded = load_initial_key(device.keys / "dukpt-initial-key.toml")
    assert (loaded.key, loaded.key_id.hex().upper()) == (initial_key, identity["initial_key_id"])
    assert identity["initial_key_kcv"] == key_check_value(loaded.key)
    (device.keys / "kbpk.toml").write_text('kbpk = "' + "00" * 16 + '"\n')
    with pytest.raises(ConfigError, match="does not open"):
        load_initial_key(device.keys / "dukpt-initial-key.toml")


# --- what the bench reads: any input is taken or refused with its own error ----------------------------

@given(st.binary(max_size=3000))
def test_any_manifest_parses_or_is_refused_with_the_bundles_error(raw: bytes) -> None:
    try:
        manifest = parse_manifest(raw)
    except BundleError:
        return
    assert manifest.files and all(not entry["path"].startswith("/") for entry in manifest.files)


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=3000))
def test_any_bundle_file_is_refused_unless_the_fleet_key_signed_it(tmp_path: Path, data: bytes) -> None:
    key = seeded_key("bundle property", "fleet").public_key()  # TEST KEY
    path = tmp_path / "random.tar"
    path.write_bytes(data)
    with pytest.raises(BundleError):
        verify(path, key)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(json_values, st.fixed_dictionaries(
    {"active": st.sampled_from([None, "A", "B", "C"]),
     "slots": st.dictionaries(st.sampled_from(["A", "B", "C"]),
                              st.fixed_dictionaries({"version": st.text()})),
     "trial": st.none() | st.fixed_dictionaries({"slot": st.sampled_from(["A", "B"]),
                                                 "starts": st.integers()}),
     "last": st.none() | st.text()})))
def test_any_slots_state_is_used_or_refused_as_damaged(tmp_path: Path, value: Any) -> None:
    state_file = tmp_path / "slots" / "state.json"
    state_file.parent.mkdir(exist_ok=True)
    state_file.write_text(json.dumps(value))
    try:
        chosen = slots.boot(tmp_path)
    except SlotsError:
        return
    assert chosen in ("A", "B")
