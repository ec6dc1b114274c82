"""The acquirer messages: typed builders, a parser and the MAC rule, over `firmware.iso8583_spec`.

No I/O (ARCHITECTURE principle 1): bytes and field dicts in, bytes and field dicts out. The
framing and TLS are `firmware.framing` and `firmware.tls_stream`; the MAC keys come from
`firmware.dukpt` through an injected function. docs/host-protocol.md is the reference of the
messages built here.

A message is a `Fields` dict in pyiso8583's form: "t" the MTI, "2".."128" the fields as str
(b fields as upper-case hex). This is the canonical form: `unpack` returns exactly it, `pack`
accepts only it, and `unpack(pack(f)) == f`. PAN and track 2 are in clear in the dict
(pyiso8583 needs them); a `Fields` never shows them in its repr, and `redacted` gives a copy
fit for a log line. Error messages name fields, never their values.
"""

from __future__ import annotations

import datetime
import hmac
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import iso8583

from emv import tlv
from emv.errors import TlvError
from emv.outcome import Outcome, OutcomeKind
from emv.requests import HostStatus, OnlineRequest, OnlineResponse
from emv.sensitive import Sensitive
from firmware.iso8583_spec import (
    FIELDS,
    KSN_LENGTH,
    MAC_LENGTH,
    MANDATORY,
    PIN_BLOCK_LENGTH,
    PRESENCE,
    REQUESTS,
    RESPONSE_OF,
    SPEC,
    TRACK2_SEPARATOR,
)


class MessageError(Exception):
    """A message that does not pack or unpack, or that breaks the rules of docs/host-protocol.md."""


class MacError(MessageError):
    """A message without a MAC, or whose MAC does not verify."""


class Mti(StrEnum):
    AUTHORIZATION = "0100"  # pre-authorization
    AUTHORIZATION_RESPONSE = "0110"
    FINANCIAL = "0200"  # sale, refund
    FINANCIAL_RESPONSE = "0210"
    ADVICE = "0220"  # offline-approved TC, pre-authorization completion
    ADVICE_REPEAT = "0221"
    ADVICE_RESPONSE = "0230"
    REVERSAL = "0400"
    REVERSAL_REPEAT = "0401"
    REVERSAL_RESPONSE = "0410"
    RECONCILIATION = "0500"
    RECONCILIATION_RESPONSE = "0510"
    NETWORK = "0800"
    NETWORK_RESPONSE = "0810"


class NetworkCode(StrEnum):
    """Field 70 (ISO 8583:1987 DE 70)."""

    SIGN_ON = "001"
    ECHO = "301"


class ReversalReason(StrEnum):
    """Field 39 of a 0400: why the terminal reverses (ISO 8583:1987 response code meanings)."""

    NO_RESPONSE = "68"  # no response, or received too late
    CARD_DECLINED = "06"  # the card declined (AAC) after the issuer approved
    CANCELLED = "17"  # customer cancellation after approval
    MALFUNCTION = "22"  # suspected malfunction: card removed, power cut before completion
    MAC_FAILURE = "63"  # security violation: the response's MAC did not verify


# Field 39 of a 0110/0210: the codes that approve. '08' (honour with identification) and '10'
# (partial approval) approve something this terminal cannot accept: it declines and reverses.
APPROVED_CODES = frozenset({"00", "11"})
APPROVALS_NOT_HONOURED = frozenset({"08", "10"})
# The acquirer could not reach the issuer, or failed itself: unable to go online (Book 3, 10.9).
UNABLE_CODES = frozenset({"91", "96"})
RECONCILED = "00"
RECONCILE_ERROR = "95"

# ISO 8583:1987 DE 22: PAN entry mode '05' integrated circuit card, PIN entry capability '1'
# (can accept PINs) or '2' (cannot).
POS_ENTRY_CHIP_WITH_PIN = "051"
POS_ENTRY_CHIP_NO_PIN = "052"

# ISO 8583:1987 DE 3 positions 1-2: the transaction type, the same code as EMV '9C'.
_AUTHORIZATION_TYPES = frozenset({"00"})
_FINANCIAL_TYPES = frozenset({"00", "01", "09", "20"})
_ACCOUNTS = "0000"  # DE 3 positions 3-6: default accounts

_MAC_FIELDS = ("64", "128")
_SECONDARY = range(65, 129)
_HEX = frozenset("0123456789ABCDEF")
_ALPHABETS: dict[str, frozenset[str]] = {
    "n": frozenset(string.digits),
    "an": frozenset(string.digits + string.ascii_letters),
    "ans": frozenset(chr(c) for c in range(0x20, 0x7F)),
    "z": frozenset(string.digits + TRACK2_SEPARATOR),
    "b": _HEX,
}
_MASKED: dict[str, tuple[str, str]] = {
    "2": ("PAN", "digits"),
    "35": ("track 2", "characters"),
    "52": ("PIN block", "bytes"),
    "55": ("ICC data", "bytes"),
}


