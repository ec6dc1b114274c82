"""The scenario matrix, in-process: every case of tests/scenarios/matrix.toml on a fresh card."""

from __future__ import annotations

import pytest
from scenario_matrix import Case, cases, check, run_case

from sim.card.profile import profile_names
from sim.inprocess import fresh_card


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_scenario(case: Case) -> None:
    run, prompt = run_case(case, fresh_card(case.profile))
    check(case, run, prompt)


def test_every_profile_is_in_the_matrix() -> None:
    assert set(profile_names()) <= {case.profile for case in cases()}


def test_every_configuration_is_used() -> None:
    from scenario_matrix import _load

    assert set(_load("configs.toml")) == {case.config for case in cases()}


def test_profile_expectations_agree_with_the_matrix() -> None:
    """Each profile's own [expected] block (sim/card/profiles) holds for its default-config case."""
    from sim.card.profile import load_profile

    for name in profile_names():
        expected = load_profile(name).expected
        case = next(c for c in cases() if c.profile == name and c.config == "default")
        run, _ = run_case(case, fresh_card(name))
        o = run.outcome
        assert o.kind.value == expected["outcome"], name
        if "first_ac" in expected:
            assert o.first_cryptogram_type == expected["first_ac"], name
        if "second_ac" in expected:
            assert o.cryptogram_type == expected["second_ac"], name
        if "application" in expected:
            assert o.aid is not None and o.aid.hex().upper() == expected["application"], name
        if "oda" in expected:
            assert o.oda == expected["oda"], name
        if "language" in expected:
            assert o.language[:1] == [expected["language"]], name
