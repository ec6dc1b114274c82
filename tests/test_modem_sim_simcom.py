"""The simulated SIMCom SIM7600 through its pty, byte for byte: the packet network (AT+NETOPEN),
TCP links with manual receive (AT+CIPRXGET) to real peers on loopback, their URCs, push mode,
network loss, restarts and malformed input (SIM7500/SIM7600 TCP/IP Application Note formats)."""

from __future__ import annotations

import re
import time

import pytest
from test_modem_sim_support import (
    ERROR,
    NASTY,
    OK,
    closed_port,
    echo,
    peer,
    peer_sees_end,
    running,
    say_and_close,
    simcom_online,
)

from sim.modem import NetworkConditions

STARTUP = b"\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n\r\nPB DONE\r\n"


def test_identification_and_network_open_close() -> None:
    with running("simcom") as (_sim, term):
        term.exchange("ATE0", b"ATE0\r" + OK)
        term.exchange("ATI", b"\r\nManufacturer: SIMCOM INCORPORATED\r\nModel: SIMCOM_SIM7600E-H\r\n"
                             b"Revision: SIM7600M22_V2.0\r\nIMEI: 350000000000005\r\n+GCAP: +CGSM\r\n" + OK)
        term.exchange("AT+CGSN", b"\r\n350000000000005\r\n" + OK)
        term.exchange("AT+NETOPEN?", b"\r\n+NETOPEN: 0\r\n" + OK)
        term.exchange("AT+IPADDR", b"\r\n+IP ERROR: Network not opened\r\n" + ERROR)
        term.exchange("AT+NETCLOSE", b"\r\n+IP ERROR: Network is already closed\r\n" + ERROR)
        term.send("AT+NETOPEN\r")
        term.expect(OK + b"\r\n+NETOPEN: 0\r\n")
        term.exchange("AT+NETOPEN?", b"\r\n+NETOPEN: 1\r\n" + OK)
        term.exchange("AT+NETOPEN", b"\r\n+IP ERROR: Network is already opened\r\n" + ERROR)
        answer = term.command("AT+IPADDR")
        assert re.fullmatch(rb"\r\n\+IPADDR: 10\.\d+\.\d+\.\d+\r\n\r\nOK\r\n", answer), answer
        term.send("AT+NETCLOSE\r")
        term.expect(OK + b"\r\n+NETCLOSE: 0\r\n")
        term.exchange("AT+CIPMODE?", b"\r\n+CIPMODE: 0\r\n" + OK)
        term.exchange("AT+SPIC", b"\r\n+SPIC: 3,10,3,10\r\n" + OK)


def test_netopen_fails_without_registration_or_with_a_refused_apn() -> None:
    with running("simcom", conditions=NetworkConditions(required_apn="payments"), echo=False) as (sim, term):
        term.send("AT+NETOPEN\r")
        term.expect(OK + b"\r\n+NETOPEN: 1\r\n")
        term.exchange('AT+CGDCONT=1,"IP","payments"', OK)
        sim.set_registration("searching")
        term.send("AT+NETOPEN\r")
        term.expect(OK + b"\r\n+NETOPEN: 1\r\n")
        sim.set_registration("roaming")
        term.send("AT+NETOPEN\r")
        term.expect(OK + b"\r\n+NETOPEN: 0\r\n")


