"""The terminal-to-acquirer message format: ISO 8583:1987 as a pyiso8583 specification.

This module holds data only and imports nothing of the project, so a host implementer can take it
alone with pyiso8583 (`iso8583.decode(data, SPEC)`). docs/host-protocol.md describes every field.

Encoding, the same for every message:

- MTI: 4 ASCII digits.
- Primary and secondary bitmaps: 8 binary bytes each (ISO 8583:1987 bitmaps, bit 1 = secondary
  bitmap present).
- Fields of attribute n, an, ans and z: ASCII characters; numeric fixed fields are right-justified
  and zero-filled.
- Fields of attribute b: raw bytes (pyiso8583 shows them as upper-case hex strings).
- Variable fields: length prefix of 2 (LLVAR) or 3 (LLLVAR) ASCII digits, counting characters,
  or bytes for b fields.

Where this format leaves ISO 8583:1987, it says so in `FIELDS` (52, 53, 55, 56).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Field(NamedTuple):
    """One data element: its ISO 8583 attribute, its length rule and its name."""

    attribute: str  # "n", "an", "ans", "z" (track 2 code set) or "b"
    max_len: int  # characters (bytes for b); the length itself for fixed fields
    prefix: int  # 0 fixed, 2 LLVAR, 3 LLLVAR (ASCII digits)
    name: str


# Track 2 equivalent data in field 35: the EMV '57' nibbles as hex digits, separator 'D'
# (EMV 4.4 Book 3, Annex A, "Track 2 Equivalent Data"), trailing 'F' padding removed.
TRACK2_SEPARATOR = "D"
# ANSI X9.24-3-2017, 6: an AES DUKPT key serial number is 12 bytes (initial key ID 8 + counter 4).
KSN_LENGTH = 12
# ISO 9564-1:2017 format 4: the enciphered PIN block is one AES block.
PIN_BLOCK_LENGTH = 16
MAC_LENGTH = 8

FIELDS: dict[str, Field] = {
    "2": Field("n", 19, 2, "Primary account number"),
    "3": Field("n", 6, 0, "Processing code"),
    "4": Field("n", 12, 0, "Amount, transaction"),
    "7": Field("n", 10, 0, "Transmission date and time (MMDDhhmmss, UTC)"),
    "11": Field("n", 6, 0, "Systems trace audit number"),
    "12": Field("n", 6, 0, "Time, local transaction (hhmmss)"),
    "13": Field("n", 4, 0, "Date, local transaction (MMDD)"),
    "14": Field("n", 4, 0, "Date, expiration (YYMM)"),
    "22": Field("n", 3, 0, "Point of service entry mode"),
    "23": Field("n", 3, 0, "Card sequence number"),
    "32": Field("n", 11, 2, "Acquiring institution identification code"),
    "35": Field("z", 37, 2, "Track 2 data (EMV '57', separator 'D')"),
    "37": Field("an", 12, 0, "Retrieval reference number"),
    "38": Field("an", 6, 0, "Authorization identification response"),
    "39": Field("an", 2, 0, "Response code"),
    "41": Field("ans", 8, 0, "Card acceptor terminal identification"),
    "42": Field("ans", 15, 0, "Card acceptor identification code"),
    "49": Field("n", 3, 0, "Currency code, transaction (ISO 4217 numeric)"),
    # ISO 8583:1987 DE 52 is b 64 bits; an ISO 9564-1 format 4 (AES) PIN block is 16 bytes.
    "52": Field("b", PIN_BLOCK_LENGTH, 0, "PIN data (ISO 9564-1 format 4, AES DUKPT)"),
    # ISO 8583:1987 DE 53 is n 16; here LLVAR b carrying the 12-byte AES DUKPT KSN whose
    # transaction key enciphered field 52 and keys the MAC.
    "53": Field("b", 16, 2, "Security related control information (DUKPT KSN)"),
    "54": Field("an", 120, 3, "Additional amounts"),
    # ISO 8583:1987 reserves DE 55; its use for ICC data (BER-TLV) follows ISO 8583:1993.
    "55": Field("b", 255, 3, "ICC data (EMV BER-TLV)"),
    # ISO 8583:1987 reserves DE 56; its content follows ISO 8583:1993 DE 56 (original data).
    "56": Field("n", 35, 2, "Original data elements (advice)"),
    "60": Field("ans", 999, 3, "Reserved private: batch number"),
    "63": Field("ans", 999, 3, "Reserved private: reconciliation totals per scheme"),
    "64": Field("b", MAC_LENGTH, 0, "Message authentication code"),
    "70": Field("n", 3, 0, "Network management information code"),
    "74": Field("n", 10, 0, "Credits, number"),
    "76": Field("n", 10, 0, "Debits, number"),
    "86": Field("n", 16, 0, "Credits, amount"),
    "88": Field("n", 16, 0, "Debits, amount"),
    "90": Field("n", 42, 0, "Original data elements (reversal)"),
    "128": Field("b", MAC_LENGTH, 0, "Message authentication code"),
}


def _pyiso(field: Field) -> dict[str, Any]:
    return {
        "data_enc": "b" if field.attribute == "b" else "ascii",
        "len_enc": "ascii",
        "len_type": field.prefix,
        "max_len": field.max_len,
        "desc": field.name,
    }


SPEC: dict[str, dict[str, Any]] = {
    "h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0, "desc": "No header"},
    "t": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 4, "desc": "Message type"},
    "p": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 8, "desc": "Bitmap, primary"},
    "1": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 8, "desc": "Bitmap, secondary"},
    **{number: _pyiso(field) for number, field in FIELDS.items()},
}

MANDATORY = "M"
CONDITIONAL = "C"


def _presence(mandatory: str, conditional: str) -> dict[str, str]:
    table = dict.fromkeys(mandatory.split(), MANDATORY)
    table.update(dict.fromkeys(conditional.split(), CONDITIONAL))
    return table


_CARD_REQUEST = _presence("2 3 4 7 11 12 13 22 32 41 42 49 55", "14 23 35 52 53 54 64")
_ADVICE = _presence("2 3 4 7 11 12 13 22 32 41 42 49", "14 23 37 38 39 53 54 55 56 64")
# A reversal carries no card data: it is kept on disk until the host acknowledges it.
_REVERSAL = _presence("3 4 7 11 12 13 32 39 41 42 49 90", "37 38 53 55 128")

# Which fields each message may carry: M mandatory, C conditional (docs/host-protocol.md says
# when), any other field absent. The MAC (64 without a secondary bitmap, 128 with one) and 53
# are C here so that a message can be built before it is MACed; on the wire every message
# carries both (firmware.messages.verify_mac refuses a message without a MAC, and 53 goes
# with a MAC or a PIN block).
PRESENCE: dict[str, dict[str, str]] = {
    "0100": _CARD_REQUEST,
    "0110": _presence("3 4 7 11 39 41", "12 13 32 37 38 42 49 53 55 64"),
    "0200": _CARD_REQUEST,
    "0210": _presence("3 4 7 11 39 41", "12 13 32 37 38 42 49 53 55 64"),
    "0220": _ADVICE,
    "0221": _ADVICE,
    "0230": _presence("3 4 7 11 39 41", "12 13 32 37 42 49 53 64"),
    "0400": _REVERSAL,
    "0401": _REVERSAL,
    "0410": _presence("3 4 7 11 39 41 90", "12 13 32 37 42 49 53 128"),
    "0500": _presence("7 11 12 13 32 41 42 49 60 74 76 86 88", "53 63 128"),
    "0510": _presence("7 11 39 41", "12 13 32 42 49 53 60 64"),
    "0800": _presence("7 11 12 13 32 41 42 70", "53 128"),
    "0810": _presence("7 11 39 41 70", "12 13 32 42 53 128"),
}

REQUESTS: tuple[str, ...] = ("0100", "0200", "0220", "0221", "0400", "0401", "0500", "0800")
# ISO 8583:1987 MTI position 3: a response is its request's MTI + 10, a repeat + 1.
RESPONSE_OF: dict[str, str] = {mti: mti[:2] + str(int(mti[2]) + 1) + "0" for mti in REQUESTS}
