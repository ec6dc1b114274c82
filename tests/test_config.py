"""The terminal's TOML configuration: the packaged default, each class of error, and fuzzing."""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emv.capk import load_capks
from emv.sensitive import pan_token
from firmware.config import (
    AppConfig,
    ConfigError,
    default_state_folder,
    load_config,
    load_initial_key,
    parse_config,
)
from firmware.dukpt import KeyType, derive_initial_key
from sim.host.test_pki import make_test_pki

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "firmware" / "defaults" / "terminal.toml"
SIM_CA_KEYS = ROOT / "sim" / "card" / "ca_keys.toml"
SCHEME_TEST_CA_KEYS = ROOT / "firmware" / "defaults" / "ca_keys_scheme_test.toml"
TERMINAL_TEST_KEYS = ROOT / "sim" / "host" / "terminal_test_keys.toml"
HOST_TEST_KEYS = ROOT / "sim" / "host" / "test_keys.toml"


# A TOML writer of our own (the project has no TOML writer dependency): every table is written
# inline, which TOML reads exactly as the [table] and [[array]] forms.
def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def to_toml(document: dict[str, Any]) -> str:
    return "\n".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in document.items()) + "\n"


def minimal() -> dict[str, Any]:
    """A small valid configuration, written independently of the packaged default."""
    return {
        "terminal": {
            "type": "22", "capabilities": "E0F8C8", "additional_capabilities": "F000F0A001",
            "country": 250, "currency": 978, "currency_exponent": 2, "terminal_id": "T0000042",
            "merchant_id": "MERCHANT0000042", "merchant_category": 5999, "ifd_serial": "SN000042",
        },
        "aid": [{
            "aid": "A0000000031010", "application_versions": ["0096"],
            "tac_denial": "0010000000", "tac_online": "DC4004F800", "tac_default": "DC4000A800",
            "floor_limit": 0,
        }],
    }


def parse(document: dict[str, Any], base: Path | None = None) -> AppConfig:
    return parse_config(to_toml(document), "test.toml", base or ROOT)


