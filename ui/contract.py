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


@dataclass(frozen=True)
class Receipt:
    lines: tuple[str, ...]  # the journalled ticket's receipt (`firmware.receipt`)
    qr: str | None = None  # the e-receipt's address, shown as a QR code (AGEC: print on request)
    printable: bool = False  # a printer is configured: offer "print"


@dataclass(frozen=True)
class Error:
    kind: str  # "card_removed", "no_network_offline", "reader_missing", "card_error", "try_again"


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


# The merchant's flows, in the menu's order (`AskMenu` answers one of them).
MENU_ITEMS = ("sale", "refund", "cancel", "settlement", "duplicate", "history", "offline_queue",
              "settings", "training")


@dataclass(frozen=True)
class AskMenu:
    """The merchant menu. Answer: one of `items`, or None (back to the keypad)."""

    items: tuple[str, ...] = MENU_ITEMS


SEND_NOW = "send_now"  # `AskOfflineQueue` answer


@dataclass(frozen=True)
class AskOfflineQueue:
    """Payments approved offline waiting for the bank. Answer: `SEND_NOW`, or None (back)."""

    payments: tuple[Money, ...]


Question = (AskAmount | AskApplication | AskConfirm | AskPin | AskSignature | AskReceipt | AskCancel | AskMenu
            | AskOfflineQueue)


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


class UiPort(Protocol):
    """What the firmware calls, on its event loop."""

    def show(self, view: View) -> None: ...

    async def ask(self, question: Question) -> Any: ...

    def set_status(self, status: Status) -> None: ...

    def cardholder_language(self, preferences: Sequence[str]) -> str:
        """The first of the card's language preferences ('5F2D', ISO 639-1) the UI speaks, or
        the merchant's language; cardholder-facing screens use it until `Idle`."""
        ...
