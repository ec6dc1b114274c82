"""Online processing, issuer scripts and the second GENERATE AC (EMV 4.4 Book 3, 10.9-10.11).

The issuer's side is computed independently with pyemv from the profiles' issuer master keys
(TEST KEYS): ARPCs (Book 2, 8.2) and script MACs (Book 2, 9.2), the way the host simulator and
`test_sim_card_transaction` build them. The simulated card then tells whether it accepted them.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_action_analysis import (
    NONE,
    ONLINE_ONLY_TERMINAL,
    CdaCalls,
    Link,
    drive,
    format1,
    make_context,
    prepare,
    scripted,
    use_cda,
    use_no_cda,
)
from test_sim_card_support import engine, expected_ac

from emv import dol, tlv
from emv.action_analysis import AcResult, first_generate_ac, parse_generate_ac
from emv.apdu import Command, CryptogramType, Response
from emv.completion import complete_online, complete_unable_online, parse_scripts, process_scripts
from emv.context import TSI, TVR, Context
from emv.outcome import Terminate
from emv.requests import HostStatus, OnlineResponse
from sim.card.card import SimCard
from sim.card.profile import Application

INS_GENERATE_AC = 0xAE
INS_EXTERNAL_AUTHENTICATE = 0x82


@pytest.fixture
def no_cda(monkeypatch: pytest.MonkeyPatch) -> None:
    use_no_cda(monkeypatch)


@pytest.fixture
def real_cda(monkeypatch: pytest.MonkeyPatch) -> CdaCalls:
    return use_cda(monkeypatch)


def online_first(name: str, **kwargs: Any) -> tuple[Context, Link, SimCard, AcResult]:
    """A simulated card up to an ARQC: the floor limit bit makes every profile's IAC-Online match."""
    ctx, link, card = prepare(name, **kwargs)
    ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)
    first = drive(first_generate_ac(ctx), link)
    assert first.name == "ARQC" and first.cryptogram
    return ctx, link, card, first


def app_of(card: SimCard) -> Application:
    return card.profile.applications[0]


def issuer_auth_data(app: Application, first: AcResult, *, approve: bool = True) -> bytes:
    """Issuer Authentication Data '91' (Book 2, 8.2): method 2 for VIS CVN 18, else method 1."""
    e: Any = engine(app)
    if app.cvn == "visa18":
        csu = bytes.fromhex("00800000" if approve else "00000000")
        return e.generate_arpc(first.cryptogram, first.atc, csu) + csu
    arc = b"00" if approve else b"05"
    return e.generate_arpc(first.cryptogram, arc) + arc


def corrupted(value: bytes) -> bytes:
    return bytes([value[0] ^ 0x01]) + value[1:]


def approval(data: bytes | None, *, scripts: bytes = b"") -> OnlineResponse:
    return OnlineResponse(HostStatus.RESPONDED, approved=True, response_code=b"00",
                          issuer_authentication_data=data, scripts=scripts)


def position(link: Link, ins: int, nth: int = 0) -> int:
    return [i for i, (command, _) in enumerate(link.log) if command.ins == ins][nth]


def second_ac_inputs(app: Application, ctx: Context) -> dict[int, bytes]:
    """What the card computes the second cryptogram over: CDOL1 values overlaid with CDOL2's."""
    return {**dict(dol.split(app.cdol1, ctx.cdol1_data)), **dict(dol.split(app.cdol2, ctx.cdol2_data))}


# -- online approval with issuer authentication ---------------------------------------------------


