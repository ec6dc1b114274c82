"""Terminal risk management (EMV 4.4 Book 3, 10.6; Book 4, 6.3.5) on hand-built contexts with
scripted GET DATA answers, the simulated card through `firmware.driver.card_sender`, a statistical
check of random selection against Book 3, 10.6.2's formula, and property tests: any card data and
any GET DATA answer, never an exception."""

from __future__ import annotations

import datetime
import hashlib
import random
from collections.abc import Callable, Generator, Iterable, Iterator
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sim_card_support import Terminal, make_card

from emv import card_data
from emv.apdu import Command, Response
from emv.context import TSI, TVR, Context, Transaction
from emv.kernel_config import AidParams, ExceptionEntry, FraudRules, KernelConfig, TerminalConfig
from emv.requests import Transmit
from emv.risk import random_number, randomly_selected, terminal_risk_management
from firmware.driver import card_sender

H = bytes.fromhex
WHEN = datetime.datetime(2026, 11, 26, 12, 0)
AID = H("A0000000031010")
PAN = "4761739001010051"
PAN_BCD = H("4761739001010051")
# The exception file names a card by the SHA-256 of its PAN digits (emv.sensitive.pan_token).
PAN_SHA256 = hashlib.sha256(PAN.encode()).hexdigest()
POS = TerminalConfig()  # '22': offline with online capability
OFFLINE_ONLY = TerminalConfig(terminal_type=0x23)
ONLINE_ONLY = TerminalConfig(terminal_type=0x21)
FLOOR = 10000
THRESHOLD = 5000

Answer = Callable[[Transmit], Response]


def no_rng(n: int) -> bytes:
    raise AssertionError("random selection drew a number it did not need")


def always_99(n: int) -> bytes:
    """Draws 99 every time: never selected unless the target is 99."""
    return b"\x62" * n


def byte_rng(values: Iterable[int]) -> Callable[[int], bytes]:
    """A scripted random source: one given byte per call."""
    it: Iterator[int] = iter(values)

    def draw(n: int) -> bytes:
        assert n == 1
        return bytes([next(it)])

    return draw


def number_rng(number: int) -> Callable[[int], bytes]:
    """A source whose first byte maps to `number` (1..99) under byte % 99 + 1 (bytes 0..197)."""
    return byte_rng([number - 1])


def make_ctx(*, amount: int = 1000, card: dict[int, bytes] | None = None, terminal: TerminalConfig = POS,
             floor_limit: int = FLOOR, threshold: int = THRESHOLD, target: int = 0, max_target: int = 0,
             rng: Callable[[int], bytes] = always_99, log: Callable[[str], int] | None = None,
             exception_file: tuple[ExceptionEntry, ...] = (), fraud: FraudRules | None = None,
             force_online: bool = False, with_params: bool = True, aip: str = "3900") -> Context:
    params = AidParams(aid=AID, floor_limit=floor_limit, random_selection_threshold=threshold,
                       random_target_percent=target, random_max_target_percent=max_target)
    config = KernelConfig(terminal=terminal, aids=(params,), exception_file=exception_file,
                          fraud=fraud or FraudRules())
    base = {0x5A: PAN_BCD, 0x5F34: H("01"), 0x5F28: H("0250")}
    return Context(
        config=config,
        transaction=Transaction(amount=amount, when=WHEN, force_online=force_online),
        rng=rng, transaction_log=log, aid_params=params if with_params else None,
        card=base if card is None else card, aip=card_data.decode_aip(H(aip)),
    )


def drive(gen: Generator[Transmit, Response, None], answer: Answer | None = None) -> list[Command]:
    """Run the step, answering each Transmit with `answer`; the commands sent, in order."""
    sent: list[Command] = []
    try:
        request = next(gen)
        while True:
            assert isinstance(request, Transmit)
            assert answer is not None, "the step sent a command when none was expected"
            sent.append(request.command)
            request = gen.send(answer(request))
    except StopIteration as stop:
        assert stop.value is None
    return sent


