"""The merchant's offline limits (firmware/offline_limits.py): which offline approvals a terminal
allows, with what reason it refuses, when forwarding is overdue; and the [offline] section of the
configuration (firmware/config.py) they come from."""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_config import minimal, parse

from emv.requests import ApproveOffline, OfflineDecision
from firmware.config import ConfigError, load_config
from firmware.offline_limits import (
    OVERDUE,
    REASONS,
    OfflineLimits,
    OfflineLimitsError,
    decide,
    message,
    overdue,
)
from firmware.saf_queue import SafStatus

EURO, DOLLAR = 978, 840
VISA = bytes.fromhex("A0000000031010")
MASTERCARD = bytes.fromhex("A0000000041010")
AMEX = bytes.fromhex("A00000002501")
NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
EMPTY = SafStatus(0, {}, None)

LIMITS = OfflineLimits(enabled=True, max_amount=5000, max_total=20000, max_count=10,
                       max_age=datetime.timedelta(hours=12), schemes=(VISA[:5], MASTERCARD[:5]))


def ask(amount: int = 1000, *, aid: bytes = VISA, currency: int = EURO, online_pin: bool = False,
        unable_online: bool = False) -> ApproveOffline:
    return ApproveOffline(aid=aid, amount=amount, currency=currency, transaction_type=0x00,
                          online_pin=online_pin, unable_online=unable_online)


def queue(count: int = 0, oldest: datetime.datetime | None = None, **amounts: int) -> SafStatus:
    per_currency = {{"eur": EURO, "usd": DOLLAR}[name]: value for name, value in amounts.items()}
    return SafStatus(count, per_currency, oldest)


def reason(limits: OfflineLimits, request: ApproveOffline, status: SafStatus) -> str | None:
    return decide(limits, request, status, NOW).reason


# --- each reason, at its boundary ---------------------------------------------------------------


@pytest.mark.parametrize("unable_online", [False, True])
def test_within_every_limit_is_allowed(unable_online: bool) -> None:
    assert decide(LIMITS, ask(unable_online=unable_online), EMPTY, NOW) == OfflineDecision.allow()


def test_disabled_refuses_everything() -> None:
    off = dataclasses.replace(LIMITS, enabled=False)
    assert reason(off, ask(1), EMPTY) == "disabled"


def test_a_pre_authorization_is_never_approved_offline_whatever_the_limits() -> None:
    assert decide(LIMITS, ask(1), EMPTY, NOW, preauth=True) == OfflineDecision.refuse("preauth")
    assert decide(LIMITS, ask(1), EMPTY, NOW) == OfflineDecision.allow()


def test_an_online_pin_is_refused() -> None:
    assert reason(LIMITS, ask(online_pin=True), EMPTY) == "online_pin"
    assert reason(LIMITS, ask(online_pin=True, unable_online=True), EMPTY) == "online_pin"


@pytest.mark.parametrize(("aid", "allowed"), [
    (VISA, True),
    (MASTERCARD, True),
    (bytes.fromhex("A0000000032010"), True),  # Visa Electron: same RID
    (AMEX, False),
    (bytes.fromhex("A0000000"), False),  # shorter than a RID
    (b"", False),
])
def test_the_scheme_is_the_rid_of_the_aid(aid: bytes, allowed: bool) -> None:
    assert reason(LIMITS, ask(aid=aid), EMPTY) == (None if allowed else "scheme")


def test_no_schemes_refuses_every_card() -> None:
    assert reason(dataclasses.replace(LIMITS, schemes=()), ask(), EMPTY) == "scheme"


def test_the_amount_limit_is_inclusive() -> None:
    assert reason(LIMITS, ask(5000), EMPTY) is None
    assert reason(LIMITS, ask(5001), EMPTY) == "amount_limit"
    assert reason(dataclasses.replace(LIMITS, max_amount=0), ask(0), EMPTY) is None


def test_the_count_limit_counts_the_sale_being_made() -> None:
    assert reason(LIMITS, ask(), queue(9)) is None  # 9 stored + this one = 10
    assert reason(LIMITS, ask(), queue(10)) == "count_limit"
    assert reason(dataclasses.replace(LIMITS, max_count=0), ask(), EMPTY) == "count_limit"


def test_the_total_limit_adds_the_amount_to_what_waits_in_its_currency() -> None:
    assert reason(LIMITS, ask(5000), queue(3, eur=15000)) is None  # 20000: equal to the limit
    assert reason(LIMITS, ask(5000), queue(3, eur=15001)) == "total_limit"
    assert reason(LIMITS, ask(1), queue(3, eur=20000)) == "total_limit"


def test_totals_are_per_currency() -> None:
    dollars_waiting = queue(3, usd=20000)
    assert reason(LIMITS, ask(5000, currency=EURO), dollars_waiting) is None
    assert reason(LIMITS, ask(1, currency=DOLLAR), dollars_waiting) == "total_limit"
    assert reason(LIMITS, ask(5000, currency=DOLLAR), queue(3, eur=20000)) is None


