"""GENERATE AC, CDA, ARPC and issuer scripts of the simulated card, checked independently.

Cryptograms and ARPCs are recomputed with pyemv from the profile's issuer master keys (TEST
KEYS), CDA signatures are recovered with `pow` through the CA -> issuer -> ICC chain and the
transaction data hash recomputed from what the terminal sent and received.
"""

from __future__ import annotations

import datetime
import hashlib

import pytest
from test_sim_card_support import (
    Terminal,
    ac_fields,
    apdu,
    engine,
    expected_ac,
    icc_public_key,
    make_card,
    recover_sdad,
    sw_of,
)

from emv import dol
from emv.tlv import encode

ARQC, TC, AAC, CDA = 0x80, 0x40, 0x00, 0x10


def first_arqc(name: str, **kwargs: object) -> tuple[Terminal, dict[str, bytes]]:
    term = Terminal(make_card(name, **kwargs))  # type: ignore[arg-type]
    term.start()
    response, sw = term.generate_ac(ARQC)
    assert sw == 0x9000
    fields = ac_fields(response)
    assert fields["cid"] == b"\x80"
    return term, fields


def arpc_for(term: Terminal, fields: dict[str, bytes], *, approve: bool = True) -> bytes:
    """Issuer Authentication Data (91) as the issuer computes it (Book 2, 8.2)."""
    assert term.app is not None
    e = engine(term.app)
    if term.app.cvn == "visa18":
        csu = bytes.fromhex("00800000" if approve else "00000000")
        return e.generate_arpc(fields["ac"], fields["atc"], csu) + csu  # type: ignore[attr-defined]
    arc = b"00" if approve else b"05"
    return e.generate_arpc(fields["ac"], arc) + arc  # type: ignore[attr-defined]


def flipped(value: bytes) -> bytes:
    return value[:-1] + bytes([value[-1] ^ 0x01])


# -- cryptograms -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["visa_cda_online", "sda_only", "mastercard_cda", "issuer_scripts",
                                  "cb_visa_cobadged", "t0_only"])
def test_first_generate_ac_arqc_matches_pyemv(name: str) -> None:
    term = Terminal(make_card(name))
    app = term.start()
    atc_after_gpo = term.card.state.atc  # the card counted this transaction at GPO
    response, sw = term.generate_ac(ARQC)
    assert sw == 0x9000
    fields = ac_fields(response)
    assert fields["cid"] == b"\x80"
    assert int.from_bytes(fields["atc"], "big") == atc_after_gpo == app.initial.atc + 1
    terminal = dict(dol.split(app.cdol1, term.cdol1_values))
    assert fields["ac"] == expected_ac(app, terminal, term.aip, fields["atc"], fields["iad"])


def test_response_formats_follow_the_profile() -> None:
    visa = Terminal(make_card("visa_cda_online"))
    visa.start()
    response, _ = visa.generate_ac(ARQC)
    assert response[0].tag == 0x77
    mc = Terminal(make_card("mastercard_cda"))
    mc.start()
    response, _ = mc.generate_ac(AAC)
    assert response[0].tag == 0x80 and response[0].value[0] == 0x00


def test_visa_iad_and_cvr_layout_for_an_arqc() -> None:
    _term, fields = first_arqc("visa_cda_online")
    iad = fields["iad"]
    # VIS: '06' DKI CVN CVR; CVR byte 2 = 2nd GENERATE AC not requested (10) + ARQC (10).
    assert iad[:3] == bytes([0x06, 0x01, 0x12])
    assert iad[3] == 0x03 and iad[4] & 0xF0 == 0xA0


def test_mchip_iad_carries_cvr_and_pin_try_counter() -> None:
    _term, fields = first_arqc("issuer_scripts")
    iad = fields["iad"]
    assert iad[:2] == bytes([0x01, 0x10]) and len(iad) == 18
    cvr = iad[2:8]
    assert cvr[0] & 0xF0 == 0xA0
    assert cvr[2] & 0x0F == 3  # PIN try counter
    assert iad[-1] == 0xFF  # counters end with 'FF'