def test_link_round_trip_with_binary_data_and_manual_receive() -> None:
    with peer(echo) as server, running("simcom") as (sim, term):
        simcom_online(term, server.port)
        term.exchange("AT+CIPRXGET?", b"\r\n+CIPRXGET: 1\r\n" + OK)
        term.exchange("AT+CIPOPEN?", f'\r\n+CIPOPEN: 0,"TCP","127.0.0.1",{server.port},-1\r\n'.encode()
                      + b"".join(f"+CIPOPEN: {link}\r\n".encode() for link in range(1, 10)) + OK)
        term.send(f"AT+CIPSEND=0,{len(NASTY)}\r")
        term.expect(b"\r\n> ")
        term.send(NASTY)
        term.expect(OK + f"\r\n+CIPSEND: 0,{len(NASTY)},{len(NASTY)}\r\n".encode())
        term.expect(b"\r\n+CIPRXGET: 1,0\r\n")
        term.exchange("AT+CIPRXGET=4,0", f"\r\n+CIPRXGET: 4,0,{len(NASTY)}\r\n".encode() + OK)
        term.send("AT+CIPRXGET=2,0,10\r")
        assert term.read_block(b"+CIPRXGET: 2,") == (f"0,10,{len(NASTY) - 10}".encode(), NASTY[:10])
        term.send("AT+CIPRXGET=2,0\r")
        assert term.read_block(b"+CIPRXGET: 2,") == (f"0,{len(NASTY) - 10},0".encode(), NASTY[10:])
        term.exchange("AT+CIPRXGET=2,0", b"\r\n+IP ERROR: No data\r\n" + ERROR)
        term.exchange("AT+CIPCLOSE?", b"\r\n+CIPCLOSE: 1,0,0,0,0,0,0,0,0,0\r\n" + OK)
        assert bytes(server.received) == NASTY
        term.send("AT+CIPCLOSE=0\r")
        term.expect(OK + b"\r\n+CIPCLOSE: 0,0\r\n")
        assert peer_sees_end(server)
        term.exchange("AT+CIPCLOSE?", b"\r\n+CIPCLOSE: 0,0,0,0,0,0,0,0,0,0\r\n" + OK)
        term.exchange("AT+CIPCLOSE=0", ERROR)
        [traffic] = sim.traffic()
        assert (traffic.up_bytes, traffic.down_bytes, traffic.state) == (len(NASTY), len(NASTY), "closed")


def test_push_mode_gives_the_data_with_ipd() -> None:
    with peer(echo) as server, running("simcom", echo=False) as (_sim, term):
        term.send("AT+NETOPEN\r")
        term.expect(OK + b"\r\n+NETOPEN: 0\r\n")
        term.send(f'AT+CIPOPEN=1,"TCP","127.0.0.1",{server.port}\r')
        term.expect(OK + b"\r\n+CIPOPEN: 1,0\r\n")
        term.send("AT+CIPSEND=1,6\r")
        term.expect(b"\r\n> ")
        term.send(b"\r\nOK\r\n")
        term.expect(OK + b"\r\n+CIPSEND: 1,6,6\r\n")
        term.expect(f"\r\nRECV FROM:127.0.0.1:{server.port}\r\n\r\n+IPD6\r\n\r\nOK\r\n".encode())


