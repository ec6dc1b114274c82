"""The card simulator's PKI (sim/card/pki.py): keys, and the layout of what it signs.

Layouts are checked against EMV 4.4 Book 2 Tables 6, 7, 14 and 17 by opening the signed blocks
with a plain `pow` and hashing with hashlib here, independently of the code under test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sim.card import make_test_keys, pki
from sim.card.pki import PkiError, RsaKey

PAN = "4761739001010010"
Signer = Callable[[RsaKey, RsaKey, RsaKey], object]


def open_block(key: RsaKey, signed: bytes) -> bytes:
    """Raw RSA public operation written out here, not taken from RsaKey."""
    assert len(signed) == key.size
    return pow(int.from_bytes(signed, "big"), key.e, key.n).to_bytes(key.size, "big")


@pytest.fixture(scope="module")
def ca() -> RsaKey:
    return pki.load_key("ca_visa_f0")


@pytest.fixture(scope="module")
def issuer() -> RsaKey:
    return pki.load_key("issuer_visa")


@pytest.fixture(scope="module")
def icc() -> RsaKey:
    return pki.load_key("icc_2")


@pytest.fixture(scope="module")
def small_issuer() -> RsaKey:
    """A 1024-bit issuer key: fits in a 1408-bit CA certificate without a remainder."""
    return RsaKey.from_private_key(rsa.generate_private_key(public_exponent=3, key_size=1024))


@pytest.mark.parametrize("spec", make_test_keys.KEY_SPECS, ids=lambda s: s.name)
def test_every_test_key_loads_with_its_size_and_exponent(spec: make_test_keys.KeySpec) -> None:
    key = pki.load_key(spec.name)
    assert key.n.bit_length() == spec.bits
    assert key.e == spec.exponent
    assert key.modulus == key.n.to_bytes(spec.bits // 8, "big")
    assert key.exponent == {3: b"\x03", 65537: b"\x01\x00\x01"}[spec.exponent]


@pytest.mark.parametrize("spec", make_test_keys.KEY_SPECS, ids=lambda s: s.name)
def test_every_pem_file_is_marked_as_a_test_key(spec: make_test_keys.KeySpec) -> None:
    text = (pki.KEYS_DIR / f"{spec.name}.pem").read_text(encoding="ascii")
    assert text.splitlines()[0].startswith("# TEST KEY")
    # The key file must also load with cryptography directly (comment lines and all).
    key = serialization.load_pem_private_key(text.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.private_numbers().public_numbers.n == pki.load_key(spec.name).n


def test_keys_readme_says_test_keys() -> None:
    readme = (pki.KEYS_DIR / "README.md").read_text(encoding="utf-8")
    assert "TEST KEY" in readme


def test_ca_keys_toml_is_current_and_rendering_is_deterministic() -> None:
    rendered = make_test_keys.render_ca_keys_toml()
    assert rendered == make_test_keys.render_ca_keys_toml()
    assert pki.CA_KEYS_TOML.read_text(encoding="utf-8") == rendered
    assert make_test_keys.main(["--check"]) == 0


def test_repr_shows_no_key_number(icc: RsaKey) -> None:
    text = repr(icc)
    assert "TEST KEY" in text
    for number in (icc.n, icc.d, icc.p, icc.q):
        assert str(number) not in text
        assert f"{number:x}" not in text.lower()
    assert str(icc.d) not in str(icc)


def test_private_op_matches_plain_pow_and_inverts_public_op(icc: RsaKey) -> None:
    message = bytes([0x6A]) + bytes(range(icc.size - 2)) + bytes([0xBC])
    signed = icc.private_op(message)
    assert int.from_bytes(signed, "big") == pow(int.from_bytes(message, "big"), icc.d, icc.n)
    assert icc.public_op(signed) == message
    assert open_block(icc, signed) == message


@pytest.mark.parametrize("block_length", [0, 127, 129])
def test_raw_rsa_rejects_wrong_lengths(icc: RsaKey, block_length: int) -> None:
    with pytest.raises(PkiError):
        icc.private_op(bytes(block_length))
    with pytest.raises(PkiError):
        icc.public_op(bytes(block_length))


def test_raw_rsa_rejects_a_block_not_below_the_modulus(icc: RsaKey) -> None:
    with pytest.raises(PkiError):
        icc.private_op(b"\xff" * icc.size)


def test_inconsistent_key_numbers_are_rejected(icc: RsaKey) -> None:
    with pytest.raises(PkiError):
        RsaKey(n=icc.n + 2, e=icc.e, d=icc.d, p=icc.p, q=icc.q)
    with pytest.raises(PkiError):
        RsaKey(n=icc.n, e=icc.e, d=icc.d + 1, p=icc.p, q=icc.q)


@pytest.mark.parametrize("name", ["../ca_keys", "ICC_1", "icc-1", "", "nope_not_there"])
def test_load_key_refuses_bad_or_missing_names(name: str) -> None:
    with pytest.raises(PkiError):
        pki.load_key(name)


def test_load_ca_key_by_rid_and_index() -> None:
    assert pki.load_ca_key(bytes.fromhex("A000000999"), 0x92) == pki.load_key("ca_sim_92")
    with pytest.raises(PkiError):
        pki.load_ca_key(bytes.fromhex("A000000003"), 0x01)


def test_issuer_identifier_and_pan_field() -> None:
    assert pki.issuer_identifier(PAN) == bytes.fromhex("476173FF")
    assert pki.issuer_identifier(PAN, 8) == bytes.fromhex("47617390")
    assert pki.issuer_identifier(PAN, 3) == bytes.fromhex("476FFFFF")
    assert pki.pan_field(PAN) == bytes.fromhex("4761739001010010FFFF")
    assert pki.pan_field("5413330089020011") == bytes.fromhex("5413330089020011FFFF")
    for bad in (lambda: pki.issuer_identifier(PAN, 2), lambda: pki.issuer_identifier("47A1739"),
                lambda: pki.pan_field(""), lambda: pki.pan_field("1" * 20), lambda: pki.pan_field("12 4")):
        with pytest.raises(PkiError):
            bad()


def test_issuer_certificate_layout_table_6(ca: RsaKey, issuer: RsaKey) -> None:
    cert = pki.issuer_certificate(ca, issuer, issuer_id=bytes.fromhex("476173FF"),
                                  expiry=bytes.fromhex("1230"), serial=bytes.fromhex("0A0B0C"))
    n_ca, n_i = ca.size, issuer.size
    block = open_block(ca, cert.certificate)
    assert block[0] == 0x6A and block[-1] == 0xBC and block[1] == 0x02
    assert block[2:6] == bytes.fromhex("476173FF")
    assert block[6:8] == bytes.fromhex("1230")
    assert block[8:11] == bytes.fromhex("0A0B0C")
    assert block[11:15] == bytes([0x01, 0x01, n_i, 1])
    leftmost = block[15:15 + n_ca - 36]
    assert leftmost + cert.remainder == issuer.n.to_bytes(n_i, "big")
    assert len(cert.remainder) == n_i - (n_ca - 36)
    assert cert.exponent == b"\x03"
    digest = hashlib.sha1(block[1:15 + n_ca - 36] + cert.remainder + cert.exponent).digest()
    assert block[-21:-1] == digest


def test_issuer_certificate_without_remainder_pads_with_bb(ca: RsaKey, small_issuer: RsaKey) -> None:
    cert = pki.issuer_certificate(ca, small_issuer, issuer_id=bytes.fromhex("476173FF"),
                                  expiry=bytes.fromhex("1230"), serial=b"\x00\x00\x01")
    assert cert.remainder == b""
    block = open_block(ca, cert.certificate)
    field = block[15:15 + ca.size - 36]
    assert field[:small_issuer.size] == small_issuer.modulus
    assert set(field[small_issuer.size:]) == {0xBB}


def test_issuer_certificate_writes_given_indicators(ca: RsaKey, issuer: RsaKey) -> None:
    cert = pki.issuer_certificate(ca, issuer, issuer_id=bytes(4), expiry=bytes(2), serial=bytes(3),
                                  hash_algo=0x02, pk_algo=0x03)
    assert open_block(ca, cert.certificate)[11:13] == b"\x02\x03"


def test_icc_certificate_layout_table_14(issuer: RsaKey, icc: RsaKey) -> None:
    static = b"\x5a\x08" + bytes.fromhex(PAN) + b"\x82\x02\x39\x00"
    cert = pki.icc_certificate(issuer, icc, pan=pki.pan_field(PAN), expiry=bytes.fromhex("0528"),
                               serial=bytes.fromhex("000102"), static_data=static)
    n_i, n_ic = issuer.size, icc.size
    block = open_block(issuer, cert.certificate)
    assert (block[0], block[1], block[-1]) == (0x6A, 0x04, 0xBC)
    assert block[2:12] == pki.pan_field(PAN)
    assert block[12:14] == bytes.fromhex("0528") and block[14:17] == bytes.fromhex("000102")
    assert block[17:21] == bytes([0x01, 0x01, n_ic, 3])
    assert block[21:21 + n_i - 42] + cert.remainder == icc.modulus
    assert cert.exponent == b"\x01\x00\x01"
    digest = hashlib.sha1(block[1:21 + n_i - 42] + cert.remainder + cert.exponent + static).digest()
    assert block[-21:-1] == digest


def test_icc_pin_certificate_hashes_no_static_data(issuer: RsaKey) -> None:
    pin_key = pki.load_key("icc_pin_1")
    cert = pki.icc_pin_certificate(issuer, pin_key, pan=pki.pan_field(PAN), expiry=bytes.fromhex("0528"),
                                   serial=b"\x00\x00\x09")
    block = open_block(issuer, cert.certificate)
    assert block[1] == 0x04
    digest = hashlib.sha1(block[1:-21] + cert.remainder + cert.exponent).digest()
    assert block[-21:-1] == digest


def test_signed_static_data_layout_table_7(issuer: RsaKey) -> None:
    ssad = pki.sign_static_data(issuer, data_auth_code=b"\xda\xc1", static_data=b"records")
    block = open_block(issuer, ssad)
    assert block[:5] == b"\x6a\x03\x01\xda\xc1" and block[-1] == 0xBC
    assert set(block[5:-21]) == {0xBB} and len(block[5:-21]) == issuer.size - 26
    assert block[-21:-1] == hashlib.sha1(block[1:-21] + b"records").digest()


def test_signed_dynamic_data_layout_table_17(icc: RsaKey) -> None:
    dynamic = pki.dda_dynamic_data(b"\x12\x34\x56\x78")
    assert dynamic == b"\x04\x12\x34\x56\x78"
    sdad = pki.sign_dynamic_data(icc, icc_dynamic_data=dynamic, terminal_data=b"\x01\x02\x03\x04")
    block = open_block(icc, sdad)
    assert block[:4] == bytes([0x6A, 0x05, 0x01, len(dynamic)])
    assert block[4:4 + len(dynamic)] == dynamic
    assert set(block[4 + len(dynamic):-21]) == {0xBB}
    assert block[-21:-1] == hashlib.sha1(block[1:-21] + b"\x01\x02\x03\x04").digest()


def test_cda_dynamic_data_table_19() -> None:
    data = pki.cda_dynamic_data(b"\xaa" * 8, cid=0x80, cryptogram=b"\x11" * 8,
                                transaction_data_hash=b"\x22" * 20)
    assert data == b"\x08" + b"\xaa" * 8 + b"\x80" + b"\x11" * 8 + b"\x22" * 20


_NOT_FITTING: dict[str, Signer] = {
    "issuer id 3 bytes": lambda ca, iss, icc: pki.issuer_certificate(
        ca, iss, issuer_id=bytes(3), expiry=bytes(2), serial=bytes(3)),
    "expiry 3 bytes": lambda ca, iss, icc: pki.issuer_certificate(
        ca, iss, issuer_id=bytes(4), expiry=bytes(3), serial=bytes(3)),
    "serial 2 bytes": lambda ca, iss, icc: pki.issuer_certificate(
        ca, iss, issuer_id=bytes(4), expiry=bytes(2), serial=bytes(2)),
    "hash indicator 256": lambda ca, iss, icc: pki.issuer_certificate(
        ca, iss, issuer_id=bytes(4), expiry=bytes(2), serial=bytes(3), hash_algo=256),
    "issuer longer than CA": lambda ca, iss, icc: pki.issuer_certificate(
        iss, ca, issuer_id=bytes(4), expiry=bytes(2), serial=bytes(3)),
    "PAN 8 bytes": lambda ca, iss, icc: pki.icc_certificate(
        iss, icc, pan=bytes(8), expiry=bytes(2), serial=bytes(3), static_data=b""),
    "ICC longer than issuer": lambda ca, iss, icc: pki.icc_certificate(
        icc, iss, pan=bytes(10), expiry=bytes(2), serial=bytes(3), static_data=b""),
    "DAC 1 byte": lambda ca, iss, icc: pki.sign_static_data(iss, data_auth_code=b"\x01", static_data=b""),
    "dynamic data too long": lambda ca, iss, icc: pki.sign_dynamic_data(
        icc, icc_dynamic_data=bytes(icc.size - 24), terminal_data=b""),
    "dynamic number 1 byte": lambda ca, iss, icc: pki.dda_dynamic_data(b"\x01"),
    "dynamic number 9 bytes": lambda ca, iss, icc: pki.dda_dynamic_data(bytes(9)),
    "CID 256": lambda ca, iss, icc: pki.cda_dynamic_data(
        bytes(4), cid=0x100, cryptogram=bytes(8), transaction_data_hash=bytes(20)),
    "cryptogram 7 bytes": lambda ca, iss, icc: pki.cda_dynamic_data(
        bytes(4), cid=0x40, cryptogram=bytes(7), transaction_data_hash=bytes(20)),
    "enciphered PIN short": lambda ca, iss, icc: pki.decipher_pin(icc, bytes(icc.size - 1)),
}


@pytest.mark.parametrize("case", _NOT_FITTING.values(), ids=_NOT_FITTING.keys())
def test_signing_rejects_inputs_that_do_not_fit(case: Signer, ca: RsaKey, issuer: RsaKey,
                                                icc: RsaKey) -> None:
    with pytest.raises(PkiError):
        case(ca, issuer, icc)


def test_longest_dynamic_data_fits(icc: RsaKey) -> None:
    dynamic = bytes([8]) + bytes(icc.size - 26)
    block = open_block(icc, pki.sign_dynamic_data(icc, icc_dynamic_data=dynamic, terminal_data=b""))
    assert block[3] == icc.size - 25 and block[4:-21] == dynamic
