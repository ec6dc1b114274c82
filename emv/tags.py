"""The EMV tag dictionary: name, source, format, length and templates of each data element.

Sources: EMV 4.4 Book 3 Annex A (data elements dictionary), plus the common Mastercard
(EMV Contactless Book C-2, M/Chip) and Visa (Book C-3, VCPS) proprietary tags. No Cartes
Bancaires tag is listed: their proprietary data elements are not publicly documented.

Formats follow Book 3, 4.3: `a`, `an`, `ans`, `b`, `cn`, `n`. Book 3 writes `var.` for
templates, lists and a few elements whose coding is left to another standard; the templates
and lists are recorded as `b`, IBAN and BIC (ISO 13616 / ISO 9362) as `an`, and the
Authorisation Code as `an` (its ISO 8583 field 38 coding). Lengths are in bytes; `var. up to
N` is (0, N) and a `var.` with no bound in the spec is (0, VAR_MAX).

Payment systems reuse the proprietary range '9F50'-'9F7F'. Where Mastercard and Visa give one
tag two meanings with the same format, the entry names both and spans both lengths; where the
formats differ, the entry keeps the meaning this terminal needs and says which one in its name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Format = Literal["a", "an", "ans", "b", "cn", "n"]
Source = Literal["card", "terminal", "issuer", "issuer/terminal"]

# A `var.` element with no upper bound in the spec: at most one short-length response body.
VAR_MAX = 255
# Book 2, 5.1 / 6.1: every RSA modulus (and so certificate, signature, remainder) fits 248 bytes.
_NCA = (1, 248)
_VAR = (0, VAR_MAX)

_RECORD = (0x70, 0x77)      # READ RECORD data or GPO format 2 response
_GEN_AC = (0x77, 0x80)      # GPO / GENERATE AC / INTERNAL AUTHENTICATE responses
_DIRECTORY = (0xBF0C, 0x73)  # FCI Issuer Discretionary Data or Directory Discretionary Template
_SCRIPT = (0x71, 0x72)


@dataclass(frozen=True, slots=True)
class TagInfo:
    tag: int
    name: str
    source: Source
    fmt: Format
    min_len: int
    max_len: int
    template: tuple[int, ...] = ()
    sensitive: bool = False  # PAN, track data, cardholder name, PIN data: never logged in clear


def _t(tag: int, name: str, source: Source, fmt: Format, length: int | tuple[int, int],
       template: tuple[int, ...] = (), sensitive: bool = False) -> TagInfo:
    lo, hi = (length, length) if isinstance(length, int) else length
    return TagInfo(tag, name, source, fmt, lo, hi, template, sensitive)


# EMV 4.4 Book 3, Annex A, Table 33 (in the order of the tag value).
_BOOK3: tuple[TagInfo, ...] = (
    _t(0x42, "Issuer Identification Number (IIN)", "card", "n", 3, _DIRECTORY),
    _t(0x4F, "Application Identifier (AID) - card", "card", "b", (5, 16), (0x61,)),
    _t(0x50, "Application Label", "card", "ans", (1, 16), (0x61, 0xA5)),
    _t(0x57, "Track 2 Equivalent Data", "card", "b", (0, 19), _RECORD, sensitive=True),
    _t(0x5A, "Application Primary Account Number (PAN)", "card", "cn", (0, 10), _RECORD,
       sensitive=True),
    _t(0x5F20, "Cardholder Name", "card", "ans", (2, 26), _RECORD, sensitive=True),
    _t(0x5F24, "Application Expiration Date", "card", "n", 3, _RECORD),
    _t(0x5F25, "Application Effective Date", "card", "n", 3, _RECORD),
    _t(0x5F28, "Issuer Country Code", "card", "n", 2, _RECORD),
    _t(0x5F2A, "Transaction Currency Code", "terminal", "n", 2),
    _t(0x5F2D, "Language Preference", "card", "an", (2, 8), (0xA5,)),
    _t(0x5F30, "Service Code", "card", "n", 2, _RECORD),
    _t(0x5F34, "Application PAN Sequence Number", "card", "n", 1, _RECORD),
    _t(0x5F36, "Transaction Currency Exponent", "terminal", "n", 1),
    _t(0x5F50, "Issuer URL", "card", "ans", _VAR, _DIRECTORY),
    _t(0x5F53, "International Bank Account Number (IBAN)", "card", "an", (0, 34), _DIRECTORY),
    _t(0x5F54, "Bank Identifier Code (BIC)", "card", "an", (8, 11), _DIRECTORY),
    _t(0x5F55, "Issuer Country Code (alpha2 format)", "card", "a", 2, _DIRECTORY),
    _t(0x5F56, "Issuer Country Code (alpha3 format)", "card", "a", 3, _DIRECTORY),
    _t(0x5F57, "Account Type", "terminal", "n", 1),
    _t(0x61, "Application Template", "card", "b", (0, 252), (0x70,)),
    _t(0x6F, "File Control Information (FCI) Template", "card", "b", (0, 252)),
    _t(0x70, "READ RECORD Response Message Template", "card", "b", (0, 252)),
    _t(0x71, "Issuer Script Template 1", "issuer", "b", _VAR),
    _t(0x72, "Issuer Script Template 2", "issuer", "b", _VAR),
    _t(0x73, "Directory Discretionary Template", "card", "b", (0, 252), (0x61,)),
    _t(0x77, "Response Message Template Format 2", "card", "b", _VAR),
    _t(0x80, "Response Message Template Format 1", "card", "b", _VAR),
    _t(0x81, "Amount, Authorised (Binary)", "terminal", "b", 4),
    _t(0x82, "Application Interchange Profile (AIP)", "card", "b", 2, _GEN_AC),
    _t(0x83, "Command Template", "terminal", "b", _VAR),
    _t(0x84, "Dedicated File (DF) Name", "card", "b", (5, 16), (0x6F,)),
    _t(0x86, "Issuer Script Command", "issuer", "b", (0, 261), _SCRIPT),
    _t(0x87, "Application Priority Indicator", "card", "b", 1, (0x61, 0xA5)),
    _t(0x88, "Short File Identifier (SFI)", "card", "b", 1, (0xA5,)),
    _t(0x89, "Authorisation Code", "issuer", "an", 6),
    _t(0x8A, "Authorisation Response Code", "issuer/terminal", "an", 2),
    _t(0x8C, "Card Risk Management Data Object List 1 (CDOL1)", "card", "b", (0, 252), _RECORD),
    _t(0x8D, "Card Risk Management Data Object List 2 (CDOL2)", "card", "b", (0, 252), _RECORD),
    _t(0x8E, "Cardholder Verification Method (CVM) List", "card", "b", (10, 252), _RECORD),
    _t(0x8F, "Certification Authority Public Key Index (card)", "card", "b", 1, _RECORD),
    _t(0x90, "Issuer Public Key Certificate", "card", "b", _NCA, _RECORD),
    _t(0x91, "Issuer Authentication Data", "issuer", "b", (8, 16)),
    _t(0x92, "Issuer Public Key Remainder", "card", "b", _NCA, _RECORD),
    _t(0x93, "Signed Static Application Data", "card", "b", _NCA, _RECORD),
    _t(0x94, "Application File Locator (AFL)", "card", "b", (0, 252), _GEN_AC),
    _t(0x95, "Terminal Verification Results (TVR)", "terminal", "b", 5),
    _t(0x97, "Transaction Certificate Data Object List (TDOL)", "card", "b", (0, 252), _RECORD),
    _t(0x98, "Transaction Certificate (TC) Hash Value", "terminal", "b", 20),
    _t(0x99, "Transaction Personal Identification Number (PIN) Data", "terminal", "b", _VAR,
       sensitive=True),
    _t(0x9A, "Transaction Date", "terminal", "n", 3),
    _t(0x9B, "Transaction Status Information (TSI)", "terminal", "b", 2),
    _t(0x9C, "Transaction Type", "terminal", "n", 1),
    _t(0x9D, "Directory Definition File (DDF) Name", "card", "b", (5, 16), (0x61,)),
    _t(0x9F01, "Acquirer Identifier", "terminal", "n", 6),
    _t(0x9F02, "Amount, Authorised (Numeric)", "terminal", "n", 6),
    _t(0x9F03, "Amount, Other (Numeric)", "terminal", "n", 6),
    _t(0x9F04, "Amount, Other (Binary)", "terminal", "b", 4),
    _t(0x9F05, "Application Discretionary Data", "card", "b", (1, 32), _RECORD),
    _t(0x9F06, "Application Identifier (AID) - terminal", "terminal", "b", (5, 16)),
    _t(0x9F07, "Application Usage Control (AUC)", "card", "b", 2, _RECORD),
    _t(0x9F08, "Application Version Number (card)", "card", "b", 2, _RECORD),
    _t(0x9F09, "Application Version Number (terminal)", "terminal", "b", 2),
    _t(0x9F0A, "Application Selection Registered Proprietary Data (ASRPD)", "card", "b", _VAR,
       (0x73, 0xBF0C)),
    _t(0x9F0B, "Cardholder Name Extended", "card", "ans", (27, 45), _RECORD, sensitive=True),
    _t(0x9F0C, "Issuer Identification Number Extended (IINE)", "card", "n", (3, 4), _DIRECTORY),
    _t(0x9F0D, "Issuer Action Code - Default", "card", "b", 5, _RECORD),
    _t(0x9F0E, "Issuer Action Code - Denial", "card", "b", 5, _RECORD),
    _t(0x9F0F, "Issuer Action Code - Online", "card", "b", 5, _RECORD),
    _t(0x9F10, "Issuer Application Data (IAD)", "card", "b", (0, 32), _GEN_AC),
    _t(0x9F11, "Issuer Code Table Index", "card", "n", 1, (0xA5,)),
    _t(0x9F12, "Application Preferred Name", "card", "ans", (1, 16), (0x61, 0xA5)),
    _t(0x9F13, "Last Online Application Transaction Counter (ATC) Register", "card", "b", 2),
    _t(0x9F14, "Lower Consecutive Offline Limit", "card", "b", 1, _RECORD),
    _t(0x9F15, "Merchant Category Code", "terminal", "n", 2),
    _t(0x9F16, "Merchant Identifier", "terminal", "ans", 15),
    _t(0x9F17, "Personal Identification Number (PIN) Try Counter", "card", "b", 1),
    _t(0x9F18, "Issuer Script Identifier", "issuer", "b", 4, _SCRIPT),
    _t(0x9F19, "Token Requestor ID", "card", "n", 6, _RECORD),
    _t(0x9F1A, "Terminal Country Code", "terminal", "n", 2),
    _t(0x9F1B, "Terminal Floor Limit", "terminal", "b", 4),
    _t(0x9F1C, "Terminal Identification", "terminal", "an", 8),
    _t(0x9F1D, "Terminal Risk Management Data", "terminal", "b", (1, 8)),
    _t(0x9F1E, "Interface Device (IFD) Serial Number", "terminal", "an", 8),
    _t(0x9F1F, "Track 1 Discretionary Data", "card", "ans", _VAR, _RECORD, sensitive=True),
    _t(0x9F20, "Track 2 Discretionary Data", "card", "cn", _VAR, _RECORD, sensitive=True),
    _t(0x9F21, "Transaction Time", "terminal", "n", 3),
    _t(0x9F22, "Certification Authority Public Key Index (terminal)", "terminal", "b", 1),
    _t(0x9F23, "Upper Consecutive Offline Limit", "card", "b", 1, _RECORD),
    _t(0x9F24, "Payment Account Reference (PAR)", "card", "an", 29, _RECORD),
    _t(0x9F25, "Last 4 Digits of PAN", "card", "n", 2, _RECORD),
    _t(0x9F26, "Application Cryptogram", "card", "b", 8, _GEN_AC),
    _t(0x9F27, "Cryptogram Information Data", "card", "b", 1, _GEN_AC),
    _t(0x9F2A, "Kernel Identifier", "card", "b", (1, 8)),
    _t(0x9F2D, "ICC PIN Encipherment Public Key Certificate", "card", "b", _NCA, _RECORD),
    _t(0x9F2E, "ICC PIN Encipherment Public Key Exponent", "card", "b", (1, 3), _RECORD),
    _t(0x9F2F, "ICC PIN Encipherment Public Key Remainder", "card", "b", _NCA, _RECORD),
    _t(0x9F32, "Issuer Public Key Exponent", "card", "b", (1, 3), _RECORD),
    _t(0x9F33, "Terminal Capabilities", "terminal", "b", 3),
    _t(0x9F34, "Cardholder Verification Method (CVM) Results", "terminal", "b", 3),
    _t(0x9F35, "Terminal Type", "terminal", "n", 1),
    _t(0x9F36, "Application Transaction Counter (ATC)", "card", "b", 2, _GEN_AC),
    _t(0x9F37, "Unpredictable Number", "terminal", "b", 4),
    _t(0x9F38, "Processing Options Data Object List (PDOL)", "card", "b", _VAR, (0xA5,)),
    _t(0x9F39, "Point-of-Service (POS) Entry Mode", "terminal", "n", 1),
    _t(0x9F3A, "Amount, Reference Currency", "terminal", "b", 4),
    _t(0x9F3B, "Application Reference Currency", "card", "n", (2, 8), _RECORD),
    _t(0x9F3C, "Transaction Reference Currency Code", "terminal", "n", 2),
    _t(0x9F3D, "Transaction Reference Currency Exponent", "terminal", "n", 1),
    _t(0x9F40, "Additional Terminal Capabilities", "terminal", "b", 5),
    _t(0x9F41, "Transaction Sequence Counter", "terminal", "n", (2, 4)),
    _t(0x9F42, "Application Currency Code", "card", "n", 2, _RECORD),
    _t(0x9F43, "Application Reference Currency Exponent", "card", "n", (1, 4), _RECORD),
    _t(0x9F44, "Application Currency Exponent", "card", "n", 1, _RECORD),
    _t(0x9F45, "Data Authentication Code", "card", "b", 2),
    _t(0x9F46, "ICC Public Key Certificate", "card", "b", _NCA, _RECORD),
    _t(0x9F47, "ICC Public Key Exponent", "card", "b", (1, 3), _RECORD),
    _t(0x9F48, "ICC Public Key Remainder", "card", "b", _NCA, _RECORD),
    _t(0x9F49, "Dynamic Data Authentication Data Object List (DDOL)", "card", "b", (0, 252), _RECORD),
    _t(0x9F4A, "Static Data Authentication Tag List", "card", "b", _VAR, _RECORD),
    _t(0x9F4B, "Signed Dynamic Application Data", "card", "b", _NCA, _GEN_AC),
    _t(0x9F4C, "ICC Dynamic Number", "card", "b", (2, 8)),
    _t(0x9F4D, "Log Entry", "card", "b", 2, _DIRECTORY),
    _t(0x9F4E, "Merchant Name and Location", "terminal", "ans", _VAR),
    _t(0x9F4F, "Log Format", "card", "b", _VAR),
    _t(0xA5, "File Control Information (FCI) Proprietary Template", "card", "b", _VAR, (0x6F,)),
    _t(0xBF0C, "File Control Information (FCI) Issuer Discretionary Data", "card", "b", (0, 222),
       (0xA5,)),
)

# Mastercard: EMV Contactless Book C-2 (Kernel 2) data dictionary and M/Chip.
_MASTERCARD: tuple[TagInfo, ...] = (
    _t(0x56, "Track 1 Data", "card", "ans", (0, 76), (0x70,), sensitive=True),
    _t(0x9F50, "Offline Accumulator Balance", "card", "n", 6),
    _t(0x9F51, "DRDOL", "card", "b", _VAR, (0x70,)),
    _t(0x9F53, "Transaction Category Code", "terminal", "an", 1),
    _t(0x9F60, "CVC3 (Track1)", "card", "b", 2, (0x77,)),
    _t(0x9F61, "CVC3 (Track2)", "card", "b", 2, (0x77,)),
    _t(0x9F62, "PCVC3 (Track1)", "card", "b", 6, (0x70,)),
    _t(0x9F63, "PUNATC (Track1)", "card", "b", 6, (0x70,)),
    _t(0x9F64, "NATC (Track1)", "card", "b", 1, (0x70,)),
    _t(0x9F65, "PCVC3 (Track2)", "card", "b", 2, (0x70,)),
    _t(0x9F67, "NATC (Track2)", "card", "b", 1, (0x70,)),
    _t(0x9F6A, "Unpredictable Number (Numeric)", "terminal", "n", 4),
    # Visa uses '9F6B' for the Card CVM Limit (n 12); the track data is what must stay masked.
    _t(0x9F6B, "Track 2 Data", "card", "b", (0, 19), (0x70,), sensitive=True),
    # Amex (Book C-4) uses '9F6D' for the Contactless Reader Capabilities.
    _t(0x9F6D, "Mag-stripe Application Version Number (Reader)", "terminal", "b", 2),
    _t(0x9F7E, "Mobile Support Indicator", "terminal", "b", 1),
    _t(0xDF8104, "Balance Read Before Gen AC", "terminal", "n", 6),
    _t(0xDF8105, "Balance Read After Gen AC", "terminal", "n", 6),
    _t(0xDF8106, "Data Needed", "terminal", "b", _VAR),
    _t(0xDF8107, "CDOL1 Related Data", "terminal", "b", _VAR),
    _t(0xDF810C, "Kernel ID", "terminal", "b", 1),
    _t(0xDF810E, "Post-Gen AC Put Data Status", "terminal", "b", 1),
    _t(0xDF810F, "Pre-Gen AC Put Data Status", "terminal", "b", 1),
    _t(0xDF8110, "Proceed To First Write Flag", "terminal", "b", 1),
    _t(0xDF8111, "PDOL Related Data", "terminal", "b", _VAR),
    _t(0xDF8112, "Tags To Read", "terminal", "b", _VAR),
    _t(0xDF8113, "DRDOL Related Data", "terminal", "b", _VAR),
    _t(0xDF8114, "Reference Control Parameter", "terminal", "b", 1),
    _t(0xDF8115, "Error Indication", "terminal", "b", 6),
    _t(0xDF8116, "User Interface Request Data", "terminal", "b", 22),
    _t(0xDF8117, "Card Data Input Capability", "terminal", "b", 1),
    _t(0xDF8118, "CVM Capability - CVM Required", "terminal", "b", 1),
    _t(0xDF8119, "CVM Capability - No CVM Required", "terminal", "b", 1),
    _t(0xDF811A, "Default UDOL", "terminal", "b", 3),
    _t(0xDF811B, "Kernel Configuration", "terminal", "b", 1),
    _t(0xDF811C, "Max Lifetime of Torn Transaction Log Record", "terminal", "b", 2),
    _t(0xDF811D, "Max Number of Torn Transaction Log Records", "terminal", "b", 1),
    _t(0xDF811E, "Mag-stripe CVM Capability - CVM Required", "terminal", "b", 1),
    _t(0xDF811F, "Security Capability", "terminal", "b", 1),
    _t(0xDF8120, "Terminal Action Code - Default", "terminal", "b", 5),
    _t(0xDF8121, "Terminal Action Code - Denial", "terminal", "b", 5),
    _t(0xDF8122, "Terminal Action Code - Online", "terminal", "b", 5),
    _t(0xDF8123, "Reader Contactless Floor Limit", "terminal", "n", 6),
    _t(0xDF8124, "Reader Contactless Transaction Limit (No On-device CVM)", "terminal", "n", 6),
    _t(0xDF8125, "Reader Contactless Transaction Limit (On-device CVM)", "terminal", "n", 6),
    _t(0xDF8126, "Reader CVM Required Limit", "terminal", "n", 6),
    _t(0xDF8127, "Time Out Value", "terminal", "b", 2),
    _t(0xDF8129, "Outcome Parameter Set", "terminal", "b", 8),
    _t(0xDF812A, "DD Card (Track1)", "terminal", "ans", (0, 56), sensitive=True),
    _t(0xDF812B, "DD Card (Track2)", "terminal", "b", (0, 8), sensitive=True),
    _t(0xDF812C, "Mag-stripe CVM Capability - No CVM Required", "terminal", "b", 1),
    _t(0xDF812D, "Message Hold Time", "terminal", "n", 3),
    _t(0xDF8130, "Hold Time Value", "terminal", "b", 1),
    _t(0xDF8131, "Phone Message Table", "terminal", "b", _VAR),
    _t(0xDF8132, "Minimum Relay Resistance Grace Period", "terminal", "b", 2),
    _t(0xDF8133, "Maximum Relay Resistance Grace Period", "terminal", "b", 2),
    _t(0xDF8134, "Terminal Expected Transmission Time For Relay Resistance C-APDU", "terminal",
       "b", 2),
    _t(0xDF8135, "Terminal Expected Transmission Time For Relay Resistance R-APDU", "terminal",
       "b", 2),
    _t(0xDF8136, "Relay Resistance Accuracy Threshold", "terminal", "b", 2),
    _t(0xDF8137, "Relay Resistance Transmission Time Mismatch Threshold", "terminal", "b", 1),
)

# Visa: EMV Contactless Book C-3 (Kernel 3) and VCPS; Book A for the TTQ.
_VISA: tuple[TagInfo, ...] = (
    _t(0x9F5A, "Application Program Identifier (Program ID)", "card", "b", (1, 16), (0xBF0C,)),
    # Mastercard mag-stripe mode uses '9F66' for PUNATC (Track2); the TTQ is what PDOLs ask for.
    _t(0x9F66, "Terminal Transaction Qualifiers (TTQ)", "terminal", "b", 4),
    _t(0x9F68, "Card Additional Processes", "card", "b", 4),
)

# Same tag, same format, two payment systems: both names, both lengths.
_SHARED: tuple[TagInfo, ...] = (
    _t(0x9F69, "UDOL (Mastercard) / Card Authentication Related Data (Visa)", "card", "b", _VAR),
    _t(0x9F6C, "Mag-stripe Application Version Number (Card) (Mastercard) / "
       "Card Transaction Qualifiers (CTQ) (Visa)", "card", "b", 2),
    _t(0x9F6E, "Third Party Data (Mastercard) / Form Factor Indicator (Visa)", "card", "b",
       (4, 32)),
    _t(0x9F7C, "Merchant Custom Data (Mastercard) / Customer Exclusive Data (Visa)", "card", "b",
       (0, 32)),
)

_ENTRIES: tuple[TagInfo, ...] = _BOOK3 + _MASTERCARD + _VISA + _SHARED


def _index(entries: Iterable[TagInfo]) -> dict[int, TagInfo]:
    """Key the dictionary by tag, refusing a tag listed twice or an impossible length range."""
    table: dict[int, TagInfo] = {}
    for entry in entries:
        if entry.tag in table:
            raise ValueError(f"tag {entry.tag:X} is listed twice in the tag dictionary")
        if not 0 <= entry.min_len <= entry.max_len:
            raise ValueError(f"tag {entry.tag:X} has length range {entry.min_len}-{entry.max_len}")
        table[entry.tag] = entry
    return table


TAGS: dict[int, TagInfo] = _index(_ENTRIES)


def info(tag: int) -> TagInfo | None:
    return TAGS.get(tag)


def format_of(tag: int) -> Format:
    """Format used for DOL padding and truncation (Book 3, 5.4); unknown tags count as `b`."""
    entry = TAGS.get(tag)
    return entry.fmt if entry else "b"


def name_of(tag: int) -> str:
    entry = TAGS.get(tag)
    return entry.name if entry else f"unknown tag {tag:X}"


def is_sensitive(tag: int) -> bool:
    entry = TAGS.get(tag)
    return bool(entry and entry.sensitive)
