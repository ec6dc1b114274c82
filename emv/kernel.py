"""The EMV contact kernel: one whole transaction (EMV 4.4 Book 3, 10; Book 4, 6.3) as a generator.

`transaction()` yields the requests of `emv.requests` and returns an `Outcome`. It does no I/O:
the driver in `firmware/` (or a test) answers each request. The unpredictable number and
random selection come from the injected `rng`, the date and time from `Transaction.when`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from emv import (
    action_analysis,
    apdu,
    app_data,
    card_data,
    completion,
    cvm,
    dol,
    oda,
    online_data,
    restrictions,
    risk,
    selection,
    tlv,
)
from emv.aids import scheme_of
from emv.apdu import CryptogramType
from emv.context import TSI, TVR, Context, Transaction
from emv.errors import EmvError, TransportError
from emv.kernel_config import KernelConfig
from emv.outcome import Outcome, OutcomeKind, Terminate
from emv.requests import (
    ApproveOffline,
    CaptureSignature,
    ChooseApplication,
    ConfirmAmount,
    EnterOfflinePin,
    EnterOnlinePin,
    GoOnline,
    HostStatus,
    OnlineResponse,
    Transmit,
)
from emv.sensitive import Sensitive

Request = (Transmit | ChooseApplication | ConfirmAmount | EnterOfflinePin | EnterOnlinePin
           | CaptureSignature | GoOnline | ApproveOffline)

SW_OK = 0x9000
SW_CONDITIONS_NOT_SATISFIED = 0x6985  # Book 3, 10.1: the application does not accept this sale

# Book 3, 10.2 (Table 28): the data objects every application must give.
MANDATORY = {0x5F24: "Application Expiration Date", 0x5A: "PAN", 0x8C: "CDOL1", 0x8D: "CDOL2"}

# Book 1, 11.3.4: the DF Name comes with the FCI of the application selected. A second one in the
# GPO answer or a record is redundant (Book 3, 10.2) and would rename the AID sent to the host and
# the RID of the CA keys (Book 2, 5.2).
DF_NAME = 0x84

# Why a sale was declined offline, by the TVR bit that matched a Denial action code.
_DENIAL_REASONS: tuple[tuple[tuple[int, int], str], ...] = (
    (TVR.EXCEPTION_FILE, "exception_file"),
    (TVR.EXPIRED, "expired_application"),
    (TVR.NOT_YET_EFFECTIVE, "application_not_yet_effective"),
    (TVR.SERVICE_NOT_ALLOWED, "service_not_allowed"),
    (TVR.DIFFERENT_VERSIONS, "different_application_versions"),
    (TVR.SDA_FAILED, "sda_failed"),
    (TVR.DDA_FAILED, "dda_failed"),
    (TVR.CDA_FAILED, "cda_failed"),
    (TVR.ICC_DATA_MISSING, "icc_data_missing"),
    (TVR.ODA_NOT_PERFORMED, "oda_not_performed"),
    (TVR.PIN_TRY_LIMIT_EXCEEDED, "pin_try_limit_exceeded"),
    (TVR.CVM_NOT_SUCCESSFUL, "cvm_failed"),
    (TVR.UNRECOGNISED_CVM, "unrecognised_cvm"),
    (TVR.PIN_NOT_ENTERED, "pin_not_entered"),
    (TVR.PIN_PAD_NOT_WORKING, "pin_pad_not_working"),
    (TVR.ISSUER_AUTHENTICATION_FAILED, "issuer_authentication_failed"),
    (TVR.LCOL_EXCEEDED, "lower_offline_limit_exceeded"),
    (TVR.UCOL_EXCEEDED, "upper_offline_limit_exceeded"),
    (TVR.FLOOR_LIMIT_EXCEEDED, "floor_limit_exceeded"),
    (TVR.NEW_CARD, "new_card"),
    # Set by the merchant's "force online" or by offline limits that refused a TC: with no issuer
    # reached, the Default codes decline on it (Book 3, 10.7).
    (TVR.MERCHANT_FORCED_ONLINE, "merchant_forced_online"),
)


@dataclass
class _Progress:
    """How far the transaction went, for an outcome when the card goes away."""

    first: action_analysis.AcResult | None = None
    final: action_analysis.AcResult | None = None
    response: OnlineResponse | None = None


def transaction(config: KernelConfig, txn: Transaction, *, rng: Callable[[int], bytes],
                transaction_log: Callable[[str], int] | None = None,
                ) -> Generator[Request, Any, Outcome]:
    """Run one sale. A card gone or mute is thrown in by the driver as `TransportError`."""
    ctx = Context(config, txn, rng, transaction_log)
    ctx.unpredictable_number = bytes(rng(4))
    progress = _Progress()
    try:
        return (yield from _run(ctx, progress))
    except Terminate as stop:
        ctx.note(f"terminated: {stop}")
        return _outcome(ctx, progress, OutcomeKind.TERMINATED, stop.reason)
    except TransportError as exc:
        ctx.note(f"card exchange failed: {exc}")
        if progress.first is None:
            return _outcome(ctx, progress, OutcomeKind.TRY_AGAIN, "card_removed")
        # After a cryptogram the card's own decision is unknown: the firmware reverses an
        # online approval (ARCHITECTURE principle 4).
        return _outcome(ctx, progress, OutcomeKind.TERMINATED, "card_removed_during_completion")
    except EmvError as exc:
        ctx.note(f"card data error: {type(exc).__name__}: {exc}")
        return _outcome(ctx, progress, OutcomeKind.TERMINATED, "card_error")


def _run(ctx: Context, progress: _Progress) -> Generator[Request, Any, Outcome]:
    options = yield from _select_and_initiate(ctx)
    yield from _read_application_data(ctx, options)
    yield from oda.offline_data_authentication(ctx)
    restrictions.processing_restrictions(ctx)
    yield from cvm.cardholder_verification(ctx)
    yield from risk.terminal_risk_management(ctx)
    first = yield from action_analysis.first_generate_ac(ctx)
    progress.first = progress.final = first
    if first.cryptogram_type == CryptogramType.TC:
        return _outcome(ctx, progress, OutcomeKind.APPROVED_OFFLINE)
    if first.cryptogram_type == CryptogramType.AAC:
        # An offline-only terminal decided with the Default codes (Book 3, 10.7).
        reason = _decline_reason(ctx, default_codes=ctx.config.terminal.offline_only)
        return _outcome(ctx, progress, OutcomeKind.DECLINED_OFFLINE, reason)
    return (yield from _go_online(ctx, progress, first))


# --- Application selection and initiation (Book 1, 12; Book 3, 10.1) ---------------------

def _select_and_initiate(ctx: Context) -> Generator[Request, Any, app_data.ProcessingOptions]:
    candidates = yield from _candidates(ctx)
    blocked = any(c.blocked for c in candidates)
    while True:
        usable = [c for c in candidates if not c.blocked]
        if not usable:
            raise Terminate("application_blocked" if blocked else "not_accepted",
                            "no application left that both card and terminal support")
        chosen = yield from _choose(ctx, usable)
        candidates.remove(chosen)
        try:
            fci = yield from selection.select_application(chosen.aid)
        except selection.SelectionError as exc:
            # Book 1, 12.4: a blocked or failing application is removed; choose again.
            blocked = blocked or exc.blocked
            ctx.note(f"final selection of {chosen.aid.hex().upper()} failed: {exc}")
            continue
        params = ctx.config.aid_params(fci.df_name)
        if params is None:
            ctx.note(f"{fci.df_name.hex().upper()} is not configured")
            continue
        ctx.aid_params = params
        ctx.card = _fci_data(fci)
        # Book 3, 10.1: PDOL data from the terminal, zeros for what it does not hold.
        try:
            ctx.pdol_data = dol.build(fci.pdol, ctx.dol_data()) if fci.pdol else b""
        except EmvError as exc:
            raise Terminate("card_error", f"PDOL: {exc}") from exc
        response = yield Transmit(apdu.get_processing_options(ctx.pdol_data))
        if response.sw == SW_CONDITIONS_NOT_SATISFIED:
            ctx.note(f"{fci.df_name.hex().upper()} refused the sale (6985): back to selection")
            continue
        if response.sw != SW_OK:
            raise Terminate("card_error", f"GET PROCESSING OPTIONS answered {response.sw:04X}")
        try:
            options = app_data.parse_gpo(response.data)
            ctx.aip = card_data.decode_aip(options.aip)
            ctx.afl = card_data.parse_afl(options.afl)
        except EmvError as exc:
            raise Terminate("card_error", str(exc)) from exc
        if any(tag == DF_NAME for tag, _ in options.objects):
            raise Terminate("card_error", "GET PROCESSING OPTIONS answer repeats the DF Name (84)")
        for tag, value in options.objects:
            ctx.card[tag] = value
        ctx.note(f"selected {fci.df_name.hex().upper()} ({params.name or scheme_of(fci.df_name)})")
        return options


def _candidates(ctx: Context) -> Generator[Request, Any, list[selection.Candidate]]:
    """Book 1, 12.3: the PSE directory first, filtered by the terminal's AIDs; else its list."""
    found = yield from selection.pse_candidates()
    if found is not None:
        matching = [c for c in found if ctx.config.aid_params(c.aid) is not None]
        if matching:
            return matching
    result: list[selection.Candidate] = []
    for params in ctx.config.aids:
        more = yield from selection.aid_list_candidates([params.aid], params.partial_selection)
        result.extend(c for c in more if all(c.aid != known.aid for known in result))
    return result