class Fields(dict[str, str]):
    """A message's fields, keyed "t", "2".."128". Its repr is `redacted`: no PAN, track 2,
    PIN block or ICC data."""

    def __repr__(self) -> str:
        return f"Fields({redacted(self)!r})"

    __str__ = __repr__

    def copy(self) -> Fields:
        return Fields(self)


def redacted(fields: Mapping[str, object]) -> dict[str, str]:
    """A copy for logs: fields 2, 35, 52 and 55 replaced by their kind and length."""
    out: dict[str, str] = {}
    for key, value in fields.items():
        name = str(key)
        if name in _MASKED:
            kind, unit = _MASKED[name]
            if isinstance(value, str):
                size = len(value) // 2 if FIELDS[name].attribute == "b" else len(value)
                out[name] = f"<{kind}: {size} {unit}>"
            else:
                out[name] = f"<{kind}: hidden>"
        else:
            out[name] = value if isinstance(value, str) else f"<{type(value).__name__}>"
    return out


# --- The rules: every field, every message -------------------------------------------------

def _check_field(number: str, value: object) -> None:
    field = FIELDS[number]
    if not isinstance(value, str):
        raise MessageError(f"field {number} is {type(value).__name__}, not str")
    if not value:
        raise MessageError(f"field {number} is empty")
    if not set(value) <= _ALPHABETS[field.attribute]:
        raise MessageError(f"field {number} holds characters outside attribute {field.attribute}")
    size = len(value)
    if field.attribute == "b":
        if size % 2:
            raise MessageError(f"field {number} has an odd number of hex digits")
        size //= 2
    if field.prefix == 0 and size != field.max_len:
        raise MessageError(f"field {number} is {size} long, the format fixes {field.max_len}")
    if size > field.max_len:
        raise MessageError(f"field {number} is {size} long, more than {field.max_len}")


def validate(fields: Mapping[str, str]) -> None:
    """Raise `MessageError` unless `fields` is a message of docs/host-protocol.md in canonical form."""
    if not isinstance(fields, Mapping):
        raise MessageError(f"a message is a mapping of fields, not {type(fields).__name__}")
    mti = fields.get("t")
    if not isinstance(mti, str) or mti not in PRESENCE:
        raise MessageError("the MTI is missing or is not one of this protocol's")
    allowed = PRESENCE[mti]
    for key, value in fields.items():
        if key == "t":
            continue
        if not isinstance(key, str):
            raise MessageError("field names are str")
        if key not in FIELDS:
            raise MessageError(f"field {key} is not part of this format")
        if key not in allowed:
            raise MessageError(f"field {key} is not allowed in a {mti}")
        _check_field(key, value)
    missing = [number for number, rule in allowed.items() if rule == MANDATORY and number not in fields]
    if missing:
        raise MessageError(f"a {mti} needs field(s) {', '.join(missing)}")
    _check_cross_rules(mti, fields)


def _check_cross_rules(mti: str, fields: Mapping[str, str]) -> None:
    mac = [number for number in _MAC_FIELDS if number in fields]
    secondary = any(int(key) in _SECONDARY for key in fields if key.isdigit() and key != "128")
    if len(mac) > 1:
        raise MessageError("a message has one MAC, in 64 or in 128")
    if mac and mac[0] != ("128" if secondary else "64"):
        raise MessageError("the MAC is field 64 without a secondary bitmap, 128 with one")
    if ("52" in fields or mac) and "53" not in fields:
        raise MessageError("field 53 (the KSN) must go with a PIN block or a MAC")
    if mti in (Mti.ADVICE, Mti.ADVICE_REPEAT) and ("55" in fields) == ("56" in fields):
        raise MessageError(f"a {mti} carries either 55 (offline TC) or 56 (completion)")


# --- Packing and unpacking ------------------------------------------------------------------

def pack(fields: Mapping[str, str]) -> bytes:
    """The message as sent (without the 2-byte framing length)."""
    validate(fields)
    problem = ""
    try:
        data, _ = iso8583.encode(dict(fields), SPEC)
    except iso8583.EncodeError as exc:
        problem = f"{exc.msg} (field {exc.field})"
    else:
        return bytes(data)
    raise MessageError(problem)  # outside the handler: pyiso8583's error holds the field values


