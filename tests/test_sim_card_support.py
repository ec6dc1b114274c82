"""A small terminal for the simulated card tests, written from the specs and not from `sim.card`.

It sends APDUs (following the T=0 rules of EMV 4.4 Book 1, 9.3.1 itself), builds DOL data with
`emv.dol`, recomputes the static data to authenticate (Book 3, 10.3), recovers certificates and
signatures with a bare `pow` (Book 2, Annex A2.1) and recomputes cryptograms with pyemv from the
profile's issuer master keys. The checks in the tests are then independent of the card's code.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from pyemv import cvn as pyemv_cvn

from emv import dol
from emv.tlv import Tlv, decode, find
from sim.card.card import SimCard
from sim.card.profile import Application, load_profile

TERMINAL_DATA: dict[int, bytes] = {
    0x9F02: bytes.fromhex("000000001234"),
    0x9F03: bytes(6),
    0x9F1A: bytes.fromhex("0250"),
    0x95: bytes.fromhex("0000008000"),
    0x5F2A: bytes.fromhex("0978"),
    0x9A: bytes.fromhex("250315"),
    0x9C: b"\x00",
    0x9F37: bytes.fromhex("CAFEBABE"),
    0x9F35: b"\x22",
    0x9F34: bytes.fromhex("420300"),
    0x9F45: bytes(2),
    0x9F4C: bytes(8),
    0x8A: b"00",
}


def apdu(cla: int, ins: int, p1: int, p2: int, data: bytes | None = None, le: int | None = 0) -> bytes:
    out = bytes([cla, ins, p1, p2])
    if data is not None:
        out += bytes([len(data)]) + data
    if le is not None:
        out += bytes([le & 0xFF])
    return out


def sw_of(response: bytes) -> int:
    return int.from_bytes(response[-2:], "big")


@dataclass
class Terminal:
    """Drives one card through a transaction; keeps what it sent and received."""

    card: SimCard
    data: dict[int, bytes] = field(default_factory=lambda: dict(TERMINAL_DATA))
    pdol_values: bytes = b""
    cdol1_values: bytes = b""
    aip: bytes = b""
    afl: bytes = b""
    records: dict[tuple[int, int], bytes] = field(default_factory=dict)
    app: Application | None = None

    def raw(self, capdu: bytes) -> bytes:
        response = self.card.process(capdu)
        assert len(response) >= 2
        return response

    def send(self, capdu: bytes) -> tuple[bytes, int]:
        """Book 1, 9.3.1: '6Cxx' -> resend with Le = xx; '61xx' -> GET RESPONSE until done."""
        response = self.raw(capdu)
        sw = sw_of(response)
        if sw >> 8 == 0x6C:
            response = self.raw(capdu[:4] + bytes([sw & 0xFF]))
            sw = sw_of(response)
        data = response[:-2]
        while sw >> 8 == 0x61:
            response = self.raw(bytes([0x00, 0xC0, 0x00, 0x00, sw & 0xFF]))
            data += response[:-2]
            sw = sw_of(response)
        return data, sw

    def select(self, name: bytes, p2: int = 0x00) -> tuple[list[Tlv], int]:
        data, sw = self.send(apdu(0x00, 0xA4, 0x04, p2, name))
        return (decode(data) if data else []), sw

    def select_app(self, app: Application) -> None:
        _fci, sw = self.select(app.aid)
        assert sw == 0x9000, hex(sw)
        self.app = app

    def gpo(self) -> int:
        assert self.app is not None
        self.pdol_values = dol.build(self.app.pdol, self.data)
        data, sw = self.send(apdu(0x80, 0xA8, 0x00, 0x00, b"\x83" + bytes([len(self.pdol_values)])
                                  + self.pdol_values))
        if sw != 0x9000:
            return sw
        (template,) = decode(data)
        if template.tag == 0x80:
            self.aip, self.afl = template.value[:2], template.value[2:]
        else:
            aip, afl = find([template], 0x82), find([template], 0x94)
            assert aip is not None and afl is not None
            self.aip, self.afl = aip.value, afl.value
        return sw

    def read_records(self) -> dict[tuple[int, int], bytes]:
        for pos in range(0, len(self.afl), 4):
            sfi, first, last = self.afl[pos] >> 3, self.afl[pos + 1], self.afl[pos + 2]
            for number in range(first, last + 1):
                data, sw = self.send(apdu(0x00, 0xB2, number, (sfi << 3) | 4))
                assert sw == 0x9000, (sfi, number, hex(sw))
                self.records[(sfi, number)] = data
        return self.records

    def record_objects(self) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for record in self.records.values():
            (template,) = decode(record)
            assert template.tag == 0x70
            for child in template.children or ():
                out[child.tag] = child.value
        return out

    def generate_ac(self, p1: int, *, second: bool = False) -> tuple[list[Tlv], int]:
        assert self.app is not None
        values = dol.build(self.app.cdol2 if second else self.app.cdol1, self.data)
        if not second:
            self.cdol1_values = values
        self.last_cdol_values = values
        data, sw = self.send(apdu(0x80, 0xAE, p1, 0x00, values))
        return (decode(data) if data else []), sw

    def start(self, app_index: int = 0) -> Application:
        """Power on, select, GPO and read records: the card is ready for GENERATE AC."""
        self.card.power_on()
        app = self.card.profile.applications[app_index]
        self.select_app(app)
        assert self.gpo() == 0x9000
        self.read_records()
        return app


def make_card(name: str, seed: int = 7, **kwargs: object) -> SimCard:
    return SimCard(load_profile(name), rng=random.Random(seed), **kwargs)  # type: ignore[arg-type]


def ac_fields(template: list[Tlv]) -> dict[str, bytes]:
    """CID, ATC, AC (or SDAD) and IAD from a format 1 or format 2 GENERATE AC response."""
    (top,) = template
    if top.tag == 0x80:
        v = top.value
        return {"cid": v[:1], "atc": v[1:3], "ac": v[3:11], "iad": v[11:]}
    out = {}
    for tag, name in ((0x9F27, "cid"), (0x9F36, "atc"), (0x9F26, "ac"), (0x9F10, "iad"), (0x9F4B, "sdad")):
        item = find([top], tag)
        if item is not None:
            out[name] = item.value
    return out


def engine(app: Application) -> object:
    classes = {"visa10": pyemv_cvn.VisaCVN10, "visa18": pyemv_cvn.VisaCVN18,
               "mc16": pyemv_cvn.MasterCardCVN16, "mc17": pyemv_cvn.MasterCardCVN17}
    return classes[app.cvn](app.keys.ac, app.keys.smi, app.keys.smc, app.pan, app.psn)


def expected_ac(app: Application, terminal: dict[int, bytes], aip: bytes, atc: bytes, iad: bytes) -> bytes:
    """The cryptogram recomputed with pyemv; the CVR is cut out of the IAD per the CVN's layout."""
    e = engine(app)
    args = dict(tag_9f02=terminal[0x9F02], tag_9f03=terminal[0x9F03], tag_9f1a=terminal[0x9F1A],
                tag_95=terminal[0x95], tag_5f2a=terminal[0x5F2A], tag_9a=terminal[0x9A],
                tag_9c=terminal[0x9C], tag_9f37=terminal[0x9F37], tag_82=aip, tag_9f36=atc)
    if app.cvn == "visa10":
        # VIS IAD: length '06', DKI, CVN '0A', CVR (4 bytes starting '03').
        assert iad[0] == 0x06 and iad[2] == 0x0A and iad[3] == 0x03
        return e.generate_ac(**args, cvr=iad[3:7])  # type: ignore[attr-defined]
    if app.cvn == "visa18":
        assert iad[0] == 0x06 and iad[2] == 0x12 and iad[3] == 0x03
        return e.generate_ac(**args, tag_9f10=iad)  # type: ignore[attr-defined]
    # M/Chip 4 IAD: DKI, CVN, CVR (6), DAC (2), counters (8).
    assert len(iad) == 18 and iad[1] in (0x10, 0x11)
    if app.cvn == "mc16":
        return e.generate_ac(**args, cvr=iad[2:8])  # type: ignore[attr-defined]
    return e.generate_ac(**args, cvr=iad[2:8], counters=iad[10:18])  # type: ignore[attr-defined]