# --- the order of the reasons ----------------------------------------------------------------


def test_the_first_reason_in_order_is_given() -> None:
    """A sale that breaks every limit; lifting them one by one shows each in turn."""
    request = ask(9000, aid=AMEX, online_pin=True)
    status = queue(10, eur=20000)
    limits = dataclasses.replace(LIMITS, enabled=False)
    seen = [decide(limits, request, status, NOW, preauth=True).reason, reason(limits, request, status)]
    limits = dataclasses.replace(limits, enabled=True)
    seen.append(reason(limits, request, status))
    request = dataclasses.replace(request, online_pin=False)
    seen.append(reason(limits, request, status))
    limits = dataclasses.replace(limits, schemes=(AMEX[:5],))
    seen.append(reason(limits, request, status))
    limits = dataclasses.replace(limits, max_amount=9000)
    seen.append(reason(limits, request, status))
    limits = dataclasses.replace(limits, max_count=11)
    seen.append(reason(limits, request, status))
    limits = dataclasses.replace(limits, max_total=29000)
    seen.append(reason(limits, request, status))
    assert seen == [*REASONS, None]
    assert REASONS == ("preauth", "disabled", "online_pin", "scheme", "amount_limit", "count_limit",
                       "total_limit")


amounts = st.integers(0, 10**6)


@given(amount=amounts, smaller=amounts, count=st.integers(0, 20), waiting=amounts,
       max_amount=amounts, max_total=amounts, max_count=st.integers(0, 20), raise_by=amounts)
def test_a_smaller_sale_or_higher_limits_never_turn_an_approval_into_a_refusal(
        amount: int, smaller: int, count: int, waiting: int, max_amount: int, max_total: int,
        max_count: int, raise_by: int) -> None:
    limits = dataclasses.replace(LIMITS, max_amount=max_amount, max_total=max_total, max_count=max_count)
    status = queue(count, eur=waiting)
    decision = decide(limits, ask(amount), status, NOW)
    assert decision.allowed == (decision.reason is None)
    assert decision.reason is None or decision.reason in REASONS
    if decision.allowed:
        assert decide(limits, ask(min(amount, smaller)), status, NOW).allowed
        higher = dataclasses.replace(limits, max_amount=max_amount + raise_by, max_total=max_total + raise_by,
                                     max_count=max_count + raise_by)
        assert decide(higher, ask(amount), status, NOW).allowed
        emptier = queue(max(0, count - 1), eur=max(0, waiting - raise_by))
        assert decide(limits, ask(amount), emptier, NOW).allowed


def test_decide_needs_a_clock_with_a_zone() -> None:
    with pytest.raises(OfflineLimitsError):
        decide(LIMITS, ask(), EMPTY, NOW.replace(tzinfo=None))


# --- overdue: an alert, not a refusal -------------------------------------------------------------


def test_overdue_after_max_age_and_not_at_it() -> None:
    assert not overdue(LIMITS, EMPTY, NOW)
    assert not overdue(LIMITS, queue(1, NOW - datetime.timedelta(hours=12)), NOW)
    assert overdue(LIMITS, queue(1, NOW - datetime.timedelta(hours=12, microseconds=1)), NOW)


def test_overdue_compares_instants_across_zones() -> None:
    paris = datetime.timezone(datetime.timedelta(hours=1))
    oldest = datetime.datetime(2026, 11, 26, 0, 30, tzinfo=paris)  # 23:30 UTC the day before
    assert overdue(LIMITS, queue(1, oldest), NOW)  # 12 h 30 min
    longer = dataclasses.replace(LIMITS, max_age=datetime.timedelta(hours=13))
    assert not overdue(longer, queue(1, oldest), NOW)


def test_an_overdue_queue_refuses_nothing() -> None:
    old = queue(1, NOW - datetime.timedelta(days=30), eur=100)
    assert overdue(LIMITS, old, NOW)
    assert decide(LIMITS, ask(), old, NOW).allowed


@pytest.mark.parametrize(("now", "oldest"), [
    (NOW.replace(tzinfo=None), NOW),
    (NOW, NOW.replace(tzinfo=None)),
])
def test_overdue_needs_times_with_a_zone(now: datetime.datetime, oldest: datetime.datetime) -> None:
    with pytest.raises(OfflineLimitsError):
        overdue(LIMITS, queue(1, oldest), now)


