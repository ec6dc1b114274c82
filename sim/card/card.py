"""The simulated EMV contact card: answers command APDUs like a real card would.

`SimCard.process` takes one command APDU (CLA INS P1 P2 [Lc data] [Le], ISO 7816-4, 5.1) and
returns the response data and status word. It never raises: a malformed command gets the status
a card would give (6700, 6A86, 6D00, 6E00, ...), and an internal fault 6F00 (counted in
`internal_errors`, so tests can assert there were none).

Commands (EMV 4.4 Book 3, 6.5 and Book 1, 11): SELECT, READ RECORD, GET PROCESSING OPTIONS,
GET DATA, GET CHALLENGE, VERIFY, INTERNAL AUTHENTICATE, GENERATE AC, EXTERNAL AUTHENTICATE,
GET RESPONSE, and the issuer script commands with secure messaging (APPLICATION BLOCK and
UNBLOCK, CARD BLOCK, PIN CHANGE/UNBLOCK, PUT DATA).

State: `power_on` clears what a real card keeps in RAM (selected application, challenge,
transaction in progress, pending GET RESPONSE data); `state` holds what it keeps in EEPROM
(ATC, PIN and its try counter, blocked flags, offline counters, last online ATC).

Transport (Book 1, 9.2 and 9.3): with `protocol = "T=0"` a command with data whose answer has
data (case 4) is answered '61xx' and its data is fetched with GET RESPONSE, at most `t0_chunk`
bytes at a time; a case 2 command whose Le differs from the data length is answered '6Cxx'.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime
import hashlib
import hmac
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

from emv import dol
from emv.errors import DolError, TlvError
from emv.tlv import decode as tlv_decode
from emv.tlv import encode as tlv_encode
from sim.card import pki, risk
from sim.card.crypto import CardCrypto, parse_pin_block_format2
from sim.card.profile import PSE_NAME, Application, Profile, RiskParams
from sim.card.records import CardImage, cached_key, pse_fci

log = logging.getLogger(__name__)

SW_OK = 0x9000
SW_WRONG_LENGTH = 0x6700
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00
SW_WRONG_P1P2 = 0x6A86
SW_WRONG_DATA = 0x6A80
SW_FUNCTION_NOT_SUPPORTED = 0x6A81  # Book 1, 12.3.2: card blocked, SELECT answered '6A81'
SW_FILE_NOT_FOUND = 0x6A82
SW_RECORD_NOT_FOUND = 0x6A83
SW_DATA_NOT_FOUND = 0x6A88
SW_CONDITIONS = 0x6985
SW_PIN_BLOCKED = 0x6983
SW_SM_INCORRECT = 0x6988
SW_SELECTED_FILE_INVALIDATED = 0x6283  # Book 1, 11.3.5: blocked application
SW_AUTH_FAILED = 0x6300  # Book 3, 6.5.4.4: EXTERNAL AUTHENTICATE failed
SW_INTERNAL = 0x6F00

SCRIPT_MAC_LENGTH = 8
MAX_ATC = 0xFFFF

# ISO 7816-3, 8.2 and EMV 4.4 Book 1, 8.3.3: TS direct convention; T=0 basic ATR with TB1 = '00'
# (no VPP) and TC1 = '00' (no extra guard time); T=1 adds TD1 = '81' (TD2 follows, T=1),
# TD2 = '31' (TA3 and TB3 follow, T=1), TA3 = 'FE' (IFSC 254), TB3 = '45' (BWI 4, CWI 5).
_TS = 0x3B


def build_atr(protocol: Literal["T=0", "T=1"], historical: bytes) -> bytes:
    """The card's ATR; T=1 ATRs end with TCK, the XOR of T0 to the last byte before it."""
    if protocol == "T=0":
        return bytes([_TS, 0x60 | len(historical), 0x00, 0x00]) + historical
    body = bytes([0xE0 | len(historical), 0x00, 0x00, 0x81, 0x31, 0xFE, 0x45]) + historical
    tck = 0
    for byte in body:
        tck ^= byte
    return bytes([_TS]) + body + bytes([tck])


@dataclass
class AppState:
    """Non-volatile state of one application."""

    aid: bytes
    atc: int
    blocked: bool
    counters: risk.OfflineCounters
    risk: RiskParams
    last_script_count: int = 0
    last_script_failed: bool = False

    @property
    def last_online_atc(self) -> int:
        return self.counters.last_online_atc


