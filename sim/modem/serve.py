"""`tpe sim modem`: a simulated cellular module on a pty, driven from standard input.

Prints `ok modem <dialect> on <pty path>` when ready, then reads commands, one per line, each
answered with one line starting `ok` or `error`:

    rtt MS                       round-trip time of the radio (one way: MS/2)
    bandwidth KBIT|off           radio bandwidth each way, kbit/s (off: unlimited)
    signal DBM|none              received signal level (+CSQ)
    register home|roaming|denied|searching|none   what the network grants; leaving home or
                                 roaming takes the PDP context and the sockets down
    close-sockets                the network closes every open socket (+QIURC "closed" / +IPCLOSE)
    cme N next                   the next command line is answered +CME ERROR: N
    slow MS                      hold every command's answer back MS milliseconds (0: off)
    garbage [N]                  N random bytes on the line now (default 32)
    reboot                       restart: silence, then RDY and the other start-up URCs
    status                       conditions, registration, sockets and bytes on air
    quit                         stop

At the end of input the module keeps running until SIGTERM or SIGINT, which stop it cleanly.
"""

from __future__ import annotations

import asyncio
import math
import sys
from typing import Any, TextIO

from sim.control import say, serve_commands, stop_on_signals
from sim.modem.network import REGISTRATION_STAT, ConditionsError, NetworkConditions
from sim.modem.simulator import ModemSimulator, ModemSimulatorError, SimulatorStatus

EXIT_OK, EXIT_USAGE, EXIT_START = 0, 2, 3


class CommandError(Exception):
    """A command line that cannot be carried out; the message is the reason."""


def _number(word: str, what: str) -> float:
    try:
        value = float(word)
    except ValueError:
        raise CommandError(f"{what} is a number") from None
    if not math.isfinite(value):
        raise CommandError(f"{what} is a number")
    return value


def _integer(word: str, what: str) -> int:
    text = word[1:] if word.startswith("-") else word
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise CommandError(f"{what} is a whole number")
    return int(word)


def describe(status: SimulatorStatus) -> str:
    """The `ok status ...` line."""
    c = status.conditions
    sockets = ";".join(f"{s.socket_id}:{s.state}:{s.host}:{s.port}:up={s.up_bytes}:down={s.down_bytes}"
                       for s in status.sockets) or "none"
    bandwidth = "unlimited" if c.bandwidth_kbit is None else f"{c.bandwidth_kbit:g}"
    signal_dbm = "unknown" if c.signal_dbm is None else str(c.signal_dbm)
    return (f"ok status dialect={status.dialect} registration={status.registration} sim={status.sim} "
            f"radio={'on' if status.radio_on else 'off'} rebooting={'yes' if status.rebooting else 'no'} "
            f"rtt_ms={c.rtt_ms:g} bandwidth_kbit={bandwidth} signal_dbm={signal_dbm} "
            f"slow_ms={c.answer_delay_ms:g} commands={status.commands} up_bytes={status.up_bytes} "
            f"down_bytes={status.down_bytes} {status.detail} sockets={sockets}")


def execute(sim: ModemSimulator, words: list[str]) -> str:
    """Carry out one command on `sim`; the `ok ...` line, or `CommandError`."""
    command, args = words[0], words[1:]
    try:
        if command == "status" and not args:
            return describe(sim.status())
        if command == "rtt" and len(args) == 1:
            sim.set_rtt(_number(args[0], "the RTT"))
            return f"ok rtt {sim.conditions.rtt_ms:g}"
        if command == "bandwidth" and len(args) == 1:
            sim.set_bandwidth(None if args[0] == "off" else _number(args[0], "the bandwidth"))
            kbit = sim.conditions.bandwidth_kbit
            return f"ok bandwidth {'off' if kbit is None else format(kbit, 'g')}"
        if command == "signal" and len(args) == 1:
            sim.set_signal(None if args[0] == "none" else _integer(args[0], "the signal level"))
            return f"ok signal {args[0]}"
        if command == "register" and len(args) == 1:
            if args[0] not in REGISTRATION_STAT:
                raise CommandError(f"register {'|'.join(REGISTRATION_STAT)}")
            sim.set_registration(args[0])
            return f"ok register {args[0]}"
        if command == "close-sockets" and not args:
            return f"ok close-sockets {sim.close_sockets()}"
        if command == "cme" and len(args) in (1, 2) and args[1:] in ([], ["next"]):
            code = _integer(args[0], "the CME error code")
            sim.inject_cme(code)
            return f"ok cme {code} next"
        if command == "slow" and len(args) == 1:
            sim.set_slow(_number(args[0], "the answer delay"))
            return f"ok slow {sim.conditions.answer_delay_ms:g}"
        if command == "garbage" and len(args) <= 1:
            size = _integer(args[0], "the size") if args else 32
            return f"ok garbage {len(sim.garbage(size))}"
        if command == "reboot" and not args:
            sim.reboot()
            return "ok reboot"
    except (ConditionsError, ModemSimulatorError) as exc:
        raise CommandError(str(exc)) from None
    raise CommandError(f"unknown command: {' '.join(words)[:40]}")


async def _run(sim: ModemSimulator, stdin: TextIO, out: TextIO) -> int:
    stop = stop_on_signals()
    try:
        path = await sim.open()
    except OSError as exc:
        say(out, f"error cannot open a pty: {exc}")
        return EXIT_START
    try:
        say(out, f"ok modem {sim.dialect_name} on {path}")
        await serve_commands(stdin, out, stop, lambda words: execute(sim, words), (CommandError,))
    finally:
        await sim.close()
    say(out, "ok modem stopped")
    return EXIT_OK


def serve(dialect: str = "quectel", *, pin: str | None = None, conditions: dict[str, Any] | None = None,
          reboot_seconds: float = 1.0, seed: int | None = None, stdin: TextIO | None = None,
          stdout: TextIO | None = None) -> int:
    """Run the simulator until `quit`, SIGTERM or SIGINT; `conditions` are NetworkConditions fields."""
    out = stdout or sys.stdout
    try:
        sim = ModemSimulator(dialect, NetworkConditions(**(conditions or {})), pin=pin,
                             reboot_seconds=reboot_seconds, seed=seed)
    except (ConditionsError, ModemSimulatorError, TypeError) as exc:
        say(out, f"error {exc}")
        return EXIT_USAGE
    return asyncio.run(_run(sim, stdin or sys.stdin, out))
