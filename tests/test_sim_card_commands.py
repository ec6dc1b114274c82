"""Hand-written APDU sequences against the simulated card, one command at a time."""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import replace

import pytest
from smartcard.ATR import ATR
from test_sim_card_support import (
    PublicKey,
    Terminal,
    apdu,
    icc_public_key,
    make_card,
    recover_icc_key,
    recover_issuer_key,
    recover_sdad,
    static_data,
    sw_of,
)

from emv import dol
from emv.tlv import decode, find, find_all, tag_bytes
from sim.card import pki
from sim.card.card import SimCard

PSE = b"1PAY.SYS.DDF01"
VISA = bytes.fromhex("A0000000031010")
CB = bytes.fromhex("A0000000421010")


def fci_field(fci: list, tag: int) -> bytes | None:
    item = find(fci, tag)
    return item.value if item is not None else None


# -- ATR -------------------------------------------------------------------------------------


def test_t1_atr_parses_with_correct_tck_and_announces_t1() -> None:
    card = make_card("visa_cda_online")
    atr = ATR(list(card.power_on()))
    assert card.protocol == "T=1"
    assert atr.checksumOK
    assert atr.isT1Supported()
    # TD1 = '81', TD2 = '31': TA3 (IFSC) and TB3 (BWI/CWI) present.
    assert atr.TA[2] == 0xFE and atr.TB[2] == 0x45


def test_t0_atr_is_the_emv_basic_t0_atr() -> None:
    card = make_card("t0_only")
    raw = card.power_on()
    atr = ATR(list(raw))
    assert card.protocol == "T=0"
    assert raw[:4] == bytes([0x3B, 0x60 | (len(raw) - 4), 0x00, 0x00])  # Book 1, 8.3.3: TB1, TC1
    assert atr.isT0Supported() and not atr.isT1Supported()
    assert raw == card.atr


# -- SELECT ----------------------------------------------------------------------------------


def test_select_pse_then_directory_lists_both_applications_with_priorities() -> None:
    card = make_card("cb_visa_cobadged")
    card.power_on()
    term = Terminal(card)
    fci, sw = term.select(PSE)
    assert sw == 0x9000
    assert fci_field(fci, 0x84) == PSE
    sfi = fci_field(fci, 0x88)
    assert sfi == b"\x01"
    entries = []
    for number in range(1, 10):
        data, sw = term.send(apdu(0x00, 0xB2, number, (sfi[0] << 3) | 4))
        if sw == 0x6A83:
            break
        assert sw == 0x9000
        (record,) = decode(data)
        assert record.tag == 0x70
        for entry in find_all([record], 0x61):
            entries.append((find([entry], 0x4F).value, find([entry], 0x87).value[0],
                            find([entry], 0x50).value, find([entry], 0x9F12).value))
    assert [(aid, prio) for aid, prio, _, _ in entries] == [(CB, 1), (VISA, 2)]
    assert entries[0][2] == b"CB"


def test_select_pse_absent_is_file_not_found() -> None:
    profile = make_card("visa_cda_online").profile
    card = SimCard(replace(profile, pse=False))
    card.power_on()
    assert card.process(apdu(0x00, 0xA4, 0x04, 0x00, PSE)) == b"\x6a\x82"


def test_select_full_aid_returns_fci_with_pdol_label_language() -> None:
    card = make_card("visa_cda_online")
    card.power_on()
    fci, sw = Terminal(card).select(VISA)
    assert sw == 0x9000
    assert fci[0].tag == 0x6F
    assert fci_field(fci, 0x84) == VISA
    assert fci_field(fci, 0x50) == b"VISA CREDIT"
    assert fci_field(fci, 0x9F38) == bytes.fromhex("9F1A025F2A02")
    assert fci_field(fci, 0x5F2D) == b"enfr"
    assert fci_field(fci, 0x87) == b"\x01"


def test_select_language_de() -> None:
    card = make_card("language_de")
    card.power_on()
    fci, _ = Terminal(card).select(VISA)
    assert fci_field(fci, 0x5F2D) == b"de"


