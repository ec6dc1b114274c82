"""Certificate and signature recovery on the terminal side (emv/certificates.py), EMV 4.4 Book 2.

Round trips sign with the simulator (sim/card/pki.py) and recover with the kernel. Tampering
cases build the recovered block by hand here (Book 2 Tables 6, 7, 14, 17, with hashlib) and sign
it with a plain `pow`, so each Book 2 check is reached with a validly signed block whose only
fault is the one under test.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emv.capk import CaPublicKey, load_capks
from emv.certificates import (
    CertificateError,
    IccPublicKey,
    IssuerPublicKey,
    SignedDynamicData,
    Step,
    recover_icc_key,
    recover_icc_pin_key,
    recover_issuer_key,
    verify_sdad,
    verify_ssad,
)
from sim.card import pki
from sim.card.pki import RsaKey

PAN = "4761739001010010"
TODAY = date(2025, 6, 15)
EXPIRY = bytes.fromhex("1230")  # December 2030
STATIC = bytes.fromhex("5A084761739001010010" "5F24033012319F0702FF00" "8202" "3900")
RID_VISA = bytes.fromhex("A000000003")

# Steps a garbled (wrongly keyed or corrupted) block can fail at before any field is trusted.
EARLY_STEPS = {Step.TRAILER, Step.HEADER, Step.FORMAT, Step.HASH_ALGORITHM, Step.HASH, Step.DYNAMIC_DATA}


@pytest.fixture(scope="module")
def capks() -> dict[tuple[bytes, int], CaPublicKey]:
    return load_capks(pki.CA_KEYS_TOML.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def capk(capks: dict[tuple[bytes, int], CaPublicKey]) -> CaPublicKey:
    return capks[(RID_VISA, 0xF0)]


@pytest.fixture(scope="module")
def ca() -> RsaKey:
    return pki.load_key("ca_visa_f0")


@pytest.fixture(scope="module")
def issuer() -> RsaKey:
    return pki.load_key("issuer_visa")


@pytest.fixture(scope="module")
def icc() -> RsaKey:
    return pki.load_key("icc_1")


@pytest.fixture(scope="module")
def issuer_key(capk: CaPublicKey, ca: RsaKey, issuer: RsaKey) -> IssuerPublicKey:
    cert = pki.issuer_certificate(ca, issuer, issuer_id=pki.issuer_identifier(PAN), expiry=EXPIRY,
                                  serial=b"\x00\x00\x01")
    return recover_issuer_key(capk, cert.certificate, cert.remainder, cert.exponent, pan=PAN, today=TODAY)


@pytest.fixture(scope="module")
def icc_key(issuer_key: IssuerPublicKey, issuer: RsaKey, icc: RsaKey) -> IccPublicKey:
    cert = pki.icc_certificate(issuer, icc, pan=pki.pan_field(PAN), expiry=EXPIRY, serial=b"\x00\x00\x02",
                               static_data=STATIC)
    return recover_icc_key(issuer_key, cert.certificate, cert.remainder, cert.exponent, static_data=STATIC,
                           pan=PAN, today=TODAY)


def sign(key: RsaKey, block: bytes) -> bytes:
    assert len(block) == key.size
    return pow(int.from_bytes(block, "big"), key.d, key.n).to_bytes(key.size, "big")


def with_hash(header: int, fields: bytes, hashed_after: bytes, trailer: int = 0xBC) -> bytes:
    """header || fields || SHA-1(fields || hashed_after) || trailer (Book 2, Annex A2.1)."""
    return bytes([header]) + fields + hashlib.sha1(fields + hashed_after).digest() + bytes([trailer])


def issuer_block(ca: RsaKey, issuer: RsaKey, *, header: int = 0x6A, fmt: int = 0x02,
                 issuer_id: bytes = bytes.fromhex("476173FF"), expiry: bytes = EXPIRY,
                 serial: bytes = b"\x00\x00\x07", hash_algo: int = 1, pk_algo: int = 1,
                 key_length: int | None = None, exponent_length: int | None = None,
                 remainder: bytes | None = None, exponent: bytes | None = None,
                 trailer: int = 0xBC) -> tuple[bytes, bytes, bytes]:
    """A Table 6 block, written independently of sim/card/pki.py; returns (90, 92, 9F32)."""
    room = ca.size - 36
    modulus = issuer.modulus
    leftmost = modulus[:room].ljust(room, b"\xbb")
    remainder = modulus[room:] if remainder is None else remainder
    exponent = issuer.exponent if exponent is None else exponent
    fields = (bytes([fmt]) + issuer_id + expiry + serial
              + bytes([hash_algo, pk_algo,
                       issuer.size if key_length is None else key_length,
                       len(exponent) if exponent_length is None else exponent_length])
              + leftmost)
    block = with_hash(header, fields, remainder + exponent, trailer)
    return sign(ca, block), remainder, exponent


def recover(capk: CaPublicKey, parts: tuple[bytes, bytes, bytes], *, pan: str = PAN,
            today: date = TODAY) -> IssuerPublicKey:
    return recover_issuer_key(capk, *parts, pan=pan, today=today)


def step_of(call: Callable[[], object]) -> Step:
    with pytest.raises(CertificateError) as info:
        call()
    return info.value.step


# --- Issuer Public Key (Book 2, 5.3) -----------------------------------------------------------


def test_issuer_key_round_trip(capk: CaPublicKey, ca: RsaKey, issuer: RsaKey) -> None:
    cert = pki.issuer_certificate(ca, issuer, issuer_id=pki.issuer_identifier(PAN, 8), expiry=EXPIRY,
                                  serial=b"\x12\x34\x56")
    key = recover_issuer_key(capk, cert.certificate, cert.remainder, cert.exponent, pan=PAN, today=TODAY)
    assert key.modulus == issuer.modulus and key.exponent == issuer.exponent
    assert key.serial == b"\x12\x34\x56" and key.expiry == EXPIRY
    assert key.issuer_identifier == bytes.fromhex(PAN[:8])
    assert "4761739" not in repr(key)


def test_issuer_key_round_trip_under_every_published_ca(capks: dict[tuple[bytes, int], CaPublicKey]) -> None:
    issuers = {"ca_sim_92": "issuer_visa", "ca_visa_f0": "issuer_visa", "ca_mc_f2": "issuer_mc",
               "ca_cb_f4": "issuer_cb"}
    for entry in pki.CA_KEYS:
        ca, issuer = pki.load_key(entry.name), pki.load_key(issuers[entry.name])
        cert = pki.issuer_certificate(ca, issuer, issuer_id=pki.issuer_identifier(PAN), expiry=EXPIRY,
                                      serial=b"\x00\x00\x01")
        key = recover_issuer_key(capks[(entry.rid, entry.index)], cert.certificate, cert.remainder,
                                 cert.exponent, pan=PAN, today=TODAY)
        assert key.modulus == issuer.modulus


def test_issuer_key_without_remainder(capk: CaPublicKey, ca: RsaKey) -> None:
    small = RsaKey.from_private_key(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    cert = pki.issuer_certificate(ca, small, issuer_id=pki.issuer_identifier(PAN), expiry=EXPIRY,
                                  serial=b"\x00\x00\x01")
    assert cert.remainder == b""
    for remainder in (b"", None):
        key = recover_issuer_key(capk, cert.certificate, remainder, cert.exponent, pan=PAN, today=TODAY)
        assert key.modulus == small.modulus and key.exponent == b"\x01\x00\x01"
    # A stray remainder is hashed too (5.3 step 5), so the certificate no longer verifies.
    assert step_of(lambda: recover_issuer_key(capk, cert.certificate, b"\x01", cert.exponent, pan=PAN,
                                              today=TODAY)) == Step.HASH


def test_hand_built_issuer_block_recovers(capk: CaPublicKey, ca: RsaKey, issuer: RsaKey) -> None:
    key = recover(capk, issuer_block(ca, issuer))
    assert key.modulus == issuer.modulus


@pytest.mark.parametrize(("changes", "step"), [
    ({"header": 0x6B}, Step.HEADER),
    ({"trailer": 0xBD}, Step.TRAILER),
    ({"fmt": 0x04}, Step.FORMAT),
    ({"hash_algo": 0x02}, Step.HASH_ALGORITHM),
    ({"issuer_id": bytes.fromhex("476174FF")}, Step.PAN_MISMATCH),
    ({"issuer_id": bytes.fromhex("47FFFFFF")}, Step.PAN_MISMATCH),  # fewer than 3 digits
    ({"issuer_id": bytes.fromhex("47F173FF")}, Step.PAN_MISMATCH),  # 'F' inside the digits
    ({"expiry": bytes.fromhex("0525")}, Step.EXPIRED),
    ({"expiry": bytes.fromhex("1325")}, Step.EXPIRY_FORMAT),
    ({"expiry": bytes.fromhex("0A30")}, Step.EXPIRY_FORMAT),
    ({"expiry": bytes.fromhex("0030")}, Step.EXPIRY_FORMAT),
    ({"pk_algo": 0x02}, Step.KEY_ALGORITHM),
    ({"key_length": 177}, Step.KEY_LENGTH),
    ({"key_length": 0}, Step.KEY_LENGTH),
    ({"remainder": b"\x01\x02\x03"}, Step.REMAINDER),
    ({"remainder": b""}, Step.REMAINDER),
    ({"exponent_length": 3}, Step.EXPONENT),
    ({"exponent": b"\x05"}, Step.EXPONENT),
])
def test_issuer_block_fails_at_the_right_step(capk: CaPublicKey, ca: RsaKey, issuer: RsaKey,
                                              changes: dict[str, object], step: Step) -> None:
    parts = issuer_block(ca, issuer, **changes)  # type: ignore[arg-type]
    assert step_of(lambda: recover(capk, parts)) == step


def test_issuer_remainder_present_when_key_fits(capk: CaPublicKey, ca: RsaKey) -> None:
    small = RsaKey.from_private_key(rsa.generate_private_key(public_exponent=3, key_size=1024))
    parts = issuer_block(ca, small, remainder=b"\x00")
    assert step_of(lambda: recover(capk, parts)) == Step.REMAINDER


# Offsets into Table 6: 2-5 issuer id, 6-7 expiry, 8-10 serial, 11 hash alg, 12 pk alg,
# 13 key length, 14 exponent length, 15.. key, then hash. Changing any signed field without
# fixing the hash must fail at "hash" (or earlier for the fields checked before it).
@pytest.mark.parametrize(("offset", "step"), [
    (0, Step.HEADER), (1, Step.FORMAT), (2, Step.HASH), (5, Step.HASH), (6, Step.HASH), (9, Step.HASH),
    (11, Step.HASH_ALGORITHM), (12, Step.HASH), (13, Step.HASH), (14, Step.HASH), (15, Step.HASH),
    (100, Step.HASH), (-21, Step.HASH), (-2, Step.HASH), (-1, Step.TRAILER),
])
def test_flipping_a_byte_of_each_issuer_field(capk: CaPublicKey, ca: RsaKey, issuer: RsaKey, offset: int,
                                             step: Step) -> None:
    cert = pki.issuer_certificate(ca, issuer, issuer_id=pki.issuer_identifier(PAN), expiry=EXPIRY,
                                  serial=b"\x00\x00\x01")
    block = bytearray(ca.public_op(cert.certificate))
    block[offset] ^= 0x01
    tampered = sign(ca, bytes(block))
    assert step_of(lambda: recover_issuer_key(capk, tampered, cert.remainder, cert.exponent, pan=PAN,
                                              today=TODAY)) == step


def test_issuer_remainder_and_exponent_are_covered_by_the_hash(capk: CaPublicKey, ca: RsaKey,
                                                               issuer: RsaKey) -> None:
    cert = pki.issuer_certificate(ca, issuer, issuer_id=pki.issuer_identifier(PAN), expiry=EXPIRY,
                                  serial=b"\x00\x00\x01")
    bad_remainder = bytes([cert.remainder[0] ^ 0x80]) + cert.remainder[1:]
    for remainder, exponent in ((bad_remainder, cert.exponent), (cert.remainder[:-1], cert.exponent),
                                (b"", cert.exponent), (cert.remainder, b"\x01\x00\x01")):
        assert step_of(lambda r=remainder, e=exponent: recover_issuer_key(
            capk, cert.certificate, r, e, pan=PAN, today=TODAY)) == Step.HASH


def test_issuer_certificate_ciphertext_corruption_and_wrong_ca(capks: dict[tuple[bytes, int], CaPublicKey],
                                                               capk: CaPublicKey, ca: RsaKey,
                                                               issuer: RsaKey) -> None:
    cert = pki.issuer_certificate(ca, issuer, issuer_id=pki.issuer_identifier(PAN), expiry=EXPIRY,
                                  serial=b"\x00\x00\x01")
    corrupted = bytes([cert.certificate[0] ^ 0x01]) + cert.certificate[1:]
    assert step_of(lambda: recover_issuer_key(capk, corrupted, cert.remainder, cert.exponent, pan=PAN,
                                              today=TODAY)) in EARLY_STEPS
    other = capks[(bytes.fromhex("A000000004"), 0xF2)]
    assert step_of(lambda: recover_issuer_key(other, cert.certificate, cert.remainder, cert.exponent, pan=PAN,
                                              today=TODAY)) in EARLY_STEPS


def test_issuer_certificate_length_must_equal_ca_modulus(capk: CaPublicKey, ca: RsaKey,
                                                         issuer: RsaKey) -> None:
    cert = pki.issuer_certificate(ca, issuer, issuer_id=pki.issuer_identifier(PAN), expiry=EXPIRY,
                                  serial=b"\x00\x00\x01")
    for data in (cert.certificate[:-1], cert.certificate + b"\x00", b""):
        assert step_of(lambda d=data: recover_issuer_key(capk, d, cert.remainder, cert.exponent, pan=PAN,
                                                         today=TODAY)) == Step.LENGTH
    too_big = b"\xff" * len(capk.modulus)
    assert step_of(lambda: recover_issuer_key(capk, too_big, cert.remainder, cert.exponent, pan=PAN,
                                              today=TODAY)) == Step.LENGTH


def test_issuer_pan_checks(capk: CaPublicKey, ca: RsaKey, issuer: RsaKey) -> None:
    parts = issuer_block(ca, issuer)
    for pan in ("5413330089020011", "4761", "476", "", "47617x9001010010", "٤761739001010010"):
        assert step_of(lambda p=pan: recover(capk, parts, pan=p)) == Step.PAN_MISMATCH
    assert recover(capk, parts, pan="476173").issuer_identifier == bytes.fromhex("476173FF")


def test_issuer_expiry_is_the_last_day_of_the_month(capk: CaPublicKey, ca: RsaKey, issuer: RsaKey) -> None:
    december = issuer_block(ca, issuer, expiry=bytes.fromhex("1224"))
    recover(capk, december, today=date(2024, 12, 31))
    assert step_of(lambda: recover(capk, december, today=date(2025, 1, 1))) == Step.EXPIRED
    leap = issuer_block(ca, issuer, expiry=bytes.fromhex("0224"))
    recover(capk, leap, today=date(2024, 2, 29))
    assert step_of(lambda: recover(capk, leap, today=date(2024, 3, 1))) == Step.EXPIRED
    # Two-digit years: 49 is 2049, 50 is 1950.
    recover(capk, issuer_block(ca, issuer, expiry=bytes.fromhex("0149")), today=date(2049, 1, 31))
    old = issuer_block(ca, issuer, expiry=bytes.fromhex("1250"))
    assert step_of(lambda: recover(capk, old, today=date(2000, 1, 1))) == Step.EXPIRED


def test_issuer_revocation_list(capk: CaPublicKey, ca: RsaKey, issuer: RsaKey) -> None:
    parts = issuer_block(ca, issuer, serial=b"\x00\x00\x07")
    revoked = {(capk.rid, capk.index, b"\x00\x00\x07")}
    assert step_of(lambda: recover_issuer_key(capk, *parts, pan=PAN, today=TODAY,
                                              revoked=revoked)) == Step.REVOKED
    recover_issuer_key(capk, *parts, pan=PAN, today=TODAY, revoked={(capk.rid, 0x01, b"\x00\x00\x07")})


def test_error_message_holds_no_pan(capk: CaPublicKey, ca: RsaKey, issuer: RsaKey) -> None:
    parts = issuer_block(ca, issuer, issuer_id=bytes.fromhex("99999999"))
    with pytest.raises(CertificateError) as info:
        recover(capk, parts)
    assert info.value.certificate == "issuer" and info.value.step == "pan_mismatch"
    assert "4761" not in str(info.value) and "9999" not in str(info.value)


# --- ICC Public Key (Book 2, 6.4) and ICC PIN Encipherment key (7.1) -------------------------


def icc_block(issuer: RsaKey, icc: RsaKey, *, pan: bytes | None = None, expiry: bytes = EXPIRY,
              pk_algo: int = 1, fmt: int = 0x04, static_data: bytes = STATIC) -> bytes:
    """A Table 14 block written independently of sim/card/pki.py."""
    room = issuer.size - 42
    fields = (bytes([fmt]) + (pan or bytes.fromhex(PAN + "FFFF")) + expiry + b"\x00\x00\x03"
              + bytes([1, pk_algo, icc.size, len(icc.exponent)]) + icc.modulus[:room])
    return sign(issuer, with_hash(0x6A, fields, icc.modulus[room:] + icc.exponent + static_data))


def test_icc_key_round_trip(icc_key: IccPublicKey, icc: RsaKey) -> None:
    assert icc_key.modulus == icc.modulus and icc_key.exponent == b"\x03"
    assert icc_key.pan == bytes.fromhex(PAN + "FFFF")
    assert PAN not in repr(icc_key) and "4761" not in repr(icc_key)


def test_hand_built_icc_block(issuer_key: IssuerPublicKey, issuer: RsaKey, icc: RsaKey) -> None:
    room = issuer.size - 42
    key = recover_icc_key(issuer_key, icc_block(issuer, icc), icc.modulus[room:], icc.exponent,
                          static_data=STATIC, pan=PAN, today=TODAY)
    assert key.modulus == icc.modulus


@pytest.mark.parametrize(("changes", "step"), [
    ({"fmt": 0x02}, Step.FORMAT),
    ({"pan": bytes.fromhex("4761739001010011FFFF")}, Step.PAN_MISMATCH),
    ({"pan": bytes.fromhex("476173900101001FFFFF")}, Step.PAN_MISMATCH),
    ({"expiry": bytes.fromhex("0525")}, Step.EXPIRED),
    ({"expiry": bytes.fromhex("2025")}, Step.EXPIRY_FORMAT),
    ({"pk_algo": 0x09}, Step.KEY_ALGORITHM),
])
def test_icc_block_fails_at_the_right_step(issuer_key: IssuerPublicKey, issuer: RsaKey, icc: RsaKey,
                                           changes: dict[str, object], step: Step) -> None:
    cert = icc_block(issuer, icc, **changes)  # type: ignore[arg-type]
    room = issuer.size - 42
    assert step_of(lambda: recover_icc_key(issuer_key, cert, icc.modulus[room:], icc.exponent,
                                           static_data=STATIC, pan=PAN, today=TODAY)) == step


def test_icc_key_tampering(issuer_key: IssuerPublicKey, issuer: RsaKey, icc: RsaKey) -> None:
    cert = pki.icc_certificate(issuer, icc, pan=pki.pan_field(PAN), expiry=EXPIRY, serial=b"\x00\x00\x02",
                               static_data=STATIC)

    def attempt(certificate: bytes = cert.certificate, remainder: bytes = cert.remainder,
                exponent: bytes = cert.exponent, static_data: bytes = STATIC, pan: str = PAN,
                today: date = TODAY) -> Step:
        return step_of(lambda: recover_icc_key(issuer_key, certificate, remainder, exponent,
                                               static_data=static_data, pan=pan, today=today))

    assert attempt(static_data=STATIC[:-1] + b"\x01") == Step.HASH
    assert attempt(static_data=b"") == Step.HASH
    assert attempt(remainder=cert.remainder[:-1] + b"\x00") == Step.HASH
    assert attempt(remainder=b"") == Step.HASH
    assert attempt(exponent=b"\x01\x00\x01") == Step.HASH
    assert attempt(pan="4761739001010011") == Step.PAN_MISMATCH
    assert attempt(pan="476173900101001") == Step.PAN_MISMATCH
    assert attempt(today=date(2031, 1, 1)) == Step.EXPIRED
    assert attempt(certificate=cert.certificate[1:]) == Step.LENGTH
    block = bytearray(issuer.public_op(cert.certificate))
    block[30] ^= 0x40  # inside the key digits
    assert attempt(certificate=sign(issuer, bytes(block))) == Step.HASH


def test_icc_certificate_under_the_wrong_issuer_key(capks: dict[tuple[bytes, int], CaPublicKey],
                                                    issuer: RsaKey, icc: RsaKey) -> None:
    mc_ca, mc_issuer = pki.load_key("ca_mc_f2"), pki.load_key("issuer_mc")
    mc_cert = pki.issuer_certificate(mc_ca, mc_issuer, issuer_id=pki.issuer_identifier(PAN), expiry=EXPIRY,
                                     serial=b"\x00\x00\x01")
    mc_key = recover_issuer_key(capks[(bytes.fromhex("A000000004"), 0xF2)], mc_cert.certificate,
                                mc_cert.remainder, mc_cert.exponent, pan=PAN, today=TODAY)
    cert = pki.icc_certificate(issuer, icc, pan=pki.pan_field(PAN), expiry=EXPIRY, serial=b"\x00\x00\x02",
                               static_data=STATIC)
    assert step_of(lambda: recover_icc_key(mc_key, cert.certificate, cert.remainder, cert.exponent,
                                           static_data=STATIC, pan=PAN, today=TODAY)) in EARLY_STEPS


def test_icc_pin_key_round_trip_and_separation(issuer_key: IssuerPublicKey, issuer: RsaKey,
                                               icc: RsaKey) -> None:
    pin_key = pki.load_key("icc_pin_1")
    cert = pki.icc_pin_certificate(issuer, pin_key, pan=pki.pan_field(PAN), expiry=EXPIRY,
                                   serial=b"\x00\x00\x05")
    key = recover_icc_pin_key(issuer_key, cert.certificate, cert.remainder, cert.exponent, pan=PAN,
                              today=TODAY)
    assert key.modulus == pin_key.modulus and key.exponent == b"\x01\x00\x01"
    with pytest.raises(CertificateError) as info:
        recover_icc_pin_key(issuer_key, cert.certificate, cert.remainder, cert.exponent,
                            pan="5413330089020011", today=TODAY)
    assert (info.value.certificate, info.value.step) == ("icc_pin", Step.PAN_MISMATCH)
    # An ICC certificate (which hashes static data) does not pass as a PIN key certificate.
    icc_cert = pki.icc_certificate(issuer, icc, pan=pki.pan_field(PAN), expiry=EXPIRY,
                                   serial=b"\x00\x00\x02", static_data=STATIC)
    assert step_of(lambda: recover_icc_pin_key(issuer_key, icc_cert.certificate, icc_cert.remainder,
                                               icc_cert.exponent, pan=PAN, today=TODAY)) == Step.HASH


# --- Signed Static Application Data (Book 2, 5.4) --------------------------------------------


def test_ssad_round_trip_returns_data_authentication_code(issuer_key: IssuerPublicKey,
                                                          issuer: RsaKey) -> None:
    ssad = pki.sign_static_data(issuer, data_auth_code=b"\xda\xc0", static_data=STATIC)
    assert verify_ssad(issuer_key, ssad, STATIC) == b"\xda\xc0"


def test_ssad_failures(issuer_key: IssuerPublicKey, issuer: RsaKey) -> None:
    ssad = pki.sign_static_data(issuer, data_auth_code=b"\xda\xc0", static_data=STATIC)
    assert step_of(lambda: verify_ssad(issuer_key, ssad, STATIC + b"\x00")) == Step.HASH
    assert step_of(lambda: verify_ssad(issuer_key, ssad, STATIC[1:])) == Step.HASH
    assert step_of(lambda: verify_ssad(issuer_key, ssad[:-1], STATIC)) == Step.LENGTH
    pad = b"\xbb" * (issuer.size - 26)
    for header, fields, trailer, step in (
        (0x6A, b"\x05\x01\xda\xc0" + pad, 0xBC, Step.FORMAT),
        (0x6A, b"\x03\x02\xda\xc0" + pad, 0xBC, Step.HASH_ALGORITHM),
        (0x00, b"\x03\x01\xda\xc0" + pad, 0xBC, Step.HEADER),
        (0x6A, b"\x03\x01\xda\xc0" + pad, 0xBB, Step.TRAILER),
    ):
        signed = sign(issuer, with_hash(header, fields, STATIC, trailer))
        assert step_of(lambda s=signed: verify_ssad(issuer_key, s, STATIC)) == step
    other = pki.sign_static_data(pki.load_key("issuer_mc"), data_auth_code=b"\xda\xc0", static_data=STATIC)
    assert step_of(lambda: verify_ssad(issuer_key, other, STATIC)) in EARLY_STEPS


# --- Signed Dynamic Application Data: DDA (6.5.2) and CDA (6.6.2) -----------------------------

DDOL_DATA = bytes.fromhex("1A2B3C4D")
UN = bytes.fromhex("0BADCAFE")


def test_dda_round_trip(icc_key: IccPublicKey, icc: RsaKey) -> None:
    sdad = pki.sign_dynamic_data(icc, icc_dynamic_data=pki.dda_dynamic_data(b"\x01\x02\x03\x04\x05"),
                                 terminal_data=DDOL_DATA)
    result = verify_sdad(icc_key, sdad, DDOL_DATA)
    assert result == SignedDynamicData(b"\x01\x02\x03\x04\x05", b"\x05\x01\x02\x03\x04\x05")
    assert result.application_cryptogram is None


def test_dda_fails_when_terminal_or_dynamic_data_change(icc_key: IccPublicKey, icc: RsaKey) -> None:
    sdad = pki.sign_dynamic_data(icc, icc_dynamic_data=pki.dda_dynamic_data(b"\x01\x02"),
                                 terminal_data=DDOL_DATA)
    assert step_of(lambda: verify_sdad(icc_key, sdad, DDOL_DATA[:-1] + b"\x4e")) == Step.HASH
    assert step_of(lambda: verify_sdad(icc_key, sdad, b"")) == Step.HASH
    block = bytearray(icc.public_op(sdad))
    block[5] ^= 0xFF  # second byte of the ICC dynamic number
    assert step_of(lambda: verify_sdad(icc_key, sign(icc, bytes(block)), DDOL_DATA)) == Step.HASH
    other = pki.sign_dynamic_data(pki.load_key("icc_3"), icc_dynamic_data=pki.dda_dynamic_data(b"\x01\x02"),
                                  terminal_data=DDOL_DATA)
    assert step_of(lambda: verify_sdad(icc_key, other, DDOL_DATA)) in EARLY_STEPS


def sdad_block(icc: RsaKey, dynamic_data: bytes, *, declared_length: int | None = None,
               fmt: int = 0x05, terminal_data: bytes = DDOL_DATA) -> bytes:
    """A Table 17 block written independently of sim/card/pki.py."""
    length = len(dynamic_data) if declared_length is None else declared_length
    body = dynamic_data + b"\xbb" * (icc.size - 25 - len(dynamic_data))
    return sign(icc, with_hash(0x6A, bytes([fmt, 0x01, length]) + body, terminal_data))


@pytest.mark.parametrize(("dynamic_data", "declared", "step"), [
    (b"\x04\x01\x02\x03\x04", 104, Step.DYNAMIC_DATA),  # longer than N_IC - 25
    (b"\x01\x01", None, Step.DYNAMIC_DATA),  # dynamic number of 1 byte
    (b"\x09" + bytes(9), None, Step.DYNAMIC_DATA),  # dynamic number of 9 bytes
    (b"\x04\x01\x02", None, Step.DYNAMIC_DATA),  # number runs past the dynamic data
    (b"", None, Step.DYNAMIC_DATA),
])
def test_sdad_malformed_dynamic_data(icc_key: IccPublicKey, icc: RsaKey, dynamic_data: bytes,
                                     declared: int | None, step: Step) -> None:
    signed = sdad_block(icc, dynamic_data, declared_length=declared)
    assert step_of(lambda: verify_sdad(icc_key, signed, DDOL_DATA)) == step


def test_sdad_longest_dynamic_data_and_wrong_format(icc_key: IccPublicKey, icc: RsaKey) -> None:
    longest = b"\x08" + bytes(icc.size - 26)
    assert verify_sdad(icc_key, sdad_block(icc, longest), DDOL_DATA).icc_dynamic_number == bytes(8)
    assert step_of(lambda: verify_sdad(icc_key, sdad_block(icc, b"\x02\x01\x02", fmt=0x03),
                                       DDOL_DATA)) == Step.FORMAT


def cda_signature(icc: RsaKey, *, cid: int = 0x40, transaction_data: bytes = b"pdol|cdol1|response") -> bytes:
    dynamic = pki.cda_dynamic_data(b"\xca\xfe\xba\xbe", cid=cid, cryptogram=bytes.fromhex("1122334455667788"),
                                   transaction_data_hash=hashlib.sha1(transaction_data).digest())
    return pki.sign_dynamic_data(icc, icc_dynamic_data=dynamic, terminal_data=UN)


def test_cda_round_trip(icc_key: IccPublicKey, icc: RsaKey) -> None:
    result = verify_sdad(icc_key, cda_signature(icc), UN, cda=True, cid=0x40,
                         transaction_data=b"pdol|cdol1|response")
    assert result.icc_dynamic_number == b"\xca\xfe\xba\xbe"
    assert result.cryptogram_information_data == 0x40
    assert result.application_cryptogram == bytes.fromhex("1122334455667788")
    assert result.transaction_data_hash == hashlib.sha1(b"pdol|cdol1|response").digest()


def test_cda_failures(icc_key: IccPublicKey, icc: RsaKey) -> None:
    signature = cda_signature(icc)
    assert step_of(lambda: verify_sdad(icc_key, signature, bytes.fromhex("0BADCAFF"), cda=True)) == Step.HASH
    assert step_of(lambda: verify_sdad(icc_key, signature, UN, cda=True, cid=0x80)) == Step.CID_MISMATCH
    assert step_of(lambda: verify_sdad(icc_key, signature, UN, cda=True,
                                       transaction_data=b"pdol|cdol1|respons3")) == Step.TRANSACTION_DATA_HASH
    block = bytearray(icc.public_op(signature))
    block[10] ^= 0x01  # inside the application cryptogram
    assert step_of(lambda: verify_sdad(icc_key, sign(icc, bytes(block)), UN, cda=True)) == Step.HASH
    dda_layout = pki.sign_dynamic_data(icc, icc_dynamic_data=pki.dda_dynamic_data(b"\x01\x02"),
                                       terminal_data=UN)
    assert step_of(lambda: verify_sdad(icc_key, dda_layout, UN, cda=True)) == Step.DYNAMIC_DATA
    # Without cda=True the same signature reads as DDA data: only the dynamic number is parsed.
    assert verify_sdad(icc_key, signature, UN).cryptogram_information_data is None


# --- Any input: a CertificateError or a result, never another exception ---------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(cert=st.binary(max_size=200), remainder=st.none() | st.binary(max_size=40),
       exponent=st.binary(max_size=4), pan=st.text(max_size=20))
def test_any_bytes_as_issuer_certificate(capk: CaPublicKey, cert: bytes, remainder: bytes | None,
                                         exponent: bytes, pan: str) -> None:
    with contextlib.suppress(CertificateError):
        recover_issuer_key(capk, cert, remainder, exponent, pan=pan, today=TODAY)


def mostly(value: object, other: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """`value` about three times in four, else anything `other` draws: reaches the later steps."""
    return st.one_of(st.just(value), st.just(value), st.just(value), other)


@FUZZ
@given(issuer_id=mostly(bytes.fromhex("476173FF"), st.binary(min_size=4, max_size=4)),
       expiry=mostly(EXPIRY, st.binary(min_size=2, max_size=2)),
       algorithms=mostly(b"\x01\x01", st.binary(min_size=2, max_size=2)),
       key_length=mostly(144, st.integers(0, 255)), leftmost=st.binary(min_size=140, max_size=140),
       exponent=mostly(b"\x03", st.sampled_from([b"", b"\x01\x00\x01", b"\x02"])),
       rehash=mostly(True, st.just(False)), data=st.data())
def test_any_validly_signed_issuer_block(capk: CaPublicKey, ca: RsaKey, issuer_id: bytes, expiry: bytes,
                                         algorithms: bytes, key_length: int, leftmost: bytes,
                                         exponent: bytes, rehash: bool, data: st.DataObject) -> None:
    consistent = max(0, key_length - 140)
    remainder = data.draw(mostly(b"\x00" * consistent, st.binary(max_size=40)))
    exponent_length = data.draw(mostly(len(exponent), st.integers(0, 4)))
    fields = (b"\x02" + issuer_id + expiry + b"\x00\x00\x01" + algorithms
              + bytes([key_length, exponent_length]) + leftmost)
    block = (with_hash(0x6A, fields, remainder + exponent) if rehash
             else b"\x6a" + fields + bytes(20) + b"\xbc")
    try:
        key = recover_issuer_key(capk, sign(ca, block), remainder, exponent, pan=PAN, today=TODAY)
    except CertificateError:
        return
    assert rehash
    assert len(key.modulus) == key_length and key.exponent == exponent
    assert key.modulus == (leftmost + remainder)[:key_length]


@FUZZ
@given(cert=st.binary(max_size=160), data=st.binary(max_size=64), pan=st.text(max_size=20))
def test_any_bytes_as_icc_certificate_or_signature(issuer_key: IssuerPublicKey, icc_key: IccPublicKey,
                                                   cert: bytes, data: bytes, pan: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: recover_icc_key(issuer_key, cert, data, b"\x03", static_data=data, pan=pan, today=TODAY),
        lambda: recover_icc_pin_key(issuer_key, cert, None, data, pan=pan, today=TODAY),
        lambda: verify_ssad(issuer_key, cert, data),
        lambda: verify_sdad(icc_key, cert, data),
        lambda: verify_sdad(icc_key, cert, data, cda=True, cid=0x40, transaction_data=data),
    ]
    for call in calls:
        with contextlib.suppress(CertificateError):
            call()


@FUZZ
@given(body=st.binary(min_size=128 - 4, max_size=128 - 4), length=st.integers(0, 255), cda=st.booleans())
def test_any_validly_signed_sdad_block(icc_key: IccPublicKey, icc: RsaKey, body: bytes, length: int,
                                       cda: bool) -> None:
    signed = sign(icc, with_hash(0x6A, bytes([0x05, 0x01, length]) + body[:-21], UN))
    try:
        result = verify_sdad(icc_key, signed, UN, cda=cda)
    except CertificateError as exc:
        assert exc.step in {Step.DYNAMIC_DATA}
        return
    assert 2 <= len(result.icc_dynamic_number) <= 8
    assert (result.application_cryptogram is not None) == cda


@FUZZ
@given(modulus=st.binary(max_size=250), exponent=st.binary(max_size=4), cert=st.binary(max_size=250))
def test_any_key_object(modulus: bytes, exponent: bytes, cert: bytes) -> None:
    key = IccPublicKey(modulus, exponent, b"", b"", b"", 1, 1)
    with contextlib.suppress(CertificateError):
        verify_ssad(key, cert, b"")
    with contextlib.suppress(CertificateError):
        verify_sdad(key, cert, b"", cda=True)