def _display_order(ctx: Context, candidates: Sequence[selection.Candidate]) -> list[selection.Candidate]:
    """Book 1, 12.4 priority order, with the merchant's preferred brands first on a co-badged
    card (EU Regulation 2015/751 art. 8: the cardholder may still choose another)."""
    preferred = ctx.config.terminal.preferred_aids

    def rank(candidate: selection.Candidate) -> int:
        for index, aid in enumerate(preferred):
            if candidate.aid.startswith(aid):
                return index
        return len(preferred)

    return sorted(selection.order(candidates), key=rank)


def _choose(ctx: Context, usable: Sequence[selection.Candidate],
            ) -> Generator[Request, Any, selection.Candidate]:
    ordered = _display_order(ctx, usable)
    if len(ordered) == 1 and not ordered[0].confirmation_required:
        return ordered[0]
    answer = yield ChooseApplication(tuple(ordered))
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(ordered):
        raise Terminate("cancelled", "the cardholder chose no application")
    return ordered[answer]


def _fci_data(fci: selection.Fci) -> dict[int, bytes]:
    data: dict[int, bytes] = {0x84: fci.df_name}
    for tag, value in ((0x50, fci.label), (0x9F12, fci.preferred_name)):
        if value is not None:
            data[tag] = value.encode("latin-1", "replace")
    if fci.pdol is not None:
        data[0x9F38] = fci.pdol
    if fci.language is not None:
        data[0x5F2D] = fci.language
    if fci.priority is not None:
        data[0x87] = bytes([fci.priority])
    if fci.issuer_code_table is not None:
        data[0x9F11] = bytes([fci.issuer_code_table])
    for tag, value in tlv.primitives(fci.discretionary):
        data.setdefault(tag, value)
    return data