def test_second_generate_ac_tc_after_valid_arpc_matches_pyemv() -> None:
    term, fields = first_arqc("visa_cda_online")
    assert term.app is not None
    assert term.send(apdu(0x00, 0x82, 0x00, 0x00, arpc_for(term, fields), le=None)) == (b"", 0x9000)
    response, sw = term.generate_ac(TC, second=True)
    assert sw == 0x9000
    second = ac_fields(response)
    assert second["cid"] == b"\x40"
    assert second["atc"] == fields["atc"]  # the ATC moves only at the first GENERATE AC
    terminal = {**dict(dol.split(term.app.cdol1, term.cdol1_values)),
                **dict(dol.split(term.app.cdol2, term.last_cdol_values))}
    assert second["ac"] == expected_ac(term.app, terminal, term.aip, second["atc"], second["iad"])
    assert second["iad"][4] & 0xF0 == 0x60  # CVR: TC in 2nd, ARQC in 1st


# -- CDA -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["visa_cda_online", "mastercard_cda", "cb_visa_cobadged",
                                  "padded_long_form"])
def test_cda_first_generate_ac_signature_and_transaction_data_hash(name: str) -> None:
    term = Terminal(make_card(name))
    app = term.start()
    icc = icc_public_key(term)
    response, sw = term.generate_ac(ARQC | CDA)
    assert sw == 0x9000
    (template,) = response
    assert template.tag == 0x77
    fields = ac_fields(response)
    assert "ac" not in fields
    un = dict(dol.split(app.cdol1, term.cdol1_values))[0x9F37]
    dynamic = recover_sdad(icc, fields["sdad"], un)
    n = dynamic[0]
    cid, ac, tdhc = dynamic[1 + n:2 + n], dynamic[2 + n:10 + n], dynamic[10 + n:30 + n]
    assert cid == fields["cid"] == b"\x80"
    # Book 2, 6.6.1: hash of PDOL values, CDOL1 values, then the response TLVs except 9F4B.
    returned = [c for c in template.children or () if c.tag != 0x9F4B]
    hashed = term.pdol_values + term.cdol1_values + b"".join(encode(c.tag, c.value) for c in returned)
    assert tdhc == hashlib.sha1(hashed).digest()
    terminal = dict(dol.split(app.cdol1, term.cdol1_values))
    assert ac == expected_ac(app, terminal, term.aip, fields["atc"], fields["iad"])


def test_cda_second_generate_ac_hashes_cdol2_values_too() -> None:
    term, fields = first_arqc("mastercard_cda")
    assert term.app is not None
    icc = icc_public_key(term)
    term.data[0x91] = arpc_for(term, fields)
    response, sw = term.generate_ac(TC | CDA, second=True)
    assert sw == 0x9000
    (template,) = response
    second = ac_fields(response)
    cdol2 = dict(dol.split(term.app.cdol2, term.last_cdol_values))
    dynamic = recover_sdad(icc, second["sdad"], cdol2[0x9F37])
    n = dynamic[0]
    assert dynamic[1 + n] == 0x40
    returned = [c for c in template.children or () if c.tag != 0x9F4B]
    hashed = (term.pdol_values + term.cdol1_values + term.last_cdol_values
              + b"".join(encode(c.tag, c.value) for c in returned))
    assert dynamic[10 + n:30 + n] == hashlib.sha1(hashed).digest()


def test_cda_not_performed_for_an_aac() -> None:
    term = Terminal(make_card("declining_card"))
    term.start()
    response, sw = term.generate_ac(ARQC | CDA)
    assert sw == 0x9000
    fields = ac_fields(response)
    assert fields["cid"] == b"\x00" and "sdad" not in fields and "ac" in fields


# -- ARPC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["visa_cda_online", "sda_only", "cb_visa_cobadged"])
def test_external_authenticate_accepts_a_valid_arpc_and_rejects_a_bad_one(name: str) -> None:
    term, fields = first_arqc(name)
    good = arpc_for(term, fields)
    assert term.card.process(apdu(0x00, 0x82, 0x00, 0x00, flipped(good), le=None)) == b"\x63\x00"
    # only one EXTERNAL AUTHENTICATE per transaction (Book 3, 6.5.4.3)
    assert term.card.process(apdu(0x00, 0x82, 0x00, 0x00, good, le=None)) == b"\x69\x85"
    term2, fields2 = first_arqc(name)
    assert term2.card.process(apdu(0x00, 0x82, 0x00, 0x00, arpc_for(term2, fields2), le=None)) == b"\x90\x00"


