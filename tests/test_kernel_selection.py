"""Application selection inside the kernel (EMV 4.4 Book 1, 12): confirmation, the terminal's
AID list when there is no PSE, partial matching per the Application Selection Indicator."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from emv.kernel_config import AidParams, KernelConfig
from emv.outcome import OutcomeKind
from emv.requests import ChooseApplication
from firmware import driver
from firmware.config import load_config
from firmware.prompts import ScriptedPrompt
from firmware.sale import pin_pad_of
from sim.card.card import SimCard
from sim.card.issuer import ScriptedAuthorizer
from sim.inprocess import fresh_card, transact

CONFIG = load_config()
PSE_SELECT = bytes.fromhex("00A404000E") + b"1PAY.SYS.DDF01"


def rewriting(card: SimCard, rewrite: Callable[[bytes, bytes], bytes]) -> Any:
    """A `Transmit` handler whose card answers pass through `rewrite(command, answer)`."""
    return driver.card_sender(lambda capdu: rewrite(capdu, card.process(capdu)), card.protocol)


def confirmation_required(capdu: bytes, answer: bytes) -> bytes:
    # Book 1, 12.2.3: Application Priority Indicator b8 = cardholder confirmation required.
    if capdu[1] == 0xB2 and b"\x87\x01\x01" in answer:
        return answer.replace(b"\x87\x01\x01", b"\x87\x01\x81")
    return answer


def test_single_application_needing_confirmation_is_offered_alone() -> None:
    card = fresh_card("visa_cda_online")
    prompt = ScriptedPrompt(pin="1234", pin_pad=pin_pad_of(CONFIG))
    run = transact(card, CONFIG.kernel, 10000, prompt=prompt,
                   authorizer=ScriptedAuthorizer(["visa_cda_online"]),
                   fulfil=rewriting(card, confirmation_required))
    assert run.outcome.kind == OutcomeKind.APPROVED_ONLINE
    assert prompt.offered == [("A0000000031010",)]
    assert prompt.asked[0] == "choose_application"


def test_refused_confirmation_ends_the_sale_before_gpo() -> None:
    card = fresh_card("visa_cda_online")
    prompt = ScriptedPrompt(pin="1234", choice=5)  # no such entry: the cardholder says no
    run = transact(card, CONFIG.kernel, 10000, prompt=prompt, fulfil=rewriting(card, confirmation_required))
    assert (run.outcome.kind, run.outcome.reason) == (OutcomeKind.TERMINATED, "cancelled")
    assert "GET PROCESSING OPTIONS" not in run.commands


def test_without_confirmation_bit_nothing_is_asked() -> None:
    card = fresh_card("visa_cda_online")
    prompt = ScriptedPrompt(pin="1234", pin_pad=pin_pad_of(CONFIG))
    transact(card, CONFIG.kernel, 10000, prompt=prompt, authorizer=ScriptedAuthorizer(["visa_cda_online"]))
    assert "choose_application" not in prompt.asked


def no_pse(capdu: bytes, answer: bytes) -> bytes:
    return b"\x6a\x82" if capdu.startswith(PSE_SELECT) else answer


def only(aids: tuple[AidParams, ...]) -> KernelConfig:
    return dataclasses.replace(CONFIG.kernel, aids=aids)


def test_no_pse_the_terminal_list_of_aids_is_used() -> None:
    card = fresh_card("mastercard_cda")
    prompt = ScriptedPrompt(pin="1234", pin_pad=pin_pad_of(CONFIG))
    run = transact(card, CONFIG.kernel, 10000, prompt=prompt,
                   authorizer=ScriptedAuthorizer(["mastercard_cda"]), fulfil=rewriting(card, no_pse))
    assert run.outcome.kind == OutcomeKind.APPROVED_ONLINE
    assert run.outcome.aid == bytes.fromhex("A0000000041010")
    # Book 1, 12.3.3: one SELECT per terminal AID (six in the default file) before the final one.
    selects = run.commands[:run.commands.index("GET PROCESSING OPTIONS")]
    assert selects == ["SELECT"] * (1 + len(CONFIG.kernel.aids) + 1)


def test_partial_aid_matches_only_when_the_indicator_allows() -> None:
    visa = next(a for a in CONFIG.kernel.aids if a.aid == bytes.fromhex("A0000000031010"))
    short = dataclasses.replace(visa, aid=bytes.fromhex("A000000003"))
    prompt = ScriptedPrompt(pin="1234", pin_pad=pin_pad_of(CONFIG))
    card = fresh_card("visa_cda_online")
    partial = transact(card, only((short,)), 10000, prompt=prompt,
                       authorizer=ScriptedAuthorizer(["visa_cda_online"]), fulfil=rewriting(card, no_pse))
    assert partial.outcome.kind == OutcomeKind.APPROVED_ONLINE
    assert partial.outcome.aid == bytes.fromhex("A0000000031010")
    card = fresh_card("visa_cda_online")
    exact_only = transact(card, only((dataclasses.replace(short, partial_selection=False),)), 10000,
                          prompt=ScriptedPrompt(pin="1234"), fulfil=rewriting(card, no_pse))
    assert (exact_only.outcome.kind, exact_only.outcome.reason) == (OutcomeKind.TERMINATED, "not_accepted")


def test_pse_entries_the_terminal_does_not_accept_are_left_out() -> None:
    mastercard_only = only(tuple(a for a in CONFIG.kernel.aids if a.aid == bytes.fromhex("A0000000041010")))
    card = fresh_card("cb_visa_cobadged")
    run = transact(card, mastercard_only, 10000, prompt=ScriptedPrompt(pin="1234"))
    # Neither CB nor Visa is configured: the PSE gives nothing usable, the AID list neither.
    assert (run.outcome.kind, run.outcome.reason) == (OutcomeKind.TERMINATED, "not_accepted")
    assert "GET PROCESSING OPTIONS" not in run.commands


def test_choose_application_lists_candidates_with_labels() -> None:
    card = fresh_card("cb_visa_cobadged")
    seen: list[ChooseApplication] = []

    class Recording(ScriptedPrompt):
        def choose_application(self, request: ChooseApplication) -> int | None:
            seen.append(request)
            return super().choose_application(request)

    transact(card, CONFIG.kernel, 10000, prompt=Recording(pin="1234", pin_pad=pin_pad_of(CONFIG)),
             authorizer=ScriptedAuthorizer(["cb_visa_cobadged"]))
    (request,) = seen
    assert [c.aid.hex().upper() for c in request.candidates] == ["A0000000421010", "A0000000031010"]
    assert all(c.label for c in request.candidates)