def test_visa_approval_with_external_authenticate(no_cda: None) -> None:
    ctx, link, card, first = online_first("visa_cda_online")
    data = issuer_auth_data(app_of(card), first)
    final = drive(complete_online(ctx, first, approval(data)), link)
    (external,) = link.commands(INS_EXTERNAL_AUTHENTICATE)
    assert external.data == data and link.log[position(link, INS_EXTERNAL_AUTHENTICATE)][1].sw == 0x9000
    assert position(link, INS_EXTERNAL_AUTHENTICATE) < position(link, INS_GENERATE_AC, 1)
    second = link.commands(INS_GENERATE_AC)[1]
    assert second.p1 == 0x40 and second.data == ctx.cdol2_data and ctx.cdol2_data[:2] == b"00"
    assert final.name == "TC" and ctx.card[0x9F26] == final.cryptogram
    assert ctx.tsi.is_set(TSI.ISSUER_AUTHENTICATION_PERFORMED)
    assert not ctx.tvr.is_set(TVR.ISSUER_AUTHENTICATION_FAILED)
    assert ctx.authorisation_response_code == b"00"
    app = app_of(card)
    assert final.cryptogram == expected_ac(app, second_ac_inputs(app, ctx), ctx.card[0x82], final.atc,
                                           final.iad or b"")


def test_visa_approval_with_cda_on_both_cryptograms(real_cda: CdaCalls) -> None:
    ctx, link, card, first = online_first("visa_cda_online")
    final = drive(complete_online(ctx, first, approval(issuer_auth_data(app_of(card), first))), link)
    assert [command.p1 for command in link.commands(INS_GENERATE_AC)] == [0x90, 0x50]
    assert real_cda.calls == [(0x80, False), (0x40, True)]
    assert final.name == "TC" and final.cda_signed and len(final.cryptogram) == 8
    app = app_of(card)
    assert final.cryptogram == expected_ac(app, second_ac_inputs(app, ctx), ctx.card[0x82], final.atc,
                                           final.iad or b"")


def test_visa_wrong_arpc_fails_issuer_authentication_and_the_card_declines(no_cda: None) -> None:
    ctx, link, card, first = online_first("visa_cda_online")
    data = corrupted(issuer_auth_data(app_of(card), first))
    final = drive(complete_online(ctx, first, approval(data)), link)
    assert link.log[position(link, INS_EXTERNAL_AUTHENTICATE)][1].sw == 0x6300
    assert ctx.tvr.is_set(TVR.ISSUER_AUTHENTICATION_FAILED)
    assert ctx.tsi.is_set(TSI.ISSUER_AUTHENTICATION_PERFORMED)
    assert link.commands(INS_GENERATE_AC)[1].p1 == 0x40  # TC asked: the card decides
    assert final.name == "AAC"  # the profile declines when issuer authentication fails


def test_denial_codes_covering_failed_issuer_authentication_ask_an_aac(no_cda: None) -> None:
    tacs = {"tac_denial": bytes.fromhex("0000000040")}  # TVR byte 5 b7
    ctx, link, card, first = online_first("visa_cda_online", tacs=tacs)
    data = corrupted(issuer_auth_data(app_of(card), first))
    final = drive(complete_online(ctx, first, approval(data)), link)
    assert link.commands(INS_GENERATE_AC)[1].p1 == 0x00 and final.name == "AAC"


def test_issuer_authentication_data_that_cannot_be_sent_is_a_failure(no_cda: None) -> None:
    ctx, link, _card, first = online_first("visa_cda_online")
    final = drive(complete_online(ctx, first, approval(bytes(20))), link)
    assert link.commands(INS_EXTERNAL_AUTHENTICATE) == []
    assert ctx.tvr.is_set(TVR.ISSUER_AUTHENTICATION_FAILED)
    assert final.name == "TC"  # the card never saw an ARPC, so its own check did not fail


def test_no_issuer_authentication_data_means_no_external_authenticate(no_cda: None) -> None:
    ctx, link, _card, first = online_first("visa_cda_online")
    final = drive(complete_online(ctx, first, approval(None)), link)
    assert link.commands(INS_EXTERNAL_AUTHENTICATE) == []
    assert not ctx.tsi.is_set(TSI.ISSUER_AUTHENTICATION_PERFORMED)
    assert final.name == "TC"


