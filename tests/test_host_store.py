"""The host link's durable state: STAN, secret state, reversals (real SQLite, real process kill)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from firmware.host_store import MAX_STAN, HostStore, HostStoreError


def test_stan_counts_from_one_and_survives_reopening(tmp_path: Path) -> None:
    store = HostStore(tmp_path / "host.db")
    assert [store.next_stan() for _ in range(3)] == [1, 2, 3]
    store.close()
    assert HostStore(tmp_path / "host.db").next_stan() == 4


def test_stan_wraps_after_999999(tmp_path: Path) -> None:
    store = HostStore(tmp_path / "host.db")
    store.next_stan()
    store._db.execute("UPDATE counter SET value = ? WHERE name = 'stan'", (MAX_STAN - 1,))
    assert [store.next_stan() for _ in range(3)] == [MAX_STAN, 1, 2]


def test_stans_from_threads_are_unique(tmp_path: Path) -> None:
    store = HostStore(tmp_path / "host.db")
    got: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(200):
            stan = store.next_stan()
            with lock:
                got.append(stan)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 801))


def test_a_killed_process_never_hands_out_a_stan_twice(tmp_path: Path) -> None:
    db = tmp_path / "host.db"
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from firmware.host_store import HostStore\n"
         f"s = HostStore(Path({str(db)!r}))\n"
         "while True:\n    print(s.next_stan(), flush=True)\n"],
        stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    seen = [int(child.stdout.readline()) for _ in range(50)]
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    # Every STAN printed was committed before it was printed: the next one is new.
    assert HostStore(db).next_stan() > seen[-1]


def test_secret_state_round_trip(tmp_path: Path) -> None:
    store = HostStore(tmp_path / "host.db")
    assert store.load_secret_state("dukpt") is None
    store.save_secret_state("dukpt", b"\x01\x02")
    store.save_secret_state("dukpt", b"\x03")
    assert store.load_secret_state("dukpt") == b"\x03"


def test_secret_state_is_sealed_on_disk(tmp_path: Path) -> None:
    secret = bytes(range(64))  # stands for DUKPT registers: recognisable if written in clear
    store = HostStore(tmp_path / "host.db")
    store.save_secret_state("dukpt", secret)
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("host.db*"))
    assert secret not in raw and secret[:16] not in raw
    assert HostStore(tmp_path / "host.db").load_secret_state("dukpt") == secret


def test_tampered_secret_state_is_a_typed_error(tmp_path: Path) -> None:
    store = HostStore(tmp_path / "host.db")
    store.save_secret_state("dukpt", b"registers")
    (sealed,) = store._db.execute("SELECT value FROM secret_state").fetchone()
    store._db.execute("UPDATE secret_state SET value = ?", (bytes(sealed[:-1]) + bytes([sealed[-1] ^ 1]),))
    with pytest.raises(HostStoreError, match="does not open"):
        store.load_secret_state("dukpt")


def test_unusable_path_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(HostStoreError):
        HostStore(tmp_path / "file" / "host.db")
