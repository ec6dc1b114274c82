"""Processing restrictions (EMV 4.4 Book 3, 10.4) on hand-built contexts, values coded by hand from
Book 3 Annex A and C2 (AUC bits), Book 4 Annex A1 (ATMs) and 6.7.3 (century), plus simulated cards
read through their records and property tests: any card data, never an exception."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sim_card_support import Terminal, make_card

from emv.context import TVR, Context, Transaction
from emv.kernel_config import AidParams, KernelConfig, TerminalConfig
from emv.restrictions import is_atm, processing_restrictions

H = bytes.fromhex
WHEN = datetime.datetime(2026, 11, 26, 12, 0)
AID = H("A0000000031010")
FRANCE, GERMANY = H("0250"), H("0276")  # '5F28' n 3; the terminal's country is 250 by default
POS = TerminalConfig()  # '22': attended merchant terminal, not an ATM


def ctx_for(card: dict[int, bytes], *, terminal: TerminalConfig = POS,
            versions: tuple[bytes, ...] = (H("0096"),), transaction_type: int = 0x00,
            other_amount: int = 0, when: datetime.datetime = WHEN,
            with_params: bool = True) -> Context:
    params = AidParams(aid=AID, application_versions=versions)
    return Context(
        config=KernelConfig(terminal=terminal, aids=(params,)),
        transaction=Transaction(amount=1500, when=when, transaction_type=transaction_type,
                                other_amount=other_amount),
        rng=lambda n: bytes(n),
        aid_params=params if with_params else None,
        card={0x5F24: H("491231"), **card},
    )


def run(card: dict[int, bytes], **kwargs: object) -> Context:
    ctx = ctx_for(card, **kwargs)  # type: ignore[arg-type]
    processing_restrictions(ctx)
    return ctx


# --- application version, Book 3 10.4.1 ------------------------------------------------------------


def test_same_version_sets_nothing() -> None:
    ctx = run({0x9F08: H("0096")})
    assert ctx.tvr.value == bytes(5)


def test_different_version_is_flagged() -> None:
    ctx = run({0x9F08: H("008C")})
    assert ctx.tvr.value == H("0080000000")


def test_card_version_among_the_terminal_versions_is_compatible() -> None:
    ctx = run({0x9F08: H("008C")}, versions=(H("0096"), H("008C")))
    assert not ctx.tvr.is_set(TVR.DIFFERENT_VERSIONS)


def test_absent_card_version_is_presumed_compatible() -> None:
    ctx = run({}, versions=(H("1234"),))
    assert ctx.tvr.value == bytes(5)
    assert ctx.events == []


@pytest.mark.parametrize("value", ["", "96", "009600"])
def test_malformed_card_version_differs(value: str) -> None:
    ctx = run({0x9F08: H(value)})
    assert ctx.tvr.is_set(TVR.DIFFERENT_VERSIONS)
    assert any("not 2 bytes" in event for event in ctx.events)


def test_no_terminal_version_is_not_compared() -> None:
    ctx = run({0x9F08: H("0096")}, with_params=False)
    assert not ctx.tvr.is_set(TVR.DIFFERENT_VERSIONS)
    ctx = run({0x9F08: H("0096")}, versions=())
    assert not ctx.tvr.is_set(TVR.DIFFERENT_VERSIONS)


# --- application usage control, Book 3 10.4.2 --------------------------------------------------------

# Annex C2, byte 1: b8 domestic cash, b7 international cash, b6 domestic goods, b5 international
# goods, b4 domestic services, b3 international services, b2 ATMs, b1 other terminals;
# byte 2: b8 domestic cashback, b7 international cashback.
NON_ATM = 0x01
ATM_BIT = 0x02


def auc(first: int, second: int = 0) -> bytes:
    return bytes([first, second])


ATM = TerminalConfig(terminal_type=0x14, additional_capabilities=H("8000F0A001"))


def test_atm_definition_of_book_4_annex_a1() -> None:
    assert is_atm(ATM)
    assert is_atm(TerminalConfig(terminal_type=0x16, additional_capabilities=H("8000000000")))
    # A '14' terminal without the cash capability, and a merchant '24' with it, are not ATMs.
    assert not is_atm(TerminalConfig(terminal_type=0x14, additional_capabilities=H("7000F0A001")))
    assert not is_atm(TerminalConfig(terminal_type=0x24, additional_capabilities=H("8000F0A001")))
    assert not is_atm(POS)


@pytest.mark.parametrize(("terminal", "first", "allowed"), [
    (POS, NON_ATM, True),
    (POS, ATM_BIT, False),
    (ATM, ATM_BIT, True),
    (ATM, NON_ATM, False),
])
def test_atm_and_other_terminals(terminal: TerminalConfig, first: int, allowed: bool) -> None:
    # No Issuer Country Code: only the terminal check applies (Table 36 needs both objects).
    ctx = run({0x9F07: auc(first)}, terminal=terminal, transaction_type=0x01)
    assert ctx.tvr.is_set(TVR.SERVICE_NOT_ALLOWED) is not allowed


# (transaction type, other amount, issuer country, AUC byte 1 without b1, AUC byte 2, allowed)
TABLE_36 = [
    # cash
    (0x01, 0, FRANCE, 0x80, 0x00, True),
    (0x01, 0, FRANCE, 0x40, 0x00, False),
    (0x01, 0, GERMANY, 0x40, 0x00, True),
    (0x01, 0, GERMANY, 0x80, 0x00, False),
    # purchase of goods or services: either bit of the right scope
    (0x00, 0, FRANCE, 0x20, 0x00, True),
    (0x00, 0, FRANCE, 0x08, 0x00, True),
    (0x00, 0, FRANCE, 0x14, 0x00, False),
    (0x00, 0, FRANCE, 0xC0, 0xC0, False),
    (0x00, 0, GERMANY, 0x10, 0x00, True),
    (0x00, 0, GERMANY, 0x04, 0x00, True),
    (0x00, 0, GERMANY, 0x28, 0x00, False),
    # purchase with cashback ('09'): both the purchase and the cashback bits
    (0x09, 500, FRANCE, 0x20, 0x80, True),
    (0x09, 500, FRANCE, 0x20, 0x00, False),
    (0x09, 500, FRANCE, 0x20, 0x40, False),
    (0x09, 500, FRANCE, 0x00, 0x80, False),
    (0x09, 500, GERMANY, 0x04, 0x40, True),
    (0x09, 500, GERMANY, 0x04, 0x80, False),
    # type '09' announces a cashback even before its amount is known
    (0x09, 0, FRANCE, 0x20, 0x00, False),
    (0x09, 0, FRANCE, 0x20, 0x80, True),
    # a cashback amount makes the cashback check apply whatever the type
    (0x00, 500, GERMANY, 0x10, 0x40, True),
    (0x00, 500, GERMANY, 0x10, 0x00, False),
    (0x00, 500, FRANCE, 0x20, 0x40, False),
]


@pytest.mark.parametrize(("txn_type", "other", "country", "first", "second", "allowed"), TABLE_36)
def test_table_36(txn_type: int, other: int, country: bytes, first: int, second: int,
                  allowed: bool) -> None:
    ctx = run({0x9F07: auc(first | NON_ATM, second), 0x5F28: country}, transaction_type=txn_type,
              other_amount=other)
    assert ctx.tvr.is_set(TVR.SERVICE_NOT_ALLOWED) is not allowed
    assert ctx.tvr.value[0] == 0 and ctx.tvr.value[2:] == bytes(3)


def test_full_auc_allows_every_service_at_a_pos() -> None:
    for txn_type, other in ((0x00, 0), (0x01, 0), (0x09, 100)):
        for country in (FRANCE, GERMANY):
            ctx = run({0x9F07: H("FFC0"), 0x5F28: country}, transaction_type=txn_type, other_amount=other)
            assert not ctx.tvr.is_set(TVR.SERVICE_NOT_ALLOWED)


def test_terminal_country_decides_domestic() -> None:
    germany_pos = TerminalConfig(country=276)
    ctx = run({0x9F07: auc(NON_ATM | 0x20), 0x5F28: GERMANY}, terminal=germany_pos)
    assert not ctx.tvr.is_set(TVR.SERVICE_NOT_ALLOWED)
    ctx = run({0x9F07: auc(NON_ATM | 0x20), 0x5F28: FRANCE}, terminal=germany_pos)
    assert ctx.tvr.is_set(TVR.SERVICE_NOT_ALLOWED)


def test_no_auc_no_check() -> None:
    ctx = run({0x5F28: GERMANY}, transaction_type=0x01, other_amount=10)
    assert ctx.tvr.value == bytes(5)


def test_other_transaction_types_only_get_the_terminal_check() -> None:
    ctx = run({0x9F07: auc(NON_ATM), 0x5F28: FRANCE}, transaction_type=0x20)
    assert not ctx.tvr.is_set(TVR.SERVICE_NOT_ALLOWED)
    assert any("type 20" in event for event in ctx.events)


@pytest.mark.parametrize("card", [
    {0x9F07: H("FF")},
    {0x9F07: H("FF0000")},
    {0x9F07: H("FFC0"), 0x5F28: H("0A50")},
    {0x9F07: H("FFC0"), 0x5F28: H("2500")},
    {0x9F07: H("FFC0"), 0x5F28: H("025000")},
])
def test_malformed_usage_control_or_country_is_not_allowed(card: dict[int, bytes]) -> None:
    ctx = run(card)
    assert ctx.tvr.is_set(TVR.SERVICE_NOT_ALLOWED)
    assert any("malformed" in event for event in ctx.events)


# --- effective and expiration dates, Book 3 10.4.3; Book 4 6.7.3 ------------------------------------


@pytest.mark.parametrize(("expiry", "expired"), [
    ("261126", False),  # the last valid day is the expiration date itself
    ("261125", True),
    ("261130", False),
    ("491231", False),  # 49 -> 2049
    ("500101", True),  # 50 -> 1950
    ("991231", True),  # 99 -> 1999
])
def test_expiration_date(expiry: str, expired: bool) -> None:
    ctx = run({0x5F24: H(expiry)})
    assert ctx.tvr.is_set(TVR.EXPIRED) is expired
    assert not ctx.tvr.is_set(TVR.NOT_YET_EFFECTIVE)


@pytest.mark.parametrize(("effective", "not_yet"), [
    ("261126", False),  # effective from that day on
    ("261127", True),
    ("000101", False),  # 00 -> 2000
    ("491231", True),
    ("991231", False),  # 1999
])
def test_effective_date(effective: str, not_yet: bool) -> None:
    ctx = run({0x5F25: H(effective)})
    assert ctx.tvr.is_set(TVR.NOT_YET_EFFECTIVE) is not_yet
    assert not ctx.tvr.is_set(TVR.EXPIRED)


def test_leap_day_expiry() -> None:
    leap = datetime.datetime(2028, 2, 29, 23, 59)
    assert not run({0x5F24: H("280229")}, when=leap).tvr.is_set(TVR.EXPIRED)
    assert run({0x5F24: H("280229")}, when=leap + datetime.timedelta(minutes=1)).tvr.is_set(TVR.EXPIRED)


@pytest.mark.parametrize("expiry", ["261131", "271301", "2612", "26AA01", "270000"])
def test_malformed_expiration_date_counts_as_expired(expiry: str) -> None:
    ctx = run({0x5F24: H(expiry)})
    assert ctx.tvr.is_set(TVR.EXPIRED)
    assert any("Expiration Date is malformed" in event for event in ctx.events)


@pytest.mark.parametrize("effective", ["260230", "2601", "F60101", ""])
def test_malformed_effective_date_counts_as_not_yet_effective(effective: str) -> None:
    ctx = run({0x5F25: H(effective)})
    assert ctx.tvr.is_set(TVR.NOT_YET_EFFECTIVE)
    assert not ctx.tvr.is_set(TVR.EXPIRED)


def test_missing_expiration_date() -> None:
    ctx = ctx_for({})
    del ctx.card[0x5F24]
    processing_restrictions(ctx)
    assert ctx.tvr.is_set(TVR.EXPIRED) and ctx.tvr.is_set(TVR.ICC_DATA_MISSING)


# --- simulated cards, read through their records -----------------------------------------------------


def sim_card_data(profile: str) -> dict[int, bytes]:
    term = Terminal(make_card(profile))
    term.start()
    return term.record_objects()


def test_sim_card_within_its_dates_and_usage() -> None:
    data = sim_card_data("visa_cda_online")
    ctx = ctx_for(data, versions=(H("0096"),))
    processing_restrictions(ctx)
    assert ctx.tvr.value == bytes(5)
    # The profile's AUC 'FF00' allows no cashback.
    ctx = ctx_for(data, transaction_type=0x09, other_amount=1000)
    processing_restrictions(ctx)
    assert ctx.tvr.value == H("0010000000")
    # A terminal that only knows another version.
    ctx = ctx_for(data, versions=(H("008C"),))
    processing_restrictions(ctx)
    assert ctx.tvr.value == H("0080000000")


def test_sim_expired_card() -> None:
    ctx = ctx_for(sim_card_data("expired_card"))
    processing_restrictions(ctx)
    assert ctx.tvr.value == H("0040000000")


def test_sim_not_yet_effective_card() -> None:
    ctx = ctx_for(sim_card_data("not_yet_effective"))
    processing_restrictions(ctx)
    assert ctx.tvr.value == H("0020000000")
    # On its effective day (2045-01-01) it is effective.
    ctx = ctx_for(sim_card_data("not_yet_effective"), when=datetime.datetime(2045, 1, 1, 0, 0))
    processing_restrictions(ctx)
    assert ctx.tvr.value == bytes(5)


# --- property: any card data, no exception, only the bits of this step -------------------------------

RESTRICTION_BITS = (TVR.ICC_DATA_MISSING, TVR.DIFFERENT_VERSIONS, TVR.EXPIRED, TVR.NOT_YET_EFFECTIVE,
                    TVR.SERVICE_NOT_ALLOWED)
TAGS = [0x9F08, 0x9F07, 0x5F28, 0x5F25, 0x5F24]


@settings(max_examples=400)
@given(card=st.dictionaries(st.sampled_from(TAGS), st.binary(max_size=6)),
       terminal_type=st.sampled_from([0x14, 0x15, 0x16, 0x21, 0x22, 0x23, 0x25, 0x34]),
       cash=st.booleans(), txn_type=st.integers(0, 0x99), other=st.integers(0, 10**6))
def test_any_card_data_never_raises(card: dict[int, bytes], terminal_type: int, cash: bool, txn_type: int,
                                    other: int) -> None:
    terminal = TerminalConfig(terminal_type=terminal_type,
                              additional_capabilities=H("8000F0A001" if cash else "0000F0A001"))
    ctx = ctx_for({}, terminal=terminal, transaction_type=txn_type, other_amount=other)
    ctx.card.clear()
    ctx.card.update(card)
    processing_restrictions(ctx)
    allowed = bytearray(5)
    for index, mask in RESTRICTION_BITS:
        allowed[index] |= mask
    assert all(value & ~allowed[i] == 0 for i, value in enumerate(ctx.tvr.value))
    assert ctx.tsi.value == bytes(2)
