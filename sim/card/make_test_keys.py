"""Make the card simulator's TEST keys once, and publish its CA public keys for terminals.

    python -m sim.card.make_test_keys           # create missing keys, rewrite ca_keys.toml
    python -m sim.card.make_test_keys --check   # exit 1 if ca_keys.toml is not up to date

Existing key files are never replaced (delete one to make it again). `ca_keys.toml` is rendered
from the key files alone, so running this twice changes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sim.card.pki import CA_KEYS, CA_KEYS_TOML, KEYS_DIR, load_key

PEM_HEADER = (
    "# TEST KEY of the EMV card simulator (sim/card). Never use it outside sim/ and tests/:\n"
    "# it is public, and no card, terminal or scheme trusts it.\n"
    "# Made by sim/card/make_test_keys.py.\n"
)


@dataclass(frozen=True)
class KeySpec:
    name: str
    bits: int
    exponent: int


# Sizes follow EMV 4.4 Book 2, 5.1 / 6.1: N_ICC <= N_I <= N_CA. The issuer keys need a
# remainder (144 > 1408/8 - 36), the ICC keys too (128 > 144 - 42): both paths get exercised.
KEY_SPECS: tuple[KeySpec, ...] = (
    KeySpec("ca_sim_92", 1408, 3),
    KeySpec("ca_visa_f0", 1408, 3),
    KeySpec("ca_mc_f2", 1408, 3),
    KeySpec("ca_cb_f4", 1408, 65537),
    KeySpec("issuer_visa", 1152, 3),
    KeySpec("issuer_mc", 1152, 3),
    KeySpec("issuer_cb", 1152, 65537),
    KeySpec("icc_1", 1024, 3),
    KeySpec("icc_2", 1024, 65537),
    KeySpec("icc_3", 1024, 3),
    KeySpec("icc_4", 1024, 65537),
    KeySpec("icc_pin_1", 1024, 65537),
)

TOML_HEADER = """\
# TEST KEYS of the card simulator: the CA public keys that sign its issuer certificates.
# No scheme issued these keys, even those filed under the Visa (A000000003), Mastercard
# (A000000004) and CB (A000000042) RIDs; A000000999 is a RID no scheme uses. Load them only
# into terminals under test, never next to production keys.
# Made by sim/card/make_test_keys.py from sim/card/keys/*.pem: do not edit by hand.
# checksum = SHA-1 over RID || index || modulus || exponent (EMV 4.4 Book 2, 11.2.2).
"""


def make_missing_keys(keys_dir: Path = KEYS_DIR) -> list[str]:
    """Create the key files that do not exist yet; return their names."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for spec in KEY_SPECS:
        path = keys_dir / f"{spec.name}.pem"
        if path.exists():
            continue
        key = rsa.generate_private_key(public_exponent=spec.exponent, key_size=spec.bits)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path.write_text(PEM_HEADER + pem.decode("ascii"), encoding="ascii")
        made.append(spec.name)
    return made


def render_ca_keys_toml() -> str:
    """The text of ca_keys.toml, computed from the CA key files."""
    parts = [TOML_HEADER]
    for entry in CA_KEYS:
        key = load_key(entry.name)
        checksum = hashlib.sha1(entry.rid + bytes([entry.index]) + key.modulus + key.exponent).digest()
        modulus_hex = key.modulus.hex().upper()
        modulus_lines = "\n".join(modulus_hex[i:i + 64] for i in range(0, len(modulus_hex), 64))
        parts.append(
            f"\n[[capk]]  # {entry.name}.pem, {key.n.bit_length()}-bit\n"
            f'rid = "{entry.rid.hex().upper()}"\n'
            f'index = "{entry.index:02X}"\n'
            f'modulus = """\n{modulus_lines}\n"""\n'
            f'exponent = "{key.exponent.hex().upper()}"\n'
            f"expiry = {entry.expiry.isoformat()}\n"
            f'hash_algorithm = "01"\n'
            f'checksum = "{checksum.hex().upper()}"\n'
        )
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that ca_keys.toml is current")
    args = parser.parse_args(argv)
    if args.check:
        current = CA_KEYS_TOML.read_text(encoding="utf-8") if CA_KEYS_TOML.exists() else ""
        if current != render_ca_keys_toml():
            print(f"{CA_KEYS_TOML} is out of date: run python -m sim.card.make_test_keys", file=sys.stderr)
            return 1
        return 0
    for name in make_missing_keys():
        print(f"made TEST key {name}.pem")
    CA_KEYS_TOML.write_text(render_ca_keys_toml(), encoding="utf-8")
    print(f"wrote {CA_KEYS_TOML}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
