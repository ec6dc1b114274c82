"""The terminal's configuration: one TOML file, read and checked at start (ARCHITECTURE principle 9).

`load_config(path)` reads the file (by default the packaged `firmware/defaults/terminal.toml`)
and returns an `AppConfig`: the kernel's `KernelConfig`, the reader to use, the PIN pad
settings, the acquirer host, the DUKPT initial key and where the durable state lives. Any
problem stops the start with one `ConfigError` naming the file, the key and the reason; nothing
is half loaded. Sections and keys:

    [terminal]       type ("22": 2 hex digits, Book 4 Annex A1), capabilities (6 hex digits),
                     additional_capabilities (10 hex digits), country, currency (ISO numeric
                     integers), currency_exponent, terminal_id (8 chars), merchant_id (15 chars),
                     merchant_category (integer), ifd_serial (8 chars), merchant_name_location,
                     preferred_aids (list of hex AIDs), pin_pad, confirm_amount (booleans)
    [[aid]]          aid, name, partial_selection, application_versions (list of 4 hex digits),
                     tac_denial, tac_online, tac_default (10 hex digits), floor_limit,
                     random_selection_threshold (minor units), random_target_percent,
                     random_max_target_percent, default_ddol, default_tdol (hex DOLs)
    [ca_keys]        files: CA public key tables in the `emv.capk.load_capks` format; "sim" is
                     the card simulator's TEST keys, "scheme-test" the Visa and Mastercard
                     PUBLIC TEST keys for pre-production (firmware/defaults/ca_keys_scheme_test.toml)
    [[revoked]]      rid, index (2 hex digits), serial (6 hex digits): revoked issuer certificates
    [[exception]]    pan_sha256 (`emv.sensitive.pan_token` of the PAN), psn (optional integer)
    [fraud]          online_above, decline_above (minor units), online_countries,
                     decline_countries (ISO numeric integers), blocked_prefixes (digit strings)
    [reader]         name: part of the PC/SC reader name to use (default: the first reader)
    [pin_pad]        shuffle (boolean). Online PIN blocks are enciphered under the DUKPT keys of
                     [dukpt]; the former fixed `key_file` is refused with a message saying so.
    [dukpt]          initial_key_file: the terminal's AES DUKPT initial key (see
                     `load_initial_key`), loaded on the first start only; afterwards the
                     registers come from the state database (ANSI X9.24-3-2017, 6.1)
    [host]           the acquirer host (docs/host-protocol.md): address, port (1-65535),
                     server_name (the name its certificate must carry; default: address),
                     ca_file (the host CA, pinned), cert_file and key_file (the terminal's TLS
                     client certificate and key, PEM), timeout (seconds, default 30), max_frame
                     (bytes, default 8192), acquirer_id (field 32, 1 to 11 digits). Without this
                     section the terminal has no acquirer.
    [state]          folder: where the durable state (STAN, DUKPT registers, reversals owed)
                     is kept; default $XDG_STATE_HOME/tpe, else ~/.local/state/tpe
    [modem]          the 3G/4G module (modem/): port (its serial device, e.g. /dev/ttyUSB2),
                     dialect ("quectel": EC2x/EG2x; "simcom": SIM7600), baudrate (default
                     115200), sim_pin (4 to 8 digits, optional, never logged), apn, user,
                     password (optional, never logged), registration_timeout (seconds,
                     default 180)
    [links]          order: the ways to the acquirer, preferred first, among "network" (the OS
                     network: Wi-Fi, Ethernet) and "cellular" (the [modem]); default
                     ["network", "cellular"] with a [modem], else ["network"]
    [offline]        the merchant's offline limits (firmware/offline_limits.py): enabled
                     (boolean), max_amount (per sale), max_total (offline approvals waiting,
                     per currency), max_count (items waiting), all in minor units or items,
                     0 or more; max_age_hours (number > 0: forwarding overdue, an alert);
                     schemes (list of RIDs, 10 hex digits). Without the section, the defaults
                     of `OfflineLimits`.
    [printer]        an ESC/POS serial thermal printer (firmware/printer.py): port (its serial
                     device), baudrate (default 19200), width (characters per line: 32, 42
                     or 48; default 32), codepage ("cp858" default, "cp1252", "cp850",
                     "cp437"), check_paper (ask the paper sensor first, default true). Without
                     the section, receipts are only shown and sent as e-receipts.
    [fleet]          the fleet link (docs/fleet-protocol.md): serial (the device's, its MQTT
                     client id and the CN of its certificate), address and port of the MQTT
                     broker (default 8883; its certificate must name the address), ca_file (the
                     broker's CA, pinned), cert_file and key_file (the device's), signing_key
                     (the fleet key's public half: desired configurations must verify under
                     it), telemetry_interval (seconds, 10 to 86400, default 300), keepalive
                     (seconds, default 60), session_expiry (seconds the broker keeps the
                     session and its queued jobs, default 604800), reconnect_max (the longest
                     wait between reconnections, seconds, default 300). Without it, no fleet.
    [update]         root: the device root whose A/B slots the firmware runs from
                     (provisioning/slots.py); health_deadline (seconds, default 120): a new slot on
                     trial must find its reader, its link and a verified journal by then, else it
                     stops and the next start rolls back. Without it, no slot is committed.
    [receipt]        url: the e-receipt service's address for a ticket, shown as a QR code with
                     the receipt (firmware/e_receipt.py): https, with {terminal}, {ticket} and
                     {extract} (the signature extract) in braces. Without it, no QR code.
    [merchant]       code_hash: the merchant code guarding refunds, voids, settlement and the
                     settings, as `firmware.merchant_code` stores it (salted scrypt, never the
                     code); max_tries (wrong codes in a row before a lockout, default 3),
                     lockout (seconds, default 300), tips (boolean: the keypad offers a tip),
                     language (the merchant's, ISO 639-1, default "fr"). Without code_hash the
                     guarded flows are not offered.

Money is an integer number of minor units (ARCHITECTURE principle 10): `10.50` is refused,
write `1050`. A relative file name is taken from the configuration file's folder; a name
starting with "sim:" is taken from the installed `sim` package (its TEST keys). In keys that
name an item of an array, counting starts at 1, as one counts the `[[aid]]` tables in the file:
`aid[1].tac_online` is the first application's TAC-Online.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization

from emv import dol
from emv.capk import CapkError, CaPublicKey, load_capks
from emv.errors import DolError
from emv.kernel_config import (
    AidParams,
    ExceptionEntry,
    FraudRules,
    KernelConfig,
    KernelConfigError,
    TerminalConfig,
)
from firmware.dukpt import INITIAL_KEY_ID_LENGTH, KeyType
from firmware.e_receipt import ReceiptConfig, ReceiptUrlError, check_template
from firmware.fleet_protocol import SERIAL
from firmware.framing import DEFAULT_MAX_FRAME, LARGEST_FRAME
from firmware.offline_limits import RID_LENGTH, OfflineLimits, OfflineLimitsError
from firmware.printer import BAUDRATES as PRINTER_BAUDRATES
from firmware.printer import CODEPAGES as PRINTER_CODEPAGES
from firmware.printer import DEFAULT_BAUDRATE as DEFAULT_PRINTER_BAUDRATE
from firmware.printer import DEFAULT_CODEPAGE as DEFAULT_PRINTER_CODEPAGE
from firmware.printer import WIDTHS as PRINTER_WIDTHS

MAX_CONFIG_BYTES = 1 << 20  # a configuration or CA key file; anything larger is a mistake
MAX_KEY_FILE_BYTES = 1 << 12
SIM_PREFIX = "sim:"  # a file of the installed `sim` package
SIM_CA_KEYS = "sim"  # [ca_keys] files entry: the card simulator's TEST CA keys
SCHEME_TEST_CA_KEYS = "scheme-test"  # [ca_keys] files entry: the schemes' public TEST CA keys
# [ca_keys] files entries that name a packaged table: (package, file inside it)
_PACKAGED_CA_KEYS: dict[str, tuple[str, str]] = {
    SIM_CA_KEYS: ("sim", "card/ca_keys.toml"),
    SCHEME_TEST_CA_KEYS: ("firmware", "defaults/ca_keys_scheme_test.toml"),
}
MAX_AMOUNT = 10**12 - 1  # n12 amounts (Book 3, Annex A: 9F02, 9F1B)
DEFAULT_HOST_TIMEOUT = 30.0  # seconds
MAX_HOST_TIMEOUT = 300.0
MIN_FRAME = 1024  # a 0200 with PAN, track 2, PIN block and a full field 55 fits
MODEM_DIALECTS = ("quectel", "simcom")
# ITU-T V.250 does not fix the rates; these are the ones the Quectel EC2x and SIMCom SIM7600
# UARTs accept (AT+IPR)
MODEM_BAUDRATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
DEFAULT_REGISTRATION_TIMEOUT = 180.0  # seconds
MAX_REGISTRATION_TIMEOUT = 600.0
MAX_AT_STRING = 100  # an APN, user name or password inside an AT string parameter
LINK_NETWORK = "network"
LINK_CELLULAR = "cellular"
LINK_NAMES = (LINK_NETWORK, LINK_CELLULAR)
STATE_FOLDER_NAME = "tpe"

T = TypeVar("T")
Convert = Callable[[Any, str], T]


class ConfigError(Exception):
    """A configuration the terminal cannot start with: which file, which key, and why."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        super().__init__(f"{file}: {key}: {reason}")


