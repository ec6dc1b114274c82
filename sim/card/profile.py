"""Card profiles: one TOML file per simulated card under `sim/card/profiles/`, validated at load.

A profile describes a whole card: protocol and ATR, PIN, PSE, and one `[app.<name>]` table per
application (AID, data elements, cryptogram version, ODA keys, card risk management limits, the
TEST issuer master keys). `extends = "<other profile>"` starts from another file and deep-merges
this one over it; `description` and `[expected]` are never inherited.

Every key is checked (type, range, hex, lengths, consistency of the DOLs with the cryptogram
version) and a bad value raises `ProfileError` naming the file, the key and the reason. Unknown
keys are rejected too (ARCHITECTURE principle 9). The records, certificates and signatures of
each application are computed at load (`sim.card.records`) and cached per file content.

`[expected]` says what a terminal should conclude with this card; its keys are:

    outcome    approved_online | approved_offline | declined_online | declined_offline | terminated
    oda        cda | dda | sda | none | failed
    cvm        online_pin | offline_plaintext_pin | offline_enciphered_pin | signature | no_cvm | failed
    first_ac   ARQC | TC | AAC
    second_ac  TC | AAC
    application  AID (hex) the terminal should end up with
    language   ISO 639 code the terminal should use (when it supports it)
    reason, scripts, notes  free text

Keys (defaults in brackets). Top level: description, protocol ["T=1"], pin ["1234"],
pin_try_limit [3], pin_tries_left [limit], pse [true], pse_sfi [1], atr_historical (hex),
t0_chunk [64], card_blocked [false], extends. Per `[app.<name>]`:

    aid, label, pan, expiry (YYMMDD)          required
    psn ["01"], effective (YYMMDD), preferred_name, code_table, priority (87), language (5F2D),
    service_code ["201"], cardholder_name, issuer_country ["250"], currency ["978"],
    currency_exponent [2], usage_control ["FF00"], version ["0002"], iac_default / iac_denial /
    iac_online ["0000000000"], cvm_amount_x / cvm_amount_y [0], cvm_rules [["1E03", "1F03"]]
    pdol [""], cdol1, cdol2, ddol ["9F3704"]        hex DOLs (CDOL1 must carry the AC inputs)
    gpo_format / ac_format [2]                        response format 1 ('80') or 2 ('77')
    cvn ["visa10"]: visa10 | visa18 | mc16 | mc17; dki [1]
    issuer_authentication: external_authenticate (Visa default) | cdol2 (Mastercard default)
    oda ["none"]: none | sda | dda | cda; ca_index (hex), issuer_key, icc_key, icc_pin_key
    aip_in_static_data [true], data_auth_code, issuer_cert_expiry ["1234"], icc_cert_expiry
    [expiry], *_cert_serial, data_sfi [1], oda_sfi [2], layout ["standard"] | "padded_long_form",
    corrupt [[]]: icc_certificate | issuer_certificate | ssad
    gpo_allowed_countries [[]]   GPO answers 6985 for a terminal country not listed
    fci_discretionary (BF0C value, hex)
    [app.<name>.keys]     ac, smi, smc: issuer master keys, TEST KEYS (16 bytes hex)
    [app.<name>.risk]     see RiskParams and sim.card.risk
    [app.<name>.initial]  atc, last_online_atc, consecutive_offline, cumulative_offline_amount,
                          issuer_auth_failed_last_online, blocked
    [app.<name>.data]     more data objects for the records: "9F4D" = "0B0A"
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from emv import dol
from emv.errors import DolError, TlvError
from emv.tlv import decode as tlv_decode
from emv.tlv import read_tag
from sim.card.risk import OfflineCounters

if TYPE_CHECKING:
    from sim.card.records import CardImage

PROFILES_DIR = Path(__file__).with_name("profiles")

Cvn = Literal["visa10", "visa18", "mc16", "mc17"]
Oda = Literal["none", "sda", "dda", "cda"]
IssuerAuthentication = Literal["external_authenticate", "cdol2"]
Protocol = Literal["T=0", "T=1"]
Layout = Literal["standard", "padded_long_form"]

CVNS: tuple[Cvn, ...] = ("visa10", "visa18", "mc16", "mc17")
ODAS: tuple[Oda, ...] = ("none", "sda", "dda", "cda")
# Length of Issuer Authentication Data (91) per CVN: ARPC method 1 gives ARPC(8) || ARC(2),
# method 2 (pyemv's Visa CVN 18) ARPC(4) || CSU(4) (EMV 4.4 Book 2, 8.2.1 and 8.2.2).
ISSUER_AUTH_DATA_LENGTH: dict[Cvn, int] = {"visa10": 10, "visa18": 8, "mc16": 10, "mc17": 10}

# Data the pyemv cryptogram classes take from the terminal (EMV 4.4 Book 2, 8.1.1, Table 26),
# with their lengths: CDOL1 must ask for each of them.
AC_TERMINAL_DATA: tuple[tuple[int, int], ...] = (
    (0x9F02, 6), (0x9F03, 6), (0x9F1A, 2), (0x95, 5), (0x5F2A, 2), (0x9A, 3), (0x9C, 1), (0x9F37, 4),
)

EXPECTED_CHOICES: dict[str, tuple[str, ...] | None] = {
    "outcome": ("approved_online", "approved_offline", "declined_online", "declined_offline",
                "approved_unable_online", "declined_unable_online", "terminated"),
    "oda": ("cda", "dda", "sda", "none", "failed"),
    "cvm": ("online_pin", "offline_plaintext_pin", "offline_enciphered_pin", "signature", "no_cvm", "failed"),
    "first_ac": ("ARQC", "TC", "AAC"),
    "second_ac": ("TC", "AAC"),
    "application": None,
    "language": None,
    "reason": None,
    "scripts": None,
    "notes": None,
}

DEFAULT_CDOL1 = "9F0206 9F0306 9F1A02 9505 5F2A02 9A03 9C01 9F3704 9F3501 9F3403"
DEFAULT_CDOL2_EXTERNAL_AUTH = "8A02 9F0206 9F0306 9F1A02 9505 5F2A02 9A03 9C01 9F3704"
DEFAULT_DDOL = "9F3704"
PSE_NAME = b"1PAY.SYS.DDF01"

_NAME = re.compile(r"[a-z0-9_]+")
_HEX = re.compile(r"[0-9A-Fa-f]*")


class ProfileError(ValueError):
    """A profile file that cannot describe a card: names the file, the key and the reason."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        super().__init__(f"{file}: {key}: {reason}")


