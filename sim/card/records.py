"""What a personalised application holds: its records, AFL, FCI, static data and certificates.

`build_image` lays the data elements of one `Application` out into records (template '70',
EMV 4.4 Book 3, 5.3.2 / 10.2), writes the AFL (Book 3, 10.2, AFL entries of four bytes with the
count of records used for offline data authentication), computes the static data to be
authenticated (Book 3, 10.3) and then the certificates and signatures that depend on it
(Book 2, 5 to 7), through `sim.card.pki`.

Layout, for an application with `data_sfi = 1` and `oda_sfi = 2` (the defaults):

    SFI 1, records 1..k   signed: PAN, dates, AUC, IACs, CVM list, CDOLs, DDOL, 9F4A, ...
    SFI 1, records k+1..  not signed: track 2 equivalent, cardholder name, extra data
    SFI 2, records 1..m   not signed: CA index, issuer and ICC certificates, exponents, SSAD

Signed records come first in their file because an AFL entry counts its ODA records from the
first record it names. With `data_sfi` 11..30 the whole records are signed (tag and length
included, Book 3, 10.3). Certificates depend on the static data, never the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from emv.tlv import encode_length, tag_bytes
from sim.card import pki

if TYPE_CHECKING:
    from sim.card.profile import Application

# A READ RECORD response carries at most 256 bytes (Book 1, 9.4.1): '70' '81' L or '70' '82' LL
# plus the value. 252 bytes of value fits either length form.
MAX_RECORD_VALUE = 252
RECORD_TEMPLATE = 0x70
PSE_NAME = b"1PAY.SYS.DDF01"


class RecordsError(ValueError):
    """The application's data does not fit the records, or its keys cannot certify it."""


@dataclass(frozen=True, repr=False)
class CardImage:
    """Everything the card returns about one application that does not change per transaction."""

    aip: bytes
    afl: bytes
    records: Mapping[tuple[int, int], bytes]
    static_data: bytes
    fci: bytes

    def __repr__(self) -> str:
        return f"CardImage({len(self.records)} records, AFL {self.afl.hex().upper()})"


@cache
def cached_key(name: str) -> pki.RsaKey:
    """A TEST key of `sim/card/keys`, read once per process."""
    return pki.load_key(name)


@cache
def _ca_key(rid: bytes, index: int) -> pki.RsaKey:
    return pki.load_ca_key(rid, index)


def encode_object(tag: int, value: bytes, *, long_form: bool = False) -> bytes:
    """One BER-TLV object; `long_form` writes '81 L' (or '82 LL') even for short values.

    Book 3, Annex B2 allows a longer length field than needed; some cards do it.
    """
    if not long_form:
        return tag_bytes(tag) + encode_length(len(value)) + value
    if len(value) < 0x100:
        return tag_bytes(tag) + bytes([0x81, len(value)]) + value
    return tag_bytes(tag) + b"\x82" + len(value).to_bytes(2, "big") + value


def _record(objects: Sequence[bytes], padded: bool) -> bytes:
    # Book 3, Annex B1: '00' bytes may stand between objects (ISO 7816-4 padding).
    value = (b"\x00" if padded else b"").join(objects)
    if padded:
        return bytes([RECORD_TEMPLATE]) + b"\x82" + len(value).to_bytes(2, "big") + value
    return encode_object(RECORD_TEMPLATE, value)


def pack_records(objects: Iterable[bytes], *, padded: bool = False) -> list[bytes]:
    """Fill records in order with encoded objects, each record at most MAX_RECORD_VALUE long."""
    out: list[list[bytes]] = []
    size = 0
    for obj in objects:
        extra = len(obj) + (1 if padded and out and out[-1] else 0)
        if len(obj) > MAX_RECORD_VALUE:
            raise RecordsError(f"object of {len(obj)} bytes does not fit one record")
        if not out or size + extra > MAX_RECORD_VALUE:
            out.append([obj])
            size = len(obj)
        else:
            out[-1].append(obj)
            size += extra
    return [_record(group, padded) for group in out]


def static_data_to_authenticate(records: Mapping[tuple[int, int], bytes], afl: bytes, aip: bytes,
                                sda_tag_list: bytes | None) -> bytes:
    """Book 3, 10.3: the ODA records named by the AFL, then the AIP if 9F4A lists it.

    Records of SFI 1 to 10 contribute the value of their '70' template; records of SFI 11 to 30
    the whole record. `sda_tag_list` other than '82' (or absent) adds nothing.
    """
    out = bytearray()
    for pos in range(0, len(afl), 4):
        sfi, first, _last, oda_count = afl[pos] >> 3, afl[pos + 1], afl[pos + 2], afl[pos + 3]
        for number in range(first, first + oda_count):
            record = records[(sfi, number)]
            if sfi <= 10:
                out += _template_value(record)
            else:
                out += record
    if sda_tag_list == b"\x82":
        out += aip
    return bytes(out)