@dataclass(frozen=True)
class ReaderConfig:
    name: str | None = None  # part of the PC/SC reader name; None: the first reader found


@dataclass(frozen=True)
class PinPadConfig:
    shuffle: bool = False  # show the digit keys in a random order at each PIN entry


@dataclass(frozen=True)
class MerchantConfig:
    code_hash: str | None = field(default=None, repr=False)  # `firmware.merchant_code` form
    max_tries: int = 3
    lockout: float = 300.0  # seconds
    tips: bool = False
    language: str = "fr"


@dataclass(frozen=True)
class DukptConfig:
    initial_key_file: Path  # checked at load with `load_initial_key`


@dataclass(frozen=True)
class HostConfig:
    """The acquirer host and the TLS material to reach it (firmware/tls_stream.py)."""

    address: str
    port: int
    server_name: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    acquirer_id: str  # ISO 8583 field 32, n..11
    timeout: float = DEFAULT_HOST_TIMEOUT
    max_frame: int = DEFAULT_MAX_FRAME


@dataclass(frozen=True)
class StateConfig:
    folder: Path


@dataclass(frozen=True)
class UpdateConfig:
    root: Path  # the device root of provisioning/slots.py
    health_deadline: float = 120.0


@dataclass(frozen=True)
class FleetConfig:
    """The MQTT broker of the fleet and the device's identity on it (firmware/fleet_client.py)."""

    serial: str
    address: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    signing_key: Path  # the fleet key's public half (PEM)
    telemetry_interval: float = 300.0
    keepalive: int = 60
    session_expiry: int = 604800
    reconnect_max: float = 300.0


@dataclass(frozen=True)
class ModemConfig:
    """The cellular module (modem/) and its data context. The SIM PIN and the APN password are
    kept out of the repr."""

    port: str
    dialect: str  # one of MODEM_DIALECTS
    apn: str
    baudrate: int = 115200
    sim_pin: str | None = field(default=None, repr=False)
    user: str = ""
    password: str = field(default="", repr=False)
    registration_timeout: float = DEFAULT_REGISTRATION_TIMEOUT


@dataclass(frozen=True)
class PrinterConfig:
    """The ESC/POS receipt printer (firmware/printer.py)."""

    port: str
    baudrate: int = DEFAULT_PRINTER_BAUDRATE
    width: int = 32  # characters per line, one of PRINTER_WIDTHS
    codepage: str = DEFAULT_PRINTER_CODEPAGE  # one of PRINTER_CODEPAGES
    check_paper: bool = True


@dataclass(frozen=True)
class LinksConfig:
    order: tuple[str, ...] = (LINK_NETWORK,)  # LINK_NAMES, preferred first


