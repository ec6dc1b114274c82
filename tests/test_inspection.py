"""The technician's card read, in-process against the card simulator (no pcscd)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from emv.aids import KNOWN_AIDS
from emv.inspection import CardReport, InspectionError, read_card
from firmware import driver, terminal_data
from sim.card.card import SimCard
from sim.card.profile import load_profile, profile_names


def read(card: SimCard, transmit: Callable[[bytes], bytes] | None = None,
         aid: bytes | None = None) -> tuple[CardReport, int]:
    card.power_on()
    sent: list[bytes] = []

    def send(capdu: bytes) -> bytes:
        sent.append(capdu)
        return (transmit or card.process)(capdu)

    report = driver.run(read_card(KNOWN_AIDS, terminal_data.for_inspection(), aid),
                        driver.card_sender(send, card.protocol))
    return report, len(sent)


@pytest.mark.parametrize("name", [n for n in profile_names() if n != "application_blocked"])
def test_every_profile_reads(name: str) -> None:
    profile = load_profile(name)
    app = profile.applications[0]
    report, _ = read(SimCard(profile))
    assert report.aid == app.aid.hex().upper()
    assert report.pan_masked == app.pan[:6] + "*" * (len(app.pan) - 10) + app.pan[-4:]
    assert report.expiry == f"20{app.expiry[:2]}-{app.expiry[2:4]}"
    assert report.afl and report.records_read == sum(e["last"] - e["first"] + 1 for e in report.afl)


def test_non_destructive_counters_untouched() -> None:
    import copy

    card = SimCard(load_profile("visa_cda_online"))
    card.power_on()
    def counters() -> object:
        # The ATC counts the GET PROCESSING OPTIONS, as on a real card; nothing else may move.
        return (card.state.pin_tries_left,
                {aid: (s.blocked, s.counters, s.risk) for aid, s in card.state.apps.items()})

    before = copy.deepcopy(counters())
    read(card)
    assert counters() == before


def test_minimum_apdus_t1() -> None:
    # SELECT PSE, READ RECORD directory (1 entry + 6A83), SELECT AID, GPO, 4 records.
    _, count = read(SimCard(load_profile("visa_cda_online")))
    assert count == 1 + 2 + 1 + 1 + 4


def test_t0_card_needs_get_response_and_le_fixes() -> None:
    _, t1 = read(SimCard(load_profile("visa_cda_online")))
    report, t0 = read(SimCard(load_profile("t0_only")))
    assert report.pan_masked and t0 > t1


def test_blocked_application_is_reported_not_selected() -> None:
    report, _ = read(SimCard(load_profile("application_blocked")))
    assert report.aid is None
    assert [a.blocked for a in report.applications] == [True]


def test_cobadged_order_and_forced_choice() -> None:
    card = SimCard(load_profile("cb_visa_cobadged"))
    report, _ = read(card)
    assert report.applications[0].scheme == report.scheme == "CB"
    visa, _ = read(card, aid=bytes.fromhex("A0000000031010"))
    assert visa.aid == "A0000000031010"


def corrupt(card: SimCard, ins: int, mangle: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def transmit(capdu: bytes) -> bytes:
        answer = card.process(capdu)
        return mangle(answer) if capdu[1] == ins and answer[-2:] == b"\x90\x00" else answer
    return transmit


@pytest.mark.parametrize("ins,mangle,step", [
    (0xB2, lambda a: a[:-2][:-3] + a[-2:], "read record"),          # truncated record TLV
    (0xA8, lambda a: bytes.fromhex("7703820100") + a[-2:], "get processing options"),  # no AFL
    (0xA8, lambda a: bytes.fromhex("80038000") + a[-2:], "get processing options"),  # bad length
    (0xB2, lambda a: bytes.fromhex("7103010203") + a[-2:], "read record"),  # not a '70' template
])
def test_malformed_card_answers_end_cleanly(ins: int, mangle: Callable[[bytes], bytes], step: str) -> None:
    card = SimCard(load_profile("visa_cda_online"))
    # The PSE directory is read with READ RECORD too: corrupt only the application's records.
    selected = {"app": False}

    def transmit(capdu: bytes) -> bytes:
        if capdu[1] == 0xA8:
            selected["app"] = True
        if not selected["app"] and capdu[1] == 0xB2:
            return card.process(capdu)
        return corrupt(card, ins, mangle)(capdu)

    with pytest.raises(InspectionError) as err:
        read(card, transmit)
    assert err.value.step == step