def _template_value(record: bytes) -> bytes:
    if len(record) < 2 or record[0] != RECORD_TEMPLATE:
        raise RecordsError("record is not a '70' template")
    first = record[1]
    if first < 0x80:
        return record[2:2 + first]
    count = first & 0x7F
    length = int.from_bytes(record[2:2 + count], "big")
    return record[2 + count:2 + count + length]


def _bcd_padded(digits: str) -> bytes:
    return bytes.fromhex(digits + ("F" if len(digits) % 2 else ""))


def track2_equivalent(app: Application) -> bytes:
    """57: PAN, separator 'D', YYMM, service code, discretionary data, 'F' pad (Book 3, Annex A)."""
    return _bcd_padded(app.pan + "D" + app.expiry[:4] + app.service_code + "0000000000")


def _signed_objects(app: Application) -> list[tuple[int, bytes]]:
    items: list[tuple[int, bytes]] = [
        (0x5A, _bcd_padded(app.pan)),
        (0x5F34, bytes.fromhex(app.psn)),
        (0x5F24, bytes.fromhex(app.expiry)),
    ]
    if app.effective:
        items.append((0x5F25, bytes.fromhex(app.effective)))
    items += [
        (0x5F28, bytes.fromhex(app.issuer_country.zfill(4))),
        (0x5F30, bytes.fromhex(app.service_code.zfill(4))),
        (0x9F07, app.usage_control),
        (0x9F08, app.version),
        (0x9F42, bytes.fromhex(app.currency.zfill(4))),
        (0x9F44, bytes([app.currency_exponent])),
        (0x9F0D, app.iac_default),
        (0x9F0E, app.iac_denial),
        (0x9F0F, app.iac_online),
        (0x8E, app.cvm_list),
        (0x8C, app.cdol1),
        (0x8D, app.cdol2),
    ]
    if app.oda in ("dda", "cda"):
        items.append((0x9F49, app.ddol))
    if app.risk.upper_consecutive_offline_limit > 0:
        # Book 3, 10.6.3: limits the terminal's velocity checking reads (same as the card's).
        items.append((0x9F14, bytes([app.risk.lower_consecutive_offline_limit])))
        items.append((0x9F23, bytes([app.risk.upper_consecutive_offline_limit])))
    if app.oda != "none" and app.aip_in_static_data:
        items.append((0x9F4A, b"\x82"))
    return items


def _unsigned_objects(app: Application) -> list[tuple[int, bytes]]:
    return [
        (0x57, track2_equivalent(app)),
        (0x5F20, app.cardholder_name.encode("ascii")),
        *app.extra_data,
    ]


def _corrupted(value: bytes) -> bytes:
    middle = len(value) // 2
    return value[:middle] + bytes([value[middle] ^ 0xFF]) + value[middle + 1:]


def _oda_objects(app: Application, static_data: bytes) -> list[tuple[int, bytes]]:
    if app.oda == "none" and app.icc_pin_key is None:
        return []
    if app.issuer_key is None:
        raise RecordsError("issuer_key is needed for offline data authentication")
    try:
        ca = _ca_key(app.rid, app.ca_index)
        issuer = cached_key(app.issuer_key)
        issuer_cert = pki.issuer_certificate(
            ca, issuer, issuer_id=pki.issuer_identifier(app.pan),
            expiry=bytes.fromhex(app.issuer_cert_expiry), serial=app.issuer_cert_serial)
        items: list[tuple[int, bytes]] = [(0x8F, bytes([app.ca_index]))]
        cert90 = issuer_cert.certificate
        if "issuer_certificate" in app.corrupt:
            cert90 = _corrupted(cert90)
        items.append((0x90, cert90))
        if issuer_cert.remainder:
            items.append((0x92, issuer_cert.remainder))
        items.append((0x9F32, issuer_cert.exponent))
        pan10 = pki.pan_field(app.pan)
        icc_expiry = bytes.fromhex(app.icc_cert_expiry)
        if app.oda == "sda":
            ssad = pki.sign_static_data(issuer, data_auth_code=app.data_auth_code, static_data=static_data)
            if "ssad" in app.corrupt:
                ssad = _corrupted(ssad)
            items.append((0x93, ssad))
        if app.oda in ("dda", "cda"):
            icc = cached_key(app.icc_key or "")
            icc_cert = pki.icc_certificate(issuer, icc, pan=pan10, expiry=icc_expiry,
                                           serial=app.icc_cert_serial, static_data=static_data)
            cert = icc_cert.certificate
            if "icc_certificate" in app.corrupt:
                cert = _corrupted(cert)
            items.append((0x9F46, cert))
            items.append((0x9F47, icc_cert.exponent))
            if icc_cert.remainder:
                items.append((0x9F48, icc_cert.remainder))
        if app.icc_pin_key is not None:
            pin_key = cached_key(app.icc_pin_key)
            pin_cert = pki.icc_pin_certificate(issuer, pin_key, pan=pan10, expiry=icc_expiry,
                                               serial=app.icc_cert_serial)
            items.append((0x9F2D, pin_cert.certificate))
            items.append((0x9F2E, pin_cert.exponent))
            if pin_cert.remainder:
                items.append((0x9F2F, pin_cert.remainder))
    except pki.PkiError as exc:
        raise RecordsError(f"certificates: {exc}") from None
    return items


