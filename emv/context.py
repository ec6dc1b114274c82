"""The state of one transaction as the kernel steps fill it in (EMV 4.4 Book 3, 10).

Each step module (`oda`, `restrictions`, `cvm`, `risk`, `action_analysis`, `completion`) reads
and writes one `Context`; the TVR and TSI bits are named below as Book 3 Annex C5/C6 name them.
"""

from __future__ import annotations

import datetime
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from emv import card_data
from emv.kernel_config import AidParams, KernelConfig
from emv.sensitive import Sensitive

Bit = tuple[int, int]  # (byte index from 0, mask), as card_data.TVR_BITS


class TVR:
    """Terminal Verification Results '95' bits, Book 3 Annex C5 (Table 46)."""

    ODA_NOT_PERFORMED: Bit = (0, 0x80)
    SDA_FAILED: Bit = (0, 0x40)
    ICC_DATA_MISSING: Bit = (0, 0x20)
    EXCEPTION_FILE: Bit = (0, 0x10)
    DDA_FAILED: Bit = (0, 0x08)
    CDA_FAILED: Bit = (0, 0x04)
    SDA_SELECTED: Bit = (0, 0x02)
    DIFFERENT_VERSIONS: Bit = (1, 0x80)
    EXPIRED: Bit = (1, 0x40)
    NOT_YET_EFFECTIVE: Bit = (1, 0x20)
    SERVICE_NOT_ALLOWED: Bit = (1, 0x10)
    NEW_CARD: Bit = (1, 0x08)
    CVM_NOT_SUCCESSFUL: Bit = (2, 0x80)
    UNRECOGNISED_CVM: Bit = (2, 0x40)
    PIN_TRY_LIMIT_EXCEEDED: Bit = (2, 0x20)
    PIN_PAD_NOT_WORKING: Bit = (2, 0x10)
    PIN_NOT_ENTERED: Bit = (2, 0x08)
    ONLINE_PIN_ENTERED: Bit = (2, 0x04)
    FLOOR_LIMIT_EXCEEDED: Bit = (3, 0x80)
    LCOL_EXCEEDED: Bit = (3, 0x40)
    UCOL_EXCEEDED: Bit = (3, 0x20)
    RANDOMLY_SELECTED: Bit = (3, 0x10)
    MERCHANT_FORCED_ONLINE: Bit = (3, 0x08)
    DEFAULT_TDOL_USED: Bit = (4, 0x80)
    ISSUER_AUTHENTICATION_FAILED: Bit = (4, 0x40)
    SCRIPT_FAILED_BEFORE_FINAL_AC: Bit = (4, 0x20)
    SCRIPT_FAILED_AFTER_FINAL_AC: Bit = (4, 0x10)


class TSI:
    """Transaction Status Information '9B' bits, Book 3 Annex C6 (Table 47)."""

    ODA_PERFORMED: Bit = (0, 0x80)
    CVM_PERFORMED: Bit = (0, 0x40)
    CARD_RISK_MANAGEMENT_PERFORMED: Bit = (0, 0x20)
    ISSUER_AUTHENTICATION_PERFORMED: Bit = (0, 0x10)
    TERMINAL_RISK_MANAGEMENT_PERFORMED: Bit = (0, 0x08)
    SCRIPT_PROCESSING_PERFORMED: Bit = (0, 0x04)


class Bits:
    """A fixed-size bit string (TVR, TSI) set by name."""

    __slots__ = ("_bytes", "_names")

    def __init__(self, size: int, names: Mapping[Bit, str]) -> None:
        self._bytes = bytearray(size)
        self._names = names

    def set(self, bit: Bit) -> None:
        self._bytes[bit[0]] |= bit[1]

    def clear(self, bit: Bit) -> None:
        self._bytes[bit[0]] &= ~bit[1] & 0xFF

    def is_set(self, bit: Bit) -> bool:
        return bool(self._bytes[bit[0]] & bit[1])

    @property
    def value(self) -> bytes:
        return bytes(self._bytes)

    def names(self) -> list[str]:
        return [name for (index, mask), name in self._names.items() if self._bytes[index] & mask]

    def __repr__(self) -> str:
        return self._bytes.hex().upper()


@dataclass
class Transaction:
    """What the merchant asked for, and the injected clock reading."""

    amount: int  # 9F02, minor units
    when: datetime.datetime  # 9A and 9F21, terminal local time
    sequence_counter: int = 1  # 9F41
    other_amount: int = 0  # 9F03 (cashback)
    transaction_type: int = 0x00  # 9C: '00' goods and services (Book 3 Annex A, ISO 8583 p.code)
    force_online: bool = False  # the merchant pressed "force online" (TVR byte 4 b4)

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or not 0 <= self.amount < 10**12:
            raise ValueError("amount is an integer of minor units under 10^12")
        if not 0 <= self.other_amount < 10**12:
            raise ValueError("other amount is an integer of minor units under 10^12")
        if not 0 < self.sequence_counter < 10**8:
            raise ValueError("transaction sequence counter is 1 to 99999999")


