"""`tpe sim card serve`: a simulated card in pcscd's virtual reader, driven from standard input.

Commands, one per line: `insert`, `remove`, `profile NAME` (swap the card, as a new one),
`status`, `quit`. Each is answered with one line starting `ok` or `error`, so a script or a
test can wait for it. At the end of input the card stays served until SIGTERM or SIGINT.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import TextIO

from sim.card.card import SimCard
from sim.card.profile import ProfileError, load_profile
from sim.vpcd import Timing, VirtualCardLink, VpcdError

SWAP_SECONDS = 1.0


class _Stopped(Exception):
    """SIGTERM or SIGINT arrived."""


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


def serve(profile: str, host: str = "127.0.0.1", port: int = 35963, timing: bool = False,
          inserted: bool = True, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    try:
        card = SimCard(load_profile(profile))
    except ProfileError as exc:
        _say(out, f"error profile: {exc}")
        return 2
    link = VirtualCardLink(card, host, port, Timing() if timing else None)
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        # A blocking read of stdin is resumed after a handler (PEP 475): raise to leave it.
        stop.set()
        raise _Stopped

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        if inserted:
            link.insert()
        _say(out, f"ok serving {card.profile.name} ({card.protocol}) on vpcd {host}:{port}, "
                  f"card {'inserted' if link.inserted else 'removed'}")
        for raw in stdin:
            if stop.is_set():
                break
            words = raw.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            if words[0] == "insert":
                link.insert()
                _say(out, "ok inserted")
            elif words[0] == "remove":
                link.remove()
                _say(out, "ok removed")
            elif words[0] == "status":
                _say(out, f"ok {card.profile.name} {'inserted' if link.inserted else 'removed'} "
                          f"exchanges={link.exchanges}")
            elif words[0] == "profile" and len(words) == 2:
                try:
                    new_card = SimCard(load_profile(words[1]))
                except ProfileError as exc:
                    _say(out, f"error profile: {exc}")
                    continue
                was_inserted = link.inserted
                link.remove()
                if was_inserted:
                    # Like a hand swapping cards: pcscd polls presence every 0.4 s and must see
                    # the reader empty, or a reader still reporting the old card races the new.
                    time.sleep(SWAP_SECONDS)
                card = new_card
                link = VirtualCardLink(card, host, port, Timing() if timing else None)
                if was_inserted:
                    link.insert()
                _say(out, f"ok profile {card.profile.name}")
            else:
                _say(out, f"error unknown command: {raw.strip()[:40]}")
        else:
            stop.wait()
    except _Stopped:
        pass
    except VpcdError as exc:
        _say(out, f"error vpcd: {exc}")
        return 3
    finally:
        link.remove()
    return 0
