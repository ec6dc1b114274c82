"""Terminal risk management (EMV 4.4 Book 3, 10.6; Book 4, 6.3.5 and 6.4) and the merchant's
own rules: exception file, fraud rules, forced online.

Book 3, 10.6 (4.4) asks for terminal risk management "regardless of the setting of the
'Terminal risk management is to be performed' bit" of the AIP, so every check runs whatever the
AIP says; only random transaction selection is left out where Book 4, 6.4 allows it (offline-only
and online-only terminals). The card is only asked for its ATC and Last Online ATC Register
(GET DATA); an answer that is not '9000' or not a well-formed 2-byte object counts as "not
returned" and never raises. Notes never carry the PAN or other card data.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Generator

from emv import apdu, card_data, tlv
from emv.apdu import Response
from emv.card_data import CardDataError
from emv.context import TSI, TVR, Context
from emv.errors import TlvError
from emv.requests import Transmit
from emv.sensitive import pan_token

TAG_PAN = 0x5A
TAG_PAN_SEQUENCE_NUMBER = 0x5F34
TAG_ISSUER_COUNTRY = 0x5F28
TAG_ATC = 0x9F36
TAG_LAST_ONLINE_ATC = 0x9F13
TAG_LOWER_CONSECUTIVE_OFFLINE_LIMIT = 0x9F14
TAG_UPPER_CONSECUTIVE_OFFLINE_LIMIT = 0x9F23

# Book 3, 10.6.2: "a random number in the range of 1 to 99".
RANDOM_LOW, RANDOM_HIGH = 1, 99
_RANDOM_SPAN = RANDOM_HIGH - RANDOM_LOW + 1
_RANDOM_ACCEPT_BELOW = 256 - 256 % _RANDOM_SPAN  # bytes at or above this are redrawn (no modulo bias)
_RANDOM_MAX_DRAWS = 64  # a working source fails 64 draws in a row with probability under 1e-40

EXCEPTION_FILE_RULE = "exception_file"
PAN_UNREADABLE_RULE = "pan_unreadable"


def terminal_risk_management(ctx: Context) -> Generator[Transmit, Response, None]:
    """Book 3, 10.6 with the merchant's rules; sets TVR bits, `ctx.merchant_decline` and the TSI."""
    pan = _pan(ctx)
    _exception_file(ctx, pan)
    _fraud_rules(ctx, pan)
    if ctx.transaction.force_online:
        # Book 4, 6.5.3.
        ctx.tvr.set(TVR.MERCHANT_FORCED_ONLINE)
        ctx.note("risk: merchant forced the transaction online")
    if ctx.aip is not None and not ctx.aip.terminal_risk_management_required:
        ctx.note("risk: AIP does not ask for terminal risk management; performed anyway (Book 3, 10.6)")
    _floor_limit(ctx, pan)
    _random_selection(ctx)
    yield from _velocity_checking(ctx)
    ctx.tsi.set(TSI.TERMINAL_RISK_MANAGEMENT_PERFORMED)


def _pan(ctx: Context) -> str | None:
    raw = ctx.card.get(TAG_PAN)
    if raw is None:
        ctx.tvr.set(TVR.ICC_DATA_MISSING)
        ctx.note("risk: PAN missing")
        return None
    try:
        return card_data.pan_digits(raw)
    except CardDataError:
        ctx.tvr.set(TVR.ICC_DATA_MISSING)
        ctx.note("risk: PAN malformed")
        return None


def _decline(ctx: Context, rule: str) -> None:
    """The merchant's decline; the first rule that fired is the one reported."""
    if ctx.merchant_decline is None:
        ctx.merchant_decline = rule
    ctx.note(f"risk: merchant rule {rule} declines the transaction")


# --- exception file, Book 4 6.3.5 ------------------------------------------------------------------

def _psn_matcher(ctx: Context) -> Callable[[int | None], bool]:
    """Whether an entry's PAN Sequence Number matches the card's '5F34' (n 2). An entry without
    one matches any card; a malformed '5F34' matches every entry (the safe side)."""
    raw = ctx.card.get(TAG_PAN_SEQUENCE_NUMBER)
    if raw is not None and (len(raw) != 1 or not raw.hex().isdigit()):
        ctx.note("risk: PAN Sequence Number malformed; exception file entries match any sequence number")
        return lambda _entry_psn: True
    card_psn = int(raw.hex()) if raw is not None else None
    return lambda entry_psn: entry_psn is None or entry_psn == card_psn


