"""`tpe provision`: the technician's bench: the workshop's CA, device identity and keys, bundles.

    tpe provision ca init --workshop DIR
    tpe provision device --workshop DIR --root DIR --serial S --tid T --mid M --broker HOST[:PORT]
                         --bdk FILE [--acquirer HOST[:PORT] --acquirer-ca F --acquirer-cert F
                         --acquirer-key F] [--hardware ID] [--force]
    tpe provision bundle build --version V --hardware ID --min-version V --signing-key FILE --out FILE
    tpe provision flash BUNDLE --target DIR --fleet-key FILE
    tpe provision boot|healthy|status --target DIR

Exit status: 0 done; 2 bad arguments, or refused (already provisioned, missing CA, a bundle that
does not verify, a downgrade, foreign hardware); 3 the device root cannot be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from provisioning.bundle import DEFAULT_HARDWARE

EXIT_OK, EXIT_REFUSED, EXIT_IO = 0, 2, 3
ROOT = Path(__file__).resolve().parent.parent


def add_parser(sub: Any) -> None:
    provision = sub.add_parser("provision", help="the technician's bench: identity, keys, firmware bundles",
                               description=__doc__.splitlines()[0])
    commands = provision.add_subparsers(dest="provision_cmd", required=True)
    ca = commands.add_parser("ca", help="the workshop's provisioning CA").add_subparsers(dest="ca_cmd",
                                                                                       required=True)
    init = ca.add_parser("init", help="a new provisioning CA and fleet signing key")
    init.add_argument("--workshop", type=Path, required=True)
    init.set_defaults(func=_ca_init)
    device = commands.add_parser("device", help="make a device (or a device image folder) a terminal")
    for name in ("workshop", "root", "bdk"):
        device.add_argument(f"--{name}", type=Path, required=True)
    for name in ("serial", "tid", "mid", "broker"):
        device.add_argument(f"--{name}", required=True)
    device.add_argument("--acquirer", help="HOST[:PORT] of the acquirer host")
    device.add_argument("--acquirer-ca", type=Path)
    device.add_argument("--acquirer-cert", type=Path)
    device.add_argument("--acquirer-key", type=Path)
    device.add_argument("--hardware", default=DEFAULT_HARDWARE, help="the hardware id bundles must name")
    device.add_argument("--force", action="store_true", help="provision again (journalled)")
    device.add_argument("--kbpk", type=Path, help="the device's key block protection key: the initial key "
                                                  "goes as a TR-31 key block")
    device.set_defaults(func=_device)
    bundle = commands.add_parser("bundle", help="firmware bundles").add_subparsers(dest="bundle_cmd",
                                                                                  required=True)
    build = bundle.add_parser("build", help="sign the application's files into a bundle")
    build.add_argument("--version", required=True)
    build.add_argument("--hardware", default=DEFAULT_HARDWARE)
    build.add_argument("--min-version", default="0")
    build.add_argument("--signing-key", type=Path, required=True, help="the fleet key (PEM)")
    build.add_argument("--out", type=Path, required=True)
    build.add_argument("--source", type=Path, default=ROOT, help="the source tree (default: this one)")
    build.set_defaults(func=_build)
    flash = commands.add_parser("flash", help="install a bundle in the inactive slot of a device")
    flash.add_argument("bundle", type=Path)
    flash.add_argument("--target", type=Path, required=True,
                       help="the device root (an SD card's mount point)")
    flash.add_argument("--fleet-key", type=Path, required=True, help="the fleet key's public half (PEM)")
    flash.set_defaults(func=_flash)
    for name, text in (("boot", "the slot to start now (the launcher's step)"),
                       ("healthy", "the running slot is healthy: commit it"),
                       ("status", "slots and the last result")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--target", type=Path, required=True)
        command.set_defaults(func=_slot_command, slot_command=name)


def _refused(message: str, code: int = EXIT_REFUSED) -> int:
    print(f"tpe provision: {message}", file=sys.stderr)
    return code


def _ca_init(args: argparse.Namespace) -> int:
    from provisioning.workshop import ProvisionError, init_workshop

    try:
        workshop = init_workshop(args.workshop)
    except ProvisionError as exc:
        return _refused(str(exc))
    except OSError as exc:
        return _refused(str(exc), EXIT_IO)
    print(f"provisioning CA   {workshop.ca_cert}\nfleet signing key {workshop.fleet_key} (keep it here)\n"
          f"fleet public key  {workshop.fleet_public}")
    return EXIT_OK


def _device(args: argparse.Namespace) -> int:
    from provisioning.device import provision
    from provisioning.workshop import ProvisionError, Workshop

    tls = (args.acquirer_ca, args.acquirer_cert, args.acquirer_key)
    if args.acquirer is not None and not all(tls):
        return _refused("--acquirer needs --acquirer-ca, --acquirer-cert and --acquirer-key")
    try:
        done = provision(args.root, Workshop(args.workshop), serial=args.serial, terminal_id=args.tid,
                         merchant_id=args.mid, broker=args.broker, bdk_file=args.bdk, acquirer=args.acquirer,
                         acquirer_tls=tls if args.acquirer else None, force=args.force, kbpk_file=args.kbpk,
                         hardware=args.hardware)
    except ProvisionError as exc:
        return _refused(str(exc))
    except OSError as exc:
        return _refused(str(exc), EXIT_IO)
    print(f"device            {done.serial} (terminal {done.terminal_id}, merchant {done.merchant_id})\n"
          f"initial key ID    {done.initial_key_id}  first KSN {done.ksn}\n"
          f"KCV BDK           {done.bdk_kcv}   (compare with the acquirer's)\n"
          f"KCV initial key   {done.initial_key_kcv}   (compare with the acquirer's)\n"
          f"configuration     {done.config}")
    return EXIT_OK


def _public(path: Path) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"{path} is not an ECDSA public key")
    return key


def _build(args: argparse.Namespace) -> int:
    from provisioning.bundle import BundleError, application_files, build
    from provisioning.fleet_office import OfficeError, load_signing_key

    try:
        manifest = build(args.out, application_files(args.source), version=args.version,
                         hardware=args.hardware, min_version=args.min_version,
                         signing_key=load_signing_key(args.signing_key))
    except (BundleError, OfficeError, ValueError) as exc:
        return _refused(str(exc))
    except OSError as exc:
        return _refused(str(exc), EXIT_IO)
    print(f"bundle {args.out}: version {manifest.version} for {manifest.hardware}, "
          f"{len(manifest.files)} files, {manifest.size} bytes")
    return EXIT_OK


def _flash(args: argparse.Namespace) -> int:
    from provisioning.bundle import BundleError
    from provisioning.slots import SlotsError, flash

    def progress(step: str, percent: int) -> None:
        print(f"{step} {percent}%", flush=True)

    try:
        state = flash(args.bundle, args.target, _public(args.fleet_key), progress)
    except (BundleError, SlotsError, ValueError) as exc:
        return _refused(str(exc))
    except OSError as exc:
        return _refused(str(exc), EXIT_IO)
    print(state["last"])
    return EXIT_OK


def _slot_command(args: argparse.Namespace) -> int:
    from provisioning import slots

    try:
        if args.slot_command == "boot":
            print(slots.boot(args.target))
        elif args.slot_command == "healthy":
            committed = slots.healthy(args.target)
            print(f"{committed} committed" if committed else "nothing on trial")
        else:
            print(json.dumps(slots.status(args.target), indent=1, sort_keys=True))
    except slots.SlotsError as exc:
        return _refused(str(exc))
    except OSError as exc:
        return _refused(str(exc), EXIT_IO)
    return EXIT_OK