def error_of(document: dict[str, Any], base: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(document, base)
    return caught.value


# --- the packaged default -------------------------------------------------------------------

def test_default_file_is_the_packaged_one_and_its_values_reach_the_kernel() -> None:
    config = load_config()
    assert config.source.resolve() == DEFAULT_FILE
    terminal = config.kernel.terminal
    assert (terminal.country, terminal.currency, terminal.currency_exponent) == (250, 978, 2)
    assert terminal.terminal_type == 0x22
    assert terminal.capabilities == b"\xe0\xf8\xc8"
    assert terminal.additional_capabilities == bytes.fromhex("6000A0B001")
    # E0F8C8 (Book 4, Annex A2): every CVM and every ODA method
    assert terminal.supports_enciphered_online_pin and terminal.supports_cda and terminal.supports_dda
    assert not terminal.offline_only and not terminal.online_only
    assert terminal.preferred_aids == (bytes.fromhex("A0000000421010"),)
    assert {params.aid.hex().upper() for params in config.kernel.aids} == {
        "A0000000031010", "A0000000032010", "A0000000032020", "A0000000041010", "A0000000043060",
        "A0000000421010"}


@pytest.mark.parametrize(("aid", "denial", "online", "default"), [
    ("A0000000031010", "0010000000", "DC4004F800", "DC4000A800"),
    ("A0000000041010", "0000000000", "FC50BCF800", "FC50BCA000"),
    ("A0000000043060", "0000800000", "FC50BCF800", "FC50BCA000"),
])
def test_default_tacs(aid: str, denial: str, online: str, default: str) -> None:
    # a longer ADF name matches through partial selection (Book 1, 12.3.1)
    params = load_config().kernel.aid_params(bytes.fromhex(aid + "01"))
    assert params is not None and params.aid == bytes.fromhex(aid)
    assert (params.tac_denial, params.tac_online, params.tac_default) == (
        bytes.fromhex(denial), bytes.fromhex(online), bytes.fromhex(default))


def test_default_random_selection_is_below_the_floor_limit() -> None:
    for params in load_config().kernel.aids:
        assert params.floor_limit == 5000  # 50.00 EUR
        assert params.random_selection_threshold == 2000
        assert (params.random_target_percent, params.random_max_target_percent) == (20, 50)


def test_default_trusts_the_simulator_test_keys() -> None:
    config = load_config()
    assert dict(config.kernel.ca_keys) == load_capks(SIM_CA_KEYS.read_text())
    assert config.dukpt is not None
    assert config.dukpt.initial_key_file.resolve() == TERMINAL_TEST_KEYS
    assert "TEST KEYS" in TERMINAL_TEST_KEYS.read_text().splitlines()[0]
    # the terminal's initial key is the one the simulated host's BDK derives for it
    initial = load_initial_key(config.dukpt.initial_key_file)
    host = tomllib.loads(HOST_TEST_KEYS.read_text())
    assert initial.key_type is KeyType.AES128
    assert initial.key_id[:4] == bytes.fromhex(host["bdk_id"])
    assert initial.key == derive_initial_key(bytes.fromhex(host["bdk"]), initial.key_id)
    assert config.reader.name is None and config.pin_pad.shuffle is False
    assert config.host is None  # no acquirer until one is configured


def test_minimal_document_keeps_kernel_defaults_for_the_rest() -> None:
    config = parse(minimal())
    assert config.kernel.ca_keys == {} and config.kernel.revoked == frozenset()
    assert config.kernel.terminal.pin_pad is True and config.kernel.terminal.preferred_aids == ()
    assert config.kernel.aids[0].default_ddol == bytes.fromhex("9F3704")
    assert config.source == Path("test.toml")


# --- sections and values that reach the kernel ---------------------------------------------

def test_every_section_reaches_its_value(tmp_path: Path) -> None:
    pan = "4761739001010010"
    (tmp_path / "keys.toml").write_text(SIM_CA_KEYS.read_text())
    (tmp_path / "pinpad.toml").write_text('key_id = "K1"\nkey = "00112233445566778899AABBCCDDEEFF"\n')
    document = minimal()
    document["terminal"]["preferred_aids"] = ["A0000000031010"]
    document["aid"][0] |= {"floor_limit": 3000, "random_selection_threshold": 1000,
                           "random_target_percent": 10, "random_max_target_percent": 40,
                           "default_tdol": "9F0206", "partial_selection": False, "name": "Visa"}
    document["ca_keys"] = {"files": ["keys.toml"]}
    document["revoked"] = [{"rid": "A000000003", "index": "F0", "serial": "0A0B0C"}]
    document["exception"] = [{"pan_sha256": pan_token(pan).upper()},
                             {"pan_sha256": pan_token(pan, 1), "psn": 1}]
    document["fraud"] = {"online_above": 10000, "decline_above": 50000, "online_countries": [840],
                         "decline_countries": [408], "blocked_prefixes": ["412345"]}
    document["reader"] = {"name": "vpcd"}
    document["pin_pad"] = {"shuffle": True}
    (tmp_path / "ik.toml").write_text(f'initial_key = "{"11" * 32}"\ninitial_key_id = "0102030405060708"\n')
    document["dukpt"] = {"initial_key_file": "ik.toml"}
    pki = make_test_pki(tmp_path / "pki")
    document["host"] = {"address": "acquirer.example", "port": 8583, "server_name": "localhost",
                        "ca_file": "pki/test-host-ca-cert.pem", "cert_file": str(pki.terminal_cert),
                        "key_file": "pki/test-terminal-key.pem", "timeout": 2.5, "max_frame": 4096,
                        "acquirer_id": "00012345678"}
    document["state"] = {"folder": "state"}
    config = parse(document, tmp_path)
    kernel = config.kernel
    assert dict(kernel.ca_keys) == load_capks(SIM_CA_KEYS.read_text())
    assert kernel.revoked == {(bytes.fromhex("A000000003"), 0xF0, bytes.fromhex("0A0B0C"))}
    assert [(e.pan_sha256, e.psn) for e in kernel.exception_file] == [
        (pan_token(pan), None), (pan_token(pan, 1), 1)]
    assert kernel.fraud.online_above == 10000 and kernel.fraud.decline_above == 50000
    assert kernel.fraud.online_countries == {840} and kernel.fraud.decline_countries == {408}
    assert kernel.fraud.blocked_prefixes == ("412345",)
    params = kernel.aids[0]
    assert (params.floor_limit, params.random_selection_threshold) == (3000, 1000)
    assert params.default_tdol == bytes.fromhex("9F0206") and not params.partial_selection
    assert kernel.aid_params(bytes.fromhex("A000000003101001")) is None  # exact match only
    assert config.reader.name == "vpcd"
    assert config.pin_pad.shuffle
    assert config.dukpt is not None and config.dukpt.initial_key_file == tmp_path / "ik.toml"
    initial = load_initial_key(config.dukpt.initial_key_file)
    assert (initial.key, initial.key_id, initial.key_type) == (bytes([0x11]) * 32, bytes(range(1, 9)),
                                                              KeyType.AES256)
    host = config.host
    assert host is not None
    assert (host.address, host.port, host.server_name) == ("acquirer.example", 8583, "localhost")
    assert (host.ca_file, host.cert_file, host.key_file) == (pki.host_ca_cert, pki.terminal_cert,
                                                             pki.terminal_key)
    assert (host.timeout, host.max_frame, host.acquirer_id) == (2.5, 4096, "00012345678")
    assert config.state.folder == tmp_path / "state"


def test_sim_prefix_names_a_file_of_the_sim_package() -> None:
    document = minimal()
    document["ca_keys"] = {"files": ["sim:card/ca_keys.toml"]}
    assert dict(parse(document).kernel.ca_keys) == load_capks(SIM_CA_KEYS.read_text())


def test_same_ca_key_in_two_files_is_refused() -> None:
    document = minimal()
    document["ca_keys"] = {"files": ["sim", "sim:card/ca_keys.toml"]}
    error = error_of(document)
    assert error.key == "ca_keys.files[2]" and "earlier file" in error.reason


def test_scheme_test_names_the_packaged_scheme_test_keys(tmp_path: Path) -> None:
    document = minimal()
    document["ca_keys"] = {"files": ["scheme-test"]}
    (tmp_path / "scheme-test").write_text("not a key table")  # the name is not a file name
    keys = dict(parse(document, tmp_path).kernel.ca_keys)
    assert keys == load_capks(SCHEME_TEST_CA_KEYS.read_text())
    assert {rid.hex().upper() for rid, _ in keys} == {"A000000003", "A000000004"}


def test_scheme_test_keys_sit_beside_the_simulator_keys() -> None:
    document = minimal()
    document["ca_keys"] = {"files": ["sim", "scheme-test"]}
    sim, scheme = load_capks(SIM_CA_KEYS.read_text()), load_capks(SCHEME_TEST_CA_KEYS.read_text())
    assert dict(parse(document).kernel.ca_keys) == sim | scheme
    assert len(sim | scheme) == len(sim) + len(scheme)


def test_scheme_test_named_twice_is_refused() -> None:
    document = minimal()
    document["ca_keys"] = {"files": ["scheme-test", "scheme-test"]}
    error = error_of(document)
    assert error.key == "ca_keys.files[2]" and "earlier file" in error.reason


# --- each class of error --------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(section: str, key: str, value: Any) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        table = document[section][0] if section == "aid" else document.setdefault(section, {})
        table[key] = value
    return mutate


def _delete(section: str, key: str) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        table = document[section][0] if section == "aid" else document[section]
        del table[key]
    return mutate


def _add_aid(document: dict[str, Any]) -> None:
    document["aid"].append(copy.deepcopy(document["aid"][0]))


def _aid_as_single_table(document: dict[str, Any]) -> None:
    document["aid"] = document["aid"][0]


CASES: list[tuple[str, Mutation, str, str]] = [
    ("unknown section", lambda d: d.update(terminl={}), "terminl", "did you mean [terminal]"),
    ("unknown key", _set("aid", "tac_onlin", "DC4004F800"), "aid[1].tac_onlin",
     "did you mean 'tac_online'"),
    ("unknown terminal key", _set("terminal", "pos_entry_mode", 5), "terminal.pos_entry_mode",
     "unknown key"),
    ("bad hex", _set("aid", "tac_online", "DC4004F8ZZ"), "aid[1].tac_online", "hex digits"),
    ("odd hex", _set("terminal", "capabilities", "E0F8C"), "terminal.capabilities", "hex digits"),
    ("wrong length", _set("aid", "tac_online", "DC4004F8"), "aid[1].tac_online", "5 bytes"),
    ("wrong capabilities length", _set("terminal", "capabilities", "E0F8"), "terminal.capabilities",
     "3 bytes"),
    ("short AID", _set("aid", "aid", "A000000003"[:8]), "aid[1].aid", "5 bytes"),
    ("hex as integer", _set("aid", "tac_online", 1234567890), "aid[1].tac_online", "not an integer"),
    ("float money", _set("aid", "floor_limit", 10.5), "aid[1].floor_limit", "minor units"),
    ("float money, whole", _set("fraud", "online_above", 100.0), "fraud.online_above", "minor units"),
    ("bool where int", _set("terminal", "country", True), "terminal.country", "integer, not true/false"),
    ("string where int", _set("terminal", "currency", "978"), "terminal.currency", "integer, not a string"),
    ("negative", _set("aid", "floor_limit", -1), "aid[1].floor_limit", "from 0"),
    ("negative threshold", _set("aid", "random_selection_threshold", -5),
     "aid[1].random_selection_threshold", "from 0"),
    ("too large", _set("aid", "floor_limit", 10**12), "aid[1].floor_limit", "999999999999"),
    ("percent", _set("aid", "random_target_percent", 100), "aid[1].random_target_percent", "from 0 to 99"),
    ("exponent", _set("terminal", "currency_exponent", 4), "terminal.currency_exponent", "from 0 to 3"),
    ("duplicate AID", _add_aid, "aid[2].aid", "aid[1]"),
    ("aid not an array", _aid_as_single_table, "aid", "[[aid]]"),
    ("no aid", lambda d: d.update(aid=[]), "aid", "no [[aid]]"),
    ("no terminal", lambda d: d.pop("terminal"), "terminal", "missing section"),
    ("missing key", _delete("aid", "tac_default"), "aid[1].tac_default", "missing"),
    ("missing terminal id", _delete("terminal", "terminal_id"), "terminal.terminal_id", "missing"),
    ("terminal type", _set("terminal", "type", "27"), "terminal.type", "Annex A1"),
    ("terminal type as integer", _set("terminal", "type", 22), "terminal.type", "not an integer"),
    ("terminal id length", _set("terminal", "terminal_id", "T1"), "terminal.terminal_id", "8 characters"),
    ("merchant id not ASCII", _set("terminal", "merchant_id", "MERCHANT000004é"), "terminal.merchant_id",
     "ASCII"),
    ("bool as string", _set("terminal", "pin_pad", "yes"), "terminal.pin_pad", "true or false"),
    ("version length", _set("aid", "application_versions", ["96"]), "aid[1].application_versions[1]",
     "2 bytes"),
    ("no version", _set("aid", "application_versions", []), "aid[1].application_versions", "at least 1"),
    ("bad DOL", _set("aid", "default_ddol", "9F37"), "aid[1].default_ddol", "data object list"),
    ("target above max", _set("aid", "random_target_percent", 30), "aid[1].random_target_percent",
     "exceeds random_max_target_percent"),
    ("threshold above floor", _set("aid", "random_selection_threshold", 1001),
     "aid[1].random_selection_threshold", "exceeds floor_limit"),
    ("preferred AID not configured", _set("terminal", "preferred_aids", ["A0000000041010"]),
     "terminal.preferred_aids[1]", "none of the [[aid]]"),
    ("missing ca key file", _set("ca_keys", "files", ["nowhere.toml"]), "ca_keys.files[1]",
     "cannot read"),
    ("ca key folder", _set("ca_keys", "files", ["."]), "ca_keys.files[1]", "cannot read"),
    ("ca files not a list", _set("ca_keys", "files", "sim"), "ca_keys.files", "array"),
    ("revoked serial", lambda d: d.update(revoked=[{"rid": "A000000003", "index": "F0", "serial": "0A"}]),
     "revoked[1].serial", "3 bytes"),
    ("exception token", lambda d: d.update(exception=[{"pan_sha256": "00" * 31}]),
     "exception[1].pan_sha256", "32 bytes"),
    ("exception psn", lambda d: d.update(exception=[{"pan_sha256": "00" * 32, "psn": 100}]),
     "exception[1].psn", "from 0 to 99"),
    ("blocked prefix", _set("fraud", "blocked_prefixes", ["4x"]), "fraud.blocked_prefixes[1]",
     "decimal digits"),
    ("country", _set("fraud", "decline_countries", [0]), "fraud.decline_countries[1]", "from 1 to 999"),
    ("reader name", _set("reader", "name", " "), "reader.name", "blank"),
    ("fixed PIN pad key file", _set("pin_pad", "key_file", "sim:host/pin_pad_test_key.toml"),
     "pin_pad.key_file", "[dukpt] initial_key_file"),
    ("pin pad section", lambda d: d.update(pin_pad=[]), "pin_pad", "must be a table"),
    ("missing initial key file", _set("dukpt", "initial_key_file", "absent.toml"),
     "dukpt.initial_key_file", "cannot read"),
    ("dukpt without file", lambda d: d.update(dukpt={}), "dukpt.initial_key_file", "missing"),
    ("host without dukpt", lambda d: (d.pop("dukpt"), d.update(host=_host())), "dukpt",
     "missing section [dukpt]"),
    ("host port", lambda d: d.update(host=_host(port=0)), "host.port", "from 1 to 65535"),
    ("host port as string", lambda d: d.update(host=_host(port="8583")), "host.port", "not a string"),
    ("host address", lambda d: d.update(host=_host(address="a host")), "host.address", "without spaces"),
    ("host timeout", lambda d: d.update(host=_host(timeout=0)), "host.timeout", "more than 0"),
    ("host timeout nan", lambda d: d.update(host=_host(timeout=float("nan"))), "host.timeout", "more than 0"),
    ("host timeout bool", lambda d: d.update(host=_host(timeout=True)), "host.timeout", "seconds"),
    ("host frame", lambda d: d.update(host=_host(max_frame=100)), "host.max_frame", "from 1024 to 65535"),
    ("acquirer id", lambda d: d.update(host=_host(acquirer_id="12A")), "host.acquirer_id", "decimal digits"),
    ("acquirer id length", lambda d: d.update(host=_host(acquirer_id="1" * 12)), "host.acquirer_id",
     "1 to 11"),
    ("missing acquirer id", lambda d: d.update(host=_host(acquirer_id=None)), "host.acquirer_id", "missing"),
    ("missing CA file", lambda d: d.update(host=_host(ca_file="absent.pem")), "host.ca_file", "cannot read"),
    ("CA file not a certificate", lambda d: d.update(host=_host(ca_file="ik.toml")), "host.ca_file",
     "no usable CA certificate"),
    ("certificate of another key", lambda d: d.update(host=_host(key_file="pki/test-host-key.pem")),
     "host.cert_file", "no usable certificate and key"),
    ("unknown host key", lambda d: d.update(host=_host(tls="1.3")), "host.tls", "unknown key"),
    ("state folder", _set("state", "folder", ""), "state.folder", "file name"),
    ("state folder in sim", _set("state", "folder", "sim:state"), "state.folder", "not of the sim package"),
    ("modem without port", lambda d: d.update(modem=_modem(port=None)), "modem.port", "missing"),
    ("modem port empty", lambda d: d.update(modem=_modem(port=" ")), "modem.port", "file name"),
    ("modem dialect", lambda d: d.update(modem=_modem(dialect="huawei")), "modem.dialect",
     "'quectel', 'simcom'"),
    ("modem baudrate", lambda d: d.update(modem=_modem(baudrate=115201)), "modem.baudrate", "one of"),
    ("modem baudrate as string", lambda d: d.update(modem=_modem(baudrate="115200")), "modem.baudrate",
     "not a string"),
    ("SIM PIN short", lambda d: d.update(modem=_modem(sim_pin="123")), "modem.sim_pin", "4 to 8 digits"),
    ("SIM PIN letters", lambda d: d.update(modem=_modem(sim_pin="12a4")), "modem.sim_pin", "4 to 8 digits"),
    ("SIM PIN as integer", lambda d: d.update(modem=_modem(sim_pin=1234)), "modem.sim_pin", "an integer"),
    ("no APN", lambda d: d.update(modem=_modem(apn=None)), "modem.apn", "missing"),
    ("empty APN", lambda d: d.update(modem=_modem(apn="")), "modem.apn", "not be empty"),
    ("APN with a quote", lambda d: d.update(modem=_modem(apn='inter"net')), "modem.apn", "without quotes"),
    ("APN user with a backslash", lambda d: d.update(modem=_modem(user="a\\b")), "modem.user",
     "backslashes"),
    ("APN password too long", lambda d: d.update(modem=_modem(password="p" * 101)), "modem.password",
     "at most 100"),
    ("registration timeout", lambda d: d.update(modem=_modem(registration_timeout=0)),
     "modem.registration_timeout", "more than 0"),
    ("registration timeout inf", lambda d: d.update(modem=_modem(registration_timeout=float("inf"))),
     "modem.registration_timeout", "at most 600"),
    ("unknown modem key", lambda d: d.update(modem=_modem(speed=9600)), "modem.speed", "unknown key"),
    ("cellular without modem", lambda d: d.update(links={"order": ["network", "cellular"]}),
     "links.order[2]", "needs a [modem]"),
    ("unknown link", lambda d: d.update(modem=_modem(), links={"order": ["wifi"]}), "links.order[1]",
     "'network', 'cellular'"),
    ("link twice", lambda d: d.update(modem=_modem(), links={"order": ["cellular", "cellular"]}),
     "links.order[2]", "already in the list"),
    ("no link", lambda d: d.update(links={"order": []}), "links.order", "at least 1"),
    ("links order not an array", lambda d: d.update(links={"order": "network"}), "links.order", "array"),
]


def _modem(**changes: Any) -> dict[str, Any]:
    """A [modem] table; a change to None removes the key."""
    table: dict[str, Any] = {"port": "/dev/ttyUSB2", "dialect": "quectel", "apn": "internet.test"}
    table.update(changes)
    return {key: value for key, value in table.items() if value is not None}


def _host(**changes: Any) -> dict[str, Any]:
    """A [host] table over the test PKI that `test_each_error_names_file_key_and_reason` writes."""
    table: dict[str, Any] = {"address": "127.0.0.1", "port": 8583, "ca_file": "pki/test-host-ca-cert.pem",
                             "cert_file": "pki/test-terminal-cert.pem",
                             "key_file": "pki/test-terminal-key.pem", "acquirer_id": "1234"}
    table.update(changes)
    return {key: value for key, value in table.items() if value is not None}


@pytest.mark.parametrize(("mutate", "key", "reason"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_each_error_names_file_key_and_reason(mutate: Mutation, key: str, reason: str,
                                              tmp_path: Path) -> None:
    document = minimal()
    document["aid"][0] |= {"floor_limit": 1000, "random_max_target_percent": 20}
    make_test_pki(tmp_path / "pki")
    (tmp_path / "ik.toml").write_text(TERMINAL_TEST_KEYS.read_text())
    document["dukpt"] = {"initial_key_file": "ik.toml"}
    parse(document | {"host": _host()}, tmp_path)  # the document is valid before the change
    mutate(document)
    error = error_of(document, tmp_path)
    assert (error.file, error.key) == ("test.toml", key)
    assert reason in error.reason
    assert str(error) == f"test.toml: {key}: {error.reason}"


def test_float_money_is_refused_even_when_written_by_hand() -> None:
    text = to_toml(minimal()).replace('"floor_limit" = 0', '"floor_limit" = 10.50')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "hand.toml", ROOT)
    assert caught.value.key == "aid[1].floor_limit"


def test_syntax_error_names_the_line() -> None:
    text = '[terminal]\ntype = "22"\ncountry = \n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "broken.toml", ROOT)
    assert caught.value.file == "broken.toml"
    assert caught.value.key == "line 3"
    assert "not valid TOML" in caught.value.reason


def test_bad_ca_key_file_content_is_reported(tmp_path: Path) -> None:
    text = SIM_CA_KEYS.read_text()
    marker = 'checksum = "'
    at = text.index(marker) + len(marker)
    flipped = "0" if text[at] != "0" else "1"
    (tmp_path / "bad.toml").write_text(text[:at] + flipped + text[at + 1:])
    (tmp_path / "garbage.toml").write_text("capk = 3\n")
    for name, reason in (("bad.toml", "checksum"), ("garbage.toml", "capk")):
        document = minimal()
        document["ca_keys"] = {"files": [name]}
        error = error_of(document, tmp_path)
        assert error.key == "ca_keys.files[1]"
        assert name in error.reason and reason in error.reason


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "terminal.toml"
    document = minimal()
    document["aid"][0]["floor_limit"] = -1
    path.write_text(to_toml(document))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (caught.value.file, caught.value.key) == (str(path), "aid[1].floor_limit")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    assert caught.value.file == str(tmp_path / "absent.toml")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


# --- the DUKPT initial key file and the state folder ------------------------------------------

@pytest.mark.parametrize(("text", "key"), [
    ('initial_key_id = "1234567890123456"\ninitial_key = "' + "AB" * 15 + '"\n', "initial_key"),
    ('initial_key_id = "1234567890123456"\ninitial_key = "' + "AB" * 17 + '"\n', "initial_key"),
    ('initial_key_id = "1234567890123456"\ninitial_key = "' + "AB" * 15 + 'G"\n', "initial_key"),
    ('initial_key_id = "1234567890123456"\n', "initial_key"),
    ('initial_key = "' + "AB" * 16 + '"\n', "initial_key_id"),
    ('initial_key_id = "12345678"\ninitial_key = "' + "AB" * 16 + '"\n', "initial_key_id"),
    ('initial_key_id = "1234567890123456"\ninitial_key = "' + "AB" * 16 + '"\nkcv = "000000"\n', "kcv"),
    ('initial_key_id = "1234567890123456"\ninitial_key = "' + "AB" * 16 + '\n', "line 2"),
])
def test_initial_key_errors_never_show_the_key(text: str, key: str, tmp_path: Path) -> None:
    path = tmp_path / "ik.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_initial_key(path)
    assert (caught.value.file, caught.value.key) == (str(path), key)
    assert "ABAB" not in str(caught.value)


def test_initial_key_error_in_config_never_shows_the_key(tmp_path: Path) -> None:
    (tmp_path / "ik.toml").write_text('initial_key_id = "1234567890123456"\n'
                                      'initial_key = "' + "CD" * 15 + '"\n')
    document = minimal()
    document["dukpt"] = {"initial_key_file": "ik.toml"}
    error = error_of(document, tmp_path)
    assert error.key == "dukpt.initial_key_file" and "16 bytes" in error.reason
    assert "CDCD" not in str(error)


def test_initial_key_repr_hides_the_key() -> None:
    initial = load_initial_key(TERMINAL_TEST_KEYS)
    assert initial.key.hex().upper() not in repr(initial).upper() and "hidden" in repr(initial)


def test_state_folder_default_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_folder() == tmp_path / "tpe"
    assert parse(minimal()).state.folder == tmp_path / "tpe"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # ignored, as the specification says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_folder() == tmp_path / "home" / ".local" / "state" / "tpe"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_folder() == tmp_path / "home" / ".local" / "state" / "tpe"


def test_server_name_defaults_to_the_address(tmp_path: Path) -> None:
    make_test_pki(tmp_path / "pki")
    document = minimal() | {"dukpt": {"initial_key_file": "sim:host/terminal_test_keys.toml"},
                            "host": _host(address="localhost")}
    host = parse(document, tmp_path).host
    assert host is not None and host.server_name == "localhost" and host.timeout == 30.0


# --- the cellular module and the links -------------------------------------------------------

def test_without_modem_the_only_link_is_the_network() -> None:
    config = parse(minimal())
    assert config.modem is None and config.links.order == ("network",)
    assert load_config().modem is None


def test_modem_section_reaches_its_values_and_adds_the_cellular_link() -> None:
    document = minimal() | {"modem": _modem(dialect="simcom", baudrate=921600, sim_pin="7391",
                                            user="web", password="s3cret-pw", registration_timeout=45)}
    config = parse(document)
    modem = config.modem
    assert modem is not None
    assert (modem.port, modem.dialect, modem.baudrate, modem.apn) == ("/dev/ttyUSB2", "simcom", 921600,
                                                                      "internet.test")
    assert (modem.sim_pin, modem.user, modem.password) == ("7391", "web", "s3cret-pw")
    assert modem.registration_timeout == 45.0
    assert config.links.order == ("network", "cellular")
    shown = repr(config)
    assert "s3cret-pw" not in shown and "7391" not in shown


def test_modem_defaults() -> None:
    modem = parse(minimal() | {"modem": _modem()}).modem
    assert modem is not None
    assert (modem.baudrate, modem.sim_pin, modem.user, modem.password) == (115200, None, "", "")
    assert modem.registration_timeout == 180.0


@pytest.mark.parametrize("order", [["cellular"], ["cellular", "network"], ["network"]])
def test_links_order_is_kept(order: list[str]) -> None:
    config = parse(minimal() | {"modem": _modem(), "links": {"order": order}})
    assert config.links.order == tuple(order)


@pytest.mark.parametrize("pin", ["12a4", "123", "123456789"])
def test_a_bad_sim_pin_is_never_quoted_back(pin: str) -> None:
    error = error_of(minimal() | {"modem": _modem(sim_pin=pin)})
    assert error.key == "modem.sim_pin" and pin not in str(error)


def test_a_bad_apn_password_is_never_quoted_back() -> None:
    error = error_of(minimal() | {"modem": _modem(password='pass"word')})
    assert error.key == "modem.password" and "pass" not in error.reason


# --- fuzzing: any TOML document loads or raises ConfigError ---------------------------------

_SECTIONS = ["terminal", "aid", "ca_keys", "revoked", "exception", "fraud", "reader", "pin_pad", "dukpt",
             "host", "state"]
_KEYS = sorted({key for table in (minimal()["terminal"], minimal()["aid"][0]) for key in table} | {
    "files", "rid", "index", "serial", "pan_sha256", "psn", "online_above", "blocked_prefixes",
    "name", "key_file", "shuffle", "preferred_aids", "default_ddol", "random_target_percent",
    "initial_key_file", "address", "port", "ca_file", "cert_file", "timeout", "acquirer_id", "folder"})
_names = st.one_of(st.sampled_from(_SECTIONS + _KEYS), st.text(max_size=8))
_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-3, max_value=10**13),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=17).map(lambda data: data.hex().upper()),
    st.sampled_from(["sim", "22", "A0000000031010", "sim:host/terminal_test_keys.toml", ".", "",
                     "sim:", "sim:card", "9F3704", "0096", "scheme-test"]),
    st.dates(),
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(_names, inner, max_size=5), max_leaves=12)
_DEFAULT_DOCUMENT = tomllib.loads(DEFAULT_FILE.read_text())


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [value, *(leaf for item in value for leaf in _leaves(item))]
    return [value]