def test_open_failures_and_links_in_use() -> None:
    with peer(echo) as server, running("simcom", echo=False) as (_sim, term):
        term.exchange("AT+CIPRXGET=1", OK)
        term.send(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{server.port}\r')
        term.expect(OK + b"\r\n+CIPOPEN: 0,2\r\n")  # network not opened
        term.send("AT+NETOPEN\r")
        term.expect(OK + b"\r\n+NETOPEN: 0\r\n")
        term.send(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{closed_port()}\r')
        term.expect(OK + b"\r\n+CIPOPEN: 0,1\r\n")  # refused
        simcom_online(term, server.port, first=False)
        term.send(f'AT+CIPOPEN=0,"TCP","127.0.0.1",{server.port}\r')
        term.expect(OK + b"\r\n+CIPOPEN: 0,4\r\n")  # the link is in use
        term.send('AT+CIPOPEN=2,"TCP","no-such-host.invalid",443\r')
        term.expect(OK + b"\r\n+CIPOPEN: 2,11\r\n", timeout=15)  # RFC 6761: .invalid never resolves


def test_peer_close_urc_and_the_data_stays_readable() -> None:
    with peer(say_and_close(b"bye\r\nOK\r\n")) as server, running("simcom") as (_sim, term):
        simcom_online(term, server.port)
        term.expect(b"\r\n+CIPRXGET: 1,0\r\n\r\n+IPCLOSE: 0,1\r\n")
        term.send("AT+CIPRXGET=2,0,100\r")
        assert term.read_block(b"+CIPRXGET: 2,") == (b"0,9,0", b"bye\r\nOK\r\n")
        term.exchange("AT+CIPSEND=0,3", ERROR)
        simcom_online(term, server.port, first=False)  # the link can be opened again


@pytest.mark.parametrize(("line", "answer"), [
    ('AT+CIPOPEN=10,"TCP","127.0.0.1",80', ERROR),
    ('AT+CIPOPEN=0,"UDP","127.0.0.1",80', ERROR),
    ('AT+CIPOPEN=0,"TCP","127.0.0.1"', ERROR),
    ('AT+CIPOPEN=0,"TCP","127.0.0.1",65536', ERROR),
    ("AT+CIPSEND=0,1501", ERROR),
    ("AT+CIPSEND=0", ERROR),
    ("AT+CIPRXGET=3,0", ERROR),
    ("AT+CIPRXGET=2", ERROR),
    ("AT+CIPRXGET=2,0,1501", ERROR),
    ("AT+CIPRXGET=5", ERROR),
    ("AT+CIPMODE=1", ERROR),
    ("AT+NETOPEN=1", ERROR),
    ("AT+CIPCLOSE=x", ERROR),
    ("AT+QIOPEN=1,0,\"TCP\",\"127.0.0.1\",80,0,0", ERROR),  # another family's command
])
def test_malformed_commands_get_errors(line: str, answer: bytes) -> None:
    with running("simcom", echo=False) as (_sim, term):
        term.exchange(line, answer)
        term.exchange("AT", OK)


def test_registration_loss_closes_the_network_and_links() -> None:
    with peer(echo) as server, running("simcom") as (sim, term):
        simcom_online(term, server.port)
        term.send(f'AT+CIPOPEN=5,"TCP","127.0.0.1",{server.port}\r')
        term.expect(OK + b"\r\n+CIPOPEN: 5,0\r\n")
        sim.set_registration("none")
        term.expect(b"\r\n+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY\r\n"
                    b"\r\n+IPCLOSE: 0,1\r\n\r\n+IPCLOSE: 5,1\r\n")
        assert peer_sees_end(server)
        term.exchange("AT+NETOPEN?", b"\r\n+NETOPEN: 0\r\n" + OK)
        sim.set_registration("home")
        term.send("AT+NETOPEN\r")
        term.expect(OK + b"\r\n+NETOPEN: 0\r\n")
        simcom_online(term, server.port, first=False)


def test_network_closes_links() -> None:
    with peer(echo) as server, running("simcom") as (sim, term):
        simcom_online(term, server.port)
        assert sim.close_sockets() == 1
        term.expect(b"\r\n+IPCLOSE: 0,1\r\n")
        assert peer_sees_end(server)
        term.exchange("AT+NETOPEN?", b"\r\n+NETOPEN: 1\r\n" + OK)


def test_creset_restarts_with_its_startup_urcs() -> None:
    with peer(echo) as server, running("simcom", reboot_seconds=0.5) as (sim, term):
        simcom_online(term, server.port)
        started = time.monotonic()
        term.send("AT+CRESET\r")
        term.expect(OK)
        term.expect(STARTUP, timeout=2)
        assert time.monotonic() - started >= 0.45
        assert peer_sees_end(server)
        term.exchange("AT", b"AT\r" + OK)
        term.exchange("AT+NETOPEN?", b"AT+NETOPEN?\r\r\n+NETOPEN: 0\r\n" + OK)
        term.exchange("AT+CIPRXGET?", b"AT+CIPRXGET?\r\r\n+CIPRXGET: 0\r\n" + OK)
        assert sim.status().sockets == ()