@dataclass(frozen=True, repr=False)
class InitialKey:
    """An AES DUKPT initial key (ANSI X9.24-3-2017, 6.3.3) and its 8-byte initial key ID."""

    key: bytes
    key_id: bytes

    @property
    def key_type(self) -> KeyType:
        return _INITIAL_KEY_TYPES[len(self.key)]

    def __repr__(self) -> str:
        return f"InitialKey(id {self.key_id.hex().upper()}, {self.key_type.name}, key hidden)"


_INITIAL_KEY_TYPES = {16: KeyType.AES128, 24: KeyType.AES192, 32: KeyType.AES256}


def default_state_folder() -> Path:
    """$XDG_STATE_HOME/tpe (XDG Base Directory Specification 0.8), else ~/.local/state/tpe."""
    base = os.environ.get("XDG_STATE_HOME", "")
    # the specification ignores a relative value
    if base and Path(base).is_absolute():
        root = Path(base)
    else:
        root = Path(os.path.expanduser("~")) / ".local" / "state"
    return root / STATE_FOLDER_NAME


@dataclass(frozen=True)
class AppConfig:
    kernel: KernelConfig
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    pin_pad: PinPadConfig = field(default_factory=PinPadConfig)
    dukpt: DukptConfig | None = None
    host: HostConfig | None = None
    state: StateConfig = field(default_factory=lambda: StateConfig(default_state_folder()))
    source: Path = Path()
    modem: ModemConfig | None = None
    links: LinksConfig = field(default_factory=LinksConfig)
    offline: OfflineLimits = field(default_factory=OfflineLimits)
    printer: PrinterConfig | None = None
    merchant: MerchantConfig = field(default_factory=MerchantConfig)
    receipt: ReceiptConfig | None = None
    fleet: FleetConfig | None = None
    update: UpdateConfig | None = None


def load_config(path: Path | None = None) -> AppConfig:
    """Read and check the configuration file; None means the packaged default."""
    if path is None:
        try:
            path = _package_file("firmware", "defaults/terminal.toml")
        except _Invalid as exc:
            raise ConfigError("firmware/defaults/terminal.toml", exc.key, exc.reason) from None
    path = Path(path)
    try:
        text = _read_text(path, MAX_CONFIG_BYTES)
    except _Invalid as exc:
        raise ConfigError(str(path), "(file)", exc.reason) from None
    return parse_config(text, str(path), path.parent)


def parse_config(text: str, file: str, base: Path) -> AppConfig:
    """Check configuration `text`; `file` names it in errors, `base` anchors relative file names."""
    return parse_document(_parse_toml(text, file), file, base)


def read_document(path: Path) -> dict[str, Any]:
    """The configuration file's TOML as a document, for `parse_document` (`ConfigError`)."""
    try:
        text = _read_text(Path(path), MAX_CONFIG_BYTES)
    except _Invalid as exc:
        raise ConfigError(str(path), "(file)", exc.reason) from None
    return _parse_toml(text, str(path))


def parse_document(document: dict[str, Any], file: str, base: Path) -> AppConfig:
    """Check a configuration already read as a TOML document (sections as dicts); the remote
    configuration (firmware/fleet_config.py) puts its sections in one before it applies them."""
    try:
        return _app_config(document, Path(base), Path(file))
    except _Invalid as exc:
        raise ConfigError(file, exc.key, exc.reason) from None


def load_initial_key(path: Path) -> InitialKey:
    """The AES DUKPT initial key of a key file: TOML with `initial_key` (32, 48 or 64 hex
    digits: AES-128, -192, -256) and `initial_key_id` (16 hex digits: BDK ID || derivation ID,
    ANSI X9.24-3-2017, 6.3.3); or, as transported, `key_block`: a TR-31 key block (ANSI X9.143,
    version D) of usage B1 (initial DUKPT key) with its initial key ID in the optional block IK,
    under the key block protection key of `kbpk_file` (TOML `kbpk`, 32 or 64 hex digits,
    relative to this file).

    Errors name the file and the key, never any part of the key's value.
    """
    file = str(path)
    try:
        text = _read_text(Path(path), MAX_KEY_FILE_BYTES)
    except _Invalid as exc:
        raise ConfigError(file, "(file)", exc.reason) from None
    document = _parse_toml(text, file)
    if "key_block" in document:
        return _initial_key_block(document, Path(path), file)
    try:
        table = _Table(document, "", ("initial_key", "initial_key_id"))
        key_id = table.get("initial_key_id", _hex(INITIAL_KEY_ID_LENGTH))
        key = table.get("initial_key", _hex(*_INITIAL_KEY_TYPES))
    except _Invalid as exc:
        raise ConfigError(file, exc.key, exc.reason) from None
    return InitialKey(key, key_id)


def _initial_key_block(document: dict[str, Any], path: Path, file: str) -> InitialKey:
    from psec import tr31  # the key block's format, maintained there (ANSI X9.143 / TR-31)

    try:
        table = _Table(document, "", ("key_block", "kbpk_file"))
        block = table.get("key_block", _text(max_length=4096))
        kbpk_path = _resolve(table.get("kbpk_file", _path_text), path.parent, "kbpk_file")
        kbpk_document = _parse_toml(_read_text(kbpk_path, MAX_KEY_FILE_BYTES, "kbpk_file"), str(kbpk_path))
        kbpk = _Table(kbpk_document, "kbpk_file", ("kbpk",)).get("kbpk", _hex(16, 32))
    except _Invalid as exc:
        raise ConfigError(file, exc.key, exc.reason) from None
    try:
        header, key = tr31.unwrap(kbpk, block)
    except (tr31.KeyBlockError, tr31.HeaderError, ValueError):
        raise ConfigError(file, "key_block", "does not open under the key of kbpk_file (wrong key, or "
                                             "damaged)") from None
    key_id = header.blocks.get("IK", "") if header.blocks else ""
    if header.key_usage != "B1" or header.algorithm != "A" or not re.fullmatch(r"[0-9A-Fa-f]{16}", key_id):
        raise ConfigError(file, "key_block", "is not an AES initial DUKPT key (usage B1, algorithm A, "
                                             "initial key ID in block IK)")
    if len(key) not in _INITIAL_KEY_TYPES:
        raise ConfigError(file, "key_block", "holds no AES-128, -192 or -256 key")
    return InitialKey(key, bytes.fromhex(key_id))