def _exception_file(ctx: Context, pan: str | None) -> None:
    entries = ctx.config.exception_file
    if not entries:
        return
    if pan is None:
        # The card cannot be looked up, so it cannot be shown to be absent from the file.
        ctx.tvr.set(TVR.EXCEPTION_FILE)
        _decline(ctx, PAN_UNREADABLE_RULE)
        return
    token = pan_token(pan).encode("ascii")
    psn_matches = _psn_matcher(ctx)
    for entry in entries:
        same_pan = hmac.compare_digest(entry.pan_sha256.encode("ascii", "replace"), token)
        if same_pan and psn_matches(entry.psn):
            ctx.tvr.set(TVR.EXCEPTION_FILE)
            ctx.note("risk: card appears on the terminal exception file")
            _decline(ctx, EXCEPTION_FILE_RULE)
            return


# --- merchant fraud rules ----------------------------------------------------------------------------

def _issuer_country(ctx: Context) -> int | None:
    raw = ctx.card.get(TAG_ISSUER_COUNTRY)
    if raw is None:
        return None
    try:
        return card_data.country_code(raw)
    except CardDataError:
        ctx.note("risk: Issuer Country Code malformed")
        return None


def _force_online(ctx: Context, rule: str) -> None:
    ctx.tvr.set(TVR.MERCHANT_FORCED_ONLINE)
    ctx.note(f"risk: merchant rule {rule} forces the transaction online")


def _fraud_rules(ctx: Context, pan: str | None) -> None:
    rules = ctx.config.fraud
    amount = ctx.transaction.amount
    if rules.decline_above is not None and amount > rules.decline_above:
        _decline(ctx, "decline_above")
    if rules.online_above is not None and amount > rules.online_above:
        _force_online(ctx, "online_above")
    if rules.online_countries or rules.decline_countries:
        country = _issuer_country(ctx)
        if country is None:
            # No country to judge by: the issuer decides online rather than the merchant declining.
            _force_online(ctx, "online_countries" if rules.online_countries else "decline_countries")
        elif country in rules.decline_countries:
            _decline(ctx, "decline_countries")
        elif country in rules.online_countries:
            _force_online(ctx, "online_countries")
    if rules.blocked_prefixes:
        if pan is None:
            _decline(ctx, PAN_UNREADABLE_RULE)
        elif any(pan.startswith(prefix) for prefix in rules.blocked_prefixes):
            _decline(ctx, "blocked_prefixes")


# --- Book 3, 10.6.1 ----------------------------------------------------------------------------------

def _floor_limit(ctx: Context, pan: str | None) -> None:
    params = ctx.aid_params
    if params is None:
        ctx.note("risk: no floor limit for this application; every amount exceeds it")
        ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)
        return
    total = ctx.transaction.amount
    if ctx.transaction_log is not None and pan is not None:
        previous = ctx.transaction_log(pan_token(pan))
        if isinstance(previous, int) and not isinstance(previous, bool) and previous >= 0:
            total += previous
        else:
            ctx.note("risk: transaction log answered something other than an amount; ignored")
    if total >= params.floor_limit:
        ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)
        ctx.note("risk: transaction exceeds floor limit")


# --- Book 3, 10.6.2 ----------------------------------------------------------------------------------

def random_number(ctx: Context) -> int | None:
    """A uniform draw from 1 to 99 by rejection (no modulo bias); None when `ctx.rng` gives
    nothing usable."""
    for _ in range(_RANDOM_MAX_DRAWS):
        chunk = ctx.rng(1)
        if not isinstance(chunk, bytes | bytearray) or len(chunk) < 1:
            return None
        if chunk[0] < _RANDOM_ACCEPT_BELOW:
            return RANDOM_LOW + chunk[0] % _RANDOM_SPAN
    return None


