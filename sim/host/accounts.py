"""The simulated issuer's accounts: one per card number of the simulator profiles, and the rules
that decide an authorization (the ISO 8583:1987 field 39 codes of docs/host-protocol.md).

The order of the checks, first failing wins:

| check | code |
|---|---|
| card number not issued by the simulator | `14` invalid card number |
| field 55 unreadable or missing what the ARQC covers | `30` format error |
| ARQC does not verify (EMV 4.4 Book 2, 8.1) | `05` do not honour |
| field 4 differs from the amount the card signed ('9F02') | `13` invalid amount |
| a "decline next" fault is armed | its code |
| account blocked | `62` restricted card |
| expiry date (field 14) before the current month | `54` expired card |
| field 49 is not the account's currency | `57` not permitted to cardholder |
| online PIN tries already exhausted | `75` PIN tries exceeded |
| wrong online PIN | `55` incorrect PIN (`75` for the one that exhausts the tries) |
| debit over the per-transaction limit | `61` exceeds amount limit |
| debit over the available balance | `51` insufficient funds |
| otherwise | `00` approved |
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from emv.sensitive import pan_token
from sim.card.issuer import IssuedCard, SimulatedIssuer
from sim.host.ledger import DEBIT_TYPES, Ledger

DEFAULT_OPENING_BALANCE = 50_000  # 500.00 in a 2-decimal currency
DEFAULT_TRANSACTION_LIMIT = 100_000  # 1000.00
DEFAULT_PIN_TRY_LIMIT = 3


class Code:
    """Field 39 values the host answers (ISO 8583:1987; docs/host-protocol.md, Response codes)."""

    APPROVED = "00"
    DO_NOT_HONOUR = "05"
    INVALID_TRANSACTION = "12"
    INVALID_AMOUNT = "13"
    INVALID_CARD = "14"
    FORMAT_ERROR = "30"
    INSUFFICIENT_FUNDS = "51"
    EXPIRED = "54"
    WRONG_PIN = "55"
    NOT_PERMITTED = "57"
    AMOUNT_LIMIT = "61"
    RESTRICTED_CARD = "62"
    SECURITY_VIOLATION = "63"
    PIN_TRIES_EXCEEDED = "75"
    DUPLICATE = "94"
    RECONCILE_ERROR = "95"


class AccountError(Exception):
    """An account rule or command that cannot apply (unknown profile, bad amount)."""


@dataclass(frozen=True)
class AccountRules:
    """How accounts are seeded and checked. Amounts in minor units of each card's currency;
    `balances` and `blocked` name simulator profiles."""

    opening_balance: int = DEFAULT_OPENING_BALANCE
    transaction_limit: int = DEFAULT_TRANSACTION_LIMIT
    pin_try_limit: int = DEFAULT_PIN_TRY_LIMIT
    balances: Mapping[str, int] = field(default_factory=dict)
    blocked: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name, value in (("opening_balance", self.opening_balance),
                            ("transaction_limit", self.transaction_limit),
                            ("pin_try_limit", self.pin_try_limit), *self.balances.items()):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise AccountError(f"{name}: an integer >= 0 is needed")


def masked(pan: str) -> str:
    """First 6 and last 4 digits (PCI DSS 3.4)."""
    return pan[:6] + "*" * max(len(pan) - 10, 0) + pan[-4:]


class Accounts:
    """The accounts of the simulator's cards, kept in the ledger."""

    def __init__(self, issuer: SimulatedIssuer, ledger: Ledger, rules: AccountRules) -> None:
        self.issuer = issuer
        self.ledger = ledger
        self.rules = rules
        profiles = {card.profile for card in issuer.cards}
        unknown = sorted((set(rules.balances) | set(rules.blocked)) - profiles)
        if unknown:
            raise AccountError(f"no simulator profile {unknown[0]!r}")
        # One account per card number, which several profiles may share (one card in several
        # states): a balance or block set for any of them applies to the card.
        cards: dict[str, list[IssuedCard]] = {}
        for card in issuer.cards:
            cards.setdefault(pan_token(card.app.pan), []).append(card)
        with ledger.transaction():
            for token, same in cards.items():
                names = sorted({card.profile for card in same})
                openings = {rules.balances[name] for name in names if name in rules.balances}
                if len(openings) > 1:
                    raise AccountError(f"profiles {', '.join(names)} share one card: give it one balance")
                first = same[0].app
                ledger.open_account(token, ",".join(names), masked(first.pan), int(first.currency),
                                    openings.pop() if openings else rules.opening_balance)
                if rules.blocked & set(names):
                    ledger.set_blocked(token, True)

    def tokens(self, profile: str) -> list[str]:
        tokens = sorted({pan_token(card.app.pan) for card in self.issuer.cards if card.profile == profile})
        if not tokens:
            raise AccountError(f"no simulator profile {profile!r}")
        return tokens

    def block(self, profile: str, blocked: bool = True) -> None:
        for token in self.tokens(profile):
            self.ledger.set_blocked(token, blocked)

    def set_balance(self, profile: str, amount: int) -> None:
        """Make the available balance of the profile's cards `amount` now."""
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise AccountError("an amount is an integer of minor units")
        for token in self.tokens(profile):
            account = self.ledger.account(token)
            if account is not None:
                self.ledger.set_opening(token, account.opening + amount - self.ledger.balance(token))

    def balance(self, profile: str) -> int:
        return self.ledger.balance(self.tokens(profile)[0])

    def decide(self, card: IssuedCard, request: Mapping[str, str], *, pin: str | None,
               today: datetime.date) -> str:
        """The account rules of the module's table, from the blocked check on (the ARQC is
        already verified). `pin` is the deciphered online PIN ('' when the block did not
        decipher), None without a PIN block. Updates the wrong-PIN count."""
        token = pan_token(card.app.pan)
        account = self.ledger.account(token)
        if account is None:
            return Code.INVALID_CARD
        if account.blocked:
            return Code.RESTRICTED_CARD
        expiry = request.get("14")
        if expiry is not None and expiry < f"{today:%y%m}":
            return Code.EXPIRED
        if int(request["49"]) != account.currency:
            return Code.NOT_PERMITTED
        if pin is not None:
            if account.wrong_pins >= self.rules.pin_try_limit:
                return Code.PIN_TRIES_EXCEEDED
            if not hmac.compare_digest(pin.encode(), card.pin.encode()):
                wrong = account.wrong_pins + 1
                self.ledger.set_wrong_pins(token, wrong)
                return Code.PIN_TRIES_EXCEEDED if wrong >= self.rules.pin_try_limit else Code.WRONG_PIN
            self.ledger.set_wrong_pins(token, 0)
        amount = int(request["4"])
        if request["3"][:2] in DEBIT_TYPES:
            if amount > self.rules.transaction_limit:
                return Code.AMOUNT_LIMIT
            if amount > self.ledger.balance(token):
                return Code.INSUFFICIENT_FUNDS
        return Code.APPROVED
