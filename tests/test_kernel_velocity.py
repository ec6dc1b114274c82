"""Velocity checking across sales on one card (EMV 4.4 Book 3, 10.6.3): offline approvals until
the Lower Consecutive Offline Limit, then online, and offline again once the issuer approved."""

from __future__ import annotations

import dataclasses

from emv.context import TVR
from emv.outcome import OutcomeKind
from firmware.config import load_config
from firmware.prompts import ScriptedPrompt
from sim.card.issuer import ScriptedAuthorizer
from sim.card.profile import load_profile
from sim.inprocess import fresh_card, transact

# Random transaction selection (Book 3, 10.6.2) off, so only velocity sends a sale online.
_DEFAULT = load_config()
_NO_RANDOM = tuple(dataclasses.replace(a, random_target_percent=0, random_max_target_percent=0)
                   for a in _DEFAULT.kernel.aids)
CONFIG = dataclasses.replace(_DEFAULT, kernel=dataclasses.replace(_DEFAULT.kernel, aids=_NO_RANDOM))


def test_offline_until_the_lower_limit_then_online_then_offline_again() -> None:
    card = fresh_card("offline_approving")
    lcol = load_profile("offline_approving").applications[0].risk.lower_consecutive_offline_limit
    kinds, lcol_bits = [], []
    for seed in range(lcol + 3):
        card.power_on()
        run = transact(card, CONFIG.kernel, 1000, prompt=ScriptedPrompt(),
                       authorizer=ScriptedAuthorizer(["offline_approving"]), seed=seed)
        kinds.append(run.outcome.kind)
        lcol_bits.append(bool(run.outcome.tvr[TVR.LCOL_EXCEEDED[0]] & TVR.LCOL_EXCEEDED[1]))
    # The profile's card starts with ATC = Last Online ATC: sales 1..LCOL stay offline; the next
    # one has ATC - LATC > LCOL and goes online; the issuer's approval resets the register.
    assert kinds[:lcol] == [OutcomeKind.APPROVED_OFFLINE] * lcol
    assert kinds[lcol] == OutcomeKind.APPROVED_ONLINE and lcol_bits[lcol]
    assert kinds[lcol + 1:] == [OutcomeKind.APPROVED_OFFLINE] * 2
    assert lcol_bits.count(True) == 1


def test_without_a_host_the_card_keeps_approving_up_to_its_upper_limit() -> None:
    card = fresh_card("offline_approving")
    risk = load_profile("offline_approving").applications[0].risk
    kinds = []
    for seed in range(risk.upper_consecutive_offline_limit + 2):
        card.power_on()
        run = transact(card, CONFIG.kernel, 1000, prompt=ScriptedPrompt(), authorizer=None, seed=seed)
        kinds.append(run.outcome.kind)
    # Over LCOL the terminal asks online; unable to go online, TAC/IAC-Default (no LCOL bit) ask
    # a TC with 'Y3', which the card gives while under its upper limits (card risk management).
    approved = [k for k in kinds if k.approved]
    assert len(approved) == risk.upper_consecutive_offline_limit
    assert OutcomeKind.APPROVED_UNABLE_ONLINE in kinds
    assert kinds[-1] in (OutcomeKind.DECLINED_UNABLE_ONLINE, OutcomeKind.DECLINED_OFFLINE)
