"""`tpe sim broker`: mosquitto with the fleet's TEST PKI, for the demo and a technician's bench.
Prints `ok broker listening on 127.0.0.1:PORT (pki DIR)` when ready and runs until standard
input closes, `quit` is read, or SIGTERM; then stops the broker it started."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from sim.fleet.broker import BrokerError, MosquittoBroker
from sim.fleet.pki import make_fleet_pki


def serve(folder: Path, port: int = 0) -> int:
    pki = make_fleet_pki(folder / "pki")
    broker = MosquittoBroker(folder / "broker", pki, port)
    try:
        broker.start()
    except BrokerError as exc:
        print(f"error {exc}", flush=True)
        return 3
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    print(f"ok broker listening on 127.0.0.1:{broker.port} (pki {pki.folder})", flush=True)

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "quit":
                break
        done.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0
