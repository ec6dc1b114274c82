"""The simulated Quectel EC25 through its pty, byte for byte: V.250 framing and echo, SIM and
registration (3GPP TS 27.007), PDP contexts and TCP sockets (Quectel TCP/IP AT Commands Manual)
to real peers on loopback, URCs, faults, restarts and malformed input.

Expected bytes are written from the manuals' formats: information text and finals framed by
CR LF (V.250, 5.7.1), +CSQ from the 27.007 8.5 table, +QIRD: <n> then the data then OK.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import time

import pytest
from test_modem_sim_support import (
    ERROR,
    NASTY,
    OK,
    Terminal,
    closed_port,
    echo,
    peer,
    peer_sees_end,
    quectel_online,
    running,
    say_and_close,
)

from sim.modem import ModemSimulator, NetworkConditions
from sim.modem.serve import describe

STARTUP = (b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n"
           b"\r\n+QIND: PB DONE\r\n")


def test_echo_identification_and_case() -> None:
    with running() as (_sim, term):
        term.exchange("AT", b"AT\r" + OK)  # V.250 6.2.4: echo on by default
        term.exchange("ATE0", b"ATE0\r" + OK)
        term.exchange("AT", OK)
        term.exchange("ATI", b"\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n" + OK)
        term.exchange("AT+CGMI", b"\r\nQuectel\r\n" + OK)
        term.exchange("at+cgmm", b"\r\nEC25\r\n" + OK)
        term.exchange("ATE1", OK)
        term.exchange("at", b"at\r" + OK)
        # Bytes before the "AT" prefix are not a command (V.250, 5.2.1); backspace edits the line.
        term.exchange("xyz\nATE0", b"ATE0\r" + OK)
        term.exchange("AT+CSX\bQ", b"\r\n+CSQ: 19,99\r\n" + OK)


@pytest.mark.parametrize(("dbm", "rssi"), [(-113, 0), (-120, 0), (-111, 1), (-109, 2), (-53, 30),
                                           (-51, 31), (-40, 31), (None, 99)])
def test_csq_follows_the_27007_table(dbm: int | None, rssi: int) -> None:
    with running(conditions=NetworkConditions(signal_dbm=dbm), echo=False) as (sim, term):
        term.exchange("AT+CSQ", f"\r\n+CSQ: {rssi},99\r\n".encode() + OK)
        sim.set_signal(-51)
        term.exchange("AT+CSQ", b"\r\n+CSQ: 31,99\r\n" + OK)
        term.exchange("AT+CFUN=4", OK)  # radio off: not known
        term.exchange("AT+CSQ", b"\r\n+CSQ: 99,99\r\n" + OK)


def test_sim_pin_puk_and_registration_after_unlock() -> None:
    with running(pin="1234", echo=False) as (sim, term):
        term.exchange("AT+CPIN?", b"\r\n+CPIN: SIM PIN\r\n" + OK)
        term.exchange("AT+CEREG?", b"\r\n+CEREG: 0,0\r\n" + OK)
        term.exchange("AT+CIMI", b"\r\n+CME ERROR: 11\r\n")
        term.exchange('AT+CPIN="0000"', b"\r\n+CME ERROR: 16\r\n")
        term.exchange('AT+QPINC="SC"', b'\r\n+QPINC: "SC",2,10\r\n' + OK)
        term.exchange("AT+CPIN=1234", b"\r\n+CME ERROR: 50\r\n")  # a PIN is a string constant
        term.exchange("AT+CEREG=1", OK)
        term.send('AT+CPIN="1234"\r')
        term.expect(OK + b"\r\n+CPIN: READY\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n"
                    b"\r\n+CEREG: 1\r\n")
        term.exchange("AT+CPIN?", b"\r\n+CPIN: READY\r\n" + OK)
        term.exchange('AT+CPIN="1234"', b"\r\n+CME ERROR: 3\r\n")
        term.exchange("AT+CIMI", b"\r\n001010000000001\r\n" + OK)
        assert sim.status().sim == "ready"
    with running(pin="1234", echo=False) as (sim, term):
        for _ in range(3):
            term.exchange('AT+CPIN="9999"', b"\r\n+CME ERROR: 16\r\n")
        term.exchange("AT+CPIN?", b"\r\n+CPIN: SIM PUK\r\n" + OK)
        term.exchange('AT+CPIN="1234"', b"\r\n+CME ERROR: 50\r\n")  # a new PIN must come with the PUK
        term.send('AT+CPIN="12345678","4321"\r')
        term.expect(OK + b"\r\n+CPIN: READY\r\n")
        term.quiet()
        sim.reboot()
        term.expect(b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: SIM PIN\r\n\r\n+QUSIM: 1\r\n", 3)
        term.exchange("AT+CPIN?", b"\r\n+CPIN: SIM PIN\r\n" + OK)  # echo=False: off after a restart too
        term.send('AT+CPIN="4321"\r')
        term.expect(OK + b"\r\n+CPIN: READY\r\n")
    with running(sim_inserted=False, echo=False) as (_sim, term):
        term.exchange("AT+CPIN?", b"\r\n+CME ERROR: 10\r\n")
        term.exchange("AT+CMEE=2", OK)
        term.exchange("AT+CPIN?", b"\r\n+CME ERROR: SIM not inserted\r\n")


def test_registration_reads_urcs_and_operator() -> None:
    with running(echo=False) as (sim, term):
        term.exchange("AT+CREG?", b"\r\n+CREG: 0,1\r\n" + OK)
        term.exchange("AT+CEREG=2", OK)
        term.exchange("AT+CEREG?", b'\r\n+CEREG: 2,1,"00A1","01A2B3C4",7\r\n' + OK)
        term.exchange("AT+COPS?", b'\r\n+COPS: 0,0,"TestNet",7\r\n' + OK)
        term.exchange("AT+COPS=3,2", OK)
        term.exchange("AT+COPS?", b'\r\n+COPS: 0,2,"00101",7\r\n' + OK)
        term.exchange("AT+QNWINFO", b'\r\n+QNWINFO: "FDD LTE","00101","LTE BAND 3",1300\r\n' + OK)
        sim.set_registration("roaming")
        term.expect(b'\r\n+CEREG: 5,"00A1","01A2B3C4",7\r\n')
        term.exchange("AT+CREG=1", OK)
        sim.set_registration("searching")
        term.expect(b"\r\n+CREG: 2\r\n\r\n+CEREG: 2\r\n")
        term.exchange("AT+COPS?", b"\r\n+COPS: 0\r\n" + OK)
        term.exchange("AT+QNWINFO", b"\r\n+QNWINFO: No Service\r\n" + OK)
        term.exchange("AT+CGATT?", b"\r\n+CGATT: 0\r\n" + OK)
        sim.set_registration("denied")
        term.expect(b"\r\n+CREG: 3\r\n\r\n+CEREG: 3\r\n")
        term.exchange("AT+CREG=0", OK)
        sim.set_conditions(registration="home", technology="3G")
        term.expect(b'\r\n+CEREG: 1,"00A1","01A2B3C4",2\r\n')
        term.exchange("AT+COPS=3,0", OK)
        term.exchange("AT+COPS?", b'\r\n+COPS: 0,0,"TestNet",2\r\n' + OK)
        assert term.quiet() == b""


def test_attach_takes_its_time_after_radio_on() -> None:
    with running(conditions=NetworkConditions(attach_ms=300), echo=False) as (_sim, term):
        time.sleep(0.4)
        term.exchange("AT+CEREG=1", OK)
        term.send("AT+CFUN=0\r")
        term.expect(OK + b"\r\n+CEREG: 0\r\n")
        started = time.monotonic()
        term.send("AT+CFUN=1\r")
        term.expect(OK + b"\r\n+CEREG: 2\r\n")
        term.expect(b"\r\n+CEREG: 1\r\n")
        assert 0.25 <= time.monotonic() - started < 1.0
        term.exchange("AT+CFUN?", b"\r\n+CFUN: 1\r\n" + OK)


def test_pdp_context_configuration_activation_and_apn_check() -> None:
    with running(conditions=NetworkConditions(required_apn="payments"), echo=False) as (_sim, term):
        term.exchange("AT+QICSGP=1", b'\r\n+QICSGP: 1,"","","",0\r\n' + OK)
        term.exchange('AT+QICSGP=1,1,"internet","user","secret",1', OK)
        term.exchange("AT+QICSGP=1", b'\r\n+QICSGP: 1,"internet","user","secret",1\r\n' + OK)
        term.exchange("AT+QIACT?", OK)
        term.exchange("AT+QIACT=1", ERROR)  # the network refuses that APN
        term.exchange("AT+QIGETERROR", b"\r\n+QIGETERROR: 561,open PDP context failed\r\n" + OK)
        term.exchange('AT+QICSGP=1,1,"payments","",""', OK)
        term.exchange('AT+CGDCONT?', b'\r\n+CGDCONT: 1,"IP","payments","0.0.0.0",0,0\r\n' + OK)
        term.exchange("AT+QIACT=1", OK)
        answer = term.command("AT+QIACT?")
        assert re.fullmatch(rb'\r\n\+QIACT: 1,1,1,"10\.\d+\.\d+\.\d+"\r\n\r\nOK\r\n', answer), answer
        term.exchange("AT+QIACT=1", ERROR)  # already active
        term.exchange("AT+QIDEACT=1", OK)
        term.exchange("AT+QIACT?", OK)
        term.exchange("AT+QICSGP=1,4,\"x\"", ERROR)
        term.exchange("AT+QICSGP=17", ERROR)


def test_socket_round_trip_with_binary_data() -> None:
    with peer(echo) as server, running() as (sim, term):
        quectel_online(term, server.port)
        term.send(f"AT+QISEND=0,{len(NASTY)}\r")
        term.expect(b"\r\n> ")
        term.send(NASTY)
        term.expect(b"\r\nSEND OK\r\n")
        term.expect(b'\r\n+QIURC: "recv",0\r\n')
        term.exchange("AT+QIRD=0,0", f"\r\n+QIRD: {len(NASTY)},0,{len(NASTY)}\r\n".encode() + OK)
        term.send("AT+QIRD=0,10\r")
        assert term.read_block(b"+QIRD: ") == (b"10", NASTY[:10])
        term.send("AT+QIRD=0\r")
        assert term.read_block(b"+QIRD: ") == (str(len(NASTY) - 10).encode(), NASTY[10:])
        term.exchange("AT+QIRD=0,1500", b"\r\n+QIRD: 0\r\n" + OK)
        term.exchange("AT+QIRD=0,0", f"\r\n+QIRD: {len(NASTY)},{len(NASTY)},0\r\n".encode() + OK)
        term.exchange("AT+QISEND=0,0", f"\r\n+QISEND: {len(NASTY)},{len(NASTY)},0\r\n".encode() + OK)
        local_port = server.connections[0].getpeername()[1]
        term.exchange("AT+QISTATE?", f'\r\n+QISTATE: 0,"TCP","127.0.0.1",{server.port},{local_port},2,1,0,0,'
                                     f'"uart1"\r\n'.encode() + OK)
        term.exchange("AT+QISTATE=1,0", f'\r\n+QISTATE: 0,"TCP","127.0.0.1",{server.port},{local_port},2,1,'
                                        f'0,0,"uart1"\r\n'.encode() + OK)
        term.exchange("AT+QISTATE=1,3", OK)
        assert bytes(server.received) == NASTY
        [traffic] = sim.traffic()
        assert (traffic.up_bytes, traffic.down_bytes, traffic.state) == (len(NASTY), len(NASTY), "connected")
        term.exchange("AT+QICLOSE=0", OK)
        assert peer_sees_end(server)
        term.exchange("AT+QISTATE?", OK)
        term.exchange("AT+QIRD=0", ERROR)
        assert sim.status().up_bytes == len(NASTY)


def test_direct_push_mode_gives_the_data_with_the_urc() -> None:
    with peer(echo) as server, running(echo=False) as (_sim, term):
        term.exchange("AT+QIACT=1", OK)
        term.send(f'AT+QIOPEN=1,3,"TCP","127.0.0.1",{server.port},0,1\r')
        term.expect(OK + b"\r\n+QIOPEN: 3,0\r\n")
        term.send("AT+QISEND=3,6\r")
        term.expect(b"\r\n> ")
        term.send(b"\r\nOK\r\n")
        term.expect(b"\r\nSEND OK\r\n")
        term.expect(b'\r\n+QIURC: "recv",3,6\r\n\r\nOK\r\n\r\n')


def test_peer_close_keeps_the_data_and_the_connect_id() -> None:
    with peer(say_and_close(b"bye\r\nOK\r\n")) as server, running() as (_sim, term):
        quectel_online(term, server.port)
        term.expect(b'\r\n+QIURC: "recv",0\r\n\r\n+QIURC: "closed",0\r\n')
        answer = term.command("AT+QISTATE=1,0")
        assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","127\.0\.0\.1",\d+,\d+,4,1,0,0,"uart1"\r\n\r\nOK\r\n',
                            answer), answer
        term.send("AT+QIRD=0,1500\r")
        assert term.read_block(b"+QIRD: ") == (b"9", b"bye\r\nOK\r\n")
        # The connectID stays taken until AT+QICLOSE (manual: socket identity has been used).
        term.send(f'AT+QIOPEN=1,0,"TCP","127.0.0.1",{server.port},0,0\r')
        term.expect(OK + b"\r\n+QIOPEN: 0,563\r\n")
        term.exchange("AT+QIGETERROR", b"\r\n+QIGETERROR: 563,socket identity has been used\r\n" + OK)
        term.exchange("AT+QICLOSE=0", OK)
        term.send(f'AT+QIOPEN=1,0,"TCP","127.0.0.1",{server.port},0,0\r')
        term.expect(OK + b"\r\n+QIOPEN: 0,0\r\n")


def test_open_failures() -> None:
    with running(echo=False) as (_sim, term):
        term.send(f'AT+QIOPEN=1,0,"TCP","127.0.0.1",{closed_port()},0,0\r')
        term.expect(OK + b"\r\n+QIOPEN: 0,561\r\n")  # no PDP context
        term.exchange("AT+QIACT=1", OK)
        term.send(f'AT+QIOPEN=1,1,"TCP","127.0.0.1",{closed_port()},0,0\r')
        term.expect(OK + b"\r\n+QIOPEN: 1,566\r\n")  # refused
        term.exchange("AT+QIGETERROR", b"\r\n+QIGETERROR: 566,socket connect failed\r\n" + OK)
        term.send('AT+QIOPEN=1,2,"TCP","no-such-host.invalid",443,0,0\r')
        term.expect(OK + b"\r\n+QIOPEN: 2,565\r\n", timeout=15)  # RFC 6761: .invalid never resolves
        term.exchange("AT+QISEND=1,5", ERROR)  # not connected


@pytest.mark.parametrize(("line", "answer"), [
    ('AT+QIOPEN=1,0,"TCP"', ERROR),
    ('AT+QIOPEN=1,12,"TCP","127.0.0.1",80,0,0', ERROR),
    ('AT+QIOPEN=1,0,"TCP","127.0.0.1",70000,0,0', ERROR),
    ('AT+QIOPEN=1,0,"TCP","127.0.0.1",0,0,0', ERROR),
    ('AT+QIOPEN=1,0,"UDP","127.0.0.1",80,0,0', ERROR),
    ('AT+QIOPEN=1,0,"TCP","127.0.0.1",80,0,2', ERROR),
    ('AT+QIOPEN=1,0,TCP,"127.0.0.1",80', ERROR),
    ('AT+QIOPEN=1,0,"TCP","127.0.0.1,80', ERROR),
    ("AT+QISEND=5,10", ERROR),
    ("AT+QISEND=0,1461", ERROR),
    ("AT+QISEND=0", ERROR),
    ("AT+QIRD=3", ERROR),
    ("AT+QIRD=0,1501", ERROR),
    ("AT+QICLOSE", ERROR),
    ("AT+CREG=9", b"\r\n+CME ERROR: 50\r\n"),
    ("AT+CFUN=2", b"\r\n+CME ERROR: 50\r\n"),
    ("AT+COPS=1,2,\"00101\"", b"\r\n+CME ERROR: 4\r\n"),
    ("AT+CSQ=1", ERROR),
    ("AT+CSQ?", ERROR),
    ("AT+FOO", ERROR),
    ("AT+", ERROR),
    ("ATV0", ERROR),
    ("ATS0=1", ERROR),
    ("AT-X", ERROR),
    ("AT+CMEE=3", ERROR),
    ("AT" + "+CSQ" * 300, ERROR),  # over the longest line the module takes
    ("AT+CSQ=?", OK),
])
def test_malformed_commands_get_the_modules_errors(line: str, answer: bytes) -> None:
    with running(echo=False) as (_sim, term):
        term.exchange(line, answer)
        term.exchange("AT+CMEE?", b"\r\n+CMEE: 1\r\n" + OK)


def test_error_verbosity_and_concatenated_commands() -> None:
    with running(echo=False) as (_sim, term):
        term.exchange("AT+CMEE=2", OK)
        term.exchange("AT+CREG=9", b"\r\n+CME ERROR: Incorrect parameters\r\n")
        term.exchange("AT+CMEE=0", OK)
        term.exchange("AT+CREG=9", ERROR)
        term.exchange("AT+CSQ;+CREG?", b"\r\n+CSQ: 19,99\r\n\r\n+CREG: 0,1\r\n" + OK)
        term.exchange("ATE0V1Q0", OK)
        term.exchange("AT+CSQ;+FOO;+CREG?", b"\r\n+CSQ: 19,99\r\n" + ERROR)
        term.send("A/")  # V.250, 5.2.4: repeat the last command line
        term.expect(b"\r\n+CSQ: 19,99\r\n" + ERROR)
        term.exchange("AT + C S Q", b"\r\n+CSQ: 19,99\r\n" + OK)  # V.250, 5.2.1: spaces ignored


def test_registration_loss_takes_the_context_and_sockets_down() -> None:
    with peer(echo) as server, running() as (sim, term):
        quectel_online(term, server.port)
        term.send(f'AT+QIOPEN=1,1,"TCP","127.0.0.1",{server.port},0,0\r')
        term.expect(OK + b"\r\n+QIOPEN: 1,0\r\n")
        sim.set_registration("denied")
        term.expect(b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QIURC: "closed",0\r\n\r\n+QIURC: "closed",1\r\n')
        assert peer_sees_end(server)
        term.exchange("AT+QIACT?", OK)
        term.exchange("AT+QISEND=0,4", ERROR)
        term.exchange("AT+QIACT=1", ERROR)  # not registered
        sim.set_registration("home")
        term.exchange("AT+QICLOSE=0", OK)
        term.exchange("AT+QICLOSE=1", OK)
        term.exchange("AT+QIACT=1", OK)
        quectel_online(term, server.port, first=False)
        assert term.quiet() == b""


def test_network_closes_sockets_and_urcs_wait_for_the_command() -> None:
    with peer(echo) as server, running() as (sim, term):
        quectel_online(term, server.port)
        sim.set_slow(300)
        term.send("AT\r")
        time.sleep(0.1)
        assert sim.close_sockets() == 1
        # The URC is held back until the slow command has its final result code.
        term.expect(OK + b'\r\n+QIURC: "closed",0\r\n')
        assert peer_sees_end(server)
        assert "slow_ms=300" in describe(sim.status())


def test_reboot_silence_then_startup_urcs_and_nothing_left() -> None:
    with peer(echo) as server, running() as (sim, term):
        quectel_online(term, server.port)
        term.exchange("AT+CEREG=1", OK)
        started = time.monotonic()
        term.send("AT+CFUN=1,1\r")
        term.expect(OK)
        term.send("AT\r")  # nobody listens while the module restarts
        assert term.quiet(0.6) == b""
        term.expect(STARTUP, timeout=2)
        assert time.monotonic() - started >= 0.95
        assert peer_sees_end(server)
        term.exchange("AT", b"AT\r" + OK)  # echo back to its default, +CEREG URCs off
        term.exchange("ATE0", b"ATE0\r" + OK)
        term.exchange("AT+QISTATE?", OK)
        term.exchange("AT+QIACT?", OK)
        term.exchange("AT+CEREG?", b"\r\n+CEREG: 0,1\r\n" + OK)
        assert sim.status().sockets == ()


def test_cme_injection_answers_the_next_line_only() -> None:
    with running(echo=False) as (sim, term):
        sim.inject_cme(14)
        term.exchange("AT+CSQ", b"\r\n+CME ERROR: 14\r\n")
        term.exchange("AT+CSQ", b"\r\n+CSQ: 19,99\r\n" + OK)
        term.exchange("AT+CMEE=2", OK)
        sim.inject_cme(14)
        term.exchange("AT", b"\r\n+CME ERROR: SIM busy\r\n")


def test_garbage_out_and_in_never_stops_it() -> None:
    with running(echo=False, seed=7) as (sim, term):
        noise = sim.garbage(64)
        assert term.read_exact(64) == noise
        term.exchange("AT", OK)
        rng = random.Random(2024)
        blobs = [rng.randbytes(rng.randrange(1, 3000)) for _ in range(20)]
        blobs += [b"\x00" * 5000, b"AT" + b"\xff" * 2000 + b"\r", b"A/A/A",
                  b'AT+QIOPEN=1,0,"' + NASTY + b"\r", b"AT\x08\x08\x08\r", b"\r\n" * 100]
        for blob in blobs:
            term.send(blob)
        term.send(b"\r")
        term.quiet(0.5)
        term.exchange("AT", OK)
        assert sim.status().commands > 1


def test_async_context_manager_runs_in_the_callers_loop() -> None:
    async def main() -> bytes:
        async with ModemSimulator("quectel", echo=False) as sim:
            assert sim.path is not None
            fd = os.open(sim.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                os.write(fd, b"AT+CSQ\r")
                sim.set_signal(-51)  # in the loop's thread: takes effect at once
                data = b""
                while not data.endswith(OK):
                    await asyncio.sleep(0.01)
                    with contextlib.suppress(BlockingIOError):
                        data += os.read(fd, 100)
                return data
            finally:
                os.close(fd)

    assert asyncio.run(asyncio.wait_for(main(), 5)) == b"\r\n+CSQ: 31,99\r\n" + OK


def test_a_stopped_simulator_starts_again_from_power_on() -> None:
    sim = ModemSimulator("quectel", echo=False)
    for _ in range(2):
        with sim:
            assert sim.path is not None
            term = Terminal(sim.path)
            try:
                term.exchange("AT+CEREG?", b"\r\n+CEREG: 0,1\r\n" + OK)
                term.exchange("AT+CEREG=1", OK)
                term.exchange("ATE1", OK)
            finally:
                term.close()
    assert sim.path is not None and sim.status().echo  # the last state stays readable