def test_mastercard_issuer_authentication_goes_through_cdol2(real_cda: CdaCalls) -> None:
    ctx, link, card, first = online_first("mastercard_cda")
    data = issuer_auth_data(app_of(card), first)
    final = drive(complete_online(ctx, first, approval(data)), link)
    assert link.commands(INS_EXTERNAL_AUTHENTICATE) == []
    assert ctx.cdol2_data[:10] == data and ctx.cdol2_data[10:12] == b"00"  # CDOL2: 910A 8A02 ...
    assert link.commands(INS_GENERATE_AC)[1].p1 == 0x50
    assert final.name == "TC" and real_cda.calls[-1] == (0x40, True)
    # Book 3, 10.9 through the card: a valid ARPC resets its offline counters to this ATC.
    assert card.state.app().last_online_atc == int.from_bytes(first.atc, "big")


def test_mastercard_wrong_arpc_in_cdol2_is_declined_by_the_card(no_cda: None) -> None:
    ctx, link, card, first = online_first("mastercard_cda")
    data = corrupted(issuer_auth_data(app_of(card), first))
    final = drive(complete_online(ctx, first, approval(data)), link)
    assert link.commands(INS_GENERATE_AC)[1].p1 == 0x40 and final.name == "AAC"
    assert not ctx.tvr.is_set(TVR.ISSUER_AUTHENTICATION_FAILED)  # the terminal cannot know


def test_issuer_decline_asks_an_aac(no_cda: None) -> None:
    ctx, link, card, first = online_first("visa_cda_online")
    response = OnlineResponse(HostStatus.RESPONDED, approved=False, response_code=b"05",
                              issuer_authentication_data=issuer_auth_data(app_of(card), first, approve=False))
    final = drive(complete_online(ctx, first, response), link)
    assert link.commands(INS_GENERATE_AC)[1].p1 == 0x00 and final.name == "AAC"
    assert ctx.authorisation_response_code == b"05" and ctx.cdol2_data[:2] == b"05"


def test_failed_cda_on_the_second_cryptogram_declines(monkeypatch: pytest.MonkeyPatch) -> None:
    use_cda(monkeypatch, fail_second=True)
    ctx, link, card, first = online_first("visa_cda_online")
    final = drive(complete_online(ctx, first, approval(issuer_auth_data(app_of(card), first))), link)
    assert final.cryptogram_type == CryptogramType.AAC and final.cid & 0xC0 == 0x40
    assert ctx.tvr.is_set(TVR.CDA_FAILED)


@pytest.mark.parametrize("name", ["visa_cda_online", "mastercard_cda"])
def test_whole_online_completion_with_the_kernel_oda_step(name: str) -> None:
    ctx, link, card = prepare(name, with_oda=True)
    ctx.tvr.set(TVR.FLOOR_LIMIT_EXCEEDED)
    first = drive(first_generate_ac(ctx), link)
    assert first.name == "ARQC" and first.cda_signed
    final = drive(complete_online(ctx, first, approval(issuer_auth_data(app_of(card), first))), link)
    assert [command.p1 for command in link.commands(INS_GENERATE_AC)] == [0x90, 0x50]
    assert final.name == "TC" and final.cda_signed and len(final.cryptogram) == 8
    assert not ctx.tvr.is_set(TVR.CDA_FAILED) and not ctx.tvr.is_set(TVR.ISSUER_AUTHENTICATION_FAILED)


# -- unable to go online (Book 3, 10.7 last step; 8A 'Y3' / 'Z3') -------------------------------------