@dataclass(frozen=True, repr=False)
class IssuerKeys:
    """Issuer master keys for AC, script integrity (SMI) and confidentiality (SMC). TEST KEYS."""

    ac: bytes
    smi: bytes
    smc: bytes

    def __repr__(self) -> str:
        return "IssuerKeys(TEST KEYS, hidden)"


@dataclass(frozen=True)
class RiskParams:
    """Card risk management parameters (see `sim.card.risk` for the rules using them)."""

    lower_consecutive_offline_limit: int = 0
    upper_consecutive_offline_limit: int = 0
    lower_cumulative_offline_amount: int = 0
    upper_cumulative_offline_amount: int = 0
    online_if_new_card: bool = True
    online_if_pin_try_limit_exceeded: bool = True
    online_if_issuer_auth_failed: bool = True
    decline_if_issuer_auth_failed: bool = True
    always_decline: bool = False
    check_expiry: bool = False


@dataclass(frozen=True)
class InitialState:
    """Non-volatile state as personalised (or as left by earlier use, for test cards).

    `counters` is a template: each `SimCard` works on its own copy.
    """

    atc: int = 0
    blocked: bool = False
    counters: OfflineCounters = field(default_factory=OfflineCounters)


@dataclass(frozen=True)
class Application:
    """One payment application of the card, as personalised."""

    key: str
    aid: bytes
    label: str
    pan: str = field(repr=False)
    psn: str
    expiry: str  # YYMMDD (n6, 5F24)
    effective: str | None  # YYMMDD (5F25)
    preferred_name: str | None
    code_table: int | None
    priority: int | None
    language: str | None
    service_code: str
    cardholder_name: str = field(repr=False)
    issuer_country: str
    currency: str
    currency_exponent: int
    usage_control: bytes
    version: bytes
    iac_default: bytes
    iac_denial: bytes
    iac_online: bytes
    cvm_amount_x: int
    cvm_amount_y: int
    cvm_rules: tuple[bytes, ...]
    pdol: bytes
    cdol1: bytes
    cdol2: bytes
    ddol: bytes
    gpo_format: int
    ac_format: int
    cvn: Cvn
    dki: int
    keys: IssuerKeys
    issuer_authentication: IssuerAuthentication
    terminal_risk_management: bool
    oda: Oda
    ca_index: int
    issuer_key: str | None
    icc_key: str | None
    icc_pin_key: str | None
    aip_in_static_data: bool
    data_auth_code: bytes
    issuer_cert_expiry: str  # MMYY
    issuer_cert_serial: bytes
    icc_cert_expiry: str  # MMYY
    icc_cert_serial: bytes
    data_sfi: int
    oda_sfi: int
    layout: Layout
    corrupt: frozenset[str]
    extra_data: tuple[tuple[int, bytes], ...]
    fci_discretionary: bytes
    gpo_allowed_countries: tuple[bytes, ...]
    risk: RiskParams
    initial: InitialState
    image: CardImage | None = field(default=None, repr=False, compare=False)

    @property
    def rid(self) -> bytes:
        return self.aid[:5]

    @property
    def aip(self) -> bytes:
        """Application Interchange Profile (EMV 4.4 Book 3, Annex C1)."""
        first = 0
        if self.oda == "sda":
            first |= 0x40
        if self.oda in ("dda", "cda"):
            first |= 0x20
        if self.cvm_rules:
            first |= 0x10
        if self.terminal_risk_management:
            first |= 0x08
        if self.issuer_authentication == "external_authenticate":
            first |= 0x04
        if self.oda == "cda":
            first |= 0x01
        return bytes([first, 0x00])

    @property
    def cvm_list(self) -> bytes:
        """8E: amount X, amount Y, then the CVM rules (EMV 4.4 Book 3, 10.5 and Annex C3)."""
        return (self.cvm_amount_x.to_bytes(4, "big") + self.cvm_amount_y.to_bytes(4, "big")
                + b"".join(self.cvm_rules))

    @property
    def issuer_auth_data_length(self) -> int:
        return ISSUER_AUTH_DATA_LENGTH[self.cvn]


