"""A TEST PKI for the acquirer link: the host's CA and server certificate, the terminals' CA and
one terminal's client certificate, all ECDSA P-256 (FIPS 186-5) in X.509 v3 (RFC 5280).

Every key made here is a TEST KEY: its private scalar is derived from a public seed, so anyone
can make it again. Use it in `sim/` and `tests/` only, never on a terminal or host that sees real
cards. Each file written starts with comment lines saying so, and its name starts with `test-`.

    pki = make_test_pki(tmp_path)
    client = client_context(pki.host_ca_cert, pki.terminal_cert, pki.terminal_key)
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SEED = "tpe acquirer link test pki"
DEFAULT_TERMINAL_ID = "TEST-TERMINAL-0001"
HOST_NAMES = ("localhost",)
HOST_ADDRESSES = ("127.0.0.1", "::1")
VALID_BEFORE_NOW = datetime.timedelta(days=1)
VALID_AFTER_NOW = datetime.timedelta(days=3653)

PEM_HEADER = (
    "# TEST {what} of the acquirer link's test PKI (sim/host/test_pki.py). Never use it outside\n"
    "# sim/ and tests/: it is derived from a public seed, and no real terminal or host may trust it.\n"
)

# FIPS 186-5, 6.1.1 / SEC 2, 2.4.2: the order n of the P-256 base point.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True)
class TestPki:
    """Where `make_test_pki` wrote each PEM file, and the terminal id in the client certificate."""

    __test__ = False  # a data class, not a pytest test class

    folder: Path
    terminal_id: str
    host_ca_cert: Path
    host_ca_key: Path
    host_cert: Path
    host_key: Path
    terminal_ca_cert: Path
    terminal_ca_key: Path
    terminal_cert: Path
    terminal_key: Path


def seeded_key(seed: str, role: str) -> ec.EllipticCurvePrivateKey:
    digest = hashlib.sha256(f"{seed}/{role}".encode()).digest()
    scalar = int.from_bytes(digest, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _serial(seed: str, role: str) -> int:
    # RFC 5280, 4.1.2.2: positive, at most 20 octets.
    return int.from_bytes(hashlib.sha256(f"{seed}/{role}/serial".encode()).digest()[:16], "big") | 1


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TPE TEST PKI"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _key_usage(*, signer: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signer, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=signer, crl_sign=signer,
        encipher_only=False, decipher_only=False,
    )


def make_ca(seed: str, role: str, common_name: str, now: datetime.datetime
        ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = seeded_key(seed, role)
    name = _name(common_name, role)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(_serial(seed, role))
        .not_valid_before(now - VALID_BEFORE_NOW).not_valid_after(now + VALID_AFTER_NOW)
        # RFC 5280, 4.2.1.9, 4.2.1.3, 4.2.1.2
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signer=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return key, certificate


def make_leaf(seed: str, role: str, common_name: str, now: datetime.datetime,
          ca_key: ec.EllipticCurvePrivateKey, ca_certificate: x509.Certificate,
          usage: x509.ObjectIdentifier, alternative_names: list[x509.GeneralName]
          ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = seeded_key(seed, role)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, role.split("/")[0])).issuer_name(ca_certificate.subject)
        .public_key(public)
        .serial_number(_serial(seed, role))
        .not_valid_before(now - VALID_BEFORE_NOW).not_valid_after(now + VALID_AFTER_NOW)
        # RFC 5280, 4.2.1.9, 4.2.1.3, 4.2.1.12, 4.2.1.2, 4.2.1.1
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signer=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if alternative_names:
        # RFC 5280, 4.2.1.6; RFC 6125, 6.4.4: names are checked here, never in the CN.
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256(), ecdsa_deterministic=True)


def write_key(path: Path, key: ec.EllipticCurvePrivateKey, header: str = PEM_HEADER) -> None:
    """The key in PKCS #8 PEM, owner-only, after `header`'s TEST warning."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.write_bytes(header.format(what="KEY").encode() + pem)
    path.chmod(0o600)


def write_certificate(path: Path, certificate: x509.Certificate, header: str = PEM_HEADER) -> None:
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(header.format(what="CERTIFICATE").encode() + pem)


def make_test_pki(folder: Path, *, terminal_id: str = DEFAULT_TERMINAL_ID,
                  seed: str = DEFAULT_SEED) -> TestPki:
    """Write the test PKI into `folder` (made if missing; files of an earlier run replaced).

    The same `seed` gives the same keys, serial numbers and names every time; only the
    validity dates move (from a day ago to ten years ahead). Another seed gives another PKI,
    whose certificates the first one's CAs do not accept.
    """
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    pki = TestPki(
        folder=folder,
        terminal_id=terminal_id,
        host_ca_cert=folder / "test-host-ca-cert.pem",
        host_ca_key=folder / "test-host-ca-key.pem",
        host_cert=folder / "test-host-cert.pem",
        host_key=folder / "test-host-key.pem",
        terminal_ca_cert=folder / "test-terminal-ca-cert.pem",
        terminal_ca_key=folder / "test-terminal-ca-key.pem",
        terminal_cert=folder / "test-terminal-cert.pem",
        terminal_key=folder / "test-terminal-key.pem",
    )
    host_ca_key, host_ca = make_ca(seed, "host-ca", "TEST Acquirer Host CA", now)
    host_names: list[x509.GeneralName] = [x509.DNSName(name) for name in HOST_NAMES]
    host_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in HOST_ADDRESSES]
    host_key, host = make_leaf(seed, "host", "localhost", now, host_ca_key, host_ca,
                           ExtendedKeyUsageOID.SERVER_AUTH, host_names)
    terminal_ca_key, terminal_ca = make_ca(seed, "terminal-ca", "TEST Terminal CA", now)
    terminal_key, terminal = make_leaf(seed, f"terminal/{terminal_id}", terminal_id, now,
                                   terminal_ca_key, terminal_ca, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    write_certificate(pki.host_ca_cert, host_ca)
    write_key(pki.host_ca_key, host_ca_key)
    write_certificate(pki.host_cert, host)
    write_key(pki.host_key, host_key)
    write_certificate(pki.terminal_ca_cert, terminal_ca)
    write_key(pki.terminal_ca_key, terminal_ca_key)
    write_certificate(pki.terminal_cert, terminal)
    write_key(pki.terminal_key, terminal_key)
    return pki