class _Invalid(Exception):
    """One bad value, before the file name is known to the raiser."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


_MISSING: Any = object()


class _Table:
    """One TOML table: refuses keys it does not know, then hands out values checked by type."""

    def __init__(self, raw: Any, path: str, keys: Collection[str]) -> None:
        if not isinstance(raw, dict):
            raise _Invalid(path, f"must be a table, not {_kind(raw)}")
        self.raw = raw
        self.path = path
        for name in raw:
            if name not in keys:
                guess = difflib.get_close_matches(name, list(keys), n=1)
                hint = f"; did you mean {guess[0]!r}?" if guess else f"; known keys: {', '.join(keys)}"
                raise _Invalid(self.key(name), "unknown key" + hint)

    def key(self, name: str) -> str:
        return f"{self.path}.{_bare(name)}" if self.path else _bare(name)

    def get(self, name: str, convert: Convert[T], default: T = _MISSING) -> T:
        if name not in self.raw:
            if default is _MISSING:
                raise _Invalid(self.key(name), "missing")
            return default
        return convert(self.raw[name], self.key(name))


def _bare(name: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted (an empty key stays visible)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, date | time):
        return "a date or time"
    return type(value).__name__


def _integer(low: int, high: int, *, money: bool = False) -> Convert[int]:
    def convert(value: Any, key: str) -> int:
        if isinstance(value, float) and money:
            raise _Invalid(key, "must be an integer amount in minor units (1050 for 10.50), "
                                "not a decimal number (ARCHITECTURE principle 10)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(key, f"must be an integer, not {_kind(value)}")
        if not low <= value <= high:
            raise _Invalid(key, f"must be from {low} to {high}")
        return value
    return convert


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(key, f"must be true or false, not {_kind(value)}")
    return value


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(key, f"must be a string, not {_kind(value)}")
    return value


def _text(length: int | None = None, max_length: int = 255) -> Convert[str]:
    """Printable ASCII (the an/ans formats of Book 3, Annex A), of a fixed or bounded length."""
    def convert(value: Any, key: str) -> str:
        text = _string(value, key)
        if not (text.isascii() and text.isprintable()):
            raise _Invalid(key, "must hold printable ASCII characters only")
        if length is not None and len(text) != length:
            raise _Invalid(key, f"must be {length} characters, not {len(text)}")
        if length is None and not 1 <= len(text) <= max_length:
            raise _Invalid(key, f"must be 1 to {max_length} characters")
        return text
    return convert


def _hex(*lengths: int) -> Convert[bytes]:
    """Hex digits (whitespace ignored) of one of `lengths` bytes, or of any length when none.

    Reasons never quote the value: a key file goes through here too.
    """
    def convert(value: Any, key: str) -> bytes:
        if not isinstance(value, str):
            raise _Invalid(key, f"must be a string of hex digits, not {_kind(value)}")
        compact = "".join(value.split())
        if len(compact) % 2 or any(c not in "0123456789abcdefABCDEF" for c in compact):
            raise _Invalid(key, "must be hex digits, two per byte")
        data = bytes.fromhex(compact)
        if lengths and len(data) not in lengths:
            sizes = " or ".join(f"{n} bytes ({2 * n} hex digits)" for n in lengths)
            raise _Invalid(key, f"must be {sizes}, not {len(data)} bytes")
        return data
    return convert


def _hex_range(low: int, high: int) -> Convert[bytes]:
    return _hex(*range(low, high + 1))


def _byte(value: Any, key: str) -> int:
    return _hex(1)(value, key)[0]


def _terminal_type(value: Any, key: str) -> int:
    kind = _byte(value, key)
    # Book 4, Annex A1: first digit 1-3 (operated by), second 1-6 (attended, online ability).
    if not (1 <= kind >> 4 <= 3 and 1 <= kind & 0x0F <= 6):
        raise _Invalid(key, "must be a terminal type of EMV Book 4, Annex A1: 11-16, 21-26 or 31-36")
    return kind


def _dol(value: Any, key: str) -> bytes:
    data = _hex()(value, key)
    try:
        dol.parse(data)
    except DolError as exc:
        raise _Invalid(key, f"is not a data object list (Book 3, 5.4): {exc.reason}") from None
    return data


def _digits(low: int, high: int) -> Convert[str]:
    def convert(value: Any, key: str) -> str:
        text = _string(value, key)
        if not low <= len(text) <= high or any(c not in "0123456789" for c in text):
            raise _Invalid(key, f"must be a string of {low} to {high} decimal digits")
        return text
    return convert


def _array(item: Convert[T], *, min_items: int = 0) -> Convert[tuple[T, ...]]:
    def convert(value: Any, key: str) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise _Invalid(key, f"must be an array, not {_kind(value)}")
        if len(value) < min_items:
            raise _Invalid(key, f"must list at least {min_items} item(s)")
        return tuple(item(element, f"{key}[{n}]") for n, element in enumerate(value, start=1))
    return convert


def _tables(document: dict[str, Any], name: str) -> list[Any]:
    """An array of tables ([[name]]); absent is empty."""
    value = document.get(name, [])
    if not isinstance(value, list):
        raise _Invalid(name, f"must be an array of tables: write [[{name}]], not {_kind(value)}")
    return value


def _kernel_value(build: Callable[[], T], path: str, renames: Mapping[str, str] | None = None) -> T:
    """Build a kernel_config value; its own checks are reported under the file's key names."""
    try:
        return build()
    except KernelConfigError as exc:
        name = exc.key.partition(".")[2] or exc.key
        name = (renames or {}).get(name, name)
        raise _Invalid(f"{path}.{name}", exc.reason) from None


