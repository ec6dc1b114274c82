"""The driver that fulfils a kernel's requests (firmware/driver.py), with hand-written kernels."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from emv import apdu
from emv.apdu import Command, Response
from emv.errors import TransportError
from emv.requests import (
    CaptureSignature,
    ChooseApplication,
    ConfirmAmount,
    EnterOfflinePin,
    EnterOnlinePin,
    GoOnline,
    HostStatus,
    OnlineRequest,
    OnlineResponse,
    PinEntry,
    PinStatus,
    Transmit,
)
from emv.selection import Candidate
from emv.sensitive import Sensitive
from firmware import driver

VISA_AID = bytes.fromhex("A0000000031010")
CANDIDATES = (Candidate(VISA_AID, "VISA", None, 1, False),)
ONLINE = OnlineRequest(pan=Sensitive("4761739001010010", "PAN"), pan_sequence_number=1, expiry="4912",
                       track2=None, amount=1500, other_amount=0, currency=978, transaction_type=0,
                       aid=VISA_AID, chip_data=bytes.fromhex("9F2608") + bytes(8))
SELECT = Transmit(apdu.select(VISA_AID))


class RecordingPrompt:
    """A prompt that answers with fixed values and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[Any] = []
        self.pin = PinEntry(PinStatus.ENTERED, pin=Sensitive("1234", "PIN"))
        self.online_pin = PinEntry(PinStatus.BYPASSED)

    def choose_application(self, request: ChooseApplication) -> int | None:
        self.asked.append(request)
        return 0

    def confirm_amount(self, request: ConfirmAmount) -> bool:
        self.asked.append(request)
        return False

    def enter_offline_pin(self, request: EnterOfflinePin) -> PinEntry:
        self.asked.append(request)
        return self.pin

    def enter_online_pin(self, request: EnterOnlinePin) -> PinEntry:
        self.asked.append(request)
        return self.online_pin

    def capture_signature(self, request: CaptureSignature) -> bool:
        self.asked.append(request)
        return True


class RecordingAuthorizer:
    def __init__(self) -> None:
        self.seen: list[OnlineRequest] = []
        self.answer = OnlineResponse(HostStatus.RESPONDED, approved=True, response_code=b"00")

    def authorize(self, request: OnlineRequest) -> OnlineResponse:
        self.seen.append(request)
        return self.answer


def every_request() -> Generator[Any, Any, list[Any]]:
    """Yields one request of each kind and returns the answers it was sent."""
    requests = [
        SELECT,
        ChooseApplication(CANDIDATES),
        ConfirmAmount(1500, 978, 2),
        EnterOfflinePin(1500, 978, 2, tries_left=3, last_try=False, enciphered=False),
        EnterOnlinePin(1500, 978, 2, pan=Sensitive("4761739001010010", "PAN")),
        CaptureSignature(1500, 978, 2),
        GoOnline(ONLINE),
    ]
    answers = []
    for request in requests:
        answers.append((yield request))
    return answers


def test_each_request_goes_to_its_handler_and_the_answer_comes_back() -> None:
    sent: list[Command] = []
    card_answer = Response(bytes.fromhex("6F00"), 0x9000)

    def fulfil(request: Transmit) -> Response:
        sent.append(request.command)
        return card_answer

    prompt, authorizer = RecordingPrompt(), RecordingAuthorizer()
    answers = driver.run(every_request(), fulfil, prompt, authorizer)
    assert sent == [SELECT.command]
    assert [type(r) for r in prompt.asked] == [ChooseApplication, ConfirmAmount, EnterOfflinePin,
                                                EnterOnlinePin, CaptureSignature]
    assert authorizer.seen == [ONLINE]
    assert answers == [card_answer, 0, False, prompt.pin, prompt.online_pin, True, authorizer.answer]


def test_go_online_without_authorizer_is_unable() -> None:
    def kernel() -> Generator[Any, Any, Any]:
        return (yield GoOnline(ONLINE))

    answer = driver.run(kernel(), _no_card, RecordingPrompt(), None)
    assert answer == OnlineResponse.unable()
    assert answer.status == HostStatus.UNABLE and not answer.approved


def test_go_online_needs_no_prompt() -> None:
    def kernel() -> Generator[Any, Any, Any]:
        return (yield GoOnline(ONLINE))

    authorizer = RecordingAuthorizer()
    assert driver.run(kernel(), _no_card, None, authorizer) is authorizer.answer


