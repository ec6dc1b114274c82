"""The merchant's offline limits: whether the kernel may ask the card for a TC without the issuer.

The kernel asks (`emv.requests.ApproveOffline`) before a TC at the first GENERATE AC ('Y1') and
after "unable to go online" ('Y3'); `decide` answers from the limits of the `[offline]` section
of the configuration and the store-and-forward queue's state (`firmware.saf_queue.SafStatus`):
an offline approval is money the terminal owes the merchant before the issuer has agreed, and
the queue is where it waits until forwarded. The card's own offline limits (Book 3, 10.6.3;
its card risk management) still apply on top: these are the terminal's.

Refusals, checked in this order (the first that applies is the reason):

    preauth       a pre-authorization reserves funds at the issuer: without the issuer there is
                  nothing reserved; not configurable
    disabled      offline approvals are switched off
    online_pin    a PIN entered for the issuer to check (Book 3, 10.5.5) cannot be honoured
                  offline; not configurable
    scheme        the application's RID (Book 1, 12.2.1: the first 5 bytes of the AID) is not
                  one of `schemes`
    amount_limit  the amount is over `max_amount`
    count_limit   one more stored item would make more than `max_count`
    total_limit   the offline approvals of that currency waiting, plus this amount, would be
                  over `max_total`

A queue older than `max_age` refuses nothing: `overdue` says forwarding is late, for an alert.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from emv.action_analysis import OFFLINE_REFUSED
from emv.errors import EmvError
from emv.requests import ApproveOffline, OfflineDecision
from firmware.saf_queue import SafStatus

RID_LENGTH = 5  # Book 1, 12.2.1: Registered Application Provider Identifier

PREAUTH = "preauth"
DISABLED = "disabled"
ONLINE_PIN = "online_pin"
SCHEME = "scheme"
AMOUNT_LIMIT = "amount_limit"
COUNT_LIMIT = "count_limit"
TOTAL_LIMIT = "total_limit"
# Every reason `decide` can give, in the order it checks them.
REASONS: tuple[str, ...] = (PREAUTH, DISABLED, ONLINE_PIN, SCHEME, AMOUNT_LIMIT, COUNT_LIMIT, TOTAL_LIMIT)
# Not a refusal: the alert `overdue` raises.
OVERDUE = "overdue"
_REFUSED_PREFIX = f"{OFFLINE_REFUSED}:"  # the kernel's outcome reason for a decline they caused

_MESSAGES = {
    PREAUTH: "A pre-authorization needs the bank: it cannot be made without a connection to the bank.",
    DISABLED: "This terminal does not accept card payments without a connection to the bank.",
    ONLINE_PIN: "A PIN checked by the bank cannot be accepted without a connection to the bank.",
    SCHEME: "This card brand cannot be accepted without a connection to the bank.",
    AMOUNT_LIMIT: "This amount is over the limit for card payments without a connection to the bank.",
    COUNT_LIMIT: "Too many payments are waiting to be sent to the bank: connect the terminal to send "
                 "them before taking more payments without a connection.",
    TOTAL_LIMIT: "The payments waiting to be sent to the bank have reached their total limit: connect "
                 "the terminal to send them before taking more payments without a connection.",
    OVERDUE: "Payments taken without a connection have waited too long to be sent to the bank: "
             "connect the terminal so that they are sent.",
}
_UNKNOWN_MESSAGE = "This payment cannot be accepted without a connection to the bank."


class OfflineLimitsError(EmvError):
    """Offline limits that cannot be used, or a clock reading without a time zone: which field
    and why."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


def _count(value: object, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OfflineLimitsError(key, "must be an integer of 0 or more")


@dataclass(frozen=True, kw_only=True)
class OfflineLimits:
    """The `[offline]` section of the configuration. The defaults suit a taxi in France: 100.00
    EUR a sale, 500.00 EUR and 50 items waiting, forwarding overdue after a day, the schemes
    of the default applications (Visa, Mastercard, CB)."""

    enabled: bool = True
    max_amount: int = 10000  # per transaction, minor units of the transaction's currency
    max_total: int = 50000  # offline approvals stored and not yet forwarded, per currency
    max_count: int = 50  # offline approvals and reversals stored
    max_age: datetime.timedelta = datetime.timedelta(hours=24)  # oldest stored item: alert after
    schemes: tuple[bytes, ...] = (
        bytes.fromhex("A000000003"),  # Visa
        bytes.fromhex("A000000004"),  # Mastercard
        bytes.fromhex("A000000042"),  # CB
    )

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise OfflineLimitsError("enabled", "must be true or false")
        for key in ("max_amount", "max_total", "max_count"):
            _count(getattr(self, key), key)
        if not isinstance(self.max_age, datetime.timedelta) or self.max_age <= datetime.timedelta(0):
            raise OfflineLimitsError("max_age", "must be a duration longer than zero")
        if not isinstance(self.schemes, tuple):
            raise OfflineLimitsError("schemes", "must be a tuple of RIDs")
        for n, rid in enumerate(self.schemes, start=1):
            if not isinstance(rid, bytes) or len(rid) != RID_LENGTH:
                raise OfflineLimitsError(f"schemes[{n}]", f"must be a RID of {RID_LENGTH} bytes")


def decide(limits: OfflineLimits, request: ApproveOffline, status: SafStatus,
           now: datetime.datetime, *, preauth: bool = False) -> OfflineDecision:
    """May the kernel ask the card for the TC of `request`, with `status` the queue as it stands?
    Never for a pre-authorization (`preauth`).

    `now` (with its time zone) is the clock reading of this sale, the one `overdue` takes: the
    age of the queue never refuses a sale (it raises an alert), so no reason depends on it.
    """
    _aware(now, "now")
    if preauth:
        return OfflineDecision.refuse(PREAUTH)
    if not limits.enabled:
        return OfflineDecision.refuse(DISABLED)
    if request.online_pin:
        return OfflineDecision.refuse(ONLINE_PIN)
    if request.aid[:RID_LENGTH] not in limits.schemes:
        return OfflineDecision.refuse(SCHEME)
    if request.amount > limits.max_amount:
        return OfflineDecision.refuse(AMOUNT_LIMIT)
    if status.count + 1 > limits.max_count:
        return OfflineDecision.refuse(COUNT_LIMIT)
    if status.amount_per_currency.get(request.currency, 0) + request.amount > limits.max_total:
        return OfflineDecision.refuse(TOTAL_LIMIT)
    return OfflineDecision.allow()


def _aware(value: datetime.datetime, key: str) -> datetime.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise OfflineLimitsError(key, "must carry a time zone")
    return value


def overdue(limits: OfflineLimits, status: SafStatus, now: datetime.datetime) -> bool:
    """True when the oldest item waiting in the queue is older than `max_age`: forwarding is
    overdue and the merchant should be told (`message(OVERDUE)`). Both times carry a zone."""
    _aware(now, "now")
    if status.oldest_created is None:
        return False
    return now - _aware(status.oldest_created, "oldest_created") > limits.max_age


def message(reason: str) -> str:
    """One plain English sentence for the cardholder and the merchant: a reason of `REASONS`,
    `OVERDUE`, or the outcome's 'offline_refused:<reason>'. Any other word gets a general
    sentence."""
    word = reason.removeprefix(_REFUSED_PREFIX)
    return _MESSAGES.get(word, _UNKNOWN_MESSAGE)