def _n(value: int, digits: int) -> bytes:
    return bytes.fromhex(f"{value:0{digits}d}")


@dataclass
class Context:
    config: KernelConfig
    transaction: Transaction
    rng: Callable[[int], bytes]  # injected randomness: n bytes
    # Book 3, 10.6.1: amount of the most recent approved sale with this card (PAN token), or 0.
    transaction_log: Callable[[str], int] | None = None

    aid_params: AidParams | None = None
    card: dict[int, bytes] = field(default_factory=dict)  # ICC data: FCI, GPO, records, GET DATA
    tvr: Bits = field(default_factory=lambda: Bits(5, card_data.TVR_BITS))
    tsi: Bits = field(default_factory=lambda: Bits(2, card_data.TSI_BITS))
    cvm_results: bytes = bytes([card_data.NO_CVM_PERFORMED, 0x00, 0x00])  # 9F34, Book 4 A4
    unpredictable_number: bytes = b""  # 9F37, drawn once per transaction
    authorisation_response_code: bytes | None = None  # 8A

    aip: card_data.AipFlags | None = None
    afl: list[card_data.AflEntry] = field(default_factory=list)
    pdol_data: bytes = b""  # sent in GET PROCESSING OPTIONS (Book 2, 6.6.2 step 10 hashes it)
    cdol1_data: bytes = b""  # sent in the first GENERATE AC
    cdol2_data: bytes = b""  # sent in the second GENERATE AC
    oda_data: bytearray = field(default_factory=bytearray)  # Book 3, 10.3: static data to sign
    oda_record_invalid: bool = False  # an ODA record was not a '70' template (Book 3, 10.3)
    oda_method: str | None = None  # "sda", "dda", "cda" once selected
    issuer_key: Any = None  # certificates.IssuerPublicKey once recovered
    icc_key: Any = None  # certificates.IccPublicKey once recovered

    cvm_performed: str | None = None  # card_data CVM method name, for receipts
    signature_required: bool = False
    online_pin_block: Sensitive[bytes] | None = None
    pin_key_serial: bytes | None = None
    merchant_decline: str | None = None  # a fraud rule or the exception file declined the sale
    offline_refused: str | None = None  # the merchant's offline limits refused a TC (their reason)
    script_results: bytearray = field(default_factory=bytearray)  # 9F5B, 5 bytes per script
    events: list[str] = field(default_factory=list)  # kernel decisions, safe to print

    def note(self, event: str) -> None:
        """Record a decision for the log and the test reports; never card data."""
        self.events.append(event)

    def terminal_data(self) -> dict[int, bytes]:
        """Terminal-sourced data objects as they stand now (Book 3 Annex A; Book 4 Annex A)."""
        terminal = self.config.terminal
        txn = self.transaction
        data = {
            0x9F02: _n(txn.amount, 12),
            0x9F03: _n(txn.other_amount, 12),
            0x9F1A: _n(terminal.country, 4),
            0x5F2A: _n(terminal.currency, 4),
            0x5F36: _n(terminal.currency_exponent, 2),
            0x9A: bytes.fromhex(txn.when.strftime("%y%m%d")),
            0x9F21: bytes.fromhex(txn.when.strftime("%H%M%S")),
            0x9C: _n(txn.transaction_type, 2),
            0x9F37: self.unpredictable_number,
            0x95: self.tvr.value,
            0x9B: self.tsi.value,
            0x9F34: self.cvm_results,
            0x9F35: bytes([terminal.terminal_type]),
            0x9F33: terminal.capabilities,
            0x9F40: terminal.additional_capabilities,
            0x9F1E: terminal.ifd_serial.encode("ascii"),
            0x9F1C: terminal.terminal_id.encode("ascii"),
            0x9F16: terminal.merchant_id.encode("ascii"),
            0x9F15: _n(terminal.merchant_category, 4),
            0x9F39: _n(terminal.pos_entry_mode, 2),
            0x9F41: _n(txn.sequence_counter, 8),
        }
        if terminal.merchant_name_location:
            data[0x9F4E] = terminal.merchant_name_location.encode("latin-1", "replace")
        params = self.aid_params
        if params is not None:
            data[0x9F09] = params.application_versions[0] if params.application_versions else bytes(2)
            data[0x9F1B] = min(params.floor_limit, 0xFFFFFFFF).to_bytes(4, "big")
        if self.authorisation_response_code is not None:
            data[0x8A] = self.authorisation_response_code
        return data

    def dol_data(self) -> Mapping[int, bytes]:
        """What DOLs are filled from: terminal data first, then the card's (Book 3, 5.4)."""
        return ChainMap(self.terminal_data(), self.card)
