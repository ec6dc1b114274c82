"""What a payment leaves behind: its state (`firmware.payments`), its offline advice and its
reversal in the store-and-forward queue, and the messages built from them.

A reversal's payload is what identifies the original request (`messages.identity`: no card
data) plus the 0400's own STAN, transmission time and reason, fixed when the reversal is first
committed, so that every repeat (0401) is the same message (docs/host-protocol.md, Messages);
with the host's 37 and 38 once it answered, and the card's AAC when the card declined.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from emv.outcome import Outcome, OutcomeKind
from firmware import crashpoints, fiscal, messages
from firmware.host_store import HostStore, HostStoreError
from firmware.iso8583_spec import RESPONSE_OF
from firmware.keystore import Keystore, KeystoreError
from firmware.messages import Acceptor, Fields, MessageError, ReversalReason
from firmware.payments import Payments, PaymentsError, State
from firmware.saf_queue import FILE_NAME, SafQueue, SafQueueError

log = logging.getLogger(__name__)

STAN = "reversal_stan"
AT = "reversal_at"
REASON = "reversal_reason"
RESPONSE = ("response_37", "response_38")
ICC = "reversal_55"
# A pre-authorization's reversal also keeps the 0100's card fields its completion repeats
# (`messages.COMPLETION_CARD_FIELDS`), sealed like every payload of the queue.
COMPLETION = "completion"

REFUND = 0x20  # EMV '9C', ISO 8583 processing code: refund


class RecordError(Exception):
    """A payment's record cannot be written: the terminal must not go on with the sale."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).astimezone()


def open_payments(folder: Any) -> Payments:
    """The payments and store-and-forward queue of the state folder `folder`."""
    try:
        return Payments(SafQueue(folder / FILE_NAME, Keystore.open(folder)))
    except (SafQueueError, KeystoreError, PaymentsError) as exc:
        raise RecordError(str(exc)) from exc


def reversal_payload(original: Mapping[str, str], reason: ReversalReason, *, stan: int,
                     at: datetime.datetime) -> dict[str, Any]:
    """The stored form of the reversal of `original` (a 0100 or 0200); a 0100's keeps its card
    fields for the completion (`COMPLETION`)."""
    payload = {**messages.identity(original), REASON: reason.value, AT: at.isoformat(), STAN: stan}
    if original.get("t") == messages.Mti.AUTHORIZATION:
        payload[COMPLETION] = {key: original[key] for key in messages.COMPLETION_CARD_FIELDS
                               if key in original}
    return payload


def amend_reversal(payload: Mapping[str, Any], reason: ReversalReason, *,
                   response: Mapping[str, str] | None = None,
                   icc_data: bytes | None = None) -> dict[str, Any]:
    """`payload` with another reason, the host's 37 and 38, the card's final cryptogram."""
    amended = {**payload, REASON: reason.value}
    if response is not None:
        amended.update({key: response[key[-2:]] for key in RESPONSE if key[-2:] in response})
    if icc_data is not None:
        amended[ICC] = icc_data.hex().upper()
    return amended


def reversal_message(payload: Mapping[str, Any], *, repeat: bool) -> Fields:
    """The 0400 (0401 when `repeat`) of a stored reversal. `MessageError` or `ValueError` when
    the payload does not make one."""
    answer: dict[str, str] | None = None
    if any(key in payload for key in RESPONSE):
        answer = {key: str(payload[key]) for key in ("7", "11", "41")}
        answer["t"] = RESPONSE_OF[str(payload["t"])]
        answer.update({key[-2:]: str(payload[key]) for key in RESPONSE if key in payload})
    icc = payload.get(ICC)
    stan = payload.get(STAN)
    if not isinstance(stan, int) or not isinstance(payload.get(AT), str):
        raise MessageError("the stored reversal has no STAN or time of its own")
    fields = messages.reversal(
        {key: str(value) for key, value in payload.items()}, stan=stan,
        at=datetime.datetime.fromisoformat(payload[AT]), reason=ReversalReason(str(payload[REASON])),
        response=answer, icc_data=bytes.fromhex(icc) if isinstance(icc, str) else None)
    return messages.repeat(fields) if repeat else fields


def queued_message(kind: str, payload: Mapping[str, Any], *, repeat: bool) -> Fields:
    """The message of a queue item: the stored 0220 (0221 when `repeat`), or the 0400/0401."""
    if kind == "reversal":
        return reversal_message(payload, repeat=repeat)
    fields = Fields({str(key): str(value) for key, value in payload.items()})
    messages.validate(fields)
    return messages.repeat(fields) if repeat else fields


