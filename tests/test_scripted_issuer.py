"""The scripted issuer of the simulator (sim/card/issuer.py) against real simulated-card sales.

TEST KEYS: the issuer master keys come from the simulator's profiles (sim/card/profiles).
"""

from __future__ import annotations

import dataclasses
from functools import cache

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from emv import tlv
from emv.requests import HostStatus, OnlineRequest, OnlineResponse
from emv.sensitive import Sensitive
from firmware.config import AppConfig, load_config
from firmware.pin_pad import PinPad
from firmware.prompts import ScriptedPrompt
from firmware.sale import pin_pad_of
from sim.card.issuer import LABEL, ScriptedAuthorizer
from sim.card.profile import load_profile
from sim.inprocess import Run, fresh_card, transact

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # cryptography < 43
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[no-redef]

AMOUNT = 6000  # above the default floor limit: every profile here asks for an ARQC
# Online with an ARPC: VIS CVN 18 (method 2, EXTERNAL AUTHENTICATE), M/Chip CVN 17 (method 1,
# in CDOL2), VIS CVN 10 (method 1, EXTERNAL AUTHENTICATE).
PROFILES = ["visa_cda_online", "mastercard_cda", "sda_only"]


@cache
def config() -> AppConfig:
    return load_config()


def pin_pad() -> PinPad | None:
    return pin_pad_of(config())


def sale(profile: str, authorizer: object) -> Run:
    card = fresh_card(profile)
    return transact(card, config().kernel, AMOUNT, prompt=ScriptedPrompt(pin="1234", pin_pad=pin_pad()),
                    authorizer=authorizer)


def field_55(request: OnlineRequest) -> list[tuple[int, bytes]]:
    return list(tlv.primitives(tlv.decode(request.chip_data)))


def with_tag(request: OnlineRequest, tag: int, value: bytes) -> OnlineRequest:
    chip = b"".join(tlv.encode(t, value if t == tag else v) for t, v in field_55(request))
    return dataclasses.replace(request, chip_data=chip)


class Altered:
    """Passes the scripted issuer's answer on with one byte of '91' or of the scripts flipped."""

    def __init__(self, inner: ScriptedAuthorizer, what: str) -> None:
        self.inner, self.what = inner, what

    def authorize(self, request: OnlineRequest) -> OnlineResponse:
        answer = self.inner.authorize(request)
        if self.what == "91":
            assert answer.issuer_authentication_data is not None
            data = bytearray(answer.issuer_authentication_data)
            data[0] ^= 0x01
            return dataclasses.replace(answer, issuer_authentication_data=bytes(data))
        scripts = bytearray(answer.scripts)
        scripts[-1] ^= 0x01  # the last byte of the last command's MAC
        return dataclasses.replace(answer, scripts=bytes(scripts))


# --- ARQC and ARPC --------------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_real_arqc_is_approved_and_the_card_accepts_the_arpc(profile: str) -> None:
    authorizer = ScriptedAuthorizer(profiles=[profile])
    run = sale(profile, authorizer)
    o = run.outcome
    assert len(authorizer.seen) == 1
    assert o.first_cryptogram_type == "ARQC"
    assert o.kind.value == "approved_online" and o.cryptogram_type == "TC"
    assert o.response_code == b"00"
    assert o.authorization_code is not None and o.authorization_code.startswith(b"SIM")
    assert o.issuer_authentication in ("passed", None)  # None: the ARPC went in CDOL2 (M/Chip)
    assert o.aid is not None
    assert run.card.state.apps[o.aid].counters.issuer_auth_failed_last_online is False
    answer = authorizer.authorize(authorizer.seen[0])
    assert answer.extra == {"authorizer": LABEL, "arqc": "verified"}


@pytest.mark.parametrize("profile", PROFILES)
def test_a_wrong_arpc_is_noticed_by_the_card(profile: str) -> None:
    # The control of the test above: the card does check what the issuer sends.
    run = sale(profile, Altered(ScriptedAuthorizer(profiles=[profile]), "91"))
    o = run.outcome
    assert o.kind.value == "declined_online" and o.cryptogram_type == "AAC"
    assert o.aid is not None
    assert run.card.state.apps[o.aid].counters.issuer_auth_failed_last_online is True