def fci(app: Application) -> bytes:
    """FCI of an ADF: 6F { 84, A5 { 50, 87, 9F38, 5F2D, 9F11, 9F12, BF0C } } (Book 1, 11.3.4)."""
    inner = [encode_object(0x50, app.label.encode("ascii"))]
    if app.priority is not None:
        inner.append(encode_object(0x87, bytes([app.priority])))
    if app.pdol:
        inner.append(encode_object(0x9F38, app.pdol))
    if app.language:
        inner.append(encode_object(0x5F2D, app.language.encode("ascii")))
    if app.code_table is not None:
        inner.append(encode_object(0x9F11, bytes([app.code_table])))
    if app.preferred_name:
        inner.append(encode_object(0x9F12, app.preferred_name.encode("ascii")))
    if app.fci_discretionary:
        inner.append(encode_object(0xBF0C, app.fci_discretionary))
    body = encode_object(0x84, app.aid) + encode_object(0xA5, b"".join(inner))
    return encode_object(0x6F, body)


def pse_fci(sfi: int, language: str | None) -> bytes:
    """FCI of the PSE: 6F { 84 '1PAY.SYS.DDF01', A5 { 88 SFI, 5F2D } } (Book 1, 12.2.2)."""
    inner = encode_object(0x88, bytes([sfi]))
    if language:
        inner += encode_object(0x5F2D, language.encode("ascii"))
    return encode_object(0x6F, encode_object(0x84, PSE_NAME) + encode_object(0xA5, inner))


def pse_records(apps: Sequence[Application]) -> dict[int, bytes]:
    """Directory records of the PSE, one entry '61' per record (Book 1, 12.2.3, Table 12-3)."""
    out: dict[int, bytes] = {}
    for number, app in enumerate(apps, start=1):
        entry = encode_object(0x4F, app.aid) + encode_object(0x50, app.label.encode("ascii"))
        if app.preferred_name:
            entry += encode_object(0x9F12, app.preferred_name.encode("ascii"))
        if app.priority is not None:
            entry += encode_object(0x87, bytes([app.priority]))
        out[number] = encode_object(RECORD_TEMPLATE, encode_object(0x61, entry))
    return out


def build_image(app: Application) -> CardImage:
    """Records, AFL, static data and certificates of one application (see the module doc)."""
    long_form = app.layout == "padded_long_form"

    def encode_all(items: Iterable[tuple[int, bytes]]) -> list[bytes]:
        return [encode_object(tag, value, long_form=long_form) for tag, value in items]

    signed = pack_records(encode_all(_signed_objects(app)), padded=long_form)
    unsigned = pack_records(encode_all(_unsigned_objects(app)), padded=long_form)
    records: dict[tuple[int, int], bytes] = {}
    for number, record in enumerate([*signed, *unsigned], start=1):
        records[(app.data_sfi, number)] = record
    afl = bytes([app.data_sfi << 3, 1, len(signed) + len(unsigned), len(signed)])
    aip = app.aip
    sda_tag_list = b"\x82" if app.oda != "none" and app.aip_in_static_data else None
    static_data = static_data_to_authenticate(records, afl, aip, sda_tag_list)
    oda = _oda_objects(app, static_data)
    if oda:
        for number, record in enumerate(pack_records(encode_all(oda), padded=long_form), start=1):
            records[(app.oda_sfi, number)] = record
        count = sum(1 for sfi, _ in records if sfi == app.oda_sfi)
        afl += bytes([app.oda_sfi << 3, 1, count, 0])
    for record in records.values():
        if len(record) > 256:
            raise RecordsError("a record exceeds 256 bytes")
    return CardImage(aip=aip, afl=afl, records=records, static_data=static_data, fci=fci(app))
