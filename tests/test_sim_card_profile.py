"""Card profiles: every shipped one loads and its data decodes; broken ones name the key."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emv.tlv import decode, find
from sim.card.profile import PROFILES_DIR, ProfileError, load_profile, profile_names
from sim.card.records import static_data_to_authenticate

REQUIRED = {
    "visa_cda_online", "mastercard_cda", "cb_visa_cobadged", "sda_only", "dda_offline_pin", "expired_card",
    "not_yet_effective", "pin_blocked", "application_blocked", "declining_card", "offline_approving",
    "issuer_scripts", "t0_only", "padded_long_form", "language_de", "corrupted_icc_certificate",
}


def test_required_profiles_are_shipped() -> None:
    assert set(profile_names()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_profile_loads_and_all_its_data_decodes(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.description
    assert profile.expected["outcome"]
    assert profile.protocol in ("T=0", "T=1")
    if "application" in profile.expected:
        assert bytes.fromhex(profile.expected["application"]) in {a.aid for a in profile.applications}
    for number, record in profile.pse_records.items():
        (template,) = decode(record)
        assert template.tag == 0x70 and find([template], 0x61) is not None, number
    for app in profile.applications:
        assert app.image is not None
        (fci,) = decode(app.image.fci)
        assert fci.tag == 0x6F and find([fci], 0x84).value == app.aid
        tags: set[int] = set()
        for (sfi, number), record in app.image.records.items():
            items = decode(record)
            assert len(items) == 1 and items[0].tag == 0x70, (sfi, number)
            tags |= {c.tag for c in items[0].children or ()}
        assert {0x5A, 0x5F24, 0x57, 0x8C, 0x8D, 0x8E} <= tags
        assert len(app.image.afl) % 4 == 0
        if app.oda != "none":
            assert 0x8F in tags and 0x90 in tags


def test_profile_files_mark_their_keys_as_test_keys() -> None:
    for path in PROFILES_DIR.glob("*.toml"):
        assert "TEST KEYS" in path.read_text(), path.name


def test_profile_repr_hides_pin_pan_and_keys() -> None:
    profile = replace(load_profile("visa_cda_online"), pin="97531")
    text = repr(profile)
    app = profile.applications[0]
    assert app.pan not in text
    assert "97531" not in text
    assert app.keys.ac.hex() not in text.lower()
    assert "TEST KEYS" in repr(app.keys)


def test_static_data_keeps_whole_records_for_sfi_11_to_30() -> None:
    records = {(1, 1): bytes.fromhex("7003 5A01 11"), (11, 1): bytes.fromhex("7003 5F2401 22")}
    afl = bytes.fromhex("08010101 58010101")
    assert static_data_to_authenticate(records, afl, b"\x3c\x00", b"\x82") \
        == bytes.fromhex("5A0111 70035F240122 3C00")
    assert static_data_to_authenticate(records, afl, b"\x3c\x00", None) \
        == bytes.fromhex("5A0111 70035F240122")


# -- broken profiles ---------------------------------------------------------------------------


def broken(tmp_path: Path, old: str, new: str, *, base: str = "visa_cda_online") -> Path:
    text = (PROFILES_DIR / f"{base}.toml").read_text()
    assert old in text
    (tmp_path / f"{base}.toml").write_text(text.replace(old, new, 1))
    return tmp_path


@pytest.mark.parametrize(("old", "new", "key"), [
    ('pan = "4761739001010010"', 'pan = "4761739001010011"', "app.visa.pan"),
    ('cvn = "visa18"', 'cvn = "visa99"', "app.visa.cvn"),
    ('label = "VISA CREDIT"', 'label = "VISA CREDIT"\ncolour = "blue"', "app.visa.colour"),
    ('ac = "056C2D085C17235F99DC122829886E24"', 'ac = "056C"', "app.visa.keys.ac"),
    ('ac = "056C2D085C17235F99DC122829886E24"', 'ac = "0123456789ABCDEF0123456789ABCDEF"',
     "app.visa.keys.ac"),
    ("9A03 9C01 9F3704 9F3501", "9A03 9C01 9F3501", "app.visa.cdol1"),
    ('protocol = "T=1"', 'protocol = "T=2"', "protocol"),
    ('outcome = "approved_online"', 'outcome = "maybe"', "expected.outcome"),
    ("lower_consecutive_offline_limit = 0", "lower_consecutive_offline_limit = -1",
     "app.visa.risk.lower_consecutive_offline_limit"),
    ("lower_consecutive_offline_limit = 0", "lower_consecutive_offline_limit = true",
     "app.visa.risk.lower_consecutive_offline_limit"),
    ('iac_denial = "0010000000"', 'iac_denial = "00100000"', "app.visa.iac_denial"),
    ('pdol = "9F1A02 5F2A02"', 'pdol = "9F1A"', "app.visa.pdol"),
    ('expiry = "491231"', 'expiry = "491331"', "app.visa.expiry"),
    ('ca_index = "F0"', 'ca_index = "F7"', "app.visa"),
    ('icc_key = "icc_1"', 'icc_key = "icc_missing"', "app.visa"),
    ('description = "', 'summary = "', "description"),
    ('pin = "1234"', 'pin = "12a4"', "pin"),
    ("[app.visa.keys]", '[app.visa.data]\n"9F" = "00"\n\n[app.visa.keys]', "app.visa.data.9F"),
    ('label = "VISA CREDIT"', 'label = "VISA CREDIT"\nfci_discretionary = "9F4D"',
     "app.visa.fci_discretionary"),
])
def test_broken_profile_names_the_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    folder = broken(tmp_path, old, new)
    with pytest.raises(ProfileError) as info:
        load_profile("visa_cda_online", directory=folder)
    assert info.value.key == key, str(info.value)
    assert info.value.file == "visa_cda_online.toml"
    assert key in str(info.value) and "visa_cda_online.toml" in str(info.value)


def test_extra_data_and_fci_discretionary_reach_the_card(tmp_path: Path) -> None:
    text = (PROFILES_DIR / "visa_cda_online.toml").read_text()
    text = text.replace("[app.visa.keys]", '[app.visa.data]\n"9F4D" = "0B0A"\n\n[app.visa.keys]')
    text = text.replace('label = "VISA CREDIT"', 'label = "VISA CREDIT"\nfci_discretionary = "9F4D020B0A"')
    (tmp_path / "extra.toml").write_text(text)
    app = load_profile("extra", directory=tmp_path).applications[0]
    assert app.image is not None
    objects = {c.tag: c.value for r in app.image.records.values() for c in decode(r)[0].children or ()}
    assert objects[0x9F4D] == bytes.fromhex("0B0A")
    assert find(decode(app.image.fci), 0xBF0C).value == bytes.fromhex("9F4D020B0A")


def test_not_toml_is_a_profile_error(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("description = \n")
    with pytest.raises(ProfileError, match=r"bad\.toml"):
        load_profile("bad", directory=tmp_path)


def test_unknown_profile_and_bad_name() -> None:
    with pytest.raises(ProfileError):
        load_profile("no_such_card")
    with pytest.raises(ProfileError, match="name"):
        load_profile("../etc/passwd")


def test_extends_merges_and_detects_cycles(tmp_path: Path) -> None:
    shutil.copy(PROFILES_DIR / "visa_cda_online.toml", tmp_path)
    (tmp_path / "child.toml").write_text(
        'extends = "visa_cda_online"\ndescription = "child"\n[expected]\noutcome = "terminated"\n'
        '[app.visa]\nlanguage = "it"\n')
    child = load_profile("child", directory=tmp_path)
    assert child.applications[0].language == "it"
    assert child.applications[0].label == "VISA CREDIT"
    assert child.expected == {"outcome": "terminated"}
    (tmp_path / "a.toml").write_text('extends = "b"\ndescription = "a"\n')
    (tmp_path / "b.toml").write_text('extends = "a"\ndescription = "b"\n')
    with pytest.raises(ProfileError, match="cycle"):
        load_profile("a", directory=tmp_path)


def test_extended_profile_without_its_own_expected_is_refused(tmp_path: Path) -> None:
    shutil.copy(PROFILES_DIR / "visa_cda_online.toml", tmp_path)
    (tmp_path / "child.toml").write_text('extends = "visa_cda_online"\ndescription = "child"\n')
    with pytest.raises(ProfileError) as info:
        load_profile("child", directory=tmp_path)
    assert info.value.key == "expected.outcome"


# -- property: any value at any key loads or raises ProfileError -------------------------------

_LINES = [line for line in (PROFILES_DIR / "visa_cda_online.toml").read_text().splitlines()
          if " = " in line and not line.startswith("#")]

_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(alphabet="0123456789ABCDEFabcdef Tt=-_xyz", max_size=40).map(lambda s: f'"{s}"'),
    st.lists(st.text(alphabet="0123456789ABCDEF", max_size=6), max_size=4).map(
        lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.just("{ a = 1 }"),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=st.sampled_from(_LINES), value=_values)
def test_any_value_loads_or_raises_profile_error(tmp_path: Path, line: str, value: str) -> None:
    key = line.split(" = ", 1)[0]
    text = (PROFILES_DIR / "visa_cda_online.toml").read_text().replace(line, f"{key} = {value}", 1)
    (tmp_path / "fuzzed.toml").write_text(text)
    with contextlib.suppress(ProfileError):
        load_profile("fuzzed", directory=tmp_path)


def test_cards_from_one_profile_do_not_share_counters() -> None:
    from sim.card.card import SimCard
    from sim.card.profile import load_profile

    profile = load_profile("offline_approving")
    first, second = SimCard(profile), SimCard(profile)
    first.state.app().counters.consecutive += 3
    assert second.state.app().counters.consecutive == profile.applications[0].initial.counters.consecutive
    assert profile.applications[0].initial.counters.consecutive != first.state.app().counters.consecutive
