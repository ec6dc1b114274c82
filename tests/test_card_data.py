"""Card data decoders against values worked by hand from EMV 4.4 Book 3 (10.2, 10.5, Annexes
A, C1-C6) and Book 4 Annex A4, plus property tests: any bytes decode or raise CardDataError."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emv import card_data as cd
from emv.errors import EmvError

H = bytes.fromhex

# --- AIP (Annex C1) -------------------------------------------------------------------


def test_aip_cardholder_verification_risk_management_cda() -> None:
    # '19' = 0001 1001: b5 cardholder verification, b4 terminal risk management, b1 CDA.
    aip = cd.decode_aip(H("1980"))
    assert aip.names() == ["cardholder_verification_supported",
                           "terminal_risk_management_required", "cda_supported"]
    assert not aip.sda_supported and not aip.dda_supported


def test_aip_sda_dda_issuer_authentication_on_device_cvm() -> None:
    # '66' = 0110 0110: b7 SDA, b6 DDA, b3 issuer authentication, b2 on-device CVM.
    aip = cd.decode_aip(H("6600"))
    assert aip.names() == ["sda_supported", "dda_supported", "issuer_authentication_supported",
                           "on_device_cvm_supported"]


def test_aip_byte_2_and_rfu_bit_name_nothing() -> None:
    assert cd.decode_aip(H("80FF")).names() == []


@pytest.mark.parametrize("value", ["", "19", "198000"])
def test_aip_must_be_two_bytes(value: str) -> None:
    with pytest.raises(cd.CardDataError, match="AIP"):
        cd.decode_aip(H(value))


# --- AUC (Annex C2) -------------------------------------------------------------------


def test_auc_domestic_only_with_domestic_cashback() -> None:
    # 'AB' = 1010 1011: domestic cash, domestic goods, domestic services, ATMs, non-ATMs; '80'.
    auc = cd.decode_auc(H("AB80"))
    assert auc.names() == ["domestic_cash", "domestic_goods", "domestic_services", "atms",
                           "terminals_other_than_atms", "domestic_cashback"]


def test_auc_international_and_cashback_rfu_bits() -> None:
    # '54' = 0101 0100: international cash, goods, services; byte 2 '7F': b7 plus RFU bits.
    auc = cd.decode_auc(H("547F"))
    assert auc.names() == ["international_cash", "international_goods", "international_services",
                           "international_cashback"]


def test_auc_must_be_two_bytes() -> None:
    with pytest.raises(cd.CardDataError):
        cd.decode_auc(H("FF"))


# --- AFL (Book 3, 10.2) ---------------------------------------------------------------


def test_afl_three_entries() -> None:
    # SFI 1 = '08', SFI 2 = '10', SFI 3 = '18' (SFI in bits 8-4 of byte 1).
    entries = cd.parse_afl(H("08010100" "10010301" "18020200"))
    assert entries == [cd.AflEntry(1, 1, 1, 0), cd.AflEntry(2, 1, 3, 1), cd.AflEntry(3, 2, 2, 0)]


def test_afl_highest_sfi_and_full_oda_range() -> None:
    assert cd.parse_afl(H("F0011010")) == [cd.AflEntry(30, 1, 16, 16)]


def test_empty_afl_has_no_entries() -> None:
    assert cd.parse_afl(b"") == []


@pytest.mark.parametrize(("value", "why"), [
    ("080101", "multiple of 4"),
    ("00010100", "SFI 0"),
    ("F8010100", "SFI 31"),
    ("09010100", "bits 3-1"),
    ("08000100", "first record is 0"),
    ("08030200", "before first"),
    ("08010103", "3 ODA records in a range of 1"),
    ("08010100" "10010506", "entry 2"),  # a good entry then a bad one: nothing is returned
])
def test_afl_rule_breaks(value: str, why: str) -> None:
    with pytest.raises(cd.CardDataError, match=why):
        cd.parse_afl(H(value))


# --- CVM List and CVM Results (10.5, Annex C3, Book 4 Annex A4) -----------------------


def test_cvm_list_online_pin_then_signature_then_no_cvm() -> None:
    # X = 0, Y = 0; '42 03': b7 set (apply next) + code 02 online PIN, if terminal supports;
    # '1E 03' signature if supported; '1F 03' No CVM if supported.
    cvm = cd.decode_cvm_list(H("00000000" "00000000" "4203" "1E03" "1F03"))
    assert (cvm.amount_x, cvm.amount_y) == (0, 0)
    assert [(r.method, r.apply_next_if_unsuccessful, r.condition) for r in cvm.rules] == [
        (0x02, True, 0x03), (0x1E, False, 0x03), (0x1F, False, 0x03)]
    assert [r.method_name for r in cvm.rules] == [
        "Enciphered PIN verified online", "Signature (paper)", "No CVM required"]
    assert cvm.rules[0].condition_name == "If terminal supports the CVM"


def test_cvm_list_amounts_are_binary() -> None:
    # X = '00000FA0' = 4000, Y = '00001F40' = 8000 (binary, application currency).
    cvm = cd.decode_cvm_list(H("00000FA0" "00001F40" "4407" "0106"))
    assert (cvm.amount_x, cvm.amount_y) == (4000, 8000)
    assert cvm.rules[0].method_name == "Enciphered PIN verification performed by ICC"
    assert cvm.rules[0].condition_name == \
        "If transaction is in the application currency and is over X value"
    assert cvm.rules[1].method_name == "Plaintext PIN verification performed by ICC"
    assert not cvm.rules[1].apply_next_if_unsuccessful


@pytest.mark.parametrize(("code", "name"), [
    (0x00, "Fail CVM processing"),
    (0x03, "Plaintext PIN verification performed by ICC and signature (paper)"),
    (0x05, "Enciphered PIN verification performed by ICC and signature (paper)"),
    (0x12, "RFU CVM 12"),
    (0x25, "Payment system CVM 25"),
    (0x3E, "Issuer CVM 3E"),
    (0x3F, "Not available for use"),
    (0x80 | 0x1F, "No CVM required"),  # b8 (RFU) is ignored
])
def test_cvm_method_names(code: int, name: str) -> None:
    assert cd.cvm_method_name(code) == name


@pytest.mark.parametrize(("code", "name"), [
    (0x00, "Always"),
    (0x01, "If unattended cash"),
    (0x02, "If not unattended cash and not manual cash and not purchase with cashback"),
    (0x04, "If manual cash"),
    (0x05, "If purchase with cashback"),
    (0x08, "If transaction is in the application currency and is under Y value"),
    (0x09, "If transaction is in the application currency and is over Y value"),
    (0x0A, "RFU condition 0A"),
    (0x7F, "RFU condition 7F"),
    (0x80, "Payment system condition 80"),
])
def test_cvm_condition_names(code: int, name: str) -> None:
    assert cd.cvm_condition_name(code) == name


@pytest.mark.parametrize("value", ["", "00000000000000", "00000000" "00000000" "42"])
def test_cvm_list_malformed(value: str) -> None:
    with pytest.raises(cd.CardDataError, match="CVM List"):
        cd.decode_cvm_list(H(value))


def test_cvm_list_with_amounts_only_has_no_rules() -> None:
    assert cd.decode_cvm_list(bytes(8)).rules == []


def test_cvm_results() -> None:
    done = cd.decode_cvm_results(H("420302"))
    assert (done.method_name, done.apply_next_if_unsuccessful, done.result_name) == (
        "Enciphered PIN verified online", True, "Successful")
    none = cd.decode_cvm_results(H("3F0000"))
    assert (none.method_name, none.condition_name, none.result_name) == (
        "No CVM performed", "Always", "Unknown")
    assert cd.decode_cvm_results(H("1E0307")).result_name == "RFU result 07"
    with pytest.raises(cd.CardDataError):
        cd.decode_cvm_results(H("1F03"))


# --- TVR and TSI (Annex C5, C6) -------------------------------------------------------


def test_tvr_bits_in_order() -> None:
    # byte 1 b8, byte 3 b4 ('10'), byte 4 b8, byte 5 b7.
    assert cd.decode_tvr(H("8000108040")) == [
        "Offline data authentication was not performed",
        "PIN entry required and PIN pad not present or not working",
        "Transaction exceeds floor limit",
        "Issuer authentication failed",
    ]
    assert cd.decode_tvr(bytes(5)) == []


def test_tvr_rfu_bit_is_not_named() -> None:
    assert cd.decode_tvr(H("0004000000")) == []  # byte 2 b3 is RFU


def test_tsi() -> None:
    # 'E8' = 1110 1000: ODA, cardholder verification, card risk management, terminal risk management.
    assert cd.decode_tsi(H("E800")) == [
        "Offline data authentication was performed",
        "Cardholder verification was performed",
        "Card risk management was performed",
        "Terminal risk management was performed",
    ]
    assert cd.decode_tsi(H("03FF")) == []


@pytest.mark.parametrize(("decoder", "value"), [(cd.decode_tvr, "00000000"), (cd.decode_tsi, "000000")])
def test_tvr_tsi_lengths(decoder: Callable[[bytes], list[str]], value: str) -> None:
    with pytest.raises(cd.CardDataError):
        decoder(H(value))


# --- Dates (Annex A, n 6 YYMMDD) ------------------------------------------------------


@pytest.mark.parametrize(("value", "date"), [
    ("251231", datetime.date(2025, 12, 31)),
    ("491130", datetime.date(2049, 11, 30)),
    ("500101", datetime.date(1950, 1, 1)),
    ("991231", datetime.date(1999, 12, 31)),
    ("000101", datetime.date(2000, 1, 1)),
    ("240229", datetime.date(2024, 2, 29)),
])
def test_dates(value: str, date: datetime.date) -> None:
    assert cd.decode_date(H(value)) == date


@pytest.mark.parametrize("value", ["251331", "250001", "250230", "230229", "250100", "2A1231", "2512",
                                   "25123101"])
def test_bad_dates(value: str) -> None:
    with pytest.raises(cd.CardDataError, match="date"):
        cd.decode_date(H(value))


def test_format_expiry() -> None:
    assert cd.format_expiry(H("271130")) == "2027-11"
    with pytest.raises(cd.CardDataError) as raised:
        cd.format_expiry(H("271131"))
    assert raised.value.tag == 0x5F24


# --- PAN, masking, track 2 ------------------------------------------------------------


def test_pan_without_padding() -> None:
    assert cd.pan_digits(H("4761739001010010")) == "4761739001010010"


def test_pan_with_padding() -> None:
    assert cd.pan_digits(H("5413330089020011" "9F")) == "54133300890200119"
    assert cd.pan_digits(H("541333008902001FFF")) == "541333008902001"


@pytest.mark.parametrize("value", [
    "4761A39001010010",    # non-BCD nibble
    "47F1739001010010",    # padding followed by digits
    "",                    # no digits
    "FFFF",                # padding only
    "1234567890123456789012",  # 22 digits
])
def test_bad_pans(value: str) -> None:
    with pytest.raises(cd.CardDataError, match="PAN"):
        cd.pan_digits(H(value))


def test_pan_errors_do_not_echo_the_pan() -> None:
    with pytest.raises(cd.CardDataError) as raised:
        cd.pan_digits(H("4761739001010A10"))
    assert "4761739" not in str(raised.value) and "010A10" not in str(raised.value).upper()


def test_mask_pan() -> None:
    assert cd.mask_pan("4761739001010010") == "476173******0010"
    assert cd.mask_pan("5413330089020011") == "541333******0011"
    assert cd.mask_pan("54133300890200119") == "541333*******0119"
    assert cd.mask_pan("12345678901") == "123456*8901"
    assert cd.mask_pan("1234567890") == "******7890"
    assert cd.mask_pan("123456") == "***456"


@pytest.mark.parametrize("pan", ["", "4761 7390", "４７６１７３９００１", "1" * 20])
def test_mask_pan_rejects_non_pans(pan: str) -> None:
    with pytest.raises(cd.CardDataError):
        cd.mask_pan(pan)


TRACK2 = H("4761739001010010" "D2212201" "1143804400000F")


def test_track2() -> None:
    track = cd.decode_track2(TRACK2)
    assert (track.pan, track.expiry, track.service_code, track.discretionary) == (
        "4761739001010010", "2212", "201", "1143804400000")
    assert cd.track2_pan(TRACK2) == "4761739001010010"


def test_track2_repr_masks_pan_and_discretionary_data() -> None:
    text = repr(cd.decode_track2(TRACK2))
    assert "4761739001010010" not in text and "1143804400000" not in text
    assert "476173******0010" in text


@pytest.mark.parametrize("value", [
    "4761739001010010" "22122011",       # no separator
    "D2212201" "1143",                   # no PAN
    "4761739001010010" "D221220F",       # expiry and service code cut short
    "4761739001010010" "D2212201" "1F43",  # padding inside the discretionary data
    "47617390010100101234" "D2212201",   # 20-digit PAN
    "476173900101001A" "D2212201",       # non-digit in the PAN
])
def test_bad_track2(value: str) -> None:
    with pytest.raises(cd.CardDataError, match="track 2"):
        cd.decode_track2(H(value))


# --- Language Preference, country and currency codes ----------------------------------


def test_languages() -> None:
    assert cd.languages(b"fren") == ["fr", "en"]
    assert cd.languages(b"DEfrITes") == ["de", "fr", "it", "es"]


@pytest.mark.parametrize("value", [b"", b"fre", b"f1", b"frenitesde", b"\xe9n", b"fr  "])
def test_bad_languages(value: bytes) -> None:
    with pytest.raises(cd.CardDataError, match="Language Preference"):
        cd.languages(value)


def test_country_and_currency_codes() -> None:
    assert cd.country_code(H("0250")) == 250       # France
    assert cd.country_code(H("0826")) == 826       # United Kingdom
    assert cd.currency_code(H("0978")) == 978      # euro
    assert cd.currency_code(H("0036")) == 36       # Australian dollar


@pytest.mark.parametrize("value", ["1250", "0A50", "02", "000250"])
def test_bad_numeric_codes(value: str) -> None:
    with pytest.raises(cd.CardDataError):
        cd.country_code(H(value))
    with pytest.raises(cd.CardDataError):
        cd.currency_code(H(value))


def test_errors_are_emv_errors_carrying_the_tag() -> None:
    with pytest.raises(EmvError) as raised:
        cd.parse_afl(H("00010100"))
    assert isinstance(raised.value, cd.CardDataError) and raised.value.tag == 0x94


@pytest.mark.parametrize("decoder", [cd.decode_aip, cd.parse_afl, cd.pan_digits, cd.languages,
                                     cd.decode_track2, cd.decode_cvm_list])
def test_non_bytes_input_is_refused(decoder: Callable[[Any], Any]) -> None:
    with pytest.raises(cd.CardDataError):
        decoder("0801010")


# --- Properties ------------------------------------------------------------------------

DECODERS: list[Callable[[bytes], Any]] = [
    cd.decode_aip, cd.decode_auc, cd.parse_afl, cd.decode_cvm_list, cd.decode_cvm_results,
    cd.decode_tvr, cd.decode_tsi, cd.decode_date, cd.format_expiry, cd.pan_digits,
    cd.track2_pan, cd.decode_track2, cd.languages, cd.country_code, cd.currency_code,
]


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@given(data=st.binary(max_size=40))
def test_any_bytes_decode_or_raise_card_data_error(decoder: Callable[[bytes], Any], data: bytes) -> None:
    with contextlib.suppress(cd.CardDataError):
        decoder(data)


@given(data=st.binary(min_size=3, max_size=3))
def test_three_bytes_decode_as_a_date_exactly_when_they_name_a_calendar_day(data: bytes) -> None:
    text = data.hex()
    try:
        expected: datetime.date | None = datetime.date(
            int(text[:2]) + (2000 if int(text[:2]) < 50 else 1900), int(text[2:4]), int(text[4:]))
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(cd.CardDataError):
            cd.decode_date(data)
    else:
        assert cd.decode_date(data) == expected


@given(st.dates(min_value=datetime.date(1950, 1, 1), max_value=datetime.date(2049, 12, 31)))
def test_dates_round_trip(date: datetime.date) -> None:
    assert cd.decode_date(bytes.fromhex(date.strftime("%y%m%d"))) == date


afl_entries = st.builds(
    lambda sfi, first, span, oda: (sfi, first, first + span, oda % (span + 2)),
    st.integers(1, 30), st.integers(1, 200), st.integers(0, 55), st.integers(0, 255))


@given(st.lists(afl_entries, max_size=8))
def test_valid_afl_entries_read_back(entries: list[tuple[int, int, int, int]]) -> None:
    encoded = b"".join(bytes([sfi << 3, first, last, oda]) for sfi, first, last, oda in entries)
    assert cd.parse_afl(encoded) == [cd.AflEntry(*entry) for entry in entries]


@given(st.text(alphabet="0123456789", min_size=1, max_size=19))
def test_pan_digits_round_trip_through_cn_padding(pan: str) -> None:
    padded = pan + "F" * (len(pan) % 2)
    assert cd.pan_digits(bytes.fromhex(padded)) == pan
    assert cd.pan_digits(bytes.fromhex(padded + "FF")) == pan


@given(st.text(alphabet="0123456789", min_size=1, max_size=19))
def test_mask_pan_hides_the_middle(pan: str) -> None:
    masked = cd.mask_pan(pan)
    assert len(masked) == len(pan)
    shown = [i for i, c in enumerate(masked) if c != "*"]
    assert all(masked[i] == pan[i] for i in shown)
    assert len(shown) <= min(10, len(pan) // 2 if len(pan) <= 10 else 10)
    assert set(shown) <= set(range(6)) | set(range(len(pan) - 4, len(pan)))


@given(st.binary(min_size=8, max_size=60))
def test_cvm_list_rule_count(data: bytes) -> None:
    if len(data) % 2:
        with pytest.raises(cd.CardDataError):
            cd.decode_cvm_list(data)
    else:
        cvm = cd.decode_cvm_list(data)
        assert len(cvm.rules) == (len(data) - 8) // 2
        assert cvm.amount_x == int(data[:4].hex(), 16)


@given(st.binary(min_size=5, max_size=5))
def test_tvr_names_one_entry_per_defined_set_bit(data: bytes) -> None:
    rfu = bytes.fromhex("0004000000")  # byte 2 b3 is the only RFU bit of the 4.4 TVR
    defined = bytes(b & ~r for b, r in zip(data, rfu, strict=True))
    assert len(cd.decode_tvr(data)) == sum(bin(b).count("1") for b in defined)


@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                        min_size=2, max_size=2), min_size=1, max_size=4))
def test_languages_round_trip(codes: list[str]) -> None:
    assert cd.languages("".join(codes).encode("ascii")) == [c.lower() for c in codes]


digits = st.text(alphabet="0123456789")


@given(digits.filter(bool).map(lambda s: s[:19]), st.text(alphabet="0123456789", min_size=7, max_size=7),
       st.text(alphabet="0123456789", max_size=16))
def test_track2_fields_read_back(pan: str, expiry_and_service: str, discretionary: str) -> None:
    text = f"{pan}D{expiry_and_service}{discretionary}"
    track = cd.decode_track2(bytes.fromhex(text + "F" * (len(text) % 2)))
    assert (track.pan, track.expiry + track.service_code, track.discretionary) == (
        pan, expiry_and_service, discretionary)


@given(st.binary(min_size=2, max_size=2))
def test_numeric_3_codes_accept_exactly_bcd_below_1000(data: bytes) -> None:
    text = data.hex()
    if text.isdigit() and text[0] == "0":
        assert cd.country_code(data) == cd.currency_code(data) == int(text)
    else:
        with pytest.raises(cd.CardDataError):
            cd.country_code(data)
