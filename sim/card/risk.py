"""Card risk management of the simulated card, VIS / M/Chip style (EMV 4.4 Book 3, 10.7 and 6.5.5).

The card answers GENERATE AC by its own rules, never upgrading what the terminal asked for
(Book 3, 6.5.5.4, Table 13: AAC < TC < ARQC). The rules, in order:

First GENERATE AC
  1. AAC asked -> AAC.
  2. Application blocked, `always_decline`, or (`check_expiry`) the card's own clock past the
     application expiration date -> AAC.
  3. ARQC asked -> ARQC.
  4. TC asked: the card goes online (ARQC) when any of these holds
       - the transaction currency differs from the application currency (the card cannot add
         the amount to its cumulative counter),
       - lower consecutive offline limit: offline transactions since the last online one,
         this one included, exceed the limit,
       - lower cumulative offline amount: the offline amounts since the last online one,
         this one included, exceed the limit,
       - new card (no online transaction yet; last online ATC is 0) and `online_if_new_card`,
       - PIN try limit exceeded and `online_if_pin_try_limit_exceeded`,
       - issuer authentication failed on the last online transaction and
         `online_if_issuer_auth_failed`,
       - the last online transaction was not completed (no second GENERATE AC after an ARQC).
     If it would go online but the terminal is offline-only (Terminal Type '-3' or '-6' in
     CDOL1), the card approves offline (TC) when within the upper limits, else declines (AAC).
     Otherwise TC, and the offline counters take this transaction.

Second GENERATE AC (only after an ARQC)
  5. AAC asked -> AAC.
  6. Unable to go online (Authorisation Response Code 'Y3' or 'Z3'): TC when within the upper
     consecutive and cumulative limits (this transaction included, same currency), else AAC.
  7. Online: AAC when the ARC is not an approval ('00', '08', '10', '11'), or when issuer
     authentication failed and `decline_if_issuer_auth_failed`; else TC.
  8. After an online approval with a valid ARPC the offline counters reset and the last online
     ATC is recorded; a failed ARPC sets "issuer authentication failed on last online".

The Card Verification Results record these facts in the VIS (4 bytes) or M/Chip 4 (6 bytes)
layout, built by `visa_cvr` and `mchip_cvr`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sim.card.profile import RiskParams

Cryptogram = Literal["AAC", "TC", "ARQC"]
# Book 3, 6.5.5.4, Table 14: Cryptogram Information Data, bits 8-7.
CID: dict[str, int] = {"AAC": 0x00, "TC": 0x40, "ARQC": 0x80}
CRYPTOGRAM_OF_P1: dict[int, Cryptogram] = {0x00: "AAC", 0x40: "TC", 0x80: "ARQC"}
APPROVED_ARC = (b"00", b"08", b"10", b"11")
UNABLE_TO_GO_ONLINE_ARC = (b"Y3", b"Z3")


@dataclass
class OfflineCounters:
    """Non-volatile per-application counters of card risk management."""

    consecutive: int = 0
    cumulative_amount: int = 0
    last_online_atc: int = 0
    issuer_auth_failed_last_online: bool = False
    online_not_completed: bool = False


@dataclass(frozen=True)
class Transaction:
    """What the card knows of the transaction when it decides."""

    amount: int
    same_currency: bool
    pin_try_limit_exceeded: bool = False
    application_blocked: bool = False
    expired: bool = False
    terminal_offline_only: bool = False


@dataclass(frozen=True)
class Decision:
    cryptogram: Cryptogram
    reasons: frozenset[str] = field(default_factory=frozenset)


def limits_exceeded(params: RiskParams, counters: OfflineCounters, tx: Transaction) -> set[str]:
    """Which offline limits this transaction would exceed, counting it as offline."""
    out: set[str] = set()
    count = counters.consecutive + 1
    total = counters.cumulative_amount + tx.amount
    if count > params.lower_consecutive_offline_limit:
        out.add("lower_consecutive")
    if count > params.upper_consecutive_offline_limit:
        out.add("upper_consecutive")
    if not tx.same_currency:
        out |= {"lower_cumulative", "upper_cumulative", "currency"}
    else:
        if total > params.lower_cumulative_offline_amount:
            out.add("lower_cumulative")
        if total > params.upper_cumulative_offline_amount:
            out.add("upper_cumulative")
    return out


def first_ac(requested: Cryptogram, params: RiskParams, counters: OfflineCounters,
             tx: Transaction) -> Decision:
    """Rules 1 to 4 of the module doc."""
    if requested == "AAC":
        return Decision("AAC", frozenset({"requested"}))
    if tx.application_blocked:
        return Decision("AAC", frozenset({"application_blocked"}))
    if params.always_decline:
        return Decision("AAC", frozenset({"issuer_policy"}))
    if params.check_expiry and tx.expired:
        return Decision("AAC", frozenset({"expired"}))
    limits = limits_exceeded(params, counters, tx)
    reasons = set(limits)
    if counters.last_online_atc == 0 and params.online_if_new_card:
        reasons.add("new_card")
    if tx.pin_try_limit_exceeded and params.online_if_pin_try_limit_exceeded:
        reasons.add("pin_try_limit_exceeded")
    if counters.issuer_auth_failed_last_online and params.online_if_issuer_auth_failed:
        reasons.add("issuer_auth_failed_last_online")
    if counters.online_not_completed:
        reasons.add("last_online_not_completed")
    if requested == "ARQC":
        return Decision("ARQC", frozenset(reasons))
    go_online = reasons - {"upper_consecutive", "upper_cumulative"}
    if not go_online:
        return Decision("TC", frozenset(reasons))
    if tx.terminal_offline_only:
        within_upper = not ({"upper_consecutive", "upper_cumulative"} & limits)
        return Decision("TC" if within_upper else "AAC", frozenset(reasons | {"offline_only_terminal"}))
    return Decision("ARQC", frozenset(reasons))


def second_ac(requested: Cryptogram, params: RiskParams, counters: OfflineCounters, tx: Transaction, *,
              arc: bytes | None, issuer_auth: Literal["none", "valid", "failed"]) -> Decision:
    """Rules 5 to 7 of the module doc."""
    if requested == "AAC":
        return Decision("AAC", frozenset({"requested"}))
    if tx.application_blocked or params.always_decline:
        return Decision("AAC", frozenset({"application_blocked" if tx.application_blocked
                                          else "issuer_policy"}))
    if arc in UNABLE_TO_GO_ONLINE_ARC:
        limits = limits_exceeded(params, counters, tx)
        if {"upper_consecutive", "upper_cumulative"} & limits:
            return Decision("AAC", frozenset(limits | {"unable_to_go_online"}))
        return Decision("TC", frozenset(limits | {"unable_to_go_online"}))
    if arc is not None and arc not in APPROVED_ARC:
        return Decision("AAC", frozenset({"issuer_declined"}))
    if issuer_auth == "failed" and params.decline_if_issuer_auth_failed:
        return Decision("AAC", frozenset({"issuer_auth_failed"}))
    return Decision("TC", frozenset({"issuer_auth_failed"} if issuer_auth == "failed" else set()))


def record_offline_approval(counters: OfflineCounters, amount: int) -> None:
    counters.consecutive += 1
    counters.cumulative_amount += amount


def record_online_result(counters: OfflineCounters, *, approved: bool,
                         issuer_auth: Literal["none", "valid", "failed"], atc: int) -> None:
    """Rule 8: reset after an online approval with a valid ARPC; remember a failed ARPC."""
    counters.online_not_completed = False
    if issuer_auth == "failed":
        counters.issuer_auth_failed_last_online = True
    if approved and issuer_auth == "valid":
        counters.consecutive = 0
        counters.cumulative_amount = 0
        counters.last_online_atc = atc
        counters.issuer_auth_failed_last_online = False


@dataclass
class CvrFacts:
    """The facts the Card Verification Results report, gathered during one transaction."""

    first_ac: Cryptogram | None = None
    second_ac: Cryptogram | None = None
    offline_pin_performed: bool = False
    offline_pin_failed: bool = False
    offline_pin_enciphered: bool = False
    pin_try_limit_exceeded: bool = False
    pin_tries_left: int = 0
    unable_to_go_online: bool = False
    issuer_auth_performed: bool = False
    issuer_auth_failed: bool = False
    issuer_auth_failed_last_online: bool = False
    issuer_auth_not_performed_after_online: bool = False
    last_online_not_completed: bool = False
    new_card: bool = False
    expired: bool = False
    limits: frozenset[str] = frozenset()
    dda_performed: bool = False
    cda_first: bool = False
    cda_second: bool = False
    script_count: int = 0
    script_failed: bool = False
    script_received: bool = False
    domestic: bool | None = None


_FIRST_BITS = {"AAC": 0x00, "TC": 0x10, "ARQC": 0x20}
_SECOND_BITS = {"AAC": 0x00, "TC": 0x40}
_SECOND_NOT_REQUESTED = 0x80


def _ac_bits(f: CvrFacts) -> int:
    second = _SECOND_BITS[f.second_ac] if f.second_ac else _SECOND_NOT_REQUESTED
    return second | (_FIRST_BITS[f.first_ac] if f.first_ac else 0)


def visa_cvr(f: CvrFacts) -> bytes:
    """VIS Card Verification Results: length '03' and three bytes (VIS 1.5, Appendix A)."""
    b2 = _ac_bits(f)
    b2 |= 0x08 if f.issuer_auth_failed else 0
    b2 |= 0x04 if f.offline_pin_performed else 0
    b2 |= 0x02 if f.offline_pin_failed else 0
    b2 |= 0x01 if f.unable_to_go_online else 0
    b3 = 0x80 if f.last_online_not_completed else 0
    b3 |= 0x40 if f.pin_try_limit_exceeded else 0
    b3 |= 0x20 if {"lower_consecutive", "lower_cumulative"} & f.limits else 0
    b3 |= 0x10 if f.new_card else 0
    b3 |= 0x08 if f.issuer_auth_failed_last_online else 0
    b3 |= 0x04 if f.issuer_auth_not_performed_after_online else 0
    b4 = min(f.script_count, 15) << 4
    b4 |= 0x08 if f.script_failed else 0
    b4 |= 0x02 if f.dda_performed else 0
    return bytes([0x03, b2, b3, b4])


def mchip_cvr(f: CvrFacts) -> bytes:
    """M/Chip 4 Card Verification Results, six bytes."""
    b1 = _ac_bits(f)
    b1 |= 0x08 if f.expired else 0
    b1 |= 0x04 if f.offline_pin_performed else 0
    b1 |= 0x02 if f.offline_pin_performed and f.offline_pin_enciphered else 0
    b1 |= 0x01 if f.offline_pin_performed and not f.offline_pin_failed else 0
    b2 = 0x80 if f.dda_performed else 0
    b2 |= 0x40 if f.cda_first else 0
    b2 |= 0x20 if f.cda_second else 0
    b2 |= 0x10 if f.issuer_auth_performed else 0
    b3 = ((f.script_count & 0x0F) << 4) | (f.pin_tries_left & 0x0F)
    b4 = 0x80 if f.last_online_not_completed else 0
    b4 |= 0x40 if f.unable_to_go_online else 0
    b4 |= 0x20 if not f.offline_pin_performed else 0
    b4 |= 0x10 if f.offline_pin_failed else 0
    b4 |= 0x08 if f.pin_try_limit_exceeded else 0
    if f.domestic is not None:
        b4 |= 0x02 if f.domestic else 0x04
    b5 = 0x80 if "lower_consecutive" in f.limits else 0
    b5 |= 0x40 if "upper_consecutive" in f.limits else 0
    b5 |= 0x20 if "lower_cumulative" in f.limits else 0
    b5 |= 0x10 if "upper_cumulative" in f.limits else 0
    b5 |= 0x04 if f.issuer_auth_failed else 0
    b5 |= 0x02 if f.script_received else 0
    b5 |= 0x01 if f.script_failed else 0
    return bytes([b1, b2, b3, b4, b5, 0x00])
