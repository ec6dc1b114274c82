"""Why a payment ended, in plain words: the firmware's reason word (`Outcome.reason`) -> the key
of the sentence shown (`reason.<key>` in the catalogues).

The words come from the kernel (`emv.kernel`: its Terminate reasons, the TVR bits that matched
an action code, EMV 4.4 Book 3, 10.7), the merchant's risk rules (`emv.risk`), the host, and the
offline limits (`firmware.offline_limits.REASONS`, reported as 'offline_refused:<word>').
Several technical words share one sentence: the cardholder needs what happened, not which bit.
"""

from __future__ import annotations

OFFLINE_REFUSED_PREFIX = "offline_refused:"

REASON_MESSAGES: dict[str, str] = {
    # the issuer or the card said no
    "issuer_declined": "issuer_declined",
    "card_declines": "card_declined",
    "card_declined_after_approval": "card_declined",
    # the transaction ended before a decision (Terminate reasons)
    "cancelled": "cancelled",
    "not_accepted": "not_accepted",
    "application_blocked": "card_blocked",
    "card_error": "card_unreadable",
    "kernel_error": "card_unreadable",
    "missing_data": "card_unreadable",
    "card_removed": "card_removed",
    "card_removed_during_completion": "card_removed",
    # TVR bits that matched the Denial or Default action codes (Book 3, 10.7)
    "exception_file": "card_refused",
    "expired_application": "card_expired",
    "application_not_yet_effective": "card_not_yet_valid",
    "service_not_allowed": "service_not_allowed",
    "different_application_versions": "card_unreadable",
    "icc_data_missing": "card_unreadable",
    "sda_failed": "card_authentication",
    "dda_failed": "card_authentication",
    "cda_failed": "card_authentication",
    "oda_not_performed": "card_authentication",
    "pin_try_limit_exceeded": "pin_blocked",
    "cvm_failed": "verification_failed",
    "unrecognised_cvm": "verification_failed",
    "pin_not_entered": "verification_failed",
    "pin_pad_not_working": "verification_failed",
    "issuer_authentication_failed": "issuer_authentication",
    "lower_offline_limit_exceeded": "bank_needed",
    "upper_offline_limit_exceeded": "bank_needed",
    "floor_limit_exceeded": "bank_needed",
    "new_card": "bank_needed",
    "merchant_forced_online": "bank_needed",
    # the merchant's risk rules (emv.risk)
    "decline_above": "amount_refused",
    "decline_countries": "not_accepted",
    "blocked_prefixes": "not_accepted",
    "pan_unreadable": "card_unreadable",
    # the host
    "host_unreachable": "bank_unreachable",
    "host_timeout": "bank_unreachable",
    "host_error": "bank_unreachable",
    # the merchant's offline limits, after 'offline_refused:'
    "offline_refused:preauth": "preauth_online_only",
    "offline_refused:disabled": "offline_disabled",
    "offline_refused:online_pin": "offline_online_pin",
    "offline_refused:scheme": "offline_scheme",
    "offline_refused:amount_limit": "offline_amount_limit",
    "offline_refused:count_limit": "offline_count_limit",
    "offline_refused:total_limit": "offline_total_limit",
}
# Any other offline refusal (a word added later, the driver's "no_decision").
OFFLINE_OTHER = "offline_other"
# No reason, or a word not listed: one sentence per kind of outcome.
FALLBACK_DECLINED = "declined_other"
FALLBACK_APPROVED = "approved_other"


def reason_key(reason: str | None, approved: bool) -> str | None:
    """The catalogue key of the sentence for `reason`; None when an approval needs no sentence."""
    if reason is None:
        return None if approved else f"reason.{FALLBACK_DECLINED}"
    message = REASON_MESSAGES.get(reason)
    if message is None and reason.startswith(OFFLINE_REFUSED_PREFIX):
        message = OFFLINE_OTHER
    if message is None:
        message = FALLBACK_APPROVED if approved else FALLBACK_DECLINED
    return f"reason.{message}"


def message_keys() -> set[str]:
    """Every sentence key this module can give."""
    return ({f"reason.{m}" for m in REASON_MESSAGES.values()}
            | {f"reason.{k}" for k in (OFFLINE_OTHER, FALLBACK_DECLINED, FALLBACK_APPROVED)})
