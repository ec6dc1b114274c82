"""Bad input never stops the host simulator: broken frames, oversized frames, no TLS, refused
certificates, silent peers, unknown MTIs, malformed messages; and 20 terminals at once. After
each, the host still serves the next client. Property tests feed the request processor any bytes.

TEST KEYS: sim/host/*.toml and the simulator profiles' issuer master keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

import iso8583
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_host_sim_support import AMOUNT, CARD_PIN, TIMEOUT, Keys, Terminal, kernel_request, now

from emv.sensitive import pan_token
from firmware import messages
from firmware.framing import encode_frame
from firmware.iso8583_spec import SPEC
from firmware.messages import Fields, NetworkCode
from firmware.tls_stream import StreamClosed, StreamError, TlsError, TlsStream, client_context, open_tcp
from sim.card.profile import load_profile
from sim.host.accounts import AccountRules
from sim.host.processing import error_response
from sim.host.server import HostSimulator
from sim.host.test_pki import make_test_pki

ECHO = NetworkCode.ECHO
PAN = load_profile("visa_cda_online").applications[0].pan


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("host-pki")
    make_test_pki(folder)
    return folder


def with_host(pki_dir: Path, test: Callable[[HostSimulator, Terminal], Awaitable[Any]],
              **options: Any) -> Any:
    async def main() -> Any:
        async with asyncio.timeout(60), HostSimulator(pki_dir, **options) as host:
            return await test(host, Terminal(host.pki))
    return asyncio.run(main())


async def served(host: HostSimulator, terminal: Terminal) -> bool:
    """A good request on a new connection is approved."""
    _, data, keys = terminal.sale(kernel_request("sda_only"), pin=None)
    return (await terminal.exchange(host.port, data, keys))["39"] == "00"


async def closed_without_answer(terminal: Terminal, port: int, payload: bytes, *,
                                leave: bool = False) -> None:
    """Send `payload` (raw bytes inside TLS) and expect the host to close the connection; or,
    when `leave`, close it at once."""
    raw = await open_tcp("127.0.0.1", port, TIMEOUT)
    tls = await TlsStream.connect(raw, terminal.context, "localhost", TIMEOUT)
    await tls.write(payload)
    try:
        while not leave and await tls.read(4096):
            pass  # the host sends nothing back: reading reaches its end
    except StreamError:
        pass  # or the connection breaks
    finally:
        await tls.close()


def hand_made(fields: dict[str, str], keys: Keys) -> bytes:
    """A message packed by pyiso8583 alone, outside our rules, with a correct MAC."""
    data, _ = iso8583.encode({**fields, "53": keys.ksn.hex().upper(), "64": "00" * 8}, SPEC)
    covered = bytes(data[:-8])
    return covered + keys.request_mac(covered)


# --- Frames and TLS -------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    encode_frame(b"\xde\xad\xbe\xef" * 10),
    encode_frame(b""),
    encode_frame(b"0200"),
    b"\xff\xff" + bytes(70_000),  # a length header over the limit, and 70,000 bytes after it
    b"\x01",  # half a header, then the end
    encode_frame(b"0200")[:-2],  # half a frame, then the end
], ids=["garbage", "empty", "mti-only", "oversized", "half-header", "half-frame"])
def test_broken_frames_end_one_connection_only(pki_dir: Path, payload: bytes,
                                               caplog: pytest.LogCaptureFixture) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        await closed_without_answer(terminal, host.port, payload, leave=len(payload) < 6)
        assert await served(host, terminal)
        assert host.ledger.entries()[-1].approved and len(host.ledger.entries()) == 1

    with caplog.at_level(logging.INFO, logger="sim.host"):
        with_host(pki_dir, test)
    assert PAN not in caplog.text


def test_no_tls_and_a_foreign_certificate_are_refused(pki_dir: Path, tmp_path: Path) -> None:
    other = make_test_pki(tmp_path / "other", seed="another test pki")
    foreign = client_context(other.host_ca_cert, other.terminal_cert, other.terminal_key)
    own_ca_foreign_cert = client_context(make_test_pki(tmp_path / "mine").host_ca_cert, other.terminal_cert,
                                         other.terminal_key)

    async def test(host: HostSimulator, terminal: Terminal) -> None:
        raw = await open_tcp("127.0.0.1", host.port, TIMEOUT)
        await raw.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        while await raw.read(4096):
            pass  # at most a TLS alert, then the host closes
        await raw.close()
        with pytest.raises(TlsError):  # the client refuses the host (another CA)
            raw = await open_tcp("127.0.0.1", host.port, TIMEOUT)
            await TlsStream.connect(raw, foreign, "localhost", TIMEOUT)
        with pytest.raises(TlsError):  # the host refuses the client certificate
            raw = await open_tcp("127.0.0.1", host.port, TIMEOUT)
            tls = await TlsStream.connect(raw, own_ca_foreign_cert, "localhost", TIMEOUT)
            await tls.read(10)  # TLS 1.3: the refusal comes after the client's Finished
        assert await served(host, terminal)
        await asyncio.sleep(0.05)
        assert host.stats.tls_failures >= 3

    with_host(pki_dir, test)


def test_a_silent_peer_is_dropped_and_others_are_served_meanwhile(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        silent = await open_tcp("127.0.0.1", host.port, TIMEOUT)
        idle = await terminal.connect(host.port)
        assert await served(host, terminal)
        assert await silent.read(100) == b""  # handshake timeout: the host closed it
        with pytest.raises(StreamClosed):
            await idle.receive(TIMEOUT)  # idle timeout
        await silent.close()
        await idle.close()

    with_host(pki_dir, test, handshake_timeout=0.5, idle_timeout=0.5)


# --- Messages that break the rules ----------------------------------------------------------

def test_an_unknown_mti_closes_the_connection(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        keys = terminal.next_keys()
        message = hand_made({"t": "0600", "7": "1126120000", "11": "000001", "41": "TERM0001"}, keys)
        link = await terminal.connect(host.port)
        await link.send(message)
        with pytest.raises(StreamClosed):
            await link.receive(TIMEOUT)
        await link.close()
        assert await served(host, terminal)

    with_host(pki_dir, test)


def test_a_response_mti_sent_to_the_host_closes_the_connection(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        request = messages.network_request(ECHO, acceptor=terminal.acceptor, stan=1, at=now())
        data, _ = terminal.signed(messages.response_to(request, "00"))
        link = await terminal.connect(host.port)
        await link.send(data)
        with pytest.raises(StreamClosed):
            await link.receive(TIMEOUT)
        await link.close()
        assert await served(host, terminal)

    with_host(pki_dir, test)


def test_a_malformed_request_with_a_good_mac_is_a_format_error(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> Fields:
        fields, _, _ = terminal.sale(kernel_request("sda_only"), pin=None)
        broken = {key: value for key, value in fields.items() if key not in ("22", "53")}  # 22 is mandatory
        keys = terminal.next_keys()
        link = await terminal.connect(host.port)
        await link.send(hand_made(broken, keys))
        answer = messages.verify_mac(await link.receive(TIMEOUT), keys.response_mac)
        await link.close()
        assert host.ledger.entries() == []
        return answer

    answer = with_host(pki_dir, test)
    assert answer["t"] == "0210" and answer["39"] == "30" and "2" not in answer


def test_a_malformed_request_with_a_bad_mac_is_63(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> str:
        fields, _, _ = terminal.sale(kernel_request("sda_only"), pin=None)
        broken = {key: value for key, value in fields.items() if key not in ("22", "53")}
        keys = terminal.next_keys()
        data = hand_made(broken, keys)
        data = data[:-1] + bytes([data[-1] ^ 0x80])
        link = await terminal.connect(host.port)
        await link.send(data)
        answer = messages.verify_mac(await link.receive(TIMEOUT), keys.response_mac)
        await link.close()
        return answer["39"]

    assert with_host(pki_dir, test) == "63"


def test_a_request_without_ksn_or_mac_gets_no_answer(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        request = messages.network_request(ECHO, acceptor=terminal.acceptor, stan=1, at=now())
        link = await terminal.connect(host.port)
        await link.send(messages.pack(request))
        with pytest.raises(StreamClosed):
            await link.receive(TIMEOUT)
        await link.close()
        assert await served(host, terminal)

    with_host(pki_dir, test)


def test_error_response_echoes_only_what_an_answer_may_carry() -> None:
    request = {"t": "0200", "2": "4761739001010010", "3": "000000", "4": "000000001000", "7": "1126120000",
               "11": "000001", "41": "TERM0001", "35": "4761739001010010D49122011234", "53": "00" * 12,
               "55": "9F2608" + "00" * 8, "64": "00" * 8, "42": "bad\x00merchant!!"}
    answer = error_response(request, "30")
    assert answer is not None
    assert dict(answer) == {"t": "0210", "3": "000000", "4": "000000001000", "7": "1126120000",
                            "11": "000001", "39": "30", "41": "TERM0001", "53": "00" * 12}
    assert error_response({**request, "t": "0110"}, "30") is None
    unusable_time = {"t": "0800", "7": "x", "11": "000001", "41": "TERM0001", "70": "301"}
    assert error_response(unusable_time, "30") is None


# --- Many terminals -------------------------------------------------------------------------

def test_twenty_terminals_at_once(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> list[Fields]:
        requests = [terminal.sale(kernel_request("visa_cda_online"), pin=CARD_PIN) for _ in range(20)]

        async def one(data: bytes, keys: Keys) -> Fields:
            return await terminal.exchange(host.port, data, keys)

        async def nuisance(payload: bytes) -> None:
            await closed_without_answer(terminal, host.port, payload)

        results = await asyncio.gather(*(one(data, keys) for _, data, keys in requests),
                                       nuisance(b"\xff\xff" + bytes(70_000)), nuisance(encode_frame(b"junk")))
        answers = [answer for answer in results if answer is not None]
        assert len(host.ledger.entries()) == 20
        assert host.ledger.balance(pan_token(PAN)) == 10**7 - 20 * AMOUNT
        return answers

    answers = with_host(pki_dir, test, rules=AccountRules(opening_balance=10**7))
    assert [answer["39"] for answer in answers] == ["00"] * 20
    assert len({answer["37"] for answer in answers}) == 20
    assert sorted(answer["11"] for answer in answers) == [f"{n:06d}" for n in range(1, 21)]


# --- Property tests of the processor --------------------------------------------------------

@cache
def processor_host(pki_dir: Path) -> HostSimulator:
    return HostSimulator(pki_dir)  # not started: its processor is used directly


@cache
def signed_sale(pki_dir: Path) -> tuple[bytes, Keys]:
    terminal = Terminal(processor_host(pki_dir).pki)
    _, data, keys = terminal.sale(kernel_request("sda_only"), pin=None)
    return data, keys


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_any_bytes_get_an_answer_or_none_and_book_nothing(pki_dir: Path, frame: bytes) -> None:
    host = processor_host(pki_dir)
    before = len(host.ledger.entries())
    answer = host.processor.handle(frame)
    assert answer.data is None or messages.unpack(answer.data)["39"] in ("30", "63")
    assert len(host.ledger.entries()) == before


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_damaged_request_is_never_processed(pki_dir: Path, data: st.DataObject) -> None:
    host = processor_host(pki_dir)
    message, _ = signed_sale(pki_dir)
    damaged = bytearray(message)
    how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    position = data.draw(st.integers(0, len(message) - 1))
    if how == "flip":
        damaged[position] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        del damaged[position:position + data.draw(st.integers(1, 20))]
    else:
        damaged[position:position] = data.draw(st.binary(min_size=1, max_size=20))
    before = len(host.ledger.entries())
    answer = host.processor.handle(bytes(damaged))
    assert len(host.ledger.entries()) == before
    if answer.data is not None:
        fields = messages.unpack(answer.data)
        assert fields["39"] in ("30", "63")


def test_the_undamaged_request_is_processed(pki_dir: Path) -> None:
    host = processor_host(pki_dir)
    message, keys = signed_sale(pki_dir)
    answer = host.processor.handle(message)
    assert answer.data is not None and answer.booked
    assert messages.verify_mac(answer.data, keys.response_mac)["39"] == "00"