def test_external_authenticate_before_an_arqc_is_6985() -> None:
    term = Terminal(make_card("visa_cda_online"))
    term.start()
    assert term.card.process(apdu(0x00, 0x82, 0x00, 0x00, bytes(8), le=None)) == b"\x69\x85"


def test_failed_arpc_declines_and_marks_the_next_transaction() -> None:
    term, fields = first_arqc("visa_cda_online")
    term.send(apdu(0x00, 0x82, 0x00, 0x00, flipped(arpc_for(term, fields)), le=None))
    response, _ = term.generate_ac(TC, second=True)
    assert ac_fields(response)["cid"] == b"\x00"
    card = term.card
    assert card.state.app().counters.issuer_auth_failed_last_online
    assert card.state.last_online_atc == 0
    again = Terminal(card)
    again.start()
    response, _ = again.generate_ac(TC)
    fields = ac_fields(response)
    assert fields["cid"] == b"\x80"
    assert fields["iad"][5] & 0x08  # VIS CVR byte 3: issuer authentication failed on last online


@pytest.mark.parametrize(("approve_arpc", "cid"), [(True, 0x40), (False, 0x00)])
def test_arpc_in_cdol2_decides_the_second_generate_ac(approve_arpc: bool, cid: int) -> None:
    term, fields = first_arqc("mastercard_cda")
    arpc = arpc_for(term, fields)
    term.data[0x91] = arpc if approve_arpc else flipped(arpc)
    response, sw = term.generate_ac(TC, second=True)
    assert sw == 0x9000
    assert ac_fields(response)["cid"] == bytes([cid])
    state = term.card.state
    assert (state.last_online_atc == int.from_bytes(fields["atc"], "big")) is approve_arpc


def test_issuer_declined_arc_gives_aac() -> None:
    term, fields = first_arqc("visa_cda_online")
    term.send(apdu(0x00, 0x82, 0x00, 0x00, arpc_for(term, fields), le=None))
    term.data[0x8A] = b"05"
    response, _ = term.generate_ac(TC, second=True)
    assert ac_fields(response)["cid"] == b"\x00"


# -- GENERATE AC sequencing ------------------------------------------------------------------


def test_generate_ac_sequencing_errors() -> None:
    card = make_card("visa_cda_online")
    card.power_on()
    term = Terminal(card)
    term.select_app(card.profile.applications[0])
    values = dol.build(card.profile.applications[0].cdol1, term.data)
    assert card.process(apdu(0x80, 0xAE, ARQC, 0x00, values)) == b"\x69\x85"  # before GPO
    assert term.gpo() == 0x9000
    assert card.process(apdu(0x80, 0xAE, ARQC, 0x00, values[:-1])) == b"\x67\x00"
    assert card.process(apdu(0x80, 0xAE, 0xC0, 0x00, values)) == b"\x6a\x86"
    assert card.process(apdu(0x80, 0xAE, 0x81, 0x00, values)) == b"\x6a\x86"
    assert card.process(apdu(0x80, 0xAE, ARQC, 0x01, values)) == b"\x6a\x86"
    assert sw_of(card.process(apdu(0x80, 0xAE, ARQC, 0x00, values))) == 0x9000
    cdol2 = dol.build(card.profile.applications[0].cdol2, term.data)
    assert card.process(apdu(0x80, 0xAE, ARQC, 0x00, cdol2)) == b"\x6a\x86"  # no ARQC in 2nd
    assert sw_of(card.process(apdu(0x80, 0xAE, AAC, 0x00, cdol2))) == 0x9000
    assert card.process(apdu(0x80, 0xAE, AAC, 0x00, cdol2)) == b"\x69\x85"


# -- card risk management through the card ---------------------------------------------------


def offline_tc(card_name: str = "offline_approving") -> Terminal:
    term = Terminal(make_card(card_name))
    return term


