"""The seam between the firmware and the touchscreen: what the firmware shows, what it asks, and
what comes back. Plain data, no pygame: `firmware/` imports this module and nothing else of `ui/`
(ARCHITECTURE principles 5 and 6: the UI renders and reports semantic events; decisions are the
firmware's).

Texts are never built here: views carry message keys (`reason`, `step`, `kind`) that the UI
translates into the language in force (`ui/i18n.py`). Amounts are integers of minor units with
their currency's alphabetic code and exponent.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

LANGUAGES = ("fr", "en", "es", "it", "de", "nl", "sv", "pt")  # ISO 639-1; French first: the default


@dataclass(frozen=True)
class Money:
    amount: int  # minor units
    currency: str  # ISO 4217 alphabetic code
    exponent: int  # ISO 4217 minor unit


# --- views: shown until the next one, nothing awaited ---------------------------------------

@dataclass(frozen=True)
class Idle:
    """The merchant's amount keypad is waiting (`AskAmount` answers it)."""


@dataclass(frozen=True)
class PresentCard:
    money: Money
    refund: bool = False
    preauth: bool = False  # a pre-authorization: funds reserved, the sale comes with its completion


@dataclass(frozen=True)
class Processing:
    step: str  # "reading", "authorizing", "completing", "forwarding"


@dataclass(frozen=True)
class Outcome:
    approved: bool
    money: Money
    reason: str | None = None  # e.g. "offline_refused:amount_limit", "issuer_declined", "card_declines"
    offline: bool = False  # approved without the bank: sent later
    signature_required: bool = False
    preauth: bool = False  # the outcome of a pre-authorization


@dataclass(frozen=True)
class Receipt:
    lines: tuple[str, ...]  # the journalled ticket's receipt (`firmware.receipt`)
    qr: str | None = None  # the e-receipt's address, shown as a QR code (AGEC: print on request)
    printable: bool = False  # a printer is configured: offer "print"
    duplicate: bool = False  # a reprint (`fiscal.reprint`): the screen marks it DUPLICATA
    training: bool = False  # a training ticket: the screen marks it, it is worth nothing


@dataclass(frozen=True)
class Error:
    # "card_removed", "no_network_offline", "reader_missing", "card_error", "try_again", "printer",
    # "void_refused" (the payment already went to the bank: a refund, not a void)
    kind: str


View = Idle | PresentCard | Processing | Outcome | Receipt | Error


# --- questions: the UI answers through `UiPort.ask` -----------------------------------------

@dataclass(frozen=True)
class AskAmount:
    """The merchant keys an amount (and a tip when `tip` is offered). Answer: `AmountEntry`
    or None (cancelled)."""

    currency: str
    exponent: int
    tip: bool = False
    menu: bool = False  # offer the merchant menu: the answer may then be `OPEN_MENU`
    refund: bool = False  # the keypad opens in refund mode (the merchant code was given)
    refund_allowed: bool = True  # the keypad may switch to refund mode
    purpose: str = "sale"  # AMOUNT_PURPOSES: "preauth" and "completion" have a keypad of their own
    maximum: int | None = None  # the largest amount accepted (a completion: the amount pre-authorized)


AMOUNT_PURPOSES = ("sale", "preauth", "completion")


OPEN_MENU = "menu"  # `AskAmount` answer: the merchant opened the menu (then `AskMenu`)


@dataclass(frozen=True)
class AmountEntry:
    amount: int
    tip: int = 0
    refund: bool = False


@dataclass(frozen=True)
class AskApplication:
    """The cardholder picks the brand of a co-badged card. Answer: the index, or None."""

    labels: tuple[str, ...]


@dataclass(frozen=True)
class AskConfirm:
    """The cardholder confirms the amount. Answer: bool."""

    money: Money


@dataclass(frozen=True)
class AskPin:
    """The cardholder types the PIN. Answer: the digits (str), or None (bypassed or cancelled).
    The digits go straight to the PIN pad or the card: never shown, logged or kept."""

    money: Money
    online: bool
    tries_left: int | None = None
    last_try: bool = False
    shuffled: bool = False


@dataclass(frozen=True)
class AskSignature:
    """The cardholder signs on the screen. Answer: bool (signed)."""

    money: Money


@dataclass(frozen=True)
class AskReceipt:
    """After the outcome: the receipt, with "print" and "done". Answer: "print" or "done"."""

    receipt: Receipt


@dataclass(frozen=True)
class AskCancel:
    """`view` with a cancel button while the firmware waits for something else (the card, the
    host). Answer: True when cancelled on the screen, False when the UI moved on to another
    view or question; the firmware cancels the `ask` when what it waited for came first."""

    view: View


# The merchant's flows, in the menu's order (`AskMenu` answers one of them); its "back" returns
# to the sale keypad.
MENU_ITEMS = ("refund", "preauth", "completion", "cancel", "settlement", "duplicate", "history",
              "offline_queue", "settings", "training")


@dataclass(frozen=True)
class AskMenu:
    """The merchant menu. Answer: one of `items`, or None (back to the keypad)."""

    items: tuple[str, ...] = MENU_ITEMS


SEND_NOW = "send_now"  # `AskOfflineQueue` answer