# --- Read application data (Book 3, 10.2) -------------------------------------------------

def _read_application_data(ctx: Context, options: app_data.ProcessingOptions,
                           ) -> Generator[Request, Any, None]:
    try:
        records = yield from app_data.read_records(ctx.afl)
    except app_data.AppDataError as exc:
        raise Terminate("card_error", str(exc)) from exc
    # Records may repeat what the FCI said (label, language), never its DF Name; the GPO answer
    # and the records together must not repeat a primitive data object (Book 3, 10.2).
    seen = {tag for tag, _ in options.objects} | {DF_NAME}
    for tag, value in records.data:
        if tag in seen:
            raise Terminate("card_error", f"data object {tag:X} appears twice")
        seen.add(tag)
        ctx.card[tag] = value
    missing = [name for tag, name in MANDATORY.items() if tag not in ctx.card]
    if missing:
        raise Terminate("missing_data", "card lacks " + ", ".join(missing))
    ctx.oda_data = records.oda
    ctx.oda_record_invalid = records.oda_invalid
    # Book 3, 10.3: the AIP is signed too when the Static Data Authentication Tag List says so.
    tag_list = ctx.card.get(0x9F4A)
    if tag_list is not None and tag_list == b"\x82" and 0x82 in ctx.card:
        ctx.oda_data += ctx.card[0x82]
    ctx.note(f"read {records.count} records")


# --- Online processing and completion (Book 3, 10.9-10.11) --------------------------------

def _go_online(ctx: Context, progress: _Progress, first: action_analysis.AcResult,
               ) -> Generator[Request, Any, Outcome]:
    if ctx.config.terminal.offline_only:
        ctx.note("offline-only terminal: the ARQC is completed as unable to go online")
        response: Any = OnlineResponse.unable()
    else:
        request = online_data.request(ctx, first.name, advice=first.advice)
        response = yield GoOnline(request)
    if not isinstance(response, OnlineResponse):
        ctx.note("the host answer is not an OnlineResponse: unable to go online")
        response = OnlineResponse.unable()
    progress.response = response
    if response.status == HostStatus.UNABLE:
        final = yield from completion.complete_unable_online(ctx, first)
        progress.final = final
        if final.cryptogram_type == CryptogramType.TC:
            return _outcome(ctx, progress, OutcomeKind.APPROVED_UNABLE_ONLINE)
        return _outcome(ctx, progress, OutcomeKind.DECLINED_UNABLE_ONLINE,
                        _decline_reason(ctx, default_codes=True))
    final = yield from completion.complete_online(ctx, first, response)
    progress.final = final
    if response.approved and final.cryptogram_type == CryptogramType.TC:
        return _outcome(ctx, progress, OutcomeKind.APPROVED_ONLINE)
    reason = "issuer_declined" if not response.approved else "card_declined_after_approval"
    return _outcome(ctx, progress, OutcomeKind.DECLINED_ONLINE, reason)