_DEFAULT_VALUES = _leaves(_DEFAULT_DOCUMENT)  # right for some key, often wrong for the one drawn


def _check(document: dict[str, Any], base: Path) -> None:
    text = to_toml(document)
    tomllib.loads(text)  # the writer made valid TOML
    try:
        config = parse_config(text, "fuzz.toml", base)
    except ConfigError as exc:
        assert exc.file == "fuzz.toml" and exc.key and exc.reason
    else:
        assert isinstance(config, AppConfig) and config.kernel.aids


@pytest.fixture(scope="module")
def empty_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-base")


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_names, _values, max_size=6))
def test_random_documents_load_or_raise_config_error(empty_folder: Path,
                                                     document: dict[str, Any]) -> None:
    _check(document, empty_folder)


@st.composite
def _mutated_default(draw: st.DrawFn) -> dict[str, Any]:
    """The default document with a few keys replaced, removed or added: reaches deep checks."""
    document = copy.deepcopy(_DEFAULT_DOCUMENT)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        section = draw(st.sampled_from(sorted(document)))
        table = document[section]
        if isinstance(table, list) and table:
            table = table[draw(st.integers(min_value=0, max_value=len(table) - 1))]
        if not isinstance(table, dict) or draw(st.integers(min_value=0, max_value=9)) == 0:
            document[section] = draw(_values)
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "add" or not table:
            table[draw(_names)] = draw(_values)
            continue
        key = draw(st.sampled_from(sorted(table)))
        if action == "delete":
            del table[key]
        else:
            table[key] = draw(st.one_of(_values, st.sampled_from(_DEFAULT_VALUES)))
    return document


@settings(max_examples=300, deadline=None)
@given(_mutated_default())
def test_mutated_default_loads_or_raises_config_error(empty_folder: Path,
                                                      document: dict[str, Any]) -> None:
    _check(document, empty_folder)