def unpack(data: bytes) -> Fields:
    """A received message in canonical form; anything else raises `MessageError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageError(f"a message is bytes, not {type(data).__name__}")
    raw = bytes(data)
    problem = ""
    try:
        decoded, _ = iso8583.decode(raw, SPEC)
    except iso8583.DecodeError as exc:
        problem = f"{exc.msg} (field {exc.field}, offset {exc.pos})"
    except KeyError as exc:  # a bitmap bit for a field the format does not define
        problem = f"field {exc.args[0]} is not part of this format"
    else:
        decoded.pop("p", None)
        decoded.pop("1", None)
        fields = Fields(decoded)
        validate(fields)
        if pack(fields) != raw:  # e.g. a secondary bitmap with no field in it
            raise MessageError("the message is not in canonical form")
        return fields
    raise MessageError(problem)


# --- Values ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Acceptor:
    """Who sends: fields 41 (terminal, ans 8), 42 (merchant, ans 15) and 32 (acquirer, n..11)."""

    terminal_id: str
    merchant_id: str
    acquirer_id: str

    def __post_init__(self) -> None:
        _check_field("41", self.terminal_id)
        _check_field("42", self.merchant_id)
        _check_field("32", self.acquirer_id)

    def fields(self) -> dict[str, str]:
        return {"32": self.acquirer_id, "41": self.terminal_id, "42": self.merchant_id}


_RID_LENGTH = 5
_RECORD = 10 + 6 + 12 + 6 + 12  # docs/host-protocol.md, field 63
_MAX_RECORDS = FIELDS["63"].max_len // _RECORD


@dataclass(frozen=True, slots=True)
class SchemeTotals:
    """One scheme's totals since the last reconciliation (field 63 record). Debits are sales and
    cash (the cardholder is debited), credits are refunds; reversed transactions are left out."""

    rid: bytes  # the AID's registered application provider identifier, 5 bytes (ISO 7816-5)
    debit_count: int
    debit_amount: int
    credit_count: int
    credit_amount: int

    def __post_init__(self) -> None:
        if not isinstance(self.rid, bytes) or len(self.rid) != _RID_LENGTH:
            raise MessageError("a RID is 5 bytes")
        for name, digits in (("debit_count", 6), ("debit_amount", 12), ("credit_count", 6),
                             ("credit_amount", 12)):
            _number(getattr(self, name), digits, name)

    def record(self) -> str:
        return (self.rid.hex().upper() + f"{self.debit_count:06d}{self.debit_amount:012d}"
                f"{self.credit_count:06d}{self.credit_amount:012d}")


def _number(value: object, digits: int, what: str, minimum: int = 0) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 10**digits:
        raise MessageError(f"{what} is not an integer from {minimum} to {10**digits - 1}")
    return f"{value:0{digits}d}"


def _stan(stan: int) -> str:
    return _number(stan, 6, "the STAN", minimum=1)


def _times(at: datetime.datetime) -> dict[str, str]:
    """7 from `at` in UTC; 12 and 13 from `at` as given, the terminal's local time."""
    return {"7": _utc(at).strftime("%m%d%H%M%S"), **_local(at)}


def _utc(at: datetime.datetime) -> datetime.datetime:
    if not isinstance(at, datetime.datetime) or at.utcoffset() is None:
        raise MessageError("message times are timezone-aware datetimes")
    return at.astimezone(datetime.UTC)


def _local(at: datetime.datetime) -> dict[str, str]:
    _utc(at)
    return {"12": at.strftime("%H%M%S"), "13": at.strftime("%m%d")}


def _reveal(value: Sensitive[str] | Sensitive[bytes] | str | bytes) -> str | bytes:
    return value.reveal() if isinstance(value, Sensitive) else value


def _track2(raw: bytes) -> str:
    """EMV '57' as field 35: hex digits, separator 'D', the trailing 'F' pad removed."""
    text = raw.hex().upper() if isinstance(raw, bytes) else ""
    if text.endswith("F"):
        text = text[:-1]
    if (not text or text.count(TRACK2_SEPARATOR) != 1 or len(text) > FIELDS["35"].max_len
            or not set(text) <= _ALPHABETS["z"]):
        raise MessageError("the track 2 equivalent data is malformed")
    return text


def _icc(data: bytes, what: str = "the ICC data") -> str:
    if not isinstance(data, bytes) or not data:
        raise MessageError(f"{what} is empty or not bytes")
    try:
        tlv.decode(data)
    except TlvError as exc:
        reason = exc.reason
    else:
        return data.hex().upper()
    raise MessageError(f"{what} is not BER-TLV: {reason}")


def _processing_code(transaction_type: int, allowed: frozenset[str], mti: str) -> str:
    if isinstance(transaction_type, bool) or not isinstance(transaction_type, int) \
            or not 0 <= transaction_type <= 0xFF:
        raise MessageError("the transaction type is one byte ('9C')")
    code = f"{transaction_type:02X}"
    if code not in allowed:
        raise MessageError(f"transaction type {code} is not sent in a {mti}")
    return code + _ACCOUNTS


