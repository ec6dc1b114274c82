"""Processing restrictions (EMV 4.4 Book 3, 10.4): how far the card's application agrees with the
terminal's, recorded as TVR bits for terminal action analysis.

Nothing here talks to the card and nothing raises on card data: an element that does not follow
its coding sets the TVR bit the check it belongs to would have set, with a note saying so.
Notes never carry card data (dates, countries, versions stay out of the log line).
"""

from __future__ import annotations

import datetime

from emv import card_data
from emv.card_data import CardDataError
from emv.context import TVR, Context
from emv.kernel_config import TerminalConfig

TAG_APPLICATION_VERSION = 0x9F08
TAG_USAGE_CONTROL = 0x9F07
TAG_ISSUER_COUNTRY = 0x5F28
TAG_EFFECTIVE_DATE = 0x5F25
TAG_EXPIRATION_DATE = 0x5F24

# Transaction Type '9C' (Book 3 Annex A: the first two digits of the ISO 8583:1987 Processing Code).
TYPE_GOODS_AND_SERVICES = 0x00
TYPE_CASH = 0x01
TYPE_GOODS_WITH_CASHBACK = 0x09
_PURCHASE_TYPES = frozenset({TYPE_GOODS_AND_SERVICES, TYPE_GOODS_WITH_CASHBACK})

# Book 4 Annex A1: terminal types '14', '15', '16' with the 'Cash' capability are ATMs.
_ATM_TERMINAL_TYPES = frozenset({0x14, 0x15, 0x16})
_ADDITIONAL_CAPABILITY_CASH = 0x80  # '9F40' byte 1 b8, Book 4 Annex A3


def processing_restrictions(ctx: Context) -> None:
    """Book 3, 10.4: application version, usage control, effective and expiration dates."""
    _application_version(ctx)
    _usage_control(ctx)
    _dates(ctx)


def is_atm(terminal: TerminalConfig) -> bool:
    """Book 4 Annex A1, Table 24 note: types '14'-'16' with cash disbursement capability."""
    return (terminal.terminal_type in _ATM_TERMINAL_TYPES
            and bool(terminal.additional_capabilities[0] & _ADDITIONAL_CAPABILITY_CASH))


# --- Book 3, 10.4.1 -----------------------------------------------------------------------------

def _application_version(ctx: Context) -> None:
    card_version = ctx.card.get(TAG_APPLICATION_VERSION)
    if card_version is None:
        # Book 3, 10.4.1: absent from the ICC, the versions are presumed compatible.
        return
    terminal_versions = ctx.aid_params.application_versions if ctx.aid_params is not None else ()
    if not terminal_versions:
        ctx.note("restrictions: the terminal holds no application version for this AID; not compared")
        return
    if len(card_version) != 2:
        ctx.tvr.set(TVR.DIFFERENT_VERSIONS)
        ctx.note("restrictions: card application version is not 2 bytes; versions differ")
        return
    if card_version not in terminal_versions:
        ctx.tvr.set(TVR.DIFFERENT_VERSIONS)
        ctx.note("restrictions: ICC and terminal have different application versions")


# --- Book 3, 10.4.2 -----------------------------------------------------------------------------

def _not_allowed(ctx: Context, reason: str) -> None:
    ctx.tvr.set(TVR.SERVICE_NOT_ALLOWED)
    ctx.note(f"restrictions: service not allowed: {reason}")


def _usage_control(ctx: Context) -> None:
    raw = ctx.card.get(TAG_USAGE_CONTROL)
    if raw is None:
        return
    try:
        auc = card_data.decode_auc(raw)
    except CardDataError:
        _not_allowed(ctx, "Application Usage Control is malformed")
        return
    terminal = ctx.config.terminal
    if is_atm(terminal):
        if not auc.atms:
            _not_allowed(ctx, "not valid at ATMs")
    elif not auc.terminals_other_than_atms:
        _not_allowed(ctx, "not valid at terminals other than ATMs")

    country = ctx.card.get(TAG_ISSUER_COUNTRY)
    if country is None:
        # Table 36 applies only when the AUC and the Issuer Country Code are both present.
        return
    try:
        domestic = card_data.country_code(country) == terminal.country
    except CardDataError:
        _not_allowed(ctx, "Issuer Country Code is malformed, the transaction cannot be placed")
        return
    where = "domestic" if domestic else "international"
    txn = ctx.transaction
    # Book 3, 10.4.2, Table 36.
    if txn.transaction_type == TYPE_CASH:
        if not (auc.domestic_cash if domestic else auc.international_cash):
            _not_allowed(ctx, f"{where} cash")
    elif txn.transaction_type in _PURCHASE_TYPES:
        # '9C' does not tell goods from services: Table 36 asks for either bit ("and/or").
        allowed = (auc.domestic_goods or auc.domestic_services) if domestic else (
            auc.international_goods or auc.international_services)
        if not allowed:
            _not_allowed(ctx, f"{where} goods and services")
    else:
        ctx.note(f"restrictions: transaction type {txn.transaction_type:02X} has no usage control rule")
    if (txn.transaction_type == TYPE_GOODS_WITH_CASHBACK or txn.other_amount > 0) and not (
            auc.domestic_cashback if domestic else auc.international_cashback):
        _not_allowed(ctx, f"{where} cashback")


# --- Book 3, 10.4.3; Book 4, 6.7.3 (YY 00-49 is 20YY, 50-99 is 19YY, as card_data.decode_date) --

def _card_date(ctx: Context, tag: int, what: str) -> datetime.date | None:
    try:
        return card_data.decode_date(ctx.card[tag], tag=tag)
    except CardDataError:
        ctx.note(f"restrictions: {what} is malformed")
        return None


def _dates(ctx: Context) -> None:
    today = ctx.transaction.when.date()
    if TAG_EFFECTIVE_DATE in ctx.card:
        effective = _card_date(ctx, TAG_EFFECTIVE_DATE, "Application Effective Date")
        if effective is None or today < effective:
            ctx.tvr.set(TVR.NOT_YET_EFFECTIVE)
            ctx.note("restrictions: application not yet effective")
    if TAG_EXPIRATION_DATE not in ctx.card:
        # Mandatory (Book 3, 10.2): without it the card cannot be shown to be unexpired.
        ctx.tvr.set(TVR.ICC_DATA_MISSING)
        ctx.tvr.set(TVR.EXPIRED)
        ctx.note("restrictions: Application Expiration Date missing; treated as expired")
        return
    expiration = _card_date(ctx, TAG_EXPIRATION_DATE, "Application Expiration Date")
    if expiration is None or today > expiration:
        ctx.tvr.set(TVR.EXPIRED)
        ctx.note("restrictions: expired application")
