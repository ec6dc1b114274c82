"""The AT runner (modem/runner.py) against a tiny scripted modem written here: it reads command
lines up to CR, answers each from a script in the Quectel / SIMCom dialects (prompt, data,
SEND OK, +QIRD blocks, URCs), over in-memory queues, and over a real pty through
`modem.serial_port.open_serial`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from modem.at_parser import AtParser, Final
from modem.runner import (
    AtCommandError,
    AtError,
    AtInvalidCommand,
    AtPortClosed,
    AtProtocolError,
    AtResponse,
    AtRunner,
    AtTimeout,
    redact,
)
from modem.serial_port import open_serial

TIMEOUT = 10.0
EOF = b""


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(TIMEOUT):
            return await coroutine
    return asyncio.run(bounded())


def answer(*lines: bytes, final: bytes = b"OK") -> bytes:
    """Information lines and a final result code, framed as the manuals show: CR LF around each."""
    return b"".join(b"\r\n" + line + b"\r\n" for line in (*lines, final))


Reply = bytes | list[bytes] | Callable[["ScriptedModem", str], None] | None


class ScriptedModem:
    """The modem side: command lines end at CR; each gets its scripted reply (bytes; a list of
    bytes, one per time the command comes; a function; None for silence). Unknown commands get
    ERROR. `emit` carries bytes to the host."""

    def __init__(self, script: dict[str, Reply] | None = None, *, echo: bool = False) -> None:
        self.script: dict[str, Reply] = dict(script or {})
        self.echo = echo
        self.commands: list[str] = []
        self.data: list[bytes] = []  # what arrived after a prompt
        self.journal: list[tuple[str, str]] = []  # ("in", command) / ("out", bytes sent), in order
        self.emit: Callable[[bytes], None] = lambda data: None
        self._inbox = bytearray()
        self._wanted: tuple[int, bytes | None] | None = None

    # what the modem does

    def send(self, data: bytes) -> None:
        self.journal.append(("out", data.decode("latin-1")))
        self.emit(data)

    def later(self, delay: float, data: bytes) -> None:
        asyncio.get_running_loop().call_later(delay, self.send, data)

    def prompt_for(self, length: int, then: bytes | None, *, prompt: bytes = b"\r\n> ",
                   delay: float = 0.02) -> None:
        """Prompt (after `delay`, so data written too early shows up as a command), take
        `length` raw bytes, then send `then`."""
        self._wanted = (length, then)
        self.later(delay, prompt)

    # what the host's bytes do

    def received(self, data: bytes) -> None:
        self._inbox += data
        while True:
            if self._wanted is not None:
                length, then = self._wanted
                if len(self._inbox) < length:
                    return
                self.data.append(bytes(self._inbox[:length]))
                del self._inbox[:length]
                self._wanted = None
                if then is not None:
                    self.send(then)
                continue
            end = self._inbox.find(b"\r")
            if end < 0:
                return
            line = self._inbox[:end].decode("latin-1")
            del self._inbox[:end + 1]
            self.commands.append(line)
            self.journal.append(("in", line))
            if self.echo:
                self.send(line.encode("latin-1") + b"\r")
            self._reply(line)

    def _reply(self, line: str) -> None:
        reply = self.script.get(line, answer(final=b"ERROR"))
        if isinstance(reply, list):
            reply = reply.pop(0) if len(reply) > 1 else reply[0]
        if callable(reply):
            reply(self, line)
        elif reply is not None:
            self.send(reply)


class MemoryPort:
    """The host side of the scripted modem: a ByteStream over an asyncio queue. `pieces` cuts
    what the modem sends into reads of that many bytes."""

    def __init__(self, modem: ScriptedModem, *, pieces: int | None = None) -> None:
        self.modem = modem
        self.pieces = pieces
        self.closed = False
        self.fail_writes = False
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._eof = False
        self._left = b""
        modem.emit = self._from_modem

    def _from_modem(self, data: bytes) -> None:
        step = self.pieces or max(len(data), 1)
        for i in range(0, len(data), step):
            self._queue.put_nowait(data[i:i + step])

    def hang_up(self) -> None:
        self._queue.put_nowait(EOF)

    async def read(self, n: int) -> bytes:
        if not self._left:
            if self._eof:
                return EOF
            self._left = await self._queue.get()
            if self._left == EOF:
                self._eof = True
                return EOF
        chunk, self._left = self._left[:n], self._left[n:]
        return chunk

    async def write(self, data: bytes) -> None:
        if self.closed or self.fail_writes:
            raise ConnectionError("the port is gone")
        self.modem.received(data)

    async def close(self) -> None:
        self.closed = True
        self.hang_up()


async def started(modem: ScriptedModem, *, pieces: int | None = None,
                  **options: Any) -> tuple[AtRunner, MemoryPort]:
    port = MemoryPort(modem, pieces=pieces)
    runner = AtRunner(port, **options)
    await runner.start()
    return runner, port


def quectel_send(length: int) -> Callable[[ScriptedModem, str], None]:
    return lambda modem, _line: modem.prompt_for(length, b"\r\nSEND OK\r\n")


# Payload bytes that look like AT framing: they must pass untouched both ways.
TRICKY = b"\r\nOK\r\n> AT\rERROR\n\x00\xff+QIRD: 3\r\n\r\n+CME ERROR: 14\r\n"


# Answers, information lines and finals.

@pytest.mark.parametrize("pieces", [None, 1, 3])
def test_information_lines_and_ok(pieces: int | None) -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT": answer(), "AT+CSQ": answer(b"+CSQ: 20,99")})
        runner, _ = await started(modem, pieces=pieces)
        assert await runner.command("AT") == AtResponse([], Final("OK"))
        response = await runner.command("AT+CSQ", expect="+CSQ:")
        assert response.lines == ["+CSQ: 20,99"]
        assert response.final == Final("OK")
        assert modem.commands == ["AT", "AT+CSQ"]
        await runner.close()
    run(scenario())


def test_command_is_written_with_a_cr() -> None:
    async def scenario() -> None:
        written: list[bytes] = []
        modem = ScriptedModem({"AT+COPS?": answer(b'+COPS: 0,0,"Orange F",7')})
        runner, port = await started(modem)
        original = port.write

        async def spy(data: bytes) -> None:
            written.append(data)
            await original(data)
        port.write = spy  # type: ignore[method-assign]
        await runner.command("AT+COPS?")
        assert written == [b"AT+COPS?\r"]
        await runner.close()
    run(scenario())


def test_urcs_inside_an_answer_go_to_subscribers_not_to_the_command() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({
            "AT+CSQ": answer(b"+CSQ: 18,99", b'+QIURC: "recv",0', b"+CEREG: 5"),
            "AT+QISTATE": answer(b'+QISTATE: 0,"TCP","10.0.0.1",443,0,2,1,0,0,"uart1"',
                                 b'+QIURC: "closed",1'),
        })
        runner, _ = await started(modem)
        seen: list[str] = []
        runner.subscribe("+QIURC:", seen.append)
        runner.subscribe("+CEREG:", seen.append)
        response = await runner.command("AT+CSQ", expect="+CSQ:")
        assert response.lines == ["+CSQ: 18,99"]
        # without `expect`: every line but the known URCs
        response = await runner.command("AT+QISTATE")
        assert response.lines == ['+QISTATE: 0,"TCP","10.0.0.1",443,0,2,1,0,0,"uart1"']
        assert seen == ['+QIURC: "recv",0', "+CEREG: 5", '+QIURC: "closed",1']
        await runner.close()
    run(scenario())


def test_without_expect_unknown_lines_belong_to_the_command() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"ATI": answer(b"Quectel", b"EC25", b"Revision: EC25EFAR06A06M4G")})
        runner, _ = await started(modem)
        assert (await runner.command("ATI")).lines == ["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]
        await runner.close()
    run(scenario())


def test_error_results_raise_with_the_final() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({
            "AT+CPIN?": answer(final=b"+CME ERROR: SIM not inserted"),
            "AT+CMGS": answer(final=b"+CMS ERROR: 500"),
            "ATD*99#": answer(final=b"NO CARRIER"),
        })
        runner, _ = await started(modem)
        with pytest.raises(AtCommandError) as raised:
            await runner.command("AT+FOO")
        assert raised.value.final == Final("ERROR")
        with pytest.raises(AtCommandError) as raised:
            await runner.command("AT+CPIN?", expect="+CPIN:")
        assert raised.value.final == Final("CME", text="SIM not inserted")
        with pytest.raises(AtCommandError) as raised:
            await runner.command("AT+CMGS")
        assert raised.value.final == Final("CMS", code=500)
        with pytest.raises(AtCommandError) as raised:
            await runner.command("ATD*99#")
        assert raised.value.final == Final("NO CARRIER")
        assert "NO CARRIER" in str(raised.value)
        await runner.close()
    run(scenario())


def test_finals_that_do_not_end_the_command_are_kept_as_lines() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"ATD*99#": answer(final=b"OK") + answer(final=b"CONNECT 150000000")})
        runner, _ = await started(modem)
        response = await runner.command("ATD*99#", finals=frozenset({"CONNECT", "NO CARRIER", "ERROR"}))
        assert response.lines == ["OK"]
        assert response.final == Final("CONNECT", text="150000000")
        await runner.close()
    run(scenario())


def test_a_line_begun_before_the_command_is_not_its_answer() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({
            # the modem ends the URC it was sending, then answers
            "AT": b'cv",0\r\n' + answer(),
            "ATI": answer(b"Quectel", b"EC25"),
        })
        runner, _ = await started(modem)
        seen: list[str] = []
        runner.subscribe("+QIURC:", seen.append)
        modem.send(b'\r\n+QIURC: "re')
        await asyncio.sleep(0.02)
        assert await runner.command("AT") == AtResponse([], Final("OK"))
        assert seen == ['+QIURC: "recv",0']
        modem.send(b"\x13\xfe noise without a line end")
        await asyncio.sleep(0.02)
        assert (await runner.command("ATI")).lines == ["Quectel", "EC25"]
        await runner.close()
    run(scenario())


def test_a_final_answering_no_command_is_dropped() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+CSQ": answer(b"+CSQ: 5,99")})
        runner, _ = await started(modem)
        modem.send(answer(final=b"ERROR"))
        await asyncio.sleep(0.02)
        assert (await runner.command("AT+CSQ")).lines == ["+CSQ: 5,99"]
        await runner.close()
    run(scenario())


# Busy retries.

@pytest.mark.parametrize("busy", [b"+CME ERROR: 14", b"+CME ERROR: SIM busy", b"+CME ERROR: 568"])
def test_busy_is_sent_again(busy: bytes) -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+CPIN?": [answer(final=busy), answer(b"+CPIN: READY")]})
        runner, _ = await started(modem, busy_backoff=0.01)
        response = await runner.command("AT+CPIN?", expect="+CPIN:")
        assert response.lines == ["+CPIN: READY"]
        assert modem.commands == ["AT+CPIN?", "AT+CPIN?"]
        await runner.close()
    run(scenario())


def test_busy_retries_are_bounded() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+QIACT=1": answer(final=b"+CME ERROR: 568")})
        runner, _ = await started(modem, busy_backoff=0.01)
        with pytest.raises(AtCommandError) as raised:
            await runner.command("AT+QIACT=1", retries_if_busy=2)
        assert raised.value.final == Final("CME", code=568)
        assert modem.commands == ["AT+QIACT=1"] * 3
        modem.commands.clear()
        with pytest.raises(AtCommandError):
            await runner.command("AT+QIACT=1", retries_if_busy=0)
        assert modem.commands == ["AT+QIACT=1"]
        await runner.close()
    run(scenario())


def test_other_cme_errors_are_not_retried() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+CPIN?": [answer(final=b"+CME ERROR: 10"), answer(b"+CPIN: READY")]})
        runner, _ = await started(modem, busy_backoff=0.01)
        with pytest.raises(AtCommandError) as raised:
            await runner.command("AT+CPIN?")
        assert raised.value.final.code == 10
        assert modem.commands == ["AT+CPIN?"]
        await runner.close()
    run(scenario())


def test_busy_after_the_data_went_is_not_retried() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({
            "AT+QISEND=0,4": lambda m, _: m.prompt_for(4, answer(final=b"+CME ERROR: 568")[2:])})
        runner, _ = await started(modem, busy_backoff=0.01)
        with pytest.raises(AtCommandError):
            await runner.command("AT+QISEND=0,4", data=b"ping")
        assert modem.commands == ["AT+QISEND=0,4"]
        assert modem.data == [b"ping"]
        await runner.close()
    run(scenario())


# Data: sending after the prompt, reading binary blocks.

@pytest.mark.parametrize("pieces", [None, 1])
def test_quectel_send_waits_for_the_prompt_then_writes_raw_bytes(pieces: int | None) -> None:
    async def scenario() -> None:
        modem = ScriptedModem({f"AT+QISEND=0,{len(TRICKY)}": quectel_send(len(TRICKY))})
        runner, _ = await started(modem, pieces=pieces)
        response = await runner.command(f"AT+QISEND=0,{len(TRICKY)}", data=TRICKY)
        assert response.final == Final("SEND OK")
        assert modem.data == [TRICKY]
        assert modem.commands == [f"AT+QISEND=0,{len(TRICKY)}"]  # no byte of data before the prompt
        await runner.close()
    run(scenario())


def test_simcom_send_with_a_bare_prompt_then_ok_and_the_result_urc() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+CIPSEND=0,5": lambda m, _: m.prompt_for(
            5, answer(final=b"OK") + b"\r\n+CIPSEND: 0,5,5\r\n", prompt=b"\r\n>")})
        runner, _ = await started(modem)
        response = await runner.command("AT+CIPSEND=0,5", data=b"hello")
        assert response.final == Final("OK")
        assert modem.data == [b"hello"]
        assert await runner.wait_for_urc("+CIPSEND: 0,", 1.0) == "+CIPSEND: 0,5,5"
        await runner.close()
    run(scenario())


def test_send_refused_before_the_prompt_writes_no_data() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+QISEND=3,5": answer(final=b"ERROR")})
        runner, _ = await started(modem)
        with pytest.raises(AtCommandError):
            await runner.command("AT+QISEND=3,5", data=b"hello")
        await asyncio.sleep(0.02)
        assert modem.commands == ["AT+QISEND=3,5"]
        assert modem.data == []
        assert modem._inbox == b""
        await runner.close()
    run(scenario())


def test_send_failure_is_an_error() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+QISEND=0,2": lambda m, _: m.prompt_for(2, b"\r\nSEND FAIL\r\n")})
        runner, _ = await started(modem)
        with pytest.raises(AtCommandError) as raised:
            await runner.command("AT+QISEND=0,2", data=b"hi")
        assert raised.value.final == Final("SEND FAIL")
        await runner.close()
    run(scenario())


@pytest.mark.parametrize("pieces", [None, 1, 7])
def test_quectel_read_gives_the_binary_block(pieces: int | None) -> None:
    async def scenario() -> None:
        block = b"\r\n+QIRD: " + str(len(TRICKY)).encode() + b"\r\n" + TRICKY + b"\r\n\r\nOK\r\n"
        modem = ScriptedModem({"AT+QIRD=0,1500": block, "AT+QIRD=1,1500": answer(b"+QIRD: 0")})
        runner, _ = await started(modem, pieces=pieces)
        response = await runner.command("AT+QIRD=0,1500", expect="+QIRD:")
        assert response.lines == [f"+QIRD: {len(TRICKY)}"]
        assert response.data == TRICKY
        empty = await runner.command("AT+QIRD=1,1500", expect="+QIRD:")
        assert (empty.lines, empty.data) == (["+QIRD: 0"], b"")
        await runner.close()
    run(scenario())


def test_simcom_read_gives_the_binary_block_and_leaves_the_data_urc_alone() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+CIPRXGET=2,1,1500": b"\r\n+CIPRXGET: 1,1\r\n\r\n+CIPRXGET: 2,1,"
                               + str(len(TRICKY)).encode() + b",0\r\n" + TRICKY + b"\r\nOK\r\n"})
        runner, _ = await started(modem)
        urcs: list[str] = []
        runner.subscribe("+CIPRXGET: 1,", urcs.append)
        response = await runner.command("AT+CIPRXGET=2,1,1500", expect="+CIPRXGET: 2,")
        assert response.data == TRICKY
        assert response.lines == [f"+CIPRXGET: 2,1,{len(TRICKY)},0"]
        assert urcs == ["+CIPRXGET: 1,1"]
        await runner.close()
    run(scenario())


def test_a_damaged_answer_is_a_protocol_error_and_the_runner_goes_on() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+QPING": answer(b"+QPING: " + b"9" * 100), "AT": answer()})
        runner, _ = await started(modem, parser=AtParser(max_line=64))
        with pytest.raises(AtProtocolError):
            await runner.command("AT+QPING")
        assert (await runner.command("AT")).final == Final("OK")
        await runner.close()
    run(scenario())


# Timeouts and late answers.

def test_timeout_then_late_answer_is_not_given_to_the_next_command() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({
            "AT+COPS=?": lambda m, _: m.later(0.15, answer(b'+COPS: (2,"Orange F","Orange","20801",7)')),
            "AT+CSQ": answer(b"+CSQ: 20,99"),
        })
        runner, _ = await started(modem)
        with pytest.raises(AtTimeout):
            await runner.command("AT+COPS=?", timeout=0.05)
        await asyncio.sleep(0.25)  # the late answer arrives while nothing runs
        response = await runner.command("AT+CSQ", timeout=1.0)
        assert response.lines == ["+CSQ: 20,99"]
        await runner.close()
    run(scenario())


def test_next_command_waits_for_the_late_answer_before_it_is_written() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({
            "AT+COPS=?": lambda m, _: m.later(0.15, answer(b'+COPS: (2,"Orange F","Orange","20801",7)')),
            "AT+CSQ": answer(b"+CSQ: 20,99"),
        })
        runner, _ = await started(modem, late_answer_grace=2.0)
        with pytest.raises(AtTimeout):
            await runner.command("AT+COPS=?", timeout=0.05)
        response = await runner.command("AT+CSQ", timeout=1.0)
        assert response.lines == ["+CSQ: 20,99"]
        kinds = [entry for entry in modem.journal if entry[0] == "in" or "COPS" in entry[1]]
        assert kinds[0] == ("in", "AT+COPS=?")
        assert kinds[1][0] == "out"  # the late answer left the modem before AT+CSQ came in
        assert kinds[2] == ("in", "AT+CSQ")
        await runner.close()
    run(scenario())


def test_a_late_answer_that_never_comes_delays_the_next_command_by_the_grace_only() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+QIACT=1": None, "AT": answer()})
        runner, _ = await started(modem, late_answer_grace=0.2)
        with pytest.raises(AtTimeout):
            await runner.command("AT+QIACT=1", timeout=0.05)
        began = time.monotonic()
        assert (await runner.command("AT")).final == Final("OK")
        assert 0.15 < time.monotonic() - began < 1.0
        await runner.close()
    run(scenario())


def test_with_echo_on_the_echo_separates_a_late_answer_from_the_next_one() -> None:
    async def scenario() -> None:
        # The modem finishes the slow command (its late answer), then echoes and answers the next.
        modem = ScriptedModem({
            "AT+COPS=?": None,
            "AT+CSQ": answer(b'+COPS: (1,"X","X","00101",7)', final=b"OK") + b"AT+CSQ\r"
            + answer(b"+CSQ: 20,99"),
        })
        runner, _ = await started(modem, echo=True, late_answer_grace=5.0)
        with pytest.raises(AtTimeout):
            await runner.command("AT+COPS=?", timeout=0.05)
        began = time.monotonic()
        response = await runner.command("AT+CSQ", timeout=1.0)
        assert response.lines == ["+CSQ: 20,99"]
        assert time.monotonic() - began < 2.0  # no grace wait with echo on
        await runner.close()
    run(scenario())


def test_echoed_commands_are_not_answer_lines() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+CSQ": answer(b"+CSQ: 20,99")}, echo=True)
        runner, _ = await started(modem, echo=True)
        assert (await runner.command("AT+CSQ")).lines == ["+CSQ: 20,99"]
        await runner.close()
    run(scenario())


def test_send_with_echo_on_takes_the_prompt_after_the_echo() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+QISEND=0,5": quectel_send(5)}, echo=True)
        runner, _ = await started(modem, echo=True)
        assert (await runner.command("AT+QISEND=0,5", data=b"hello")).final == Final("SEND OK")
        assert modem.data == [b"hello"]
        await runner.close()
    run(scenario())


def test_echo_setting_follows_ate0_and_ate1() -> None:
    def set_echo(on: bool) -> Callable[[ScriptedModem, str], None]:
        def reply(modem: ScriptedModem, _line: str) -> None:
            modem.echo = on
            modem.send(answer())
        return reply

    async def scenario() -> None:
        modem = ScriptedModem({"ATE0": set_echo(False), "ATE1": set_echo(True), "AT": answer()}, echo=True)
        runner, _ = await started(modem, echo=True)
        await runner.command("ATE0")
        assert runner.echo is False
        assert (await runner.command("AT", timeout=1.0)).final == Final("OK")
        await runner.command("ATE1")
        assert runner.echo is True
        assert (await runner.command("AT", timeout=1.0)).final == Final("OK")
        assert modem.commands == ["ATE0", "AT", "ATE1", "AT"]
        await runner.close()
    run(scenario())


def test_a_cancelled_command_leaves_the_runner_usable() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+QIACT=1": None, "AT": answer()})
        runner, _ = await started(modem, late_answer_grace=0.05)
        task = asyncio.create_task(runner.command("AT+QIACT=1", timeout=30))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await runner.command("AT")).final == Final("OK")
        await runner.close()
    run(scenario())


def test_one_command_at_a_time() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({
            "AT+CSQ": lambda m, _: m.later(0.05, answer(b"+CSQ: 20,99")),
            "AT+CREG?": answer(b"+CREG: 0,1"),
        })
        runner, _ = await started(modem)
        first, second = await asyncio.gather(runner.command("AT+CSQ", expect="+CSQ:"),
                                             runner.command("AT+CREG?", expect="+CREG:"))
        assert first.lines == ["+CSQ: 20,99"]
        assert second.lines == ["+CREG: 0,1"]
        assert [kind for kind, _ in modem.journal] == ["in", "out", "in", "out"]
        await runner.close()
    run(scenario())


# URCs.

def test_urc_between_commands_reaches_its_subscribers_only() -> None:
    async def scenario() -> None:
        runner, _ = await started(modem := ScriptedModem())
        closed: list[str] = []
        registration: list[str] = []
        runner.subscribe('+QIURC: "closed"', closed.append)
        unsubscribe = runner.subscribe("+CEREG:", registration.append)
        modem.send(b'\r\n+QIURC: "closed",0\r\n\r\n+CEREG: 1\r\n')
        await asyncio.sleep(0.02)
        assert closed == ['+QIURC: "closed",0']
        assert registration == ["+CEREG: 1"]
        unsubscribe()
        modem.send(b"\r\n+CEREG: 5\r\n")
        await asyncio.sleep(0.02)
        assert registration == ["+CEREG: 1"]
        await runner.close()
    run(scenario())


def test_a_failing_callback_is_logged_and_does_not_stop_the_reader(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT": answer()})
        runner, _ = await started(modem)
        seen: list[str] = []

        def broken(_line: str) -> None:
            raise RuntimeError("callback bug")
        runner.subscribe("RDY", broken)
        runner.subscribe("RDY", seen.append)
        modem.send(b"\r\nRDY\r\n")
        await asyncio.sleep(0.02)
        assert (await runner.command("AT")).final == Final("OK")
        modem.send(b"\r\nRDY\r\n")
        await asyncio.sleep(0.02)
        assert seen == ["RDY", "RDY"]
        await runner.close()
    with caplog.at_level(logging.ERROR, logger="modem"):
        run(scenario())
    assert "callback bug" in caplog.text


def test_wait_for_urc_sees_a_result_that_came_with_the_ok() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({'AT+QIOPEN=1,0,"TCP","10.0.0.1",443,0,0': answer() + b"\r\n+QIOPEN: 0,0\r\n"})
        runner, _ = await started(modem)
        await runner.command('AT+QIOPEN=1,0,"TCP","10.0.0.1",443,0,0')
        assert await runner.wait_for_urc("+QIOPEN: 0,", 1.0) == "+QIOPEN: 0,0"
        with pytest.raises(AtTimeout):  # taken once
            await runner.wait_for_urc("+QIOPEN: 0,", 0.05)
        await runner.close()
    run(scenario())


def test_wait_for_urc_that_comes_later() -> None:
    async def scenario() -> None:
        def net_open(modem: ScriptedModem, _line: str) -> None:
            modem.send(answer())
            modem.later(0.05, b"\r\n+NETOPEN: 0\r\n")
        modem = ScriptedModem({"AT+NETOPEN": net_open})
        runner, _ = await started(modem)
        await runner.command("AT+NETOPEN")
        assert await runner.wait_for_urc("+NETOPEN:", 1.0) == "+NETOPEN: 0"
        await runner.close()
    run(scenario())


def test_wait_for_urc_times_out_and_the_backlog_lasts_until_the_next_command() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+QIOPEN=1,1": answer() + b"\r\n+QIOPEN: 1,566\r\n", "AT": answer()})
        runner, _ = await started(modem)
        with pytest.raises(AtTimeout):
            await runner.wait_for_urc("+QIOPEN:", 0.05)
        await runner.command("AT+QIOPEN=1,1")
        await runner.command("AT")
        with pytest.raises(AtTimeout):
            await runner.wait_for_urc("+QIOPEN:", 0.05)
        await runner.close()
    run(scenario())


def test_an_awaited_prefix_is_a_urc_even_for_a_command_without_expect() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+XOPEN": answer(b"+XOPEN: 3")})
        runner, _ = await started(modem)
        waiting = asyncio.create_task(runner.wait_for_urc("+XOPEN:", 1.0))
        await asyncio.sleep(0.01)
        response = await runner.command("AT+XOPEN")
        assert response.lines == []
        assert await waiting == "+XOPEN: 3"
        await runner.close()
    run(scenario())


# The port going away.

def test_port_end_fails_the_waiting_command_and_everything_after() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({"AT+QIACT=1": None})
        runner, port = await started(modem)
        pending = asyncio.create_task(runner.command("AT+QIACT=1", timeout=30))
        waiting = asyncio.create_task(runner.wait_for_urc("+QIURC:", 30))
        await asyncio.sleep(0.02)
        port.hang_up()
        with pytest.raises(AtPortClosed):
            await pending
        with pytest.raises(AtPortClosed):
            await waiting
        assert runner.closed
        with pytest.raises(AtPortClosed):
            await runner.command("AT")
        with pytest.raises(AtPortClosed):
            await runner.wait_for_urc("+QIURC:", 1.0)
        await runner.close()
        assert port.closed
    run(scenario())


def test_port_read_failure_is_port_closed() -> None:
    class Broken(MemoryPort):
        async def read(self, n: int) -> bytes:
            await asyncio.sleep(0.01)
            raise OSError(5, "Input/output error")

    async def scenario() -> None:
        runner = AtRunner(Broken(ScriptedModem({"AT+QIACT=1": None})))
        await runner.start()
        with pytest.raises(AtPortClosed, match="Input/output error"):
            await runner.command("AT+QIACT=1", timeout=30)
    run(scenario())


def test_port_write_failure_is_port_closed() -> None:
    async def scenario() -> None:
        runner, port = await started(ScriptedModem())
        port.fail_writes = True
        with pytest.raises(AtPortClosed):
            await runner.command("AT")
        with pytest.raises(AtPortClosed):
            await runner.command("AT")
        await runner.close()
    run(scenario())


def test_close_fails_the_waiting_command_and_closes_the_port() -> None:
    async def scenario() -> None:
        runner, port = await started(ScriptedModem({"AT+QIACT=1": None}))
        pending = asyncio.create_task(runner.command("AT+QIACT=1", timeout=30))
        await asyncio.sleep(0.02)
        await runner.close()
        with pytest.raises(AtPortClosed):
            await pending
        assert port.closed
    run(scenario())


# Bad input and logs.

@pytest.mark.parametrize("text", ["", "AT\rAT", "AT\n", "AT+CMGS\x1a", "AT\x1b", 'AT+COPS=1,0,"Télé"'])
def test_commands_that_cannot_be_sent(text: str) -> None:
    async def scenario() -> None:
        runner, _ = await started(modem := ScriptedModem())
        with pytest.raises(AtInvalidCommand):
            await runner.command(text)
        assert modem.commands == []
        await runner.close()
    run(scenario())


def test_a_runner_not_started() -> None:
    async def scenario() -> None:
        with pytest.raises(AtError):
            await AtRunner(MemoryPort(ScriptedModem())).command("AT")
    run(scenario())


def test_redact_masks_secret_parameters() -> None:
    assert redact('AT+CPIN="1234"') == "AT+CPIN=<redacted>"
    assert redact('at+cpin="1234","5678"') == "at+cpin=<redacted>"
    assert redact('AT+CPIN2="4321"') == "AT+CPIN2=<redacted>"
    assert redact('AT+QICSGP=1,1,"apn","user","s3cret",1') == "AT+QICSGP=<redacted>"
    assert redact('AT+CLCK="SC",0,"1234"') == "AT+CLCK=<redacted>"
    assert redact("AT+CPIN?") == "AT+CPIN?"
    assert redact("AT+CSQ") == "AT+CSQ"


def test_logs_carry_no_pin_password_or_payload(caplog: pytest.LogCaptureFixture) -> None:
    outgoing = b"OUTGOING-PAYLOAD"
    incoming = b"INCOMING-PAYLOAD"

    async def scenario() -> None:
        modem = ScriptedModem({
            'AT+CPIN="1234"': answer(final=b"+CME ERROR: 16"),
            'AT+QICSGP=1,1,"apn","user","s3cret",1': answer(),
            "AT+QISEND=0,16": quectel_send(16),
            "AT+QIRD=0,1500": b"\r\n+QIRD: 16\r\n" + incoming + b"\r\n\r\nOK\r\n",
        })
        runner, _ = await started(modem)
        with pytest.raises(AtCommandError) as raised:
            await runner.command('AT+CPIN="1234"')
        assert "1234" not in str(raised.value)
        await runner.command('AT+QICSGP=1,1,"apn","user","s3cret",1')
        await runner.command("AT+QISEND=0,16", data=outgoing)
        assert (await runner.command("AT+QIRD=0,1500", expect="+QIRD:")).data == incoming
        await runner.close()
    with caplog.at_level(logging.DEBUG, logger="modem"):
        run(scenario())
    assert "AT+QISEND=0,16" in caplog.text  # the log is there ...
    for secret in ("1234", "s3cret", "OUTGOING", "INCOMING"):
        assert secret not in caplog.text  # ... without the secrets


def test_response_repr_gives_the_data_length_only() -> None:
    assert "secret" not in repr(AtResponse(["+QIRD: 6"], Final("OK"), b"secret"))


# The same over a real pty, through the serial port adapter.

@contextlib.contextmanager
def pty_modem(modem: ScriptedModem) -> Iterator[tuple[str, Callable[[], None]]]:
    """The scripted modem on a pty's master end; yields the slave path and a hang-up."""
    master, slave = os.openpty()
    os.set_blocking(master, False)
    loop = asyncio.get_running_loop()
    modem.emit = lambda data: os.write(master, data) and None
    state = {"open": True}

    def readable() -> None:
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            modem.received(data)

    def hang_up() -> None:
        if state["open"]:
            loop.remove_reader(master)
            os.close(master)
            state["open"] = False

    loop.add_reader(master, readable)
    try:
        yield os.ttyname(slave), hang_up
    finally:
        hang_up()
        os.close(slave)