def test_unable_online_approves_offline_with_y3(no_cda: None) -> None:
    ctx, link, _card = prepare("offline_approving")
    ctx.tvr.set(TVR.RANDOMLY_SELECTED)  # in IAC-Online 'DC4004F800', not in IAC-Default 'DC4000A800'
    first = drive(first_generate_ac(ctx), link)
    assert first.name == "ARQC"
    final = drive(complete_unable_online(ctx, first), link)
    assert link.commands(INS_GENERATE_AC)[1].p1 == 0x40 and ctx.cdol2_data[:2] == b"Y3"
    assert ctx.authorisation_response_code == b"Y3" and final.name == "TC"


def test_host_unreachable_through_complete_online_is_the_same(no_cda: None) -> None:
    ctx, link, _card = prepare("offline_approving")
    ctx.tvr.set(TVR.RANDOMLY_SELECTED)
    first = drive(first_generate_ac(ctx), link)
    final = drive(complete_online(ctx, first, OnlineResponse.unable()), link)
    assert ctx.authorisation_response_code == b"Y3" and final.name == "TC"


@pytest.mark.parametrize("tac_default", [bytes.fromhex("0000001000"), b"\xff" * 5])
def test_unable_online_with_a_default_code_match_declines_with_z3(no_cda: None, tac_default: bytes) -> None:
    ctx, link, _card = prepare("offline_approving", tacs={"tac_default": tac_default})
    ctx.tvr.set(TVR.RANDOMLY_SELECTED)
    first = drive(first_generate_ac(ctx), link)
    final = drive(complete_unable_online(ctx, first), link)
    assert link.commands(INS_GENERATE_AC)[1].p1 == 0x00 and ctx.cdol2_data[:2] == b"Z3"
    assert ctx.authorisation_response_code == b"Z3" and final.name == "AAC"


def test_unable_online_on_an_online_only_terminal_declines(no_cda: None) -> None:
    ctx, link, _card = prepare("offline_approving", terminal=ONLINE_ONLY_TERMINAL)
    first = drive(first_generate_ac(ctx), link)
    assert first.name == "ARQC"
    final = drive(complete_unable_online(ctx, first), link)
    assert ctx.authorisation_response_code == b"Z3" and final.name == "AAC"


# -- issuer scripts (Book 3, 10.10) -------------------------------------------------------------------


def script_command(app: Application, first: AcResult, ins: int, p1: int = 0, p2: int = 0, data: bytes = b"",
                   *, sequence: int, bad_mac: bool = False) -> bytes:
    """A script command with secure messaging as the issuer builds it (Book 2, 9.2; pyemv):
    M/Chip session keys take the ARQC plus the command's sequence number."""
    header = bytes([0x84, ins, p1, p2, len(data) + 8])
    ac = first.cryptogram
    if not app.cvn.startswith("visa"):
        ac = (int.from_bytes(ac, "big") + sequence).to_bytes(8, "big")
    mac = engine(app).generate_command_mac(header, ac, first.atc, data)  # type: ignore[attr-defined]
    return header + data + (corrupted(mac) if bad_mac else mac)


def template(tag: int, commands: list[bytes], identifier: bytes | None = None) -> bytes:
    body = tlv.encode(0x9F18, identifier) if identifier is not None else b""
    return tlv.encode(tag, body + b"".join(tlv.encode(0x86, command) for command in commands))


