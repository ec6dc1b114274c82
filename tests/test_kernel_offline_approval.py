"""The merchant's offline limits in the kernel: before it asks the card for a TC without the issuer
(Book 3, 10.7: 'Y1' at the first GENERATE AC; 10.9 and Book 4, 6.3.7: 'Y3' after "unable to go
online"), the kernel yields `ApproveOffline` and obeys the `OfflineDecision`.

Runs against the simulated cards of `sim/card/profiles`; what the card was asked is read from the
GENERATE AC commands sent (Book 3, 6.5.5.2, Table 12: P1 b8-b7 is the cryptogram type).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from emv.apdu import Command, Response
from emv.context import TVR
from emv.outcome import OutcomeKind
from emv.requests import ApproveOffline, OfflineDecision, Transmit
from firmware import driver
from firmware.config import AppConfig, load_config
from firmware.prompts import ScriptedPrompt
from firmware.sale import pin_pad_of
from sim.card.card import SimCard
from sim.card.issuer import ScriptedAuthorizer
from sim.inprocess import Run, fresh_card, transact

INS_GENERATE_AC = 0xAE
P1_TYPE_MASK = 0xC0  # Book 3, 6.5.5.2, Table 12
P1_AAC, P1_TC, P1_ARQC = 0x00, 0x40, 0x80
VISA = bytes.fromhex("A0000000031010")
EURO = 978
OFFLINE = "offline_approving"  # DDA, no CVM: TC at the first GENERATE AC under the floor limit
CDA = "visa_cda_online"  # online PIN: ARQC at the first GENERATE AC; no offline limits of its own

_DEFAULT = load_config()


def _with_aids(base: AppConfig, **changes: Any) -> AppConfig:
    aids = tuple(dataclasses.replace(a, **changes) for a in base.kernel.aids)
    return dataclasses.replace(base, kernel=dataclasses.replace(base.kernel, aids=aids))


def _with_terminal(base: AppConfig, **changes: Any) -> AppConfig:
    terminal = dataclasses.replace(base.kernel.terminal, **changes)
    return dataclasses.replace(base, kernel=dataclasses.replace(base.kernel, terminal=terminal))


# Random transaction selection (Book 3, 10.6.2) off: nothing but the limits sends a small sale online.
NO_RANDOM = _with_aids(_DEFAULT, random_target_percent=0, random_max_target_percent=0)
# Every sale under the floor limit is selected (below the threshold, a number 1-99 <= 99): TVR
# byte 4 b5 matches TAC-Online, not TAC-Default, so with no host the Default codes ask a TC ('Y3').
ALWAYS_RANDOM = _with_aids(_DEFAULT, random_selection_threshold=5000, random_target_percent=99,
                           random_max_target_percent=99)
OFFLINE_ONLY = _with_terminal(NO_RANDOM, terminal_type=0x23)  # Book 4, Annex A1


@dataclass
class Policy:
    """The offline limits as the driver sees them: one fixed answer, every question kept."""

    answer: Any = field(default_factory=OfflineDecision.allow)
    asked: list[ApproveOffline] = field(default_factory=list)

    def __call__(self, request: ApproveOffline) -> Any:
        self.asked.append(request)
        return self.answer


@dataclass
class Sale:
    run: Run
    commands: list[Command]

    @property
    def generate_ac_types(self) -> list[int]:
        return [c.p1 & P1_TYPE_MASK for c in self.commands if c.ins == INS_GENERATE_AC]


def sale(profile: str, amount: int, config: AppConfig, *, policy: Policy | None,
         host: bool = False, pin: str | None = None, **transaction: Any) -> Sale:
    card: SimCard = fresh_card(profile)
    send = driver.card_sender(card.process, card.protocol)
    commands: list[Command] = []

    def recorded(request: Transmit) -> Response:
        commands.append(request.command)
        return send(request)

    authorizer = ScriptedAuthorizer(profiles=[profile]) if host else None
    prompt = ScriptedPrompt(pin=pin, pin_pad=pin_pad_of(config))
    run = transact(card, config.kernel, amount, prompt=prompt, authorizer=authorizer, fulfil=recorded,
                   offline=policy, **transaction)
    return Sale(run, commands)


def tvr_has(tvr: bytes, bit: tuple[int, int]) -> bool:
    return bool(tvr[bit[0]] & bit[1])


# --- allowed: the behaviour without limits ----------------------------------------------------


def test_allowed_at_the_first_generate_ac_is_the_same_sale_as_without_limits() -> None:
    policy = Policy()
    limited = sale(OFFLINE, 1000, NO_RANDOM, policy=policy)
    unlimited = sale(OFFLINE, 1000, NO_RANDOM, policy=None)
    outcome = limited.run.outcome
    assert outcome.kind == OutcomeKind.APPROVED_OFFLINE
    assert outcome.response_code == b"Y1"
    assert limited.generate_ac_types == [P1_TC]
    assert policy.asked == [ApproveOffline(aid=VISA, amount=1000, currency=EURO, transaction_type=0x00,
                                           online_pin=False, unable_online=False)]
    assert not tvr_has(outcome.tvr, TVR.MERCHANT_FORCED_ONLINE)
    same = ("kind", "reason", "tvr", "cryptogram", "cryptogram_type", "response_code")
    assert {k: getattr(outcome, k) for k in same} == {k: getattr(unlimited.run.outcome, k) for k in same}
    assert limited.commands == unlimited.commands


def test_allowed_after_unable_to_go_online_approves_with_y3() -> None:
    policy = Policy()
    done = sale(OFFLINE, 1000, ALWAYS_RANDOM, policy=policy)
    outcome = done.run.outcome
    assert outcome.kind == OutcomeKind.APPROVED_UNABLE_ONLINE
    assert outcome.response_code == b"Y3"
    assert done.generate_ac_types == [P1_ARQC, P1_TC]
    # The first GENERATE AC asked an ARQC by EMV's own rules: the limits were asked once, for 'Y3'.
    assert [r.unable_online for r in policy.asked] == [True]
    assert (policy.asked[0].amount, policy.asked[0].currency, policy.asked[0].aid) == (1000, EURO, VISA)


def test_an_online_pin_entered_reaches_the_limits() -> None:
    """visa_cda_online under the floor limit: the online PIN matches TAC-Online (ARQC), the host
    is unreachable, the Default codes ask a TC: the limits hear of the PIN entered online."""
    policy = Policy()
    done = sale(CDA, 1000, NO_RANDOM, policy=policy, pin="1234")
    assert done.generate_ac_types[0] == P1_ARQC
    assert len(policy.asked) == 1
    asked = policy.asked[0]
    assert (asked.online_pin, asked.unable_online, asked.transaction_type) == (True, True, 0x00)
    assert tvr_has(done.run.outcome.tvr, TVR.ONLINE_PIN_ENTERED)


# --- refused at the first GENERATE AC: online instead ------------------------------------------


def test_refused_at_the_first_generate_ac_asks_an_arqc_and_goes_online() -> None:
    policy = Policy(OfflineDecision.refuse("amount_limit"))
    done = sale(OFFLINE, 1000, NO_RANDOM, policy=policy, host=True)
    outcome = done.run.outcome
    assert done.generate_ac_types == [P1_ARQC, P1_TC]
    assert outcome.first_cryptogram_type == "ARQC"
    assert tvr_has(outcome.tvr, TVR.MERCHANT_FORCED_ONLINE)
    assert outcome.kind == OutcomeKind.APPROVED_ONLINE
    assert outcome.reason is None
    assert [r.unable_online for r in policy.asked] == [False]
    assert any("amount_limit" in event for event in outcome.events)


def test_refused_at_the_first_generate_ac_then_no_host_declines_with_the_limit_as_reason() -> None:
    """The forced-online bit (TVR byte 4 b4) is in the Visa TAC-Default (DC4000A800): with no
    issuer the Default codes decline, and the outcome says the limits were the cause."""
    policy = Policy(OfflineDecision.refuse("count_limit"))
    done = sale(OFFLINE, 1000, NO_RANDOM, policy=policy)
    outcome = done.run.outcome
    assert done.generate_ac_types == [P1_ARQC, P1_AAC]
    assert outcome.kind == OutcomeKind.DECLINED_UNABLE_ONLINE
    assert outcome.reason == "offline_refused:count_limit"
    assert outcome.response_code == b"Z3"
    assert len(policy.asked) == 1


def test_a_merchant_forced_sale_with_no_host_names_the_forced_bit() -> None:
    done = sale(OFFLINE, 1000, NO_RANDOM, policy=Policy(), force_online=True)
    assert done.run.outcome.kind == OutcomeKind.DECLINED_UNABLE_ONLINE
    assert done.run.outcome.reason == "merchant_forced_online"


def test_refused_on_an_offline_only_terminal_declines_at_the_first_generate_ac() -> None:
    allowed = sale(OFFLINE, 1000, OFFLINE_ONLY, policy=Policy())
    assert allowed.run.outcome.kind == OutcomeKind.APPROVED_OFFLINE
    policy = Policy(OfflineDecision.refuse("scheme"))
    done = sale(OFFLINE, 1000, OFFLINE_ONLY, policy=policy)
    outcome = done.run.outcome
    assert done.generate_ac_types == [P1_AAC]
    assert outcome.kind == OutcomeKind.DECLINED_OFFLINE
    assert outcome.reason == "offline_refused:scheme"
    assert outcome.response_code == b"Z1"
    assert not tvr_has(outcome.tvr, TVR.MERCHANT_FORCED_ONLINE)
    assert len(policy.asked) == 1


@pytest.mark.parametrize("answer", [None, True, "allow", OfflineDecision], ids=repr)
def test_an_answer_that_is_not_a_decision_refuses(answer: Any) -> None:
    done = sale(OFFLINE, 1000, NO_RANDOM, policy=Policy(answer), host=True)
    assert done.generate_ac_types[0] == P1_ARQC
    assert tvr_has(done.run.outcome.tvr, TVR.MERCHANT_FORCED_ONLINE)


# --- refused after unable to go online: AAC with 'Z3' ----------------------------------------


def test_refused_after_unable_to_go_online_declines_with_z3() -> None:
    policy = Policy(OfflineDecision.refuse("total_limit"))
    done = sale(OFFLINE, 1000, ALWAYS_RANDOM, policy=policy)
    outcome = done.run.outcome
    assert done.generate_ac_types == [P1_ARQC, P1_AAC]
    assert outcome.kind == OutcomeKind.DECLINED_UNABLE_ONLINE
    assert outcome.reason == "offline_refused:total_limit"
    assert outcome.response_code == b"Z3"
    assert outcome.cryptogram_type == "AAC"
    assert [r.unable_online for r in policy.asked] == [True]


# --- not asked when EMV asks no TC -------------------------------------------------------------


@pytest.mark.parametrize(("profile", "amount", "kind"), [
    (CDA, 10000, OutcomeKind.APPROVED_ONLINE),  # over the floor limit: ARQC, issuer approves
    ("expired_card", 1000, OutcomeKind.DECLINED_OFFLINE),  # IAC-Denial 'expired': AAC
])
def test_not_asked_when_the_terminal_asks_no_tc(profile: str, amount: int, kind: OutcomeKind) -> None:
    policy = Policy(OfflineDecision.refuse("disabled"))
    done = sale(profile, amount, NO_RANDOM, policy=policy, host=True, pin="1234")
    assert done.run.outcome.kind == kind
    assert policy.asked == []


# --- the driver ---------------------------------------------------------------------------------


def test_the_driver_answers_approve_offline_from_its_policy_or_allows() -> None:
    request = ApproveOffline(aid=VISA, amount=1, currency=EURO, transaction_type=0, online_pin=False,
                             unable_online=True)

    def kernel() -> Any:
        first = yield request
        second = yield request
        return first, second

    def fulfil(_: Transmit) -> Response:
        raise AssertionError("no card command in this kernel")

    refuse = Policy(OfflineDecision.refuse("count_limit"))
    assert driver.run(kernel(), fulfil, offline=refuse) == (OfflineDecision.refuse("count_limit"),) * 2
    assert refuse.asked == [request, request]
    assert driver.run(kernel(), fulfil) == (OfflineDecision.allow(),) * 2


def test_a_decision_is_allowed_without_reason_or_refused_with_one() -> None:
    assert OfflineDecision.allow() == OfflineDecision(True, None)
    assert OfflineDecision.refuse("amount_limit") == OfflineDecision(False, "amount_limit")
    for allowed, reason in ((True, "amount_limit"), (False, None), (False, "")):
        with pytest.raises(ValueError):
            OfflineDecision(allowed, reason)
