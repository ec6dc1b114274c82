"""Translations: one TOML catalogue per language in `ui/locales/<lang>.toml`.

A catalogue holds the texts under dotted keys (`[pin] last_try = ...` is `pin.last_try`) and, in
its `[format]` table, how the language writes amounts (decimal separator, digit grouping, where
the currency symbol goes). Texts take named parameters (`{count}`, `{amount}`).

Cardholder-facing screens use the card's language when the terminal speaks it (EMV 4.4 Book 1,
11.1: Language Preference '5F2D', up to four ISO 639-1 codes in order of preference); merchant
screens use the merchant's.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ui.contract import LANGUAGES, Money
from ui.errors import UiError

DEFAULT_LANGUAGE = LANGUAGES[0]
LOCALES = Path(__file__).with_name("locales")

# ISO 4217 alphabetic code -> the symbol written next to amounts; codes not listed are written
# as they are. A symbol made of letters takes the `money_code` pattern.
CURRENCY_SYMBOLS: dict[str, str] = {
    "EUR": "€",
    "USD": "$",
    "GBP": "£",
    "JPY": "¥",
    "SEK": "kr",
    "DKK": "kr",
    "NOK": "kr",
}

# ISO 4217 minor units where they are not 2 (`Status.pending_amounts` gives codes and minor units
# only), for the currencies `firmware.money.CURRENCIES` knows.
CURRENCY_EXPONENTS: dict[str, int] = {"JPY": 0, "XPF": 0, "XOF": 0, "TND": 3, "KWD": 3}


def currency_exponent(currency: str) -> int:
    return CURRENCY_EXPONENTS.get(currency, 2)


FORMAT_KEYS = ("decimal", "group", "group_from", "money", "money_code")


@dataclass(frozen=True)
class NumberFormat:
    decimal: str  # "," or "."
    group: str  # between groups of three digits
    group_from: int  # group only integer parts of at least this many digits (CLDR minimumGroupingDigits)
    money: str  # "{amount} {symbol}" with a symbol such as "€"
    money_code: str  # the same with a symbol made of letters ("kr", "CHF")

    def number(self, amount: int, exponent: int) -> str:
        units, minor = divmod(abs(amount), 10**exponent)
        digits = str(units)
        if len(digits) >= self.group_from:
            head = len(digits) % 3 or 3
            digits = self.group.join([digits[:head]] + [digits[i:i + 3] for i in range(head, len(digits), 3)])
        text = f"{digits}{self.decimal}{minor:0{exponent}d}" if exponent else digits
        return f"-{text}" if amount < 0 else text

    def money_text(self, amount: int, currency: str, exponent: int) -> str:
        symbol = CURRENCY_SYMBOLS.get(currency, currency)
        pattern = self.money_code if symbol.isalpha() else self.money
        sign = "-" if amount < 0 else ""
        return sign + pattern.format(amount=self.number(abs(amount), exponent), symbol=symbol)


@dataclass(frozen=True)
class Catalogue:
    language: str
    texts: Mapping[str, str]
    number: NumberFormat


def _flatten(table: Mapping[str, object], prefix: str, out: dict[str, str], path: Path) -> None:
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten(value, f"{dotted}.", out, path)
        elif isinstance(value, str):
            out[dotted] = value
        else:
            raise UiError(f"{path.name}: {dotted} must be a text")


def load_catalogue(path: Path) -> Catalogue:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UiError(f"{path.name}: {exc}") from exc
    fmt = data.pop("format", None)
    if not isinstance(fmt, dict) or set(fmt) != set(FORMAT_KEYS):
        raise UiError(f"{path.name}: [format] must have exactly {', '.join(FORMAT_KEYS)}")
    if not isinstance(fmt["group_from"], int) or isinstance(fmt["group_from"], bool):
        raise UiError(f"{path.name}: format.group_from must be an integer")
    for key in ("decimal", "group", "money", "money_code"):
        if not isinstance(fmt[key], str):
            raise UiError(f"{path.name}: format.{key} must be a text")
    texts: dict[str, str] = {}
    _flatten(data, "", texts, path)
    return Catalogue(path.stem, texts, NumberFormat(**fmt))


def load_catalogues(directory: Path = LOCALES,
                    languages: Iterable[str] = LANGUAGES) -> dict[str, Catalogue]:
    return {lang: load_catalogue(directory / f"{lang}.toml") for lang in languages}


def placeholders(text: str) -> set[str]:
    """The named parameters a text takes."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def pick_language(preferences: Sequence[str], spoken: Iterable[str], fallback: str) -> str:
    """The first preference the terminal speaks (case-insensitive ISO 639-1), else `fallback`."""
    spoken = set(spoken)
    for code in preferences:
        code = code.strip().lower()
        if code in spoken:
            return code
    return fallback


class Translator:
    """Texts of one language; a key the language lacks falls back to French, then fails.
    `used`, when given, collects every key looked up (a test checks no key goes unused)."""

    def __init__(self, catalogues: Mapping[str, Catalogue], language: str,
                 used: set[str] | None = None) -> None:
        if language not in catalogues:
            raise UiError(f"no catalogue for language {language!r}")
        self.language = language
        self._catalogue = catalogues[language]
        self._fallback = catalogues.get(DEFAULT_LANGUAGE, self._catalogue)
        self._used = used

    def __call__(self, key: str, **params: object) -> str:
        if self._used is not None:
            self._used.add(key)
        text = self._catalogue.texts.get(key)
        if text is None:
            text = self._fallback.texts.get(key)
        if text is None:
            raise UiError(f"no text for {key!r} in {self.language}")
        try:
            return text.format(**params) if params or "{" in text else text
        except (KeyError, IndexError, ValueError) as exc:
            raise UiError(f"text {key!r} in {self.language} needs other parameters: {exc}") from exc

    def has(self, key: str) -> bool:
        return key in self._catalogue.texts or key in self._fallback.texts

    def money(self, money: Money) -> str:
        return self._catalogue.number.money_text(money.amount, money.currency, money.exponent)

    def amount(self, amount: int, currency: str, exponent: int) -> str:
        return self._catalogue.number.money_text(amount, currency, exponent)
