"""Catalogues of the touchscreen: complete in the eight languages, no key unused, parameters
kept, amounts written the way each language writes them, every reason word of the kernel, the
risk rules and the offline limits with a sentence of its own."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ["SDL_VIDEODRIVER"] = "dummy"

from emv import kernel
from firmware import offline_limits
from ui import reasons
from ui.app import TouchUi
from ui.contract import LANGUAGES, Money
from ui.errors import UiError
from ui.gallery import shoot
from ui.i18n import (
    LOCALES,
    load_catalogue,
    load_catalogues,
    pick_language,
    placeholders,
)

ROOT = Path(__file__).resolve().parent.parent
NBSP, NNBSP = "\u00a0", "\u202f"


def _raw(language: str) -> dict[str, str]:
    """A catalogue read with tomllib alone, flattened: the reference the code is checked against."""
    with (LOCALES / f"{language}.toml").open("rb") as f:
        data = tomllib.load(f)
    data.pop("format")
    out: dict[str, str] = {}

    def walk(table: dict[str, object], prefix: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = str(value)

    walk(data, "")
    return out


@pytest.fixture(scope="module")
def catalogues():
    return load_catalogues()


def test_every_language_has_a_catalogue_with_the_same_keys_as_french() -> None:
    assert set(LANGUAGES) == {p.stem for p in LOCALES.glob("*.toml")}
    french = set(_raw("fr"))
    for language in LANGUAGES:
        keys = set(_raw(language))
        assert keys == french, (language, sorted(keys ^ french))


def test_no_text_is_empty_and_parameters_match_french() -> None:
    french = _raw("fr")
    for language in LANGUAGES:
        for key, text in _raw(language).items():
            assert text.strip(), (language, key)
            assert placeholders(text) == placeholders(french[key]), (language, key)


def test_translations_are_not_copies_of_english() -> None:
    english = _raw("en")
    for language in LANGUAGES:
        if language == "en":
            continue
        same = [key for key, text in _raw(language).items() if text == english[key]]
        # Words shared across languages ("Menu", "Ethernet", "Total: {amounts}") stay under 10%.
        assert len(same) <= len(english) // 10, (language, same)


def test_a_missing_key_is_reported_and_a_known_one_falls_back_to_french(catalogues) -> None:
    from ui.i18n import Catalogue, Translator

    partial = dict(catalogues)
    german = catalogues["de"]
    texts = {k: v for k, v in german.texts.items() if k != "pin.last_try"}
    partial["de"] = Catalogue("de", texts, german.number)
    tr = Translator(partial, "de")
    assert tr("pin.last_try") == _raw("fr")["pin.last_try"]
    with pytest.raises(UiError):
        tr("pin.no_such_key")
    with pytest.raises(UiError):
        tr("pin.tries_left")  # needs {count}
    with pytest.raises(UiError):
        Translator(catalogues, "xx")


def test_no_key_goes_unused_and_none_is_used_without_a_text(catalogues) -> None:
    """Every state of every screen (the gallery) drawn once: the keys looked up are exactly the
    catalogue's."""
    used: set[str] = set()

    async def main() -> None:
        ui = TouchUi(used_keys=used, pin_shuffle_seed=1)
        ui.open()
        try:
            await shoot(ui, None)
        finally:
            ui.close()

    asyncio.run(main())
    keys = set(_raw("fr"))
    assert used - keys == set()
    assert keys - used == set(), "keys no screen uses"


# Amounts as CLDR writes them (cldr.unicode.org, the languages' decimalFormats and
# currencyFormats): decimal comma everywhere but English, the grouping each language uses.
MONEY = [
    ("fr", 123450, "EUR", 2, f"1{NNBSP}234,50{NBSP}€"),
    ("fr", -250, "EUR", 2, f"-2,50{NBSP}€"),
    ("en", 123450, "EUR", 2, "€1,234.50"),
    ("en", -250, "EUR", 2, "-€2.50"),
    ("en", 1250, "SEK", 2, f"kr{NBSP}12.50"),
    ("en", 1234, "JPY", 0, "¥1,234"),
    ("es", 123450, "EUR", 2, f"1234,50{NBSP}€"),  # es: no grouping under five digits
    ("es", 1234500, "EUR", 2, f"12.345,00{NBSP}€"),
    ("it", 123450, "EUR", 2, f"1.234,50{NBSP}€"),
    ("de", 123450, "EUR", 2, f"1.234,50{NBSP}€"),
    ("de", 5, "EUR", 2, f"0,05{NBSP}€"),
    ("nl", 123450, "EUR", 2, f"€{NBSP}1.234,50"),
    ("sv", 123450, "SEK", 2, f"1{NBSP}234,50{NBSP}kr"),
    ("pt", 123450, "EUR", 2, f"1234,50{NBSP}€"),
    ("pt", 1234500, "EUR", 2, f"12{NBSP}345,00{NBSP}€"),
    ("fr", 1234567, "KWD", 3, f"1{NNBSP}234,567{NBSP}KWD"),
]


