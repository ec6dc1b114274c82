"""The PC/SC adapter against a real pcscd with the vpcd driver."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from firmware.reader import (
    AsyncReader,
    CardAbsentError,
    CardTimeoutError,
    NoReaderError,
    PcscReader,
)
from sim import pcscd

pytestmark = pytest.mark.pcscd


class EchoCard:
    """Answers every command with its own header and 9000; can be made to stall."""

    atr = bytes.fromhex("3BE000008131FE45")  # T=1 only

    def __init__(self) -> None:
        self.stall = threading.Event()
        self.stalled = threading.Event()

    def power_on(self) -> bytes:
        return self.atr

    def power_off(self) -> None:
        pass

    def process(self, capdu: bytes) -> bytes:
        if self.stall.is_set():
            self.stalled.set()
            time.sleep(1.0)
        return capdu[:4] + b"\x90\x00"


def test_lists_the_virtual_reader(pcscd_daemon: pcscd.PrivatePcscd) -> None:
    reader = PcscReader()
    try:
        assert pcscd.reader_name(0) in reader.readers()
        assert reader.pick("Virtual PCD") == pcscd.reader_name(0)
        with pytest.raises(NoReaderError):
            reader.pick("No Such Reader")
    finally:
        reader.close()


def test_wait_for_insertion_and_removal_without_polling(pcscd_daemon, serve_card) -> None:
    reader = PcscReader()
    name = pcscd.reader_name(0)
    try:
        with pytest.raises(CardTimeoutError):
            reader.wait_for_card(name, timeout=0.3)
        card = EchoCard()
        links = []
        timer = threading.Timer(0.3, lambda: links.append(serve_card(card)))
        timer.start()
        started = time.monotonic()
        cpu = time.process_time()
        reader.wait_for_card(name, timeout=10)
        assert time.monotonic() - started >= 0.25
        # Blocking in pcscd, not spinning here: little CPU spent while waiting.
        assert time.process_time() - cpu < 0.2
        session = reader.connect(name)
        assert session.protocol == "T=1" and session.atr == card.atr
        assert session.transmit(bytes.fromhex("80CA9F3600")) == bytes.fromhex("80CA9F369000")
        session.disconnect()
        links[0].remove()
        reader.wait_for_removal(name, timeout=10)
        assert not reader.card_present(name)
    finally:
        reader.close()


def test_card_pulled_mid_exchange_is_a_typed_error(pcscd_daemon, serve_card) -> None:
    card = EchoCard()
    link = serve_card(card)
    reader = PcscReader()
    name = pcscd.reader_name(0)
    try:
        reader.wait_for_card(name, timeout=10)
        session = reader.connect(name)
        card.stall.set()
        remover = threading.Thread(target=lambda: (card.stalled.wait(5), link.remove()))
        remover.start()
        with pytest.raises(CardAbsentError):
            session.transmit(bytes.fromhex("80CA9F3600"))
        with pytest.raises(CardAbsentError):
            session.transmit(bytes.fromhex("80CA9F3600"))
        session.disconnect()
        remover.join()
        reader.wait_for_removal(name, timeout=10)
    finally:
        reader.close()


def test_connect_without_card_is_a_typed_error(pcscd_daemon) -> None:
    reader = PcscReader()
    try:
        with pytest.raises(CardAbsentError):
            reader.connect(pcscd.reader_name(1))
    finally:
        reader.close()


def test_async_reader_keeps_the_loop_free(pcscd_daemon, serve_card) -> None:
    async def scenario() -> tuple[int, bytes]:
        reader = AsyncReader()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        name = pcscd.reader_name(0)
        threading.Timer(0.3, lambda: serve_card(EchoCard())).start()
        await reader.wait_for_card(name, timeout=10)
        session = await reader.connect(name)
        answer = await reader.transmit(session, bytes.fromhex("00B2010C00"))
        await reader.run(lambda _r: session.disconnect())
        task.cancel()
        reader.close()
        return ticks, answer

    ticks, answer = asyncio.run(scenario())
    assert answer == bytes.fromhex("00B2010C9000")
    assert ticks >= 10  # the loop kept running while the worker waited for the card
