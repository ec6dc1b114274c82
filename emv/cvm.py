"""Cardholder verification (EMV 4.4 Book 3, 10.5 and Annex C3; Book 4, 6.3.4 and Annex A4).

The card's CVM List ('8E') is walked rule by rule: a rule whose condition (Annex C3, Table 44)
does not hold is skipped; otherwise its method (Table 43) is performed, and when it is not
successful the rule's b7 says whether the next rule is tried. PIN entry, signature capture and
the amount confirmation are requests to the driver; VERIFY, GET DATA and GET CHALLENGE go to
the card. The outcome is the CVM Results ('9F34') and bits of the TVR and TSI.

PINs only travel inside `Sensitive` values and command data; no note, repr or exception made
here holds a PIN or a PAN.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from emv import apdu, card_data, oda, tlv
from emv.card_data import CardDataError, CvmList, CvmRule
from emv.certificates import (
    CertificateError,
    IccPublicKey,
    RsaPublicKey,
    recover_icc_key,
    recover_icc_pin_key,
)
from emv.context import TSI, TVR, Context
from emv.errors import TlvError
from emv.outcome import Terminate
from emv.pin_encipher import ICC_UN_LENGTH, PinError, encipher_pin, pin_block_format2
from emv.requests import (
    CaptureSignature,
    ConfirmAmount,
    EnterOfflinePin,
    EnterOnlinePin,
    PinEntry,
    PinStatus,
    Transmit,
)
from emv.sensitive import Sensitive

CvmRequest = Transmit | ConfirmAmount | EnterOfflinePin | EnterOnlinePin | CaptureSignature

# Book 3 Annex C3, Table 43: CVM codes (b6-b1 of the first byte of a CV Rule).
FAIL_CVM = 0x00
PLAINTEXT_PIN = 0x01
ONLINE_PIN = 0x02
PLAINTEXT_PIN_AND_SIGNATURE = 0x03
ENCIPHERED_PIN = 0x04
ENCIPHERED_PIN_AND_SIGNATURE = 0x05
SIGNATURE = 0x1E
NO_CVM = 0x1F
BIOMETRIC_CVMS = frozenset(range(0x06, 0x10))  # Table 43: facial, finger, palm, iris, voice
OFFLINE_PIN_CVMS = frozenset({PLAINTEXT_PIN, PLAINTEXT_PIN_AND_SIGNATURE, ENCIPHERED_PIN,
                              ENCIPHERED_PIN_AND_SIGNATURE})
RECOGNISED_CVMS = frozenset({FAIL_CVM, ONLINE_PIN, SIGNATURE, NO_CVM}) | OFFLINE_PIN_CVMS | BIOMETRIC_CVMS
APPLY_NEXT_IF_UNSUCCESSFUL = 0x40  # Table 43: CV Rule byte 1 b7

# Book 3 Annex C3, Table 44: CVM Condition Codes.
ALWAYS = 0x00
UNATTENDED_CASH = 0x01
NOT_CASH_OR_CASHBACK = 0x02  # not unattended cash, not manual cash, not purchase with cashback
TERMINAL_SUPPORTS_CVM = 0x03
MANUAL_CASH = 0x04
PURCHASE_WITH_CASHBACK = 0x05
UNDER_X = 0x06  # each of 06-09: "if transaction is in the application currency and ..."
OVER_X = 0x07
UNDER_Y = 0x08
OVER_Y = 0x09

# Book 4 Annex A4: CVM Results byte 3.
RESULT_UNKNOWN = 0x00
RESULT_FAILED = 0x01
RESULT_SUCCESSFUL = 0x02

# Transaction Type '9C' (Book 3 Annex A: first two digits of the ISO 8583:1987 Processing Code).
TYPE_GOODS_AND_SERVICES = 0x00
TYPE_CASH = 0x01
TYPE_CASHBACK = 0x09
# Book 4 Annex A1, Table 24: Terminal Type second digit 4, 5, 6 is an unattended terminal.
_UNATTENDED_KINDS = frozenset({4, 5, 6})

TAG_CVM_LIST = 0x8E
TAG_APPLICATION_CURRENCY = 0x9F42
TAG_PIN_TRY_COUNTER = 0x9F17
SW_OK = 0x9000
# Book 3, 10.5.1: VERIFY answers for a blocked PIN, or an enciphered PIN block the card could
# not recover; '63Cx' is a wrong PIN with x tries left.
SW_PIN_BLOCKED = 0x6983
SW_PIN_DATA_INVALID = 0x6984
SW_WRONG_PIN_MASK = 0xFFF0
SW_WRONG_PIN = 0x63C0
# A PIN Try Counter is at most 15 in a '63Cx' answer: a card that keeps saying "wrong PIN"
# without counting down cannot keep the cardholder at the PIN pad for ever.
MAX_PIN_ENTRIES = 16


@dataclass
class _State:
    """What one cardholder verification has learnt so far, across the CV Rules it tries."""

    amount_confirmed: bool = False
    pin_bypassed: bool = False  # Book 4, 6.3.4: later PIN CVMs are bypassed too
    pin_pad_failed: bool = False
    pin_key: RsaPublicKey | None = None
    pin_key_looked_up: bool = False


def cardholder_verification(ctx: Context) -> Generator[CvmRequest, Any, None]:
    """EMV 4.4 Book 3, 10.5: process the card's CVM List and set CVM Results, TVR and TSI.

    Raises `Terminate("cancelled")` when the cardholder cancels PIN entry or does not confirm
    the amount; nothing the card answers makes this step raise anything else.
    """
    ctx.cvm_results = bytes([card_data.NO_CVM_PERFORMED, 0x00, 0x00])
    if ctx.aip is None:
        raise Terminate("missing_data", "the AIP is not known at cardholder verification")
    if not ctx.aip.cardholder_verification_supported:
        # Book 3, 10.5: the AIP does not ask for cardholder verification.
        ctx.note("cvm: not supported by the card (AIP)")
        return
    cvm_list = _cvm_list(ctx)
    if cvm_list is None:
        return
    ctx.tsi.set(TSI.CVM_PERFORMED)
    state = _State()
    last_failed: CvmRule | None = None
    for rule in cvm_list.rules:
        if not _condition_met(ctx, rule, cvm_list):
            ctx.note(f"cvm: rule {_rule_hex(rule)} skipped, condition {rule.condition:02X} not met")
            continue
        result = yield from _perform(ctx, state, rule)
        if result is not None:
            ctx.cvm_results = _results(rule, result)
            ctx.cvm_performed = rule.method_name
            ctx.note(f"cvm: rule {_rule_hex(rule)} performed ({rule.method_name})")
            return
        last_failed = rule
        if not rule.apply_next_if_unsuccessful:
            ctx.note(f"cvm: rule {_rule_hex(rule)} unsuccessful, the card asks to stop")
            break
    # Book 3, 10.5: no CVM successful. Book 4 Annex A4: the last CVM tried, failed, or
    # '3F' (no CVM performed) with result failed when no rule's condition held.
    ctx.tvr.set(TVR.CVM_NOT_SUCCESSFUL)
    if last_failed is None:
        ctx.cvm_results = bytes([card_data.NO_CVM_PERFORMED, 0x00, RESULT_FAILED])
        ctx.note("cvm: no rule of the CVM list applies; cardholder verification failed")
    else:
        ctx.cvm_results = _results(last_failed, RESULT_FAILED)
        ctx.note("cvm: cardholder verification failed")


# --- The CVM List and its conditions (Book 3, 10.5 and Annex C3) -----------------------------

def _cvm_list(ctx: Context) -> CvmList | None:
    """The card's CVM List with at least one rule, or None (ICC data missing) when absent,
    empty or not coded as Book 3, 10.5 says."""
    raw = ctx.card.get(TAG_CVM_LIST)
    if raw is None:
        reason = "absent"
    else:
        try:
            cvm_list = card_data.decode_cvm_list(raw)
        except CardDataError as exc:
            reason = f"malformed ({exc.reason})"
        else:
            if cvm_list.rules:
                return cvm_list
            reason = "empty"
    ctx.tvr.set(TVR.ICC_DATA_MISSING)
    ctx.note(f"cvm: CVM list {reason}; no cardholder verification")
    return None


def _condition_met(ctx: Context, rule: CvmRule, cvm_list: CvmList) -> bool:
    """Book 3 Annex C3, Table 44. Codes the terminal does not know (RFU, '80'-'FF' of the
    payment systems) are never met, so the rule is skipped (Book 3, 10.5)."""
    terminal = ctx.config.terminal
    txn = ctx.transaction
    cash = txn.transaction_type == TYPE_CASH
    unattended = terminal.terminal_type & 0x0F in _UNATTENDED_KINDS
    cashback = (txn.transaction_type == TYPE_CASHBACK
                or (txn.transaction_type == TYPE_GOODS_AND_SERVICES and txn.other_amount > 0))
    code = rule.condition
    if code == ALWAYS:
        return True
    if code == UNATTENDED_CASH:
        return cash and unattended
    if code == NOT_CASH_OR_CASHBACK:
        return not cash and not cashback
    if code == TERMINAL_SUPPORTS_CVM:
        return rule.method in RECOGNISED_CVMS and _supported(ctx, rule.method)
    if code == MANUAL_CASH:
        return cash and not unattended
    if code == PURCHASE_WITH_CASHBACK:
        return cashback
    if code in (UNDER_X, OVER_X, UNDER_Y, OVER_Y):
        if not _in_application_currency(ctx):
            return False
        limit = cvm_list.amount_x if code in (UNDER_X, OVER_X) else cvm_list.amount_y
        return txn.amount < limit if code in (UNDER_X, UNDER_Y) else txn.amount > limit
    return False


def _in_application_currency(ctx: Context) -> bool:
    """Annex C3, Table 44: the amounts X and Y are in the Application Currency Code ('9F42');
    without it (or with it malformed) the data the condition needs is missing."""
    raw = ctx.card.get(TAG_APPLICATION_CURRENCY)
    if raw is None:
        return False
    try:
        return card_data.currency_code(raw) == ctx.config.terminal.currency
    except CardDataError:
        return False


def _supported(ctx: Context, method: int) -> bool:
    """Book 4 Annex A2: Terminal Capabilities byte 2 (CVM capability)."""
    terminal = ctx.config.terminal
    if method == FAIL_CVM:
        return True
    if method == PLAINTEXT_PIN:
        return terminal.supports_plaintext_pin
    if method == ONLINE_PIN:
        return terminal.supports_enciphered_online_pin
    if method == PLAINTEXT_PIN_AND_SIGNATURE:
        return terminal.supports_plaintext_pin and terminal.supports_signature
    if method == ENCIPHERED_PIN:
        return terminal.supports_enciphered_offline_pin
    if method == ENCIPHERED_PIN_AND_SIGNATURE:
        return terminal.supports_enciphered_offline_pin and terminal.supports_signature
    if method == SIGNATURE:
        return terminal.supports_signature
    if method == NO_CVM:
        return terminal.supports_no_cvm
    return False  # biometric CVMs: this terminal has no biometric capture device


# --- Performing one CVM ---------------------------------------------------------------------

def _perform(ctx: Context, state: _State, rule: CvmRule) -> Generator[CvmRequest, Any, int | None]:
    """The CVM Results byte 3 when the rule's CVM succeeded, None when it did not."""
    method = rule.method
    if method not in RECOGNISED_CVMS:
        ctx.tvr.set(TVR.UNRECOGNISED_CVM)
        ctx.note(f"cvm: rule {_rule_hex(rule)} has an unrecognised CVM")
        return None
    if method == FAIL_CVM:
        ctx.note(f"cvm: rule {_rule_hex(rule)} is 'fail CVM processing'")
        return None
    if not _supported(ctx, method):
        _unsupported(ctx, rule)
        return None
    if method == NO_CVM:
        return RESULT_SUCCESSFUL
    if method == SIGNATURE:
        return (yield from _signature(ctx, state))
    if method == ONLINE_PIN:
        return (yield from _online_pin(ctx, state))
    enciphered = method in (ENCIPHERED_PIN, ENCIPHERED_PIN_AND_SIGNATURE)
    verified = yield from _offline_pin(ctx, state, enciphered=enciphered)
    if not verified:
        return None
    if method in (PLAINTEXT_PIN_AND_SIGNATURE, ENCIPHERED_PIN_AND_SIGNATURE):
        return (yield from _signature(ctx, state))
    return RESULT_SUCCESSFUL


