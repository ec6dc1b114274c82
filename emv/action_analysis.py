"""Terminal action analysis, the GENERATE AC exchange and card action analysis.

EMV 4.4 Book 3, 10.7 (terminal action analysis) and 10.8 (card action analysis), Book 3, 6.5.5
(GENERATE AC), Book 4, 6.3.6 and 6.3.7. The second GENERATE AC of `emv.completion` goes through
`generate_ac` here too, so both cryptograms are requested, parsed and checked the same way.
"""

from __future__ import annotations

import hashlib
from collections import ChainMap
from collections.abc import Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from emv import apdu, card_data, dol, oda, tlv
from emv.apdu import CryptogramType, Response
from emv.context import TSI, TVR, Context
from emv.errors import ApduError, DolError, EmvError
from emv.outcome import Terminate
from emv.requests import ApproveOffline, OfflineDecision, Transmit

# EMV 4.4 Book 3, 6.5.5.4, Table 15: Cryptogram Information Data '9F27'.
CID_TYPE_MASK = 0xC0  # b8-b7: AAC '00', TC '01', ARQC '10', '11' RFU
CID_ADVICE = 0x08  # b4: advice required
CID_REASON_MASK = 0x07  # b3-b1: reason / advice code
CID_REASONS: dict[int, str] = {
    0x01: "service not allowed",
    0x02: "PIN try limit exceeded",
    0x03: "issuer authentication failed",
}

# EMV 4.4 Book 3, 6.5.5.4: format 1 is CID (1) || ATC (2) || AC (8) || IAD (optional, up to 32).
FORMAT1_FIXED = 11
MAX_IAD = 32
AC_LENGTH = 8
ATC_LENGTH = 2

# EMV 4.4 Book 3, 10.7: an absent IAC-Denial counts as all zeros, an absent IAC-Online or
# IAC-Default as all ones.
ACTION_CODE_LENGTH = 5
IAC_DENIAL_ABSENT = bytes(ACTION_CODE_LENGTH)
IAC_ONLINE_ABSENT = b"\xff" * ACTION_CODE_LENGTH
IAC_DEFAULT_ABSENT = b"\xff" * ACTION_CODE_LENGTH

# EMV 4.4 Book 4, Annex A6: Authorisation Response Codes the terminal writes itself.
ARC_OFFLINE_APPROVED = b"Y1"
ARC_OFFLINE_DECLINED = b"Z1"

# The outcome's reason for a sale declined because the merchant's offline limits refused a TC is
# 'offline_refused:<their reason>'.
OFFLINE_REFUSED = "offline_refused"
# What a driver's answer to `ApproveOffline` that is no `OfflineDecision` counts as.
NO_OFFLINE_DECISION = "no_decision"

TAG_TC_HASH = 0x98
TAG_TDOL = 0x97

# EMV 4.4 Book 3, 6.5.5.2, Table 13 and 9.3: the card may answer with the type asked for or a
# lower one, highest first TC, ARQC, AAC; in the second GENERATE AC no ARQC.
_ALLOWED_FIRST: dict[CryptogramType, frozenset[CryptogramType]] = {
    CryptogramType.AAC: frozenset({CryptogramType.AAC}),
    CryptogramType.ARQC: frozenset({CryptogramType.AAC, CryptogramType.ARQC}),
    CryptogramType.TC: frozenset({CryptogramType.AAC, CryptogramType.ARQC, CryptogramType.TC}),
}
_ALLOWED_SECOND: dict[CryptogramType, frozenset[CryptogramType]] = {
    CryptogramType.AAC: frozenset({CryptogramType.AAC}),
    CryptogramType.TC: frozenset({CryptogramType.AAC, CryptogramType.TC}),
}

# The GENERATE AC objects a new answer replaces in `ctx.card` (Book 3, 6.5.5.4).
_AC_TAGS = (0x9F27, 0x9F36, 0x9F26, 0x9F10, 0x9F4B)