def run_first_ac(term: Terminal, p1: int, amount: int | None = None) -> dict[str, bytes]:
    term.start()
    if amount is not None:
        term.data[0x9F02] = bytes.fromhex(f"{amount:012d}")
    response, sw = term.generate_ac(p1)
    assert sw == 0x9000
    return ac_fields(response)


def test_offline_card_approves_within_its_limits_then_goes_online() -> None:
    term = Terminal(make_card("offline_approving"))
    cids = [run_first_ac(term, TC, amount=1000)["cid"][0] for _ in range(6)]
    # lower consecutive offline limit 5: the sixth offline transaction would exceed it
    assert cids == [0x40] * 5 + [0x80]
    counters = term.card.state.app().counters
    assert counters.consecutive == 5 and counters.cumulative_amount == 5000


def test_offline_card_goes_online_over_its_cumulative_amount() -> None:
    term = Terminal(make_card("offline_approving"))
    assert run_first_ac(term, TC, amount=6000)["cid"] == b"\x40"
    assert run_first_ac(term, TC, amount=4001)["cid"] == b"\x80"  # 10001 > 10000


def test_offline_card_asked_arqc_or_aac_answers_so() -> None:
    term = Terminal(make_card("offline_approving"))
    assert run_first_ac(term, ARQC, amount=100)["cid"] == b"\x80"
    assert run_first_ac(term, AAC, amount=100)["cid"] == b"\x00"


def test_foreign_currency_goes_online() -> None:
    term = Terminal(make_card("offline_approving"))
    term.data[0x5F2A] = bytes.fromhex("0840")
    assert run_first_ac(term, TC, amount=100)["cid"] == b"\x80"


def test_unable_to_go_online_approves_within_upper_limits_only() -> None:
    term = Terminal(make_card("offline_approving"))
    for _ in range(5):
        assert run_first_ac(term, TC, amount=100)["cid"] == b"\x40"
    results = []
    for _ in range(6):
        assert run_first_ac(term, TC, amount=100)["cid"] == b"\x80"
        term.data[0x8A] = b"Y3"
        response, _ = term.generate_ac(TC, second=True)
        results.append(ac_fields(response)["cid"][0])
        term.data[0x8A] = b"00"
    # upper consecutive limit 10: offline 6..10 approved, the eleventh declined
    assert results == [0x40] * 5 + [0x00]


def test_online_approval_with_valid_arpc_resets_the_offline_counters() -> None:
    term = Terminal(make_card("offline_approving"))
    for _ in range(5):
        run_first_ac(term, TC, amount=100)
    fields = run_first_ac(term, TC, amount=100)
    assert fields["cid"] == b"\x80"
    assert term.send(apdu(0x00, 0x82, 0x00, 0x00, arpc_for(term, fields), le=None))[1] == 0x9000
    response, _ = term.generate_ac(TC, second=True)
    assert ac_fields(response)["cid"] == b"\x40"
    counters = term.card.state.app().counters
    assert (counters.consecutive, counters.cumulative_amount) == (0, 0)
    data, _ = term.send(apdu(0x80, 0xCA, 0x9F, 0x13))
    assert data[3:] == fields["atc"]
    assert run_first_ac(term, TC, amount=100)["cid"] == b"\x40"


def test_declining_card_answers_aac_even_to_arqc() -> None:
    term = Terminal(make_card("declining_card"))
    assert run_first_ac(term, ARQC)["cid"] == b"\x00"


@pytest.mark.parametrize(("today", "cid"), [(datetime.date(2025, 1, 1), 0x00),
                                           (datetime.date(2020, 6, 1), 0x80)])
def test_expired_card_declines_by_its_own_clock(today: datetime.date, cid: int) -> None:
    term = Terminal(make_card("expired_card", today=lambda: today))
    assert run_first_ac(term, ARQC)["cid"] == bytes([cid])


def test_pin_try_limit_exceeded_sends_the_card_online() -> None:
    term = Terminal(make_card("pin_blocked"))
    fields = run_first_ac(term, TC)
    assert fields["cid"] == b"\x80"
    assert fields["iad"][5] & 0x40  # VIS CVR byte 3: PIN try limit exceeded