# -- offline data authentication, recomputed from Book 2 / Book 3 ------------------------------


def static_data(records: dict[tuple[int, int], bytes], afl: bytes, aip: bytes,
                sda_tag_list: bytes | None) -> bytes:
    """EMV 4.4 Book 3, 10.3, written again here: SFI 1-10 value of '70', SFI 11-30 whole record."""
    out = b""
    for pos in range(0, len(afl), 4):
        sfi, first, count = afl[pos] >> 3, afl[pos + 1], afl[pos + 3]
        for number in range(first, first + count):
            record = records[(sfi, number)]
            if sfi <= 10:
                (template,) = decode(record)
                out += template.value
            else:
                out += record
    if sda_tag_list == b"\x82":
        out += aip
    return out


def recover(signed: bytes, n: int, e: int) -> bytes:
    size = (n.bit_length() + 7) // 8
    assert len(signed) == size
    block = pow(int.from_bytes(signed, "big"), e, n).to_bytes(size, "big")
    assert block[0] == 0x6A and block[-1] == 0xBC, "header/trailer"
    return block


@dataclass(frozen=True)
class PublicKey:
    n: int
    e: int

    @property
    def size(self) -> int:
        return (self.n.bit_length() + 7) // 8


def recover_issuer_key(ca: PublicKey, objects: dict[int, bytes]) -> PublicKey:
    """Book 2, 5.3, Table 6."""
    block = recover(objects[0x90], ca.n, ca.e)
    assert block[1] == 0x02
    length, exp_len = block[13], block[14]
    leftmost = block[15:15 + ca.size - 36]
    remainder = objects.get(0x92, b"")
    exponent = objects[0x9F32]
    assert len(exponent) == exp_len
    digest = hashlib.sha1(block[1:15 + ca.size - 36] + remainder + exponent).digest()
    assert block[-21:-1] == digest, "issuer certificate hash"
    modulus = (leftmost + remainder)[:length]
    return PublicKey(int.from_bytes(modulus, "big"), int.from_bytes(exponent, "big"))


