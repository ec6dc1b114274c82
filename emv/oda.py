"""Offline data authentication: SDA, DDA and CDA (EMV 4.4 Book 3, 10.3; Book 2, 5 and 6).

The certificate arithmetic lives in `emv.certificates`; this module picks the method, gathers
the card's data objects, talks to the card (INTERNAL AUTHENTICATE) and sets the TVR and TSI bits.
A card whose data is malformed makes ODA fail; it never makes this step raise.
"""

from __future__ import annotations

from emv import card_data
from emv.capk import CaPublicKey
from emv.certificates import CertificateError, IssuerPublicKey, recover_issuer_key
from emv.context import Context


def _rid(ctx: Context) -> bytes | None:
    # EMV 4.4 Book 2, 5.2 / 6.2: the RID is the first 5 bytes of the selected AID.
    aid = ctx.card.get(0x84) or ctx.card.get(0x4F)
    if aid is None or len(aid) < 5:
        return None
    return aid[:5]


def _ca_key(ctx: Context) -> CaPublicKey | None:
    """The CA public key named by 8F for the selected RID, usable today (Book 2, 5.2 / 11.2)."""
    index = ctx.card.get(0x8F)
    rid = _rid(ctx)
    if index is None or len(index) != 1 or rid is None:
        ctx.note("oda: CA public key index (8F) or AID missing")
        return None
    key = ctx.config.ca_keys.get((rid, index[0]))
    name = f"{rid.hex().upper()}/{index[0]:02X}"
    if key is None:
        ctx.note(f"oda: CA public key {name} unknown to the terminal")
        return None
    if key.is_expired(ctx.transaction.when.date()):
        ctx.note(f"oda: CA public key {name} expired")
        return None
    if not key.verify_checksum():
        ctx.note(f"oda: CA public key {name} fails its checksum")
        return None
    return key


def _pan(ctx: Context) -> str | None:
    raw = ctx.card.get(0x5A)
    if raw is None:
        return None
    try:
        return card_data.pan_digits(raw)
    except card_data.CardDataError:
        return None


def issuer_public_key(ctx: Context) -> IssuerPublicKey | None:
    """Recover the Issuer Public Key (EMV 4.4 Book 2, 5.3 / 6.3) and cache it in `ctx.issuer_key`.

    Returns None when any data object is missing or any check fails; the reason goes to
    `ctx.note`, the TVR and TSI are left to the caller.
    """
    if isinstance(ctx.issuer_key, IssuerPublicKey):
        return ctx.issuer_key
    capk = _ca_key(ctx)
    if capk is None:
        return None
    certificate = ctx.card.get(0x90)
    exponent = ctx.card.get(0x9F32)
    pan = _pan(ctx)
    if certificate is None or exponent is None or pan is None:
        ctx.note("oda: issuer public key certificate (90), exponent (9F32) or PAN (5A) missing")
        return None
    try:
        key = recover_issuer_key(capk, certificate, ctx.card.get(0x92), exponent, pan=pan,
                                 today=ctx.transaction.when.date(), revoked=ctx.config.revoked)
    except CertificateError as exc:
        ctx.note(f"oda: issuer public key rejected ({exc.step.value})")
        return None
    ctx.issuer_key = key
    ctx.note("oda: issuer public key recovered")
    return key