def test_select_partial_aid_and_next_occurrence() -> None:
    card = make_card("cb_visa_cobadged")
    card.power_on()
    term = Terminal(card)
    fci, sw = term.select(bytes.fromhex("A000000042"))
    assert sw == 0x9000 and fci_field(fci, 0x84) == CB
    # Both AIDs start with A0000000: the first occurrence, the next one, then none left.
    fci, sw = term.select(bytes.fromhex("A0000000"))
    assert sw == 0x9000 and fci_field(fci, 0x84) == CB
    fci, sw = term.select(bytes.fromhex("A0000000"), p2=0x02)
    assert sw == 0x9000 and fci_field(fci, 0x84) == VISA
    _, sw = term.select(bytes.fromhex("A0000000"), p2=0x02)
    assert sw == 0x6A82


def test_select_unknown_aid_is_6a82_and_bad_p1_is_6a86() -> None:
    card = make_card("visa_cda_online")
    card.power_on()
    assert card.process(apdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("A0000000049999"))) == b"\x6a\x82"
    assert card.process(apdu(0x00, 0xA4, 0x00, 0x00, VISA)) == b"\x6a\x86"
    assert card.process(apdu(0x00, 0xA4, 0x04, 0x00, None)) == b"\x67\x00"


def test_blocked_application_answers_fci_with_6283_and_refuses_gpo() -> None:
    card = make_card("application_blocked")
    card.power_on()
    response = card.process(apdu(0x00, 0xA4, 0x04, 0x00, VISA))
    assert sw_of(response) == 0x6283
    (fci,) = decode(response[:-2])
    assert fci.tag == 0x6F
    gpo = card.process(apdu(0x80, 0xA8, 0x00, 0x00, bytes.fromhex("8304") + bytes.fromhex("02500978")))
    assert gpo == b"\x69\x85"


# -- GET PROCESSING OPTIONS ------------------------------------------------------------------


def test_gpo_format_2_with_pdol_data() -> None:
    card = make_card("visa_cda_online")
    card.power_on()
    term = Terminal(card)
    term.select_app(card.profile.applications[0])
    data, sw = term.send(apdu(0x80, 0xA8, 0, 0, bytes.fromhex("830402500978")))
    assert sw == 0x9000
    (template,) = decode(data)
    assert template.tag == 0x77
    aip = find([template], 0x82).value
    afl = find([template], 0x94).value
    # AIP (Book 3, C1): DDA, cardholder verification, terminal risk management, issuer
    # authentication, CDA.
    assert aip == bytes([0x20 | 0x10 | 0x08 | 0x04 | 0x01, 0x00])
    assert len(afl) % 4 == 0 and afl[:1] == bytes([1 << 3])


def test_gpo_format_1() -> None:
    card = make_card("mastercard_cda")
    card.power_on()
    term = Terminal(card)
    term.select_app(card.profile.applications[0])
    data, sw = term.send(apdu(0x80, 0xA8, 0, 0, b"\x83\x00"))
    assert sw == 0x9000
    (template,) = decode(data)
    assert template.tag == 0x80
    assert len(template.value) >= 6 and (len(template.value) - 2) % 4 == 0


def test_gpo_pdol_length_mismatch_is_6700_and_second_gpo_is_6985() -> None:
    card = make_card("visa_cda_online")
    card.power_on()
    term = Terminal(card)
    term.select_app(card.profile.applications[0])
    assert card.process(apdu(0x80, 0xA8, 0, 0, bytes.fromhex("8302 0250"))) == b"\x67\x00"
    assert card.process(apdu(0x80, 0xA8, 0, 0, bytes.fromhex("7004 02500978"))) == b"\x6a\x80"
    assert sw_of(card.process(apdu(0x80, 0xA8, 0, 0, bytes.fromhex("830402500978")))) == 0x9000
    assert card.process(apdu(0x80, 0xA8, 0, 0, bytes.fromhex("830402500978"))) == b"\x69\x85"


def test_gpo_without_selection_is_6985() -> None:
    card = make_card("visa_cda_online")
    card.power_on()
    assert card.process(apdu(0x80, 0xA8, 0, 0, b"\x83\x00")) == b"\x69\x85"


