"""Amounts in minor units and ISO 4217 currencies (firmware/money.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.money import MAX_AMOUNT, MoneyError, alpha, currency, format_amount, parse_amount

N12 = 10**12 - 1  # EMV 4.4 Book 3 Annex A: Amount, Authorised '9F02' is n12


@pytest.mark.parametrize(("text", "exponent", "minor"), [
    ("12.50", 2, 1250),
    ("12,5", 2, 1250),
    ("12.5", 2, 1250),
    (" 7 ", 2, 700),
    ("0", 2, 0),
    ("0.00", 2, 0),
    ("7", 0, 7),
    ("0", 0, 0),
    ("7", 3, 7000),
    ("12,5", 3, 12500),
    ("0.001", 3, 1),
    ("12.500", 2, 1250),  # trailing zeros are not decimals
    ("7.0", 0, 7),
    ("1e3", 2, 100000),  # what Decimal reads, kept in range
    ("9999999999.99", 2, N12),
    ("999999999999", 0, N12),
])
def test_good_amounts(text: str, exponent: int, minor: int) -> None:
    assert parse_amount(text, exponent) == minor


@pytest.mark.parametrize(("text", "exponent"), [
    ("12.505", 2),
    ("0.001", 2),
    ("7.5", 0),
    ("0.0001", 3),
    ("-1", 2),
    ("-0.01", 2),
    ("NaN", 2),
    ("sNaN", 2),
    ("inf", 2),
    ("-Infinity", 2),
    ("", 2),
    ("  ", 2),
    ("12.50 EUR", 2),
    ("1.234,56", 2),
    ("1,234.56", 2),
    ("abc", 2),
    ("10000000000.00", 2),  # 10^12 minor units: one more than n12
    ("1000000000000", 0),
    ("1000000000", 3),
    ("1e10", 2),
    ("1e999999", 2),  # beyond the decimal context's Emax
    ("1e999999999999999999", 2),
    ("9" * 5000, 2),
    ("1e-1000030", 2),  # below the decimal context's Etiny: must not round to 0
    ("0.01" + "0" * 40 + "1", 2),  # more significant digits than the decimal context keeps
    ("1.0000000000000000000000000001", 2),
    ("0." + "0" * 5000 + "1", 2),
])
def test_refused_amounts(text: str, exponent: int) -> None:
    with pytest.raises(MoneyError):
        parse_amount(text, exponent)


@given(st.text(max_size=60), st.sampled_from([0, 2, 3]))
def test_any_text_parses_in_range_or_raises_money_error(text: str, exponent: int) -> None:
    try:
        minor = parse_amount(text, exponent)
    except MoneyError:
        return
    assert isinstance(minor, int) and not isinstance(minor, bool)
    assert 0 <= minor <= MAX_AMOUNT


_numberish = st.text(alphabet="0123456789.,-+eE_ naNIf", max_size=40)


@given(_numberish, st.sampled_from([0, 2, 3]))
def test_number_like_text_parses_exactly_or_raises_money_error(text: str, exponent: int) -> None:
    try:
        minor = parse_amount(text, exponent)
    except MoneyError:
        return
    # Independent check: the exact decimal value, scaled without any context rounding.
    exact = Decimal(text.strip().replace(",", "."))
    assert Decimal(minor) == exact * (Decimal(10) ** exponent)


@given(st.integers(min_value=0, max_value=N12), st.sampled_from([0, 2, 3]))
def test_written_amount_reads_back(minor: int, exponent: int) -> None:
    units, fraction = divmod(minor, 10**exponent)
    text = f"{units}.{fraction:0{exponent}d}" if exponent else str(units)
    assert parse_amount(text, exponent) == minor
    assert format_amount(minor, exponent) == text


@given(st.decimals(min_value=0, max_value=Decimal("9999999999.99"), places=2, allow_nan=False,
                   allow_infinity=False))
def test_round_trip_of_generated_decimals(value: Decimal) -> None:
    text = format(value, "f")
    minor = parse_amount(text, 2)
    assert Decimal(minor) == value * 100
    assert Decimal(format_amount(minor, 2)) == value


@pytest.mark.parametrize(("minor", "exponent", "text"), [
    (1250, 2, "12.50"), (5, 2, "0.05"), (0, 2, "0.00"), (7, 0, "7"), (1, 3, "0.001"),
    (N12, 2, "9999999999.99"), (-250, 2, "-2.50"), (-5, 2, "-0.05"), (-7, 0, "-7"),
])
def test_format_amount(minor: int, exponent: int, text: str) -> None:
    assert format_amount(minor, exponent) == text


# ISO 4217 numeric codes and minor units, from the standard's list.
@pytest.mark.parametrize(("code", "expected"), [
    ("EUR", (978, 2)), ("eur", (978, 2)), (" EUR ", (978, 2)), ("978", (978, 2)),
    ("USD", (840, 2)), ("840", (840, 2)), ("JPY", (392, 0)), ("392", (392, 0)),
    ("TND", (788, 3)), ("KWD", (414, 3)), ("XOF", (952, 0)),
])
def test_currency(code: str, expected: tuple[int, int]) -> None:
    assert currency(code) == expected


@pytest.mark.parametrize("code", ["XXX", "", "EU", "EURO", "999", "0978x", "12", "-978", "€"])
def test_unknown_currency(code: str) -> None:
    with pytest.raises(MoneyError):
        currency(code)


def test_alpha_names_known_currencies_and_pads_others() -> None:
    assert alpha(978) == "EUR"
    assert alpha(392) == "JPY"
    assert alpha(4) == "004"


@given(st.integers(min_value=-N12, max_value=N12), st.sampled_from([0, 2, 3]))
def test_a_formatted_amount_is_the_exact_decimal(minor: int, exponent: int) -> None:
    assert Decimal(format_amount(minor, exponent)) == Decimal(minor).scaleb(-exponent)
