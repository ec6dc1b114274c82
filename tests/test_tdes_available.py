"""pyemv and psec compute with `cryptography`'s TripleDES, which newer releases deprecate.

This fails the day TDES stops working with the pinned `cryptography` range (pyproject.toml).
"""

from __future__ import annotations

import warnings

from cryptography.hazmat.primitives.ciphers import Cipher, modes


def test_tdes_ecb_known_answer() -> None:
    # NIST SP 800-67 / FIPS 46-3 single-DES known answer, run as two-key TDES with K1=K2:
    # key 0123456789ABCDEF, plaintext "Now is t" (4E6F772069732074) -> 3FA40E8A984D4815.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
        except ImportError:  # cryptography < 43
            from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
        key = bytes.fromhex("0123456789ABCDEF") * 2
        enc = Cipher(TripleDES(key), modes.ECB()).encryptor()
        assert (enc.update(bytes.fromhex("4E6F772069732074")) + enc.finalize()).hex().upper() \
            == "3FA40E8A984D4815"


def test_pyemv_still_computes_an_arqc() -> None:
    from pyemv import tools

    # The library's own DES path must run (it imports TripleDES from the old location).
    out = tools.encrypt_tdes_ecb(bytes.fromhex("0123456789ABCDEF") * 2, bytes.fromhex("4E6F772069732074"))
    assert out.hex().upper() == "3FA40E8A984D4815"