def run(ctx: Context, answer: Answer | None = None) -> list[Command]:
    return drive(terminal_risk_management(ctx), answer)


def names(ctx: Context) -> set[str]:
    return {name for name, bit in vars(TVR).items() if isinstance(bit, tuple) and ctx.tvr.is_set(bit)}


# --- what always happens ---------------------------------------------------------------------------


def test_nothing_to_flag_sets_only_the_tsi() -> None:
    ctx = make_ctx()
    assert run(ctx) == []
    assert ctx.tvr.value == bytes(5)
    assert ctx.tsi.value == H("0800")
    assert ctx.tsi.is_set(TSI.TERMINAL_RISK_MANAGEMENT_PERFORMED)
    assert ctx.merchant_decline is None


def test_performed_whatever_the_aip_says() -> None:
    # Book 3, 10.6 (4.4): "regardless of the setting of the 'Terminal risk management is to be
    # performed' bit". AIP '3100' has b4 of byte 1 off.
    ctx = make_ctx(amount=FLOOR, aip="3100")
    run(ctx)
    assert names(ctx) == {"FLOOR_LIMIT_EXCEEDED"}
    assert ctx.tsi.is_set(TSI.TERMINAL_RISK_MANAGEMENT_PERFORMED)


def test_merchant_forced_online() -> None:
    ctx = make_ctx(force_online=True)
    run(ctx)
    assert ctx.tvr.value == H("0000000800")


# --- floor limit, Book 3 10.6.1 ---------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "exceeded"), [(FLOOR - 1, False), (FLOOR, True), (FLOOR + 1, True),
                                                  (0, False)])
def test_floor_limit_is_greater_than_or_equal(amount: int, exceeded: bool) -> None:
    ctx = make_ctx(amount=amount, rng=number_rng(99))
    run(ctx)
    assert ctx.tvr.is_set(TVR.FLOOR_LIMIT_EXCEEDED) is exceeded


def test_zero_floor_limit_sends_everything_online() -> None:
    ctx = make_ctx(amount=0, floor_limit=0, threshold=0)
    run(ctx)
    assert ctx.tvr.is_set(TVR.FLOOR_LIMIT_EXCEEDED)


def test_split_sale_adds_the_last_sale_on_the_same_card() -> None:
    asked: list[str] = []

    def log(token: str) -> int:
        asked.append(token)
        return 3000

    ctx = make_ctx(amount=FLOOR - 3000, log=log)
    run(ctx)
    assert ctx.tvr.is_set(TVR.FLOOR_LIMIT_EXCEEDED)
    assert asked == [PAN_SHA256]
    ctx = make_ctx(amount=FLOOR - 3001, log=lambda token: 3000, rng=number_rng(99))
    run(ctx)
    assert not ctx.tvr.is_set(TVR.FLOOR_LIMIT_EXCEEDED)


def test_random_selection_uses_the_amount_of_this_sale_only() -> None:
    # The log pushes the sum over the floor limit; the sale itself (below the threshold) still
    # takes part in random selection with the Target Percentage.
    ctx = make_ctx(amount=1000, log=lambda token: 9500, target=10, max_target=50, rng=number_rng(10))
    run(ctx)
    assert names(ctx) == {"FLOOR_LIMIT_EXCEEDED", "RANDOMLY_SELECTED"}


@pytest.mark.parametrize("answer", [-1, True, "3000", None])
def test_log_answer_that_is_not_an_amount_is_ignored(answer: Any) -> None:
    ctx = make_ctx(amount=FLOOR - 1, log=lambda token: answer, rng=number_rng(99))
    run(ctx)
    assert not ctx.tvr.is_set(TVR.FLOOR_LIMIT_EXCEEDED)
    assert any("transaction log" in event for event in ctx.events)


def test_without_application_parameters_every_amount_exceeds() -> None:
    ctx = make_ctx(amount=1, with_params=False)
    run(ctx)
    assert names(ctx) == {"FLOOR_LIMIT_EXCEEDED"}