_SECTIONS = ("terminal", "aid", "ca_keys", "revoked", "exception", "fraud", "reader", "pin_pad", "dukpt",
             "host", "state", "modem", "links", "offline", "printer", "merchant", "receipt", "fleet",
             "update")
_TERMINAL_KEYS = (
    "type", "capabilities", "additional_capabilities", "country", "currency", "currency_exponent",
    "terminal_id", "merchant_id", "merchant_category", "merchant_name_location", "ifd_serial",
    "preferred_aids", "pin_pad", "confirm_amount",
)
_AID_KEYS = (
    "aid", "name", "partial_selection", "application_versions", "tac_denial", "tac_online",
    "tac_default", "floor_limit", "random_selection_threshold", "random_target_percent",
    "random_max_target_percent", "default_ddol", "default_tdol",
)
_FRAUD_KEYS = ("online_above", "decline_above", "online_countries", "decline_countries",
               "blocked_prefixes")

_country = _integer(1, 999)  # ISO 3166-1 / ISO 4217 numeric, n3
_amount = _integer(0, MAX_AMOUNT, money=True)
_aid = _hex_range(5, 16)  # Book 1, 12.2.1: an AID is 5 to 16 bytes


def _app_config(document: dict[str, Any], base: Path, source: Path) -> AppConfig:
    for name in document:
        if name not in _SECTIONS:
            guess = difflib.get_close_matches(name, _SECTIONS, n=1)
            hint = f"; did you mean [{guess[0]}]?" if guess else f"; known sections: {', '.join(_SECTIONS)}"
            raise _Invalid(_bare(name), "unknown section" + hint)
    if "terminal" not in document:
        raise _Invalid("terminal", "missing section [terminal]")
    terminal = _terminal(document["terminal"])
    aids = _aids(document)
    kernel = KernelConfig(
        terminal=terminal,
        aids=aids,
        ca_keys=_ca_keys(document.get("ca_keys", {}), base),
        revoked=_revoked(document),
        exception_file=_exceptions(document),
        fraud=_fraud(document.get("fraud", {})),
    )
    for n, aid in enumerate(terminal.preferred_aids, start=1):
        if kernel.aid_params(aid) is None:
            raise _Invalid(f"terminal.preferred_aids[{n}]", "is none of the [[aid]] applications")
    dukpt = _dukpt(document["dukpt"], base) if "dukpt" in document else None
    host = _host(document["host"], base) if "host" in document else None
    if host is not None and dukpt is None:
        raise _Invalid("dukpt", "missing section [dukpt]: every message to the [host] carries a MAC "
                                "under a DUKPT key (docs/host-protocol.md, MAC)")
    modem = _modem(document["modem"]) if "modem" in document else None
    links = _links(document.get("links", {}), modem)
    offline = _offline(document["offline"]) if "offline" in document else OfflineLimits()
    printer = _printer(document["printer"]) if "printer" in document else None
    return AppConfig(kernel=kernel, reader=_reader(document.get("reader", {})),
                     pin_pad=_pin_pad(document.get("pin_pad", {})), dukpt=dukpt, host=host,
                     state=_state(document.get("state", {}), base), source=source, modem=modem,
                     links=links, offline=offline, printer=printer,
                     merchant=_merchant(document.get("merchant", {})),
                     receipt=_receipt(document["receipt"]) if "receipt" in document else None,
                     fleet=_fleet(document["fleet"], base) if "fleet" in document else None,
                     update=_update(document["update"], base) if "update" in document else None)


def _terminal(raw: Any) -> TerminalConfig:
    t = _Table(raw, "terminal", _TERMINAL_KEYS)
    values = {
        "terminal_type": t.get("type", _terminal_type),
        "capabilities": t.get("capabilities", _hex(3)),  # 9F33, Book 4 Annex A2
        "additional_capabilities": t.get("additional_capabilities", _hex(5)),  # 9F40, Annex A3
        "country": t.get("country", _country),
        "currency": t.get("currency", _country),
        "currency_exponent": t.get("currency_exponent", _integer(0, 3)),
        "terminal_id": t.get("terminal_id", _text(8)),  # 9F1C, an 8
        "merchant_id": t.get("merchant_id", _text(15)),  # 9F16, ans 15
        "merchant_category": t.get("merchant_category", _integer(0, 9999)),  # 9F15, n4
        "ifd_serial": t.get("ifd_serial", _text(8)),  # 9F1E, an 8
        "merchant_name_location": t.get("merchant_name_location", _text(), ""),  # 9F4E, ans
        "preferred_aids": t.get("preferred_aids", _array(_aid), ()),
        "pin_pad": t.get("pin_pad", _boolean, True),
        "confirm_amount": t.get("confirm_amount", _boolean, True),
    }
    return _kernel_value(lambda: TerminalConfig(**values), "terminal", {"terminal_type": "type"})


def _aids(document: dict[str, Any]) -> tuple[AidParams, ...]:
    tables = _tables(document, "aid")
    if not tables:
        raise _Invalid("aid", "no [[aid]] table: the terminal would accept no card")
    seen: dict[bytes, int] = {}
    aids: list[AidParams] = []
    for n, raw in enumerate(tables, start=1):
        path = f"aid[{n}]"
        t = _Table(raw, path, _AID_KEYS)
        aid = t.get("aid", _aid)
        if aid in seen:
            raise _Invalid(f"{path}.aid", f"the same AID as aid[{seen[aid]}]")
        seen[aid] = n
        values = {
            "aid": aid,
            "name": t.get("name", _text(max_length=32), ""),
            "partial_selection": t.get("partial_selection", _boolean, True),
            "application_versions": t.get("application_versions", _array(_hex(2), min_items=1)),
            "tac_denial": t.get("tac_denial", _hex(5)),
            "tac_online": t.get("tac_online", _hex(5)),
            "tac_default": t.get("tac_default", _hex(5)),
            "floor_limit": t.get("floor_limit", _amount),
            "random_selection_threshold": t.get("random_selection_threshold", _amount, 0),
            "random_target_percent": t.get("random_target_percent", _integer(0, 99), 0),
            "random_max_target_percent": t.get("random_max_target_percent", _integer(0, 99), 0),
            "default_ddol": t.get("default_ddol", _dol, bytes.fromhex("9F3704")),
            "default_tdol": t.get("default_tdol", _dol, b""),
        }
        aids.append(_kernel_value(lambda values=values: AidParams(**values), path))
    return tuple(aids)