def _additional_amounts(other_amount: int, amount: int, currency: str) -> dict[str, str]:
    """Field 54 for cash back: account type '00', amount type '40' (cash back), currency, 'D'
    (debit) and n12 (ISO 8583:1987 DE 54 layout)."""
    other = _number(other_amount, 12, "the other amount")
    if other_amount > amount:
        raise MessageError("the other amount is part of the amount and cannot exceed it")
    return {"54": "0040" + currency + "D" + other} if other_amount else {}


def _card(pan: Sensitive[str] | str, psn: int | None, expiry: str | None) -> dict[str, str]:
    digits = _reveal(pan)
    if not isinstance(digits, str):
        raise MessageError("the PAN is a str of digits")
    fields = {"2": digits}
    if psn is not None:
        fields["23"] = _number(psn, 2, "the PAN sequence number").zfill(3)
    if expiry is not None:
        fields["14"] = expiry
    for number, value in fields.items():
        _check_field(number, value)
    return fields


def _checked(fields: dict[str, str]) -> Fields:
    """The built message, validated, its fields in wire order."""
    order = sorted(fields, key=lambda key: -1 if key == "t" else int(key))
    message = Fields((key, fields[key]) for key in order)
    validate(message)
    return message


def _require_mti(fields: Mapping[str, str], mtis: Iterable[str], what: str) -> str:
    mti = fields.get("t") if isinstance(fields, Mapping) else None
    if mti not in tuple(mtis):
        raise MessageError(f"{what} must be a {' or '.join(mtis)}")
    return mti  # type: ignore[return-value]


# --- Terminal requests ----------------------------------------------------------------------

def authorization_request(request: OnlineRequest, *, acceptor: Acceptor, stan: int,
                          at: datetime.datetime, pos_entry_mode: str = POS_ENTRY_CHIP_WITH_PIN) -> Fields:
    """0100: pre-authorization with the card's ARQC in field 55."""
    return _card_request(Mti.AUTHORIZATION, _AUTHORIZATION_TYPES, request, acceptor, stan, at, pos_entry_mode)


def financial_request(request: OnlineRequest, *, acceptor: Acceptor, stan: int,
                      at: datetime.datetime, pos_entry_mode: str = POS_ENTRY_CHIP_WITH_PIN) -> Fields:
    """0200: sale (processing code 00), cash (01), sale with cash back (09), refund (20)."""
    return _card_request(Mti.FINANCIAL, _FINANCIAL_TYPES, request, acceptor, stan, at, pos_entry_mode)


def _card_request(mti: Mti, types: frozenset[str], request: OnlineRequest, acceptor: Acceptor,
                  stan: int, at: datetime.datetime, pos_entry_mode: str) -> Fields:
    if request.cryptogram_type != "ARQC":
        raise MessageError("an online request carries an ARQC")
    currency = _number(request.currency, 3, "the currency", minimum=1)
    fields = {
        "t": mti.value,
        **_card(request.pan, request.pan_sequence_number, request.expiry),
        "3": _processing_code(request.transaction_type, types, mti),
        "4": _number(request.amount, 12, "the amount"),
        **_times(at),
        "11": _stan(stan),
        "22": pos_entry_mode,
        **acceptor.fields(),
        "49": currency,
        "55": _icc(request.chip_data),
        **_additional_amounts(request.other_amount, request.amount, currency),
    }
    if request.track2 is not None:
        track2 = _reveal(request.track2)
        fields["35"] = _track2(track2 if isinstance(track2, bytes) else b"")
    if request.pin_block is not None:
        block = _reveal(request.pin_block)
        if not isinstance(block, bytes) or len(block) != PIN_BLOCK_LENGTH:
            raise MessageError(f"an ISO 9564-1 format 4 PIN block is {PIN_BLOCK_LENGTH} bytes")
        ksn = request.pin_key_serial
        if not isinstance(ksn, bytes) or len(ksn) != KSN_LENGTH:
            raise MessageError(f"a PIN block needs the {KSN_LENGTH}-byte DUKPT KSN of its key")
        fields["52"] = block.hex().upper()
        fields["53"] = ksn.hex().upper()
    return _checked(fields)


_OFFLINE_APPROVALS = {OutcomeKind.APPROVED_OFFLINE: "Y1", OutcomeKind.APPROVED_UNABLE_ONLINE: "Y3"}