# --- random transaction selection, Book 3 10.6.2 -----------------------------------------------------


def test_random_number_is_uniform_over_1_to_99_without_modulo_bias() -> None:
    # Every byte once: 0..197 give each of 1..99 exactly twice, 198..255 are redrawn.
    draws = iter(range(256))
    ctx = make_ctx(rng=lambda n: bytes([next(draws)]))
    counts = [0] * 100
    for _ in range(198):
        number = random_number(ctx)
        assert number is not None
        counts[number] += 1
    assert counts[0] == 0 and counts[1:] == [2] * 99


def test_random_number_redraws_the_biased_tail() -> None:
    calls: list[int] = []

    def rng(n: int) -> bytes:
        value = [255, 200, 198, 5][len(calls)]
        calls.append(value)
        return bytes([value])

    assert random_number(make_ctx(rng=rng)) == 6
    assert calls == [255, 200, 198, 5]


def test_broken_random_source_selects_the_transaction() -> None:
    ctx = make_ctx(target=0, max_target=0, rng=lambda n: b"\xff")
    run(ctx)
    assert names(ctx) == {"RANDOMLY_SELECTED"}
    ctx = make_ctx(target=0, max_target=0, rng=lambda n: b"")
    run(ctx)
    assert names(ctx) == {"RANDOMLY_SELECTED"}


# Transaction Target Percent worked by hand (floor limit 10000, threshold 5000):
#   amount 9999, target 10, max 50: 10 + 40 x 4999 / 5000 = 49.992
#   amount 7500, target 10, max 50: 10 + 40 x 2500 / 5000 = 30
#   amount 9999, target 0, max 99:  99 x 4999 / 5000 = 98.9802
@pytest.mark.parametrize(("amount", "target", "max_target", "number", "selected"), [
    (THRESHOLD - 1, 0, 0, 1, False),
    (THRESHOLD - 1, 0, 99, 1, False),  # below the threshold only the Target Percentage counts
    (THRESHOLD - 1, 99, 99, 99, True),
    (THRESHOLD - 1, 10, 50, 10, True),
    (THRESHOLD - 1, 10, 50, 11, False),
    (THRESHOLD, 10, 50, 10, True),  # at the threshold the interpolation starts at the target
    (THRESHOLD, 10, 50, 11, False),
    (7500, 10, 50, 30, True),
    (7500, 10, 50, 31, False),
    (FLOOR - 1, 10, 50, 49, True),
    (FLOOR - 1, 10, 50, 50, False),
    (FLOOR - 1, 0, 99, 98, True),
    (FLOOR - 1, 0, 99, 99, False),
    (FLOOR - 1, 0, 0, 1, False),
    (FLOOR - 1, 99, 99, 99, True),
    (0, 1, 1, 1, True),
    (0, 1, 1, 2, False),
])
def test_selection_edges(amount: int, target: int, max_target: int, number: int, selected: bool) -> None:
    ctx = make_ctx(amount=amount, target=target, max_target=max_target, rng=number_rng(number))
    run(ctx)
    assert ctx.tvr.is_set(TVR.RANDOMLY_SELECTED) is selected
    assert not ctx.tvr.is_set(TVR.FLOOR_LIMIT_EXCEEDED)


def test_at_or_over_the_floor_limit_no_number_is_drawn() -> None:
    ctx = make_ctx(amount=FLOOR, target=99, max_target=99, rng=no_rng)
    run(ctx)
    assert names(ctx) == {"FLOOR_LIMIT_EXCEEDED"}


@pytest.mark.parametrize("terminal", [OFFLINE_ONLY, ONLINE_ONLY])
def test_offline_only_and_online_only_terminals_skip_random_selection(terminal: TerminalConfig) -> None:
    ctx = make_ctx(terminal=terminal, target=99, max_target=99, rng=no_rng)
    run(ctx)
    assert ctx.tvr.value == bytes(5)