def _ca_keys(raw: Any, base: Path) -> Mapping[tuple[bytes, int], CaPublicKey]:
    t = _Table(raw, "ca_keys", ("files",))
    keys: dict[tuple[bytes, int], CaPublicKey] = {}
    for n, name in enumerate(t.get("files", _array(_path_text), ()), start=1):
        key = f"ca_keys.files[{n}]"
        packaged = _PACKAGED_CA_KEYS.get(name)
        path = _package_file(*packaged, key) if packaged else _resolve(name, base, key)
        try:
            table = load_capks(_read_text(path, MAX_CONFIG_BYTES, key))
        except CapkError as exc:
            raise _Invalid(key, f"{path}: {exc}") from None
        for index, capk in table.items():
            if index in keys:
                raise _Invalid(key, f"{path}: CA key {capk.name} is already in an earlier file")
            keys[index] = capk
    return MappingProxyType(keys)


def _revoked(document: dict[str, Any]) -> frozenset[tuple[bytes, int, bytes]]:
    entries: set[tuple[bytes, int, bytes]] = set()
    for n, raw in enumerate(_tables(document, "revoked"), start=1):
        t = _Table(raw, f"revoked[{n}]", ("rid", "index", "serial"))
        # Book 2, 5.3 step 10: RID, CA public key index, certificate serial number (3 bytes).
        entries.add((t.get("rid", _hex(5)), t.get("index", _byte), t.get("serial", _hex(3))))
    return frozenset(entries)


def _exceptions(document: dict[str, Any]) -> tuple[ExceptionEntry, ...]:
    entries: list[ExceptionEntry] = []
    for n, raw in enumerate(_tables(document, "exception"), start=1):
        t = _Table(raw, f"exception[{n}]", ("pan_sha256", "psn"))
        token = t.get("pan_sha256", _hex(32)).hex()  # emv.sensitive.pan_token: lower-case hex
        entries.append(ExceptionEntry(pan_sha256=token, psn=t.get("psn", _integer(0, 99), None)))
    return tuple(entries)


def _fraud(raw: Any) -> FraudRules:
    t = _Table(raw, "fraud", _FRAUD_KEYS)
    values = {
        "online_above": t.get("online_above", _amount, None),
        "decline_above": t.get("decline_above", _amount, None),
        "online_countries": frozenset(t.get("online_countries", _array(_country), ())),
        "decline_countries": frozenset(t.get("decline_countries", _array(_country), ())),
        "blocked_prefixes": t.get("blocked_prefixes", _array(_digits(1, 19)), ()),
    }
    return _kernel_value(lambda: FraudRules(**values), "fraud")


def _reader(raw: Any) -> ReaderConfig:
    t = _Table(raw, "reader", ("name",))
    name = t.get("name", _string, None)
    if name is not None and not (name.strip() and name.isprintable()):
        raise _Invalid("reader.name", "must be printable and not blank")
    return ReaderConfig(name=name)


def _pin_pad(raw: Any) -> PinPadConfig:
    if isinstance(raw, dict) and "key_file" in raw:
        raise _Invalid("pin_pad.key_file", "no longer used: online PIN blocks are enciphered under "
                                           "the DUKPT keys of [dukpt] initial_key_file; delete this key")
    t = _Table(raw, "pin_pad", ("shuffle",))
    return PinPadConfig(shuffle=t.get("shuffle", _boolean, False))


_MERCHANT_LANGUAGES = ("fr", "en", "es", "it", "de", "nl", "sv", "pt")  # ui.contract.LANGUAGES


def _merchant(raw: Any) -> MerchantConfig:
    from firmware.merchant_code import MerchantCodeError, parse_hash

    t = _Table(raw, "merchant", ("code_hash", "max_tries", "lockout", "tips", "language"))
    code_hash = t.get("code_hash", _string, None)
    if code_hash is not None:
        try:
            parse_hash(code_hash)
        except MerchantCodeError as exc:
            raise _Invalid("merchant.code_hash", str(exc)) from None
    language = t.get("language", _string, "fr")
    if language not in _MERCHANT_LANGUAGES:
        raise _Invalid("merchant.language", f"one of {', '.join(_MERCHANT_LANGUAGES)}")
    return MerchantConfig(code_hash=code_hash, max_tries=t.get("max_tries", _integer(1, 10), 3),
                          lockout=float(t.get("lockout", _integer(0, 86400), 300)),
                          tips=t.get("tips", _boolean, False), language=language)


def _dukpt(raw: Any, base: Path) -> DukptConfig:
    t = _Table(raw, "dukpt", ("initial_key_file",))
    path = _resolve(t.get("initial_key_file", _path_text), base, "dukpt.initial_key_file")
    try:
        load_initial_key(path)
    except ConfigError as exc:
        raise _Invalid("dukpt.initial_key_file", str(exc)) from None
    return DukptConfig(initial_key_file=path)


_HOST_KEYS = ("address", "port", "server_name", "ca_file", "cert_file", "key_file", "timeout",
              "max_frame", "acquirer_id")


def _host_name(value: Any, key: str) -> str:
    text = _text(max_length=253)(value, key)  # RFC 1035, 2.3.4: 255 octets with length bytes
    if any(c.isspace() for c in text):
        raise _Invalid(key, "must be a host name or an IP address, without spaces")
    return text


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(key, f"must be a number of seconds, not {_kind(value)}")
    if not (math.isfinite(value) and 0 < value <= MAX_HOST_TIMEOUT):
        raise _Invalid(key, f"must be more than 0 and at most {MAX_HOST_TIMEOUT:g} seconds")
    return float(value)


def _readable(raw: Any, base: Path, key: str) -> Path:
    path = _resolve(_path_text(raw, key), base, key)
    _read_text(path, MAX_CONFIG_BYTES, key)
    return path