def test_cb_application_refuses_gpo_outside_france() -> None:
    card = make_card("cb_visa_cobadged")
    card.power_on()
    term = Terminal(card)
    term.select_app(card.profile.applications[0])
    term.data[0x9F1A] = bytes.fromhex("0276")  # Germany
    assert term.gpo() == 0x6985
    term.select_app(card.profile.applications[1])
    assert term.gpo() == 0x9000


# -- READ RECORD -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["visa_cda_online", "mastercard_cda", "padded_long_form", "sda_only"])
def test_read_record_per_afl_gives_70_templates_and_the_pan(name: str) -> None:
    card = make_card(name)
    term = Terminal(card)
    app = term.start()
    objects = term.record_objects()
    assert objects[0x5A].hex().upper().rstrip("F") == app.pan
    assert 0x8C in objects and 0x8D in objects and 0x8E in objects
    assert objects[0x57].hex().upper().startswith(app.pan + "D" + app.expiry[:4])


def test_read_record_not_found_and_bad_p2() -> None:
    card = make_card("visa_cda_online")
    term = Terminal(card)
    term.start()
    assert card.process(apdu(0x00, 0xB2, 0x09, (1 << 3) | 4)) == b"\x6a\x83"
    assert card.process(apdu(0x00, 0xB2, 0x01, (9 << 3) | 4)) == b"\x6a\x82"
    assert card.process(apdu(0x00, 0xB2, 0x01, (1 << 3) | 5)) == b"\x6a\x86"
    assert card.process(apdu(0x00, 0xB2, 0x00, (1 << 3) | 4)) == b"\x6a\x86"


def test_padded_long_form_records_decode_and_really_are_padded() -> None:
    card = make_card("padded_long_form")
    term = Terminal(card)
    term.start()
    padded = 0
    for record in term.records.values():
        assert record[:2] == b"\x70\x82"  # long form where '81' (or short) would do
        (template,) = decode(record)
        children = template.children or ()
        for child in children:
            assert record[child.offset + len(tag_bytes(child.tag))] == 0x81, hex(child.tag)
        for before, after in itertools.pairwise(children):
            end = before.offset + len(tag_bytes(before.tag)) + 2 + len(before.value)
            assert record[end:after.offset] == b"\x00"
            padded += 1
    assert padded > 0
    objects = term.record_objects()
    assert objects[0x5A].hex().upper().rstrip("F") == card.profile.applications[0].pan


# -- GET DATA, GET CHALLENGE -----------------------------------------------------------------


def test_get_data_atc_last_online_atc_pin_try_counter() -> None:
    card = make_card("offline_approving")
    term = Terminal(card)
    term.start()
    data, sw = term.send(apdu(0x80, 0xCA, 0x9F, 0x36))
    assert sw == 0x9000 and data == bytes.fromhex("9F36020015")  # ATC 20 as personalised, +1 at GPO
    data, sw = term.send(apdu(0x80, 0xCA, 0x9F, 0x13))
    assert data == bytes.fromhex("9F13020014")
    data, sw = term.send(apdu(0x80, 0xCA, 0x9F, 0x17))
    assert data == bytes.fromhex("9F170103")
    assert card.process(apdu(0x80, 0xCA, 0x9F, 0x4F)) == b"\x6a\x88"


def test_get_challenge_uses_the_injected_rng() -> None:
    card = make_card("visa_cda_online", seed=99)
    card.power_on()
    first = card.process(apdu(0x00, 0x84, 0x00, 0x00, le=8))
    again = make_card("visa_cda_online", seed=99)
    again.power_on()
    assert first == again.process(apdu(0x00, 0x84, 0x00, 0x00, le=8))
    assert len(first) == 10 and first[-2:] == b"\x90\x00"
    expected = random.Random(99).randbytes(8)
    assert first[:8] == expected


# -- VERIFY ----------------------------------------------------------------------------------


def pin_block(pin: str) -> bytes:
    # Book 3, 6.5.12 / ISO 9564 format 2: C=2, N, PIN digits, F filler.
    return bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))