def test_threshold_equal_to_floor_limit() -> None:
    # Every amount under the floor limit is then under the threshold (no biased range at all).
    ctx = make_ctx(amount=FLOOR - 1, threshold=FLOOR, target=20, max_target=90, rng=number_rng(21))
    run(ctx)
    assert not ctx.tvr.is_set(TVR.RANDOMLY_SELECTED)


def expected_share(amount: int, floor_limit: int, threshold: int, target: int, max_target: int) -> Fraction:
    """P(selected) from Book 3, 10.6.2: numbers 1..99 equally likely, selected when <= the
    (Transaction) Target Percent."""
    if amount >= floor_limit:
        return Fraction(0)
    if amount < threshold:
        percent = Fraction(target)
    else:
        factor = Fraction(amount - threshold, floor_limit - threshold)
        percent = Fraction(max_target - target) * factor + target
    return Fraction(min(99, int(percent)), 99)


@pytest.mark.parametrize(("amount", "target", "max_target"), [
    (1000, 20, 80),  # below the threshold: 20 / 99
    (7000, 20, 80),  # Transaction Target Percent 20 + 60 x 5000 / 8000 = 57.5: 57 / 99
    (9999, 5, 95),
])
def test_selected_share_matches_the_formula(amount: int, target: int, max_target: int) -> None:
    source = random.Random(20261126)
    draws = 20_000
    selected = 0
    for _ in range(draws):
        ctx = make_ctx(amount=amount, floor_limit=10000, threshold=2000, target=target,
                       max_target=max_target, rng=source.randbytes)
        run(ctx)
        selected += ctx.tvr.is_set(TVR.RANDOMLY_SELECTED)
    p = expected_share(amount, 10000, 2000, target, max_target)
    # Four standard deviations of a binomial share over 20,000 draws (at most 0.0142).
    tolerance = 4 * (float(p * (1 - p)) / draws) ** 0.5
    assert abs(selected / draws - float(p)) <= tolerance


def test_formula_helper_agrees_with_fractions_everywhere() -> None:
    rnd = random.Random(7)
    for _ in range(5000):
        floor_limit = rnd.randint(1, 10**6)
        threshold = rnd.randint(0, floor_limit)
        target = rnd.randint(0, 99)
        max_target = rnd.randint(target, 99)
        amount = rnd.randint(0, floor_limit + 10)
        number = rnd.randint(1, 99)
        if amount >= floor_limit:
            expected = False
        elif amount < threshold:
            expected = number <= target
        else:
            factor = Fraction(amount - threshold, floor_limit - threshold)
            ttp = Fraction(max_target - target) * factor + target
            expected = number <= ttp
        assert randomly_selected(amount, number, floor_limit, threshold, target, max_target) is expected


# --- exception file, Book 4 6.3.5 -------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "card_psn", "listed"), [
    (ExceptionEntry(PAN_SHA256), H("01"), True),
    (ExceptionEntry(PAN_SHA256), None, True),
    (ExceptionEntry(PAN_SHA256, psn=1), H("01"), True),
    (ExceptionEntry(PAN_SHA256, psn=2), H("01"), False),
    (ExceptionEntry(PAN_SHA256, psn=1), None, False),
    (ExceptionEntry(PAN_SHA256, psn=10), H("10"), True),  # '5F34' is n 2: '10' is ten
    (ExceptionEntry(PAN_SHA256, psn=16), H("10"), False),
    (ExceptionEntry(PAN_SHA256, psn=2), H("0A"), True),  # malformed PSN: the safe side
    (ExceptionEntry(hashlib.sha256(b"4761739001010044").hexdigest()), H("01"), False),
    (ExceptionEntry(hashlib.sha256(f"{PAN}/01".encode()).hexdigest()), H("01"), False),
])
def test_exception_file(entry: ExceptionEntry, card_psn: bytes | None, listed: bool) -> None:
    card = {0x5A: PAN_BCD}
    if card_psn is not None:
        card[0x5F34] = card_psn
    ctx = make_ctx(card=card, exception_file=(entry,), aip="3100")
    run(ctx)
    assert ctx.tvr.is_set(TVR.EXCEPTION_FILE) is listed
    assert ctx.merchant_decline == ("exception_file" if listed else None)