def _unsupported(ctx: Context, rule: CvmRule) -> None:
    """Book 3, 10.5: 'PIN entry required and PIN pad not present or not working' when the CVM
    is online PIN and the terminal lacks it, or any offline PIN and it lacks both forms."""
    terminal = ctx.config.terminal
    no_offline_pin = not (terminal.supports_plaintext_pin or terminal.supports_enciphered_offline_pin)
    if rule.method == ONLINE_PIN or (rule.method in OFFLINE_PIN_CVMS and no_offline_pin):
        ctx.tvr.set(TVR.PIN_PAD_NOT_WORKING)
    ctx.note(f"cvm: rule {_rule_hex(rule)}: the terminal does not support {rule.method_name}")


def _confirm_amount(ctx: Context, state: _State) -> Generator[CvmRequest, Any, None]:
    """Once, before the first prompt to the cardholder, when the terminal is set to ask."""
    if state.amount_confirmed or not ctx.config.terminal.confirm_amount:
        return
    amount, currency, exponent = _money(ctx)
    answer = yield ConfirmAmount(amount, currency, exponent, _label(ctx))
    if answer is not True:
        raise Terminate("cancelled", "the cardholder did not confirm the amount")
    state.amount_confirmed = True


def _signature(ctx: Context, state: _State) -> Generator[CvmRequest, Any, int | None]:
    """Book 3, 10.5 and Book 4, 6.3.4: signature (paper); its result is unknown to the terminal."""
    yield from _confirm_amount(ctx, state)
    captured = yield CaptureSignature(*_money(ctx))
    if captured is not True:
        ctx.note("cvm: no signature captured")
        return None
    ctx.signature_required = True
    return RESULT_UNKNOWN


