"""Command and response APDUs (ISO/IEC 7816-4, 5.1; EMV 4.4 Book 1, 9.4) and the EMV commands.

Short APDUs only: EMV never uses extended lengths (Book 1, 9.4.1). `Le` is kept as the number
of bytes expected, 1 to 256; 256 travels as '00' (ISO 7816-4, 5.1).

Command data may hold PIN blocks, MACs or card data, response data may hold the PAN: neither
`repr` nor an error message ever shows them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from emv.errors import ApduError
from emv.tlv import encode as tlv_encode

# ISO 7816-4, 5.1: Lc and Le of a short APDU.
MAX_LC = 255
MAX_LE = 256

# EMV 4.4 Book 3, 6.3.2 / 6.3.3: class bytes used by EMV.
CLA_ISO = 0x00
CLA_PROPRIETARY = 0x80
# EMV 4.4 Book 3, 6.5.1-6.5.3 and 6.5.10: issuer script commands with secure messaging.
CLA_SECURE_MESSAGING = 0x84

INS_APPLICATION_UNBLOCK = 0x18
INS_APPLICATION_BLOCK = 0x1E
INS_CARD_BLOCK = 0x16
INS_VERIFY = 0x20
INS_PIN_CHANGE_UNBLOCK = 0x24
INS_EXTERNAL_AUTHENTICATE = 0x82
INS_GET_CHALLENGE = 0x84
INS_INTERNAL_AUTHENTICATE = 0x88
INS_SELECT = 0xA4
INS_GET_PROCESSING_OPTIONS = 0xA8
INS_GENERATE_AC = 0xAE
INS_READ_RECORD = 0xB2
INS_GET_RESPONSE = 0xC0
INS_GET_DATA = 0xCA
INS_PUT_DATA = 0xDA
INS_UPDATE_RECORD = 0xDC

_INS_NAMES: dict[int, str] = {
    INS_APPLICATION_BLOCK: "APPLICATION BLOCK",
    INS_APPLICATION_UNBLOCK: "APPLICATION UNBLOCK",
    INS_CARD_BLOCK: "CARD BLOCK",
    INS_VERIFY: "VERIFY",
    INS_PIN_CHANGE_UNBLOCK: "PIN CHANGE/UNBLOCK",
    INS_EXTERNAL_AUTHENTICATE: "EXTERNAL AUTHENTICATE",
    INS_GET_CHALLENGE: "GET CHALLENGE",
    INS_INTERNAL_AUTHENTICATE: "INTERNAL AUTHENTICATE",
    INS_SELECT: "SELECT",
    INS_GET_PROCESSING_OPTIONS: "GET PROCESSING OPTIONS",
    INS_GENERATE_AC: "GENERATE AC",
    INS_READ_RECORD: "READ RECORD",
    INS_GET_RESPONSE: "GET RESPONSE",
    INS_GET_DATA: "GET DATA",
    INS_PUT_DATA: "PUT DATA",
    INS_UPDATE_RECORD: "UPDATE RECORD",
}

# EMV 4.4 Book 3, 6.5.7.2: the data objects EMV reads with GET DATA.
GET_DATA_TAGS = frozenset({0x9F36, 0x9F13, 0x9F17, 0x9F4F})


def _check_byte(what: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFF:
        raise ApduError(f"{what} must be a byte (0..255), got {value!r}")


def _as_bytes(what: str, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise ApduError(f"{what} must be bytes, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Command:
    """A command APDU. `le` is the number of bytes expected (1..256), None when absent."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        for what in ("cla", "ins", "p1", "p2"):
            _check_byte(what.upper(), getattr(self, what))
        # ISO 7816-4, 5.1.1: CLA 'FF' is invalid; 5.1.2: INS '6X' and '9X' are invalid
        # (on T=0 they would read as procedure bytes, EMV 4.4 Book 1, 9.2.2.3.1).
        if self.cla == 0xFF:
            raise ApduError("CLA 'FF' is invalid")
        if self.ins & 0xF0 in (0x60, 0x90):
            raise ApduError(f"INS '{self.ins:02X}' is invalid")
        object.__setattr__(self, "data", _as_bytes("command data", self.data))
        if len(self.data) > MAX_LC:
            raise ApduError(f"command data of {len(self.data)} bytes does not fit a short APDU")
        if self.le is not None and (
            not isinstance(self.le, int) or isinstance(self.le, bool) or not 1 <= self.le <= MAX_LE
        ):
            raise ApduError(f"Le must be 1..256 or absent, got {self.le!r}")

    @property
    def case(self) -> int:
        """ISO 7816-3, 12.1.2: 1 no data no Le, 2 Le only, 3 data only, 4 data and Le."""
        if self.data:
            return 4 if self.le is not None else 3
        return 2 if self.le is not None else 1

    @property
    def lc(self) -> int | None:
        return len(self.data) if self.data else None

    @property
    def name(self) -> str:
        return _INS_NAMES.get(self.ins, f"INS {self.ins:02X}")

    @property
    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2))

    def encode(self) -> bytes:
        """ISO 7816-4, 5.1: CLA INS P1 P2 [Lc data] [Le], with Le 256 written '00'."""
        out = bytearray(self.header)
        if self.data:
            out.append(len(self.data))
            out += self.data
        if self.le is not None:
            out.append(self.le & 0xFF)
        return bytes(out)

    def with_le(self, le: int | None) -> Command:
        return Command(self.cla, self.ins, self.p1, self.p2, self.data, le)

    @classmethod
    def parse(cls, raw: bytes) -> Command:
        """Read a short command APDU (ISO 7816-3, 12.1.3 decoding of the body)."""
        raw = _as_bytes("command APDU", raw)
        if len(raw) < 4:
            raise ApduError(f"command APDU of {len(raw)} bytes is shorter than its header")
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, le=body[0] or MAX_LE)
        lc = body[0]
        if lc == 0:
            raise ApduError("extended-length APDUs are not used by EMV (Book 1, 9.4.1)")
        if len(body) == 1 + lc:
            return cls(cla, ins, p1, p2, body[1:])
        if len(body) == 2 + lc:
            return cls(cla, ins, p1, p2, body[1:-1], body[-1] or MAX_LE)
        raise ApduError(f"Lc {lc} does not match a body of {len(body)} bytes")

    def __repr__(self) -> str:
        # Data is never shown: it may be a PIN block, a MAC or card data.
        lc = f" Lc={len(self.data)}" if self.data else ""
        le = f" Le={self.le}" if self.le is not None else ""
        return f"Command({self.name}, {self.header.hex().upper()}{lc}{le})"