@dataclass(frozen=True)
class AcResult:
    """One GENERATE AC answer (Book 3, 6.5.5.4).

    `cryptogram_type` is the card's (CID b8-b7), except after a failed CDA on a TC or ARQC: the
    terminal then declines offline and `cryptogram_type` is AAC while `cid` keeps what the card
    said (Book 2, 6.6.2). `cryptogram` is empty when it travelled inside the CDA signature and
    nobody recovered it.
    """

    cid: int
    cryptogram_type: CryptogramType
    atc: bytes
    cryptogram: bytes
    iad: bytes | None
    advice: bool
    cda_signed: bool
    objects: dict[int, bytes]

    @property
    def name(self) -> str:
        return self.cryptogram_type.name

    def __repr__(self) -> str:
        return (f"AcResult({self.name}, CID={self.cid:02X}, ATC={self.atc.hex().upper()}, "
                f"cda_signed={self.cda_signed}, advice={self.advice})")


def _card_error(detail: str) -> Terminate:
    return Terminate("card_error", detail)


def _cryptogram_type(cid: int) -> CryptogramType:
    try:
        return CryptogramType(cid & CID_TYPE_MASK)
    except ValueError:
        raise _card_error(f"GENERATE AC: CID {cid:02X} names the RFU cryptogram type '11'") from None


def _parse_format1(value: bytes) -> AcResult:
    if not FORMAT1_FIXED <= len(value) <= FORMAT1_FIXED + MAX_IAD:
        raise _card_error(f"GENERATE AC: format 1 answer of {len(value)} bytes")
    cid = value[0]
    atc, cryptogram, iad = value[1:3], value[3:11], value[11:] or None
    objects = {0x9F27: value[:1], 0x9F36: atc, 0x9F26: cryptogram}
    if iad is not None:
        objects[0x9F10] = iad
    return AcResult(cid, _cryptogram_type(cid), atc, cryptogram, iad, bool(cid & CID_ADVICE), False,
                    objects)


def _parse_format2(template: tlv.Tlv) -> AcResult:
    found = list(tlv.primitives(template.children or ()))
    tags = [tag for tag, _ in found]
    if len(set(tags)) != len(tags):
        raise _card_error("GENERATE AC: format 2 answer repeats a data object")
    objects = dict(found)
    for tag, name in ((0x9F27, "CID"), (0x9F36, "ATC")):
        if tag not in objects:
            raise _card_error(f"GENERATE AC: format 2 answer lacks {name} ({tag:X})")
    cid_value, atc = objects[0x9F27], objects[0x9F36]
    if len(cid_value) != 1:
        raise _card_error(f"GENERATE AC: CID of {len(cid_value)} bytes")
    if len(atc) != ATC_LENGTH:
        raise _card_error(f"GENERATE AC: ATC of {len(atc)} bytes")
    cryptogram = objects.get(0x9F26, b"")
    sdad = objects.get(0x9F4B)
    if 0x9F26 in objects and len(cryptogram) != AC_LENGTH:
        raise _card_error(f"GENERATE AC: cryptogram of {len(cryptogram)} bytes")
    if 0x9F26 not in objects and not sdad:
        # Book 3, 6.5.5.4: the cryptogram is mandatory unless it is inside the CDA signature.
        raise _card_error("GENERATE AC: format 2 answer has neither 9F26 nor 9F4B")
    iad = objects.get(0x9F10)
    if iad is not None and len(iad) > MAX_IAD:
        raise _card_error(f"GENERATE AC: issuer application data of {len(iad)} bytes")
    cid = cid_value[0]
    return AcResult(cid, _cryptogram_type(cid), atc, cryptogram, iad, bool(cid & CID_ADVICE),
                    sdad is not None, objects)


def parse_generate_ac(data: bytes) -> tuple[AcResult, list[tlv.Tlv]]:
    """Read a GENERATE AC answer (Book 3, 6.5.5.4): format 1 ('80') or format 2 ('77').

    Returns the result and the template's children in card order (what CDA hashes, Book 2,
    6.6.2); format 1 has none. Anything malformed raises `Terminate("card_error", ...)`.
    """
    try:
        items = tlv.decode(data)
    except EmvError as exc:
        raise _card_error(f"GENERATE AC: malformed answer ({exc})") from None
    if len(items) != 1:
        raise _card_error(f"GENERATE AC: answer holds {len(items)} objects, not one template")
    top = items[0]
    if top.tag == 0x80:
        return _parse_format1(top.value), []
    if top.tag == 0x77 and top.children is not None:
        return _parse_format2(top), list(top.children)
    raise _card_error(f"GENERATE AC: unexpected template {tlv.tag_hex(top.tag)}")