def _decline_reason(ctx: Context, *, default_codes: bool = False) -> str:
    """Why the sale was declined: the merchant's rule (offline limits included), the TVR bit that
    matched a Denial code (or, unable to go online, a Default code: Book 3, 10.7), a failed CDA,
    else the card."""
    if ctx.merchant_decline:
        return ctx.merchant_decline
    masks = [_action_code(ctx, 0x9F0E, "tac_denial")]
    if default_codes:
        masks.append(_action_code(ctx, 0x9F0D, "tac_default"))
    for mask in masks:
        for bit, reason in _DENIAL_REASONS:
            if ctx.tvr.is_set(bit) and mask[bit[0]] & bit[1]:
                if bit == TVR.MERCHANT_FORCED_ONLINE and ctx.offline_refused:
                    return action_analysis.refused_offline_reason(ctx.offline_refused)
                return reason
    if ctx.tvr.is_set(TVR.CDA_FAILED):
        return "cda_failed"
    return "card_declines"


def _action_code(ctx: Context, iac_tag: int, tac_name: str) -> bytes:
    """IAC | TAC of one kind; a malformed IAC ended the transaction in action analysis."""
    iac = ctx.card.get(iac_tag, bytes(5))
    tac = getattr(ctx.aid_params, tac_name, bytes(5)) if ctx.aid_params else bytes(5)
    if len(iac) != 5:
        iac = bytes(5)
    return bytes(a | b for a, b in zip(iac, tac, strict=True))


# --- The outcome -----------------------------------------------------------------------

def _outcome(ctx: Context, progress: _Progress, kind: OutcomeKind, reason: str | None = None,
             ) -> Outcome:
    card = ctx.card
    final, first, response = progress.final, progress.first, progress.response
    language: list[str] = []
    if 0x5F2D in card:
        try:
            language = card_data.languages(card[0x5F2D])
        except EmvError:
            ctx.note("language preference is malformed: terminal language used")
    country: int | None = None
    if 0x5F28 in card:
        try:
            country = card_data.country_code(card[0x5F28])
        except EmvError:
            country = None
    pan = online_data.pan(ctx)
    aid = card.get(0x84)
    track2 = card.get(0x57)
    return Outcome(
        kind=kind,
        reason=reason,
        amount=ctx.transaction.amount,
        currency=ctx.config.terminal.currency,
        exponent=ctx.config.terminal.currency_exponent,
        aid=aid,
        label=_text(card.get(0x50)),
        preferred_name=_text(card.get(0x9F12)),
        scheme=scheme_of(aid) if aid else None,
        pan=pan,
        pan_masked=card_data.mask_pan(pan.reveal()) if pan is not None else None,
        pan_sequence_number=online_data.pan_sequence_number(ctx),
        expiry=online_data.expiry(ctx),
        track2=Sensitive(track2, "track 2") if track2 else None,
        issuer_country=country,
        language=language,
        atc=final.atc if final else None,
        cryptogram=final.cryptogram if final else None,
        cryptogram_type=final.name if final else None,
        first_cryptogram_type=first.name if first else None,
        cid=final.cid if final else None,
        iad=final.iad if final else None,
        unpredictable_number=ctx.unpredictable_number,
        tvr=ctx.tvr.value,
        tsi=ctx.tsi.value,
        cvm_results=ctx.cvm_results,
        cvm=ctx.cvm_performed,
        signature_required=ctx.signature_required,
        oda=_oda_result(ctx),
        response_code=ctx.authorisation_response_code,
        authorization_code=response.authorization_code if response else None,
        host_reference=response.host_reference if response else None,
        issuer_authentication=_issuer_authentication(ctx),
        script_results=bytes(ctx.script_results),
        advice=bool(first and first.advice),
        chip_data=online_data.chip_data(ctx) if final else b"",
        transaction_date=ctx.transaction.when.strftime("%y%m%d"),
        events=list(ctx.events),
    )


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1").strip() if value else None


def _oda_result(ctx: Context) -> str:
    if ctx.oda_method is None or not ctx.tsi.is_set(TSI.ODA_PERFORMED):
        return "none"  # not selected, or CDA with an AAC, which carries no signature
    failed = (TVR.SDA_FAILED, TVR.DDA_FAILED, TVR.CDA_FAILED)
    return "failed" if any(ctx.tvr.is_set(bit) for bit in failed) else ctx.oda_method


def _issuer_authentication(ctx: Context) -> str | None:
    if not ctx.tsi.is_set(TSI.ISSUER_AUTHENTICATION_PERFORMED):
        return None
    return "failed" if ctx.tvr.is_set(TVR.ISSUER_AUTHENTICATION_FAILED) else "passed"
