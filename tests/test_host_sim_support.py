"""A small terminal for the host simulator tests, written from the docs and not from `sim.host`.

Its keys come from `sim/host/terminal_test_keys.toml` (TEST KEYS) through the terminal's own
registers (`firmware.dukpt.TerminalDukpt`), not the host's BDK derivation; its MAC is AES-CMAC
from `cryptography`, truncated to 8 bytes (docs/host-protocol.md, MAC); its PIN blocks are
psec's ISO 9564-1 format 4. Messages are built with `firmware.messages` and travel over
`firmware.tls_stream` (the client's MemoryBIO TLS) with `firmware.framing`.

The kernel runs in-process on a `SimCard` (`sim.inprocess.transact`); `live_sale` runs it in a
worker thread while the host serves on the test's event loop, and its authorizer sends the
kernel's real `OnlineRequest` to the host and hands the answer back to the kernel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from psec import pinblock

from emv.requests import EnterOnlinePin, OnlineRequest, OnlineResponse, PinEntry, PinStatus
from emv.sensitive import Sensitive
from firmware import messages
from firmware.config import load_config
from firmware.dukpt import KeyType, KeyUsage, TerminalDukpt, working_key
from firmware.messages import Acceptor, Fields
from firmware.prompts import ScriptedPrompt
from firmware.tls_stream import FramedConnection, TlsStream, client_context, open_tcp
from sim.host.test_pki import TestPki
from sim.inprocess import Run, fresh_card, transact

TIMEOUT = 10.0
KEYS_FILE = Path(__file__).resolve().parent.parent / "sim" / "host" / "terminal_test_keys.toml"
ACCEPTOR = Acceptor(terminal_id="TERM0001", merchant_id="MERCHANT0000001", acquirer_id="12345")
CARD_PIN = "1234"  # every simulator profile's PIN (sim/card/profile.py default)
AMOUNT = 6000  # above the default floor limit: the profiles below go online with an ARQC
# Online with an ARPC: VIS CVN 18 with online PIN, M/Chip CVN 17 (ARPC in CDOL2), VIS CVN 10.
PROFILES = ("visa_cda_online", "mastercard_cda", "sda_only")


def aes_cmac_8(key: bytes) -> Callable[[bytes], bytes]:
    def mac(data: bytes) -> bytes:
        cmac = CMAC(algorithms.AES(key))
        cmac.update(data)
        return cmac.finalize()[:8]
    return mac


@dataclass(frozen=True)
class Keys:
    """The working keys of one KSN, as the terminal derives them (ANSI X9.24-3-2017, 6.3.3)."""

    ksn: bytes
    pin_key: bytes = field(repr=False)
    request_mac: Callable[[bytes], bytes] = field(repr=False)
    response_mac: Callable[[bytes], bytes] = field(repr=False)


class Terminal:
    """One terminal under test: DUKPT registers, STANs, a TLS client context."""

    def __init__(self, pki: TestPki, acceptor: Acceptor = ACCEPTOR) -> None:
        data = tomllib.loads(KEYS_FILE.read_text())
        self.dukpt = TerminalDukpt.load(bytes.fromhex(data["initial_key"]),
                                        bytes.fromhex(data["initial_key_id"]))
        self.acceptor = acceptor
        self.context = client_context(pki.host_ca_cert, pki.terminal_cert, pki.terminal_key)
        self._stan = 0
        self.keys_by_ksn: dict[bytes, Keys] = {}

    def next_stan(self) -> int:
        self._stan += 1
        return self._stan

    def next_keys(self) -> Keys:
        ksn, transaction_key = self.dukpt.next()

        def key(usage: KeyUsage) -> bytes:
            return working_key(transaction_key, ksn, usage, KeyType.AES128)

        keys = Keys(ksn, key(KeyUsage.PIN_ENCRYPTION), aes_cmac_8(key(KeyUsage.MAC_GENERATION)),
                    aes_cmac_8(key(KeyUsage.MAC_VERIFICATION)))
        self.keys_by_ksn[ksn] = keys
        return keys

    def with_pin(self, request: OnlineRequest, pin: str | None) -> tuple[OnlineRequest, Keys]:
        """`request` with a PIN block under the PIN key of a new KSN (none when `pin` is None)."""
        keys = self.next_keys()
        if pin is None:
            return dataclasses.replace(request, pin_block=None, pin_key_serial=None), keys
        block = pinblock.encipher_pinblock_iso_4(keys.pin_key, pin, request.pan.reveal())
        enciphered = Sensitive(block, "PIN block")
        return dataclasses.replace(request, pin_block=enciphered, pin_key_serial=keys.ksn), keys

    def sale(self, request: OnlineRequest, *, pin: str | None = CARD_PIN, stan: int | None = None,
             at: datetime.datetime | None = None) -> tuple[Fields, bytes, Keys]:
        """A 0200 for `request`: its fields, the MACed message and its keys."""
        request, keys = self.with_pin(request, pin)
        fields = messages.financial_request(request, acceptor=self.acceptor, stan=stan or self.next_stan(),
                                            at=at or now())
        return fields, self.sign(fields, keys), keys

    def signed(self, fields: Fields) -> tuple[bytes, Keys]:
        keys = self.next_keys()
        return self.sign(fields, keys), keys

    @staticmethod
    def sign(fields: Fields, keys: Keys) -> bytes:
        return messages.attach_mac(fields, keys.request_mac, ksn=keys.ksn)

    async def connect(self, port: int) -> FramedConnection:
        raw = await open_tcp("127.0.0.1", port, TIMEOUT)
        return FramedConnection(await TlsStream.connect(raw, self.context, "localhost", TIMEOUT))

    async def exchange(self, port: int, data: bytes, keys: Keys, timeout: float = TIMEOUT) -> Fields:
        """Send one message on a new connection; the verified answer."""
        link = await self.connect(port)
        try:
            await link.send(data)
            answer = await link.receive(timeout)
        finally:
            await link.close()
        return messages.verify_mac(answer, keys.response_mac)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@cache
def kernel_config() -> Any:
    return load_config().kernel


class PinPadPrompt(ScriptedPrompt):
    """A scripted cardholder whose online PIN is enciphered under the terminal's DUKPT PIN key."""

    def __init__(self, terminal: Terminal, pin: str | None) -> None:
        super().__init__(pin=pin)
        self.terminal = terminal

    def enter_online_pin(self, request: EnterOnlinePin) -> PinEntry:
        self.asked.append("enter_online_pin")
        pin = self._next_pin()
        if pin is None:
            return PinEntry(PinStatus.BYPASSED)
        keys = self.terminal.next_keys()
        block = pinblock.encipher_pinblock_iso_4(keys.pin_key, pin, request.pan.reveal())
        return PinEntry(PinStatus.ENTERED, pin_block=Sensitive(block, "PIN block"), key_serial=keys.ksn)