def test_padded_pan_matches_its_digits() -> None:
    odd = "476173900101005"
    entry = ExceptionEntry(hashlib.sha256(odd.encode()).hexdigest())
    ctx = make_ctx(card={0x5A: H("476173900101005F")}, exception_file=(entry,))
    run(ctx)
    assert ctx.tvr.is_set(TVR.EXCEPTION_FILE)


@pytest.mark.parametrize("pan", [None, H("47617390A1010051"), H("FFFF")])
def test_unreadable_pan_cannot_be_cleared_against_the_file(pan: bytes | None) -> None:
    card = {} if pan is None else {0x5A: pan}
    ctx = make_ctx(card=card, exception_file=(ExceptionEntry(PAN_SHA256),))
    run(ctx)
    assert ctx.tvr.is_set(TVR.EXCEPTION_FILE) and ctx.tvr.is_set(TVR.ICC_DATA_MISSING)
    assert ctx.merchant_decline == "pan_unreadable"


def test_no_pan_appears_in_the_notes() -> None:
    ctx = make_ctx(amount=FLOOR, exception_file=(ExceptionEntry(PAN_SHA256),),
                   fraud=FraudRules(blocked_prefixes=("4761",)), log=lambda token: 5)
    run(ctx)
    text = " ".join(ctx.events)
    assert PAN not in text and PAN[:6] not in text and PAN_SHA256 not in text


# --- merchant fraud rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "amount", "country", "online", "decline"), [
    (FraudRules(online_above=5000), 5000, "0250", False, None),
    (FraudRules(online_above=5000), 5001, "0250", True, None),
    (FraudRules(decline_above=5000), 5000, "0250", False, None),
    (FraudRules(decline_above=5000), 5001, "0250", False, "decline_above"),
    (FraudRules(online_countries=frozenset({276})), 100, "0276", True, None),
    (FraudRules(online_countries=frozenset({276})), 100, "0250", False, None),
    (FraudRules(decline_countries=frozenset({643})), 100, "0643", False, "decline_countries"),
    (FraudRules(decline_countries=frozenset({643})), 100, "0250", False, None),
    (FraudRules(blocked_prefixes=("476173",)), 100, "0250", False, "blocked_prefixes"),
    (FraudRules(blocked_prefixes=("5", "4761739001010052")), 100, "0250", False, None),
    (FraudRules(blocked_prefixes=("4761739001010051",)), 100, "0250", False, "blocked_prefixes"),
    # the first declining rule is reported, the others noted
    (FraudRules(decline_above=50, blocked_prefixes=("4",)), 100, "0250", False, "decline_above"),
    # no usable issuer country: online, never a merchant decline on a guess
    (FraudRules(decline_countries=frozenset({643})), 100, None, True, None),
    (FraudRules(online_countries=frozenset({276})), 100, "02A6", True, None),
])
def test_fraud_rules(rules: FraudRules, amount: int, country: str | None, online: bool,
                     decline: str | None) -> None:
    card = {0x5A: PAN_BCD}
    if country is not None:
        card[0x5F28] = H(country)
    ctx = make_ctx(amount=amount, card=card, fraud=rules, floor_limit=100000, threshold=0, aip="3100")
    run(ctx)
    assert ctx.tvr.is_set(TVR.MERCHANT_FORCED_ONLINE) is online
    assert ctx.merchant_decline == decline
    if online:
        assert any("forces the transaction online" in event for event in ctx.events)


def test_fraud_rule_note_names_the_rule() -> None:
    ctx = make_ctx(amount=6000, fraud=FraudRules(online_above=5000), floor_limit=100000, threshold=0)
    run(ctx)
    assert any("online_above" in event for event in ctx.events)