# -- terminal action analysis (Book 3, 10.7) ---------------------------------------------------


def _issuer_code(ctx: Context, tag: int, absent: bytes) -> bytes:
    value = ctx.card.get(tag)
    if value is None:
        return absent
    if len(value) != ACTION_CODE_LENGTH:
        raise _card_error(f"issuer action code {tag:X} of {len(value)} bytes")
    return value


def _matched_names(tvr: bytes, code: bytes) -> list[str]:
    return [name for (index, mask), name in card_data.TVR_BITS.items() if tvr[index] & code[index] & mask]


def _match(ctx: Context, kind: str, tac: bytes, iac: bytes) -> str | None:
    """The TVR bits `tac` or `iac` pick out, as a note, or None when neither matches."""
    tvr = ctx.tvr.value
    parts = [f"{who}: {', '.join(names)}"
             for who, code in (("TAC", tac), ("IAC", iac))
             if (names := _matched_names(tvr, code))]
    if not parts:
        return None
    return f"{kind} codes match ({'; '.join(parts)})"


@dataclass(frozen=True)
class _Codes:
    tac_denial: bytes
    tac_online: bytes
    tac_default: bytes
    iac_denial: bytes
    iac_online: bytes
    iac_default: bytes


def _codes(ctx: Context) -> _Codes:
    params = ctx.aid_params
    zero = bytes(ACTION_CODE_LENGTH)
    return _Codes(
        tac_denial=params.tac_denial if params else zero,
        tac_online=params.tac_online if params else zero,
        tac_default=params.tac_default if params else zero,
        iac_denial=_issuer_code(ctx, 0x9F0E, IAC_DENIAL_ABSENT),
        iac_online=_issuer_code(ctx, 0x9F0F, IAC_ONLINE_ABSENT),
        iac_default=_issuer_code(ctx, 0x9F0D, IAC_DEFAULT_ABSENT),
    )


def denial_match(ctx: Context, bits: tuple[tuple[int, int], ...] | None = None) -> str | None:
    """Book 3, 10.7: the TVR against TAC-Denial and IAC-Denial; with `bits`, only those bits."""
    codes = _codes(ctx)
    tac, iac = codes.tac_denial, codes.iac_denial
    if bits is not None:
        mask = bytearray(ACTION_CODE_LENGTH)
        for index, bit in bits:
            mask[index] |= bit
        tac = bytes(a & b for a, b in zip(tac, mask, strict=True))
        iac = bytes(a & b for a, b in zip(iac, mask, strict=True))
    return _match(ctx, "denial", tac, iac)


def terminal_action_analysis(ctx: Context) -> CryptogramType:
    """Book 3, 10.7; Book 4, 6.3.6: the cryptogram the first GENERATE AC asks for."""
    if ctx.merchant_decline:
        ctx.note(f"taa: AAC, merchant declines ({ctx.merchant_decline})")
        return CryptogramType.AAC
    codes = _codes(ctx)
    if ctx.aid_params is None:
        ctx.note("taa: no terminal parameters for this application, TACs taken as zeros")
    denial = _match(ctx, "denial", codes.tac_denial, codes.iac_denial)
    if denial:
        ctx.note(f"taa: AAC, {denial}")
        return CryptogramType.AAC
    terminal = ctx.config.terminal
    if terminal.offline_only:
        default = _match(ctx, "default", codes.tac_default, codes.iac_default)
        if default:
            ctx.note(f"taa: AAC, offline-only terminal and {default}")
            return CryptogramType.AAC
        ctx.note("taa: TC, offline-only terminal and no default code matches")
        return CryptogramType.TC
    online = _match(ctx, "online", codes.tac_online, codes.iac_online)
    if online:
        ctx.note(f"taa: ARQC, {online}")
        return CryptogramType.ARQC
    if terminal.online_only:
        # Book 4, Annex A1: an online-only terminal always asks the issuer.
        ctx.note("taa: ARQC, online-only terminal")
        return CryptogramType.ARQC
    if ctx.transaction.force_online:
        # Book 3, Annex C5 (TVR byte 4 b4): the merchant forced the transaction online.
        ctx.note("taa: ARQC, merchant forced the transaction online")
        return CryptogramType.ARQC
    ctx.note("taa: TC, no denial or online code matches")
    return CryptogramType.TC


