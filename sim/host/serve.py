"""`tpe sim host`: the host simulator on a TCP port, driven from standard input.

Commands, one per line, each answered with one line starting `ok` or `error`:

    status                       connections, frames, faults, scripts
    delay SECONDS                hold every answer back (0: off)
    drop|close|garbage|badmac [N]  the next N answers (default 1): see sim/host/faults.py
    decline N CODE               the next N authorizations decline with CODE
    clear                        no fault armed
    script put TAG HEX           issuer script: PUT DATA of TAG with approvals (repeatable)
    script block                 issuer script: APPLICATION BLOCK with approvals
    script template 71|72        which template carries the script (default 72)
    script clear                 no script
    block PROFILE | unblock PROFILE   the accounts of a simulator profile's cards
    balance PROFILE [AMOUNT]     show, or set, the available balance (minor units)
    quit                         stop

At the end of input the host keeps serving until SIGTERM or SIGINT, which stop it cleanly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import TextIO

from sim.card.issuer import SCRIPT_TEMPLATES, IssuerScripts
from sim.card.profile import ProfileError
from sim.control import say, serve_commands, stop_on_signals
from sim.host.accounts import AccountError, AccountRules
from sim.host.faults import FaultError, ResponseFault
from sim.host.keys import KeyFileError
from sim.host.ledger import Ledger, LedgerError
from sim.host.server import HostError, HostSimulator

EXIT_OK, EXIT_USAGE, EXIT_START = 0, 2, 3
_FAULT_WORDS = {"drop": ResponseFault.DROP, "close": ResponseFault.CLOSE, "garbage": ResponseFault.GARBAGE,
                "badmac": ResponseFault.BAD_MAC}


class CommandError(Exception):
    """A command line that cannot be carried out; the message is the reason."""


def _integer(word: str, what: str) -> int:
    if not (word.isascii() and word.isdigit()):
        raise CommandError(f"{what} is a whole number")
    return int(word)


def execute(host: HostSimulator, words: list[str]) -> str:
    """Carry out one command on `host`; the `ok ...` line, or `CommandError`."""
    command, args = words[0], words[1:]
    try:
        if command == "status":
            scripts = "none" if host.scripts.empty else (
                f"{host.scripts.template:02X} put={len(host.scripts.put_data)} block={host.scripts.block}")
            return f"ok status {host.stats.describe()} open={host.connections} {host.faults.describe()} " \
                   f"scripts={scripts}"
        if command == "delay" and len(args) == 1:
            try:
                seconds = float(args[0])
            except ValueError:
                raise CommandError("a delay is a number of seconds") from None
            host.faults.set_delay(seconds)
            return f"ok delay {host.faults.delay:g}"
        if command in _FAULT_WORDS and len(args) <= 1:
            count = _integer(args[0], "the count") if args else 1
            host.faults.arm(_FAULT_WORDS[command], count)
            return f"ok {command} {count}"
        if command == "decline" and len(args) == 2:
            host.faults.decline_next(_integer(args[0], "the count"), args[1])
            return f"ok decline {args[0]} {args[1]}"
        if command == "clear" and not args:
            host.faults.clear()
            return "ok clear"
        if command == "script" and args:
            host.scripts = _script(host.scripts, args)
            return f"ok script {' '.join(args[:1])}"
        if command in ("block", "unblock") and len(args) == 1:
            host.accounts.block(args[0], command == "block")
            return f"ok {command} {args[0]}"
        if command == "balance" and len(args) in (1, 2):
            if len(args) == 2:
                host.accounts.set_balance(args[0], _integer(args[1], "the amount"))
            return f"ok balance {args[0]} {host.accounts.balance(args[0])}"
    except (FaultError, AccountError) as exc:
        raise CommandError(str(exc)) from None
    raise CommandError(f"unknown command: {' '.join(words)[:40]}")


def _script(scripts: IssuerScripts, args: list[str]) -> IssuerScripts:
    if args == ["clear"]:
        return IssuerScripts()
    if args == ["block"]:
        return dataclasses.replace(scripts, block=True)
    if len(args) == 2 and args[0] == "template":
        template = int(args[1], 16) if args[1] in ("71", "72") else 0
        if template not in SCRIPT_TEMPLATES:
            raise CommandError("the template is 71 or 72")
        return dataclasses.replace(scripts, template=template)
    if len(args) == 3 and args[0] == "put":
        try:
            tag, value = int(args[1], 16), bytes.fromhex(args[2])
        except ValueError:
            raise CommandError("script put TAG HEX: tag and value in hexadecimal") from None
        if not 0x01 <= tag <= 0xFFFF:
            raise CommandError("a PUT DATA tag fits in 2 bytes")
        return dataclasses.replace(scripts, put_data={**scripts.put_data, tag: value})
    raise CommandError("script put TAG HEX | script block | script template 71|72 | script clear")


async def _run(host: HostSimulator, stdin: TextIO, out: TextIO) -> int:
    stop = stop_on_signals()
    try:
        await host.start()
    except HostError as exc:
        say(out, f"error {exc}")
        return EXIT_START
    try:
        say(out, f"ok host listening on {host.host}:{host.port}")
        await serve_commands(stdin, out, stop, lambda words: execute(host, words), (CommandError,))
    finally:
        await host.stop()
    say(out, "ok host stopped")
    return EXIT_OK


def serve(listen: str, pki_dir: Path, ledger: Path | None = None, *, rules: AccountRules | None = None,
          stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Run the host simulator on `listen` (HOST:PORT) until `quit`, SIGTERM or SIGINT."""
    out = stdout or sys.stdout
    address, _, port_text = listen.rpartition(":")
    if not address or not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 0xFFFF:
        say(out, "error --listen is HOST:PORT")
        return EXIT_USAGE
    try:
        host = HostSimulator(pki_dir, host=address.strip("[]"), port=int(port_text), ledger=ledger,
                             rules=rules)
    except (HostError, KeyFileError, LedgerError, AccountError, ProfileError, OSError) as exc:
        say(out, f"error {exc}")
        return EXIT_START
    return asyncio.run(_run(host, stdin or sys.stdin, out))


def print_ledger(path: Path, *, as_json: bool, out: TextIO | None = None) -> int:
    """`tpe sim host ledger`: the entries of a ledger file, as text or JSON."""
    out = out or sys.stdout
    if not path.is_file():
        say(out, f"error {path}: no such ledger")
        return EXIT_USAGE
    try:
        with Ledger(path) as ledger:
            entries = ledger.entries()
    except LedgerError as exc:
        say(out, f"error {exc}")
        return EXIT_USAGE
    if as_json:
        out.write(json.dumps([entry.as_dict() for entry in entries], indent=2) + "\n")
        return EXIT_OK
    for e in entries:
        flags = "".join(flag for flag, on in (("R", e.reversed), ("A", e.advice)) if on) or "-"
        out.write(f"{e.id:5d} {e.created_at} {e.terminal_id:8} {e.mti} STAN {e.stan} {e.processing_code} "
                  f"{e.amount:>10d} {e.currency:03d} {e.pan_masked or '-':19} {e.response_code} "
                  f"{e.rrn} {e.approval_code or '-':6} {flags}\n")
    out.flush()
    return EXIT_OK