def test_issuer_scripts_before_and_after_the_final_cryptogram(no_cda: None) -> None:
    ctx, link, card, first = online_first("issuer_scripts")
    app = app_of(card)
    put_data = script_command(app, first, 0xDA, 0x9F, 0x14, b"\x07", sequence=0)
    bad_block = script_command(app, first, 0x1E, sequence=1, bad_mac=True)
    unblock = script_command(app, first, 0x18, sequence=2)
    block = script_command(app, first, 0x1E, sequence=2)
    scripts = (template(0x72, [bad_block, unblock], bytes.fromhex("55667788"))
               + template(0x71, [put_data], bytes.fromhex("11223344"))
               + template(0x72, [block]))
    final = drive(complete_online(ctx, first, approval(issuer_auth_data(app, first), scripts=scripts)), link)
    assert final.name == "TC"
    sent = [command.encode() for command, _ in link.log]
    second_ac = position(link, INS_GENERATE_AC, 1)
    assert sent.index(put_data) < second_ac < sent.index(bad_block) < sent.index(block)
    assert unblock not in sent  # its script stopped at the '6988' of the command before
    # Book 4, Annex A5: result nibble (2 success, 1 failed) + failing command number, then 9F18.
    assert bytes(ctx.script_results) == bytes.fromhex("2011223344" "1155667788" "2000000000")
    assert ctx.tvr.is_set(TVR.SCRIPT_FAILED_AFTER_FINAL_AC)
    assert not ctx.tvr.is_set(TVR.SCRIPT_FAILED_BEFORE_FINAL_AC)
    assert ctx.tsi.is_set(TSI.SCRIPT_PROCESSING_PERFORMED)
    assert card.state.app().risk.lower_consecutive_offline_limit == 7
    assert card.state.app().blocked


def test_malformed_scripts_are_reported_and_the_transaction_goes_on(no_cda: None) -> None:
    ctx, link, card, first = online_first("issuer_scripts")
    not_an_apdu = template(0x71, [b"\x84\x1e\x00"], bytes.fromhex("0A0B0C0D"))
    bad_inside = bytes([0x71, 0x05, 0x9F, 0x18, 0x04, 0x01, 0x02])  # 9F18 overruns the template
    wrong_id = template(0x71, [b"\x84\x1e\x00\x00"], b"\x01\x02")
    truncated = bytes([0x72, 0x20, 0x86, 0x04])
    scripts = not_an_apdu + bad_inside + wrong_id + truncated
    response = approval(issuer_auth_data(app_of(card), first), scripts=scripts)
    final = drive(complete_online(ctx, first, response), link)
    assert final.name == "TC"
    assert [command.ins for command, _ in link.log if command.cla == 0x84] == []
    assert bytes(ctx.script_results) == bytes.fromhex("110A0B0C0D" "1000000000" "1000000000" "1000000000")
    assert ctx.tvr.is_set(TVR.SCRIPT_FAILED_BEFORE_FINAL_AC)
    assert ctx.tvr.is_set(TVR.SCRIPT_FAILED_AFTER_FINAL_AC)


def test_warnings_continue_a_script_and_errors_stop_it() -> None:
    ctx = make_context()
    commands = [bytes.fromhex("841E000004AABBCCDD")] * 4
    scripts = parse_scripts(template(0x71, commands, bytes.fromhex("01020304")))
    link = scripted(b"\x62\x83", b"\x63\x00", b"\x69\x85")
    drive(process_scripts(ctx, scripts, before_final_ac=True), link)
    assert len(link.log) == 3
    assert bytes(ctx.script_results) == bytes.fromhex("1301020304")


def test_the_sequence_number_saturates_at_f() -> None:
    ctx = make_context()
    scripts = parse_scripts(template(0x72, [bytes.fromhex("841E000004AABBCCDD")] * 17))
    answers = [b"\x90\x00"] * 16 + [b"\x6a\x80"]
    drive(process_scripts(ctx, scripts, before_final_ac=False), scripted(*answers))
    assert ctx.script_results[0] == 0x1F


def test_objects_other_than_script_templates_are_skipped() -> None:
    scripts = parse_scripts(b"\x00" + tlv.encode(0x91, bytes(8)) + template(0x72, [b"\x84\x1e\x00\x00"]))
    assert [(s.tag, s.error) for s in scripts] == [(0x72, None)]


@settings(max_examples=200)
@given(data=st.binary(max_size=120), answers=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8))
def test_any_script_bytes_never_raise(data: bytes, answers: list[int]) -> None:
    scripts = parse_scripts(data)
    ctx = make_context()
    cycle = iter(answers * 64)
    link = Link(lambda _command: Response(b"", next(cycle)))
    drive(process_scripts(ctx, scripts, before_final_ac=True), link)
    assert len(ctx.script_results) == 5 * len(scripts)
    assert all(ctx.script_results[i] >> 4 in (1, 2) for i in range(0, len(ctx.script_results), 5))