def recover_icc_key(issuer: PublicKey, objects: dict[int, bytes], static: bytes, *,
                    tags: tuple[int, int, int] = (0x9F46, 0x9F48, 0x9F47)) -> PublicKey:
    """Book 2, 6.4, Table 14 (7.1 for the PIN key, which hashes no static data)."""
    cert_tag, rem_tag, exp_tag = tags
    block = recover(objects[cert_tag], issuer.n, issuer.e)
    assert block[1] == 0x04
    length, exp_len = block[19], block[20]
    fields_end = 21 + issuer.size - 42
    leftmost = block[21:fields_end]
    remainder = objects.get(rem_tag, b"")
    exponent = objects[exp_tag]
    assert len(exponent) == exp_len
    digest = hashlib.sha1(block[1:fields_end] + remainder + exponent + static).digest()
    assert block[-21:-1] == digest, "ICC certificate hash"
    return PublicKey(int.from_bytes((leftmost + remainder)[:length], "big"), int.from_bytes(exponent, "big"))


def recover_sdad(icc: PublicKey, sdad: bytes, terminal_data: bytes) -> bytes:
    """Book 2, 6.5.2 / 6.6.2: returns the ICC Dynamic Data after checking the hash."""
    block = recover(sdad, icc.n, icc.e)
    assert block[1] == 0x05 and block[2] == 0x01
    digest = hashlib.sha1(block[1:-21] + terminal_data).digest()
    assert block[-21:-1] == digest, "signed dynamic data hash"
    return block[4:4 + block[3]]


def icc_public_key(terminal: Terminal) -> PublicKey:
    """Recover the ICC key through the CA -> issuer -> ICC chain from the records read."""
    from sim.card import pki

    assert terminal.app is not None
    objects = terminal.record_objects()
    ca_key = pki.load_ca_key(terminal.app.aid[:5], objects[0x8F][0])
    issuer = recover_issuer_key(PublicKey(ca_key.n, ca_key.e), objects)
    static = static_data(terminal.records, terminal.afl, terminal.aip, objects.get(0x9F4A))
    return recover_icc_key(issuer, objects, static)