def default_action_analysis(ctx: Context) -> CryptogramType:
    """Book 3, 10.7 (unable to go online); Book 4, 6.3.7: TAC-Default and IAC-Default decide."""
    if ctx.merchant_decline:
        ctx.note(f"default analysis: AAC, merchant declines ({ctx.merchant_decline})")
        return CryptogramType.AAC
    if ctx.config.terminal.online_only:
        ctx.note("default analysis: AAC, online-only terminal could not go online")
        return CryptogramType.AAC
    codes = _codes(ctx)
    default = _match(ctx, "default", codes.tac_default, codes.iac_default)
    if default:
        ctx.note(f"default analysis: AAC, {default}")
        return CryptogramType.AAC
    ctx.note("default analysis: TC, no default code matches")
    return CryptogramType.TC


# -- DOL data for GENERATE AC (Book 3, 5.4) ----------------------------------------------------


def _tc_hash(ctx: Context) -> bytes:
    """TC Hash Value '98': SHA-1 of the TDOL data (Book 3, 5.4 and Annex A; Book 2, B3)."""
    tdol = ctx.card.get(TAG_TDOL)
    if tdol is None:
        tdol = ctx.aid_params.default_tdol if ctx.aid_params is not None else b""
        if tdol:
            ctx.tvr.set(TVR.DEFAULT_TDOL_USED)
            ctx.note("tdol: the card has none, the default TDOL is used")
        else:
            ctx.note("tdol: neither the card nor the terminal has one, hash of empty data")
    try:
        values = dol.build(tdol, ctx.dol_data())
    except DolError as exc:
        raise _card_error(f"TDOL malformed: {exc}") from None
    return hashlib.sha1(values).digest()


def cdol_data(ctx: Context, tag: int, extra: Mapping[int, bytes] | None = None) -> bytes:
    """The values CDOL1 ('8C') or CDOL2 ('8D') asks for, filled from `extra` then `ctx.dol_data()`."""
    name = "CDOL1" if tag == 0x8C else "CDOL2"
    cdol = ctx.card.get(tag)
    if cdol is None:
        raise Terminate("missing_data", f"{name} ({tag:X}) absent")
    try:
        entries = dol.parse(cdol)
    except DolError as exc:
        raise _card_error(f"{name} malformed: {exc}") from None
    overlay: dict[int, bytes] = dict(extra or {})
    if any(entry.tag == TAG_TC_HASH for entry in entries):
        overlay[TAG_TC_HASH] = _tc_hash(ctx)
    return dol.build(entries, ChainMap(overlay, ctx.dol_data()))


# -- GENERATE AC and card action analysis (Book 3, 10.8) ---------------------------------------


def generate_ac(ctx: Context, requested: CryptogramType, cdol_values: bytes, *,
                second: bool) -> Generator[Transmit, Response, AcResult]:
    """Send one GENERATE AC, check the answer (Book 3, 10.8) and verify CDA when asked.

    CDA is asked with a TC or an ARQC in the first GENERATE AC and with a TC in the second
    (Book 2, 6.6; Book 4, 6.3.2); an AAC is never signed.
    """
    which = "second" if second else "first"
    wants_cda = requested in ((CryptogramType.TC,) if second else (CryptogramType.TC, CryptogramType.ARQC))
    cda = wants_cda and oda.cda_requested(ctx)
    try:
        command = apdu.generate_ac(requested, cdol_values, cda=cda)
    except ApduError as exc:
        raise _card_error(f"{which} GENERATE AC cannot be built: {exc}") from None
    ctx.note(f"{which} GENERATE AC: {requested.name} asked" + (" with CDA" if cda else ""))
    response = yield Transmit(command)
    if response.sw != 0x9000:
        raise _card_error(f"{which} GENERATE AC answered {response.sw:04X}")
    if not second:
        ctx.tsi.set(TSI.CARD_RISK_MANAGEMENT_PERFORMED)
    result, template = parse_generate_ac(response.data)
    allowed = (_ALLOWED_SECOND if second else _ALLOWED_FIRST)[requested]
    if result.cryptogram_type not in allowed:
        raise _card_error(f"{which} GENERATE AC: the card answered {result.name} to {requested.name}")
    for tag in _AC_TAGS:
        ctx.card.pop(tag, None)
    ctx.card.update(result.objects)
    ctx.note(f"{which} GENERATE AC: the card answered {result.name}")
    reason = CID_REASONS.get(result.cid & CID_REASON_MASK)
    if reason:
        ctx.note(f"{which} GENERATE AC: the card gives the reason '{reason}'")
    if result.advice:
        ctx.note(f"{which} GENERATE AC: the card asks for an advice")
    if cda and result.cryptogram_type != CryptogramType.AAC:
        if not oda.verify_cda(ctx, template, result.cid, second=second):
            # Book 2, 6.6.2; Book 4, 6.3.2: a TC or ARQC whose CDA fails is declined offline.
            ctx.note(f"{which} GENERATE AC: CDA failed, declined offline")
            return replace(result, cryptogram_type=CryptogramType.AAC)
        # Book 2, 6.6.2: the cryptogram is the one inside the signature, which `verify_cda` puts
        # in `ctx.card`.
        recovered = ctx.card.get(0x9F26, b"")
        if recovered != result.cryptogram:
            result = replace(result, cryptogram=recovered, objects={**result.objects, 0x9F26: recovered})
    if not result.cryptogram:
        raise _card_error(f"{which} GENERATE AC: no cryptogram outside a CDA signature")
    return result


