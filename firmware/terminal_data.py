"""Terminal-side data objects the kernel needs to fill DOLs (EMV 4.4 Book 3, Annex A)."""

from __future__ import annotations

import datetime
import os

# Book 4, Annex A1: 9F35 '22' = attended, offline with online capability, merchant-operated.
TERMINAL_TYPE = bytes.fromhex("22")
# Book 4, Annex A2: 9F33 manual key entry, magstripe, IC; plaintext/enciphered/online PIN,
# signature, no CVM; SDA, DDA, card capture off, CDA.
TERMINAL_CAPABILITIES = bytes.fromhex("E0F8C8")
# Book 4, Annex A3: 9F40 goods and services, no cash, no cashback; numeric and command keys;
# attendant printer, attendant and cardholder displays; code table 1.
ADDITIONAL_CAPABILITIES = bytes.fromhex("6000A0B001")
COUNTRY_FRANCE = bytes.fromhex("0250")  # ISO 3166-1 numeric, n3 in 2 bytes
CURRENCY_EUR = bytes.fromhex("0978")  # ISO 4217 numeric


def bcd_date(day: datetime.date) -> bytes:
    """n6 YYMMDD (Book 3, Annex A: 9A)."""
    return bytes.fromhex(day.strftime("%y%m%d"))


def amount_n12(minor_units: int) -> bytes:
    """n12 amount in minor units (Book 3, Annex A: 9F02/9F03)."""
    if not 0 <= minor_units < 10**12:
        raise ValueError("amount out of range for n12")
    return bytes.fromhex(f"{minor_units:012d}")


def for_inspection(today: datetime.date | None = None, unpredictable: bytes | None = None,
                   ) -> dict[int, bytes]:
    """Data for a card read: zero amount, today's date, a fresh unpredictable number."""
    return {
        0x9F02: amount_n12(0),
        0x9F03: amount_n12(0),
        0x9F1A: COUNTRY_FRANCE,
        0x5F2A: CURRENCY_EUR,
        0x9A: bcd_date(today or datetime.date.today()),
        0x9C: b"\x00",
        0x9F37: unpredictable if unpredictable is not None else os.urandom(4),
        0x95: bytes(5),
        0x9F35: TERMINAL_TYPE,
        0x9F33: TERMINAL_CAPABILITIES,
        0x9F40: ADDITIONAL_CAPABILITIES,
    }