def _pin_pad_ready(ctx: Context, state: _State) -> bool:
    """Book 3, 10.5: PIN entry bypassed before, or no working PIN pad."""
    if state.pin_bypassed:
        # Book 4, 6.3.4: once PIN entry is bypassed, later PIN CVMs are considered bypassed.
        ctx.tvr.set(TVR.PIN_NOT_ENTERED)
        ctx.note("cvm: PIN entry was bypassed earlier in this transaction")
        return False
    if not ctx.config.terminal.pin_pad or state.pin_pad_failed:
        ctx.tvr.set(TVR.PIN_PAD_NOT_WORKING)
        ctx.note("cvm: PIN entry required but no working PIN pad")
        return False
    return True


def _pin_entered(ctx: Context, state: _State, entry: object) -> bool:
    """True when the cardholder entered a PIN; otherwise the TVR says why not."""
    status = entry.status if isinstance(entry, PinEntry) else None
    if status == PinStatus.CANCELLED:
        raise Terminate("cancelled", "the cardholder cancelled PIN entry")
    if status == PinStatus.ENTERED:
        return True
    if status == PinStatus.BYPASSED:
        # Book 3, 10.5: PIN pad present, PIN not entered.
        ctx.tvr.set(TVR.PIN_NOT_ENTERED)
        state.pin_bypassed = True
        ctx.note("cvm: PIN entry bypassed")
        return False
    _pin_pad_failure(ctx, state)
    return False