@dataclass
class CardState:
    """Non-volatile state of the card (`selected_aid` excepted), for the host simulator and tests."""

    pin_try_limit: int
    pin_tries_left: int
    card_blocked: bool
    apps: dict[bytes, AppState]
    pin: str = field(repr=False)
    selected_aid: bytes | None = None

    def app(self, aid: bytes | None = None) -> AppState:
        """The state of `aid`, else of the selected application, else of the first one."""
        key = aid or self.selected_aid or next(iter(self.apps))
        return self.apps[key]

    @property
    def atc(self) -> int:
        return self.app().atc

    @property
    def last_online_atc(self) -> int:
        return self.app().last_online_atc

    @property
    def app_blocked(self) -> bool:
        return self.app().blocked

    @property
    def pin_blocked(self) -> bool:
        return self.pin_tries_left == 0


@dataclass
class _Session:
    """RAM of the card for the selected application: one transaction at most."""

    index: int
    gpo_done: bool = False
    pdol_values: bytes = b""
    cdol1_values: bytes = b""
    terminal: dict[int, bytes] = field(default_factory=dict)
    first_ac: risk.Cryptogram | None = None
    second_ac: risk.Cryptogram | None = None
    arqc: bytes | None = None
    issuer_auth: Literal["none", "valid", "failed"] = "none"
    external_authenticate_done: bool = False
    script_sequence: int = 0
    script_count: int = 0
    script_failed: bool = False
    facts: risk.CvrFacts = field(default_factory=risk.CvrFacts)


@dataclass(frozen=True)
class _Command:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes | None
    le: int | None  # 1..256, None when absent
    header: bytes


class _Status(Exception):
    """Stops a command with a status word (a control-flow signal, not an error)."""

    def __init__(self, sw: int) -> None:
        self.sw = sw


def _parse(capdu: bytes) -> _Command:
    """ISO 7816-4, 5.1: short APDUs only (EMV 4.4 Book 1, 9.4)."""
    if len(capdu) < 4:
        raise _Status(SW_WRONG_LENGTH)
    cla, ins, p1, p2 = capdu[0], capdu[1], capdu[2], capdu[3]
    data: bytes | None = None
    le: int | None = None
    if len(capdu) == 5:
        le = capdu[4] or 256
    elif len(capdu) > 5:
        lc = capdu[4]
        body = capdu[5:]
        if lc == 0:
            raise _Status(SW_WRONG_LENGTH)  # extended length: not EMV
        if len(body) == lc:
            data = body
        elif len(body) == lc + 1:
            data, le = body[:-1], body[-1] or 256
        else:
            raise _Status(SW_WRONG_LENGTH)
    return _Command(cla, ins, p1, p2, data, le, capdu[:5])


def _bcd_amount(value: bytes) -> int:
    text = value.hex()
    if not text.isdigit():
        raise _Status(SW_WRONG_DATA)
    return int(text)


def _yymmdd_date(value: str) -> datetime.date:
    year = 2000 + int(value[:2]) if int(value[:2]) < 50 else 1900 + int(value[:2])  # Book 4, 6.7.3
    month = int(value[2:4])
    day = min(int(value[4:6]), calendar.monthrange(year, month)[1])
    return datetime.date(year, month, day)


