"""What the kernel asks of its driver. The kernel yields these and is sent the answer back.

The driver in `firmware/` fulfils them from the reader, the UI and the host; tests fulfil
them from the in-process card simulator or recorded traces (ARCHITECTURE principle 1).
Each request names the type of its answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from emv.apdu import Command
from emv.sensitive import Sensitive

if TYPE_CHECKING:
    from emv.selection import Candidate


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send one command APDU; the driver answers with an `emv.apdu.Response` (transport
    rules of Book 1, 9.3 already applied). A card gone or mute is thrown into the kernel as
    `emv.errors.TransportError`."""

    command: Command


@dataclass(frozen=True, slots=True)
class ChooseApplication:
    """Book 1, 12.4: the cardholder picks one of `candidates` (already in display order; the
    merchant's preferred brand first on a co-badged card). With one candidate it asks for
    confirmation. Answer: the chosen index, or None when the cardholder cancels."""

    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class ConfirmAmount:
    """The cardholder confirms the amount. Answer: bool."""

    amount: int
    currency: int
    exponent: int
    label: str | None = None


class PinStatus(StrEnum):
    ENTERED = "entered"
    BYPASSED = "bypassed"  # PIN pad works, the cardholder did not enter a PIN (Book 3, 10.5.2)
    PAD_UNAVAILABLE = "pad_unavailable"  # no PIN pad or it does not work
    CANCELLED = "cancelled"  # the cardholder abandoned the transaction


@dataclass(frozen=True, slots=True)
class PinEntry:
    """Answer to `EnterOfflinePin` (`pin` holds the digits) and `EnterOnlinePin` (`pin_block`
    holds the ISO 9564 format 4 block enciphered by the PIN pad, with its key serial number)."""

    status: PinStatus
    pin: Sensitive[str] | None = None
    pin_block: Sensitive[bytes] | None = None
    key_serial: bytes | None = None


@dataclass(frozen=True, slots=True)
class EnterOfflinePin:
    """Offline PIN entry (Book 3, 10.5.1). `tries_left` is the card's PIN Try Counter (9F17)
    when known; `last_try` when the next wrong PIN blocks it. Answer: `PinEntry`."""

    amount: int
    currency: int
    exponent: int
    tries_left: int | None
    last_try: bool
    enciphered: bool


@dataclass(frozen=True, slots=True)
class EnterOnlinePin:
    """Online PIN entry (Book 3, 10.5.5): the PIN pad enciphers the PIN block for the host
    with `pan` (ISO 9564-1 format 4 needs it). Answer: `PinEntry`."""

    amount: int
    currency: int
    exponent: int
    pan: Sensitive[str]


@dataclass(frozen=True, slots=True)
class CaptureSignature:
    """The cardholder signs on the screen (Book 3, 10.5: signature (paper) CVM).
    Answer: bool, True when a signature was captured."""

    amount: int
    currency: int
    exponent: int


@dataclass(frozen=True, slots=True)
class OnlineRequest:
    """Everything an authorization message needs (ISO 8583 fields 2-55)."""

    pan: Sensitive[str]
    pan_sequence_number: int | None
    expiry: str | None  # YYMM
    track2: Sensitive[bytes] | None
    amount: int
    other_amount: int
    currency: int
    transaction_type: int
    aid: bytes
    chip_data: bytes  # field 55: BER-TLV of the tags of emv.online_data.FIELD_55_TAGS
    pin_block: Sensitive[bytes] | None = None
    pin_key_serial: bytes | None = None
    cryptogram_type: str = "ARQC"
    advice: bool = False  # the card asked for an advice (Book 3, 10.8)


@dataclass(frozen=True, slots=True)
class GoOnline:
    """Send the authorization to the issuer. Answer: `OnlineResponse`."""

    request: OnlineRequest


@dataclass(frozen=True, slots=True)
class ApproveOffline:
    """The kernel is about to ask the card for a TC without the issuer: may it?

    Asked after terminal action analysis chose a TC (Book 3, 10.7: 'Y1') and after the default
    action analysis chose one when the issuer could not be reached (Book 3, 10.9; Book 4,
    6.3.7: 'Y3'), before the GENERATE AC. Answer: `OfflineDecision`. A refusal asks the card for
    an ARQC at the first GENERATE AC (TVR byte 4 b4 "merchant forced transaction online") and
    for an AAC ('Z3') after "unable to go online"."""

    aid: bytes
    amount: int  # 9F02, minor units
    currency: int  # 5F2A, ISO 4217 numeric
    transaction_type: int  # 9C
    online_pin: bool  # an online PIN was entered (TVR byte 3 b3)
    unable_online: bool  # True: after unable to go online ('Y3'); False: first GENERATE AC ('Y1')


@dataclass(frozen=True, slots=True)
class OfflineDecision:
    """Answer to `ApproveOffline`. `reason` is a short machine word when refused
    (`"amount_limit"`), None when allowed."""

    allowed: bool
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.allowed and self.reason is not None:
            raise ValueError("an allowed offline approval has no refusal reason")
        if not self.allowed and not (isinstance(self.reason, str) and self.reason):
            raise ValueError("a refused offline approval names its reason")

    @classmethod
    def allow(cls) -> OfflineDecision:
        return cls(True)

    @classmethod
    def refuse(cls, reason: str) -> OfflineDecision:
        return cls(False, reason)


class HostStatus(StrEnum):
    RESPONDED = "responded"
    UNABLE = "unable"  # no link, timeout, malformed answer: Book 3, 10.9 "unable to go online"


@dataclass(frozen=True, slots=True)
class OnlineResponse:
    status: HostStatus
    approved: bool = False
    response_code: bytes = b""  # 8A, an 2 (ISO 8583 field 39)
    issuer_authentication_data: bytes | None = None  # 91
    scripts: bytes = b""  # templates 71 and 72 as received, concatenated
    authorization_code: bytes | None = None  # 89, an 6
    host_reference: str | None = None  # RRN, for the receipt and the journal
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def unable(cls) -> OnlineResponse:
        return cls(HostStatus.UNABLE)