def _pin_pad_failure(ctx: Context, state: _State) -> None:
    ctx.tvr.set(TVR.PIN_PAD_NOT_WORKING)
    state.pin_pad_failed = True
    ctx.note("cvm: the PIN pad is not working")


def _online_pin(ctx: Context, state: _State) -> Generator[CvmRequest, Any, int | None]:
    """Book 3, 10.5: online PIN, enciphered by the PIN pad for the issuer; the result stays unknown."""
    if not _pin_pad_ready(ctx, state):
        return None
    pan = _pan(ctx)
    if pan is None:
        ctx.note("cvm: no PAN to bind the online PIN block to")
        return None
    yield from _confirm_amount(ctx, state)
    amount, currency, exponent = _money(ctx)
    entry = yield EnterOnlinePin(amount, currency, exponent, pan=Sensitive(pan, "PAN"))
    if not _pin_entered(ctx, state, entry):
        return None
    block = entry.pin_block
    if not isinstance(block, Sensitive) or not isinstance(block.reveal(), bytes) or not block:
        _pin_pad_failure(ctx, state)
        return None
    serial = entry.key_serial
    ctx.online_pin_block = block
    ctx.pin_key_serial = serial if isinstance(serial, bytes) else None
    ctx.tvr.set(TVR.ONLINE_PIN_ENTERED)
    return RESULT_UNKNOWN