def _tdes_ecb(key: bytes, data: bytes) -> bytes:
    full = key + key[:8] if len(key) == 16 else key
    encryptor = Cipher(TripleDES(full), modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _des_ecb(key: bytes, data: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(TripleDES(key * 3), modes.ECB())
    worker = cipher.decryptor() if decrypt else cipher.encryptor()
    return worker.update(data) + worker.finalize()


def _odd_parity(key: bytes) -> bytes:
    return bytes(b & 0xFE | (bin(b >> 1).count("1") + 1) % 2 for b in key)


def _mac_algorithm_3(key: bytes, message: bytes) -> bytes:
    # ISO/IEC 9797-1 MAC algorithm 3 with padding method 1 (zeros), as VIS CVN 10 uses it.
    message += bytes(-len(message) % 8)
    chain = bytes(8)
    for start in range(0, len(message), 8):
        chain = _des_ecb(key[:8], bytes(a ^ b for a, b in zip(chain, message[start:start + 8], strict=True)))
    return _des_ecb(key[:8], _des_ecb(key[8:], chain, decrypt=True))


def test_cvn10_arqc_and_arpc_against_an_independent_computation() -> None:
    """EMV 4.4 Book 2, A1.4.1 (option A master key), 8.1.2 (AC with the ICC master key for
    VIS CVN 10) and 8.2.1 (ARPC method 1), written out with plain TDES."""
    app = load_profile("sda_only").applications[0]
    authorizer = ScriptedAuthorizer(profiles=["sda_only"])
    sale("sda_only", authorizer)
    request = authorizer.seen[0]
    data = dict(field_55(request))
    z = bytes.fromhex((app.pan + app.psn)[-16:])
    icc_mk = _odd_parity(_tdes_ecb(app.keys.ac, z) + _tdes_ecb(app.keys.ac, bytes(b ^ 0xFF for b in z)))
    covered = (0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37, 0x82, 0x9F36)
    cvr = data[0x9F10][3:7]
    assert _mac_algorithm_3(icc_mk, b"".join(data[t] for t in covered) + cvr) == data[0x9F26]
    answer = authorizer.authorize(request)
    arc = b"00"
    arpc = _tdes_ecb(icc_mk, bytes(a ^ b for a, b in zip(data[0x9F26], arc + bytes(6), strict=True)))
    assert answer.issuer_authentication_data == arpc + arc


@pytest.fixture(scope="module")
def visa_request() -> OnlineRequest:
    authorizer = ScriptedAuthorizer(profiles=["visa_cda_online"])
    sale("visa_cda_online", authorizer)
    return authorizer.seen[0]


@pytest.mark.parametrize("position", [0, 3, 7])
def test_one_byte_of_the_arqc_changed_is_declined_without_arpc(visa_request: OnlineRequest,
                                                                position: int) -> None:
    arqc = bytearray(dict(field_55(visa_request))[0x9F26])
    arqc[position] ^= 0x80
    answer = ScriptedAuthorizer(profiles=["visa_cda_online"], put_data={0x9F14: b"\x03"}).authorize(
        with_tag(visa_request, 0x9F26, bytes(arqc)))
    assert answer.status == HostStatus.RESPONDED
    assert answer.approved is False and answer.response_code == b"05"
    assert answer.issuer_authentication_data is None
    assert answer.scripts == b"" and answer.authorization_code is None
    assert answer.extra["arqc"] == "wrong"


@pytest.mark.parametrize("tag", [0x9F02, 0x9F37, 0x95, 0x9A, 0x9F36])
def test_data_changed_under_the_arqc_is_declined(visa_request: OnlineRequest, tag: int) -> None:
    value = bytearray(dict(field_55(visa_request))[tag])
    value[-1] ^= 0x01
    authorizer = ScriptedAuthorizer(profiles=["visa_cda_online"])
    answer = authorizer.authorize(with_tag(visa_request, tag, bytes(value)))
    assert answer.approved is False and answer.response_code == b"05"
    assert answer.issuer_authentication_data is None


def test_the_untouched_request_is_approved(visa_request: OnlineRequest) -> None:
    answer = ScriptedAuthorizer(profiles=["visa_cda_online"]).authorize(visa_request)
    assert answer.approved is True and answer.response_code == b"00"
    assert answer.issuer_authentication_data is not None


@pytest.mark.parametrize("chip_data", [b"", b"\x9f", b"\x9f\x26\x08\x01", bytes.fromhex("9F260800")])
def test_unreadable_or_incomplete_field_55_is_a_format_error(visa_request: OnlineRequest,
                                                             chip_data: bytes) -> None:
    answer = ScriptedAuthorizer(profiles=["visa_cda_online"]).authorize(
        dataclasses.replace(visa_request, chip_data=chip_data))
    assert answer.status == HostStatus.RESPONDED
    assert answer.approved is False and answer.response_code == b"30"


# EMV 4.4 Book 3, Annex A: the fixed lengths of the data the ARQC covers.
@pytest.mark.parametrize(("tag", "length"), [
    (0x9F26, 8), (0x9F36, 2), (0x82, 2), (0x9F02, 6), (0x9F03, 6), (0x9F1A, 2), (0x95, 5), (0x5F2A, 2),
    (0x9A, 3), (0x9C, 1), (0x9F37, 4),
])
@pytest.mark.parametrize("delta", [-1, 1])
def test_field_of_the_wrong_length_is_a_format_error(visa_request: OnlineRequest, tag: int, length: int,
                                                     delta: int) -> None:
    value = dict(field_55(visa_request))[tag]
    assert len(value) == length
    bad = value[:-1] if delta < 0 else value + b"\x00"
    answer = ScriptedAuthorizer(profiles=["visa_cda_online"]).authorize(with_tag(visa_request, tag, bad))
    assert answer.approved is False and answer.response_code == b"30"
    assert answer.issuer_authentication_data is None


@pytest.mark.parametrize("profile", ["mastercard_cda", "sda_only"])
def test_wrong_length_atc_and_un_are_format_errors_for_other_cvns(profile: str) -> None:
    authorizer = ScriptedAuthorizer(profiles=[profile])
    sale(profile, authorizer)
    request = authorizer.seen[0]
    for tag in (0x9F36, 0x9F37):
        answer = authorizer.authorize(with_tag(request, tag, b"\x01"))
        assert answer.response_code == b"30"


@cache
def real_request(profile: str) -> OnlineRequest:
    authorizer = ScriptedAuthorizer(profiles=[profile])
    sale(profile, authorizer)
    return authorizer.seen[0]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PROFILES), st.data())
