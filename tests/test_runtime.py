"""`tpe run` without a card: systemd notifications on a real AF_UNIX datagram socket, SIGTERM
while idle, configuration and script errors, the log filter, the status bar's figures.
TEST KEYS only (the packaged configuration's simulator DUKPT key)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware import logs, runtime
from firmware.config import load_config
from firmware.reader import CardTimeoutError, NoServiceError
from firmware.sd_notify import Notifier
from firmware.ui_script import ScriptedUi, ScriptError, load_script, parse_script
from ui.contract import AskAmount, AskCancel, Error, Idle, Money, PresentCard

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "firmware" / "defaults" / "terminal.toml"
TPE = [sys.executable, "-m", "firmware.cli"]


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "terminal.toml"
    path.write_text(DEFAULT_CONFIG.read_text() + f'\n[state]\nfolder = "state"\n{extra}')
    return path


def _journal_types(folder: Path) -> list[str]:
    with sqlite3.connect(folder / "journal.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT type FROM record WHERE chain = 'audit' ORDER BY seq")]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(10)
    yield sock, path
    sock.close()


def _messages(sock: socket.socket, until: str, limit: float = 20) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        seen += sock.recv(4096).decode().splitlines()
        if until in seen:
            break
    return seen


# --- sd_notify --------------------------------------------------------------------------------

def test_notifier_sends_datagrams_to_a_path_socket(notify_socket) -> None:
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("idle") and notifier.watchdog() and notifier.stopping()
    assert sock.recv(100) == b"READY=1\nSTATUS=idle"
    assert sock.recv(100) == b"WATCHDOG=1"
    assert sock.recv(100) == b"STOPPING=1"


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"tpe-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(100) == b"READY=1"


def test_notifier_without_socket_does_nothing_and_a_dead_socket_does_not_raise(tmp_path: Path) -> None:
    assert not Notifier({}).ready()
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}).ready()


def test_watchdog_interval_is_for_this_process_only() -> None:
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "3000000"}).watchdog_interval == 3.0
    ours = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(ours).watchdog_interval == 3.0
    theirs = {**ours, "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(theirs).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval is None


def test_keep_alive_sends_watchdog_at_half_the_interval(notify_socket) -> None:
    sock, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})

    async def beat() -> None:
        task = asyncio.get_running_loop().create_task(notifier.keep_alive())
        await asyncio.sleep(0.35)
        task.cancel()

    asyncio.run(beat())
    sock.settimeout(0.1)
    beats = []
    with pytest.raises(TimeoutError):
        while True:
            beats.append(sock.recv(100))
    assert beats and set(beats) == {b"WATCHDOG=1"}
    assert 3 <= len(beats) <= 5  # at 0, 0.1, 0.2, 0.3 s


# --- tpe run as systemd runs it ----------------------------------------------------------------

def test_sigterm_while_idle_stops_in_order_and_exits_0(tmp_path: Path, notify_socket) -> None:
    sock, path = notify_socket
    config = _config(tmp_path)
    script = tmp_path / "idle.toml"
    script.write_text('then = "wait"\n')
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000",
           "PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd")}  # no reader: the terminal still runs
    process = subprocess.Popen([*TPE, "run", "--config", str(config), "--script", str(script)], env=env,
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        before = _messages(sock, "READY=1")
        assert "READY=1" in before
        beats = _messages(sock, "WATCHDOG=1")
        assert "WATCHDOG=1" in beats
        process.send_signal(signal.SIGTERM)
        after = _messages(sock, "STOPPING=1")
        assert "STOPPING=1" in after
        out, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, out
    assert "ask amount (EUR)" in out and "terminal: stopping (SIGTERM)" in out
    types = _journal_types(tmp_path / "state")
    assert types[0] == "start" and types[-1] == "stop", types


def test_a_bad_configuration_exits_2_with_file_key_and_reason(tmp_path: Path) -> None:
    config = _config(tmp_path, '[links]\norder = ["pigeon"]\n')
    result = subprocess.run([*TPE, "run", "--config", str(config), "--script", str(tmp_path / "none.toml")],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"{config}: links.order[1]: must be one of" in result.stderr, result.stderr


def test_a_bad_script_exits_2_with_file_key_and_reason(tmp_path: Path) -> None:
    script = tmp_path / "bad.toml"
    script.write_text('[[sale]]\namount = 100\npin = 1234\n')
    result = subprocess.run([*TPE, "run", "--config", str(_config(tmp_path)), "--script", str(script)],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"{script}: sale[1].pin: 4 to 12 digits" in result.stderr
    assert "1234" not in result.stderr


# --- scripts ------------------------------------------------------------------------------------

def test_script_errors_name_the_key() -> None:
    cases = {
        "sale[1].amount": {"sale": [{"amount": 0}]},
        "sale[2].amount": {"sale": [{"amount": 5}, {"tip": 5}]},
        "sale[1].receipt": {"sale": [{"amount": 5, "receipt": "mail"}]},
        "sale[1].colour": {"sale": [{"amount": 5, "colour": "red"}]},
        "then": {"then": "loop"},
        "language": {"language": "xx"},
        "sales": {"sales": []},
    }
    for key, document in cases.items():
        with pytest.raises(ScriptError) as caught:
            parse_script(document, "s.toml")
        assert caught.value.key == key


@given(st.binary(max_size=200))
def test_any_script_file_loads_or_raises_script_error(data: bytes) -> None:
    path = Path(f"/tmp/tpe-script-{os.getpid()}.toml")
    path.write_bytes(data)
    try:
        load_script(path)
    except ScriptError:
        pass
    finally:
        path.unlink()


def test_the_scripted_ui_answers_in_order_and_ends() -> None:
    script = parse_script({"sale": [{"amount": 1250, "tip": 100, "pin": "4321"}]})
    out = io.StringIO()
    stopped: list[bool] = []
    ui = ScriptedUi(script, out=out, on_done=lambda: stopped.append(True))

    async def play() -> tuple[object, object]:
        ui.show(Idle())
        first = await ui.ask(AskAmount("EUR", 2))
        second = await ui.ask(AskAmount("EUR", 2))
        return first, second

    first, second = asyncio.run(play())
    assert (first.amount, first.tip, first.refund) == (1250, 100, False)  # type: ignore[attr-defined]
    assert second is None and stopped == [True]
    assert "4321" not in out.getvalue() and "4321" not in repr(script)


# --- logs ---------------------------------------------------------------------------------------

def test_card_numbers_are_masked_in_log_lines() -> None:
    # 4111 1111 1111 1111 and 5555 5555 5555 4444: the schemes' published test PANs (Luhn-valid)
    text = "pan 4111111111111111, track2 5555555555554444D25122011234567890F, stan 1234567890123"
    masked = logs.mask_card_data(text)
    assert "4111111111111111" not in masked and "5555555555554444" not in masked
    assert "************1111" in masked and "D2512201" not in masked
    assert "1234567890123" in masked  # not a PAN (Luhn fails): left as it is
    assert logs.luhn_ok("79927398713") and not logs.luhn_ok("79927398710")  # ISO/IEC 7812-1 example


def test_the_log_handler_masks_messages_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logs.setup(logging.INFO, stream)
    try:
        log = logging.getLogger("tpe.test")
        log.info("card %s", "4111111111111111")
        try:
            raise ValueError("bad 4111111111111111")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    assert "4111111111111111" not in stream.getvalue()
    assert stream.getvalue().count("************1111") == 3


# --- the status bar ----------------------------------------------------------------------------

def test_route_kind_and_battery_from_the_os_files(tmp_path: Path) -> None:
    proc = tmp_path / "route"
    proc.write_text("Iface\tDestination\tGateway\nwlan0\t0000A8C0\t00000000\nwlan0\t00000000\t0100A8C0\n")
    net = tmp_path / "net"
    (net / "wlan0" / "wireless").mkdir(parents=True)
    assert runtime.os_route_kind(proc, net) == "wifi"
    proc.write_text("Iface\tDestination\tGateway\neth0\t00000000\t0100A8C0\n")
    assert runtime.os_route_kind(proc, net) == "ethernet"
    power = tmp_path / "power"
    (power / "AC").mkdir(parents=True)
    (power / "AC" / "type").write_text("Mains\n")
    (power / "BAT0").mkdir()
    for name, value in (("type", "Battery"), ("capacity", "57"), ("status", "Charging")):
        (power / "BAT0" / name).write_text(value + "\n")
    assert runtime.battery(power) == (57, True)
    assert runtime.battery(tmp_path / "none") == (None, False)


def test_config_digest_is_the_files_sha256(tmp_path: Path) -> None:
    import hashlib

    path = _config(tmp_path)
    assert runtime.config_digest(load_config(path)) == hashlib.sha256(path.read_bytes()).hexdigest()


# --- the systemd unit ---------------------------------------------------------------------------

def _unit(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_unit_notifies_is_watched_restarts_and_keeps_the_state_where_the_firmware_looks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from firmware.config import default_state_folder

    unit = _unit(ROOT / "deploy" / "tpe.service")
    assert unit["Type"] == ["notify"] and unit["Restart"] == ["always"]
    assert int(unit["WatchdogSec"][0]) > 0
    assert unit["ExecStart"][0].split()[1:3] == ["run", "--config"]
    environment = dict(item.split("=", 1) for item in unit["Environment"])
    assert environment["SDL_VIDEODRIVER"] == "kmsdrm"
    monkeypatch.setenv("XDG_STATE_HOME", environment["XDG_STATE_HOME"])
    # systemd makes /var/lib/<StateDirectory> for the service's user
    assert default_state_folder() == Path("/var/lib") / unit["StateDirectory"][0]
    assert unit["User"] != ["root"]


# --- the sale flow without a card ----------------------------------------------------------------

class _EmptyReader:
    """A PC/SC reader in which no card ever comes (`firmware.reader.PcscReader`'s methods)."""

    def pick(self, name: str | None) -> str:
        return "Empty Reader 00 00"

    def connect_when_ready(self, reader: str, timeout: float | None = None, protocol: str = "any") -> None:
        time.sleep(min(timeout or 0.05, 0.05))
        raise CardTimeoutError("no card")

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def _no_pcscd() -> None:
    raise NoServiceError("SCardEstablishContext: pcscd not running")


def _play(tmp_path: Path, document: dict, **options: object) -> tuple[runtime.Terminal, ScriptedUi]:
    ui = ScriptedUi(parse_script(document), out=io.StringIO())

    async def scenario() -> runtime.Terminal:
        terminal = runtime.Terminal(load_config(_config(tmp_path)), ui, notifier=Notifier({}), error_pause=0,
                                    outcome_pause=0, **options)
        ui.on_done = lambda: terminal.request_stop("script done")
        await terminal.run_until_stopped()
        return terminal

    return asyncio.run(scenario()), ui


def test_no_reader_shows_reader_missing_and_goes_back_to_idle(tmp_path: Path) -> None:
    terminal, ui = _play(tmp_path, {"sale": [{"amount": 500}]}, reader_factory=_no_pcscd)
    assert ui.views == [Idle(), Error("reader_missing"), Idle()]
    assert [report.error for report in terminal.reports] == ["reader_missing"]
    assert _journal_types(tmp_path / "state")[-1] == "stop"


def test_cancel_on_the_present_card_screen_goes_back_to_idle(tmp_path: Path) -> None:
    terminal, ui = _play(tmp_path, {"sale": [{"amount": 500, "cancel": True}, {"amount": 700}]},
                         reader_factory=_EmptyReader, card_wait=0.3)
    money = [Money(500, "EUR", 2), Money(700, "EUR", 2)]
    assert ui.views == [Idle(), PresentCard(money[0]), Idle(), PresentCard(money[1]), Idle()]
    # the first cancelled at once; the second waited for its card until card_wait ran out
    assert [report.error for report in terminal.reports] == ["cancelled", None]
    assert sum(isinstance(q, AskCancel) for q in ui.questions) == 2


class _Screens:
    """An inner UI that records what it is shown and "draws" a file per screenshot."""

    def __init__(self) -> None:
        self.shown: list[object] = []
        self.asked: list[object] = []
        self.withdrawn = 0
        self.closed = False

    def show(self, view: object) -> None:
        self.shown.append(view)

    async def ask(self, question: object) -> object:
        self.asked.append(question)
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.withdrawn += 1
            raise

    def set_status(self, status: object) -> None:
        pass

    def cardholder_language(self, preferences: object) -> str:
        return "de"

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        return path

    def close(self) -> None:
        self.closed = True


def test_screenshots_of_every_screen_through_the_inner_ui(tmp_path: Path) -> None:
    inner = _Screens()
    ui = ScriptedUi(parse_script({"sale": [{"amount": 500}]}), out=io.StringIO(), inner=inner,
                    screenshots=tmp_path / "shots")

    async def scenario() -> runtime.Terminal:
        terminal = runtime.Terminal(load_config(_config(tmp_path)), ui, notifier=Notifier({}), error_pause=0,
                                    reader_factory=_no_pcscd)
        ui.on_done = lambda: terminal.request_stop("script done")
        await terminal.run_until_stopped()
        return terminal

    asyncio.run(scenario())
    names = [path.name for path in sorted((tmp_path / "shots").iterdir())]
    assert names == ["01-idle.png", "02-askamount.png", "03-error.png", "04-idle.png", "05-askamount.png"]
    assert inner.shown == ui.views and inner.asked == ui.questions
    assert inner.withdrawn == 2 and inner.closed  # each question's screen left once answered