class Capture:
    """An authorizer that keeps the kernel's request and answers "unable to go online"."""

    def __init__(self) -> None:
        self.seen: list[OnlineRequest] = []

    def authorize(self, request: OnlineRequest) -> OnlineResponse:
        self.seen.append(request)
        return OnlineResponse.unable()


@cache
def kernel_request(profile: str, amount: int = AMOUNT) -> OnlineRequest:
    """The kernel's real OnlineRequest for a sale on a fresh simulated card (PIN block dropped:
    each test enciphers its own under a fresh KSN)."""
    capture = Capture()
    transact(fresh_card(profile), kernel_config(), amount, prompt=ScriptedPrompt(pin=None),
             authorizer=capture)
    if len(capture.seen) != 1:
        raise AssertionError(f"{profile}: the kernel did not go online")
    return dataclasses.replace(capture.seen[0], pin_block=None, pin_key_serial=None)


@dataclass
class HostLink:
    """The authorizer of `live_sale`: the kernel's request to the host and back (0200/0210)."""

    terminal: Terminal
    port: int
    loop: asyncio.AbstractEventLoop
    sent: list[Fields] = field(default_factory=list)
    answers: list[Fields] = field(default_factory=list)

    def authorize(self, request: OnlineRequest) -> OnlineResponse:
        ksn = request.pin_key_serial
        keys = self.terminal.keys_by_ksn[ksn] if ksn is not None else self.terminal.next_keys()
        fields = messages.financial_request(request, acceptor=self.terminal.acceptor,
                                            stan=self.terminal.next_stan(), at=now())
        self.sent.append(fields)
        future = asyncio.run_coroutine_threadsafe(
            self.terminal.exchange(self.port, self.terminal.sign(fields, keys), keys), self.loop)
        answer = future.result(TIMEOUT)
        self.answers.append(answer)
        return messages.to_online_response(answer)


async def live_sale(terminal: Terminal, port: int, profile: str, *, pin: str | None = CARD_PIN,
                    amount: int = AMOUNT) -> tuple[Run, HostLink]:
    """A whole kernel sale on a fresh simulated card, authorized by the host on `port`."""
    link = HostLink(terminal, port, asyncio.get_running_loop())
    card = fresh_card(profile)
    run = await asyncio.to_thread(transact, card, kernel_config(), amount,
                                  prompt=PinPadPrompt(terminal, pin), authorizer=link)
    return run, link
