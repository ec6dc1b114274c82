"""The fleet link against a real mosquitto (TLS, per-device certificates and ACL): status and
last will, telemetry without card data, signed remote configuration, jobs, the ACL, reconnection
after a broker restart spread out in time, and sales going on while the broker is away.
TEST KEYS only (sim/fleet/pki.py, sim/host/test_pki.py)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import signal
import sqlite3
import statistics
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fleet_rig import fleet_config, fleet_section, office, run_terminal, until
from sim_processes import ROOT, TPE, write_config

from firmware.fleet_client import FleetLink
from firmware.fleet_protocol import DesiredConfig, Topics, dumps, sign_desired
from firmware.offline_limits import OfflineLimits
from firmware.runtime import Terminal
from provisioning.fleet_office import load_signing_key
from sim.fleet.broker import MosquittoBroker, free_port
from sim.fleet.pki import make_fleet_pki
from sim.fleet.swarm import Swarm
from sim.host.server import load_or_make_pki
from sim.host.test_pki import seeded_key

PAN = "4761739001010010"  # the simulated Visa card's number: must never leave in a message


def _journal_audit(folder: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(folder / "journal.sqlite3")) as db:
        rows = db.execute("SELECT payload FROM record WHERE chain = 'audit' ORDER BY seq")
        return [json.loads(payload) for (payload,) in rows]


def test_status_and_telemetry_reach_the_back_office_without_card_data(tmp_path: Path,
                                                                      broker: MosquittoBroker) -> None:
    serial = "TPE-TELEMETRY"
    seen: dict[str, Any] = {}

    async def driver(terminal: Terminal) -> None:
        with office(broker) as back:
            status = await until(lambda: back.latest(Topics(serial).status), "status online")
            seen["status"] = status
            await until(lambda: terminal.reports and terminal.reports[-1].outcome is not None, "the sale")
            terminal.fleet.send_telemetry()  # type: ignore[union-attr]
            topic = Topics(serial).telemetry
            seen["telemetry"] = await until(
                lambda: (t := back.latest(topic)) and t.get("last_payment") and t, "telemetry")
            seen["payloads"] = [p for _, _, p in back._seen]

    _, _, entries = run_terminal(tmp_path, fleet_section(broker.pki, serial, broker.port),
                                 driver, sales=[{"amount": 2500, "pin": "1234"}])
    assert seen["status"]["state"] == "online" and seen["status"]["version"]
    telemetry = seen["telemetry"]
    assert (telemetry["serial"], telemetry["reader"], telemetry["printer"]) == (serial, "present", "none")
    assert telemetry["journal"]["ticket"]["seq"] == 1 and len(telemetry["journal"]["ticket"]["sig"]) == 16
    assert telemetry["config_version"] == 0 and telemetry["pending_count"] == 0
    assert [e.amount for e in entries] == [2500]
    everything = b"".join(seen["payloads"])
    assert PAN.encode() not in everything and PAN[-4:].encode() not in everything  # not even masked


def test_the_last_will_marks_a_dead_terminal_offline(tmp_path: Path, broker: MosquittoBroker) -> None:
    """`tpe run` killed with SIGKILL: no goodbye, the broker publishes the will."""
    serial = "TPE-WILL"
    host_pki = tmp_path / "pki"
    pki = load_or_make_pki(host_pki)
    config = write_config(tmp_path, free_port(), pki, fleet_section(broker.pki, serial, broker.port))
    script = tmp_path / "wait.toml"
    script.write_text('then = "wait"\n')
    env = {**os.environ, "PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd"), "SDL_VIDEODRIVER": "dummy"}
    process = subprocess.Popen([*TPE, "run", "--config", str(config), "--script", str(script)], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with office(broker) as back:
            topic = Topics(serial).status
            back.wait_for(lambda: (back.latest(topic) or {}).get("state") == "online", 20, "online")
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            back.wait_for(lambda: (back.latest(topic) or {}).get("state") == "offline", 10, "the last will")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_a_signed_configuration_is_applied_reported_journalled_and_kept(tmp_path: Path,
                                                                      broker: MosquittoBroker) -> None:
    serial = "TPE-CONFIG"
    reports: dict[str, Any] = {}
    offline = {"enabled": True, "max_amount": 1234, "max_total": 50000, "max_count": 20, "max_age_hours": 48}

    async def driver(terminal: Terminal) -> None:
        with office(broker) as back:
            await until(lambda: back.latest(Topics(serial).status), "status online")
            digest = await asyncio.to_thread(back.push_config, serial, 1, {"offline": offline},
                                             broker.pki.signing_key)
            reports["applied"] = await asyncio.to_thread(back.reported, serial, digest)
            reports["max_amount"] = terminal.config.offline.max_amount

    run_terminal(tmp_path, fleet_section(broker.pki, serial, broker.port), driver)
    assert reports["applied"]["state"] == "applied" and reports["applied"]["sections"] == ["offline"]
    assert reports["max_amount"] == 1234
    changes = [e for e in _journal_audit(tmp_path / "state") if e["event"] == "config_change"]
    assert changes[-1] == {"event": "config_change", "source": "fleet", "version": 1, "sections": ["offline"]}
    again: dict[str, Any] = {}

    async def second(terminal: Terminal) -> None:
        again["max_amount"], again["version"] = terminal.config.offline.max_amount, terminal.remote_version
        with office(broker) as back:
            await until(lambda: back.latest(Topics(serial).status), "status online")
            await asyncio.sleep(0.5)  # the retained desired document is delivered again on connection
            again["report"] = back.latest(Topics(serial).reported)

    run_terminal(tmp_path, fleet_section(broker.pki, serial, broker.port), second)
    assert (again["max_amount"], again["version"]) == (1234, 1)  # kept in the state folder for the next start
    assert again["report"]["state"] == "applied" and again["report"]["digest"] == reports["applied"]["digest"]
    with office(broker) as back:  # the retained desired document is not applied twice
        back.publish(Topics(serial).desired, b"", retain=True)


@pytest.mark.parametrize(("case", "why"), [
    ("foreign key", "signature"),
    ("stale", "not newer"),
    ("invalid", "offline.max_amount"),
    ("host section", "not remotely configurable"),
    ("other device", "for device"),
])
def test_a_bad_configuration_is_refused_reported_and_changes_nothing(tmp_path: Path, broker: MosquittoBroker,
                                                                     case: str, why: str) -> None:
    serial = f"TPE-BAD-{case.replace(' ', '-').upper()}"
    report: dict[str, Any] = {}
    good = {"offline": {"enabled": True, "max_amount": 3000}}

    async def driver(terminal: Terminal) -> None:
        with office(broker) as back:
            await until(lambda: back.latest(Topics(serial).status), "status online")
            if case == "stale":
                digest = await asyncio.to_thread(back.push_config, serial, 2, good, broker.pki.signing_key)
                await asyncio.to_thread(back.reported, serial, digest)
            key: Any = broker.pki.signing_key
            sections: dict[str, Any] = good
            version, target = 5, serial
            if case == "foreign key":
                key = seeded_key("another fleet", "signing")
            elif case == "stale":
                version = 2
            elif case == "invalid":
                sections = {"offline": {"max_amount": -5}}
            elif case == "host section":
                sections = {"host": {"address": "203.0.113.9"}}
            if case == "other device":
                now = datetime.datetime.now(datetime.UTC)
                desired = sign_desired(load_signing_key(broker.pki.signing_key),
                                       DesiredConfig("TPE-SOMEONE-ELSE", 5, now, good))
                await asyncio.to_thread(back.publish, Topics(target).desired, desired, retain=True)
            else:
                await asyncio.to_thread(back.push_config, target, version, sections, key)
            topic = Topics(serial).reported
            report["last"] = await until(
                lambda: (r := back.latest(topic)) and r.get("state") == "rejected" and r, "refusal")
            report["max_amount"] = terminal.config.offline.max_amount
            back.publish(Topics(serial).desired, b"", retain=True)

    run_terminal(tmp_path, fleet_section(broker.pki, serial, broker.port), driver)
    assert why in report["last"]["reason"]
    assert report["max_amount"] == (3000 if case == "stale" else OfflineLimits().max_amount)


def test_a_device_cannot_touch_another_devices_tree(broker: MosquittoBroker) -> None:
    pki = broker.pki
    received: list[str] = []
    results: dict[str, Any] = {}

    async def scenario() -> None:
        a = FleetLink(fleet_config(pki, "TPE-ACL-A", broker.port), on_connected=lambda: None,
                      on_message=lambda topic, payload: received.append(topic))
        task = asyncio.ensure_future(a.run())
        try:
            await until(lambda: a.connected, "A connected")
            a.client.subscribe("tpe/TPE-ACL-B/#", qos=1)
            with office(broker) as back:
                info = a.client.publish("tpe/TPE-ACL-B/config/reported", b'{"forged": true}', qos=1,
                                        retain=True)
                await until(lambda: info.is_published() or info.rc != 0, "PUBACK")
                await asyncio.sleep(0.3)
                results["forged_seen"] = back.messages("tpe/TPE-ACL-B/config/reported")
                back.publish("tpe/TPE-ACL-B/telemetry", b'{"secret": 1}')
                back.publish("tpe/TPE-ACL-A/jobs/probe", b"")
                await asyncio.sleep(0.5)
        finally:
            await a.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert results["forged_seen"] == []  # the broker refused it (PUBACK "not authorized")
    assert not any(topic.startswith("tpe/TPE-ACL-B/") for topic in received)


def test_after_a_broker_restart_devices_come_back_spread_out(tmp_path: Path) -> None:
    pki = make_fleet_pki(tmp_path / "pki")
    own = MosquittoBroker(tmp_path / "broker", pki)
    own.start()
    count = 20
    back_at: dict[str, float] = {}

    async def scenario() -> None:
        swarm = Swarm([fleet_config(pki, f"TPE-STORM-{n:02d}", own.port, reconnect_max=8)
                       for n in range(count)])
        links = swarm.links
        swarm.start()
        try:
            await until(lambda: all(link.connected for link in links), "every device connected")
            own.stop()
            await until(lambda: not any(link.connected for link in links), "every device disconnected")
            down = asyncio.get_running_loop().time()
            own.start()
            while len(back_at) < count:
                for link in links:
                    if link.connections == 2 and link.config.serial not in back_at:
                        back_at[link.config.serial] = asyncio.get_running_loop().time() - down
                assert asyncio.get_running_loop().time() - down < 30, f"only {len(back_at)} came back"
                await asyncio.sleep(0.01)
        finally:
            await swarm.stop()
            own.stop()

    asyncio.run(scenario())
    times = sorted(back_at.values())
    # full jitter: the reconnections spread over the backoff window instead of one instant
    assert times[-1] - times[0] > 0.3 and statistics.pstdev(times) > 0.1, times
    assert len({round(t, 2) for t in times}) > count // 2, times


def test_sales_go_on_while_the_broker_is_away(tmp_path: Path, fleet_pki: Any) -> None:
    async def driver(terminal: Terminal) -> None:
        await until(lambda: terminal.reports and terminal.reports[-1].outcome is not None, "the sale", 30)
        assert terminal.fleet is not None and not terminal.fleet.link.connected

    terminal, _, entries = run_terminal(tmp_path, fleet_section(fleet_pki, "TPE-AWAY", free_port()), driver,
                                        sales=[{"amount": 1800, "pin": "1234"}])
    (report,) = terminal.reports
    assert report.payment is not None and report.payment["state"] == "approved"
    assert [e.amount for e in entries] == [1800]
    assert terminal.fleet is not None and terminal.fleet.link.attempt >= 1  # it kept trying


# --- jobs -------------------------------------------------------------------------------------------

def test_jobs_run_report_their_progress_and_run_once(tmp_path: Path, broker: MosquittoBroker,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # as `tpe run` logs
    serial = "TPE-JOBS"
    finals: dict[str, Any] = {}

    async def driver(terminal: Terminal) -> None:
        with office(broker) as back:
            await until(lambda: back.latest(Topics(serial).status), "status online")
            await until(lambda: terminal.reports and terminal.reports[-1].outcome is not None, "the sale")
            for kind in ("send_queue", "settlement", "upload_logs", "firmware_update"):
                job = await asyncio.to_thread(back.start_job, serial, kind)
                states: list[str] = []
                finals[kind] = await asyncio.to_thread(back.follow, serial, job, 30,
                                                       lambda s, states=states: states.append(s["state"]))
                finals[kind]["seen"] = states
                if kind == "upload_logs":
                    finals["logs"] = [json.loads(p) for p in back.messages(Topics(serial).job_logs(job))]
            again = "repeat-1"
            back.publish(Topics(serial).job(again), dumps({"id": again, "kind": "send_queue"}), retain=True)
            await asyncio.to_thread(back.follow, serial, again, 30)
            back.publish(Topics(serial).job(again), dumps({"id": again, "kind": "send_queue"}), retain=True)
            await asyncio.sleep(0.5)
            states = back.messages(Topics(serial).job_state(again))
            finals["repeat"] = [json.loads(payload)["state"] for payload in states]
            back.publish(Topics(serial).job(again), b"", retain=True)
            back.publish(Topics(serial).job("bad"), dumps({"id": "bad", "kind": "format_disk"}), retain=True)
            finals["bad"] = await until(lambda: back.latest(Topics(serial).job_state("bad")), "refusal")
            back.publish(Topics(serial).job("bad"), b"", retain=True)

    _, _, entries = run_terminal(tmp_path, fleet_section(broker.pki, serial, broker.port), driver,
                                 sales=[{"amount": 4200, "pin": "1234"}])
    sent = finals["send_queue"]
    assert sent["state"] == "succeeded" and sent["seen"][:2] == ["accepted", "running"]
    settled = finals["settlement"]
    assert settled["state"] == "succeeded" and settled["result"] == {"batch": 1, "result": "in_balance",
                                                                     "day_closed": True, "schemes": 1}
    assert finals["upload_logs"]["state"] == "succeeded" and finals["upload_logs"]["result"]["lines"] > 0
    lines = [line for chunk in finals["logs"] for line in chunk["lines"]]
    assert any("payment 1: approved" in line for line in lines) and not any(PAN in line for line in lines)
    update = finals["firmware_update"]
    assert update["state"] == "failed" and "no A/B slots" in update["detail"]  # a terminal not provisioned
    assert finals["repeat"].count("succeeded") == 1  # delivered twice, run once
    assert finals["bad"]["state"] == "rejected" and "kind" in finals["bad"]["detail"]
    assert entries[0].batch == 1  # the settlement closed the host's batch


def test_a_retained_desired_configuration_reaches_a_terminal_that_was_away(tmp_path: Path,
                                                                         broker: MosquittoBroker) -> None:
    serial = "TPE-LATE"
    with office(broker) as back:
        back.push_config(serial, 3, {"merchant": {"tips": True}}, broker.pki.signing_key)
    seen: dict[str, Any] = {}

    async def driver(terminal: Terminal) -> None:
        await until(lambda: terminal.fleet and terminal.fleet.reported["version"] == 3, "configuration 3")
        seen["tips"] = terminal.config.merchant.tips

    run_terminal(tmp_path, fleet_section(broker.pki, serial, broker.port), driver)
    assert seen["tips"] is True
    with office(broker) as back:
        back.publish(Topics(serial).desired, b"", retain=True)
