"""`tpe fleet`: the back office on the command line (docs/fleet-protocol.md).

    tpe fleet --broker HOST:PORT --ca CA.pem --cert OFFICE.pem --key OFFICE-KEY.pem COMMAND
      list                              every terminal's status (retained on the broker)
      show SERIAL                       its latest telemetry and configuration report
      config push SERIAL FILE --version N --signing-key FLEET-KEY.pem
                                        sign FILE's sections ([offline], [merchant], [receipt],
                                        [printer]) and wait for the terminal's report
      job start SERIAL KIND [--follow]  settlement, send_queue, upload_logs, firmware_update
      job follow SERIAL ID              its states until the last

Exit status: 0 done; 2 bad arguments or file; 7 no answer in time (the terminal may be away:
what was pushed waits on the broker); 8 refused or failed on the terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from firmware.fleet_config import REMOTE_SECTIONS
from firmware.fleet_protocol import JOB_KINDS, FleetProtocolError, Topics, check_serial
from provisioning.fleet_office import BackOffice, OfficeError, OfficeTimeout

EXIT_OK, EXIT_USAGE, EXIT_WAITING, EXIT_REFUSED = 0, 2, 7, 8


def add_parser(sub: Any) -> None:
    fleet = sub.add_parser("fleet", help="the back office: terminals' status, remote configuration, jobs",
                           description=__doc__.splitlines()[0])
    fleet.add_argument("--broker", required=True, help="HOST:PORT of the MQTT broker")
    fleet.add_argument("--ca", required=True, type=Path, help="the broker's CA certificate (PEM)")
    fleet.add_argument("--cert", required=True, type=Path, help="the back office's certificate (PEM)")
    fleet.add_argument("--key", required=True, type=Path, help="the back office's key (PEM)")
    fleet.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a terminal's answer")
    fleet.add_argument("--json", action="store_true", help="machine-readable output")
    commands = fleet.add_subparsers(dest="fleet_cmd", required=True)
    commands.add_parser("list", help="every terminal's status").set_defaults(func=_list)
    show = commands.add_parser("show", help="a terminal's telemetry and configuration report")
    show.add_argument("serial")
    show.set_defaults(func=_show)
    config = commands.add_parser("config", help="remote configuration").add_subparsers(dest="config_cmd",
                                                                                     required=True)
    push = config.add_parser("push", help="sign and push sections of the terminal's configuration")
    push.add_argument("serial")
    push.add_argument("file", type=Path, help=f"TOML with the sections to set ({', '.join(REMOTE_SECTIONS)})")
    push.add_argument("--version", type=int, required=True, help="larger than the one in force")
    push.add_argument("--signing-key", type=Path, required=True, help="the fleet key (PEM, kept off devices)")
    push.set_defaults(func=_push)
    job = commands.add_parser("job", help="jobs").add_subparsers(dest="job_cmd", required=True)
    start = job.add_parser("start", help="start a job on a terminal")
    start.add_argument("serial")
    start.add_argument("kind", choices=JOB_KINDS)
    start.add_argument("--follow", action="store_true", help="wait for its end")
    start.set_defaults(func=_start)
    follow = job.add_parser("follow", help="a job's states until its end")
    follow.add_argument("serial")
    follow.add_argument("id")
    follow.set_defaults(func=_follow)


def _office(args: argparse.Namespace) -> BackOffice:
    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit():
        raise OfficeError(f"--broker {args.broker!r}: write HOST:PORT")
    return BackOffice(host, int(port), ca_file=args.ca, cert_file=args.cert, key_file=args.key)


def _out(args: argparse.Namespace, value: Any, text: str) -> None:
    print(json.dumps(value, sort_keys=True) if args.json else text)


def _run(args: argparse.Namespace, body: Any) -> int:
    try:
        if getattr(args, "serial", None) is not None:
            check_serial(args.serial)
        with _office(args) as office:
            return int(body(office))
    except FleetProtocolError as exc:
        print(f"tpe fleet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OfficeError as exc:
        print(f"tpe fleet: {exc}", file=sys.stderr)
        return EXIT_WAITING if isinstance(exc, OfficeTimeout) else EXIT_USAGE
    except (OSError, ValueError) as exc:
        print(f"tpe fleet: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _list(args: argparse.Namespace) -> int:
    def body(office: BackOffice) -> int:
        devices = office.devices()
        lines = [f"{serial:<24} {status.get('state', '?'):<8} {status.get('version', '')}"
                 for serial, status in devices.items()]
        _out(args, devices, "\n".join(lines) if lines else "no terminal has reported yet")
        return EXIT_OK

    return _run(args, body)


def _show(args: argparse.Namespace) -> int:
    def body(office: BackOffice) -> int:
        topics = Topics(args.serial)
        telemetry = office.telemetry(args.serial, timeout=args.timeout)
        report = office.latest(topics.reported)
        status = office.latest(topics.status)
        value = {"status": status, "telemetry": telemetry, "config": report}
        _out(args, value, "\n".join(f"{key:<16} {json.dumps(item, sort_keys=True)}" for key, item in
                                    [("status", status), *sorted(telemetry.items()), ("config", report)]))
        return EXIT_OK

    return _run(args, body)


def _push(args: argparse.Namespace) -> int:
    try:
        sections = tomllib.loads(args.file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        print(f"tpe fleet: {args.file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    foreign = sorted(set(sections) - set(REMOTE_SECTIONS))
    if foreign or not sections:
        print(f"tpe fleet: {args.file}: only [{'], ['.join(REMOTE_SECTIONS)}] can be pushed", file=sys.stderr)
        return EXIT_USAGE

    def body(office: BackOffice) -> int:
        digest = office.push_config(args.serial, args.version, sections, args.signing_key)
        report = office.reported(args.serial, digest, timeout=args.timeout)
        applied = report.get("state") == "applied" and report.get("version") == args.version
        _out(args, report, f"configuration {args.version} on {args.serial}: "
                           + ("applied" if applied else f"REFUSED: {report.get('reason')}"))
        return EXIT_OK if applied else EXIT_REFUSED

    return _run(args, body)


def _states(args: argparse.Namespace, office: BackOffice, job_id: str) -> int:
    def shown(state: dict[str, Any]) -> None:
        if not args.json:
            progress = f" {state['progress']}%" if state.get("progress") is not None else ""
            detail = f": {state['detail']}" if state.get("detail") else ""
            print(f"{job_id} {state.get('state')}{progress}{detail}", flush=True)

    final = office.follow(args.serial, job_id, timeout=args.timeout, on_state=shown)
    if args.json:
        print(json.dumps(final, sort_keys=True))
    elif final.get("result"):
        print(json.dumps(final["result"], sort_keys=True))
    return EXIT_OK if final.get("state") == "succeeded" else EXIT_REFUSED


def _start(args: argparse.Namespace) -> int:
    def body(office: BackOffice) -> int:
        job_id = office.start_job(args.serial, args.kind)
        if not args.follow:
            _out(args, {"id": job_id}, job_id)
            return EXIT_OK
        return _states(args, office, job_id)

    return _run(args, body)


def _follow(args: argparse.Namespace) -> int:
    return _run(args, lambda office: _states(args, office, args.id))
