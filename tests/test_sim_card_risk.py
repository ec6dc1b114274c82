"""Card risk management rules and CVR layouts of the simulated card (sim/card/risk.py)."""

from __future__ import annotations

import pytest

from sim.card import risk
from sim.card.profile import RiskParams

OFFLINE = RiskParams(lower_consecutive_offline_limit=2, upper_consecutive_offline_limit=4,
                     lower_cumulative_offline_amount=5000, upper_cumulative_offline_amount=9000,
                     online_if_new_card=False)


def tx(amount: int = 100, **kwargs: object) -> risk.Transaction:
    return risk.Transaction(amount=amount, same_currency=kwargs.pop("same_currency", True), **kwargs)  # type: ignore[arg-type]


def counters(consecutive: int = 0, amount: int = 0, last_online: int = 5,
             **kwargs: bool) -> risk.OfflineCounters:
    return risk.OfflineCounters(consecutive=consecutive, cumulative_amount=amount,
                                last_online_atc=last_online, **kwargs)


@pytest.mark.parametrize(("requested", "state", "transaction", "expected"), [
    ("TC", counters(), tx(), "TC"),
    ("TC", counters(consecutive=1), tx(), "TC"),  # second offline transaction: 2 <= 2
    ("TC", counters(consecutive=2), tx(), "ARQC"),  # third would exceed the lower limit 2
    ("TC", counters(amount=4900), tx(100), "TC"),  # 5000 is not over 5000
    ("TC", counters(amount=4900), tx(101), "ARQC"),
    ("TC", counters(), tx(same_currency=False), "ARQC"),
    ("TC", counters(last_online=0), tx(), "TC"),  # online_if_new_card is off here
    ("TC", counters(issuer_auth_failed_last_online=True), tx(), "ARQC"),
    ("TC", counters(online_not_completed=True), tx(), "ARQC"),
    ("TC", counters(), tx(pin_try_limit_exceeded=True), "ARQC"),
    ("TC", counters(), tx(application_blocked=True), "AAC"),
    ("ARQC", counters(), tx(), "ARQC"),
    ("ARQC", counters(), tx(application_blocked=True), "AAC"),
    ("AAC", counters(), tx(), "AAC"),
    ("AAC", counters(consecutive=9), tx(), "AAC"),
    # offline-only terminal: within the upper limits TC, beyond them AAC
    ("TC", counters(consecutive=2), tx(terminal_offline_only=True), "TC"),
    ("TC", counters(consecutive=4), tx(terminal_offline_only=True), "AAC"),
    ("TC", counters(amount=8950), tx(100, terminal_offline_only=True), "AAC"),
])
def test_first_generate_ac_rules(requested: risk.Cryptogram, state: risk.OfflineCounters,
                                 transaction: risk.Transaction, expected: str) -> None:
    assert risk.first_ac(requested, OFFLINE, state, transaction).cryptogram == expected


def test_new_card_goes_online_when_the_profile_says_so() -> None:
    params = RiskParams(lower_consecutive_offline_limit=5, upper_consecutive_offline_limit=5,
                        lower_cumulative_offline_amount=10**6, upper_cumulative_offline_amount=10**6)
    decision = risk.first_ac("TC", params, counters(last_online=0), tx())
    assert decision.cryptogram == "ARQC" and "new_card" in decision.reasons


def test_always_decline_and_expiry_check() -> None:
    def decide(params: RiskParams, transaction: risk.Transaction) -> str:
        return risk.first_ac("ARQC", params, counters(), transaction).cryptogram

    assert decide(RiskParams(always_decline=True), tx()) == "AAC"
    assert decide(RiskParams(check_expiry=True), tx(expired=True)) == "AAC"
    assert decide(RiskParams(check_expiry=False), tx(expired=True)) == "ARQC"


