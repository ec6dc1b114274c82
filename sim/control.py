"""The stdin control loop the long-running simulators share (`tpe sim host`, `tpe sim modem`):
one command per line, one `ok ...` or `error ...` line back, `quit`, SIGTERM or SIGINT to stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from typing import TextIO


def say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (where the loop can take signal handlers)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def _read_lines(stdin: TextIO, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    for line in stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line)
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def serve_commands(stdin: TextIO, out: TextIO, stop: asyncio.Event,
                         execute: Callable[[list[str]], str], errors: tuple[type[Exception], ...]) -> None:
    """Answer each line of `stdin` with `execute(words)` until `quit` or `stop`; at the end of
    input, wait for `stop`. An exception of `errors` is answered `error <reason>`."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    # A daemon thread: a read blocked on a terminal never holds the process at exit.
    threading.Thread(target=_read_lines, args=(stdin, loop, lines), daemon=True).start()
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            reading = asyncio.ensure_future(lines.get())
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                reading.cancel()
                break
            line = reading.result()
            if line is None:  # end of input: serve until a signal
                await stopping
                break
            words = line.split()
            if not words:
                continue
            if words == ["quit"]:
                break
            try:
                say(out, execute(words))
            except errors as exc:
                say(out, f"error {exc}")
    finally:
        stopping.cancel()
