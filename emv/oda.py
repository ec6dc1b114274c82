"""Offline data authentication: SDA, DDA and CDA (EMV 4.4 Book 3, 10.3; Book 2, 5 and 6).

The certificate arithmetic lives in `emv.certificates`; this module picks the method, gathers
the card's data objects, talks to the card (INTERNAL AUTHENTICATE) and sets the TVR and TSI bits.
A card whose data is malformed makes ODA fail; it never makes this step raise, except where the
spec ends the transaction (an INTERNAL AUTHENTICATE that does not complete).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

from emv import apdu, card_data, dol, status, tlv
from emv.apdu import Response
from emv.capk import CaPublicKey
from emv.certificates import (
    CertificateError,
    IccPublicKey,
    IssuerPublicKey,
    recover_icc_key,
    recover_issuer_key,
    verify_sdad,
    verify_ssad,
)
from emv.context import TSI, TVR, Bit, Context
from emv.errors import ApduError, DolError, TlvError
from emv.outcome import Terminate
from emv.requests import Transmit

# EMV 4.4 Book 2, 5.1.1 Table 4 / Book 3, 7.2 Table 29: data SDA needs from the card. The
# remainder 92 is needed only when the issuer key does not fit its certificate, which is known
# only once the certificate is recovered: a missing one fails the certificate's hash check.
_SDA_DATA = (0x8F, 0x90, 0x9F32, 0x93)
# EMV 4.4 Book 2, 6.1.1 Table 12 / Book 3, 7.2 Table 30: data DDA and CDA need (92, 9F48 likewise).
_DDA_DATA = (0x8F, 0x90, 0x9F32, 0x9F46, 0x9F47)
_UNPREDICTABLE_NUMBER = 0x9F37

_FAILED: dict[str, Bit] = {"sda": TVR.SDA_FAILED, "dda": TVR.DDA_FAILED, "cda": TVR.CDA_FAILED}


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


def offline_data_authentication(ctx: Context) -> Generator[Transmit, Response, None]:
    """Select and perform SDA, DDA or CDA (EMV 4.4 Book 3, 10.3).

    CDA only recovers the ICC key here (Book 2, 6.6); the signature is checked on the GENERATE AC
    answer by `verify_cda`. Raises `Terminate` only when INTERNAL AUTHENTICATE does not complete.
    """
    terminal = ctx.config.terminal
    aip = ctx.aip
    if aip is not None and aip.cda_supported and terminal.supports_cda:
        ctx.oda_method = "cda"
        ctx.note("oda: CDA selected")
        _prepare_cda(ctx)
    elif aip is not None and aip.dda_supported and terminal.supports_dda:
        ctx.oda_method = "dda"
        ctx.note("oda: DDA selected")
        yield from _perform_dda(ctx)
    elif aip is not None and aip.sda_supported and terminal.supports_sda:
        ctx.oda_method = "sda"
        ctx.note("oda: SDA selected")
        _perform_sda(ctx)
    else:
        # Book 3, 10.3: neither CDA, DDA nor SDA is supported by both.
        ctx.tvr.set(TVR.ODA_NOT_PERFORMED)
        ctx.note("oda: not performed, no method supported by both card and terminal")


def cda_requested(ctx: Context) -> bool:
    """Whether GENERATE AC asks for a CDA signature: CDA selected, ICC key recovered, not failed."""
    return (ctx.oda_method == "cda" and isinstance(ctx.icc_key, IccPublicKey)
            and not ctx.tvr.is_set(TVR.CDA_FAILED))


def verify_cda(ctx: Context, template: Sequence[tlv.Tlv], cid: int, *, second: bool) -> bool:
    """Check the CDA signature of a GENERATE AC answer (EMV 4.4 Book 2, 6.6.2).

    `template` holds the children of the format 2 template '77' in the order received, `cid` the
    Cryptogram Information Data it returned. On success the ICC Dynamic Number (9F4C) and the
    Application Cryptogram (9F26) recovered from the signature go to `ctx.card`. An AAC without a
    signature is no CDA failure (Book 2, 6.6.1: the card signs a TC or an ARQC): False is
    returned and the TVR left alone.
    """
    ctx.tsi.set(TSI.ODA_PERFORMED)
    key = ctx.icc_key
    if ctx.oda_method != "cda" or not isinstance(key, IccPublicKey):
        return _fail(ctx, "cda", "oda: CDA signature cannot be checked, no ICC public key")
    signatures = [item for item in template if item.tag == 0x9F4B]
    if not signatures:
        if cid & 0xC0 == apdu.CryptogramType.AAC:
            ctx.note("oda: AAC returned without a CDA signature")
            return False
        return _fail(ctx, "cda", "oda: GENERATE AC answer lacks the CDA signature (9F4B)")
    if len(signatures) > 1:
        return _fail(ctx, "cda", "oda: GENERATE AC answer holds 9F4B twice")
    # Book 2, 6.6.2 step 10: PDOL data, CDOL1 data, CDOL2 data (second GENERATE AC), then the
    # response's data objects except the signature, in the order returned.
    transaction_data = bytearray(ctx.pdol_data + ctx.cdol1_data)
    if second:
        transaction_data += ctx.cdol2_data
    for item in template:
        if item.tag != 0x9F4B:
            transaction_data += item.encode()
    try:
        signed = verify_sdad(key, signatures[0].value, ctx.unpredictable_number, cda=True, cid=cid,
                             transaction_data=bytes(transaction_data))
    except CertificateError as exc:
        return _fail(ctx, "cda", f"oda: CDA signature rejected ({exc.step.value})")
    ctx.card[0x9F4C] = signed.icc_dynamic_number
    if signed.application_cryptogram is not None:
        ctx.card[0x9F26] = signed.application_cryptogram
    ctx.note("oda: CDA signature verified")
    return True


# --- the three methods ----------------------------------------------------------------------


def _perform_sda(ctx: Context) -> None:
    # Book 3, 10.3: "SDA selected" is set whenever SDA is the method performed.
    ctx.tvr.set(TVR.SDA_SELECTED)
    ctx.tsi.set(TSI.ODA_PERFORMED)
    if not _static_data_usable(ctx, "sda", _SDA_DATA):
        return
    issuer = _issuer_key_or_fail(ctx, "sda")
    if issuer is None:
        return
    try:
        # Book 2, 5.4.
        code = verify_ssad(issuer, ctx.card[0x93], bytes(ctx.oda_data))
    except CertificateError as exc:
        _fail(ctx, "sda", f"oda: signed static application data rejected ({exc.step.value})")
        return
    ctx.card[0x9F45] = code  # Data Authentication Code, Book 2, 5.4
    ctx.note("oda: SDA succeeded")


def _perform_dda(ctx: Context) -> Generator[Transmit, Response, None]:
    ctx.tsi.set(TSI.ODA_PERFORMED)
    key = _icc_key(ctx, "dda")
    if key is None:
        return
    ddol_data = _ddol_data(ctx)
    if ddol_data is None:
        return
    try:
        command = apdu.internal_authenticate(ddol_data)  # Book 2, 6.5.1
    except ApduError:
        _fail(ctx, "dda", "oda: DDOL data does not fit INTERNAL AUTHENTICATE")
        return
    response = yield Transmit(command)
    if response.sw != 0x9000 and not status.is_warning(response.sw):
        # Book 3, 6.5.9.5 and 6.3.5: the command did not complete; the transaction ends.
        _fail(ctx, "dda", f"oda: INTERNAL AUTHENTICATE answered {response.sw:04X}")
        raise Terminate("card_error", f"INTERNAL AUTHENTICATE answered {response.sw:04X}")
    sdad = _sdad_of(response.data)
    if sdad is None:
        _fail(ctx, "dda", "oda: INTERNAL AUTHENTICATE answer is not a format 1 or 2 template with 9F4B")
        return
    try:
        signed = verify_sdad(key, sdad, ddol_data)  # Book 2, 6.5.2
    except CertificateError as exc:
        _fail(ctx, "dda", f"oda: signed dynamic application data rejected ({exc.step.value})")
        return
    ctx.card[0x9F4C] = signed.icc_dynamic_number
    ctx.note("oda: DDA succeeded")


def _prepare_cda(ctx: Context) -> None:
    # Book 2, 6.6: the keys may be recovered before GENERATE AC; Book 3, 10.3: a failure here sets
    # "CDA failed" and ODA counts as performed. Otherwise TSI is set when the signature is checked.
    key = _icc_key(ctx, "cda")
    if key is not None:
        ctx.note("oda: CDA keys recovered, signature to be checked at GENERATE AC")
    else:
        ctx.tsi.set(TSI.ODA_PERFORMED)


# --- shared steps ---------------------------------------------------------------------------


def _fail(ctx: Context, method: str, event: str, *, data_missing: bool = False) -> bool:
    ctx.tvr.set(_FAILED[method])
    if data_missing:
        ctx.tvr.set(TVR.ICC_DATA_MISSING)
    ctx.note(event)
    return False


def _static_data_usable(ctx: Context, method: str, required: tuple[int, ...]) -> bool:
    """Data presence (Book 3, 7.2), ODA records (Book 3, 10.3) and the tag list 9F4A."""
    missing = [f"{tag:X}" for tag in required if not ctx.card.get(tag)]
    if missing:
        return _fail(ctx, method, f"oda: card lacks {', '.join(missing)}", data_missing=True)
    if ctx.oda_record_invalid:
        # Book 3, 10.3: a record for ODA not coded in a '70' template makes ODA fail.
        return _fail(ctx, method, "oda: a record for offline data authentication is not a '70' template")
    tag_list = ctx.card.get(0x9F4A)
    if tag_list is not None and tag_list not in (b"", b"\x82"):
        # Book 3, 10.3: the Static Data Authentication Tag List may only name the AIP ('82').
        return _fail(ctx, method, "oda: static data authentication tag list names more than the AIP")
    return True


def _issuer_key_or_fail(ctx: Context, method: str) -> IssuerPublicKey | None:
    key = issuer_public_key(ctx)
    if key is None:
        _fail(ctx, method, "oda: no issuer public key")
    return key


def _icc_key(ctx: Context, method: str) -> IccPublicKey | None:
    """Recover the ICC Public Key (Book 2, 6.4) into `ctx.icc_key`, or fail `method`."""
    if not _static_data_usable(ctx, method, _DDA_DATA):
        return None
    issuer = _issuer_key_or_fail(ctx, method)
    pan = _pan(ctx)
    if issuer is None or pan is None:
        return None
    try:
        key = recover_icc_key(issuer, ctx.card[0x9F46], ctx.card.get(0x9F48), ctx.card[0x9F47],
                              static_data=bytes(ctx.oda_data), pan=pan, today=ctx.transaction.when.date())
    except CertificateError as exc:
        _fail(ctx, method, f"oda: ICC public key rejected ({exc.step.value})")
        return None
    ctx.icc_key = key
    ctx.note("oda: ICC public key recovered")
    return key


def _ddol_data(ctx: Context) -> bytes | None:
    """The DDOL data for INTERNAL AUTHENTICATE (Book 2, 6.5.1; Book 3, 5.4), or None on failure."""
    ddol = ctx.card.get(0x9F49)
    source = "card"
    if ddol is None:
        # Book 2, 6.5.1: without a DDOL in the card, the terminal's default DDOL.
        ddol = ctx.aid_params.default_ddol if ctx.aid_params is not None else b""
        source = "default"
    try:
        entries = dol.parse(ddol)
    except DolError:
        _fail(ctx, "dda", f"oda: {source} DDOL is malformed")
        return None
    if not any(entry.tag == _UNPREDICTABLE_NUMBER for entry in entries):
        # Book 2, 6.5.1: the DDOL must ask for the Unpredictable Number.
        _fail(ctx, "dda", f"oda: {source} DDOL does not contain the unpredictable number (9F37)")
        return None
    ctx.note(f"oda: INTERNAL AUTHENTICATE with the {source} DDOL")
    return dol.build(entries, ctx.dol_data())


def _sdad_of(data: bytes) -> bytes | None:
    """Signed Dynamic Application Data from an INTERNAL AUTHENTICATE answer (Book 3, 6.5.9.4)."""
    try:
        objects = tlv.decode(data)
    except TlvError:
        return None
    if len(objects) != 1:
        return None
    (answer,) = objects
    if answer.tag == 0x80:
        return answer.value
    if answer.tag == 0x77 and answer.children is not None:
        found = [child for child in answer.children if child.tag == 0x9F4B]
        if len(found) == 1:
            return found[0].value
    return None
