"""What the kernel needs to know about the terminal, the merchant and each application.

Plain, checked values; reading and validating the TOML file is the firmware's job
(`firmware/config.py`), which builds these. Money is in minor units of `TerminalConfig.currency`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from emv.capk import CaPublicKey
from emv.errors import EmvError


class KernelConfigError(EmvError, ValueError):
    """A configuration value the kernel cannot work with; `key` names it."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


def _length(key: str, value: bytes, *lengths: int) -> None:
    if not isinstance(value, bytes) or len(value) not in lengths:
        raise KernelConfigError(key, f"must be {' or '.join(map(str, lengths))} bytes")


def _range(key: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise KernelConfigError(key, f"must be an integer from {low} to {high}")


@dataclass(frozen=True)
class TerminalConfig:
    """Terminal-wide data objects (EMV 4.4 Book 4, Annex A; Book 3, Annex A)."""

    terminal_type: int = 0x22  # 9F35, Book 4 Annex A1: attended, offline with online capability
    capabilities: bytes = bytes.fromhex("E0F8C8")  # 9F33, Book 4 Annex A2
    additional_capabilities: bytes = bytes.fromhex("6000A0B001")  # 9F40, Book 4 Annex A3: goods, services
    country: int = 250  # 9F1A, ISO 3166-1 numeric
    currency: int = 978  # 5F2A, ISO 4217 numeric
    currency_exponent: int = 2  # 5F36
    terminal_id: str = "TPE00001"  # 9F1C, an 8
    merchant_id: str = "000000000000001"  # 9F16, ans 15
    merchant_category: int = 5999  # 9F15, n4 (ISO 18245)
    merchant_name_location: str = ""  # 9F4E
    ifd_serial: str = "00000001"  # 9F1E, an 8
    pos_entry_mode: int = 0x05  # 9F39: integrated circuit card
    # Co-badged cards (EU Regulation 2015/751 art. 8): the merchant's preferred AIDs, in order;
    # offered first, the cardholder still chooses.
    preferred_aids: tuple[bytes, ...] = ()
    pin_pad: bool = True  # a working PIN pad is present (Book 3, 10.5.2)
    confirm_amount: bool = True  # ask the cardholder to confirm the amount before the CVM

    def __post_init__(self) -> None:
        _range("terminal.terminal_type", self.terminal_type, 0x11, 0x36)
        _length("terminal.capabilities", self.capabilities, 3)
        _length("terminal.additional_capabilities", self.additional_capabilities, 5)
        _range("terminal.country", self.country, 1, 999)
        _range("terminal.currency", self.currency, 1, 999)
        _range("terminal.currency_exponent", self.currency_exponent, 0, 3)
        _range("terminal.merchant_category", self.merchant_category, 0, 9999)
        for key, text, size in (("terminal.terminal_id", self.terminal_id, 8),
                                ("terminal.ifd_serial", self.ifd_serial, 8),
                                ("terminal.merchant_id", self.merchant_id, 15)):
            if not isinstance(text, str) or len(text) != size or not text.isascii() or not text.isprintable():
                raise KernelConfigError(key, f"must be {size} printable ASCII characters")

    # Book 4, Annex A2 (9F33 byte 2: CVM capability; byte 3: security capability).
    @property
    def supports_plaintext_pin(self) -> bool:
        return bool(self.capabilities[1] & 0x80)

    @property
    def supports_enciphered_online_pin(self) -> bool:
        return bool(self.capabilities[1] & 0x40)

    @property
    def supports_signature(self) -> bool:
        return bool(self.capabilities[1] & 0x20)

    @property
    def supports_enciphered_offline_pin(self) -> bool:
        return bool(self.capabilities[1] & 0x10)

    @property
    def supports_no_cvm(self) -> bool:
        return bool(self.capabilities[1] & 0x08)

    @property
    def supports_sda(self) -> bool:
        return bool(self.capabilities[2] & 0x80)

    @property
    def supports_dda(self) -> bool:
        return bool(self.capabilities[2] & 0x40)

    @property
    def supports_cda(self) -> bool:
        return bool(self.capabilities[2] & 0x08)

    @property
    def offline_only(self) -> bool:
        # Book 4, Annex A1: types x3 and x6 are offline only.
        return self.terminal_type & 0x0F in (3, 6)

    @property
    def online_only(self) -> bool:
        return self.terminal_type & 0x0F in (1, 4)


@dataclass(frozen=True)
class AidParams:
    """Per-application parameters the acquirer sets (Book 3, 10.6 and 10.7; Book 4, 6.3)."""

    aid: bytes
    name: str = ""
    partial_selection: bool = True  # Application Selection Indicator (Book 1, 12.3.1)
    application_versions: tuple[bytes, ...] = (bytes.fromhex("008C"),)  # 9F09, 2 bytes each
    tac_denial: bytes = bytes(5)
    tac_online: bytes = bytes(5)
    tac_default: bytes = bytes(5)
    floor_limit: int = 0  # 9F1B, minor units
    random_selection_threshold: int = 0
    random_target_percent: int = 0
    random_max_target_percent: int = 0
    default_ddol: bytes = bytes.fromhex("9F3704")
    default_tdol: bytes = b""

    def __post_init__(self) -> None:
        _length("aid.aid", self.aid, *range(5, 17))
        for version in self.application_versions:
            _length("aid.application_versions", version, 2)
        for key in ("tac_denial", "tac_online", "tac_default"):
            _length(f"aid.{key}", getattr(self, key), 5)
        _range("aid.floor_limit", self.floor_limit, 0, 10**12 - 1)
        _range("aid.random_selection_threshold", self.random_selection_threshold, 0, 10**12 - 1)
        _range("aid.random_target_percent", self.random_target_percent, 0, 99)
        _range("aid.random_max_target_percent", self.random_max_target_percent, 0, 99)
        if self.random_target_percent > self.random_max_target_percent:
            raise KernelConfigError("aid.random_target_percent", "exceeds random_max_target_percent")
        if self.random_selection_threshold > self.floor_limit:
            # Book 3, 10.6.2: the threshold is below the floor limit.
            raise KernelConfigError("aid.random_selection_threshold", "exceeds floor_limit")


@dataclass(frozen=True)
class ExceptionEntry:
    """A card the merchant or acquirer has blocked (Book 3, 10.6.1): PAN token, optional PSN."""

    pan_sha256: str  # emv.sensitive.pan_token(pan) of the PAN alone
    psn: int | None = None


@dataclass(frozen=True)
class FraudRules:
    """Merchant rules applied during terminal risk management; each forces online or declines."""

    online_above: int | None = None  # amount (minor units) above which the sale goes online
    decline_above: int | None = None  # amount above which the sale is declined
    online_countries: frozenset[int] = frozenset()  # issuer countries (5F28) forced online
    decline_countries: frozenset[int] = frozenset()  # issuer countries declined
    blocked_prefixes: tuple[str, ...] = ()  # PAN prefixes (BINs) declined

    def __post_init__(self) -> None:
        for prefix in self.blocked_prefixes:
            if not prefix.isdigit() or not 1 <= len(prefix) <= 19:
                raise KernelConfigError("fraud.blocked_prefixes", "each prefix is 1 to 19 digits")


@dataclass(frozen=True)
class KernelConfig:
    terminal: TerminalConfig = field(default_factory=TerminalConfig)
    aids: tuple[AidParams, ...] = ()
    ca_keys: Mapping[tuple[bytes, int], CaPublicKey] = field(default_factory=dict)
    # Book 2, 5.3 step 10: (RID, CA key index, certificate serial number) revoked
    revoked: frozenset[tuple[bytes, int, bytes]] = frozenset()
    exception_file: tuple[ExceptionEntry, ...] = ()
    fraud: FraudRules = field(default_factory=FraudRules)

    def aid_params(self, aid: bytes) -> AidParams | None:
        """The parameters of the terminal AID that `aid` (an ADF name) matches (Book 1, 12.3.1)."""
        for params in self.aids:
            if aid == params.aid or (params.partial_selection and aid.startswith(params.aid)):
                return params
        return None