def _offline_pin(ctx: Context, state: _State, *, enciphered: bool) -> Generator[CvmRequest, Any, bool]:
    """Book 3, 10.5.1 and Book 4, 6.3.4: PIN Try Counter, PIN entry, VERIFY (again after a
    wrong PIN while tries are left). True when the card accepted the PIN."""
    if not _pin_pad_ready(ctx, state):
        return False
    key: RsaPublicKey | None = None
    if enciphered:
        key = _pin_encipherment_key(ctx, state)
        if key is None:
            # Book 2, 7.1: no key to encipher the PIN with: this CVM fails.
            return False
    tries = yield from _pin_try_counter(ctx)
    if tries == 0:
        # Book 4, 6.3.4: no offline PIN entry when the PIN Try Counter is zero.
        ctx.tvr.set(TVR.PIN_TRY_LIMIT_EXCEEDED)
        ctx.note("cvm: PIN Try Counter is 0, offline PIN not asked for")
        return False
    yield from _confirm_amount(ctx, state)
    amount, currency, exponent = _money(ctx)
    for _ in range(MAX_PIN_ENTRIES):
        entry = yield EnterOfflinePin(amount, currency, exponent, tries_left=tries,
                                      last_try=tries == 1, enciphered=enciphered)
        if not _pin_entered(ctx, state, entry):
            return False
        pin_data = yield from _pin_data(ctx, state, entry.pin, key)
        if pin_data is None:
            return False
        response = yield Transmit(apdu.verify(pin_data, enciphered=enciphered))
        sw = response.sw
        if sw == SW_OK:
            return True
        if sw in (SW_PIN_BLOCKED, SW_PIN_DATA_INVALID):
            ctx.tvr.set(TVR.PIN_TRY_LIMIT_EXCEEDED)
            ctx.note(f"cvm: VERIFY answered {sw:04X}: PIN blocked")
            return False
        if sw & SW_WRONG_PIN_MASK != SW_WRONG_PIN:
            ctx.note(f"cvm: VERIFY answered {sw:04X}")
            return False
        left = sw & 0x0F
        if left == 0:
            ctx.tvr.set(TVR.PIN_TRY_LIMIT_EXCEEDED)
            ctx.note("cvm: wrong PIN, PIN Try Limit exceeded")
            return False
        if tries is not None and left >= tries:
            ctx.note("cvm: wrong PIN, but the card's try counter did not go down")
            return False
        tries = left
        ctx.note(f"cvm: wrong PIN, {left} tries left")
    ctx.note("cvm: too many PIN entries")
    return False


def _pin_data(ctx: Context, state: _State, pin: object, key: RsaPublicKey | None,
              ) -> Generator[CvmRequest, Any, bytes | None]:
    """VERIFY data: the plaintext PIN block (Book 3, 6.5.12), or the PIN enciphered under the
    card's key with the card's challenge (Book 2, 7.2). None when it cannot be built."""
    digits = pin.reveal() if isinstance(pin, Sensitive) else None
    if not isinstance(digits, str):
        _pin_pad_failure(ctx, state)
        return None
    try:
        block = pin_block_format2(digits)
    except PinError:
        _pin_pad_failure(ctx, state)  # the PIN pad handed over something that is not a PIN
        return None
    if key is None:
        return block
    response = yield Transmit(apdu.get_challenge())
    if response.sw != SW_OK or len(response.data) != ICC_UN_LENGTH:
        ctx.note(f"cvm: GET CHALLENGE answered {response.sw:04X} with {len(response.data)} bytes")
        return None
    pad_length = len(key.modulus) - 1 - len(block) - ICC_UN_LENGTH
    try:
        return encipher_pin(digits, response.data, key.modulus, key.exponent, ctx.rng(max(pad_length, 0)))
    except PinError as exc:
        ctx.note(f"cvm: PIN encipherment failed: {exc}")
        return None


