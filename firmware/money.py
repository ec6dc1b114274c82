"""Amounts as integers of minor units with ISO 4217 currencies (ARCHITECTURE principle 10)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# ISO 4217: alphabetic code -> (numeric code, minor unit exponent), the currencies a terminal
# in the euro area meets; the configuration's numeric currency is used when not listed.
CURRENCIES: dict[str, tuple[int, int]] = {
    "EUR": (978, 2), "USD": (840, 2), "GBP": (826, 2), "CHF": (756, 2), "JPY": (392, 0),
    "SEK": (752, 2), "DKK": (208, 2), "NOK": (578, 2), "PLN": (985, 2), "CZK": (203, 2),
    "HUF": (348, 2), "RON": (946, 2), "CAD": (124, 2), "XPF": (953, 0), "MAD": (504, 2),
    "TND": (788, 3), "XOF": (952, 0), "KWD": (414, 3),
}
_BY_NUMBER = {number: (alpha, exponent) for alpha, (number, exponent) in CURRENCIES.items()}
MAX_AMOUNT = 10**12 - 1  # n12 (EMV 4.4 Book 3 Annex A, '9F02')


class MoneyError(ValueError):
    """An amount or currency the terminal cannot take."""


def currency(code: str) -> tuple[int, int]:
    """'EUR' or '978' -> (978, 2)."""
    text = code.strip().upper()
    if text in CURRENCIES:
        return CURRENCIES[text]
    if text.isdigit() and int(text) in _BY_NUMBER:
        return int(text), _BY_NUMBER[int(text)][1]
    raise MoneyError(f"unknown currency {code!r}")


def alpha(number: int) -> str:
    return _BY_NUMBER[number][0] if number in _BY_NUMBER else f"{number:03d}"


def parse_amount(text: str, exponent: int) -> int:
    """'12.50' with exponent 2 -> 1250. No floats, no more decimals than the currency has."""
    try:
        value = Decimal(text.strip().replace(",", "."))
    except InvalidOperation:
        raise MoneyError(f"{text!r} is not an amount") from None
    if not value.is_finite() or value < 0:
        raise MoneyError(f"{text!r} is not a positive amount")
    # Exact digits, never through a decimal context: its 28-digit precision would round away
    # extra decimals, and its Emax/Etiny would overflow ("1e999999") or flush to zero ("1e-1000030").
    _sign, digits, power = value.as_tuple()
    if not any(digits):
        return 0
    shift = int(power) + exponent  # minor units = digits * 10**shift
    whole = len(digits) + shift  # digits left of the point in minor units (the first is not 0)
    if whole > len(str(MAX_AMOUNT)):
        raise MoneyError(f"{text!r} is too large")
    if shift < 0 and any(digits[max(whole, 0):]):
        raise MoneyError(f"{text!r} has more than {exponent} decimals")
    minor = int("".join(map(str, digits[:whole])) + "0" * max(shift, 0))
    if minor > MAX_AMOUNT:
        raise MoneyError(f"{text!r} is too large")
    return minor


def format_amount(amount: int, exponent: int) -> str:
    """1250 with exponent 2 -> '12.50'; -250 -> '-2.50'."""
    if exponent == 0:
        return str(amount)
    units, cents = divmod(abs(amount), 10**exponent)
    return f"{'-' if amount < 0 else ''}{units}.{cents:0{exponent}d}"