class SimCard:
    """A software EMV contact card built from a `Profile`."""

    def __init__(self, profile: Profile, *, rng: random.Random | None = None,
                 today: Callable[[], datetime.date] | None = None) -> None:
        self.profile = profile
        self._rng = rng or random.Random()
        self._today = today or datetime.date.today
        self.state = CardState(
            pin_try_limit=profile.pin_try_limit, pin_tries_left=profile.pin_tries_left,
            card_blocked=profile.card_blocked, pin=profile.pin,
            apps={app.aid: AppState(
                aid=app.aid, atc=app.initial.atc, blocked=app.initial.blocked, risk=app.risk,
                counters=dataclasses.replace(app.initial.counters))
                for app in profile.applications},
        )
        self._crypto = [CardCrypto(app) for app in profile.applications]
        self._atr = build_atr(profile.protocol, profile.atr_historical)
        self.internal_errors = 0
        self._pse_selected = False
        self._session: _Session | None = None
        self._last_select_name: bytes | None = None
        self._challenge: bytes | None = None
        self._pending: tuple[bytes, int] | None = None

    def __repr__(self) -> str:
        return f"SimCard({self.profile.name}, {self.profile.protocol})"

    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def protocol(self) -> Literal["T=0", "T=1"]:
        return self.profile.protocol

    def power_on(self) -> bytes:
        """Cold reset: RAM cleared, EEPROM kept. Returns the ATR."""
        self._clear_volatile()
        return self._atr

    def power_off(self) -> None:
        self._clear_volatile()

    def _clear_volatile(self) -> None:
        self._pse_selected = False
        self._session = None
        self._last_select_name = None
        self._challenge = None
        self._pending = None
        self.state.selected_aid = None

    # -- dispatch -------------------------------------------------------------------------

    def process(self, capdu: bytes) -> bytes:
        """Answer one command APDU with response data || SW1 SW2. Never raises."""
        try:
            command = _parse(bytes(capdu))
            pending, self._pending = self._pending, None
            if command.ins == 0xC0 and command.cla == 0x00:
                return self._get_response(command, pending)
            data, sw = self._dispatch(command)
            return self._transport(command, data, sw)
        except _Status as status:
            return status.sw.to_bytes(2, "big")
        except Exception as exc:
            self.internal_errors += 1
            log.error("simulated card: internal error %s", type(exc).__name__)
            return SW_INTERNAL.to_bytes(2, "big")

    _ROUTES: ClassVar[dict[int, tuple[tuple[int, ...], str]]] = {
        0xA4: ((0x00,), "_select"),
        0xB2: ((0x00,), "_read_record"),
        0xA8: ((0x80,), "_gpo"),
        0xCA: ((0x80,), "_get_data"),
        0x84: ((0x00,), "_get_challenge"),
        0x20: ((0x00,), "_verify"),
        0x88: ((0x00,), "_internal_authenticate"),
        0xAE: ((0x80,), "_generate_ac"),
        0x82: ((0x00,), "_external_authenticate"),
        0x1E: ((0x84,), "_script"),
        0x18: ((0x84,), "_script"),
        0x16: ((0x84,), "_script"),
        0x24: ((0x84,), "_script"),
        0xDA: ((0x84,), "_script"),
    }

    def _dispatch(self, command: _Command) -> tuple[bytes, int]:
        route = self._ROUTES.get(command.ins)
        if route is None:
            known_class = command.cla in (0x00, 0x80, 0x84)
            raise _Status(SW_INS_NOT_SUPPORTED if known_class else SW_CLA_NOT_SUPPORTED)
        classes, method = route
        if command.cla not in classes:
            raise _Status(SW_CLA_NOT_SUPPORTED)
        handler: Callable[[_Command], tuple[bytes, int]] = getattr(self, method)
        return handler(command)

    def _transport(self, command: _Command, data: bytes, sw: int) -> bytes:
        if not data:
            return sw.to_bytes(2, "big")
        if command.data is not None:
            if self.profile.protocol == "T=0":
                # Book 1, 9.3.1.1 (case 4 under T=0): '61xx', then GET RESPONSE.
                self._pending = (data, sw)
                return bytes([0x61, min(len(data), self.profile.t0_chunk) & 0xFF])
            return data + sw.to_bytes(2, "big")
        le = command.le if command.le is not None else 256
        if le != len(data) and (self.profile.protocol == "T=0" or le < len(data)):
            # Book 1, 9.3.1.1 / 9.3.2 (case 2): wrong Le, the card gives the exact one.
            return bytes([0x6C, len(data) & 0xFF])
        return data + sw.to_bytes(2, "big")

    def _get_response(self, command: _Command, pending: tuple[bytes, int] | None) -> bytes:
        if command.p1 or command.p2:
            return SW_WRONG_P1P2.to_bytes(2, "big")
        if command.data is not None:
            return SW_WRONG_LENGTH.to_bytes(2, "big")
        if pending is None:
            return SW_CONDITIONS.to_bytes(2, "big")
        data, sw = pending
        available = min(len(data), self.profile.t0_chunk)
        le = command.le if command.le is not None else 256
        if le == 256:
            le = available
        elif le > available:
            self._pending = pending
            return bytes([0x6C, available & 0xFF])
        chunk, rest = data[:le], data[le:]
        if rest:
            self._pending = (rest, sw)
            return chunk + bytes([0x61, min(len(rest), self.profile.t0_chunk) & 0xFF])
        return chunk + sw.to_bytes(2, "big")

    # -- helpers ----------------------------------------------------------------------------

    def _app(self) -> tuple[Application, AppState, _Session]:
        if self._session is None:
            raise _Status(SW_CONDITIONS)
        app = self.profile.applications[self._session.index]
        return app, self.state.apps[app.aid], self._session

    @staticmethod
    def _image(app: Application) -> CardImage:
        if app.image is None:
            raise RuntimeError("application not personalised (profile built without records)")
        return app.image

    @staticmethod
    def _no_data(command: _Command) -> None:
        if command.data is not None:
            raise _Status(SW_WRONG_LENGTH)

    @staticmethod
    def _need_data(command: _Command) -> bytes:
        if command.data is None:
            raise _Status(SW_WRONG_LENGTH)
        return command.data

    @staticmethod
    def _icc_key(name: str | None) -> pki.RsaKey | None:
        return cached_key(name) if name else None

    # -- SELECT (Book 1, 11.3; Book 3, 6.5.11) ----------------------------------------------

    def _select(self, command: _Command) -> tuple[bytes, int]:
        if command.p1 != 0x04 or command.p2 not in (0x00, 0x02):
            raise _Status(SW_WRONG_P1P2)
        name = self._need_data(command)
        if not 1 <= len(name) <= 16:
            raise _Status(SW_WRONG_LENGTH)
        if self.state.card_blocked:
            raise _Status(SW_FUNCTION_NOT_SUPPORTED)
        current = self._session.index if self._session is not None else None
        same_name = name == self._last_select_name
        self._session = None
        self._pse_selected = False
        self.state.selected_aid = None
        self._last_select_name = name
        if name == PSE_NAME:
            if not self.profile.pse or command.p2 != 0x00:
                raise _Status(SW_FILE_NOT_FOUND)
            self._pse_selected = True
            first = self.profile.applications[0]
            return pse_fci(self.profile.pse_sfi, first.language), SW_OK
        matches = [i for i, app in enumerate(self.profile.applications) if app.aid.startswith(name)]
        if command.p2 == 0x02 and same_name and current in matches:
            matches = matches[matches.index(current) + 1:]
        if not matches:
            raise _Status(SW_FILE_NOT_FOUND)
        index = matches[0]
        app = self.profile.applications[index]
        self._session = _Session(index=index)
        self.state.selected_aid = app.aid
        fci = self._image(app).fci
        if self.state.apps[app.aid].blocked:
            return fci, SW_SELECTED_FILE_INVALIDATED
        return fci, SW_OK

    # -- READ RECORD (Book 3, 6.5.11) --------------------------------------------------------

    def _read_record(self, command: _Command) -> tuple[bytes, int]:
        self._no_data(command)
        if command.p1 == 0 or command.p2 & 0x07 != 0x04 or command.p2 >> 3 == 0:
            raise _Status(SW_WRONG_P1P2)
        sfi, number = command.p2 >> 3, command.p1
        if self._pse_selected:
            if sfi != self.profile.pse_sfi:
                raise _Status(SW_FILE_NOT_FOUND)
            record = self.profile.pse_records.get(number)
        elif self._session is not None:
            records = self._image(self.profile.applications[self._session.index]).records
            if not any(s == sfi for s, _ in records):
                raise _Status(SW_FILE_NOT_FOUND)
            record = records.get((sfi, number))
        else:
            raise _Status(SW_FILE_NOT_FOUND)
        if record is None:
            raise _Status(SW_RECORD_NOT_FOUND)
        return record, SW_OK

    # -- GET PROCESSING OPTIONS (Book 3, 6.5.8) -----------------------------------------------

    def _gpo(self, command: _Command) -> tuple[bytes, int]:
        if command.p1 or command.p2:
            raise _Status(SW_WRONG_P1P2)
        data = self._need_data(command)
        app, app_state, session = self._app()
        if session.gpo_done or app_state.blocked or self.state.card_blocked:
            raise _Status(SW_CONDITIONS)
        try:
            objects = tlv_decode(data)
        except TlvError:
            raise _Status(SW_WRONG_DATA) from None
        if len(objects) != 1 or objects[0].tag != 0x83:
            raise _Status(SW_WRONG_DATA)
        values = objects[0].value
        try:
            pdol_items = dol.split(app.pdol, values)
        except DolError:
            raise _Status(SW_WRONG_LENGTH) from None
        pdol_data = dict(pdol_items)
        country = pdol_data.get(0x9F1A)
        if app.gpo_allowed_countries and country not in app.gpo_allowed_countries:
            raise _Status(SW_CONDITIONS)
        if app_state.atc >= MAX_ATC:
            raise _Status(SW_CONDITIONS)
        # The ATC counts transactions from GET PROCESSING OPTIONS on, as VIS and M/Chip cards
        # do, so GET DATA '9F36' during terminal risk management already sees this one.
        app_state.atc += 1
        session.gpo_done = True
        session.pdol_values = values
        facts = session.facts
        facts.script_count = app_state.last_script_count
        facts.script_failed = app_state.last_script_failed
        facts.issuer_auth_failed_last_online = app_state.counters.issuer_auth_failed_last_online
        facts.last_online_not_completed = app_state.counters.online_not_completed
        image = self._image(app)
        if app.gpo_format == 1:
            return tlv_encode(0x80, image.aip + image.afl), SW_OK
        body = tlv_encode(0x82, image.aip) + tlv_encode(0x94, image.afl)
        return tlv_encode(0x77, body), SW_OK

    # -- GET DATA (Book 3, 6.5.7) --------------------------------------------------------------

    def _get_data(self, command: _Command) -> tuple[bytes, int]:
        self._no_data(command)
        _app, app_state, _session = self._app()
        tag = (command.p1 << 8) | command.p2
        if tag == 0x9F36:
            value = app_state.atc.to_bytes(2, "big")
        elif tag == 0x9F13:
            value = app_state.counters.last_online_atc.to_bytes(2, "big")
        elif tag == 0x9F17:
            value = bytes([self.state.pin_tries_left])
        else:
            raise _Status(SW_DATA_NOT_FOUND)
        return tlv_encode(tag, value), SW_OK

    # -- GET CHALLENGE (Book 3, 6.5.6) ---------------------------------------------------------

    def _get_challenge(self, command: _Command) -> tuple[bytes, int]:
        self._no_data(command)
        if command.p1 or command.p2:
            raise _Status(SW_WRONG_P1P2)
        self._challenge = self._rng.randbytes(8)
        return self._challenge, SW_OK

    # -- VERIFY (Book 3, 6.5.12; Book 2, 7.2) -------------------------------------------------

    def _verify(self, command: _Command) -> tuple[bytes, int]:
        if command.p1 != 0x00 or command.p2 not in (0x80, 0x88):
            raise _Status(SW_WRONG_P1P2)
        data = self._need_data(command)
        app, _app_state, session = self._app()
        if command.p2 == 0x80:
            if len(data) != 8:
                raise _Status(SW_WRONG_LENGTH)
            if self.state.pin_tries_left == 0:
                raise _Status(SW_PIN_BLOCKED)
            pin = parse_pin_block_format2(data)
        else:
            # Book 2, 7.1: the ICC PIN Encipherment key, else the ICC key of DDA/CDA.
            key = self._icc_key(app.icc_pin_key or (app.icc_key if app.oda in ("dda", "cda") else None))
            if key is None:
                raise _Status(SW_WRONG_P1P2)
            if len(data) != key.size:
                raise _Status(SW_WRONG_LENGTH)
            if self.state.pin_tries_left == 0:
                raise _Status(SW_PIN_BLOCKED)
            challenge, self._challenge = self._challenge, None
            if challenge is None:
                raise _Status(SW_CONDITIONS)
            try:
                plain = pki.decipher_pin(key, data)
            except pki.PkiError:
                raise _Status(SW_WRONG_DATA) from None
            # Book 2, 7.2: '7F' || PIN block || ICC Unpredictable Number || random pad.
            if plain[0] != 0x7F or not hmac.compare_digest(plain[9:17], challenge):
                raise _Status(SW_WRONG_DATA)
            pin = parse_pin_block_format2(plain[1:9])
            session.facts.offline_pin_enciphered = True
        if pin is None:
            raise _Status(SW_WRONG_DATA)
        facts = session.facts
        facts.offline_pin_performed = True
        if hmac.compare_digest(pin.encode(), self.state.pin.encode()):
            self.state.pin_tries_left = self.state.pin_try_limit
            facts.offline_pin_failed = False
            return b"", SW_OK
        self.state.pin_tries_left -= 1
        facts.offline_pin_failed = True
        if self.state.pin_tries_left == 0:
            facts.pin_try_limit_exceeded = True
        return b"", 0x63C0 | self.state.pin_tries_left

    # -- INTERNAL AUTHENTICATE (Book 3, 6.5.9; Book 2, 6.5) ----------------------------------

    def _internal_authenticate(self, command: _Command) -> tuple[bytes, int]:
        if command.p1 or command.p2:
            raise _Status(SW_WRONG_P1P2)
        data = self._need_data(command)
        app, _app_state, session = self._app()
        key = self._icc_key(app.icc_key) if app.oda in ("dda", "cda") else None
        if key is None:
            raise _Status(SW_INS_NOT_SUPPORTED)
        if len(data) != sum(entry.length for entry in dol.parse(app.ddol)):
            raise _Status(SW_WRONG_LENGTH)
        number = self._rng.randbytes(8)
        sdad = pki.sign_dynamic_data(key, icc_dynamic_data=pki.dda_dynamic_data(number), terminal_data=data)
        session.facts.dda_performed = True
        if app.ac_format == 1:
            return tlv_encode(0x80, sdad), SW_OK
        return tlv_encode(0x77, tlv_encode(0x9F4B, sdad)), SW_OK

    # -- GENERATE AC (Book 3, 6.5.5; Book 2, 6.6 and 8.1) -------------------------------------

    def _generate_ac(self, command: _Command) -> tuple[bytes, int]:
        if command.p2 != 0x00 or command.p1 & 0x2F or command.p1 & 0xC0 == 0xC0:
            raise _Status(SW_WRONG_P1P2)
        data = self._need_data(command)
        app, app_state, session = self._app()
        if not session.gpo_done:
            raise _Status(SW_CONDITIONS)
        requested = risk.CRYPTOGRAM_OF_P1[command.p1 & 0xC0]
        cda_requested = bool(command.p1 & 0x10)
        if session.first_ac is None:
            return self._first_ac(app, app_state, session, data, requested, cda_requested)
        if session.first_ac == "ARQC" and session.second_ac is None:
            if requested == "ARQC":
                raise _Status(SW_WRONG_P1P2)
            return self._second_ac(app, app_state, session, data, requested, cda_requested)
        raise _Status(SW_CONDITIONS)

    def _transaction(self, app: Application, app_state: AppState,
                     terminal: dict[int, bytes]) -> risk.Transaction:
        currency = bytes.fromhex(app.currency.zfill(4))
        terminal_type = terminal.get(0x9F35, b"\x22")[:1]
        return risk.Transaction(
            amount=_bcd_amount(terminal[0x9F02]),
            same_currency=terminal[0x5F2A] == currency,
            pin_try_limit_exceeded=self.state.pin_tries_left == 0,
            application_blocked=app_state.blocked or self.state.card_blocked,
            expired=self._today() > _yymmdd_date(app.expiry),
            terminal_offline_only=bool(terminal_type) and terminal_type[0] & 0x0F in (0x03, 0x06),
        )

    def _first_ac(self, app: Application, app_state: AppState, session: _Session, data: bytes,
                  requested: risk.Cryptogram, cda_requested: bool) -> tuple[bytes, int]:
        try:
            terminal = dict(dol.split(app.cdol1, data))
        except DolError:
            raise _Status(SW_WRONG_LENGTH) from None
        tx = self._transaction(app, app_state, terminal)
        counters = app_state.counters
        decision = risk.first_ac(requested, app_state.risk, counters, tx)
        facts = session.facts
        facts.first_ac = decision.cryptogram
        facts.limits = frozenset(risk.limits_exceeded(app_state.risk, counters, tx))
        facts.new_card = counters.last_online_atc == 0
        facts.expired = app_state.risk.check_expiry and tx.expired
        facts.pin_try_limit_exceeded = tx.pin_try_limit_exceeded
        facts.pin_tries_left = self.state.pin_tries_left
        facts.domestic = terminal[0x9F1A] == bytes.fromhex(app.issuer_country.zfill(4))
        cda = cda_requested and app.oda == "cda" and decision.cryptogram != "AAC"
        facts.cda_first = cda
        counters_field = self._mchip_counters(counters)
        if decision.cryptogram == "TC":
            risk.record_offline_approval(counters, tx.amount)
        elif decision.cryptogram == "ARQC":
            counters.online_not_completed = True
        session.first_ac = decision.cryptogram
        session.cdol1_values = data
        session.terminal = terminal
        response = self._ac_response(app, app_state, session, decision.cryptogram, terminal,
                                     counters_field, cda, hashed=session.pdol_values + data)
        return response, SW_OK

    def _second_ac(self, app: Application, app_state: AppState, session: _Session, data: bytes,
                   requested: risk.Cryptogram, cda_requested: bool) -> tuple[bytes, int]:
        try:
            cdol2 = dict(dol.split(app.cdol2, data))
        except DolError:
            raise _Status(SW_WRONG_LENGTH) from None
        terminal = {**session.terminal, **cdol2}
        auth_data = cdol2.get(0x91)
        if auth_data is not None and any(auth_data) and not session.external_authenticate_done:
            session.issuer_auth = self._check_arpc(app_state, session, auth_data)
        arc = cdol2.get(0x8A)
        tx = self._transaction(app, app_state, terminal)
        counters = app_state.counters
        counters_field = self._mchip_counters(counters)
        decision = risk.second_ac(requested, app_state.risk, counters, tx, arc=arc,
                                  issuer_auth=session.issuer_auth)
        facts = session.facts
        facts.second_ac = decision.cryptogram
        facts.unable_to_go_online = "unable_to_go_online" in decision.reasons
        facts.issuer_auth_not_performed_after_online = (
            session.issuer_auth == "none" and not facts.unable_to_go_online)
        facts.pin_tries_left = self.state.pin_tries_left
        if facts.unable_to_go_online:
            facts.limits = frozenset(risk.limits_exceeded(app_state.risk, counters, tx))
            counters.online_not_completed = False
            if decision.cryptogram == "TC":
                risk.record_offline_approval(counters, tx.amount)
        else:
            risk.record_online_result(counters, approved=decision.cryptogram == "TC",
                                      issuer_auth=session.issuer_auth, atc=app_state.atc)
        cda = cda_requested and app.oda == "cda" and decision.cryptogram != "AAC"
        facts.cda_second = cda
        session.second_ac = decision.cryptogram
        response = self._ac_response(app, app_state, session, decision.cryptogram, terminal,
                                     counters_field, cda,
                                     hashed=session.pdol_values + session.cdol1_values + data)
        return response, SW_OK

    @staticmethod
    def _mchip_counters(counters: risk.OfflineCounters) -> bytes:
        # M/Chip 4 plaintext counters as pyemv takes them: amount (n12), count, 'FF'.
        amount = min(counters.cumulative_amount, 999_999_999_999)
        return bytes.fromhex(f"{amount:012d}") + bytes([min(counters.consecutive, 255), 0xFF])

    def _ac_response(self, app: Application, app_state: AppState, session: _Session,
                     cryptogram: risk.Cryptogram, terminal: dict[int, bytes], counters_field: bytes,
                     cda: bool, *, hashed: bytes) -> bytes:
        crypto = self._crypto[session.index]
        facts = session.facts
        cvr = risk.visa_cvr(facts) if crypto.is_visa else risk.mchip_cvr(facts)
        iad = crypto.issuer_application_data(cvr, counters_field)
        atc = app_state.atc.to_bytes(2, "big")
        ac = crypto.application_cryptogram(terminal, self._image(app).aip, atc, iad)
        if session.second_ac is None and cryptogram == "ARQC":
            session.arqc = ac
        cid = risk.CID[cryptogram]
        cid_tlv = tlv_encode(0x9F27, bytes([cid]))
        atc_tlv = tlv_encode(0x9F36, atc)
        iad_tlv = tlv_encode(0x9F10, iad)
        if cda:
            # Book 2, 6.6.1: the hash covers PDOL and CDOL values, then the response's TLVs
            # except the signature itself, in the order returned.
            key = self._icc_key(app.icc_key)
            if key is None:
                raise RuntimeError("CDA without an ICC key")
            digest = hashlib.sha1(hashed + cid_tlv + atc_tlv + iad_tlv).digest()
            dynamic = pki.cda_dynamic_data(self._rng.randbytes(8), cid=cid, cryptogram=ac,
                                           transaction_data_hash=digest)
            sdad = pki.sign_dynamic_data(key, icc_dynamic_data=dynamic, terminal_data=terminal[0x9F37])
            return tlv_encode(0x77, cid_tlv + atc_tlv + tlv_encode(0x9F4B, sdad) + iad_tlv)
        if app.ac_format == 1:
            return tlv_encode(0x80, bytes([cid]) + atc + ac + iad)
        return tlv_encode(0x77, cid_tlv + atc_tlv + tlv_encode(0x9F26, ac) + iad_tlv)

    def _check_arpc(self, app_state: AppState, session: _Session,
                    auth_data: bytes) -> Literal["valid", "failed"]:
        if session.arqc is None:
            return "failed"
        atc = app_state.atc.to_bytes(2, "big")
        ok = self._crypto[session.index].verify_arpc(session.arqc, atc, auth_data)
        session.facts.issuer_auth_performed = True
        session.facts.issuer_auth_failed = not ok
        return "valid" if ok else "failed"

    # -- EXTERNAL AUTHENTICATE (Book 3, 6.5.4) ------------------------------------------------

    def _external_authenticate(self, command: _Command) -> tuple[bytes, int]:
        if command.p1 or command.p2:
            raise _Status(SW_WRONG_P1P2)
        data = self._need_data(command)
        if not 8 <= len(data) <= 16:
            raise _Status(SW_WRONG_LENGTH)
        _app, app_state, session = self._app()
        if session.first_ac != "ARQC" or session.second_ac is not None or session.external_authenticate_done:
            raise _Status(SW_CONDITIONS)
        session.external_authenticate_done = True
        session.issuer_auth = self._check_arpc(app_state, session, data)
        return b"", SW_OK if session.issuer_auth == "valid" else SW_AUTH_FAILED

    # -- issuer scripts (Book 3, 6.5.1-6.5.3, 6.5.10; Book 2, 9) --------------------------------

    _PUT_DATA_TAGS: ClassVar[dict[int, tuple[str, int]]] = {
        0x9F14: ("lower_consecutive_offline_limit", 1),
        0x9F23: ("upper_consecutive_offline_limit", 1),
        0x9F54: ("lower_cumulative_offline_amount", 6),
        0x9F5C: ("upper_cumulative_offline_amount", 6),
    }

    def _script(self, command: _Command) -> tuple[bytes, int]:
        data = self._need_data(command)
        if len(data) < SCRIPT_MAC_LENGTH:
            raise _Status(SW_WRONG_LENGTH)
        ins, p1, p2 = command.ins, command.p1, command.p2
        if ins in (0x1E, 0x18, 0x16) and (p1 or p2):
            raise _Status(SW_WRONG_P1P2)
        if ins == 0x24 and (p1 or p2 not in (0x00, 0x01, 0x02)):
            raise _Status(SW_WRONG_P1P2)
        if ins == 0xDA and ((p1 << 8) | p2) not in self._PUT_DATA_TAGS:
            raise _Status(SW_DATA_NOT_FOUND)
        _app, app_state, session = self._app()
        if session.arqc is None:
            raise _Status(SW_CONDITIONS)
        body, mac = data[:-SCRIPT_MAC_LENGTH], data[-SCRIPT_MAC_LENGTH:]
        crypto = self._crypto[session.index]
        atc = app_state.atc.to_bytes(2, "big")
        sequence = session.script_sequence
        session.script_sequence += 1
        session.facts.script_received = True
        if not crypto.verify_script_mac(command.header, body, mac, arqc=session.arqc, atc=atc,
                                        sequence=sequence):
            return self._script_done(app_state, session, ok=False)
        if ins == 0x1E:
            app_state.blocked = True
        elif ins == 0x18:
            app_state.blocked = False
        elif ins == 0x16:
            self.state.card_blocked = True
        elif ins == 0x24:
            if p2 == 0x00:
                if body:
                    return self._script_done(app_state, session, ok=False, sw=SW_WRONG_LENGTH)
            else:
                new_pin = crypto.decipher_new_pin(body, arqc=session.arqc, atc=atc, sequence=sequence,
                                                  current_pin=self.state.pin if p2 == 0x01 else None)
                if new_pin is None:
                    return self._script_done(app_state, session, ok=False, sw=SW_WRONG_DATA)
                self.state.pin = new_pin
            self.state.pin_tries_left = self.state.pin_try_limit
        else:
            name, length = self._PUT_DATA_TAGS[(p1 << 8) | p2]
            if len(body) != length:
                return self._script_done(app_state, session, ok=False, sw=SW_WRONG_LENGTH)
            value = _bcd_amount(body) if length == 6 else body[0]
            app_state.risk = replace(app_state.risk, **{name: value})
        return self._script_done(app_state, session, ok=True)

    @staticmethod
    def _script_done(app_state: AppState, session: _Session, *, ok: bool,
                     sw: int = SW_SM_INCORRECT) -> tuple[bytes, int]:
        if ok:
            session.script_count += 1
        else:
            session.script_failed = True
        app_state.last_script_count = session.script_count
        app_state.last_script_failed = session.script_failed
        return b"", SW_OK if ok else sw