def test_offline_only_terminal_gets_tc_or_aac_instead_of_arqc() -> None:
    term = Terminal(make_card("offline_approving"))
    for _ in range(5):
        run_first_ac(term, TC, amount=100)
    term.data[0x9F35] = b"\x23"  # attended, offline only (Book 4, Annex A1)
    assert run_first_ac(term, TC, amount=100)["cid"] == b"\x40"


def test_unfinished_online_transaction_is_reported_next_time() -> None:
    term, _fields = first_arqc("offline_approving")
    term.card.power_off()
    fields = run_first_ac(term, TC, amount=100)
    assert fields["cid"] == b"\x80"
    assert fields["iad"][5] & 0x80  # VIS CVR byte 3: last online transaction not completed


def test_offline_pin_result_is_in_the_cvr() -> None:
    term = Terminal(make_card("dda_offline_pin"))
    term.start()
    wrong = bytes.fromhex("240000FFFFFFFFFF")
    assert term.card.process(apdu(0x00, 0x20, 0x00, 0x80, wrong, le=None)) == b"\x63\xc2"
    response, _ = term.generate_ac(ARQC)
    cvr = ac_fields(response)["iad"][3:7]
    assert cvr[1] & 0x06 == 0x06  # offline PIN performed and failed


# -- issuer scripts --------------------------------------------------------------------------


def script(term: Terminal, fields: dict[str, bytes], ins: int, p1: int = 0, p2: int = 0,
           data: bytes = b"", *, sequence: int = 0, bad_mac: bool = False) -> bytes:
    """Build a script command with its MAC as the issuer does (Book 2, 9.2; pyemv)."""
    assert term.app is not None
    header = bytes([0x84, ins, p1, p2, len(data) + 8])
    ac = fields["ac"]
    if not term.app.cvn.startswith("visa"):
        ac = (int.from_bytes(ac, "big") + sequence).to_bytes(8, "big")
    mac = engine(term.app).generate_command_mac(header, ac, fields["atc"], data)  # type: ignore[attr-defined]
    return header + data + (flipped(mac) if bad_mac else mac)


def online_done(name: str) -> tuple[Terminal, dict[str, bytes]]:
    term, fields = first_arqc(name)
    if term.app is not None and term.app.issuer_authentication == "cdol2":
        term.data[0x91] = arpc_for(term, fields)
    else:
        term.send(apdu(0x00, 0x82, 0x00, 0x00, arpc_for(term, fields), le=None))
    response, _ = term.generate_ac(TC, second=True)
    assert ac_fields(response)["cid"] == b"\x40"
    return term, fields


def test_application_block_script_with_good_mac_blocks_and_bad_mac_does_nothing() -> None:
    term, fields = online_done("issuer_scripts")
    card = term.card
    assert card.process(script(term, fields, 0x1E, bad_mac=True)) == b"\x69\x88"
    assert not card.state.app_blocked
    assert card.process(script(term, fields, 0x1E, sequence=1)) == b"\x90\x00"
    assert card.state.app_blocked
    card.power_on()
    response = card.process(apdu(0x00, 0xA4, 0x04, 0x00, term.app.aid))
    assert sw_of(response) == 0x6283


def test_application_unblock_script() -> None:
    term, fields = online_done("visa_cda_online")
    card = term.card
    assert card.process(script(term, fields, 0x1E)) == b"\x90\x00"
    assert card.state.app_blocked
    assert card.process(script(term, fields, 0x18)) == b"\x90\x00"
    assert not card.state.app_blocked


def test_card_block_script_makes_select_answer_6a81() -> None:
    term, fields = online_done("visa_cda_online")
    card = term.card
    assert card.process(script(term, fields, 0x16)) == b"\x90\x00"
    card.power_on()
    assert card.process(apdu(0x00, 0xA4, 0x04, 0x00, b"1PAY.SYS.DDF01")) == b"\x6a\x81"
    assert card.process(apdu(0x00, 0xA4, 0x04, 0x00, term.app.aid)) == b"\x6a\x81"


def test_script_without_an_arqc_is_refused() -> None:
    term = Terminal(make_card("visa_cda_online"))
    term.start()
    fake = {"ac": bytes(8), "atc": b"\x00\x01"}
    assert term.card.process(script(term, fake, 0x1E)) == b"\x69\x85"