@dataclass(frozen=True)
class Profile:
    """A whole simulated card."""

    name: str
    description: str
    protocol: Protocol
    expected: Mapping[str, Any]
    pin: str = field(repr=False)
    pin_try_limit: int
    pin_tries_left: int
    pse: bool
    pse_sfi: int
    atr_historical: bytes
    t0_chunk: int
    card_blocked: bool
    applications: tuple[Application, ...]
    pse_records: Mapping[int, bytes] = field(default_factory=dict, repr=False, compare=False)

    def application(self, aid: bytes) -> Application:
        for app in self.applications:
            if app.aid == aid:
                return app
        raise KeyError(aid.hex().upper())


def profile_names(directory: Path | None = None) -> list[str]:
    """Names of the profiles shipped (the stems of `profiles/*.toml`), sorted."""
    folder = directory or PROFILES_DIR
    return sorted(p.stem for p in folder.glob("*.toml") if _NAME.fullmatch(p.stem))


_CACHE: dict[tuple[str, str, bytes], Profile] = {}


def load_profile(name: str, *, directory: Path | None = None) -> Profile:
    """Load, validate and personalise `<directory>/<name>.toml` (default: the shipped profiles).

    Computing certificates costs RSA operations, so the result is cached per process, keyed by
    the bytes of the file and of the files it extends.
    """
    folder = directory or PROFILES_DIR
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ProfileError(f"{name!r}", "name", "profile names use a-z, 0-9 and '_' only")
    raw, digest = _read_merged(folder, name, ())
    cache_key = (str(folder.resolve()), name, digest)
    cached = _CACHE.get(cache_key)
    if cached is not None:
        return cached
    profile = _build_profile(f"{name}.toml", name, raw)
    _CACHE[cache_key] = profile
    return profile