def test_kernel_without_requests_returns_its_value() -> None:
    def kernel() -> Generator[Any, Any, str]:
        return "done"
        yield  # a generator that asks for nothing

    assert driver.run(kernel(), _no_card) == "done"


def test_unknown_request_is_a_type_error() -> None:
    def kernel() -> Generator[Any, Any, Any]:
        yield object()

    with pytest.raises(TypeError, match="object"):
        driver.run(kernel(), _no_card, RecordingPrompt(), RecordingAuthorizer())


def test_prompt_request_without_prompt_is_a_type_error() -> None:
    def kernel() -> Generator[Any, Any, Any]:
        yield ConfirmAmount(1500, 978, 2)

    with pytest.raises(TypeError, match="ConfirmAmount"):
        driver.run(kernel(), _no_card, None, RecordingAuthorizer())


class CardPulled(Exception):
    pass


def _no_card(request: Transmit) -> Response:
    raise AssertionError("no card command expected")


def _pulled(tpdu: bytes) -> bytes:
    raise CardPulled("card removed")


def test_listed_reader_errors_become_transport_errors() -> None:
    fulfil = driver.card_sender(_pulled, "T=1", errors=(CardPulled,))
    with pytest.raises(TransportError) as info:
        fulfil(SELECT)
    assert isinstance(info.value.__cause__, CardPulled)


def test_other_reader_errors_are_not_translated() -> None:
    fulfil = driver.card_sender(_pulled, "T=1", errors=(KeyError,))
    with pytest.raises(CardPulled):
        fulfil(SELECT)
    with pytest.raises(CardPulled):
        driver.card_sender(_pulled, "T=1")(SELECT)


def test_transport_error_is_thrown_into_the_kernel() -> None:
    received: list[BaseException] = []

    def kernel() -> Generator[Any, Any, str]:
        try:
            yield SELECT
        except TransportError as exc:
            received.append(exc)
            return "card removed"
        return "not reached"

    fulfil = driver.card_sender(_pulled, "T=1", errors=(CardPulled,))
    assert driver.run(kernel(), fulfil) == "card removed"
    assert len(received) == 1 and isinstance(received[0].__cause__, CardPulled)


def test_kernel_goes_on_after_a_thrown_transport_error() -> None:
    def kernel() -> Generator[Any, Any, Any]:
        try:
            yield SELECT
        except TransportError:
            response = yield GoOnline(ONLINE)  # e.g. a reversal after the card is gone
            return response
        return None

    fulfil = driver.card_sender(_pulled, "T=1", errors=(CardPulled,))
    authorizer = RecordingAuthorizer()
    assert driver.run(kernel(), fulfil, None, authorizer) is authorizer.answer
    assert authorizer.seen == [ONLINE]


def test_transport_error_the_kernel_does_not_catch_leaves_run() -> None:
    def kernel() -> Generator[Any, Any, Any]:
        yield SELECT

    fulfil = driver.card_sender(_pulled, "T=1", errors=(CardPulled,))
    with pytest.raises(TransportError):
        driver.run(kernel(), fulfil)


def test_card_sender_applies_t0_get_response() -> None:
    # EMV 4.4 Book 1, 9.3.1.1: case 4 on T=0 goes out as case 3; '61xx' asks for GET RESPONSE.
    fci = bytes.fromhex("6F038401AA")
    sent: list[bytes] = []

    def card(tpdu: bytes) -> bytes:
        sent.append(tpdu)
        if tpdu[1] == 0xA4:
            return bytes([0x61, len(fci)])
        return fci + b"\x90\x00"

    response = driver.card_sender(card, "T=0")(SELECT)
    assert response == Response(fci, 0x9000)
    assert sent == [bytes.fromhex("00A4040007") + VISA_AID, bytes([0x00, 0xC0, 0x00, 0x00, len(fci)])]


def test_card_sender_passes_t1_commands_whole() -> None:
    sent: list[bytes] = []

    def card(tpdu: bytes) -> bytes:
        sent.append(tpdu)
        return bytes.fromhex("6A82")

    assert driver.card_sender(card, "T=1")(SELECT) == Response(b"", 0x6A82)
    assert sent == [bytes.fromhex("00A4040007") + VISA_AID + b"\x00"]