def test_blocked_prefix_with_an_unreadable_pan_declines() -> None:
    ctx = make_ctx(card={0x5A: H("ABCD")}, fraud=FraudRules(blocked_prefixes=("4",)))
    run(ctx)
    assert ctx.merchant_decline == "pan_unreadable"


# --- velocity checking, Book 3 10.6.3 ---------------------------------------------------------------

GET_ATC = H("80CA9F3600")
GET_LAST_ONLINE = H("80CA9F1300")


def counters(atc: bytes | None, last_online: bytes | None, *, atc_sw: int = 0x9000,
             last_sw: int = 0x9000) -> Answer:
    """Raw GET DATA answers, written out as a card sends them."""

    def answer(request: Transmit) -> Response:
        if request.command.encode() == GET_ATC:
            return Response(b"" if atc is None else atc, atc_sw)
        if request.command.encode() == GET_LAST_ONLINE:
            return Response(b"" if last_online is None else last_online, last_sw)
        raise AssertionError(f"unexpected {request.command!r}")

    return answer


def velocity_ctx(lcol: int = 5, ucol: int = 10) -> Context:
    return make_ctx(card={0x5A: PAN_BCD, 0x9F14: bytes([lcol]), 0x9F23: bytes([ucol])})


@pytest.mark.parametrize(("atc", "last", "expected"), [
    (25, 20, set()),  # 5 offline = LCOL: not exceeded yet
    (26, 20, {"LCOL_EXCEEDED"}),
    (30, 20, {"LCOL_EXCEEDED"}),  # 10 = UCOL
    (31, 20, {"LCOL_EXCEEDED", "UCOL_EXCEEDED"}),
    (21, 20, set()),
    (20, 20, {"LCOL_EXCEEDED", "UCOL_EXCEEDED"}),  # ATC not above the register
    (19, 20, {"LCOL_EXCEEDED", "UCOL_EXCEEDED"}),
    (3, 0, {"NEW_CARD"}),
    (0, 0, {"NEW_CARD", "LCOL_EXCEEDED", "UCOL_EXCEEDED"}),
    (0x1000, 0x0FF0, {"LCOL_EXCEEDED", "UCOL_EXCEEDED"}),  # 16 offline: counters are 2-byte binary
    (0xFFFF, 0xFFFB, set()),
])
def test_velocity(atc: int, last: int, expected: set[str]) -> None:
    ctx = velocity_ctx()
    sent = run(ctx, counters(b"\x9f\x36\x02" + atc.to_bytes(2, "big"),
                             b"\x9f\x13\x02" + last.to_bytes(2, "big")))
    assert [c.encode() for c in sent] == [GET_ATC, GET_LAST_ONLINE]
    assert names(ctx) == expected
    assert ctx.card[0x9F36] == atc.to_bytes(2, "big") and ctx.card[0x9F13] == last.to_bytes(2, "big")


def test_upper_limit_is_only_looked_at_once_the_lower_one_is_exceeded() -> None:
    # An odd card with UCOL below LCOL: 4 offline exceeds UCOL 2 but not LCOL 5.
    ctx = velocity_ctx(lcol=5, ucol=2)
    run(ctx, counters(H("9F36020018"), H("9F13020014")))
    assert names(ctx) == set()


def test_zero_limits() -> None:
    ctx = velocity_ctx(lcol=0, ucol=0)
    run(ctx, counters(H("9F36020015"), H("9F13020014")))
    assert names(ctx) == {"LCOL_EXCEEDED", "UCOL_EXCEEDED"}


@pytest.mark.parametrize("present", [{0x9F14}, {0x9F23}, set()])
def test_without_both_limits_the_card_is_not_asked(present: set[int]) -> None:
    card = {0x5A: PAN_BCD, **{tag: b"\x05" for tag in present}}
    ctx = make_ctx(card=card)
    assert run(ctx) == []
    assert ctx.tvr.value == bytes(5)