@dataclass(frozen=True, slots=True)
class Response:
    """A response APDU: data then SW1 SW2 (ISO 7816-4, 5.1)."""

    data: bytes
    sw: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _as_bytes("response data", self.data))
        if not isinstance(self.sw, int) or isinstance(self.sw, bool) or not 0 <= self.sw <= 0xFFFF:
            raise ApduError(f"status word must be two bytes, got {self.sw!r}")

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000

    def encode(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def parse(cls, raw: bytes) -> Response:
        raw = _as_bytes("response APDU", raw)
        if len(raw) < 2:
            raise ApduError(f"response APDU of {len(raw)} bytes has no status word")
        return cls(raw[:-2], int.from_bytes(raw[-2:], "big"))

    def __repr__(self) -> str:
        return f"Response({len(self.data)} bytes, SW={self.sw:04X})"


class CryptogramType(enum.IntEnum):
    """GENERATE AC reference control parameter, bits 8-7 (EMV 4.4 Book 3, 6.5.5.2, Table 12)."""

    AAC = 0x00
    TC = 0x40
    ARQC = 0x80


# EMV 4.4 Book 3, 6.5.5.2, Table 12: bit 5 asks for a CDA signature.
CDA_REQUESTED = 0x10


def select(name: bytes, *, next_occurrence: bool = False) -> Command:
    """SELECT by DF name (EMV 4.4 Book 1, 11.3.2, Tables 5-7): P1 '04', P2 '00' first / '02' next."""
    name = _as_bytes("DF name", name)
    # EMV 4.4 Book 1, 11.3.2, Table 5: Lc '05' to '10'.
    if not 5 <= len(name) <= 16:
        raise ApduError(f"DF name must be 5..16 bytes, got {len(name)}")
    return Command(CLA_ISO, INS_SELECT, 0x04, 0x02 if next_occurrence else 0x00, name, MAX_LE)


def read_record(record: int, sfi: int) -> Command:
    """READ RECORD (EMV 4.4 Book 3, 6.5.11; Book 1, 11.2): P2 is SFI << 3 | '04'."""
    if not isinstance(record, int) or not 1 <= record <= 0xFF:
        raise ApduError(f"record number must be 1..255, got {record!r}")
    if not isinstance(sfi, int) or not 1 <= sfi <= 30:
        raise ApduError(f"SFI must be 1..30 (Book 3, 10.2), got {sfi!r}")
    return Command(CLA_ISO, INS_READ_RECORD, record, (sfi << 3) | 0x04, le=MAX_LE)


def get_processing_options(pdol_data: bytes) -> Command:
    """GET PROCESSING OPTIONS (EMV 4.4 Book 3, 6.5.8): data is the command template '83'."""
    template = tlv_encode(0x83, _as_bytes("PDOL data", pdol_data))
    if len(template) > MAX_LC:
        raise ApduError(f"PDOL data of {len(pdol_data)} bytes does not fit the command")
    return Command(CLA_PROPRIETARY, INS_GET_PROCESSING_OPTIONS, 0x00, 0x00, template, MAX_LE)


def get_data(tag: int) -> Command:
    """GET DATA (EMV 4.4 Book 3, 6.5.7): P1 P2 carry the tag (EMV reads `GET_DATA_TAGS`)."""
    if not isinstance(tag, int) or not 0x01 <= tag <= 0xFFFF:
        raise ApduError(f"GET DATA tag must fit P1 P2, got {tag!r}")
    return Command(CLA_PROPRIETARY, INS_GET_DATA, tag >> 8, tag & 0xFF, le=MAX_LE)


def verify(pin_data: bytes, *, enciphered: bool) -> Command:
    """VERIFY (EMV 4.4 Book 3, 6.5.12): P2 '80' plaintext PIN, '88' enciphered PIN."""
    pin_data = _as_bytes("PIN data", pin_data)
    if not pin_data:
        raise ApduError("VERIFY needs PIN data")
    return Command(CLA_ISO, INS_VERIFY, 0x00, 0x88 if enciphered else 0x80, pin_data)


def get_challenge() -> Command:
    """GET CHALLENGE (EMV 4.4 Book 3, 6.5.6): the card returns an 8-byte unpredictable number."""
    return Command(CLA_ISO, INS_GET_CHALLENGE, 0x00, 0x00, le=MAX_LE)


def internal_authenticate(ddol_data: bytes) -> Command:
    """INTERNAL AUTHENTICATE (EMV 4.4 Book 3, 6.5.9): data built from the DDOL."""
    ddol_data = _as_bytes("DDOL data", ddol_data)
    if not ddol_data:
        raise ApduError("INTERNAL AUTHENTICATE needs DDOL data")
    return Command(CLA_ISO, INS_INTERNAL_AUTHENTICATE, 0x00, 0x00, ddol_data, MAX_LE)


def generate_ac(cryptogram: CryptogramType, cdol_data: bytes, *, cda: bool = False) -> Command:
    """GENERATE AC (EMV 4.4 Book 3, 6.5.5): P1 is the cryptogram type, plus '10' for CDA."""
    try:
        cryptogram = CryptogramType(cryptogram)
    except ValueError:
        raise ApduError(f"cryptogram type {cryptogram!r} is not AAC, TC or ARQC") from None
    cdol_data = _as_bytes("CDOL data", cdol_data)
    if not cdol_data:
        raise ApduError("GENERATE AC needs CDOL data")
    p1 = cryptogram | (CDA_REQUESTED if cda else 0)
    return Command(CLA_PROPRIETARY, INS_GENERATE_AC, p1, 0x00, cdol_data, MAX_LE)


def external_authenticate(issuer_auth_data: bytes) -> Command:
    """EXTERNAL AUTHENTICATE (EMV 4.4 Book 3, 6.5.4): 8 to 16 bytes of Issuer Authentication Data."""
    issuer_auth_data = _as_bytes("Issuer Authentication Data", issuer_auth_data)
    if not 8 <= len(issuer_auth_data) <= 16:
        raise ApduError(f"Issuer Authentication Data must be 8..16 bytes, got {len(issuer_auth_data)}")
    return Command(CLA_ISO, INS_EXTERNAL_AUTHENTICATE, 0x00, 0x00, issuer_auth_data)


def get_response(le: int) -> Command:
    """GET RESPONSE (ISO 7816-4, 7.6.1; EMV 4.4 Book 1, 9.3.1.3)."""
    return Command(CLA_ISO, INS_GET_RESPONSE, 0x00, 0x00, le=le)


def _script_mac(mac: bytes) -> bytes:
    # EMV 4.4 Book 2, 9.2 and Annex A1.2: the secure messaging MAC is 4 to 8 bytes.
    mac = _as_bytes("MAC", mac)
    if not 4 <= len(mac) <= 8:
        raise ApduError(f"secure messaging MAC must be 4..8 bytes, got {len(mac)}")
    return mac


def application_block(mac: bytes) -> Command:
    """APPLICATION BLOCK (EMV 4.4 Book 3, 6.5.1)."""
    return Command(CLA_SECURE_MESSAGING, INS_APPLICATION_BLOCK, 0x00, 0x00, _script_mac(mac))


def application_unblock(mac: bytes) -> Command:
    """APPLICATION UNBLOCK (EMV 4.4 Book 3, 6.5.2)."""
    return Command(CLA_SECURE_MESSAGING, INS_APPLICATION_UNBLOCK, 0x00, 0x00, _script_mac(mac))


def card_block(mac: bytes) -> Command:
    """CARD BLOCK (EMV 4.4 Book 3, 6.5.3)."""
    return Command(CLA_SECURE_MESSAGING, INS_CARD_BLOCK, 0x00, 0x00, _script_mac(mac))


def pin_change_unblock(enciphered_pin_or_empty: bytes, mac: bytes, *,
                       using_current_pin: bool = False) -> Command:
    """PIN CHANGE/UNBLOCK (EMV 4.4 Book 3, 6.5.10).

    P2 '00' unblocks the PIN (data is the MAC only); '01' changes it with PIN data built using
    the current PIN, '02' without it (data is the enciphered PIN data then the MAC).
    """
    pin = _as_bytes("enciphered PIN data", enciphered_pin_or_empty)
    if not pin:
        if using_current_pin:
            raise ApduError("a PIN unblock carries no PIN data, so it cannot use the current PIN")
        p2 = 0x00
    else:
        p2 = 0x01 if using_current_pin else 0x02
    data = pin + _script_mac(mac)
    if len(data) > MAX_LC:
        raise ApduError(f"PIN CHANGE/UNBLOCK data of {len(data)} bytes does not fit the command")
    return Command(CLA_SECURE_MESSAGING, INS_PIN_CHANGE_UNBLOCK, 0x00, p2, data)


def put_data(tag: int, value: bytes, mac: bytes) -> Command:
    """PUT DATA as an issuer script command (ISO 7816-4, 7.4.3; EMV 4.4 Book 3, 6.3.3 class '84').

    P1 P2 carry the tag; data is the new value followed by the secure messaging MAC.
    """
    if not isinstance(tag, int) or not 0x01 <= tag <= 0xFFFF:
        raise ApduError(f"PUT DATA tag must fit P1 P2, got {tag!r}")
    data = _as_bytes("PUT DATA value", value) + _script_mac(mac)
    if len(data) > MAX_LC:
        raise ApduError(f"PUT DATA of {len(data)} bytes does not fit the command")
    return Command(CLA_SECURE_MESSAGING, INS_PUT_DATA, tag >> 8, tag & 0xFF, data)
