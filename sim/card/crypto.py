"""Symmetric cryptography of the simulated card, through pyemv's CVN classes.

One `CardCrypto` per application: the ICC master keys are derived from the profile's issuer
master keys (TEST KEYS) and the PAN/PSN (EMV 4.4 Book 2, Annex A1.4, option A; pyemv applies
option B to Visa CVN 18, which equals A for PANs of 16 digits or fewer). It computes the
Application Cryptogram (Book 2, 8.1), builds the Issuer Application Data in each CVN's format,
checks the ARPC (Book 2, 8.2), checks issuer script MACs (Book 2, 9.2) and deciphers the new PIN
of PIN CHANGE/UNBLOCK (Book 2, 9.3).

pyemv only encrypts; deciphering uses `cryptography`'s TripleDES with the same session keys.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers import Cipher, modes
from pyemv import cvn as pyemv_cvn
from pyemv import kd

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # cryptography < 43 (pyproject allows 42)
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[no-redef]

if TYPE_CHECKING:
    from sim.card.profile import Application, Cvn

# Cryptogram Version Numbers as written in the IAD (VIS: '0A' = 10, '12' = 18; M/Chip: '10', '11').
CVN_BYTE: dict[str, int] = {"visa10": 0x0A, "visa18": 0x12, "mc16": 0x10, "mc17": 0x11}
CVR_LENGTH: dict[str, int] = {"visa10": 4, "visa18": 4, "mc16": 6, "mc17": 6}
MIN_MAC_LENGTH = 4  # Book 2, 9.2.3: MAC of 4 to 8 bytes
MAX_MAC_LENGTH = 8

_ENGINES = {
    "visa10": pyemv_cvn.VisaCVN10,
    "visa18": pyemv_cvn.VisaCVN18,
    "mc16": pyemv_cvn.MasterCardCVN16,
    "mc17": pyemv_cvn.MasterCardCVN17,
}


def _tdes_decrypt(key: bytes, data: bytes, *, cbc: bool) -> bytes:
    mode = modes.CBC(bytes(8)) if cbc else modes.ECB()
    # Two-key TDES written as the equivalent three-key K1 K2 K1 (cryptography deprecates 16 bytes).
    full_key = key + key[:8] if len(key) == 16 else key
    decryptor = Cipher(TripleDES(full_key), mode).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def _unpad_method2(data: bytes) -> bytes | None:
    # ISO/IEC 9797-1 padding method 2: '80' then '00' up to the block boundary.
    stripped = data.rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80:
        return None
    return stripped[:-1]


def _pin_from_digits(length: int, digits: str) -> str | None:
    if not 4 <= length <= 12 or len(digits) < length:
        return None
    pin, filler = digits[:length], digits[length:]
    if not pin.isdigit() or set(filler) - {"F"}:
        return None
    return pin


def parse_pin_block_format2(block: bytes) -> str | None:
    """Plaintext offline PIN block (EMV 4.4 Book 3, 6.5.12.1, format 2): 2N P..P F..F. None if bad."""
    if len(block) != 8:
        return None
    text = block.hex().upper()
    if text[0] != "2":
        return None
    return _pin_from_digits(int(text[1], 16), text[2:])


class CardCrypto:
    """The cryptograms, IAD, ARPC check and secure messaging of one application."""

    def __init__(self, app: Application) -> None:
        self.cvn: Cvn = app.cvn
        self.dki = app.dki
        self._engine = _ENGINES[app.cvn](app.keys.ac, app.keys.smi, app.keys.smc, app.pan, app.psn)

    def __repr__(self) -> str:
        return f"CardCrypto({self.cvn}, TEST KEYS hidden)"

    @property
    def is_visa(self) -> bool:
        return self.cvn.startswith("visa")

    @property
    def cvr_length(self) -> int:
        return CVR_LENGTH[self.cvn]

    def issuer_application_data(self, cvr: bytes, counters: bytes = bytes(7) + b"\xff") -> bytes:
        """9F10 in the CVN's format.

        VIS (CVN 10 and 18): length '06', DKI, CVN, CVR (4 bytes, its first byte '03').
        M/Chip 4 (CVN 16 and 17): DKI, CVN, CVR (6), DAC/ICC dynamic number (2), counters (8).
        """
        if len(cvr) != self.cvr_length:
            raise ValueError(f"CVR must be {self.cvr_length} bytes for {self.cvn}")
        if self.is_visa:
            return bytes([0x06, self.dki, CVN_BYTE[self.cvn]]) + cvr
        if len(counters) != 8:
            raise ValueError("M/Chip counters are 8 bytes")
        return bytes([self.dki, CVN_BYTE[self.cvn]]) + cvr + bytes(2) + counters

    def application_cryptogram(self, terminal: Mapping[int, bytes], aip: bytes, atc: bytes,
                               iad: bytes) -> bytes:
        """ARQC, TC or AAC over the terminal data, AIP, ATC and the CVN's share of the IAD."""
        args = {
            "tag_9f02": terminal[0x9F02], "tag_9f03": terminal[0x9F03], "tag_9f1a": terminal[0x9F1A],
            "tag_95": terminal[0x95], "tag_5f2a": terminal[0x5F2A], "tag_9a": terminal[0x9A],
            "tag_9c": terminal[0x9C], "tag_9f37": terminal[0x9F37], "tag_82": aip, "tag_9f36": atc,
        }
        engine = self._engine
        if isinstance(engine, pyemv_cvn.VisaCVN10):
            return engine.generate_ac(**args, cvr=iad[3:7])
        if isinstance(engine, pyemv_cvn.VisaCVN18):
            return engine.generate_ac(**args, tag_9f10=iad)
        if isinstance(engine, pyemv_cvn.MasterCardCVN16):
            return engine.generate_ac(**args, cvr=iad[2:8])
        return engine.generate_ac(**args, cvr=iad[2:8], counters=iad[10:18])

    def verify_arpc(self, arqc: bytes, atc: bytes, issuer_auth_data: bytes) -> bool:
        """Check Issuer Authentication Data (91) against the ARQC (Book 2, 8.2).

        Method 1 (CVN 10, 16, 17): ARPC (8) || ARC (2). Method 2 (pyemv's CVN 18): ARPC (4) ||
        CSU (4) || optional proprietary authentication data (up to 8).
        """
        engine = self._engine
        if isinstance(engine, pyemv_cvn.VisaCVN18):
            if not 8 <= len(issuer_auth_data) <= 16:
                return False
            arpc, csu, extra = issuer_auth_data[:4], issuer_auth_data[4:8], issuer_auth_data[8:]
            expected = engine.generate_arpc(arqc, atc, csu, extra or None)
            return hmac.compare_digest(expected, arpc)
        if len(issuer_auth_data) != 10:
            return False
        arpc, arc = issuer_auth_data[:8], issuer_auth_data[8:]
        return hmac.compare_digest(engine.generate_arpc(arqc, arc), arpc)

    def issuer_authentication_data(self, arqc: bytes, atc: bytes, arc: bytes, *, approved: bool) -> bytes:
        """The issuer's side of `verify_arpc`: Issuer Authentication Data '91' (Book 2, 8.2).

        Method 1: ARPC (8) || ARC (2). Method 2 (CVN 18): ARPC (4) || CSU (4), the CSU saying
        "issuer approves online transaction" (VIS 1.5 CSU byte 2 b8) when `approved`.
        """
        engine = self._engine
        if isinstance(engine, pyemv_cvn.VisaCVN18):
            csu = bytes([0x00, 0x80 if approved else 0x00, 0x00, 0x00])
            return engine.generate_arpc(arqc, atc, csu) + csu
        return engine.generate_arpc(arqc, arc) + arc

    def _script_ac(self, arqc: bytes, sequence: int) -> bytes:
        # pyemv, M/Chip: the AC used for the session key grows by one per script command.
        if self.is_visa:
            return arqc
        return ((int.from_bytes(arqc, "big") + sequence) % 2**64).to_bytes(8, "big")

    def script_mac(self, header: bytes, data: bytes, *, arqc: bytes, atc: bytes, sequence: int) -> bytes:
        """The issuer's side of `verify_script_mac`: the 8-byte MAC of one script command;
        `header` is CLA INS P1 P2 Lc, Lc counting the MAC."""
        mac = self._engine.generate_command_mac(header, self._script_ac(arqc, sequence), atc, data)
        return mac[:MAX_MAC_LENGTH]

    def verify_script_mac(self, header: bytes, data: bytes, mac: bytes, *, arqc: bytes, atc: bytes,
                          sequence: int) -> bool:
        """Book 2, 9.2: MAC over header || ATC || ARQC || data with the SMI session key."""
        if not MIN_MAC_LENGTH <= len(mac) <= MAX_MAC_LENGTH:
            return False
        expected = self._engine.generate_command_mac(header, self._script_ac(arqc, sequence), atc, data)
        return hmac.compare_digest(expected[:len(mac)], mac)

    def decipher_new_pin(self, enciphered: bytes, *, arqc: bytes, atc: bytes, sequence: int,
                         current_pin: str | None) -> str | None:
        """New PIN of PIN CHANGE/UNBLOCK (Book 3, 6.5.10), deciphered with the SMC session key.

        VIS: TDES-ECB of length || VIS PIN block || ISO 9797-1 pad; the block is XORed with the
        ICC AC master key and, when P2 = '01', with the current PIN. M/Chip: TDES-CBC of an ISO
        9564 format 2 PIN block. Returns None when the plaintext is not a well-formed PIN block.
        """
        if not enciphered or len(enciphered) % 8:
            return None
        if self.is_visa:
            key = kd.derive_visa_sm_sk(self._engine.icc_mk_smc, atc)
            plain = _unpad_method2(_tdes_decrypt(key, enciphered, cbc=False))
            if plain is None or not plain or plain[0] != len(plain) - 1 or plain[0] != 8:
                return None
            block = plain[1:]
            block = bytes(a ^ b for a, b in zip(block, bytes(4) + self._engine.icc_mk_ac[4:8], strict=True))
            if current_pin is not None:
                current = bytes.fromhex(current_pin + "0" * (16 - len(current_pin)))
                block = bytes(a ^ b for a, b in zip(block, current, strict=True))
            text = block.hex().upper()
            return _pin_from_digits(block[0], text[2:])
        key = kd.derive_common_sk(self._engine.icc_mk_smc, self._script_ac(arqc, sequence))
        plain = _tdes_decrypt(key, enciphered, cbc=True)
        if len(plain) > 8:
            unpadded = _unpad_method2(plain)
            if unpadded is None:
                return None
            plain = unpadded
        return parse_pin_block_format2(plain)