def _host(raw: Any, base: Path) -> HostConfig:
    t = _Table(raw, "host", _HOST_KEYS)
    address = t.get("address", _host_name)
    ca_file = t.get("ca_file", lambda value, key: _readable(value, base, key))
    cert_file = t.get("cert_file", lambda value, key: _readable(value, base, key))
    key_file = t.get("key_file", lambda value, key: _readable(value, base, key))
    # The files must load as the TLS context will load them (firmware/tls_stream.py).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise _Invalid("host.ca_file", f"{ca_file} holds no usable CA certificate "
                                       f"({type(exc).__name__})") from None
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise _Invalid("host.cert_file", f"{cert_file} with the key of host.key_file is no usable "
                                         f"certificate and key ({type(exc).__name__})") from None
    return HostConfig(
        address=address,
        port=t.get("port", _integer(1, 65535)),
        server_name=t.get("server_name", _host_name, address),
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        acquirer_id=t.get("acquirer_id", _digits(1, 11)),  # ISO 8583:1987 field 32, n..11
        timeout=t.get("timeout", _seconds, DEFAULT_HOST_TIMEOUT),
        max_frame=t.get("max_frame", _integer(MIN_FRAME, LARGEST_FRAME), DEFAULT_MAX_FRAME),
    )


def _state(raw: Any, base: Path) -> StateConfig:
    t = _Table(raw, "state", ("folder",))
    name = t.get("folder", _path_text, None)
    if name is None:
        return StateConfig(default_state_folder())
    if name.startswith(SIM_PREFIX):
        raise _Invalid("state.folder", "must be a folder of this machine, not of the sim package")
    path = Path(os.path.expanduser(name))
    return StateConfig(path if path.is_absolute() else base / path)


_MODEM_KEYS = ("port", "dialect", "baudrate", "sim_pin", "apn", "user", "password", "registration_timeout")


def _choice(options: tuple[str, ...]) -> Convert[str]:
    def convert(value: Any, key: str) -> str:
        text = _string(value, key)
        if text not in options:
            raise _Invalid(key, f"must be one of {', '.join(repr(o) for o in options)}")
        return text
    return convert


def _sim_pin(value: Any, key: str) -> str:
    # ETSI TS 102 221, 9.5: a PIN is 4 to 8 digits. The value is never quoted back.
    if not isinstance(value, str):
        raise _Invalid(key, f"must be a string of 4 to 8 digits, not {_kind(value)}")
    if not (4 <= len(value) <= 8 and value.isascii() and value.isdigit()):
        raise _Invalid(key, "must be 4 to 8 digits")
    return value