def test_verify_plaintext_right_wrong_and_blocked() -> None:
    card = make_card("dda_offline_pin")
    term = Terminal(card)
    term.start()
    verify = lambda pin: card.process(apdu(0x00, 0x20, 0x00, 0x80, pin_block(pin), le=None))  # noqa: E731
    assert verify("0000") == b"\x63\xc2"
    assert card.state.pin_tries_left == 2
    assert verify("1234") == b"\x90\x00"
    assert card.state.pin_tries_left == 3  # reset to the limit after a right PIN
    assert verify("9999") == b"\x63\xc2"
    assert verify("9999") == b"\x63\xc1"
    assert verify("9999") == b"\x63\xc0"
    assert verify("1234") == b"\x69\x83"  # blocked: even the right PIN is refused
    data, _ = term.send(apdu(0x80, 0xCA, 0x9F, 0x17))
    assert data == bytes.fromhex("9F170100")
    card.power_on()  # the try counter is non-volatile
    assert card.state.pin_tries_left == 0


def test_verify_malformed_pin_block_is_6a80_and_costs_no_try() -> None:
    card = make_card("dda_offline_pin")
    Terminal(card).start()
    assert card.process(apdu(0x00, 0x20, 0x00, 0x80, bytes.fromhex("241234FFFFFFFF"), le=None)) == b"\x67\x00"
    assert card.process(apdu(0x00, 0x20, 0x00, 0x80, bytes.fromhex("1412 34FF FFFF FFFF"), le=None)) \
        == b"\x6a\x80"
    assert card.process(apdu(0x00, 0x20, 0x00, 0x80, bytes.fromhex("2412 3AFF FFFF FFFF"), le=None)) \
        == b"\x6a\x80"
    assert card.state.pin_tries_left == 3


def test_pin_blocked_profile_answers_6983() -> None:
    card = make_card("pin_blocked")
    term = Terminal(card)
    term.start()
    assert card.process(apdu(0x00, 0x20, 0x00, 0x80, pin_block("1234"), le=None)) == b"\x69\x83"
    data, _ = term.send(apdu(0x80, 0xCA, 0x9F, 0x17))
    assert data == bytes.fromhex("9F170100")


def enciphered_pin(key: PublicKey, pin: str, challenge: bytes, *, header: int = 0x7F) -> bytes:
    # Book 2, 7.2: '7F' || PIN block || ICC unpredictable number || random padding, then RSA.
    plain = bytes([header]) + pin_block(pin) + challenge
    plain += bytes(range(1, key.size - len(plain) + 1))
    assert len(plain) == key.size
    return pow(int.from_bytes(plain, "big"), key.e, key.n).to_bytes(key.size, "big")


def pin_key_of(term: Terminal) -> PublicKey:
    objects = term.record_objects()
    assert term.app is not None
    ca = pki.load_ca_key(term.app.aid[:5], objects[0x8F][0])
    issuer = recover_issuer_key(PublicKey(ca.n, ca.e), objects)
    return recover_icc_key(issuer, objects, b"", tags=(0x9F2D, 0x9F2F, 0x9F2E))


def test_verify_enciphered_pin_round_trip_through_the_pin_key_certificate() -> None:
    card = make_card("dda_offline_pin")
    term = Terminal(card)
    term.start()
    key = pin_key_of(term)
    challenge, sw = term.send(apdu(0x00, 0x84, 0x00, 0x00, le=8))
    assert sw == 0x9000
    assert card.process(apdu(0x00, 0x20, 0x00, 0x88, enciphered_pin(key, "9876", challenge), le=None)) \
        == b"\x63\xc2"
    challenge, _ = term.send(apdu(0x00, 0x84, 0x00, 0x00, le=8))
    assert card.process(apdu(0x00, 0x20, 0x00, 0x88, enciphered_pin(key, "1234", challenge), le=None)) \
        == b"\x90\x00"
    assert card.state.pin_tries_left == 3