def test_any_field_55_gets_an_answer(profile: str, data: st.DataObject) -> None:
    request = real_request(profile)
    items = field_55(request)
    index = data.draw(st.integers(0, len(items) - 1))
    value = data.draw(st.binary(max_size=40))
    chip = b"".join(tlv.encode(t, value if i == index else v) for i, (t, v) in enumerate(items))
    if data.draw(st.booleans()):
        chip = data.draw(st.binary(max_size=120))
    answer = ScriptedAuthorizer(profiles=[profile]).authorize(dataclasses.replace(request, chip_data=chip))
    assert answer.status == HostStatus.RESPONDED
    assert answer.response_code in (b"00", b"05", b"30")
    assert answer.approved == (answer.response_code == b"00")


# --- Cards it does not know -----------------------------------------------------------------

def test_unknown_pan_is_unable(visa_request: OnlineRequest) -> None:
    authorizer = ScriptedAuthorizer(profiles=["visa_cda_online"])
    answer = authorizer.authorize(dataclasses.replace(visa_request, pan=Sensitive("4761739001010044", "PAN")))
    assert answer.status == HostStatus.UNABLE and answer.approved is False


def test_other_pan_sequence_number_or_aid_is_unable(visa_request: OnlineRequest) -> None:
    authorizer = ScriptedAuthorizer(profiles=["visa_cda_online"])
    other_psn = dataclasses.replace(visa_request, pan_sequence_number=2)
    assert authorizer.authorize(other_psn).status == HostStatus.UNABLE
    other_aid = dataclasses.replace(visa_request, aid=bytes.fromhex("A0000000041010"))
    assert authorizer.authorize(other_aid).status == HostStatus.UNABLE
    assert authorizer.authorize(dataclasses.replace(visa_request, pan_sequence_number=None)).approved is True