# --- limits and messages -------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "key"), [
    ({"enabled": 1}, "enabled"),
    ({"max_amount": -1}, "max_amount"),
    ({"max_total": True}, "max_total"),
    ({"max_count": 1.5}, "max_count"),
    ({"max_age": datetime.timedelta(0)}, "max_age"),
    ({"max_age": 24}, "max_age"),
    ({"schemes": [VISA[:5]]}, "schemes"),
    ({"schemes": (VISA,)}, "schemes[1]"),
    ({"schemes": (VISA[:5], "A000000004")}, "schemes[2]"),
])
def test_unusable_limits_are_refused(changes: dict[str, object], key: str) -> None:
    with pytest.raises(OfflineLimitsError) as error:
        dataclasses.replace(LIMITS, **changes)
    assert error.value.key == key


def test_the_default_limits_allow_the_default_schemes() -> None:
    limits = OfflineLimits()
    for aid in ("A0000000031010", "A0000000041010", "A0000000421010"):
        assert decide(limits, ask(aid=bytes.fromhex(aid)), EMPTY, NOW).allowed


def test_every_reason_and_the_alert_have_their_own_sentence() -> None:
    sentences = [message(word) for word in (*REASONS, OVERDUE)]
    assert len(set(sentences)) == len(sentences)
    for sentence in sentences:
        assert sentence[0].isupper() and sentence.endswith(".")
        assert "_" not in sentence
    assert message("offline_refused:amount_limit") == message("amount_limit")
    assert message("no_decision") not in sentences


# --- the [offline] section of the configuration ----------------------------------------------------


def test_the_packaged_default_has_taxi_limits() -> None:
    limits = load_config().offline
    assert limits == OfflineLimits(
        enabled=True, max_amount=10000, max_total=50000, max_count=50, max_age=datetime.timedelta(hours=24),
        schemes=(bytes.fromhex("A000000003"), bytes.fromhex("A000000004"), bytes.fromhex("A000000042")))
    # every application of the default file belongs to one of them
    rids = {params.aid[:5] for params in load_config().kernel.aids}
    assert rids == set(limits.schemes)


def test_without_the_section_the_defaults_apply() -> None:
    assert parse(minimal()).offline == OfflineLimits()


def test_every_key_reaches_the_limits() -> None:
    document = minimal() | {"offline": {
        "enabled": False, "max_amount": 2500, "max_total": 0, "max_count": 3, "max_age_hours": 0.5,
        "schemes": ["a000000025", "A0000000 04"]}}
    assert parse(document).offline == OfflineLimits(
        enabled=False, max_amount=2500, max_total=0, max_count=3, max_age=datetime.timedelta(minutes=30),
        schemes=(bytes.fromhex("A000000025"), bytes.fromhex("A000000004")))
    assert parse(minimal() | {"offline": {"schemes": []}}).offline.schemes == ()
    assert parse(minimal() | {"offline": {"max_age_hours": 72}}).offline.max_age == datetime.timedelta(days=3)


@pytest.mark.parametrize(("values", "key"), [
    ({"enabled": "yes"}, "offline.enabled"),
    ({"enabled": 1}, "offline.enabled"),
    ({"max_amount": -1}, "offline.max_amount"),
    ({"max_amount": 100.5}, "offline.max_amount"),
    ({"max_amount": "10000"}, "offline.max_amount"),
    ({"max_amount": 10**12}, "offline.max_amount"),
    ({"max_total": -1}, "offline.max_total"),
    ({"max_total": 500.0}, "offline.max_total"),
    ({"max_count": -1}, "offline.max_count"),
    ({"max_count": True}, "offline.max_count"),
    ({"max_count": 2.0}, "offline.max_count"),
    ({"max_age_hours": 0}, "offline.max_age_hours"),
    ({"max_age_hours": -24}, "offline.max_age_hours"),
    ({"max_age_hours": "24"}, "offline.max_age_hours"),
    ({"max_age_hours": True}, "offline.max_age_hours"),
    ({"max_age_hours": math.nan}, "offline.max_age_hours"),
    ({"max_age_hours": math.inf}, "offline.max_age_hours"),
    ({"max_age_hours": 1e300}, "offline.max_age_hours"),
    ({"schemes": "A000000003"}, "offline.schemes"),
    ({"schemes": ["A0000000031010"]}, "offline.schemes[1]"),
    ({"schemes": ["A000000003", "A0000000"]}, "offline.schemes[2]"),
    ({"schemes": ["A00000000G"]}, "offline.schemes[1]"),
    ({"schemes": [3]}, "offline.schemes[1]"),
    ({"schemes": ["A000000003", "a000000003"]}, "offline.schemes[2]"),
    ({"max_amout": 100}, "offline.max_amout"),
    ({"max_age": 24}, "offline.max_age"),
])
def test_a_bad_key_names_itself(values: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(minimal() | {"offline": values})
    assert (caught.value.file, caught.value.key) == ("test.toml", key)
    assert caught.value.reason


def test_an_unknown_key_suggests_the_known_one() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(minimal() | {"offline": {"max_amout": 100}})
    assert "max_amount" in caught.value.reason


def test_the_section_must_be_a_table() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(minimal() | {"offline": 5})
    assert caught.value.key == "offline"