def test_verify_enciphered_pin_needs_the_last_challenge_and_the_7f_header() -> None:
    card = make_card("dda_offline_pin")
    term = Terminal(card)
    term.start()
    key = pin_key_of(term)
    stale, _ = term.send(apdu(0x00, 0x84, 0x00, 0x00, le=8))
    fresh, _ = term.send(apdu(0x00, 0x84, 0x00, 0x00, le=8))
    assert stale != fresh
    assert card.process(apdu(0x00, 0x20, 0x00, 0x88, enciphered_pin(key, "1234", stale), le=None)) \
        == b"\x6a\x80"
    # the challenge is used up by the attempt
    assert card.process(apdu(0x00, 0x20, 0x00, 0x88, enciphered_pin(key, "1234", fresh), le=None)) \
        == b"\x69\x85"
    fresh, _ = term.send(apdu(0x00, 0x84, 0x00, 0x00, le=8))
    assert card.process(apdu(0x00, 0x20, 0x00, 0x88, enciphered_pin(key, "1234", fresh, header=0x7E),
                             le=None)) == b"\x6a\x80"
    assert card.state.pin_tries_left == 3
    assert card.process(apdu(0x00, 0x20, 0x00, 0x88, b"\x00" * 10, le=None)) == b"\x67\x00"


# -- INTERNAL AUTHENTICATE (DDA) -------------------------------------------------------------


def test_internal_authenticate_signature_verifies_with_the_recovered_icc_key() -> None:
    card = make_card("dda_offline_pin")
    term = Terminal(card)
    term.start()
    icc = icc_public_key(term)
    ddol_data = bytes.fromhex("01020304")  # DDOL 9F3704
    data, sw = term.send(apdu(0x00, 0x88, 0x00, 0x00, ddol_data))
    assert sw == 0x9000
    (template,) = decode(data)
    sdad = find([template], 0x9F4B).value if template.tag == 0x77 else template.value
    dynamic = recover_sdad(icc, sdad, ddol_data)
    assert dynamic[0] == len(dynamic) - 1 and 2 <= dynamic[0] <= 8  # Book 2, Table 18
    assert card.process(apdu(0x00, 0x88, 0x00, 0x00, b"\x01\x02")) == b"\x67\x00"


def test_internal_authenticate_unsupported_on_sda_card() -> None:
    card = make_card("sda_only")
    Terminal(card).start()
    assert card.process(apdu(0x00, 0x88, 0x00, 0x00, b"\x01\x02\x03\x04")) == b"\x6d\x00"


def test_sda_card_has_no_key_for_an_enciphered_pin() -> None:
    card = make_card("sda_only")
    Terminal(card).start()
    assert card.process(apdu(0x00, 0x20, 0x00, 0x88, bytes(128), le=None)) == b"\x6a\x86"


def test_sda_signature_and_whole_record_static_data_in_sfi_11() -> None:
    card = make_card("sda_only")
    term = Terminal(card)
    term.start()
    assert term.afl[0] >> 3 == 11
    objects = term.record_objects()
    ca = pki.load_ca_key(VISA[:5], objects[0x8F][0])
    issuer = recover_issuer_key(PublicKey(ca.n, ca.e), objects)
    block = pow(int.from_bytes(objects[0x93], "big"), issuer.e, issuer.n).to_bytes(issuer.size, "big")
    assert block[0] == 0x6A and block[1] == 0x03 and block[-1] == 0xBC
    static = static_data(term.records, term.afl, term.aip, objects.get(0x9F4A))
    assert static.startswith(b"\x70")  # SFI 11: the record with its tag and length
    assert block[-21:-1] == hashlib.sha1(block[1:-21] + static).digest()


def test_corrupted_icc_certificate_fails_recovery() -> None:
    card = make_card("corrupted_icc_certificate")
    term = Terminal(card)
    term.start()
    with pytest.raises(AssertionError):
        icc_public_key(term)


# -- class / instruction / length errors -----------------------------------------------------


@pytest.mark.parametrize(("capdu", "sw"), [
    (b"", 0x6700),
    (b"\x00\xa4\x04", 0x6700),
    (bytes.fromhex("00A404000700"), 0x6700),  # Lc 7 but no data
    (bytes.fromhex("00FF0000"), 0x6D00),
    (bytes.fromhex("90A4040000"), 0x6E00),
    (bytes.fromhex("80A4040007A0000000031010"), 0x6E00),  # SELECT with CLA 80
    (bytes.fromhex("00A8000002830000"), 0x6E00),  # GPO with CLA 00
    (bytes.fromhex("00A4040000"), 0x6700),  # Lc '00': extended length
])
def test_malformed_commands(capdu: bytes, sw: int) -> None:
    card = make_card("visa_cda_online")
    card.power_on()
    assert card.process(capdu) == sw.to_bytes(2, "big")
    assert card.internal_errors == 0