def offline_advice(outcome: Outcome, *, acceptor: Acceptor, stan: int, at: datetime.datetime,
                   transaction_time: datetime.datetime, transaction_type: int | None = None,
                   pos_entry_mode: str = POS_ENTRY_CHIP_WITH_PIN) -> Fields:
    """0220 for a transaction the card approved offline (TC): the card's data, field 39 the
    authorization response code the terminal gave the card ('Y1', 'Y3'), field 55 with the TC.

    `at` is when the advice is sent (field 7), `transaction_time` when the card approved
    (12, 13). The transaction type comes from '9C' in field 55 unless given. No track 2: an
    advice waits on disk, where track data must not be kept after authorization (PCI DSS 3.2).
    """
    if outcome.kind not in _OFFLINE_APPROVALS or outcome.cryptogram_type != "TC":
        raise MessageError("an offline advice is for an offline-approved TC")
    if outcome.pan is None:
        raise MessageError("the outcome has no PAN")
    icc = _icc(outcome.chip_data, "the outcome's field 55")
    chip = dict(tlv.primitives(tlv.decode(outcome.chip_data)))
    if transaction_type is None:
        type_byte = chip.get(0x9C, b"")
        if len(type_byte) != 1:
            raise MessageError("no transaction type: '9C' missing from field 55 and none given")
        transaction_type = type_byte[0]
    other = chip.get(0x9F03, bytes(6)).hex()
    if not other.isdigit() or len(other) > 12:
        raise MessageError("'9F03' in field 55 is not n12")
    code = outcome.response_code.decode("ascii", "replace") if outcome.response_code else None
    currency = _number(outcome.currency, 3, "the currency", minimum=1)
    fields = {
        "t": Mti.ADVICE.value,
        **_card(outcome.pan, outcome.pan_sequence_number, outcome.expiry),
        "3": _processing_code(transaction_type, _FINANCIAL_TYPES, Mti.ADVICE),
        "4": _number(outcome.amount, 12, "the amount"),
        "7": _utc(at).strftime("%m%d%H%M%S"),
        **_local(transaction_time),
        "11": _stan(stan),
        "22": pos_entry_mode,
        **acceptor.fields(),
        "39": code or _OFFLINE_APPROVALS[outcome.kind],
        "49": currency,
        "55": icc,
        **_additional_amounts(int(other), outcome.amount, currency),
    }
    return _checked(fields)


def completion_advice(authorization: Mapping[str, str], authorization_response: Mapping[str, str], *,
                      amount: int, stan: int, at: datetime.datetime) -> Fields:
    """0220 completing an approved pre-authorization (0100/0110) with the final amount. Field 56
    points at the 0100; 37 and 38 repeat the 0110's."""
    _require_mti(authorization, (Mti.AUTHORIZATION,), "the original")
    validate(authorization)
    if not is_response_to(authorization, authorization_response):
        raise MessageError("the response does not answer the pre-authorization")
    if authorization_response.get("39") not in APPROVED_CODES:
        raise MessageError("only an approved pre-authorization is completed")
    kept = {key: authorization[key] for key in (*IDENTITY_FIELDS, *COMPLETION_CARD_FIELDS)
            if key in authorization}
    approval = {key: authorization_response[key] for key in ("37", "38") if key in authorization_response}
    return stored_completion(kept, approval, amount=amount, stan=stan, at=at)


# The card fields of a 0100 that its completion repeats (docs/host-protocol.md, 0220): what the
# terminal keeps, sealed, of an approved pre-authorization besides its `identity`. No track 2,
# no PIN block, no chip data.
COMPLETION_CARD_FIELDS = ("2", "14", "22", "23")


def stored_completion(original: Mapping[str, str], approval: Mapping[str, str], *, amount: int, stan: int,
                      at: datetime.datetime) -> Fields:
    """The completion 0220 from what the terminal keeps of an approved 0100 after the card left:
    its `identity` with `COMPLETION_CARD_FIELDS` (`original`), and the 0110's 37 and 38
    (`approval`)."""
    _require_mti(original, (Mti.AUTHORIZATION,), "the original")
    missing = [key for key in ("2", "11", "12", "13", "32", "41", "42", "49") if key not in original]
    if missing:
        raise MessageError(f"the pre-authorization lacks field(s) {', '.join(missing)}")
    for key in ("11", "12", "13", "32"):
        _check_field(key, original[key])
    fields = {key: original[key] for key in (*COMPLETION_CARD_FIELDS, "32", "41", "42", "49")
              if key in original}
    fields.update({key: approval[key] for key in ("37", "38") if key in approval})
    fields.update({"t": Mti.ADVICE.value, "3": "00" + _ACCOUNTS, "4": _number(amount, 12, "the amount"),
                   **_times(at), "11": _stan(stan), "56": _original_data_56(original, at)})
    return _checked(fields)


def _original_data_56(original: Mapping[str, str], at: datetime.datetime) -> str:
    """ISO 8583:1993 DE 56 layout: MTI n4, STAN n6, local date and time YYMMDDhhmmss n12,
    acquiring institution LLVAR n..11. The original's year is not in the 0100: it is `at`'s,
    or the year before when the original's month and day come after `at`'s."""
    year = at.year - 1 if original["13"] > at.strftime("%m%d") else at.year
    acquirer = original["32"]
    return (original["t"] + original["11"] + f"{year % 100:02d}" + original["13"] + original["12"]
            + f"{len(acquirer):02d}" + acquirer)


