"""Application identifiers the terminal knows (RID || PIX, EMV 4.4 Book 1, 12.2.1)."""

from __future__ import annotations

# Registered AIDs of the schemes a French acquirer accepts; the terminal config may narrow it.
KNOWN_AIDS: dict[bytes, str] = {
    bytes.fromhex("A0000000421010"): "CB",
    bytes.fromhex("A0000000422010"): "CB",
    bytes.fromhex("A0000000031010"): "Visa",
    bytes.fromhex("A0000000032010"): "Visa Electron",
    bytes.fromhex("A0000000032020"): "V PAY",
    bytes.fromhex("A0000000041010"): "Mastercard",
    bytes.fromhex("A0000000043060"): "Maestro",
    bytes.fromhex("A00000002501"): "American Express",
    bytes.fromhex("A0000001523010"): "Discover",
    bytes.fromhex("A0000000651010"): "JCB",
    bytes.fromhex("A000000333010101"): "UnionPay",
}

PSE_NAME = b"1PAY.SYS.DDF01"


def scheme_of(aid: bytes) -> str | None:
    """Scheme name for an AID, matching on the registered prefix."""
    for known, name in KNOWN_AIDS.items():
        if aid.startswith(known):
            return name
    return None
