"""A TEST PKI for the fleet link (docs/fleet-protocol.md): the fleet CA, the broker's server
certificate, a client certificate per device (its common name is the device serial, which the
broker takes as the MQTT user name for its ACL) and the back office's, and the fleet signing key
that signs desired configurations. All ECDSA P-256 (FIPS 186-5), X.509 v3 (RFC 5280).

Every key made here is a TEST KEY derived from a public seed (`sim.host.test_pki`): use it in
`sim/` and `tests/` only. Each file starts with a comment saying so.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from sim.host.test_pki import make_ca, make_leaf, seeded_key, write_certificate, write_key

SEED = "tpe fleet test pki"
BACK_OFFICE = "backoffice"  # the back office's certificate name: the broker lets it see every device
HEADER = (
    "# TEST {what} of the fleet's test PKI (sim/fleet/pki.py). Never use it outside sim/ and\n"
    "# tests/: it is derived from a public seed, and no real device or broker may trust it.\n"
)


@dataclass(frozen=True)
class FleetPki:
    __test__ = False

    folder: Path
    ca_cert: Path
    ca_key: Path
    broker_cert: Path
    broker_key: Path
    signing_key: Path  # the fleet key: signs desired configurations
    signing_public: Path  # its public half, pinned on every device

    def client(self, name: str) -> tuple[Path, Path]:
        """The certificate and key of device `name` (or of the back office), made on first use."""
        cert, key = self.folder / f"test-client-{name}-cert.pem", self.folder / f"test-client-{name}-key.pem"
        if not cert.exists() or not key.exists():
            now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
            ca_key = seeded_key(SEED, "fleet-ca")
            ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
            private, certificate = make_leaf(SEED, f"client/{name}", name, now, ca_key, ca,
                                             ExtendedKeyUsageOID.CLIENT_AUTH, [])
            write_certificate(cert, certificate, HEADER)
            write_key(key, private, HEADER)
        return cert, key


    def section(self, serial: str, port: int, **options: float) -> str:
        """The [fleet] section of a terminal `serial` on the broker at 127.0.0.1:`port`, with
        this PKI's files; `options` are further keys (telemetry_interval, reconnect_max...)."""
        cert, key = self.client(serial)
        extra = "".join(f"{name} = {value}\n" for name, value in options.items())
        return (f'[fleet]\nserial = "{serial}"\naddress = "127.0.0.1"\nport = {port}\n'
                f'ca_file = "{self.ca_cert}"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
                f'signing_key = "{self.signing_public}"\n{extra}')


def make_fleet_pki(folder: Path) -> FleetPki:
    """The fleet's TEST PKI in `folder` (made if missing; the same keys every time)."""
    folder.mkdir(parents=True, exist_ok=True)
    pki = FleetPki(folder, folder / "test-fleet-ca-cert.pem", folder / "test-fleet-ca-key.pem",
                   folder / "test-broker-cert.pem", folder / "test-broker-key.pem",
                   folder / "test-fleet-signing-key.pem", folder / "test-fleet-signing-public.pem")
    if all(path.exists() for path in (pki.ca_cert, pki.broker_cert, pki.signing_key, pki.signing_public)):
        return pki
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    ca_key, ca = make_ca(SEED, "fleet-ca", "TEST Fleet CA", now)
    names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    broker_key, broker = make_leaf(SEED, "broker", "localhost", now, ca_key, ca,
                                   ExtendedKeyUsageOID.SERVER_AUTH, names)
    signer = seeded_key(SEED, "fleet-signing")
    write_certificate(pki.ca_cert, ca, HEADER)
    write_key(pki.ca_key, ca_key, HEADER)
    write_certificate(pki.broker_cert, broker, HEADER)
    write_key(pki.broker_key, broker_key, HEADER)
    write_key(pki.signing_key, signer, HEADER)
    public = signer.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    pki.signing_public.write_bytes(HEADER.format(what="PUBLIC KEY").encode() + public)
    return pki