def test_over_a_pty() -> None:
    async def scenario() -> None:
        block = b"\r\n+QIRD: " + str(len(TRICKY)).encode() + b"\r\n" + TRICKY + b"\r\n\r\nOK\r\n"
        modem = ScriptedModem({
            "ATE0": answer(),
            "AT+CSQ": answer(b"+CSQ: 20,99", b'+QIURC: "recv",0'),
            f"AT+QISEND=0,{len(TRICKY)}": quectel_send(len(TRICKY)),
            "AT+QIRD=0,1500": block,
            "AT+QIACT=1": None,
        })
        with pty_modem(modem) as (path, hang_up):
            runner = AtRunner(await open_serial(path))
            await runner.start()
            urcs: list[str] = []
            runner.subscribe("+QIURC:", urcs.append)
            await runner.command("ATE0")
            assert (await runner.command("AT+CSQ", expect="+CSQ:")).lines == ["+CSQ: 20,99"]
            assert urcs == ['+QIURC: "recv",0']
            sent = await runner.command(f"AT+QISEND=0,{len(TRICKY)}", data=TRICKY)
            assert sent.final == Final("SEND OK")
            assert modem.data == [TRICKY]
            assert (await runner.command("AT+QIRD=0,1500", expect="+QIRD:")).data == TRICKY
            pending = asyncio.create_task(runner.command("AT+QIACT=1", timeout=30))
            await asyncio.sleep(0.05)
            hang_up()
            with pytest.raises(AtPortClosed):
                await pending
            await runner.close()
    run(scenario())


def test_over_a_pty_with_echo_and_a_timeout() -> None:
    async def scenario() -> None:
        modem = ScriptedModem({
            "AT+COPS=?": lambda m, _: m.later(0.15, answer(b'+COPS: (2,"Orange F","Orange","20801",7)')),
            "AT+CSQ": answer(b"+CSQ: 20,99"),
        }, echo=True)
        with pty_modem(modem) as (path, _hang_up):
            runner = AtRunner(await open_serial(path), echo=True)
            await runner.start()
            with pytest.raises(AtTimeout):
                await runner.command("AT+COPS=?", timeout=0.05)
            await asyncio.sleep(0.2)
            assert (await runner.command("AT+CSQ", timeout=1.0)).lines == ["+CSQ: 20,99"]
            await runner.close()
    run(scenario())
