"""`tpe provision device`: a blank device (or a device image folder) made into the terminal of a
merchant. On the device the key pair is generated there and only its public half leaves, in a
certificate signing request (RFC 2986) that the provisioning CA checks and signs.

Under the device root:

    etc/tpe/terminal.toml         the packaged configuration with this terminal's identity,
                                  its [dukpt], [state] and [fleet] (and [host] when given)
    etc/tpe/identity.json         serial, terminal and merchant ids, initial key ID, key check
                                  values, when and by which workshop
    etc/tpe/keys/                 the device key (owner-only) and certificate, the broker's CA,
                                  the fleet key's public half, the DUKPT initial key (owner-only)
    var/lib/tpe/                  the [state] folder (payments, journal, DUKPT registers)

The initial DUKPT key is derived from the BDK for this device's initial key ID (ANSI
X9.24-3-2017, 6.3.3): BDK ID || a derivation ID no other device of the workshop had. The BDK
never reaches the device. The key check values (AES-CMAC of a zero block, leftmost 3 bytes:
ANSI X9.24-1, Annex A) are printed for the technician to compare with the acquirer's.
"""

from __future__ import annotations

import datetime
import json
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import cmac, hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import algorithms
from psec import tr31

from firmware import durable, fiscal
from firmware.config import ConfigError, load_config
from firmware.dukpt import derive_initial_key
from firmware.fleet_protocol import SERIAL
from firmware.journal import Journal, JournalError
from firmware.keystore import create_private_file
from provisioning.bundle import DEFAULT_HARDWARE, HARDWARE
from provisioning.workshop import ProvisionError, Workshop, public_pem, sign_request

TERMINAL_ID = re.compile(r"[A-Z0-9]{8}")  # ISO 8583 field 41, ans 8 (EMV '9F1C')
MERCHANT_ID = re.compile(r"[A-Z0-9]{15}")  # field 42, ans 15 (EMV '9F16')
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "firmware" / "defaults" / "terminal.toml"


@dataclass(frozen=True)
class DeviceRoot:
    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc" / "tpe"

    @property
    def keys(self) -> Path:
        return self.etc / "keys"

    @property
    def config(self) -> Path:
        return self.etc / "terminal.toml"

    @property
    def identity(self) -> Path:
        return self.etc / "identity.json"

    @property
    def hardware(self) -> Path:  # the hardware id a bundle must name (provisioning/slots.py)
        return self.etc / "hardware"

    @property
    def state(self) -> Path:
        return self.root / "var" / "lib" / "tpe"

    # the A/B slots (provisioning/slots.py)
    def slot(self, name: str) -> Path:
        return self.root / "slots" / name

    @property
    def slots_state(self) -> Path:
        return self.root / "slots" / "state.json"

    @property
    def current(self) -> Path:  # the link to the slot the launcher starts
        return self.root / "slots" / "current"


@dataclass(frozen=True)
class Provisioned:
    serial: str
    terminal_id: str
    merchant_id: str
    initial_key_id: str  # hex: BDK ID || derivation ID
    ksn: str  # the first KSN the terminal will use (counter 0)
    bdk_kcv: str
    initial_key_kcv: str
    config: str
    provisioned_at: str


def key_check_value(key: bytes) -> str:
    """AES-CMAC of a 16-byte zero block, leftmost 3 bytes (ANSI X9.24-1, Annex A)."""
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(bytes(16))
    return mac.finalize()[:3].hex().upper()


def _address(text: str, what: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default_port))
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProvisionError(f"--{what} {text!r}: write HOST or HOST:PORT")
    return host, int(port)


def load_bdk(path: Path) -> tuple[bytes, bytes]:
    """The workshop's BDK file: TOML `bdk` (32 hex digits, AES-128) and `bdk_id` (8 hex digits)."""
    try:
        data = tomllib.loads(Path(path).read_text())
        bdk, bdk_id = bytes.fromhex(data["bdk"]), bytes.fromhex(data["bdk_id"])
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ProvisionError(f"{path}: no BDK (bdk = 32 hex digits, bdk_id = 8): "
                             f"{type(exc).__name__}") from None
    if len(bdk) != 16 or len(bdk_id) != 4:
        raise ProvisionError(f"{path}: the BDK is AES-128 (32 hex digits) and its id 4 bytes (8 hex digits)")
    return bdk, bdk_id