def _at_string(*, secret: bool = False, allow_empty: bool = True) -> Convert[str]:
    """Text that goes inside an AT string parameter as it is (V.250, 5.4.2.2): printable ASCII
    without quotes or backslashes; a secret is never quoted back."""
    def convert(value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise _Invalid(key, f"must be a string, not {_kind(value)}")
        if not value and not allow_empty:
            raise _Invalid(key, "must not be empty")
        if len(value) > MAX_AT_STRING or any(not (" " <= c <= "~") or c in '"\\' for c in value):
            raise _Invalid(key, "must be printable ASCII without quotes or backslashes, at most "
                                f"{MAX_AT_STRING} characters")
        return value
    return convert


def _device(value: Any, key: str) -> str:
    text = _path_text(value, key)
    if not text.isprintable():
        raise _Invalid(key, "must be a device path such as /dev/ttyUSB2")
    return text


def _registration_seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(key, f"must be a number of seconds, not {_kind(value)}")
    if not (math.isfinite(value) and 0 < value <= MAX_REGISTRATION_TIMEOUT):
        raise _Invalid(key, f"must be more than 0 and at most {MAX_REGISTRATION_TIMEOUT:g} seconds")
    return float(value)


def _baudrate(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(key, f"must be an integer, not {_kind(value)}")
    if value not in MODEM_BAUDRATES:
        raise _Invalid(key, f"must be one of {', '.join(str(b) for b in MODEM_BAUDRATES)}")
    return value


def _modem(raw: Any) -> ModemConfig:
    t = _Table(raw, "modem", _MODEM_KEYS)
    return ModemConfig(
        port=t.get("port", _device),
        dialect=t.get("dialect", _choice(MODEM_DIALECTS)),
        apn=t.get("apn", _at_string(allow_empty=False)),
        baudrate=t.get("baudrate", _baudrate, 115200),
        sim_pin=t.get("sim_pin", _sim_pin, None),
        user=t.get("user", _at_string(), ""),
        password=t.get("password", _at_string(secret=True), ""),
        registration_timeout=t.get("registration_timeout", _registration_seconds,
                                   DEFAULT_REGISTRATION_TIMEOUT),
    )


def _links(raw: Any, modem: ModemConfig | None) -> LinksConfig:
    t = _Table(raw, "links", ("order",))
    default = (LINK_NETWORK, LINK_CELLULAR) if modem is not None else (LINK_NETWORK,)
    order = t.get("order", _array(_choice(LINK_NAMES), min_items=1), default)
    for n, name in enumerate(order, start=1):
        if name in order[:n - 1]:
            raise _Invalid(f"links.order[{n}]", f"{name!r} is already in the list")
        if name == LINK_CELLULAR and modem is None:
            raise _Invalid(f"links.order[{n}]", "'cellular' needs a [modem] section")
    return LinksConfig(order=order)


_OFFLINE_KEYS = ("enabled", "max_amount", "max_total", "max_count", "max_age_hours", "schemes")
TOML_MAX_INTEGER = 2**63 - 1  # TOML 1.0: integers are 64-bit signed


def _hours(value: Any, key: str) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(key, f"must be a number of hours, not {_kind(value)}")
    if not (math.isfinite(value) and value > 0):
        raise _Invalid(key, "must be a number of hours more than 0")
    try:
        return timedelta(hours=value)
    except OverflowError:
        raise _Invalid(key, "is too long a duration") from None


def _offline(raw: Any) -> OfflineLimits:
    t = _Table(raw, "offline", _OFFLINE_KEYS)
    defaults = OfflineLimits()
    values = {
        "enabled": t.get("enabled", _boolean, defaults.enabled),
        "max_amount": t.get("max_amount", _amount, defaults.max_amount),
        "max_total": t.get("max_total", _amount, defaults.max_total),
        "max_count": t.get("max_count", _integer(0, TOML_MAX_INTEGER), defaults.max_count),
        "max_age": t.get("max_age_hours", _hours, defaults.max_age),
        # Book 1, 12.2.1: the RID, first 5 bytes of an AID, names the scheme
        "schemes": t.get("schemes", _array(_hex(RID_LENGTH)), defaults.schemes),
    }
    for n, rid in enumerate(values["schemes"], start=1):
        if rid in values["schemes"][:n - 1]:
            raise _Invalid(f"offline.schemes[{n}]", "is already in the list")
    try:
        return OfflineLimits(**values)
    except OfflineLimitsError as exc:
        key = "max_age_hours" if exc.key == "max_age" else exc.key
        raise _Invalid(f"offline.{key}", exc.reason) from None


def _printer(raw: Any) -> PrinterConfig:
    t = _Table(raw, "printer", ("port", "baudrate", "width", "codepage", "check_paper"))
    baudrate = t.get("baudrate", _integer(1, TOML_MAX_INTEGER), DEFAULT_PRINTER_BAUDRATE)
    if baudrate not in PRINTER_BAUDRATES:
        raise _Invalid("printer.baudrate", f"must be one of {', '.join(map(str, PRINTER_BAUDRATES))}")
    width = t.get("width", _integer(1, TOML_MAX_INTEGER), 32)
    if width not in PRINTER_WIDTHS:
        raise _Invalid("printer.width", "must be 32 (58 mm paper), 42 or 48 (80 mm paper) characters")
    return PrinterConfig(
        port=t.get("port", _device),
        baudrate=baudrate,
        width=width,
        codepage=t.get("codepage", _choice(tuple(PRINTER_CODEPAGES)), DEFAULT_PRINTER_CODEPAGE),
        check_paper=t.get("check_paper", _boolean, True),
    )


def _fleet(raw: Any, base: Path) -> FleetConfig:
    t = _Table(raw, "fleet", ("serial", "address", "port", "ca_file", "cert_file", "key_file",
                              "signing_key", "telemetry_interval", "keepalive", "session_expiry",
                              "reconnect_max"))
    serial = t.get("serial", _string)
    if not SERIAL.fullmatch(serial):
        raise _Invalid("fleet.serial", "1 to 32 letters, digits, '-' or '_'")
    address = t.get("address", _host_name)
    files = {name: t.get(name, lambda value, key: _readable(value, base, key))
             for name in ("ca_file", "cert_file", "key_file", "signing_key")}
    try:
        serialization.load_pem_public_key(files["signing_key"].read_bytes())
    except (OSError, ValueError) as exc:
        raise _Invalid("fleet.signing_key", f"{files['signing_key']} holds no public key "
                                            f"({type(exc).__name__})") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=files["ca_file"])
        context.load_cert_chain(files["cert_file"], files["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise _Invalid("fleet.cert_file", f"the broker's CA, or the device's certificate and key, do not "
                                          f"load ({type(exc).__name__})") from None
    interval = t.get("telemetry_interval", _number_between(10, 86400), 300.0)
    return FleetConfig(serial=serial, address=address, port=t.get("port", _integer(1, 65535), 8883),
                       telemetry_interval=interval,
                       keepalive=t.get("keepalive", _integer(5, 3600), 60),
                       session_expiry=t.get("session_expiry", _integer(0, 2**32 - 1), 604800),
                       reconnect_max=t.get("reconnect_max", _number_between(1, 3600), 300.0), **files)


def _update(raw: Any, base: Path) -> UpdateConfig:
    t = _Table(raw, "update", ("root", "health_deadline"))
    root = _resolve(t.get("root", _path_text), base, "update.root").resolve()
    if not root.is_dir():
        raise _Invalid("update.root", f"{root} is not a folder")
    return UpdateConfig(root, t.get("health_deadline", _number_between(5, 3600), 120.0))


def _number_between(low: float, high: float) -> Convert[float]:
    def convert(value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _Invalid(key, f"must be a number, not {_kind(value)}")
        if not low <= value <= high:
            raise _Invalid(key, f"must be from {low:g} to {high:g}")
        return float(value)

    return convert


def _receipt(raw: Any) -> ReceiptConfig:
    t = _Table(raw, "receipt", ("url",))
    url = t.get("url", _string)
    try:
        return ReceiptConfig(check_template(url))
    except ReceiptUrlError as exc:
        raise _Invalid("receipt.url", str(exc)) from None


def _path_text(value: Any, key: str) -> str:
    text = _string(value, key)
    if not text.strip() or "\x00" in text:
        raise _Invalid(key, "must be a file name")
    return text


def _resolve(name: str, base: Path, key: str) -> Path:
    if name.startswith(SIM_PREFIX):
        return _package_file("sim", name[len(SIM_PREFIX):], key)
    path = Path(name)
    return path if path.is_absolute() else base / path


def _package_file(package: str, name: str, key: str = "(file)") -> Path:
    """A file shipped inside an installed package, as a path on disk."""
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        raise _Invalid(key, f"the {package!r} package is not installed") from None
    if not isinstance(root, Path):
        raise _Invalid(key, f"the {package!r} package is not installed as plain files")
    return root / name


def _read_text(path: Path, limit: int, key: str = "(file)") -> str:
    try:
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _Invalid(key, f"cannot read {path}: {reason}") from None
    if len(data) > limit:
        raise _Invalid(key, f"{path} is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid(key, f"{path} is not UTF-8 text") from None


def _parse_toml(text: str, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"at line (\d+)", str(exc))
        raise ConfigError(file, f"line {line.group(1)}" if line else "(syntax)",
                          f"not valid TOML: {exc}") from None