def _read_merged(folder: Path, name: str, chain: tuple[str, ...]) -> tuple[dict[str, Any], bytes]:
    file = f"{name}.toml"
    if name in chain:
        raise ProfileError(file, "extends", f"cycle: {' -> '.join((*chain, name))}")
    path = folder / file
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ProfileError(file, "-", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(content.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(file, "-", f"not valid TOML: {exc}") from None
    digest = hashlib.sha256(content).digest()
    base_name = data.pop("extends", None)
    if base_name is None:
        return data, digest
    if not isinstance(base_name, str) or not _NAME.fullmatch(base_name):
        raise ProfileError(file, "extends", "must name another profile (a-z, 0-9, '_')")
    base, base_digest = _read_merged(folder, base_name, (*chain, name))
    base.pop("description", None)
    base.pop("expected", None)
    return _deep_merge(base, data), hashlib.sha256(base_digest + digest).digest()


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _Table:
    """Typed reads from one TOML table; `done()` rejects the keys nobody read."""

    def __init__(self, file: str, path: str, data: Any) -> None:
        self.file = file
        self.path = path
        if not isinstance(data, dict):
            raise ProfileError(file, path or "-", "must be a table")
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, reason: str) -> ProfileError:
        return ProfileError(self.file, self.key(name), reason)

    def _get(self, name: str, default: Any, kind: type | tuple[type, ...], what: str) -> Any:
        self.seen.add(name)
        if name not in self.data:
            if default is _REQUIRED:
                raise self.fail(name, "missing")
            return default
        value = self.data[name]
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(name, f"must be {what}, not a boolean")
        if not isinstance(value, kind):
            raise self.fail(name, f"must be {what}, not {type(value).__name__}")
        return value

    def text(self, name: str, default: Any = None, *, pattern: str | None = None,
             max_len: int | None = None) -> Any:
        if name not in self.data:
            return self._get(name, default, str, "a string")
        value = self._get(name, default, str, "a string")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise self.fail(name, f"{value!r} does not match {pattern}")
        if max_len is not None and len(value) > max_len:
            raise self.fail(name, f"longer than {max_len} characters")
        if not value.isascii():
            raise self.fail(name, "must be ASCII")
        return value

    def hex(self, name: str, default: Any = None, *, length: int | None = None,
            lengths: tuple[int, int] | None = None) -> Any:
        if name not in self.data:
            return self._get(name, default, str, "a hex string")
        value = self._get(name, default, str, "a hex string")
        compact = "".join(value.split())
        if not _HEX.fullmatch(compact) or len(compact) % 2:
            raise self.fail(name, "not an even number of hex digits")
        out = bytes.fromhex(compact)
        if length is not None and len(out) != length:
            raise self.fail(name, f"must be {length} bytes, not {len(out)}")
        if lengths is not None and not lengths[0] <= len(out) <= lengths[1]:
            raise self.fail(name, f"must be {lengths[0]} to {lengths[1]} bytes, not {len(out)}")
        return out

    def integer(self, name: str, default: Any = None, *, lo: int = 0, hi: int = 2**63) -> Any:
        value = self._get(name, default, int, "an integer")
        if value is None:
            return value
        if not lo <= value <= hi:
            raise self.fail(name, f"{value} is outside {lo}..{hi}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        return bool(self._get(name, default, bool, "true or false"))

    def choice(self, name: str, options: tuple[Any, ...], default: Any) -> Any:
        value = self._get(name, default, (str, int), "one of " + ", ".join(map(str, options)))
        if value not in options:
            raise self.fail(name, f"{value!r} is not one of {', '.join(map(str, options))}")
        return value

    def strings(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._get(name, list(default), list, "a list of strings")
        if not all(isinstance(v, str) for v in value):
            raise self.fail(name, "must be a list of strings")
        return tuple(value)

    def table(self, name: str) -> _Table:
        self.seen.add(name)
        return _Table(self.file, self.key(name), self.data.get(name, {}))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


_REQUIRED: Any = object()


def _build_profile(file: str, name: str, data: dict[str, Any]) -> Profile:
    from sim.card import records  # records needs the types above; import at use

    top = _Table(file, "", data)
    description = top.text("description", _REQUIRED)
    protocol = top.choice("protocol", ("T=0", "T=1"), "T=1")
    pin = top.text("pin", "1234", pattern=r"[0-9]{4,12}")
    pin_try_limit = top.integer("pin_try_limit", 3, lo=1, hi=15)
    pin_tries_left = top.integer("pin_tries_left", pin_try_limit, lo=0, hi=15)
    if pin_tries_left > pin_try_limit:
        raise top.fail("pin_tries_left", "exceeds pin_try_limit")
    pse = top.boolean("pse", True)
    pse_sfi = top.integer("pse_sfi", 1, lo=1, hi=10)
    # Historical bytes (ISO 7816-4, 8.1.1): category '80', card service data '31 C0'
    # (selection by full and partial DF name), card capabilities '73 80 00 00'.
    historical = top.hex("atr_historical", b"\x80\x31\xc0\x73\x80\x00\x00", lengths=(0, 15))
    t0_chunk = top.integer("t0_chunk", 64, lo=1, hi=256)
    card_blocked = top.boolean("card_blocked", False)
    expected = _expected(top.table("expected"))
    apps_table = top.table("app")
    if not apps_table.data:
        raise apps_table.fail("-", "at least one [app.<name>] table is needed")
    apps = []
    for key in list(apps_table.data):
        apps_table.seen.add(key)
        apps.append(_application(apps_table.table(key), key))
    top.done()
    aids = [a.aid for a in apps]
    if len(set(aids)) != len(aids):
        raise ProfileError(file, "app", "two applications share one AID")
    built = []
    for app in apps:
        try:
            image = records.build_image(app)
        except records.RecordsError as exc:
            raise ProfileError(file, f"app.{app.key}", str(exc)) from None
        built.append(replace(app, image=image))
    profile = Profile(
        name=name, description=description, protocol=protocol, expected=expected, pin=pin,
        pin_try_limit=pin_try_limit, pin_tries_left=pin_tries_left, pse=pse, pse_sfi=pse_sfi,
        atr_historical=historical, t0_chunk=t0_chunk, card_blocked=card_blocked,
        applications=tuple(built),
    )
    return replace(profile, pse_records=records.pse_records(profile.applications) if pse else {})


def _expected(table: _Table) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.data.items():
        if key not in EXPECTED_CHOICES:
            raise table.fail(key, f"unknown key (known: {', '.join(EXPECTED_CHOICES)})")
        table.seen.add(key)
        options = EXPECTED_CHOICES[key]
        if not isinstance(value, str):
            raise table.fail(key, "must be a string")
        if options is not None and value not in options:
            raise table.fail(key, f"{value!r} is not one of {', '.join(options)}")
        out[key] = value
    if "outcome" not in out:
        raise table.fail("outcome", "missing")
    return out


def _yymmdd(table: _Table, name: str, value: str | None) -> None:
    if value is None:
        return
    month, day = int(value[2:4]), int(value[4:6])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise table.fail(name, f"{value!r} is not a YYMMDD date")


def _mmyy(table: _Table, name: str, value: str) -> None:
    if not 1 <= int(value[:2]) <= 12:
        raise table.fail(name, f"{value!r} is not an MMYY date")


def _luhn_ok(pan: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _dol(table: _Table, name: str, default: str) -> bytes:
    value = table.hex(name, bytes.fromhex(default), lengths=(0, 252))
    try:
        dol.parse(value)
    except DolError as exc:
        raise table.fail(name, f"not a DOL: {exc.reason}") from None
    return value


def _one_tag(raw: bytes) -> bool:
    """True when `raw` is exactly one tag field (EMV 4.4 Book 3, Annex B1)."""
    try:
        _tag, end = read_tag(raw, 0)
    except TlvError:
        return False
    return end == len(raw) and raw[0] not in (0x00, 0xFF)


def _dol_lengths(value: bytes) -> dict[int, int]:
    return {entry.tag: entry.length for entry in dol.parse(value)}


def _application(t: _Table, key: str) -> Application:
    if not _NAME.fullmatch(key):
        raise t.fail("-", "application names use a-z, 0-9 and '_' only")
    aid = t.hex("aid", _REQUIRED, lengths=(5, 16))
    label = t.text("label", _REQUIRED, pattern=r"[ -~]{1,16}")
    pan = t.text("pan", _REQUIRED, pattern=r"[0-9]{12,19}")
    if not _luhn_ok(pan):
        raise t.fail("pan", "fails the Luhn check")
    psn = t.text("psn", "01", pattern=r"[0-9]{2}")
    expiry = t.text("expiry", _REQUIRED, pattern=r"[0-9]{6}")
    _yymmdd(t, "expiry", expiry)
    effective = t.text("effective", None, pattern=r"[0-9]{6}")
    _yymmdd(t, "effective", effective)
    cvn: Cvn = t.choice("cvn", CVNS, "visa10")
    oda: Oda = t.choice("oda", ODAS, "none")
    issuer_authentication: IssuerAuthentication = t.choice(
        "issuer_authentication", ("external_authenticate", "cdol2"),
        "cdol2" if cvn.startswith("mc") else "external_authenticate")
    auth_len = ISSUER_AUTH_DATA_LENGTH[cvn]
    default_cdol2 = (DEFAULT_CDOL2_EXTERNAL_AUTH if issuer_authentication == "external_authenticate"
                     else f"91{auth_len:02X} 8A02 9505 9F3704")
    cdol1 = _dol(t, "cdol1", DEFAULT_CDOL1)
    cdol2 = _dol(t, "cdol2", default_cdol2)
    pdol = _dol(t, "pdol", "")
    ddol = _dol(t, "ddol", DEFAULT_DDOL)
    asked = _dol_lengths(cdol1)
    for tag, length in AC_TERMINAL_DATA:
        if asked.get(tag) != length:
            raise t.fail("cdol1", f"must ask for {tag:X} with length {length} (cryptogram input)")
    asked2 = _dol_lengths(cdol2)
    if issuer_authentication == "cdol2" and asked2.get(0x91) != auth_len:
        raise t.fail("cdol2", f"must ask for 91 with length {auth_len} (issuer authentication via CDOL2)")
    if 0x8A in asked2 and asked2[0x8A] != 2:
        raise t.fail("cdol2", "8A must have length 2")
    for tag, length in asked2.items():
        if tag in dict(AC_TERMINAL_DATA) and length != dict(AC_TERMINAL_DATA)[tag]:
            raise t.fail("cdol2", f"{tag:X} must have length {dict(AC_TERMINAL_DATA)[tag]}")
    if oda in ("dda", "cda") and 0x9F37 not in _dol_lengths(ddol):
        raise t.fail("ddol", "must contain 9F37 (EMV 4.4 Book 2, 6.5.1)")

    countries = t.strings("gpo_allowed_countries")
    for c in countries:
        if not re.fullmatch(r"[0-9]{3}", c):
            raise t.fail("gpo_allowed_countries", f"{c!r} is not a 3-digit ISO 3166 code")
    if countries and _dol_lengths(pdol).get(0x9F1A) != 2:
        raise t.fail("pdol", "must ask for 9F1A (2) when gpo_allowed_countries is set")

    cvm_rules = []
    for rule in t.strings("cvm_rules", ("1E03", "1F03")):
        compact = "".join(rule.split())
        if not re.fullmatch(r"[0-9A-Fa-f]{4}", compact):
            raise t.fail("cvm_rules", f"{rule!r} is not a 2-byte CVM rule")
        cvm_rules.append(bytes.fromhex(compact))

    issuer_key = t.text("issuer_key", None, pattern=r"[a-z0-9_]+")
    icc_key = t.text("icc_key", None, pattern=r"[a-z0-9_]+")
    icc_pin_key = t.text("icc_pin_key", None, pattern=r"[a-z0-9_]+")
    ca_index = t.hex("ca_index", None, length=1)
    if oda != "none" and (issuer_key is None or ca_index is None):
        raise t.fail("issuer_key" if issuer_key is None else "ca_index", f"needed for oda = {oda!r}")
    if oda in ("dda", "cda") and icc_key is None:
        raise t.fail("icc_key", f"needed for oda = {oda!r}")
    if icc_pin_key is not None and (issuer_key is None or ca_index is None):
        raise t.fail("icc_pin_key", "needs issuer_key and ca_index to be certified")

    data_sfi = t.integer("data_sfi", 1, lo=1, hi=30)
    oda_sfi = t.integer("oda_sfi", 2, lo=1, hi=30)
    if data_sfi == oda_sfi:
        raise t.fail("oda_sfi", "must differ from data_sfi")

    corrupt = frozenset(t.strings("corrupt"))
    for item in corrupt:
        if item not in ("icc_certificate", "issuer_certificate", "ssad"):
            raise t.fail("corrupt", f"{item!r} is not icc_certificate, issuer_certificate or ssad")

    keys_t = t.table("keys")
    keys = IssuerKeys(ac=keys_t.hex("ac", _REQUIRED, length=16), smi=keys_t.hex("smi", _REQUIRED, length=16),
                      smc=keys_t.hex("smc", _REQUIRED, length=16))
    for name, value in (("ac", keys.ac), ("smi", keys.smi), ("smc", keys.smc)):
        if value[:8] == value[8:]:
            raise keys_t.fail(name, "both halves are equal (single DES)")
    keys_t.done()

    risk_t = t.table("risk")
    defaults = RiskParams()
    risk = RiskParams(
        lower_consecutive_offline_limit=risk_t.integer(
            "lower_consecutive_offline_limit", defaults.lower_consecutive_offline_limit, hi=255),
        upper_consecutive_offline_limit=risk_t.integer(
            "upper_consecutive_offline_limit", defaults.upper_consecutive_offline_limit, hi=255),
        lower_cumulative_offline_amount=risk_t.integer(
            "lower_cumulative_offline_amount", defaults.lower_cumulative_offline_amount, hi=999_999_999_999),
        upper_cumulative_offline_amount=risk_t.integer(
            "upper_cumulative_offline_amount", defaults.upper_cumulative_offline_amount, hi=999_999_999_999),
        online_if_new_card=risk_t.boolean("online_if_new_card", defaults.online_if_new_card),
        online_if_pin_try_limit_exceeded=risk_t.boolean(
            "online_if_pin_try_limit_exceeded", defaults.online_if_pin_try_limit_exceeded),
        online_if_issuer_auth_failed=risk_t.boolean(
            "online_if_issuer_auth_failed", defaults.online_if_issuer_auth_failed),
        decline_if_issuer_auth_failed=risk_t.boolean(
            "decline_if_issuer_auth_failed", defaults.decline_if_issuer_auth_failed),
        always_decline=risk_t.boolean("always_decline", defaults.always_decline),
        check_expiry=risk_t.boolean("check_expiry", defaults.check_expiry),
    )
    if risk.upper_consecutive_offline_limit < risk.lower_consecutive_offline_limit:
        raise risk_t.fail("upper_consecutive_offline_limit", "below the lower limit")
    if risk.upper_cumulative_offline_amount < risk.lower_cumulative_offline_amount:
        raise risk_t.fail("upper_cumulative_offline_amount", "below the lower amount")
    risk_t.done()

    init_t = t.table("initial")
    initial = InitialState(
        atc=init_t.integer("atc", 0, hi=0xFFFE),
        blocked=init_t.boolean("blocked", False),
        counters=OfflineCounters(
            last_online_atc=init_t.integer("last_online_atc", 0, hi=0xFFFF),
            consecutive=init_t.integer("consecutive_offline", 0, hi=255),
            cumulative_amount=init_t.integer("cumulative_offline_amount", 0, hi=999_999_999_999),
            issuer_auth_failed_last_online=init_t.boolean("issuer_auth_failed_last_online", False),
        ),
    )
    init_t.done()

    data_t = t.table("data")
    extra: list[tuple[int, bytes]] = []
    for tag_text in list(data_t.data):
        if not re.fullmatch(r"([0-9A-F]{2}){1,3}", tag_text) or not _one_tag(bytes.fromhex(tag_text)):
            raise data_t.fail(tag_text, "not one BER-TLV tag in upper-case hex, e.g. \"9F4D\"")
        extra.append((int(tag_text, 16), data_t.hex(tag_text, _REQUIRED, lengths=(0, 240))))
    data_t.done()

    usage_control = t.hex("usage_control", b"\xff\x00", length=2)
    fci_discretionary = t.hex("fci_discretionary", b"", lengths=(0, 200))
    try:
        tlv_decode(fci_discretionary)
    except TlvError as exc:
        raise t.fail("fci_discretionary", f"not BER-TLV: {exc.reason}") from None
    app = Application(
        key=key, aid=aid, label=label, pan=pan, psn=psn, expiry=expiry, effective=effective,
        preferred_name=t.text("preferred_name", None, pattern=r"[ -~]{1,16}"),
        code_table=t.integer("code_table", None, lo=1, hi=10),
        priority=t.integer("priority", None, lo=0, hi=0xFF),
        language=t.text("language", None, pattern=r"([a-z]{2}){1,4}"),
        service_code=t.text("service_code", "201", pattern=r"[0-9]{3}"),
        cardholder_name=t.text("cardholder_name", "TEST/CARDHOLDER", pattern=r"[ -~]{2,26}"),
        issuer_country=t.text("issuer_country", "250", pattern=r"[0-9]{3}"),
        currency=t.text("currency", "978", pattern=r"[0-9]{3}"),
        currency_exponent=t.integer("currency_exponent", 2, lo=0, hi=9),
        usage_control=usage_control,
        version=t.hex("version", b"\x00\x02", length=2),
        iac_default=t.hex("iac_default", bytes(5), length=5),
        iac_denial=t.hex("iac_denial", bytes(5), length=5),
        iac_online=t.hex("iac_online", bytes(5), length=5),
        cvm_amount_x=t.integer("cvm_amount_x", 0, hi=0xFFFFFFFF),
        cvm_amount_y=t.integer("cvm_amount_y", 0, hi=0xFFFFFFFF),
        cvm_rules=tuple(cvm_rules),
        pdol=pdol, cdol1=cdol1, cdol2=cdol2, ddol=ddol,
        gpo_format=t.choice("gpo_format", (1, 2), 2),
        ac_format=t.choice("ac_format", (1, 2), 2),
        cvn=cvn, dki=t.integer("dki", 1, hi=0xFF), keys=keys,
        issuer_authentication=issuer_authentication,
        terminal_risk_management=t.boolean("terminal_risk_management", True),
        oda=oda, ca_index=ca_index[0] if ca_index else 0, issuer_key=issuer_key, icc_key=icc_key,
        icc_pin_key=icc_pin_key,
        aip_in_static_data=t.boolean("aip_in_static_data", True),
        data_auth_code=t.hex("data_auth_code", b"\xda\xc1", length=2),
        issuer_cert_expiry=t.text("issuer_cert_expiry", "1234", pattern=r"[0-9]{4}"),
        issuer_cert_serial=t.hex("issuer_cert_serial", b"\x00\x00\x01", length=3),
        icc_cert_expiry=t.text("icc_cert_expiry", expiry[2:4] + expiry[:2], pattern=r"[0-9]{4}"),
        icc_cert_serial=t.hex("icc_cert_serial", b"\x00\x00\x01", length=3),
        data_sfi=data_sfi, oda_sfi=oda_sfi,
        layout=t.choice("layout", ("standard", "padded_long_form"), "standard"), corrupt=corrupt,
        extra_data=tuple(extra),
        fci_discretionary=fci_discretionary,
        gpo_allowed_countries=tuple(bytes.fromhex(c.zfill(4)) for c in countries),
        risk=risk, initial=initial,
    )
    _mmyy(t, "issuer_cert_expiry", app.issuer_cert_expiry)
    _mmyy(t, "icc_cert_expiry", app.icc_cert_expiry)
    t.done()
    return app
