"""`tpe sim broker` and `tpe fleet` as a technician runs them, against `tpe run` in its own
process: list, show, a configuration pushed and refused, a job followed to its end. TEST KEYS."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from fleet_rig import fleet_section
from sim_processes import ROOT, TPE, SimProcess, write_config

from sim.fleet.broker import free_port
from sim.fleet.pki import BACK_OFFICE, make_fleet_pki
from sim.host.server import load_or_make_pki


def test_the_back_office_on_the_command_line(tmp_path: Path) -> None:
    broker = SimProcess(["broker", "--folder", str(tmp_path / "fleet")], "ok broker listening on ")
    terminal = None
    try:
        port = int(broker.banner.split("127.0.0.1:")[1].split()[0])
        pki = make_fleet_pki(tmp_path / "fleet" / "pki")  # the same TEST PKI the broker made
        cert, key = pki.client(BACK_OFFICE)
        fleet = [*TPE, "fleet", "--broker", f"127.0.0.1:{port}", "--ca", str(pki.ca_cert),
                 "--cert", str(cert), "--key", str(key), "--timeout", "20"]
        config = write_config(tmp_path, free_port(), load_or_make_pki(tmp_path / "pki"),
                              fleet_section(pki, "TPE-CLI", port))
        script = tmp_path / "wait.toml"
        script.write_text('then = "wait"\n')
        env = {**os.environ, "PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd")}
        terminal = subprocess.Popen([*TPE, "run", "--config", str(config), "--script", str(script)], cwd=ROOT,
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def tpe_fleet(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*fleet, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)

        shown = tpe_fleet("--json", "show", "TPE-CLI")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["telemetry"]["serial"] == "TPE-CLI"
        listed = tpe_fleet("list")
        assert listed.returncode == 0 and "TPE-CLI" in listed.stdout and "online" in listed.stdout
        sections = tmp_path / "remote.toml"
        sections.write_text("[offline]\nenabled = true\nmax_amount = 4200\n")
        pushed = tpe_fleet("config", "push", "TPE-CLI", str(sections), "--version", "1",
                           "--signing-key", str(pki.signing_key))
        assert pushed.returncode == 0 and "configuration 1 on TPE-CLI: applied" in pushed.stdout, pushed
        again = tpe_fleet("config", "push", "TPE-CLI", str(sections), "--version", "1",
                          "--signing-key", str(pki.signing_key))
        assert again.returncode == 8 and "REFUSED" in again.stdout and "not newer" in again.stdout
        sections.write_text('[host]\naddress = "203.0.113.1"\n')
        foreign = tpe_fleet("config", "push", "TPE-CLI", str(sections), "--version", "2",
                            "--signing-key", str(pki.signing_key))
        assert foreign.returncode == 2 and "can be pushed" in foreign.stderr
        job = tpe_fleet("job", "start", "TPE-CLI", "upload_logs", "--follow")
        assert job.returncode == 0, job
        assert " accepted" in job.stdout and " succeeded 100%" in job.stdout and '"lines"' in job.stdout
        refused = tpe_fleet("job", "start", "TPE-CLI", "firmware_update", "--follow")
        assert refused.returncode == 8 and " failed: this terminal runs from no A/B slots" in refused.stdout
    finally:
        if terminal is not None:
            terminal.terminate()
            terminal.wait(20)
        broker.stop()
    nobody = subprocess.run([*fleet[:5], "127.0.0.1:1", *fleet[6:], "list"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert nobody.returncode == 2 and "no broker" in nobody.stderr
