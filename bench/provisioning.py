"""`make bench` figures of firmware bundles (issue 10): the whole application signed into a
bundle, its verification (signature and every file's SHA-256), and its installation into a
device root's inactive slot (written, synced, read back and hashed again, switched), with how
often the progress moves. Report only; `python -m bench.provisioning` runs it alone."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from provisioning import slots
from provisioning.bundle import application_files, build, verify
from provisioning.workshop import init_workshop

ROOT = Path(__file__).resolve().parent.parent


def bench_provisioning(results: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory(prefix="tpe-bench-bundle-") as folder:
        work = Path(folder)
        workshop = init_workshop(work / "workshop")
        key = workshop.private_key(workshop.fleet_key)
        public = serialization.load_pem_public_key(workshop.fleet_public.read_bytes())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        files = application_files(ROOT)
        started = time.perf_counter()
        manifest = build(work / "tpe-1.0.0.tar", files, version="1.0.0", hardware="tpe-rpi", min_version="0",
                         signing_key=key)
        results["bundle_build_s"] = round(time.perf_counter() - started, 3)
        build(work / "tpe-1.1.0.tar", files, version="1.1.0", hardware="tpe-rpi", min_version="0",
              signing_key=key)
        results["bundle_files"] = len(manifest.files)
        results["bundle_mb"] = round((work / "tpe-1.0.0.tar").stat().st_size / 1e6, 2)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            verify(work / "tpe-1.0.0.tar", public)
            times.append(time.perf_counter() - started)
        results["bundle_verify_ms_median"] = round(1000 * sorted(times)[2], 1)
        device = work / "device"
        (device / "etc" / "tpe").mkdir(parents=True)
        (device / "etc" / "tpe" / "hardware").write_text("tpe-rpi\n")
        slots.flash(work / "tpe-1.0.0.tar", device, public)
        steps: list[int] = []
        started = time.perf_counter()
        slots.flash(work / "tpe-1.1.0.tar", device, public, lambda step, percent: steps.append(percent))
        results["bundle_install_s"] = round(time.perf_counter() - started, 3)
        results["bundle_install_progress_updates"] = len(steps)
        results["bundle_install_progress_distinct_percent"] = len(set(steps))


if __name__ == "__main__":
    found: dict[str, float] = {}
    bench_provisioning(found)
    for name, value in sorted(found.items()):
        print(f"{name:<44} {value}")