def test_pin_unblock_script_resets_the_try_counter() -> None:
    term, fields = online_done("pin_blocked")
    card = term.card
    assert card.state.pin_tries_left == 0
    assert card.process(script(term, fields, 0x24, 0x00, 0x00, bad_mac=True)) == b"\x69\x88"
    assert card.state.pin_tries_left == 0
    assert card.process(script(term, fields, 0x24, 0x00, 0x00)) == b"\x90\x00"
    assert card.state.pin_tries_left == 3


@pytest.mark.parametrize("with_current_pin", [False, True])
def test_visa_pin_change_script_built_by_pyemv(with_current_pin: bool) -> None:
    term, fields = online_done("visa_cda_online")
    assert term.app is not None
    command = engine(term.app).generate_pin_change_command(  # type: ignore[attr-defined]
        "4321", fields["ac"], fields["atc"], current_pin="1234" if with_current_pin else None)
    card = term.card
    assert card.process(command) == b"\x90\x00"
    assert card.state.pin == "4321"
    block = bytes.fromhex("244321FFFFFFFFFF")
    assert card.process(apdu(0x00, 0x20, 0x00, 0x80, block, le=None)) == b"\x90\x00"


def test_mastercard_pin_change_after_put_data_uses_the_next_ac() -> None:
    term, fields = online_done("issuer_scripts")
    assert term.app is not None
    card = term.card
    put = script(term, fields, 0xDA, 0x9F, 0x14, b"\x07")
    assert card.process(put) == b"\x90\x00"
    assert card.state.app().risk.lower_consecutive_offline_limit == 7
    next_ac = (int.from_bytes(fields["ac"], "big") + 1).to_bytes(8, "big")
    command = engine(term.app).generate_pin_change_command("8642", next_ac, fields["atc"])  # type: ignore[attr-defined]
    assert card.process(command) == b"\x90\x00"
    assert card.state.pin == "8642"


def test_put_data_changes_offline_behaviour() -> None:
    term, fields = online_done("offline_approving")
    card = term.card
    assert card.process(script(term, fields, 0xDA, 0x9F, 0x14, b"\x00")) == b"\x90\x00"
    assert card.process(script(term, fields, 0xDA, 0x9F, 0x54, bytes.fromhex("000000000000"))) \
        == b"\x90\x00"
    assert card.process(script(term, fields, 0xDA, 0x9F, 0x99, b"\x00")) == b"\x6a\x88"
    assert run_first_ac(Terminal(card), TC, amount=100)["cid"] == b"\x80"


def test_scripts_are_counted_in_the_next_cvr() -> None:
    term, fields = online_done("visa_cda_online")
    card = term.card
    card.process(script(term, fields, 0xDA, 0x9F, 0x14, b"\x00"))
    card.process(script(term, fields, 0x1E, bad_mac=True))
    nxt = Terminal(card)
    fields2 = run_first_ac(nxt, ARQC)
    cvr = fields2["iad"][3:7]
    assert cvr[3] >> 4 == 1 and cvr[3] & 0x08  # one script command processed, one failed


# -- the profiles' expectations, as far as the card alone decides ----------------------------


@pytest.mark.parametrize("name", [
    "visa_cda_online", "mastercard_cda", "cb_visa_cobadged", "sda_only", "dda_offline_pin", "pin_blocked",
    "declining_card", "offline_approving", "issuer_scripts", "t0_only", "padded_long_form", "language_de",
])
def test_card_answers_a_tc_request_as_its_profile_expects(name: str) -> None:
    # Terminal action analysis found nothing against the transaction and asks for a TC: what
    # comes back is the card's own decision.
    term = Terminal(make_card(name))
    profile = term.card.profile
    expected_aid = bytes.fromhex(profile.expected.get("application", profile.applications[0].aid.hex()))
    index = [a.aid for a in profile.applications].index(expected_aid)
    term.start(index)
    response, sw = term.generate_ac(TC)
    assert sw == 0x9000
    cid = ac_fields(response)["cid"][0]
    assert {0x00: "AAC", 0x40: "TC", 0x80: "ARQC"}[cid & 0xC0] == profile.expected["first_ac"]