@pytest.mark.parametrize(("language", "amount", "currency", "exponent", "expected"), MONEY)
def test_money_is_written_per_language(catalogues, language, amount, currency, exponent, expected) -> None:
    from ui.i18n import Translator

    assert Translator(catalogues, language).money(Money(amount, currency, exponent)) == expected


def test_card_language_preference_picks_the_first_spoken_language() -> None:
    assert pick_language(["ja", "DE", "fr"], LANGUAGES, "fr") == "de"
    assert pick_language(["ja", "zh"], LANGUAGES, "it") == "it"
    assert pick_language([], LANGUAGES, "fr") == "fr"


def _kernel_reason_words() -> set[str]:
    """The reason words the kernel and the risk rules can put in an outcome, read from their
    source and tables."""
    words = {word for _, word in kernel._DENIAL_REASONS}
    source = "\n".join(p.read_text() for p in (ROOT / "emv").glob("*.py"))
    words |= set(re.findall(r'Terminate\("([a-z_]+)"', source))
    words |= set(re.findall(r'Terminate\("([a-z_]+)" if', source))
    words |= set(re.findall(r'Terminate\("[a-z_]+" if [^"]+ else "([a-z_]+)"', source))
    kernel_source = (ROOT / "emv" / "kernel.py").read_text()
    words |= set(re.findall(r'OutcomeKind\.[A-Z_]+, "([a-z_]+)"', kernel_source))
    words |= set(re.findall(r'reason = "([a-z_]+)" if .+ else "([a-z_]+)"', kernel_source)[0])
    words |= set(re.findall(r'return "([a-z_]+)"', inspect.getsource(kernel._decline_reason)))
    risk_source = (ROOT / "emv" / "risk.py").read_text()
    words |= set(re.findall(r'_decline\(ctx, "([a-z_]+)"\)', risk_source))
    words |= set(re.findall(r'_RULE = "([a-z_]+)"', risk_source))
    return words


def test_every_kernel_and_risk_reason_has_its_own_sentence() -> None:
    words = _kernel_reason_words()
    # the words this test must find, or its patterns went stale
    assert {"issuer_declined", "card_declines", "card_removed", "not_accepted", "application_blocked",
            "decline_above", "pin_try_limit_exceeded"} <= words
    fallbacks = {f"reason.{reasons.FALLBACK_DECLINED}", f"reason.{reasons.FALLBACK_APPROVED}"}
    for word in sorted(words):
        key = reasons.reason_key(word, approved=False)
        assert word in reasons.REASON_MESSAGES and key not in fallbacks, word


def test_every_offline_limit_refusal_has_its_own_sentence_in_every_language() -> None:
    for word in offline_limits.REASONS:
        key = reasons.reason_key(f"offline_refused:{word}", approved=False)
        assert key not in (f"reason.{reasons.OFFLINE_OTHER}", f"reason.{reasons.FALLBACK_DECLINED}"), word
        for language in LANGUAGES:
            assert _raw(language)[key], (language, word)
    other = reasons.reason_key("offline_refused:no_decision", approved=False)
    assert other == f"reason.{reasons.OFFLINE_OTHER}"
    assert reasons.reason_key("something_new", approved=False) == f"reason.{reasons.FALLBACK_DECLINED}"
    assert reasons.reason_key(None, approved=True) is None


def test_every_reason_sentence_is_in_the_catalogue() -> None:
    assert reasons.message_keys() <= set(_raw("fr"))


def test_a_broken_catalogue_is_refused_with_the_file_named(tmp_path: Path) -> None:
    bad = tmp_path / "xx.toml"
    bad.write_text('[format]\ndecimal = ","\n')
    with pytest.raises(UiError, match=r"xx\.toml"):
        load_catalogue(bad)
    bad.write_text((LOCALES / "fr.toml").read_text() + "\n[extra]\nnumber = 3\n")
    with pytest.raises(UiError, match=r"extra\.number"):
        load_catalogue(bad)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_catalogue_file_loads_or_raises_the_ui_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "zz.toml"
        path.write_text(text, encoding="utf-8")
        try:
            catalogue = load_catalogue(path)
        except UiError:
            return
        assert all(isinstance(v, str) for v in catalogue.texts.values())
