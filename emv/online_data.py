"""What leaves the kernel for the host: field 55 chip data and the authorization request.

Field 55 carries the tags the schemes' acquirer specifications ask for in an ARQC or TC
message (EMV 4.4 Book 4, 12.2.2 lists the ICC data for authorization messages).
"""

from __future__ import annotations

from emv import card_data, tlv
from emv.context import Context
from emv.errors import EmvError
from emv.requests import OnlineRequest
from emv.sensitive import Sensitive

FIELD_55_TAGS: tuple[int, ...] = (
    0x9F26,  # Application Cryptogram
    0x9F27,  # Cryptogram Information Data
    0x9F10,  # Issuer Application Data
    0x9F37,  # Unpredictable Number
    0x9F36,  # Application Transaction Counter
    0x95,  # Terminal Verification Results
    0x9A,  # Transaction Date
    0x9C,  # Transaction Type
    0x9F02,  # Amount, Authorised
    0x5F2A,  # Transaction Currency Code
    0x82,  # Application Interchange Profile
    0x9F1A,  # Terminal Country Code
    0x9F03,  # Amount, Other
    0x9F33,  # Terminal Capabilities
    0x9F34,  # CVM Results
    0x9F35,  # Terminal Type
    0x9F1E,  # Interface Device Serial Number
    0x84,  # Dedicated File Name
    0x9F09,  # Application Version Number (terminal)
    0x9F41,  # Transaction Sequence Counter
    0x5F34,  # PAN Sequence Number
)


def chip_data(ctx: Context) -> bytes:
    """BER-TLV of the field 55 tags that are present, in the order above."""
    data = ctx.dol_data()
    return b"".join(tlv.encode(tag, data[tag]) for tag in FIELD_55_TAGS if data.get(tag))


def pan(ctx: Context) -> Sensitive[str] | None:
    raw = ctx.card.get(0x5A)
    if raw is None:
        return None
    try:
        return Sensitive(card_data.pan_digits(raw), "PAN")
    except EmvError:
        return None


def pan_sequence_number(ctx: Context) -> int | None:
    raw = ctx.card.get(0x5F34)
    if raw is None or len(raw) != 1 or not raw.hex().isdigit():
        return None
    return int(raw.hex())


def expiry(ctx: Context) -> str | None:
    """YYMM of the Application Expiration Date (ISO 8583 field 14)."""
    raw = ctx.card.get(0x5F24)
    if raw is None or len(raw) != 3 or not raw.hex().isdigit():
        return None
    return raw.hex()[:4]


def request(ctx: Context, cryptogram_type: str, *, advice: bool = False) -> OnlineRequest:
    """The authorization request after a first GENERATE AC answered with an ARQC."""
    card_pan = pan(ctx)
    if card_pan is None:  # the kernel checked '5A' before GENERATE AC
        raise EmvError("no PAN to send online")
    track2 = ctx.card.get(0x57)
    return OnlineRequest(
        pan=card_pan,
        pan_sequence_number=pan_sequence_number(ctx),
        expiry=expiry(ctx),
        track2=Sensitive(track2, "track 2") if track2 else None,
        amount=ctx.transaction.amount,
        other_amount=ctx.transaction.other_amount,
        currency=ctx.config.terminal.currency,
        transaction_type=ctx.transaction.transaction_type,
        aid=ctx.card.get(0x84, b""),
        chip_data=chip_data(ctx),
        pin_block=ctx.online_pin_block,
        pin_key_serial=ctx.pin_key_serial,
        cryptogram_type=cryptogram_type,
        advice=advice,
    )