def test_card_of_another_profile_is_unable(visa_request: OnlineRequest) -> None:
    answer = ScriptedAuthorizer(profiles=["mastercard_cda"]).authorize(visa_request)
    assert answer.status == HostStatus.UNABLE


def test_every_profile_is_known_by_default(visa_request: OnlineRequest) -> None:
    assert ScriptedAuthorizer().authorize(visa_request).approved is True


# --- Declines and scripts -------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_decline(profile: str) -> None:
    authorizer = ScriptedAuthorizer(profiles=[profile], decline=True, put_data={0x9F14: b"\x07"})
    run = sale(profile, authorizer)
    o = run.outcome
    assert o.kind.value == "declined_online" and o.cryptogram_type == "AAC"
    assert o.response_code == b"05"
    answer = authorizer.authorize(authorizer.seen[0])
    assert answer.approved is False and answer.response_code == b"05"
    assert answer.issuer_authentication_data is not None  # the ARQC verified: the decline is authentic
    assert answer.scripts == b"" and answer.authorization_code is None
    assert o.aid is not None
    assert run.card.state.apps[o.aid].risk.lower_consecutive_offline_limit == 0  # no script ran


@pytest.mark.parametrize("profile", PROFILES)
def test_put_data_script_is_accepted_by_the_card(profile: str) -> None:
    authorizer = ScriptedAuthorizer(profiles=[profile], put_data={0x9F14: b"\x07"})
    run = sale(profile, authorizer)
    o = run.outcome
    assert o.aid is not None
    assert run.commands[-1] == "PUT DATA"
    assert run.card.state.apps[o.aid].risk.lower_consecutive_offline_limit == 7
    # Book 3, Annex A '9F5B': '2x' script processed, then the Issuer Script Identifier.
    assert o.script_results == bytes.fromhex("2000000001")
    scripts = tlv.decode(authorizer.authorize(authorizer.seen[0]).scripts)
    assert [obj.tag for obj in scripts] == [0x72]


@pytest.mark.parametrize("profile", PROFILES)
def test_script_with_a_broken_mac_changes_nothing(profile: str) -> None:
    run = sale(profile, Altered(ScriptedAuthorizer(profiles=[profile], put_data={0x9F14: b"\x07"}), "72"))
    o = run.outcome
    assert o.aid is not None
    assert run.card.state.apps[o.aid].risk.lower_consecutive_offline_limit == 0
    assert o.script_results[0] >> 4 == 1  # '1x': script processing failed


def test_two_commands_and_application_block() -> None:
    authorizer = ScriptedAuthorizer(profiles=["mastercard_cda"], put_data={0x9F14: b"\x05", 0x9F23: b"\x09"},
                                    block=True, script_id=bytes.fromhex("0A0B0C0D"))
    run = sale("mastercard_cda", authorizer)
    o = run.outcome
    assert o.aid is not None
    state = run.card.state.apps[o.aid]
    assert run.commands[-3:] == ["PUT DATA", "PUT DATA", "APPLICATION BLOCK"]
    assert state.risk.lower_consecutive_offline_limit == 5
    assert state.risk.upper_consecutive_offline_limit == 9
    assert state.blocked is True
    assert o.script_results == bytes.fromhex("200A0B0C0D")


def test_no_script_without_put_data_or_block(visa_request: OnlineRequest) -> None:
    assert ScriptedAuthorizer(profiles=["visa_cda_online"]).authorize(visa_request).scripts == b""


# --- What it says about itself --------------------------------------------------------------

def test_label_says_it_is_not_a_real_acquirer(visa_request: OnlineRequest) -> None:
    authorizer = ScriptedAuthorizer(profiles=["visa_cda_online"])
    assert "not a real acquirer" in LABEL
    assert authorizer.label == LABEL
    assert authorizer.authorize(visa_request).extra["authorizer"] == LABEL


def test_authorization_codes_count_up(visa_request: OnlineRequest) -> None:
    authorizer = ScriptedAuthorizer(profiles=["visa_cda_online"])
    first, second = authorizer.authorize(visa_request), authorizer.authorize(visa_request)
    assert first.authorization_code != second.authorization_code
    assert first.host_reference != second.host_reference
    assert authorizer.seen == [visa_request, visa_request]