# What identifies a 0100/0200 for its reversal (field 90 and the fields a 0400 repeats).
IDENTITY_FIELDS = ("t", "3", "4", "7", "11", "12", "13", "32", "41", "42", "49")


def identity(original: Mapping[str, str]) -> dict[str, str]:
    """The fields of a 0100/0200 that its reversal needs, and no card data: what the terminal
    keeps on disk while a reversal is owed (ARCHITECTURE principle 4)."""
    _require_mti(original, (Mti.AUTHORIZATION, Mti.FINANCIAL), "the original")
    validate(original)
    return {key: original[key] for key in IDENTITY_FIELDS}


def reversal(original: Mapping[str, str], *, stan: int, at: datetime.datetime, reason: ReversalReason,
             response: Mapping[str, str] | None = None, icc_data: bytes | None = None) -> Fields:
    """0400 reversing a 0100 or 0200 in full, from the original's fields or its `identity`.

    Field 90 points at the original (MTI, STAN, transmission date and time, acquirer); 39 says
    why; 37 and 38 repeat the response's when one arrived; 55 carries the card's final
    cryptogram when there is one (e.g. the AAC of a card that declined after approval). No
    card data: the host finds the original by 41 and 90.
    """
    _require_mti(original, (Mti.AUTHORIZATION, Mti.FINANCIAL), "the original")
    missing = [key for key in IDENTITY_FIELDS if key not in original]
    if missing:
        raise MessageError(f"the original lacks field(s) {', '.join(missing)}")
    for key in IDENTITY_FIELDS[1:]:
        _check_field(key, original[key])
    try:
        code = ReversalReason(reason)
    except ValueError:
        code = None
    if code is None:
        raise MessageError("the reversal reason is not a ReversalReason")
    fields = {key: original[key] for key in ("3", "4", "12", "13", "32", "41", "42", "49")}
    if response is not None:
        if not is_response_to(original, response):
            raise MessageError("the response does not answer the original")
        fields.update({key: response[key] for key in ("37", "38") if key in response})
    if icc_data is not None:
        fields["55"] = _icc(icc_data)
    # ISO 8583:1987 DE 90: original MTI n4, STAN n6, transmission date and time n10, acquiring
    # institution n11, forwarding institution n11 (zeros: none).
    original_data = (original["t"] + original["11"] + original["7"] + original["32"].zfill(11)
                     + "0" * 11)
    fields.update({"t": Mti.REVERSAL.value, "7": _utc(at).strftime("%m%d%H%M%S"), "11": _stan(stan),
                   "39": code.value, "90": original_data})
    return _checked(fields)


_REPEATS = {Mti.ADVICE: Mti.ADVICE_REPEAT, Mti.ADVICE_REPEAT: Mti.ADVICE_REPEAT,
            Mti.REVERSAL: Mti.REVERSAL_REPEAT, Mti.REVERSAL_REPEAT: Mti.REVERSAL_REPEAT}


def repeat(fields: Mapping[str, str]) -> Fields:
    """The same 0220 or 0400 sent again: MTI 0221 or 0401, every field kept but the MAC, which
    `attach_mac` computes anew."""
    mti = _require_mti(fields, _REPEATS, "a repeat")
    validate(fields)
    again = {key: value for key, value in fields.items() if key not in _MAC_FIELDS}
    again["t"] = _REPEATS[Mti(mti)].value
    return _checked(again)


def reconciliation(totals: Sequence[SchemeTotals], *, acceptor: Acceptor, stan: int, at: datetime.datetime,
                   batch_number: int, currency: int) -> Fields:
    """0500 closing a batch (the "télécollecte"): grand totals in 74, 76, 86, 88, one field 63
    record per scheme, the batch number in 60."""
    if len({item.rid for item in totals}) != len(totals):
        raise MessageError("one record per scheme: a RID appears twice")
    if len(totals) > _MAX_RECORDS:
        raise MessageError(f"field 63 holds at most {_MAX_RECORDS} scheme records")
    fields = {
        "t": Mti.RECONCILIATION.value,
        **_times(at),
        "11": _stan(stan),
        **acceptor.fields(),
        "49": _number(currency, 3, "the currency", minimum=1),
        "60": _number(batch_number, 6, "the batch number", minimum=1),
        "74": _number(sum(item.credit_count for item in totals), 10, "the number of credits"),
        "76": _number(sum(item.debit_count for item in totals), 10, "the number of debits"),
        "86": _number(sum(item.credit_amount for item in totals), 16, "the credits amount"),
        "88": _number(sum(item.debit_amount for item in totals), 16, "the debits amount"),
    }
    if totals:
        fields["63"] = "".join(item.record() for item in totals)
    return _checked(fields)