def approve_offline(ctx: Context, *, unable_online: bool) -> Generator[ApproveOffline, Any, str | None]:
    """Ask the driver whether the merchant's offline limits allow the TC about to be asked.

    Returns None when they do, else the refusal's reason word (also kept in
    `ctx.offline_refused`). An answer that is no `OfflineDecision` is a refusal.
    """
    aid = ctx.card.get(0x84) or (ctx.aid_params.aid if ctx.aid_params is not None else b"")
    answer = yield ApproveOffline(
        aid=aid,
        amount=ctx.transaction.amount,
        currency=ctx.config.terminal.currency,
        transaction_type=ctx.transaction.transaction_type,
        online_pin=ctx.tvr.is_set(TVR.ONLINE_PIN_ENTERED),
        unable_online=unable_online,
    )
    if not isinstance(answer, OfflineDecision):
        ctx.note("offline approval: the answer is not an OfflineDecision, refused")
        answer = OfflineDecision.refuse(NO_OFFLINE_DECISION)
    if answer.allowed:
        return None
    reason = answer.reason or NO_OFFLINE_DECISION
    ctx.offline_refused = reason
    return reason


def refused_offline_reason(reason: str) -> str:
    """The outcome's reason for a sale the offline limits declined: 'offline_refused:<reason>'."""
    return f"{OFFLINE_REFUSED}:{reason}"


def first_generate_ac(ctx: Context) -> Generator[Transmit | ApproveOffline, Any, AcResult]:
    """Book 3, 10.7 and 10.8: terminal action analysis, then the first GENERATE AC.

    A TC is asked only when the merchant's offline limits allow it (`ApproveOffline`); when they
    do not, the card is asked for an ARQC with TVR byte 4 b4 "merchant forced transaction
    online" set (Book 3, Annex C5), or, on an offline-only terminal that has no issuer to ask,
    for an AAC. Returns the card's answer; its `cryptogram_type` is what the transaction does
    next (TC: approved offline, ARQC: go online, AAC: declined offline).
    """
    requested = terminal_action_analysis(ctx)
    if requested == CryptogramType.TC:
        refused = yield from approve_offline(ctx, unable_online=False)
        if refused is not None and ctx.config.terminal.offline_only:
            ctx.merchant_decline = refused_offline_reason(refused)
            ctx.note(f"taa: AAC, offline approval refused ({refused}), offline-only terminal")
            requested = CryptogramType.AAC
        elif refused is not None:
            ctx.tvr.set(TVR.MERCHANT_FORCED_ONLINE)
            ctx.note(f"taa: ARQC, offline approval refused ({refused}), merchant forced online")
            requested = CryptogramType.ARQC
    ctx.cdol1_data = cdol_data(ctx, 0x8C)
    result = yield from generate_ac(ctx, requested, ctx.cdol1_data, second=False)
    if result.cryptogram_type == CryptogramType.TC:
        ctx.authorisation_response_code = ARC_OFFLINE_APPROVED
    elif result.cryptogram_type == CryptogramType.AAC:
        ctx.authorisation_response_code = ARC_OFFLINE_DECLINED
    return result