@settings(max_examples=100)
@given(blob=st.binary(max_size=60), tag=st.sampled_from([0x71, 0x72]))
def test_random_script_templates_in_a_whole_completion_never_raise(blob: bytes, tag: int) -> None:
    ctx, first = scripted_online_context()
    scripts = tlv.encode(tag, blob) + blob
    tc = Response.parse(format1(0x40) + b"\x90\x00")
    link = Link(lambda command: tc if command.ins == INS_GENERATE_AC else Response(b"", 0x9000))
    with pytest.MonkeyPatch.context() as patch:
        use_no_cda(patch)
        final = drive(complete_online(ctx, first, approval(None, scripts=scripts)), link)
    assert final.name == "TC" and len(link.commands(INS_GENERATE_AC)) == 1
    assert len(ctx.script_results) % 5 == 0 and len(ctx.script_results) >= 5 * (tag == 0x71)


# -- the second GENERATE AC against hand-written answers ------------------------------------------------


def scripted_online_context() -> tuple[Context, AcResult]:
    ctx = make_context()
    ctx.card.update({0x8C: bytes.fromhex("9F0206 9F3704"), 0x8D: bytes.fromhex("8A02 9505"),
                     0x9F0E: NONE, 0x9F0F: NONE, 0x9F0D: NONE})
    first, _ = parse_generate_ac(format1(0x80))
    return ctx, first


@pytest.mark.parametrize(("approved", "answer"), [
    (True, format1(0x80) + b"\x90\x00"),  # ARQC is no answer to a second GENERATE AC
    (False, format1(0x40) + b"\x90\x00"),  # TC to an AAC request
    (True, b"\x69\x85"),
    (True, bytes([0x80, 0x03, 0x40, 0x00, 0x01, 0x90, 0x00])),
], ids=["ARQC", "TC for AAC", "6985", "format 1 too short"])
def test_bad_second_answers_terminate(no_cda: None, approved: bool, answer: bytes) -> None:
    ctx, first = scripted_online_context()
    response = OnlineResponse(HostStatus.RESPONDED, approved=approved,
                              response_code=b"00" if approved else b"05")
    with pytest.raises(Terminate) as caught:
        drive(complete_online(ctx, first, response), scripted(answer))
    assert caught.value.reason == "card_error"


def test_second_generate_ac_sends_cdol2_data(no_cda: None) -> None:
    ctx, first = scripted_online_context()
    ctx.tvr.set(TVR.ONLINE_PIN_ENTERED)
    link = scripted(format1(0x40) + b"\x90\x00")
    final = drive(complete_online(ctx, first, approval(None)), link)
    (command,) = [c for c, _ in link.log]
    assert isinstance(command, Command) and command.p1 == 0x40
    assert command.data == b"00" + bytes.fromhex("0000040000") == ctx.cdol2_data
    assert final.name == "TC" and ctx.card[0x9F27] == b"\x40"


def test_completion_needs_an_arqc() -> None:
    ctx, _ = scripted_online_context()
    tc, _ = parse_generate_ac(format1(0x40))
    with pytest.raises(Terminate) as caught:
        drive(complete_online(ctx, tc, approval(None)), scripted())
    assert caught.value.reason == "kernel_error"
    with pytest.raises(Terminate):
        drive(complete_unable_online(ctx, tc), scripted())


def test_missing_cdol2_terminates(no_cda: None) -> None:
    ctx, first = scripted_online_context()
    del ctx.card[0x8D]
    with pytest.raises(Terminate) as caught:
        drive(complete_online(ctx, first, approval(bytes(8))), scripted())
    assert caught.value.reason == "missing_data"