def reconciliation_totals(fields: Mapping[str, str]) -> tuple[SchemeTotals, ...]:
    """The scheme records of a 0500's field 63, checked against its grand totals."""
    _require_mti(fields, (Mti.RECONCILIATION,), "reconciliation totals")
    validate(fields)
    text = fields.get("63", "")
    if len(text) % _RECORD:
        raise MessageError(f"field 63 is not a run of {_RECORD}-character records")
    records: list[SchemeTotals] = []
    for start in range(0, len(text), _RECORD):
        record = text[start:start + _RECORD]
        rid, numbers = record[:10], record[10:]
        if not set(rid) <= _HEX or not numbers.isdigit():
            raise MessageError(f"field 63 record {start // _RECORD + 1} is malformed")
        records.append(SchemeTotals(bytes.fromhex(rid), int(numbers[:6]), int(numbers[6:18]),
                                    int(numbers[18:24]), int(numbers[24:])))
    if len({item.rid for item in records}) != len(records):
        raise MessageError("field 63 names a scheme twice")
    sums = {"74": sum(r.credit_count for r in records), "76": sum(r.debit_count for r in records),
            "86": sum(r.credit_amount for r in records), "88": sum(r.debit_amount for r in records)}
    for number, total in sums.items():
        if int(fields[number]) != total:
            raise MessageError(f"field 63 does not add up to field {number}")
    return tuple(records)


def network_request(code: NetworkCode, *, acceptor: Acceptor, stan: int, at: datetime.datetime) -> Fields:
    """0800: sign-on (001) or echo test (301)."""
    try:
        network = NetworkCode(code)
    except ValueError:
        network = None
    if network is None:
        raise MessageError("the network management code is not a NetworkCode")
    return _checked({"t": Mti.NETWORK.value, **_times(at), "11": _stan(stan), **acceptor.fields(),
                     "70": network.value})


# --- Responses ------------------------------------------------------------------------------

# The host's own fields in a response; everything else the response may carry is echoed.
_HOST_FIELDS = frozenset({"37", "38", "39", "55", *_MAC_FIELDS})


def response_to(request_fields: Mapping[str, str], response_code: str, approval_code: str | None = None,
                rrn: str | None = None, icc_data: bytes | None = None) -> Fields:
    """The host's answer to a request: the request's fields that the response carries, echoed
    (never the PAN), then 39, and 38, 37, 55 when given."""
    mti = _require_mti(request_fields, REQUESTS, "the request")
    validate(request_fields)
    answer = RESPONSE_OF[mti]
    allowed = PRESENCE[answer]
    fields = {key: value for key, value in request_fields.items()
              if key in allowed and key not in _HOST_FIELDS}
    fields.update({"t": answer, "39": response_code})
    if approval_code is not None:
        fields["38"] = approval_code
    if rrn is not None:
        fields["37"] = rrn
    if icc_data is not None:
        fields["55"] = _icc(icc_data, "the response's ICC data")
    return _checked(fields)


def is_response_to(request: Mapping[str, str], response: Mapping[str, str]) -> bool:
    """The response's MTI answers the request's, and STAN, transmission time and terminal match."""
    if not isinstance(request, Mapping) or not isinstance(response, Mapping):
        return False
    if response.get("t") != RESPONSE_OF.get(str(request.get("t"))):
        return False
    return all(request.get(key) is not None and request.get(key) == response.get(key)
               for key in ("7", "11", "41"))


_TAG_ARC = 0x8A
_TAG_IAD = 0x91
_SCRIPT_TAGS = (0x71, 0x72)


def to_online_response(fields: Mapping[str, str]) -> OnlineResponse:
    """What the kernel gets from a 0110/0210 (`emv.requests.OnlineResponse`).

    Field 39 decides: '00' and '11' approve; '91' and '96' mean unable to go online (the card
    then decides, EMV 4.4 Book 3, 10.9); any other code declines, and '08' and '10' (approvals
    this terminal does not honour) add extra["reversal"] = "required". The response code given
    to the card is '8A' from field 55 when the issuer sent one (its ARPC covers it), else field
    39. From field 55: '91' issuer authentication data, templates '71' and '72' as received.
    38 is the authorization code, 37 the host reference.
    """
    _require_mti(fields, (Mti.AUTHORIZATION_RESPONSE, Mti.FINANCIAL_RESPONSE), "an authorization response")
    validate(fields)
    code = fields["39"]
    if code in UNABLE_CODES:
        return OnlineResponse(HostStatus.UNABLE, extra={"response_code": code})
    iad, scripts, arc = _issuer_data(bytes.fromhex(fields["55"])) if "55" in fields else (None, b"", None)
    extra = {"reversal": "required"} if code in APPROVALS_NOT_HONOURED else {}
    approval = fields.get("38")
    return OnlineResponse(
        status=HostStatus.RESPONDED,
        approved=code in APPROVED_CODES,
        response_code=arc if arc is not None else code.encode("ascii"),
        issuer_authentication_data=iad,
        scripts=scripts,
        authorization_code=approval.encode("ascii") if approval is not None else None,
        host_reference=fields.get("37"),
        extra=extra,
    )


