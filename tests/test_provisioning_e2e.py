"""A device folder provisioned at the bench, then the firmware run from it against the
simulators: its sales booked at the host under its own DUKPT keys, its fleet link on a broker that
trusts the workshop's CA, a new slot committed once healthy, one that is not rolled back, and a
firmware update pushed as a fleet job. TEST KEYS only."""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fleet_rig import FAST, until
from sim_processes import ROOT
from sim_reader import SimReader

from firmware.config import load_config
from firmware.fleet_protocol import Topics
from firmware.reader import ReaderError
from firmware.runtime import Terminal
from firmware.ui_script import ScriptedUi, parse_script
from provisioning import slots
from provisioning.bundle import application_files, build
from provisioning.device import DeviceRoot, provision
from provisioning.fleet_office import BackOffice
from provisioning.workshop import Workshop, init_workshop, issue
from sim.fleet.broker import MosquittoBroker
from sim.fleet.pki import FleetPki
from sim.host.keys import HOST_KEYS_FILE
from sim.host.server import HostSimulator


def _write_pair(folder: Path, name: str, workshop: Workshop, *, server: bool = False) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))] if server else None
    certificate = issue(workshop, key.public_key(), name, server=server, names=names)
    cert, key_file = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert, key_file


class _NoReader(SimReader):
    def pick(self, name: str | None) -> str:
        raise ReaderError("no PC/SC reader")


def _bundle(tmp_path: Path, workshop: Workshop, version: str) -> Path:
    out = tmp_path / f"tpe-{version}.tar"
    files = [item for item in application_files(ROOT) if item[0].startswith("firmware/")][:30]
    build(out, files, version=version, hardware="tpe-rpi", min_version="0",
          signing_key=workshop.private_key(workshop.fleet_key))
    return out


def test_a_provisioned_device_sells_reports_commits_and_rolls_back(tmp_path: Path) -> None:
    workshop = init_workshop(tmp_path / "workshop")
    fleet_files = tmp_path / "fleet"
    fleet_files.mkdir()
    broker_cert, broker_key = _write_pair(fleet_files, "localhost", workshop, server=True)
    office_cert, office_key = _write_pair(fleet_files, "backoffice", workshop)
    pki = FleetPki(fleet_files, workshop.ca_cert, workshop.ca_key, broker_cert, broker_key,
                   workshop.fleet_key, workshop.fleet_public)
    device = DeviceRoot(tmp_path / "device")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            host = await stack.enter_async_context(HostSimulator(tmp_path / "pki",
                                                                 ledger=tmp_path / "ledger.sqlite3"))
            broker = stack.enter_context(MosquittoBroker(tmp_path / "broker", pki))
            done = provision(device.root, workshop, serial="TPE-0042", terminal_id="TPE00042",
                             merchant_id="000000000000042", broker=f"127.0.0.1:{broker.port}",
                             bdk_file=HOST_KEYS_FILE, acquirer=f"127.0.0.1:{host.port}",
                             acquirer_tls=(host.pki.host_ca_cert, host.pki.terminal_cert,
                                           host.pki.terminal_key))
            seen["ksn"] = done.ksn
            public = serialization.load_pem_public_key(workshop.fleet_public.read_bytes())
            slots.flash(_bundle(tmp_path, workshop, "1.0.0"), device.root, public)  # type: ignore[arg-type]
            slots.flash(_bundle(tmp_path, workshop, "1.1.0"), device.root, public)  # type: ignore[arg-type]
            assert slots.boot(device.root) == "B"  # the launcher starts the new slot on trial

            config = load_config(device.config)
            ui = ScriptedUi(parse_script({"sale": [{"amount": 3100, "pin": "1234"}], "then": "wait"}),
                            out=io.StringIO())
            terminal = Terminal(config, ui, reader_factory=SimReader, **FAST)  # type: ignore[arg-type]
            office = BackOffice("127.0.0.1", broker.port, ca_file=workshop.ca_cert, cert_file=office_cert,
                                key_file=office_key)

            async def drive() -> None:
                try:
                    with office:
                        await until(lambda: terminal.reports and terminal.reports[-1].outcome is not None,
                                    "the sale", 30)
                        await until(lambda: slots.status(device.root)["trial"] is None, "the commit", 30)
                        topic = Topics("TPE-0042").status
                        seen["status"] = await until(lambda: office.latest(topic), "status")
                        terminal.fleet.send_telemetry()  # type: ignore[union-attr]
                        telemetry = Topics("TPE-0042").telemetry

                        def committed() -> Any:
                            found = (office.latest(telemetry) or {}).get("slots") or {}
                            done = found.get("active") == "B" and found.get("trial") is None
                            return found if done else None

                        seen["slots"] = await until(committed, "the slots in the telemetry")
                        update = {"bundle": f"file://{_bundle(tmp_path, workshop, '1.2.0')}"}
                        job = await asyncio.to_thread(office.start_job, "TPE-0042", "firmware_update", update)
                        seen["job"] = await asyncio.to_thread(office.follow, "TPE-0042", job, 60)
                        await until(lambda: terminal.stop_cause is not None, "the restart", 10)
                finally:
                    terminal.request_stop("driver done")

            driving = asyncio.ensure_future(drive())
            await asyncio.wait_for(terminal.run_until_stopped(), 120)
            await driving
            seen["entries"] = host.ledger.entries()
            seen["stop"] = terminal.stop_cause
            seen["committed"] = dict(slots.status(device.root))

            # the update's slot (A, 1.2.0) on trial, with no reader: not healthy by the deadline
            assert slots.boot(device.root) == "A"
            text = device.config.read_text().replace("[update]\n", "[update]\nhealth_deadline = 5\n")
            device.config.write_text(text)
            failing = Terminal(load_config(device.config), ScriptedUi(parse_script({"then": "wait"}),
                                                                      out=io.StringIO()),
                               reader_factory=_NoReader, **FAST)  # type: ignore[arg-type]
            await asyncio.wait_for(failing.run_until_stopped(), 60)
            seen["unhealthy"] = failing.stop_cause
            seen["rolled_back_to"] = slots.boot(device.root)
            seen["after"] = slots.status(device.root)

    asyncio.run(scenario())
    (entry,) = seen["entries"]
    assert (entry.terminal_id, entry.amount, entry.approved) == ("TPE00042", 3100, True)
    assert seen["status"]["state"] == "online"
    assert seen["slots"]["version"] == "1.1.0" and "healthy" in seen["slots"]["last"]
    assert seen["committed"]["slots"]["B"]["version"] == "1.1.0"
    job = seen["job"]
    assert job["state"] == "succeeded" and job["result"] == {"slot": "A", "version": "1.2.0", "restart": True}
    assert seen["stop"] == "firmware update installed: restart on the new slot"
    assert seen["committed"]["trial"] == {"slot": "A", "starts": 0}
    assert seen["unhealthy"] == "not healthy after the update"
    assert seen["rolled_back_to"] == "B" and seen["after"]["active"] == "B"
    assert seen["after"]["last"].startswith("rolled back from A 1.2.0")
