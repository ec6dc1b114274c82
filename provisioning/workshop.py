"""The workshop's secrets (`tpe provision ca init`): the provisioning CA that certifies every
device's own key pair (its identity on the fleet broker, AWS IoT "fleet provisioning" style),
the fleet signing key (desired configurations, firmware bundles), and the counter that gives
each device its own DUKPT derivation ID. They stay on the workshop machine: a device receives
certificates and public keys only, and its initial DUKPT key, never the BDK.

Keys are ECDSA P-256 (FIPS 186-5), certificates X.509 v3 (RFC 5280); private keys are
owner-only files (`firmware.keystore.create_private_file`).
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware import durable
from firmware.keystore import KeystoreError, create_private_file, read_private_file

log = logging.getLogger(__name__)

VALIDITY_CA = datetime.timedelta(days=3653 * 2)
VALIDITY_DEVICE = datetime.timedelta(days=3653)
MAX_KEY_FILE = 16 * 1024


class ProvisionError(Exception):
    """A provisioning step refused: what is missing or wrong, for the technician."""


@dataclass(frozen=True)
class Workshop:
    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "provisioning-ca-cert.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "provisioning-ca-key.pem"

    @property
    def fleet_key(self) -> Path:
        return self.folder / "fleet-signing-key.pem"

    @property
    def fleet_public(self) -> Path:
        return self.folder / "fleet-signing-public.pem"

    @property
    def counter(self) -> Path:
        return self.folder / "derivation-counter.json"

    def private_key(self, path: Path) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(read_private_file(path, MAX_KEY_FILE), password=None)
        except FileNotFoundError:
            raise ProvisionError(f"{path} is missing: run `tpe provision ca init --workshop {self.folder}` "
                                 "on the workshop machine first") from None
        except (OSError, ValueError, KeystoreError) as exc:
            raise ProvisionError(f"{path}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ProvisionError(f"{path} is not an ECDSA key")
        return key

    def certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        except FileNotFoundError:
            raise ProvisionError(f"{self.ca_cert} is missing: run `tpe provision ca init --workshop "
                                 f"{self.folder}` on the workshop machine first") from None
        except (OSError, ValueError) as exc:
            raise ProvisionError(f"{self.ca_cert}: {exc}") from None

    def next_derivation_id(self) -> int:
        """A derivation ID no device of this workshop had (X9.24-3-2017, 6.3.3: 4 bytes)."""
        raw = durable.read_json(self.counter, "starting from 1", log)
        last = raw.get("last", 0) if isinstance(raw, dict) else 0
        if not isinstance(last, int) or not 0 <= last < 0xFFFFFFFF:
            raise ProvisionError(f"{self.counter} holds no counter")
        durable.write_atomically(self.counter, json.dumps({"last": last + 1}).encode())
        return last + 1


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def init_workshop(folder: Path, name: str = "tpe provisioning CA") -> Workshop:
    """A new provisioning CA and fleet signing key in `folder` (refused when one is there)."""
    workshop = Workshop(Path(folder))
    if workshop.ca_key.exists() or workshop.fleet_key.exists():
        raise ProvisionError(f"{folder} already holds a provisioning CA: keep it (every device trusts it)")
    workshop.folder.mkdir(parents=True, exist_ok=True)
    workshop.folder.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(name, "provisioning")
    ca = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + VALIDITY_CA)
          # RFC 5280, 4.2.1.9, 4.2.1.3, 4.2.1.2
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       key_cert_sign=True, crl_sign=True, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
          .sign(key, hashes.SHA256()))
    create_private_file(workshop.ca_key, _pem_key(key))
    durable.write_atomically(workshop.ca_cert, ca.public_bytes(serialization.Encoding.PEM))
    fleet = ec.generate_private_key(ec.SECP256R1())
    create_private_file(workshop.fleet_key, _pem_key(fleet))
    durable.write_atomically(workshop.fleet_public, public_pem(fleet.public_key()))
    return workshop


def sign_request(workshop: Workshop, pem: bytes) -> x509.Certificate:
    """A device's certificate from its signing request (RFC 2986): the request's own signature
    checked (it holds the private key), its common name, a P-256 key."""
    try:
        request = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise ProvisionError(f"not a certificate signing request: {exc}") from None
    names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    public = request.public_key()
    if not request.is_signature_valid or len(names) != 1 or not isinstance(public, ec.EllipticCurvePublicKey):
        raise ProvisionError("the request is not signed by its P-256 key, or names no single device")
    return issue(workshop, public, str(names[0].value))


def issue(workshop: Workshop, public: ec.EllipticCurvePublicKey, common_name: str, *, server: bool = False,
          names: list[x509.GeneralName] | None = None) -> x509.Certificate:
    """A certificate of the provisioning CA for `public`: a device's (client, CN = serial) or a
    broker's (`server`, with its DNS names and addresses)."""
    ca_key = workshop.private_key(workshop.ca_key)
    ca = workshop.certificate()
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(common_name, "broker" if server else "device"))
               .issuer_name(ca.subject).public_key(public).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + VALIDITY_DEVICE)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())

