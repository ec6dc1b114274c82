"""Test support: a stand-in for `firmware.reader.PcscReader` holding one card simulated in this
process (sim.inprocess), always present, for the terminal's flow tests; and the pauses such
tests shorten. The PC/SC path itself is tested through a real pcscd elsewhere."""

from __future__ import annotations

from typing import Any

from firmware.reader import CardTimeoutError
from firmware.sd_notify import Notifier
from sim.inprocess import fresh_card

FAST = {"notifier": Notifier({}), "error_pause": 0.0, "outcome_pause": 0.0, "card_wait": 5.0}


class _Session:
    def __init__(self, card: Any) -> None:
        self.card = card
        self.protocol = card.protocol
        self.atr = b""

    def transmit(self, tpdu: bytes) -> bytes:
        return self.card.process(tpdu)

    def disconnect(self, *_: Any) -> None:
        return None


class SimReader:
    """One simulated card of `profile` (None: no card ever comes), always present."""

    def __init__(self, profile: str | None = "visa_cda_online") -> None:
        self.profile = profile

    def pick(self, name: str | None) -> str:
        return "sim reader"

    def connect_when_ready(self, name: str, timeout: float | None = None) -> _Session:
        if self.profile is None:
            raise CardTimeoutError("no card")
        return _Session(fresh_card(self.profile))

    def close(self) -> None:
        return None

    def cancel(self) -> None:
        return None