@dataclass(frozen=True)
class AskOfflineQueue:
    """Payments approved offline waiting for the bank. Answer: `SEND_NOW`, or None (back)."""

    payments: tuple[Money, ...]


CODE_PURPOSES = ("refund", "completion", "cancel", "settlement", "settings", "training")


@dataclass(frozen=True)
class AskCode:
    """The merchant types the merchant code before a guarded flow (`purpose`, a `CODE_PURPOSES`
    entry); the digits are masked on screen. Answer: the digits (str), or None (back). The
    code is checked by the firmware, never kept."""

    purpose: str
    tries_left: int | None = None
    refused: bool = False  # the previous code was wrong
    locked: bool = False  # too many wrong codes: the flow is refused for a while


@dataclass(frozen=True)
class TicketLine:
    """One ticket of the history (`firmware.fiscal`), newest first."""

    seq: int
    kind: str  # "sale", "refund", "cancellation"
    money: Money  # negative for a refund or a cancellation
    at: str  # local time, "YYYY-MM-DD HH:MM"
    cancelled: bool = False  # a later cancellation voids it
    training: bool = False


TICKET_ACTIONS = ("duplicate", "cancel")


@dataclass(frozen=True)
class AskTicket:
    """The last tickets; the merchant picks one for one of `actions`. Answer: `TicketChoice`,
    or None (back)."""

    tickets: tuple[TicketLine, ...]
    actions: tuple[str, ...] = TICKET_ACTIONS


@dataclass(frozen=True)
class TicketChoice:
    seq: int
    action: str  # one of `AskTicket.actions`


@dataclass(frozen=True)
class PreauthLine:
    """One open pre-authorization: funds reserved on a card, waiting for the final amount."""

    payment: int  # the terminal's payment id
    money: Money  # the amount reserved
    at: str  # local time, "YYYY-MM-DD HH:MM"
    pan_masked: str | None = None  # the card, masked (PCI DSS 3.4)


PREAUTH_ACTIONS = ("complete", "release")


@dataclass(frozen=True)
class AskPreauth:
    """The open pre-authorizations, oldest first; the merchant picks one to complete (the final
    amount is asked next) or to release. Answer: `PreauthChoice`, or None (back)."""

    preauths: tuple[PreauthLine, ...]
    actions: tuple[str, ...] = PREAUTH_ACTIONS


@dataclass(frozen=True)
class PreauthChoice:
    payment: int
    action: str  # one of `AskPreauth.actions`


@dataclass(frozen=True)
class SchemeLine:
    """One scheme's totals in the settlement report."""

    scheme: str  # the brand's label, else the RID in hex
    debit_count: int
    debit: Money
    credit_count: int
    credit: Money


# SettlementReport.result
SETTLEMENT_RESULTS = ("in_balance", "out_of_balance", "host_unreachable", "refused")


@dataclass(frozen=True)
class SettlementReport:
    """The end-of-day settlement ("télécollecte"): the batch sent, its totals per scheme, the
    host's verdict, and whether the fiscal day was closed."""

    batch: int
    schemes: tuple[SchemeLine, ...]
    result: str  # one of SETTLEMENT_RESULTS
    day_closed: bool = False


@dataclass(frozen=True)
class AskSettlement:
    """The settlement report with "done", and "print" when `printable`. Answer: "done" or
    "print"."""

    report: SettlementReport
    printable: bool = False  # a printer is configured: offer "print"


@dataclass(frozen=True)
class Settings:
    language: str  # the merchant's (LANGUAGES)
    shuffle: bool  # the PIN pad's digits in a random order
    training: bool  # training mode: nothing goes to the bank, tickets are marked


@dataclass(frozen=True)
class AskSettings:
    """The settings behind the merchant code. Answer: the new `Settings`, or None (back)."""

    current: Settings
    languages: tuple[str, ...] = LANGUAGES


Question = (AskAmount | AskApplication | AskConfirm | AskPin | AskSignature | AskReceipt | AskCancel | AskMenu
            | AskOfflineQueue | AskCode | AskTicket | AskPreauth | AskSettlement | AskSettings)


# --- the status bar -------------------------------------------------------------------------

@dataclass(frozen=True)
class Status:
    route: str | None = None  # "4G", "3G", "2G", "wifi", "ethernet", or None (no link)
    signal_bars: int = 0  # 0..4
    battery_percent: int | None = None
    charging: bool = False
    pending_count: int = 0  # offline payments and reversals waiting for the bank
    pending_amounts: dict[str, int] = field(default_factory=dict)  # alpha code -> minor units
    clock: datetime.datetime | None = None
    alerts: tuple[str, ...] = ()  # message keys: "saf_overdue", "declined_after_the_fact", ...
    training: bool = False  # training mode is on


class UiPort(Protocol):
    """What the firmware calls, on its event loop."""

    def show(self, view: View) -> None: ...

    async def ask(self, question: Question) -> Any: ...

    def set_status(self, status: Status) -> None: ...

    def cardholder_language(self, preferences: Sequence[str]) -> str:
        """The first of the card's language preferences ('5F2D', ISO 639-1) the UI speaks, or
        the merchant's language; cardholder-facing screens use it until `Idle`."""
        ...