def randomly_selected(amount: int, number: int, floor_limit: int, threshold: int, target: int,
                      max_target: int) -> bool:
    """Book 3, 10.6.2 with its footnote 16: below the threshold the number is compared with the
    Target Percentage, from the threshold up to the floor limit with the Transaction Target
    Percent, target + (max target - target) x (amount - threshold) / (floor limit - threshold),
    worked in integers (both sides times floor limit - threshold) so no rounding decides."""
    if amount >= floor_limit:
        return False
    if amount < threshold:
        return number <= target
    span = floor_limit - threshold
    return number * span <= (max_target - target) * (amount - threshold) + target * span


def _random_selection(ctx: Context) -> None:
    terminal = ctx.config.terminal
    params = ctx.aid_params
    if terminal.offline_only or terminal.online_only:
        # Book 4, 6.4: these terminals need not support random transaction selection.
        return
    if params is None or ctx.transaction.amount >= params.floor_limit:
        return
    number = random_number(ctx)
    if number is None:
        ctx.tvr.set(TVR.RANDOMLY_SELECTED)
        ctx.note("risk: random source gave no usable number; transaction selected for online")
        return
    if randomly_selected(ctx.transaction.amount, number, params.floor_limit,
                         params.random_selection_threshold, params.random_target_percent,
                         params.random_max_target_percent):
        ctx.tvr.set(TVR.RANDOMLY_SELECTED)
        ctx.note("risk: transaction selected randomly for online processing")


# --- Book 3, 10.6.3 ----------------------------------------------------------------------------------

def _read_counter(ctx: Context, tag: int, what: str) -> Generator[Transmit, Response, int | None]:
    """GET DATA of a 2-byte counter (Book 3, 6.5.7); None when the card does not return it."""
    response = yield Transmit(apdu.get_data(tag))
    if not isinstance(response, Response) or not response.ok:
        sw = f"{response.sw:04X}" if isinstance(response, Response) else "no answer"
        ctx.note(f"risk: GET DATA {what} not returned ({sw})")
        return None
    try:
        objects = tlv.decode(response.data)
    except TlvError:
        ctx.note(f"risk: GET DATA {what} answer is not BER-TLV")
        return None
    found = [item for item in objects if item.tag == tag]
    if len(found) != 1 or found[0].constructed or len(found[0].value) != 2:
        ctx.note(f"risk: GET DATA {what} answer is not one 2-byte object")
        return None
    ctx.card[tag] = found[0].value
    return int.from_bytes(found[0].value, "big")


def _velocity_checking(ctx: Context) -> Generator[Transmit, Response, None]:
    lower = ctx.card.get(TAG_LOWER_CONSECUTIVE_OFFLINE_LIMIT)
    upper = ctx.card.get(TAG_UPPER_CONSECUTIVE_OFFLINE_LIMIT)
    if lower is None or upper is None:
        return
    atc = yield from _read_counter(ctx, TAG_ATC, "ATC")
    last_online = yield from _read_counter(ctx, TAG_LAST_ONLINE_ATC, "Last Online ATC Register")
    if last_online == 0:
        ctx.tvr.set(TVR.NEW_CARD)
        ctx.note("risk: new card (Last Online ATC Register is zero)")
    if atc is None or last_online is None:
        ctx.tvr.set(TVR.ICC_DATA_MISSING)
        _both_limits_exceeded(ctx, "counters not returned by the card")
        return
    if len(lower) != 1 or len(upper) != 1:
        _both_limits_exceeded(ctx, "consecutive offline limits malformed")
        return
    if atc <= last_online:
        _both_limits_exceeded(ctx, "ATC not above the Last Online ATC Register")
        return
    offline = atc - last_online
    if offline > lower[0]:
        ctx.tvr.set(TVR.LCOL_EXCEEDED)
        ctx.note("risk: lower consecutive offline limit exceeded")
        if offline > upper[0]:
            ctx.tvr.set(TVR.UCOL_EXCEEDED)
            ctx.note("risk: upper consecutive offline limit exceeded")


def _both_limits_exceeded(ctx: Context, reason: str) -> None:
    ctx.tvr.set(TVR.LCOL_EXCEEDED)
    ctx.tvr.set(TVR.UCOL_EXCEEDED)
    ctx.note(f"risk: velocity checking not possible ({reason}); both offline limits exceeded")
