"""The store-and-forward queue on real SQLite files: sealing, order, repeats, figures, damaged
files, a killed process."""

from __future__ import annotations

import datetime
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.keystore import Keystore
from firmware.saf_queue import FILE_NAME, SafDamagedError, SafItemError, SafQueue, SafQueueError

PAN = "4761739001010119"  # Visa test card PAN (public test data)
TRACK2 = "4761739001010119D22122011143804400000"
T0 = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)


def _queue(folder: Path) -> SafQueue:
    return SafQueue(folder / FILE_NAME, Keystore.open(folder))


def _advice(stan: int = 1) -> dict[str, Any]:
    return {"t": "0220", "2": PAN, "11": f"{stan:06d}", "35": TRACK2, "39": "Y3", "4": "000000001250"}


def _at(minutes: int) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def test_no_pan_or_track2_in_clear_on_disk(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    for stan in range(1, 4):
        queue.add("advice", _advice(stan), amount=1250, currency=978, created=_at(stan))
    raw_while_open = b"".join(p.read_bytes() for p in tmp_path.glob(FILE_NAME + "*"))
    queue.close()  # checkpoints the WAL into the main file
    raw_closed = (tmp_path / FILE_NAME).read_bytes()
    for raw in (raw_while_open, raw_closed):
        assert b"advice" in raw  # the clear columns are there: we are looking at the right bytes
        assert PAN.encode() not in raw and PAN[-10:].encode() not in raw
        assert bytes.fromhex(PAN) not in raw and TRACK2.encode() not in raw
    (item,) = _queue(tmp_path).pending(1)
    assert item.payload == _advice(1)
    assert PAN not in repr(item) and TRACK2 not in repr(item)


def test_order_repeats_and_settlement(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    first = queue.add("advice", _advice(1), amount=1000, currency=978, created=_at(0))
    second = queue.add("reversal", {"t": "0400", "11": "000002"}, amount=500, currency=978, created=_at(1))
    third = queue.add("advice", _advice(3), amount=700, currency=840, created=_at(2))
    assert [i.id for i in queue.pending(10)] == [first, second, third]
    assert [i.id for i in queue.pending(2)] == [first, second]
    assert not any(i.repeat for i in queue.pending(10))
    queue.mark_sent(first)
    queue.close()
    queue = _queue(tmp_path)
    items = {i.id: i for i in queue.pending(10)}
    assert items[first].repeat and items[first].attempts == 1
    assert not items[second].repeat
    assert items[second].kind == "reversal" and items[second].payload == {"t": "0400", "11": "000002"}
    queue.mark_answered(first, "00", _at(5))
    queue.mark_refused(third, "05", _at(6))
    assert [i.id for i in queue.pending(10)] == [second]
    (declined,) = queue.declined_after_the_fact()
    assert (declined.id, declined.code, declined.settled_at) == (third, "05", _at(6))
    assert declined.payload == _advice(3)
    for settled in (first, third):
        with pytest.raises(SafQueueError, match=str(settled)):
            queue.mark_sent(settled)
    with pytest.raises(SafQueueError):
        queue.mark_answered(999, "00", _at(7))


def test_status_figures(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    assert queue.status().count == 0 and queue.status().oldest_created is None
    paris = datetime.timezone(datetime.timedelta(hours=1))
    a = queue.add("advice", _advice(1), amount=1250, currency=978, created=_at(30))
    queue.add("advice", _advice(2), amount=99, currency=978, created=_at(40).astimezone(paris))
    queue.add("advice", _advice(3), amount=500, currency=840, created=_at(50))
    queue.add("reversal", {"11": "000004"}, amount=4000, currency=978, created=_at(10))
    status = queue.status()
    assert status.count == 4
    assert status.amount_per_currency == {978: 1250 + 99, 840: 500}  # reversals return no money
    assert status.oldest_created == _at(10)
    queue.mark_answered(a, "00", _at(60))
    assert queue.status().amount_per_currency == {978: 99, 840: 500}
    assert queue.status().count == 3


def test_bad_arguments_are_typed_errors(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    good: dict[str, Any] = {"amount": 1, "currency": 978, "created": T0}
    with pytest.raises(SafQueueError):
        queue.add("sale", {}, **good)  # type: ignore[arg-type]
    for payload in ({"x": float("nan")}, {1: "int key"}, {"x": (1, 2)}, {"x": b"bytes"}, [1]):
        with pytest.raises(SafQueueError):
            queue.add("advice", payload, **good)  # type: ignore[arg-type]
    with pytest.raises(SafQueueError, match="time zone"):
        queue.add("advice", {}, amount=1, currency=978, created=datetime.datetime(2026, 1, 1))
    for amount, currency in ((-1, 978), (1.5, 978), (1, 0), (1, 1000)):
        with pytest.raises(SafQueueError):
            queue.add("advice", {}, amount=amount, currency=currency, created=T0)  # type: ignore[arg-type]
    assert queue.pending() == []


def test_a_tampered_item_names_its_id_and_the_others_still_open(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    ids = [queue.add("advice", _advice(n), amount=100 * n, currency=978, created=_at(n)) for n in (1, 2, 3)]
    queue.close()
    db = sqlite3.connect(tmp_path / FILE_NAME)
    (sealed,) = db.execute("SELECT sealed FROM item WHERE id = ?", (ids[1],)).fetchone()
    flipped = bytearray(sealed)
    flipped[len(flipped) // 2] ^= 0x01
    db.execute("UPDATE item SET sealed = ? WHERE id = ?", (bytes(flipped), ids[1]))
    db.execute("UPDATE item SET amount = 1 WHERE id = ?", (ids[2],))  # a clear figure changed
    db.commit()
    db.close()
    first, second, third = _queue(tmp_path).pending(10)
    assert first.payload == _advice(1)
    for damaged in (second, third):
        with pytest.raises(SafItemError, match=f"item {damaged.id}") as caught:
            damaged.payload  # noqa: B018 - opening is the test
        assert caught.value.item_id == damaged.id and PAN not in str(caught.value)


def test_an_item_moved_to_another_row_does_not_open(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    a = queue.add("advice", _advice(1), amount=100, currency=978, created=T0)
    b = queue.add("advice", _advice(2), amount=100, currency=978, created=T0)
    queue.close()
    db = sqlite3.connect(tmp_path / FILE_NAME)
    db.execute("UPDATE item SET sealed = (SELECT sealed FROM item WHERE id = ?) WHERE id = ?", (a, b))
    db.commit()
    db.close()
    with pytest.raises(SafItemError):
        _queue(tmp_path).pending(10)[1].payload  # noqa: B018


def _filled(folder: Path, items: int = 200) -> Path:
    queue = _queue(folder)
    for n in range(items):
        queue.add("advice", _advice(n), amount=n, currency=978, created=_at(n))
    queue.close()
    return folder / FILE_NAME


def _damage_header(data: bytes) -> bytes:
    return b"SQLite format 2\x00" + data[16:]


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garbage(data: bytes) -> bytes:
    return bytes((i * 167 + 13) % 256 for i in range(len(data)))


def _page_size_zeroed(data: bytes) -> bytes:
    return data[:16] + b"\x00\x03" + data[18:]  # page size 3: not a power of two


def _page_wiped(data: bytes) -> bytes:
    page = int.from_bytes(data[16:18], "big")
    middle = (len(data) // page // 2) * page
    return data[:middle] + b"\xff" * page + data[middle + page:]  # a b-tree page in the middle


@pytest.mark.parametrize("damage", [_damage_header, _truncate, _garbage, _page_size_zeroed, _page_wiped])
def test_a_damaged_file_is_refused_and_kept_aside(tmp_path: Path, damage: Any) -> None:
    path = _filled(tmp_path)
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)
    with pytest.raises(SafDamagedError) as caught:
        _queue(tmp_path)
    assert str(path) in str(caught.value)
    moved = caught.value.moved_to
    assert moved.name.startswith(FILE_NAME + ".damaged-") and moved.read_bytes() == damaged
    assert not path.exists()  # not replaced behind the caller's back
    # Once set aside, the terminal can start a new, empty queue; the damaged copy stays.
    assert _queue(tmp_path).pending() == [] and moved.exists()


def test_a_missing_folder_is_created_and_an_unusable_path_is_a_typed_error(tmp_path: Path) -> None:
    keystore = Keystore.open(tmp_path)
    SafQueue(tmp_path / "a" / "b" / FILE_NAME, keystore).close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(SafQueueError):
        SafQueue(tmp_path / "file" / FILE_NAME, keystore)


def test_a_killed_process_loses_no_item_it_reported(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import datetime; from pathlib import Path\n"
         "from firmware.keystore import Keystore\nfrom firmware.saf_queue import SafQueue\n"
         f"folder = Path({str(tmp_path)!r})\n"
         "q = SafQueue(folder / 'saf.sqlite3', Keystore.open(folder))\n"
         "at = datetime.datetime(2026, 11, 26, tzinfo=datetime.UTC)\n"
         "n = 0\n"
         "while True:\n"
         "    n += 1\n"
         "    print(q.add('advice', {'n': n}, amount=n, currency=978, created=at), flush=True)\n"],
        stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    seen = [int(child.stdout.readline()) for _ in range(40)]
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    items = {i.id: i for i in _queue(tmp_path).pending(10_000)}
    for item_id in seen:
        assert items[item_id].payload == {"n": seen.index(item_id) + 1}


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.dictionaries(st.text(), _JSON, max_size=6), kind=st.sampled_from(["advice", "reversal"]))
def test_any_json_payload_round_trips(tmp_path: Path, payload: dict[str, Any], kind: str) -> None:
    queue = _SHARED.get(tmp_path) or _SHARED.setdefault(tmp_path, _queue(tmp_path))
    item_id = queue.add(kind, payload, amount=1, currency=978, created=T0)  # type: ignore[arg-type]
    (item,) = [i for i in queue.pending(1000) if i.id == item_id]
    assert item.kind == kind and item.payload == payload
    queue.mark_answered(item_id, "00", T0)


_SHARED: dict[Path, SafQueue] = {}