def load_kbpk(path: Path) -> bytes:
    """A key block protection key file: TOML `kbpk` (32 or 64 hex digits, AES-128 or -256)."""
    try:
        kbpk = bytes.fromhex(tomllib.loads(Path(path).read_text())["kbpk"])
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ProvisionError(f"{path}: no KBPK (kbpk = 32 or 64 hex digits): {type(exc).__name__}") from None
    if len(kbpk) not in (16, 32):
        raise ProvisionError(f"{path}: the KBPK is AES-128 or AES-256 (32 or 64 hex digits)")
    return kbpk


def provision(root: Path, workshop: Workshop, *, serial: str, terminal_id: str, merchant_id: str,
              broker: str, bdk_file: Path, acquirer: str | None = None, acquirer_id: str = "12345",
              acquirer_tls: tuple[Path, Path, Path] | None = None, force: bool = False,
              kbpk_file: Path | None = None, hardware: str = DEFAULT_HARDWARE) -> Provisioned:
    """Provision the device at `root`. `ProvisionError` for a serial or id of the wrong form, a
    missing CA or BDK, or a device already provisioned (unless `force`, which is journalled).
    With `kbpk_file` (the device's key block protection key, loaded at manufacture), the initial
    key travels and stays as a TR-31 key block (`firmware.config.load_initial_key`)."""
    if not SERIAL.fullmatch(serial):
        raise ProvisionError(f"serial {serial!r}: 1 to 32 letters, digits, '-' or '_'")
    if not TERMINAL_ID.fullmatch(terminal_id):
        raise ProvisionError(f"terminal id {terminal_id!r}: 8 capital letters or digits (field 41)")
    if not MERCHANT_ID.fullmatch(merchant_id):
        raise ProvisionError(f"merchant id {merchant_id!r}: 15 capital letters or digits (field 42)")
    if not HARDWARE.fullmatch(hardware):
        raise ProvisionError(f"hardware id {hardware!r}: letters, digits, '.', '-', '_'")
    broker_host, broker_port = _address(broker, "broker", 8883)
    device = DeviceRoot(Path(root))
    earlier = None
    if device.identity.exists():
        earlier = json.loads(device.identity.read_text()).get("serial")
        if not force:
            raise ProvisionError(f"{root} is already provisioned (serial {earlier}): --force replaces "
                                 "its identity and keys, and is journalled")
    ca = workshop.certificate()  # before anything is written: a missing CA stops here
    workshop.private_key(workshop.ca_key)
    bdk, bdk_id = load_bdk(bdk_file)
    kbpk = load_kbpk(kbpk_file) if kbpk_file is not None else None

    device.keys.mkdir(parents=True, exist_ok=True)
    device.keys.chmod(0o700)
    device.state.mkdir(parents=True, exist_ok=True)
    for old in ("device-key.pem", "dukpt-initial-key.toml"):  # --force: new keys, never the old ones
        (device.keys / old).unlink(missing_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())  # on the device: its private half never leaves
    create_private_file(device.keys / "device-key.pem", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    request = (x509.CertificateSigningRequestBuilder()  # RFC 2986: what leaves the device
               .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, serial)]))
               .sign(key, hashes.SHA256()))
    certificate = sign_request(workshop, request.public_bytes(serialization.Encoding.PEM))
    durable.write_atomically(device.keys / "device-cert.pem",
                             certificate.public_bytes(serialization.Encoding.PEM))
    durable.write_atomically(device.keys / "broker-ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    fleet_public = serialization.load_pem_public_key(workshop.fleet_public.read_bytes())
    if not isinstance(fleet_public, ec.EllipticCurvePublicKey):
        raise ProvisionError(f"{workshop.fleet_public} is not the fleet's ECDSA key")
    durable.write_atomically(device.keys / "fleet-signing-public.pem", public_pem(fleet_public))

    initial_key_id = bdk_id + workshop.next_derivation_id().to_bytes(4, "big")
    initial_key = derive_initial_key(bdk, initial_key_id)
    if kbpk is None:
        content = ("# this device's AES DUKPT initial key (ANSI X9.24-3-2017, 6.3.3): owner-only, loaded\n"
                   "# once into the [state] folder's registers\n"
                   f'initial_key = "{initial_key.hex().upper()}"\n'
                   f'initial_key_id = "{initial_key_id.hex().upper()}"\n')
    else:
        header = tr31.Header("D", "B1", "A", "X", "00", "N")  # AES key block: initial DUKPT key, derive only
        header.blocks["IK"] = initial_key_id.hex().upper()
        if not (device.keys / "kbpk.toml").exists():  # a device image folder: its KBPK goes with it
            create_private_file(device.keys / "kbpk.toml", f'kbpk = "{kbpk.hex().upper()}"\n'.encode())
        content = ("# this device's AES DUKPT initial key as transported: a TR-31 key block under its KBPK\n"
                   f'key_block = "{tr31.wrap(kbpk, header, initial_key)}"\nkbpk_file = "kbpk.toml"\n')
    create_private_file(device.keys / "dukpt-initial-key.toml", content.encode())
    result = Provisioned(serial, terminal_id, merchant_id, initial_key_id.hex().upper(),
                         (initial_key_id + bytes(4)).hex().upper(), key_check_value(bdk),
                         key_check_value(initial_key), str(device.config),
                         datetime.datetime.now(datetime.UTC).isoformat())
    _write_config(device, result, broker_host, broker_port, acquirer, acquirer_id, acquirer_tls)
    try:
        load_config(device.config)
    except ConfigError as exc:
        raise ProvisionError(f"the configuration written does not load: {exc}") from exc
    identity = {**asdict(result), "hardware": hardware, "workshop_ca": ca.subject.rfc4514_string()}
    durable.write_atomically(device.identity, json.dumps(identity, indent=2).encode())
    durable.write_atomically(device.hardware, f"{hardware}\n".encode())
    _journal(device, result, earlier, force)
    return result


def _write_config(device: DeviceRoot, result: Provisioned, broker_host: str, broker_port: int,
                  acquirer: str | None, acquirer_id: str,
                  acquirer_tls: tuple[Path, Path, Path] | None) -> None:
    text = DEFAULT_CONFIG.read_text()
    text = re.sub(r'(?m)^terminal_id = "[^"]*"', f'terminal_id = "{result.terminal_id}"', text, count=1)
    text = re.sub(r'(?m)^merchant_id = "[^"]*"', f'merchant_id = "{result.merchant_id}"', text, count=1)
    text = re.sub(r'(?m)^initial_key_file = "[^"]*"', 'initial_key_file = "keys/dukpt-initial-key.toml"',
                  text, count=1)
    # paths relative to etc/tpe: the same file serves in an image folder at the bench and on the device
    text += (f'\n# written by `tpe provision device` on {result.provisioned_at}\n'
             '[state]\nfolder = "../../var/lib/tpe"\n'
             f'\n[fleet]\nserial = "{result.serial}"\naddress = "{broker_host}"\nport = {broker_port}\n'
             'ca_file = "keys/broker-ca.pem"\ncert_file = "keys/device-cert.pem"\n'
             'key_file = "keys/device-key.pem"\nsigning_key = "keys/fleet-signing-public.pem"\n'
             '\n[update]\nroot = "../.."\n')
    if acquirer is not None and acquirer_tls is not None:
        host, port = _address(acquirer, "acquirer", 8583)
        names = ("acquirer-ca.pem", "acquirer-cert.pem", "acquirer-key.pem")
        for source, name in zip(acquirer_tls, names, strict=True):
            (device.keys / name).unlink(missing_ok=True)
            create_private_file(device.keys / name, Path(source).read_bytes())
        text += (f'\n[host]\naddress = "{host}"\nport = {port}\nca_file = "keys/{names[0]}"\n'
                 f'cert_file = "keys/{names[1]}"\nkey_file = "keys/{names[2]}"\n'
                 f'acquirer_id = "{acquirer_id}"\n')
    durable.write_atomically(device.config, text.encode())


def _journal(device: DeviceRoot, result: Provisioned, earlier: str | None, force: bool) -> None:
    """The provisioning as an audit event of the device's fiscal journal (no key material)."""
    try:
        journal = Journal(device.state)
    except JournalError as exc:
        raise ProvisionError(f"the device's journal cannot be opened: {exc}") from exc
    try:
        fiscal.audit(journal, "config_change", source="provisioning", serial=result.serial,
                     terminal_id=result.terminal_id, merchant_id=result.merchant_id,
                     initial_key_id=result.initial_key_id, initial_key_kcv=result.initial_key_kcv,
                     replaced=earlier if force else None)
    except (JournalError, fiscal.FiscalError) as exc:
        raise ProvisionError(f"the provisioning could not be journalled: {exc}") from exc
    finally:
        journal.close()