class PaymentRecorder:
    """Begins and completes payments; builds their advices and amends their reversals."""

    def __init__(self, payments: Payments, store: HostStore, acceptor: Acceptor | None, *,
                 clock: Callable[[], datetime.datetime] = _now) -> None:
        self.payments = payments
        self.queue = payments.queue
        self._store = store
        self._acceptor = acceptor
        self._clock = clock

    def begin(self, amount: int, currency: int, transaction_type: int = 0, *, preauth: bool = False) -> int:
        try:
            kind = "preauth" if preauth else "refund" if transaction_type == REFUND else "sale"
            payment = self.payments.begin(kind, amount, currency)
        except PaymentsError as exc:
            raise RecordError(f"the payment cannot be recorded: {exc}") from exc
        crashpoints.reach("payment.started")
        return payment

    def complete(self, payment_id: int, outcome: Outcome, transaction_time: datetime.datetime) -> State:
        """Record how the card finished `payment_id`: an offline approval with its advice, an
        approval the card declined with its reversal's reason and the card's AAC."""
        crashpoints.reach("card.completed")
        if transaction_time.tzinfo is None:  # the kernel's clock is the terminal's local time
            transaction_time = transaction_time.astimezone()
        kind = outcome.kind
        offline = kind in (OutcomeKind.APPROVED_OFFLINE, OutcomeKind.APPROVED_UNABLE_ONLINE)
        advice = reversal = None
        try:
            if offline:
                if self._acceptor is None:
                    raise RecordError("an offline approval needs the acquirer's identity ([host]) "
                                      "for its advice")
                advice = dict(messages.offline_advice(
                    outcome, acceptor=self._acceptor, stan=self._store.next_stan(), at=self._clock(),
                    transaction_time=transaction_time))
            payment = self.payments.get(payment_id)
            if not kind.approved and payment.state is State.AUTHORIZED and payment.reversal_item:
                stored = self.queue.get(payment.reversal_item).payload
                if kind is OutcomeKind.DECLINED_ONLINE:
                    aac = outcome.cryptogram_type == "AAC" and outcome.chip_data
                    icc = outcome.chip_data if aac else None
                    reversal = amend_reversal(stored, ReversalReason.CARD_DECLINED, icc_data=icc)
                else:
                    reversal = amend_reversal(stored, ReversalReason.MALFUNCTION)
            state = self.payments.completed(
                payment_id, outcome=kind.value, approved=kind.approved, offline=offline,
                pan_masked=outcome.pan_masked, advice=advice, reversal=reversal, note=outcome.reason,
                card=fiscal.card_reference(outcome, payment_id) if kind.approved else None)
        except (PaymentsError, SafQueueError, HostStoreError, MessageError) as exc:
            log.critical("payment %d: its end could NOT be recorded: %s", payment_id, exc)
            raise RecordError(f"payment {payment_id}: its end cannot be recorded: {exc}") from exc
        crashpoints.reach("payment.completed")
        log.info("payment %d: %s", payment_id, state.value)
        return state

    # --- pre-authorizations (docs/host-protocol.md, 0220 completion) --------------------------

    def _preauth_reversal(self, preauth_id: int) -> dict[str, Any]:
        """The stored reversal of approved pre-authorization `preauth_id`: the 0100's identity,
        the 0110's 37 and 38, and (sealed with it) the card fields its completion repeats."""
        payment = self.payments.get(preauth_id)
        if payment.kind != "preauth" or payment.reversal_item is None:
            raise RecordError(f"payment {preauth_id} is not an approved pre-authorization")
        return self.queue.get(payment.reversal_item).payload

    def complete_preauth(self, preauth_id: int, amount: int) -> int:
        """The completion of `preauth_id` for `amount`: its 0220 built from what was kept of the
        0100 and 0110, queued with a new approved payment. Returns that payment's id."""
        try:
            stored = self._preauth_reversal(preauth_id)
            original = {key: str(value) for key, value in stored.items() if key in messages.IDENTITY_FIELDS}
            original.update({key: str(value) for key, value in (stored.get(COMPLETION) or {}).items()})
            approval = {key[-2:]: str(stored[key]) for key in RESPONSE if key in stored}
            advice = dict(messages.stored_completion(original, approval, amount=amount,
                                                     stan=self._store.next_stan(), at=self._clock()))
            payment = self.payments.complete_preauth(preauth_id, amount, advice)
        except (PaymentsError, SafQueueError, HostStoreError, MessageError) as exc:
            log.error("pre-authorization %d: not completed: %s", preauth_id, exc)
            raise RecordError(f"pre-authorization {preauth_id} cannot be completed: {exc}") from exc
        log.info("pre-authorization %d: completed as payment %d", preauth_id, payment)
        return payment

    def release_preauth(self, preauth_id: int) -> int:
        """`preauth_id` released: its reversal (reason '17') queued. Returns the queue item."""
        try:
            stored = self._preauth_reversal(preauth_id)
            kept = {key: value for key, value in stored.items() if key != COMPLETION}  # no card data
            item = self.payments.release_preauth(preauth_id, amend_reversal(kept, ReversalReason.CANCELLED))
        except (PaymentsError, SafQueueError) as exc:
            log.error("pre-authorization %d: not released: %s", preauth_id, exc)
            raise RecordError(f"pre-authorization {preauth_id} cannot be released: {exc}") from exc
        log.info("pre-authorization %d: released, reversal queued as item %d", preauth_id, item)
        return item