def _issuer_data(icc: bytes) -> tuple[bytes | None, bytes, bytes | None]:
    """'91', the '71'/'72' templates and '8A' of a response's field 55, top level only: a
    malformed script stays the kernel's to report (Book 3, 10.10), so a template whose
    framing breaks is passed on with the rest of the field."""
    iad: bytes | None = None
    arc: bytes | None = None
    scripts: list[bytes] = []
    pos = 0
    while pos < len(icc):
        if icc[pos] in (0x00, 0xFF):  # Book 3, Annex B1: padding between objects
            pos += 1
            continue
        try:
            tag, body = tlv.read_tag(icc, pos)
            length, body = tlv.read_length(icc, body, tag)
        except TlvError as exc:
            if icc[pos] in _SCRIPT_TAGS:
                scripts.append(icc[pos:])
                break
            raise MessageError(f"field 55 is not BER-TLV: {exc.reason}") from None
        end = body + length
        if end > len(icc):
            if tag in _SCRIPT_TAGS:
                scripts.append(icc[pos:])
                break
            raise MessageError("field 55: an object overruns the field")
        value = icc[body:end]
        if tag == _TAG_IAD:
            if iad is not None:
                raise MessageError("field 55 holds '91' twice")
            iad = value
        elif tag == _TAG_ARC:
            if arc is not None or len(value) != 2:
                raise MessageError("field 55: '8A' repeated or not 2 bytes")
            arc = value
        elif tag in _SCRIPT_TAGS:
            scripts.append(icc[pos:end])
        pos = end
    return iad, b"".join(scripts), arc


# --- MAC ------------------------------------------------------------------------------------

MacFunction = Callable[[bytes], bytes]


def mac_input(packed: bytes) -> bytes:
    """What the MAC covers: the packed message, MTI to the byte before the MAC field, with the
    MAC field's bit set in the bitmap. The MAC field is always the last 8 bytes (64 or 128 is
    the highest field present), so this is the message without them."""
    fields = unpack(packed)
    if not any(number in fields for number in _MAC_FIELDS):
        raise MacError("the message has no MAC field")
    return bytes(packed[:-MAC_LENGTH])


def attach_mac(fields: Mapping[str, str], mac_function: MacFunction, *, ksn: bytes | None = None) -> bytes:
    """Pack `fields` with a MAC (64, or 128 when there is a secondary bitmap) computed by
    `mac_function` over `mac_input`. `ksn` goes to field 53: the DUKPT KSN of the MAC key; with a
    PIN block it must be the KSN already in 53, whose transaction key enciphered the block."""
    if not isinstance(fields, Mapping) or not all(isinstance(key, str) for key in fields):
        raise MessageError("a message is a mapping of fields named by str")
    message = {key: value for key, value in fields.items() if key not in _MAC_FIELDS}
    if ksn is not None:
        if not isinstance(ksn, bytes) or len(ksn) != KSN_LENGTH:
            raise MessageError(f"a DUKPT KSN is {KSN_LENGTH} bytes")
        if "52" in message and message.get("53") != ksn.hex().upper():
            raise MessageError("the PIN block and the MAC use one transaction key: one KSN in 53")
        message["53"] = ksn.hex().upper()
    secondary = any(key.isdigit() and int(key) in _SECONDARY for key in message)
    message["128" if secondary else "64"] = "00" * MAC_LENGTH
    packed = pack(message)
    covered = packed[:-MAC_LENGTH]
    return covered + _mac(mac_function, covered)


def verify_mac(data: bytes, mac_function: MacFunction) -> Fields:
    """The fields of `data` once its MAC verifies (constant-time compare); `MacError` when the
    MAC is absent or wrong. A host first reads the KSN (`key_serial(unpack(data))`) to derive
    the key behind `mac_function`."""
    covered = mac_input(data)
    expected = _mac(mac_function, covered)
    if not hmac.compare_digest(expected, bytes(data[-MAC_LENGTH:])):
        raise MacError("the MAC does not verify")
    return unpack(data)


def _mac(mac_function: MacFunction, covered: bytes) -> bytes:
    mac = mac_function(covered)
    if not isinstance(mac, bytes) or len(mac) != MAC_LENGTH:
        raise MessageError(f"the MAC function must return {MAC_LENGTH} bytes")
    return mac


def key_serial(fields: Mapping[str, str]) -> bytes | None:
    """The DUKPT KSN of field 53, when present."""
    value = fields.get("53")
    if value is None:
        return None
    _check_field("53", value)
    return bytes.fromhex(value)
