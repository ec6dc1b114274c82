"""Decoders for the card's data elements: AIP, AUC, AFL, CVM List, dates, PAN, track 2, codes.

Pure functions from `bytes` to values, shared by the technician's card read display and the
kernel. Every malformed input raises `CardDataError`; no decoder returns half a result. Error
messages name the data element and what is wrong with it, never the PAN or track digits.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field, fields

from emv.errors import EmvError


class CardDataError(EmvError, ValueError):
    """A card data element that does not follow its coding in EMV 4.4 Book 3."""

    def __init__(self, reason: str, *, tag: int | None = None) -> None:
        self.reason = reason
        self.tag = tag
        super().__init__(f"{reason} (tag {tag:X})" if tag is not None else reason)


def _expect_length(b: bytes, length: int, what: str, tag: int | None) -> None:
    if not isinstance(b, bytes | bytearray):
        raise CardDataError(f"{what} must be bytes, not {type(b).__name__}", tag=tag)
    if len(b) != length:
        raise CardDataError(f"{what} is {len(b)} bytes, expected {length}", tag=tag)


def _bcd_digits(b: bytes, what: str, tag: int | None) -> str:
    """The decimal digits of an `n` value (Book 3, 4.3): every nibble must be 0-9."""
    text = b.hex()
    if not text.isdigit():
        raise CardDataError(f"{what} is not BCD", tag=tag)
    return text


def _set_bits(b: bytes, table: dict[tuple[int, int], str]) -> list[str]:
    """Names of the set bits; table keys are (byte index from 0, mask)."""
    return [name for (index, mask), name in table.items() if b[index] & mask]


# --- Application Interchange Profile, Book 3 Annex C1 (Table 41) -------------------------

@dataclass(frozen=True, slots=True)
class AipFlags:
    sda_supported: bool
    dda_supported: bool
    cardholder_verification_supported: bool
    terminal_risk_management_required: bool
    issuer_authentication_supported: bool
    on_device_cvm_supported: bool
    cda_supported: bool
    raw: bytes = field(default=b"", compare=False)

    def names(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "raw" and getattr(self, f.name)]


def decode_aip(b: bytes) -> AipFlags:
    """'82': byte 1 b7-b1 as in Book 3 Annex C1; byte 2 belongs to the contactless books."""
    _expect_length(b, 2, "AIP", 0x82)
    first = b[0]
    return AipFlags(
        sda_supported=bool(first & 0x40),
        dda_supported=bool(first & 0x20),
        cardholder_verification_supported=bool(first & 0x10),
        terminal_risk_management_required=bool(first & 0x08),
        issuer_authentication_supported=bool(first & 0x04),
        on_device_cvm_supported=bool(first & 0x02),
        cda_supported=bool(first & 0x01),
        raw=bytes(b),
    )


# --- Application Usage Control, Book 3 Annex C2 (Table 42) -------------------------------

@dataclass(frozen=True, slots=True)
class AucFlags:
    domestic_cash: bool
    international_cash: bool
    domestic_goods: bool
    international_goods: bool
    domestic_services: bool
    international_services: bool
    atms: bool
    terminals_other_than_atms: bool
    domestic_cashback: bool
    international_cashback: bool
    raw: bytes = field(default=b"", compare=False)

    def names(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "raw" and getattr(self, f.name)]


def decode_auc(b: bytes) -> AucFlags:
    """'9F07': two bytes, byte 2 b6-b1 RFU."""
    _expect_length(b, 2, "Application Usage Control", 0x9F07)
    first, second = b[0], b[1]
    return AucFlags(
        domestic_cash=bool(first & 0x80),
        international_cash=bool(first & 0x40),
        domestic_goods=bool(first & 0x20),
        international_goods=bool(first & 0x10),
        domestic_services=bool(first & 0x08),
        international_services=bool(first & 0x04),
        atms=bool(first & 0x02),
        terminals_other_than_atms=bool(first & 0x01),
        domestic_cashback=bool(second & 0x80),
        international_cashback=bool(second & 0x40),
        raw=bytes(b),
    )


# --- Application File Locator, Book 3 10.2 ----------------------------------------------

@dataclass(frozen=True, slots=True)
class AflEntry:
    sfi: int
    first: int
    last: int
    oda_count: int  # records from `first` on that take part in offline data authentication


def parse_afl(b: bytes) -> list[AflEntry]:
    """'94': 4-byte entries; any entry breaking the Book 3, 10.2 rules rejects the whole AFL."""
    if not isinstance(b, bytes | bytearray):
        raise CardDataError(f"AFL must be bytes, not {type(b).__name__}", tag=0x94)
    if len(b) % 4:
        raise CardDataError(f"AFL is {len(b)} bytes, not a multiple of 4", tag=0x94)
    entries: list[AflEntry] = []
    for number, pos in enumerate(range(0, len(b), 4), start=1):
        sfi_byte, first, last, oda = b[pos:pos + 4]
        sfi = sfi_byte >> 3
        if sfi_byte & 0x07:
            raise CardDataError(f"AFL entry {number}: bits 3-1 of byte 1 are not 000", tag=0x94)
        if not 1 <= sfi <= 30:
            raise CardDataError(f"AFL entry {number}: SFI {sfi} is outside 1-30", tag=0x94)
        if first == 0:
            raise CardDataError(f"AFL entry {number}: first record is 0", tag=0x94)
        if last < first:
            raise CardDataError(f"AFL entry {number}: last record {last} is before first {first}",
                                tag=0x94)
        if oda > last - first + 1:
            raise CardDataError(f"AFL entry {number}: {oda} ODA records in a range of "
                                f"{last - first + 1}", tag=0x94)
        entries.append(AflEntry(sfi, first, last, oda))
    return entries


# --- CVM List and CVM Results, Book 3 10.5 and Annex C3 (Tables 43, 44) ----------------

CVM_METHODS: dict[int, str] = {
    0x00: "Fail CVM processing",
    0x01: "Plaintext PIN verification performed by ICC",
    0x02: "Enciphered PIN verified online",
    0x03: "Plaintext PIN verification performed by ICC and signature (paper)",
    0x04: "Enciphered PIN verification performed by ICC",
    0x05: "Enciphered PIN verification performed by ICC and signature (paper)",
    0x06: "Facial biometric verified offline (by ICC)",
    0x07: "Facial biometric verified online",
    0x08: "Finger biometric verified offline (by ICC)",
    0x09: "Finger biometric verified online",
    0x0A: "Palm biometric verified offline (by ICC)",
    0x0B: "Palm biometric verified online",
    0x0C: "Iris biometric verified offline (by ICC)",
    0x0D: "Iris biometric verified online",
    0x0E: "Voice biometric verified offline (by ICC)",
    0x0F: "Voice biometric verified online",
    0x1E: "Signature (paper)",
    0x1F: "No CVM required",
    0x3F: "Not available for use",
}
# Book 4, Annex A4: CVM Results byte 1 is '3F' when no CVM was performed.
NO_CVM_PERFORMED = 0x3F

CVM_CONDITIONS: dict[int, str] = {
    0x00: "Always",
    0x01: "If unattended cash",
    0x02: "If not unattended cash and not manual cash and not purchase with cashback",
    0x03: "If terminal supports the CVM",
    0x04: "If manual cash",
    0x05: "If purchase with cashback",
    0x06: "If transaction is in the application currency and is under X value",
    0x07: "If transaction is in the application currency and is over X value",
    0x08: "If transaction is in the application currency and is under Y value",
    0x09: "If transaction is in the application currency and is over Y value",
}


def cvm_method_name(code: int) -> str:
    """Name of a 6-bit CVM code (Table 43); unassigned ranges are named by their owner."""
    code &= 0x3F
    if code in CVM_METHODS:
        return CVM_METHODS[code]
    if 0x20 <= code <= 0x2F:
        return f"Payment system CVM {code:02X}"
    if 0x30 <= code <= 0x3E:
        return f"Issuer CVM {code:02X}"
    return f"RFU CVM {code:02X}"


def cvm_condition_name(code: int) -> str:
    """Name of a CVM Condition Code (Table 44); '80'-'FF' belong to the payment systems."""
    if code in CVM_CONDITIONS:
        return CVM_CONDITIONS[code]
    if code >= 0x80:
        return f"Payment system condition {code:02X}"
    return f"RFU condition {code:02X}"


@dataclass(frozen=True, slots=True)
class CvmRule:
    method: int            # 6-bit CVM code, byte 1 b6-b1
    apply_next_if_unsuccessful: bool  # byte 1 b7: apply succeeding CV Rule if this CVM is unsuccessful
    condition: int         # byte 2

    @property
    def method_name(self) -> str:
        return cvm_method_name(self.method)

    @property
    def condition_name(self) -> str:
        return cvm_condition_name(self.condition)


@dataclass(frozen=True, slots=True)
class CvmList:
    amount_x: int  # binary, in the application currency (Annex C3)
    amount_y: int
    rules: list[CvmRule]


def decode_cvm_list(b: bytes) -> CvmList:
    """'8E': 4-byte amount X, 4-byte amount Y, then 2-byte CV Rules (Book 3, 10.5)."""
    if not isinstance(b, bytes | bytearray):
        raise CardDataError(f"CVM List must be bytes, not {type(b).__name__}", tag=0x8E)
    if len(b) < 8:
        raise CardDataError(f"CVM List is {len(b)} bytes, shorter than its two amounts", tag=0x8E)
    if (len(b) - 8) % 2:
        raise CardDataError("CVM List ends in half a CV Rule", tag=0x8E)
    rules = [CvmRule(b[pos] & 0x3F, bool(b[pos] & 0x40), b[pos + 1]) for pos in range(8, len(b), 2)]
    return CvmList(int.from_bytes(b[0:4], "big"), int.from_bytes(b[4:8], "big"), rules)


CVM_RESULTS: dict[int, str] = {0x00: "Unknown", 0x01: "Failed", 0x02: "Successful"}


@dataclass(frozen=True, slots=True)
class CvmResults:
    method: int              # CVM performed (6-bit code, '3F' when none)
    apply_next_if_unsuccessful: bool
    condition: int
    result: int              # byte 3, Book 4 Annex A4

    @property
    def method_name(self) -> str:
        return "No CVM performed" if self.method == NO_CVM_PERFORMED else cvm_method_name(self.method)

    @property
    def condition_name(self) -> str:
        return cvm_condition_name(self.condition)

    @property
    def result_name(self) -> str:
        return CVM_RESULTS.get(self.result, f"RFU result {self.result:02X}")


def decode_cvm_results(b: bytes) -> CvmResults:
    """'9F34': CVM performed, CVM condition, CVM result (Book 4, Annex A4)."""
    _expect_length(b, 3, "CVM Results", 0x9F34)
    return CvmResults(b[0] & 0x3F, bool(b[0] & 0x40), b[1], b[2])


# --- TVR and TSI, Book 3 Annex C5 (Table 46) and C6 (Table 47) --------------------------

TVR_BITS: dict[tuple[int, int], str] = {
    (0, 0x80): "Offline data authentication was not performed",
    (0, 0x40): "SDA failed",
    (0, 0x20): "ICC data missing",
    (0, 0x10): "Card appears on terminal exception file",
    (0, 0x08): "DDA failed",
    (0, 0x04): "CDA failed",
    (0, 0x02): "SDA selected",
    (0, 0x01): "XDA selected",
    (1, 0x80): "ICC and terminal have different application versions",
    (1, 0x40): "Expired application",
    (1, 0x20): "Application not yet effective",
    (1, 0x10): "Requested service not allowed for card product",
    (1, 0x08): "New card",
    (1, 0x02): "Biometric performed and successful",
    (1, 0x01): "Biometric template format not supported",
    (2, 0x80): "Cardholder verification was not successful",
    (2, 0x40): "Unrecognised CVM",
    (2, 0x20): "PIN Try Limit exceeded",
    (2, 0x10): "PIN entry required and PIN pad not present or not working",
    (2, 0x08): "PIN entry required, PIN pad present, but PIN was not entered",
    (2, 0x04): "Online CVM captured",
    (2, 0x02): "Biometric required but Biometric capture device not working",
    (2, 0x01): "Biometric required, Biometric capture device present, but Biometric Subtype "
               "entry was bypassed",
    (3, 0x80): "Transaction exceeds floor limit",
    (3, 0x40): "Lower consecutive offline limit exceeded",
    (3, 0x20): "Upper consecutive offline limit exceeded",
    (3, 0x10): "Transaction selected randomly for online processing",
    (3, 0x08): "Merchant forced transaction online",
    (3, 0x04): "Biometric Try Limit exceeded",
    (3, 0x02): "A selected Biometric Type not supported",
    (3, 0x01): "XDA signature verification failed",
    (4, 0x80): "Default TDOL used",
    (4, 0x40): "Issuer authentication failed",
    (4, 0x20): "Script processing failed before final GENERATE AC",
    (4, 0x10): "Script processing failed after final GENERATE AC",
    (4, 0x08): "Reserved for use by the EMV Contactless Specifications (byte 5 b4)",
    (4, 0x04): "CA ECC key missing",
    (4, 0x02): "ECC key recovery failed",
    (4, 0x01): "Reserved for use by the EMV Contactless Specifications (byte 5 b1)",
}

TSI_BITS: dict[tuple[int, int], str] = {
    (0, 0x80): "Offline data authentication was performed",
    (0, 0x40): "Cardholder verification was performed",
    (0, 0x20): "Card risk management was performed",
    (0, 0x10): "Issuer authentication was performed",
    (0, 0x08): "Terminal risk management was performed",
    (0, 0x04): "Script processing was performed",
}


def decode_tvr(b: bytes) -> list[str]:
    """'95': names of the set bits, byte 1 b8 first; RFU bits are not named."""
    _expect_length(b, 5, "TVR", 0x95)
    return _set_bits(b, TVR_BITS)


def decode_tsi(b: bytes) -> list[str]:
    """'9B': names of the set bits; byte 1 b2-b1 and byte 2 are RFU."""
    _expect_length(b, 2, "TSI", 0x9B)
    return _set_bits(b, TSI_BITS)


# --- Dates, Book 3 Annex A (n 6 YYMMDD) ------------------------------------------------

def decode_date(b: bytes, *, tag: int | None = None) -> datetime.date:
    """'5F24', '5F25', '9A': YY below 50 is 20YY, otherwise 19YY."""
    _expect_length(b, 3, "date", tag)
    digits = _bcd_digits(b, "date", tag)
    yy, mm, dd = int(digits[0:2]), int(digits[2:4]), int(digits[4:6])
    year = 2000 + yy if yy < 50 else 1900 + yy
    try:
        return datetime.date(year, mm, dd)
    except ValueError:
        raise CardDataError(f"date has month {mm} and day {dd}, not a calendar day",
                            tag=tag) from None


def format_expiry(b: bytes) -> str:
    """Application Expiration Date '5F24' as YYYY-MM."""
    expiry = decode_date(b, tag=0x5F24)
    return f"{expiry.year:04d}-{expiry.month:02d}"


# --- PAN and track 2 -------------------------------------------------------------------

MAX_PAN_DIGITS = 19  # Book 3 Annex A: '5A' is cn var. up to 19


def pan_digits(b: bytes) -> str:
    """'5A' (cn, Book 3 4.3): digits left-justified, padded with trailing 'F' nibbles."""
    if not isinstance(b, bytes | bytearray):
        raise CardDataError(f"PAN must be bytes, not {type(b).__name__}", tag=0x5A)
    digits = b.hex().upper().rstrip("F")
    if not digits:
        raise CardDataError("PAN has no digits", tag=0x5A)
    if not digits.isdigit():
        raise CardDataError("PAN holds a nibble that is neither a digit nor trailing padding",
                            tag=0x5A)
    if len(digits) > MAX_PAN_DIGITS:
        raise CardDataError(f"PAN has {len(digits)} digits, more than {MAX_PAN_DIGITS}", tag=0x5A)
    return digits


def mask_pan(pan: str) -> str:
    """Keep at most the first 6 and the last 4 digits; at least the middle digits are hidden."""
    if not pan.isascii() or not pan.isdigit() or len(pan) > MAX_PAN_DIGITS:
        raise CardDataError("PAN to mask is not 1 to 19 decimal digits")
    if len(pan) <= 10:
        shown = min(4, len(pan) // 2)  # too short for 6 + 4: reveal only the end
        return "*" * (len(pan) - shown) + pan[len(pan) - shown:]
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


@dataclass(frozen=True, slots=True)
class Track2:
    """Track 2 Equivalent Data '57' (Book 3 Annex A). The repr hides the PAN and discretionary data."""

    pan: str = field(repr=False)
    expiry: str          # YYMM as on the track
    service_code: str
    discretionary: str = field(repr=False)

    def __repr__(self) -> str:
        try:
            pan = mask_pan(self.pan)
        except CardDataError:
            pan = "<hidden>"
        return (f"Track2(pan={pan!r}, expiry={self.expiry!r}, "
                f"service_code={self.service_code!r}, discretionary=<{len(self.discretionary)} digits>)")


def decode_track2(b: bytes) -> Track2:
    """PAN (n, up to 19), separator 'D', expiry YYMM, service code n 3, discretionary data,
    one 'F' pad nibble when the digit count is odd (Book 3 Annex A, '57')."""
    if not isinstance(b, bytes | bytearray):
        raise CardDataError(f"track 2 must be bytes, not {type(b).__name__}", tag=0x57)
    text = b.hex().upper()
    separator = text.find("D")
    if separator < 0:
        raise CardDataError("track 2 has no 'D' field separator", tag=0x57)
    pan, rest = text[:separator], text[separator + 1:]
    if not pan.isdigit() or len(pan) > MAX_PAN_DIGITS:
        raise CardDataError("track 2 PAN is not 1 to 19 digits", tag=0x57)
    if rest.endswith("F"):
        rest = rest[:-1]
    if not rest.isdigit() or len(rest) < 7:
        raise CardDataError("track 2 after the separator is not expiry, service code and digits",
                            tag=0x57)
    return Track2(pan, rest[0:4], rest[4:7], rest[7:])


def track2_pan(b: bytes) -> str:
    """The PAN of Track 2 Equivalent Data: the digits before the 'D' separator."""
    return decode_track2(b).pan


# --- Language Preference, country and currency codes -----------------------------------

def languages(b: bytes) -> list[str]:
    """'5F2D': 1-4 ISO 639-1 codes of 2 letters each (Book 3 Annex A). Cards should use lowercase
    but terminals accept either case (Annex A note), so codes are returned in lowercase."""
    if not isinstance(b, bytes | bytearray):
        raise CardDataError(f"Language Preference must be bytes, not {type(b).__name__}", tag=0x5F2D)
    if len(b) % 2 or not 2 <= len(b) <= 8:
        raise CardDataError(f"Language Preference is {len(b)} bytes, not 2, 4, 6 or 8", tag=0x5F2D)
    codes: list[str] = []
    for pos in range(0, len(b), 2):
        pair = bytes(b[pos:pos + 2])
        if not all(0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A for c in pair):
            raise CardDataError(f"Language Preference code {pos // 2 + 1} is not two letters",
                                tag=0x5F2D)
        codes.append(pair.decode("ascii").lower())
    return codes


def _numeric_3(b: bytes, what: str, tag: int | None) -> int:
    """An n 3 value in 2 bytes: four BCD digits, the first one the '0' padding (Book 3, 4.3)."""
    _expect_length(b, 2, what, tag)
    digits = _bcd_digits(b, what, tag)
    if digits[0] != "0":
        raise CardDataError(f"{what} has 4 digits, an n 3 value has 3", tag=tag)
    return int(digits)


def country_code(b: bytes, *, tag: int = 0x5F28) -> int:
    """ISO 3166-1 numeric country code: '5F28', '9F1A', '9F57'."""
    return _numeric_3(b, "country code", tag)


def currency_code(b: bytes, *, tag: int = 0x9F42) -> int:
    """ISO 4217 numeric currency code: '9F42', '5F2A', '9F3C'."""
    return _numeric_3(b, "currency code", tag)