BOTH_AND_MISSING = {"LCOL_EXCEEDED", "UCOL_EXCEEDED", "ICC_DATA_MISSING"}


@pytest.mark.parametrize(("answer", "expected"), [
    (counters(None, H("9F13020014"), atc_sw=0x6A88), BOTH_AND_MISSING),
    (counters(H("9F36020019"), None, last_sw=0x6A88), BOTH_AND_MISSING),
    (counters(None, H("9F13020000"), atc_sw=0x6985), BOTH_AND_MISSING | {"NEW_CARD"}),
    (counters(H("9F36020019"), H("9F13020014"), atc_sw=0x6283), BOTH_AND_MISSING),  # a warning
    (counters(b"", H("9F13020014")), BOTH_AND_MISSING),  # 9000 without data
    (counters(H("9F360119"), H("9F13020014")), BOTH_AND_MISSING),  # 1-byte ATC
    (counters(H("9F3603000019"), H("9F13020014")), BOTH_AND_MISSING),  # 3-byte ATC
    (counters(H("9F13020019"), H("9F13020014")), BOTH_AND_MISSING),  # the other tag
    (counters(H("0019"), H("9F13020014")), BOTH_AND_MISSING),  # bare value, no TLV
    (counters(H("9F360200"), H("9F13020014")), BOTH_AND_MISSING),  # truncated
    (counters(H("9F360200199F36020019"), H("9F13020014")), BOTH_AND_MISSING),  # twice
    (counters(H("BF3604 9F360119".replace(" ", "")), H("9F13020014")), BOTH_AND_MISSING),
    (counters(H("9F36020019"), H("9F1302")), BOTH_AND_MISSING),
    # padding around one good object is fine (Book 3 Annex B1)
    (counters(H("009F3602001900"), H("9F13020014")), set()),
])
def test_counters_the_card_does_not_return(answer: Answer, expected: set[str]) -> None:
    ctx = velocity_ctx()
    sent = run(ctx, answer)
    assert len(sent) == 2
    assert names(ctx) == expected
    assert ctx.tsi.is_set(TSI.TERMINAL_RISK_MANAGEMENT_PERFORMED)


def test_malformed_limits_count_as_exceeded() -> None:
    ctx = make_ctx(card={0x5A: PAN_BCD, 0x9F14: H("0005"), 0x9F23: H("0A")})
    run(ctx, counters(H("9F36020015"), H("9F13020014")))
    assert names(ctx) == {"LCOL_EXCEEDED", "UCOL_EXCEEDED"}


# --- the simulated card ------------------------------------------------------------------------------


def sim_ctx(term: Terminal, **kwargs: Any) -> Context:
    term.start()
    ctx = make_ctx(card=term.record_objects(), **kwargs)
    ctx.aip = card_data.decode_aip(term.aip)
    return ctx


def test_sim_offline_approving_card_reports_its_counters() -> None:
    card = make_card("offline_approving")
    term = Terminal(card)
    ctx = sim_ctx(term, amount=1000, rng=number_rng(99), target=10, max_target=50)
    assert ctx.card[0x9F14] == b"\x05" and ctx.card[0x9F23] == b"\x0a"
    card.state.app().atc = 23  # three offline transactions since the last online one (20)
    sent = run(ctx, card_sender(card.process, card.protocol))
    assert [c.encode() for c in sent] == [GET_ATC, GET_LAST_ONLINE]
    assert ctx.tvr.value == bytes(5)
    assert ctx.card[0x9F36] == H("0017") and ctx.card[0x9F13] == H("0014")
    assert ctx.tsi.is_set(TSI.TERMINAL_RISK_MANAGEMENT_PERFORMED)


