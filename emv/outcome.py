"""How a transaction ends: the `Outcome` the kernel returns, and `Terminate`, which a step raises
to end the transaction cleanly (EMV 4.4 Book 3, 10: "terminate the transaction")."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from emv.errors import EmvError
from emv.sensitive import Sensitive


class Terminate(EmvError):
    """End the transaction now. `reason` is a short machine code (`card_blocked`,
    `missing_data`, `card_removed`, ...); `detail` says what happened, with no card data."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class OutcomeKind(StrEnum):
    APPROVED_OFFLINE = "approved_offline"  # TC at the first GENERATE AC
    APPROVED_ONLINE = "approved_online"  # issuer approved, TC at the second GENERATE AC
    DECLINED_OFFLINE = "declined_offline"  # AAC at the first GENERATE AC
    DECLINED_ONLINE = "declined_online"  # issuer declined, or the card declined after approval
    # Book 3, 10.9 / Book 4, 6.3.7: unable to go online, then the default action analysis
    APPROVED_UNABLE_ONLINE = "approved_unable_online"  # TC with 8A = 'Y3': store and forward
    DECLINED_UNABLE_ONLINE = "declined_unable_online"  # AAC with 8A = 'Z3'
    TRY_AGAIN = "try_again"  # the card may work when inserted again (removed, mute)
    TERMINATED = "terminated"  # end application: not accepted, blocked, malformed, cancelled

    @property
    def approved(self) -> bool:
        return self in (OutcomeKind.APPROVED_OFFLINE, OutcomeKind.APPROVED_ONLINE,
                        OutcomeKind.APPROVED_UNABLE_ONLINE)


@dataclass
class Outcome:
    """What receipts, the journal, the store-and-forward queue and the host messages need.

    PAN and track 2 stay `Sensitive`; everything else is safe to print and to store.
    """

    kind: OutcomeKind
    reason: str | None = None
    amount: int = 0
    currency: int = 0
    exponent: int = 2
    aid: bytes | None = None
    label: str | None = None
    preferred_name: str | None = None
    scheme: str | None = None
    pan: Sensitive[str] | None = None
    pan_masked: str | None = None
    pan_sequence_number: int | None = None
    expiry: str | None = None  # YYMM
    track2: Sensitive[bytes] | None = None
    issuer_country: int | None = None
    language: list[str] = field(default_factory=list)
    atc: bytes | None = None
    cryptogram: bytes | None = None  # 9F26 of the final GENERATE AC
    cryptogram_type: str | None = None  # "TC", "ARQC", "AAC" of the final GENERATE AC
    first_cryptogram_type: str | None = None
    cid: int | None = None
    iad: bytes | None = None  # 9F10
    unpredictable_number: bytes | None = None
    tvr: bytes = bytes(5)
    tsi: bytes = bytes(2)
    cvm_results: bytes = bytes(3)
    cvm: str | None = None  # the CVM performed, for the receipt
    signature_required: bool = False
    oda: str = "none"  # "sda", "dda", "cda", "failed", "none"
    response_code: bytes | None = None  # 8A
    authorization_code: bytes | None = None
    host_reference: str | None = None
    issuer_authentication: str | None = None  # "passed", "failed", None when not performed
    script_results: bytes = b""  # 9F5B
    advice: bool = False  # the card asked for an advice (Book 3, 10.8)
    chip_data: bytes = b""  # field 55 of the final cryptogram, for advices and the queue
    transaction_date: str | None = None  # YYMMDD
    events: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready view, safe to print: hex for bytes, no PAN, no track 2."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, Sensitive):
                continue
            if isinstance(value, bytes):
                out[key] = value.hex().upper()
            elif isinstance(value, StrEnum):
                out[key] = value.value
            else:
                out[key] = value
        return out