@pytest.mark.parametrize(("requested", "arc", "auth", "state", "expected"), [
    ("TC", b"00", "valid", counters(), "TC"),
    ("TC", b"00", "none", counters(), "TC"),
    ("TC", b"00", "failed", counters(), "AAC"),  # decline_if_issuer_auth_failed defaults to True
    ("TC", b"05", "valid", counters(), "AAC"),
    ("TC", None, "valid", counters(), "TC"),
    ("AAC", b"00", "valid", counters(), "AAC"),
    ("TC", b"Y3", "none", counters(consecutive=3), "TC"),  # 4 <= upper 4
    ("TC", b"Y3", "none", counters(consecutive=4), "AAC"),
    ("TC", b"Z3", "none", counters(amount=8901), "AAC"),
])
def test_second_generate_ac_rules(requested: risk.Cryptogram, arc: bytes | None, auth: str,
                                  state: risk.OfflineCounters, expected: str) -> None:
    decision = risk.second_ac(requested, OFFLINE, state, tx(), arc=arc, issuer_auth=auth)  # type: ignore[arg-type]
    assert decision.cryptogram == expected


def test_issuer_auth_failure_can_be_tolerated_by_profile() -> None:
    params = RiskParams(decline_if_issuer_auth_failed=False)
    assert risk.second_ac("TC", params, counters(), tx(), arc=b"00", issuer_auth="failed").cryptogram == "TC"


def test_counters_reset_only_after_online_approval_with_valid_arpc() -> None:
    state = counters(consecutive=3, amount=700)
    risk.record_online_result(state, approved=True, issuer_auth="none", atc=9)
    assert (state.consecutive, state.cumulative_amount, state.last_online_atc) == (3, 700, 5)
    risk.record_online_result(state, approved=True, issuer_auth="failed", atc=9)
    assert state.issuer_auth_failed_last_online and state.consecutive == 3
    risk.record_online_result(state, approved=True, issuer_auth="valid", atc=10)
    assert (state.consecutive, state.cumulative_amount, state.last_online_atc) == (0, 0, 10)
    assert not state.issuer_auth_failed_last_online
    risk.record_offline_approval(state, 250)
    assert (state.consecutive, state.cumulative_amount) == (1, 250)


# -- CVR layouts (VIS 4 bytes, M/Chip 4 six bytes) ---------------------------------------------


def test_visa_cvr_bits() -> None:
    facts = risk.CvrFacts(first_ac="ARQC", offline_pin_performed=True, offline_pin_failed=True,
                          new_card=True, limits=frozenset({"lower_consecutive"}), script_count=2,
                          script_failed=True, dda_performed=True)
    assert risk.visa_cvr(facts) == bytes([0x03, 0x80 | 0x20 | 0x04 | 0x02, 0x20 | 0x10, 0x20 | 0x08 | 0x02])
    facts = risk.CvrFacts(first_ac="ARQC", second_ac="TC", issuer_auth_failed=True, unable_to_go_online=True,
                          last_online_not_completed=True, pin_try_limit_exceeded=True,
                          issuer_auth_failed_last_online=True, issuer_auth_not_performed_after_online=True)
    assert risk.visa_cvr(facts) == bytes([0x03, 0x40 | 0x20 | 0x08 | 0x01, 0x80 | 0x40 | 0x08 | 0x04, 0x00])
    assert risk.visa_cvr(risk.CvrFacts(first_ac="TC")) == bytes([0x03, 0x90, 0x00, 0x00])
    assert risk.visa_cvr(risk.CvrFacts(first_ac="AAC")) == bytes([0x03, 0x80, 0x00, 0x00])


def test_mchip_cvr_bits() -> None:
    facts = risk.CvrFacts(first_ac="ARQC", offline_pin_performed=True, offline_pin_enciphered=True,
                          pin_tries_left=3, cda_first=True, domestic=True,
                          limits=frozenset({"lower_consecutive", "upper_cumulative"}), script_count=1)
    cvr = risk.mchip_cvr(facts)
    assert cvr == bytes([0xA0 | 0x04 | 0x02 | 0x01, 0x40, 0x13, 0x02, 0x80 | 0x10, 0x00])
    facts = risk.CvrFacts(first_ac="ARQC", second_ac="AAC", issuer_auth_performed=True,
                          issuer_auth_failed=True, unable_to_go_online=True, domestic=False,
                          script_received=True, script_failed=True)
    assert risk.mchip_cvr(facts) == bytes([0x20, 0x10, 0x00, 0x40 | 0x20 | 0x04, 0x04 | 0x02 | 0x01, 0x00])