@pytest.mark.parametrize(("atc", "last", "expected"), [
    (26, 20, {"LCOL_EXCEEDED"}),
    (31, 20, {"LCOL_EXCEEDED", "UCOL_EXCEEDED"}),
    (20, 20, {"LCOL_EXCEEDED", "UCOL_EXCEEDED"}),  # the profile's initial state (ATC moves at GENERATE AC)
    (2, 0, {"NEW_CARD"}),
])
def test_sim_card_velocity(atc: int, last: int, expected: set[str]) -> None:
    card = make_card("offline_approving")
    ctx = sim_ctx(Terminal(card), amount=1000, rng=number_rng(99))
    card.state.app().atc = atc
    card.state.app().counters.last_online_atc = last
    run(ctx, card_sender(card.process, card.protocol))
    assert names(ctx) == expected


def test_sim_card_over_the_floor_limit_and_on_the_exception_file() -> None:
    card = make_card("offline_approving")
    ctx = sim_ctx(Terminal(card), amount=FLOOR, exception_file=(ExceptionEntry(PAN_SHA256, psn=1),))
    card.state.app().atc = 21
    run(ctx, card_sender(card.process, card.protocol))
    assert names(ctx) == {"FLOOR_LIMIT_EXCEEDED", "EXCEPTION_FILE"}
    assert ctx.merchant_decline == "exception_file"


def test_sim_card_without_velocity_limits_is_not_asked() -> None:
    card = make_card("visa_cda_online")
    ctx = sim_ctx(Terminal(card), amount=1000, rng=number_rng(99))
    assert 0x9F14 not in ctx.card
    assert run(ctx, card_sender(card.process, card.protocol)) == []


# --- properties: any card data, any GET DATA answer --------------------------------------------------

card_values = st.dictionaries(
    st.sampled_from([0x5A, 0x5F34, 0x5F28, 0x9F14, 0x9F23]), st.binary(max_size=12))
answers = st.tuples(st.binary(max_size=12), st.integers(0, 0xFFFF))


def tlv_answer(tag: int) -> st.SearchStrategy[tuple[bytes, int]]:
    """Mostly well-formed answers with the asked tag, to reach the comparisons too."""
    tag_bytes = tag.to_bytes(2, "big")
    return st.tuples(st.binary(min_size=0, max_size=3).map(lambda v: tag_bytes + bytes([len(v)]) + v),
                     st.sampled_from([0x9000, 0x9000, 0x6A88, 0x6283]))


@settings(max_examples=300)
@given(card=card_values, atc=st.one_of(answers, tlv_answer(0x9F36)),
       last=st.one_of(answers, tlv_answer(0x9F13)), amount=st.integers(0, 20000),
       target=st.integers(0, 99), extra=st.integers(0, 99), rng_seed=st.integers(0, 2**32),
       terminal_type=st.sampled_from([0x21, 0x22, 0x23, 0x25, 0x26, 0x14]))
def test_any_card_data_and_answers_never_raise(card: dict[int, bytes], atc: tuple[bytes, int],
                                               last: tuple[bytes, int], amount: int, target: int,
                                               extra: int, rng_seed: int, terminal_type: int) -> None:
    rules = FraudRules(online_above=15000, decline_above=19000, online_countries=frozenset({276}),
                       decline_countries=frozenset({643}), blocked_prefixes=("5",))
    ctx = make_ctx(amount=amount, card=card, terminal=TerminalConfig(terminal_type=terminal_type),
                   target=target, max_target=min(99, target + extra),
                   rng=random.Random(rng_seed).randbytes, log=lambda token: 100,
                   exception_file=(ExceptionEntry(PAN_SHA256, psn=1),), fraud=rules)

    def answer(request: Transmit) -> Response:
        data, sw = atc if request.command.encode() == GET_ATC else last
        return Response(data, sw)

    sent = run(ctx, answer)
    assert len(sent) in (0, 2)
    assert ctx.tsi.value == H("0800")
    assert ctx.merchant_decline in (None, "exception_file", "pan_unreadable", "decline_above",
                                    "decline_countries", "blocked_prefixes")