def _pin_try_counter(ctx: Context) -> Generator[CvmRequest, Any, int | None]:
    """Book 3, 6.5.7 and Book 4, 6.3.4: GET DATA '9F17'; None when the card does not tell."""
    response = yield Transmit(apdu.get_data(TAG_PIN_TRY_COUNTER))
    if response.sw != SW_OK:
        ctx.note(f"cvm: GET DATA PIN Try Counter answered {response.sw:04X}")
        return None
    try:
        objects = tlv.decode(response.data)
    except TlvError:
        objects = []
    for item in objects:
        if item.tag == TAG_PIN_TRY_COUNTER and item.children is None and len(item.value) == 1:
            return item.value[0]
    ctx.note("cvm: GET DATA PIN Try Counter answer is malformed")
    return None


def _pin_encipherment_key(ctx: Context, state: _State) -> RsaPublicKey | None:
    if not state.pin_key_looked_up:
        state.pin_key_looked_up = True
        state.pin_key = _recover_pin_key(ctx)
    return state.pin_key


def _recover_pin_key(ctx: Context) -> RsaPublicKey | None:
    """Book 2, 7.1: the ICC PIN Encipherment Public Key when the card has one ('9F2D'),
    otherwise its ICC Public Key ('9F46'). Recovery failing makes the CVM fail; the ODA bits of
    the TVR belong to offline data authentication and are not touched here."""
    card = ctx.card
    if 0x9F2D in card:
        pin_key = True
        certificate, exponent, remainder = card[0x9F2D], card.get(0x9F2E), card.get(0x9F2F)
    elif isinstance(ctx.icc_key, IccPublicKey):
        return ctx.icc_key
    elif 0x9F46 in card:
        pin_key = False
        certificate, exponent, remainder = card[0x9F46], card.get(0x9F47), card.get(0x9F48)
    else:
        ctx.note("cvm: the card holds no public key for PIN encipherment")
        return None
    what = "ICC PIN encipherment" if pin_key else "ICC"
    pan = _pan(ctx)
    if exponent is None or pan is None:
        ctx.note(f"cvm: {what} public key exponent or PAN missing")
        return None
    issuer_key = oda.issuer_public_key(ctx)
    if issuer_key is None:
        ctx.note(f"cvm: no issuer public key to recover the {what} public key")
        return None
    today = ctx.transaction.when.date()
    try:
        if pin_key:
            return recover_icc_pin_key(issuer_key, certificate, remainder, exponent, pan=pan, today=today)
        return recover_icc_key(issuer_key, certificate, remainder, exponent,
                               static_data=bytes(ctx.oda_data), pan=pan, today=today)
    except CertificateError as exc:
        ctx.note(f"cvm: {what} public key rejected ({exc.step.value})")
        return None


# --- Small helpers ---------------------------------------------------------------------------

def _results(rule: CvmRule, result: int) -> bytes:
    """Book 4 Annex A4: CVM Performed (the rule's first byte), CVM Condition, CVM Result."""
    return bytes([_rule_byte(rule), rule.condition, result])


def _rule_byte(rule: CvmRule) -> int:
    return rule.method | (APPLY_NEXT_IF_UNSUCCESSFUL if rule.apply_next_if_unsuccessful else 0)


def _rule_hex(rule: CvmRule) -> str:
    return f"{_rule_byte(rule):02X}{rule.condition:02X}"


def _money(ctx: Context) -> tuple[int, int, int]:
    terminal = ctx.config.terminal
    return ctx.transaction.amount, terminal.currency, terminal.currency_exponent


def _label(ctx: Context) -> str | None:
    raw = ctx.card.get(0x50)
    return raw.decode("latin-1") if raw else None


def _pan(ctx: Context) -> str | None:
    """The PAN digits from '5A', else from Track 2 Equivalent Data ('57')."""
    try:
        if 0x5A in ctx.card:
            return card_data.pan_digits(ctx.card[0x5A])
        if 0x57 in ctx.card:
            return card_data.track2_pan(ctx.card[0x57])
    except CardDataError:
        return None
    return None