# -- T=0 transport ---------------------------------------------------------------------------


def test_t0_case4_answers_61xx_then_get_response_in_64_byte_chunks() -> None:
    card = make_card("t0_only")
    card.power_on()
    response = card.process(apdu(0x00, 0xA4, 0x04, 0x00, VISA, le=None))
    assert response[0] == 0x61
    announced = response[1]
    assert announced <= 64
    collected = b""
    sw = sw_of(response)
    while sw >> 8 == 0x61:
        response = card.process(bytes([0x00, 0xC0, 0x00, 0x00, sw & 0xFF]))
        assert len(response) - 2 <= 64
        collected += response[:-2]
        sw = sw_of(response)
    assert sw == 0x9000
    (fci,) = decode(collected)
    assert find([fci], 0x84).value == VISA


def test_t0_long_response_needs_several_get_responses() -> None:
    card = make_card("t0_only")
    term = Terminal(card)
    term.start()
    term.data[0x9F37] = b"\x01\x02\x03\x04"
    values = dol.build(term.app.cdol1, term.data)
    first = card.process(apdu(0x80, 0xAE, 0x90, 0x00, values, le=None))
    assert first == b"\x61\x40"  # a CDA response is longer than 64 bytes
    chunks = []
    sw = 0x6140
    while sw >> 8 == 0x61:
        response = card.process(bytes([0x00, 0xC0, 0x00, 0x00, sw & 0xFF]))
        chunks.append(len(response) - 2)
        sw = sw_of(response)
    assert sw == 0x9000 and len(chunks) >= 2 and all(n <= 64 for n in chunks)


def test_t0_get_response_with_too_large_le_gets_6cxx_and_data_stays_available() -> None:
    card = make_card("t0_only")
    card.power_on()
    response = card.process(apdu(0x00, 0xA4, 0x04, 0x00, VISA, le=None))
    available = response[1]
    assert card.process(bytes([0x00, 0xC0, 0x00, 0x00, available + 1])) == bytes([0x6C, available])
    again = card.process(bytes([0x00, 0xC0, 0x00, 0x00, available]))
    assert len(again) == available + 2


def test_t0_case2_wrong_le_gets_6cxx_with_the_exact_length() -> None:
    card = make_card("t0_only")
    term = Terminal(card)
    term.start()
    assert card.process(apdu(0x80, 0xCA, 0x9F, 0x36, le=0)) == b"\x6c\x05"
    assert card.process(apdu(0x80, 0xCA, 0x9F, 0x36, le=2)) == b"\x6c\x05"
    ok = card.process(apdu(0x80, 0xCA, 0x9F, 0x36, le=5))
    assert ok[:3] == b"\x9f\x36\x02" and ok[-2:] == b"\x90\x00"
    record = term.records[(1, 1)]
    assert card.process(apdu(0x00, 0xB2, 0x01, 0x0C, le=0)) == bytes([0x6C, len(record) & 0xFF])
    assert card.process(apdu(0x00, 0xB2, 0x01, 0x0C, le=len(record))) == record + b"\x90\x00"
    assert card.process(apdu(0x00, 0x84, 0x00, 0x00, le=0)) == b"\x6c\x08"


def test_t1_case4_answers_data_directly() -> None:
    card = make_card("visa_cda_online")
    card.power_on()
    response = card.process(apdu(0x00, 0xA4, 0x04, 0x00, VISA))
    assert sw_of(response) == 0x9000 and response[0] == 0x6F
    assert card.process(bytes.fromhex("00C0000000")) == b"\x69\x85"


# -- power cycle -----------------------------------------------------------------------------


def test_power_on_clears_selection_but_keeps_atc() -> None:
    card = make_card("visa_cda_online")
    term = Terminal(card)
    term.start()
    term.generate_ac(0x80)
    atc = card.state.atc
    assert atc == 1
    card.power_off()
    card.power_on()
    assert card.process(apdu(0x80, 0xCA, 0x9F, 0x36)) == b"\x69\x85"  # nothing selected
    assert card.state.atc == atc
