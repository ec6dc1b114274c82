"""Online processing, issuer script processing and completion (EMV 4.4 Book 3, 10.9-10.11;
Book 4, 6.3.7-6.3.9): after an ARQC, the issuer's answer (or its absence) leads to the second
GENERATE AC.

Scripts come from the host as received; a malformed one is reported as failed in the Issuer
Script Results and the TVR, it never stops the transaction.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any

from emv import apdu, dol, tlv
from emv.action_analysis import (
    AcResult,
    approve_offline,
    cdol_data,
    default_action_analysis,
    denial_match,
    generate_ac,
    refused_offline_reason,
)
from emv.apdu import CryptogramType, Response
from emv.context import TSI, TVR, Context
from emv.errors import ApduError, DolError, TlvError, TransportError
from emv.outcome import Terminate
from emv.requests import ApproveOffline, HostStatus, OnlineResponse, Transmit

TAG_SCRIPT_BEFORE = 0x71  # Issuer Script Template 1: before the final GENERATE AC
TAG_SCRIPT_AFTER = 0x72  # Issuer Script Template 2: after it
TAG_SCRIPT_ID = 0x9F18
TAG_SCRIPT_COMMAND = 0x86
TAG_ISSUER_AUTH_DATA = 0x91
SCRIPT_ID_LENGTH = 4

# EMV 4.4 Book 3, 10.10: after these SW1 the next script command is sent.
SCRIPT_SW1_CONTINUE = (0x90, 0x62, 0x63)

# EMV 4.4 Book 4, Annex A5 (Issuer Script Results, byte 1): result in b8-b5, the sequence
# number of the failing command in b4-b1 ('0' not specified, 'F' for 15 and above).
SCRIPT_FAILED = 0x10
SCRIPT_SUCCESSFUL = 0x20
MAX_SEQUENCE = 0x0F

# EMV 4.4 Book 4, Annex A6: unable to go online, approved ('Y3') or declined ('Z3') offline.
ARC_UNABLE_APPROVED = b"Y3"
ARC_UNABLE_DECLINED = b"Z3"
ARC_LENGTH = 2


@dataclass(frozen=True)
class IssuerScript:
    """One Issuer Script Template ('71' or '72', Book 3, 10.10) as the host sent it.

    `error` says why the template cannot be processed; its commands are then not sent.
    """

    tag: int
    identifier: bytes  # 9F18, or zeros when absent (Book 4, Annex A5)
    commands: tuple[bytes, ...]
    error: str | None = None

    def __repr__(self) -> str:
        state = f"error={self.error!r}" if self.error else f"{len(self.commands)} commands"
        return f"IssuerScript({self.tag:X}, {state})"


def _script(tag: int, children: Iterable[tlv.Tlv]) -> IssuerScript:
    identifier = bytes(SCRIPT_ID_LENGTH)
    commands: list[bytes] = []
    error: str | None = None
    for child in children:
        if child.tag == TAG_SCRIPT_ID:
            if len(child.value) == SCRIPT_ID_LENGTH:
                identifier = child.value
            else:
                error = f"script identifier of {len(child.value)} bytes"
        elif child.tag == TAG_SCRIPT_COMMAND:
            commands.append(child.value)
    if error is None and not commands:
        error = "no script command"
    return IssuerScript(tag, identifier, tuple(commands), error)


def parse_scripts(data: bytes) -> list[IssuerScript]:
    """Split the host's script data into templates '71' and '72', in the order received.

    Never raises: a template whose contents are malformed comes back with `error` set; when the
    framing itself breaks, the broken template (if it is a '71' or '72') is the last one.
    Objects other than '71' and '72' are skipped.
    """
    scripts: list[IssuerScript] = []
    pos = 0
    while pos < len(data):
        if data[pos] in (0x00, 0xFF):  # Book 3, Annex B1: padding between objects
            pos += 1
            continue
        first = data[pos]
        try:
            tag, body = tlv.read_tag(data, pos)
            length, body = tlv.read_length(data, body, tag)
        except TlvError as exc:
            if first in (TAG_SCRIPT_BEFORE, TAG_SCRIPT_AFTER):
                scripts.append(IssuerScript(first, bytes(SCRIPT_ID_LENGTH), (), exc.reason))
            break
        end = body + length
        if end > len(data):
            if tag in (TAG_SCRIPT_BEFORE, TAG_SCRIPT_AFTER):
                scripts.append(IssuerScript(tag, bytes(SCRIPT_ID_LENGTH), (), "template truncated"))
            break
        if tag in (TAG_SCRIPT_BEFORE, TAG_SCRIPT_AFTER):
            try:
                children = tlv.decode(data[body:end])
            except TlvError as exc:
                partial = _script(tag, exc.partial)
                scripts.append(IssuerScript(tag, partial.identifier, (), exc.reason))
            else:
                scripts.append(_script(tag, children))
        pos = end
    return scripts


def process_scripts(ctx: Context, scripts: Iterable[IssuerScript], *,
                    before_final_ac: bool) -> Generator[Transmit, Response, None]:
    """Book 3, 10.10: send each script's commands in order; a command answered with an SW1
    other than '90', '62' or '63' ends its script. Each script adds 5 bytes to the Issuer
    Script Results (Book 4, Annex A5); a failure sets the TVR bit for its phase."""
    phase = "before" if before_final_ac else "after"
    failed_bit = TVR.SCRIPT_FAILED_BEFORE_FINAL_AC if before_final_ac else TVR.SCRIPT_FAILED_AFTER_FINAL_AC
    for script in scripts:
        ctx.tsi.set(TSI.SCRIPT_PROCESSING_PERFORMED)
        failed_at: int | None = None
        if script.error is not None:
            failed_at = 0
            ctx.note(f"script {phase} final AC: not processed ({script.error})")
        else:
            for sequence, raw in enumerate(script.commands, start=1):
                try:
                    command = apdu.Command.parse(raw)
                except ApduError:
                    failed_at = sequence
                    ctx.note(f"script {phase} final AC: command {sequence} is not a valid APDU")
                    break
                response = yield Transmit(command)
                if response.sw1 not in SCRIPT_SW1_CONTINUE:
                    failed_at = sequence
                    ctx.note(f"script {phase} final AC: command {sequence} answered {response.sw:04X}")
                    break
        if failed_at is None:
            result = SCRIPT_SUCCESSFUL
            ctx.note(f"script {phase} final AC: {len(script.commands)} commands processed")
        else:
            result = SCRIPT_FAILED | min(failed_at, MAX_SEQUENCE)
            ctx.tvr.set(failed_bit)
        ctx.script_results += bytes([result]) + script.identifier


def _external_authenticate(ctx: Context, data: bytes) -> Generator[Transmit, Response, None]:
    """Book 3, 10.9 and 6.5.4: one EXTERNAL AUTHENTICATE; anything but '9000' is a failure."""
    ctx.tsi.set(TSI.ISSUER_AUTHENTICATION_PERFORMED)
    try:
        command = apdu.external_authenticate(data)
    except ApduError:
        ctx.tvr.set(TVR.ISSUER_AUTHENTICATION_FAILED)
        ctx.note(f"issuer authentication: data of {len(data)} bytes cannot be sent, failed")
        return
    response = yield Transmit(command)
    if response.sw != 0x9000:
        ctx.tvr.set(TVR.ISSUER_AUTHENTICATION_FAILED)
        ctx.note(f"issuer authentication: EXTERNAL AUTHENTICATE answered {response.sw:04X}, failed")
    else:
        ctx.note("issuer authentication: passed")


def _cdol2_asks(ctx: Context, tag: int) -> bool:
    cdol2 = ctx.card.get(0x8D)
    if cdol2 is None:
        raise Terminate("missing_data", "CDOL2 (8D) absent")
    try:
        return any(entry.tag == tag for entry in dol.parse(cdol2))
    except DolError as exc:
        raise Terminate("card_error", f"CDOL2 malformed: {exc}") from None


def _second_generate_ac(ctx: Context, requested: CryptogramType,
                        extra: dict[int, bytes]) -> Generator[Transmit, Response, AcResult]:
    """Book 3, 10.11: the second GENERATE AC with the CDOL2 data."""
    ctx.cdol2_data = cdol_data(ctx, 0x8D, extra)
    return (yield from generate_ac(ctx, requested, ctx.cdol2_data, second=True))


def _require_arqc(first: AcResult) -> None:
    if first.cryptogram_type != CryptogramType.ARQC:
        raise Terminate("kernel_error", f"completion after a {first.name}, not an ARQC")


def complete_online(ctx: Context, first: AcResult,
                    response: OnlineResponse) -> Generator[Transmit | ApproveOffline, Any, AcResult]:
    """Book 3, 10.9-10.11; Book 4, 6.3.8-6.3.9: the issuer answered the ARQC.

    Scripts '71' run before the second GENERATE AC, scripts '72' after it. Issuer
    Authentication Data goes in the second GENERATE AC when CDOL2 asks for '91', else in an
    EXTERNAL AUTHENTICATE when the AIP says the card supports it.
    """
    _require_arqc(first)
    if response.status == HostStatus.UNABLE:
        return (yield from complete_unable_online(ctx, first))
    if len(response.response_code) == ARC_LENGTH:
        ctx.authorisation_response_code = response.response_code
    else:
        ctx.note(f"online: response code of {len(response.response_code)} bytes ignored")
    scripts = parse_scripts(response.scripts)
    yield from process_scripts(ctx, (s for s in scripts if s.tag == TAG_SCRIPT_BEFORE), before_final_ac=True)

    extra: dict[int, bytes] = {}
    auth_data = response.issuer_authentication_data
    if auth_data:
        if _cdol2_asks(ctx, TAG_ISSUER_AUTH_DATA):
            extra[TAG_ISSUER_AUTH_DATA] = auth_data
            ctx.note("issuer authentication: data sent in the second GENERATE AC (CDOL2)")
        elif ctx.aip is not None and ctx.aip.issuer_authentication_supported:
            yield from _external_authenticate(ctx, auth_data)
        else:
            ctx.note("issuer authentication: the card does not support it, data not sent")

    requested = CryptogramType.TC if response.approved else CryptogramType.AAC
    ctx.note(f"online: the issuer {'approved' if response.approved else 'declined'}")
    if requested == CryptogramType.TC and ctx.tvr.is_set(TVR.ISSUER_AUTHENTICATION_FAILED):
        # Book 3, 10.7 denial codes, applied to the one TVR bit online processing set (10.9).
        denial = denial_match(ctx, (TVR.ISSUER_AUTHENTICATION_FAILED,))
        if denial:
            ctx.note(f"completion: AAC, issuer authentication failed and {denial}")
            requested = CryptogramType.AAC
    final = yield from _second_generate_ac(ctx, requested, extra)
    try:
        yield from process_scripts(ctx, (s for s in scripts if s.tag == TAG_SCRIPT_AFTER),
                                   before_final_ac=False)
    except TransportError:
        # The card's final cryptogram and the issuer's answer stand; only the script failed
        # (Book 3, 10.10; TVR byte 5 b5).
        ctx.tvr.set(TVR.SCRIPT_FAILED_AFTER_FINAL_AC)
        ctx.tsi.set(TSI.SCRIPT_PROCESSING_PERFORMED)
        ctx.note("scripts after the final GENERATE AC: the card went away")
    return final


def complete_unable_online(ctx: Context, first: AcResult,
                           ) -> Generator[Transmit | ApproveOffline, Any, AcResult]:
    """Book 3, 10.7 (last step) and 10.11; Book 4, 6.3.7: the ARQC could not reach the issuer.

    TAC-Default and IAC-Default decide between a TC with 8A = 'Y3' and an AAC with 8A = 'Z3'; a
    TC is asked only when the merchant's offline limits allow it (`ApproveOffline`), else the
    AAC, with 'offline_refused:<reason>' as the merchant's decline.
    """
    _require_arqc(first)
    requested = default_action_analysis(ctx)
    if requested == CryptogramType.TC:
        refused = yield from approve_offline(ctx, unable_online=True)
        if refused is not None:
            ctx.merchant_decline = refused_offline_reason(refused)
            ctx.note(f"default analysis: AAC, offline approval refused ({refused})")
            requested = CryptogramType.AAC
    ctx.authorisation_response_code = (ARC_UNABLE_APPROVED if requested == CryptogramType.TC
                                       else ARC_UNABLE_DECLINED)
    return (yield from _second_generate_ac(ctx, requested, {}))
