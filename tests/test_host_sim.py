"""The host simulator as issuer: real kernel sales on simulated cards authorized over real TLS on
loopback, and the account rules (sim/host/accounts.py) on requests from real kernel runs.

TEST KEYS: the terminal's DUKPT initial key and the host's BDK (sim/host/*.toml), the cards'
issuer master keys (sim/card/profiles).

Response codes chosen by the host (docs/host-protocol.md, ISO 8583:1987): 14 unknown card,
30 format error, 05 ARQC wrong, 13 field 4 is not the signed amount, 62 blocked, 54 expired,
57 other currency, 55 wrong PIN, 75 PIN tries exceeded, 61 over the transaction limit,
51 insufficient funds, 94 STAN reused, 63 MAC wrong.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import tomllib
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from test_host_sim_support import (
    AMOUNT,
    CARD_PIN,
    PROFILES,
    Terminal,
    kernel_request,
    live_sale,
    now,
)

from emv import tlv
from emv.requests import OnlineRequest
from emv.sensitive import Sensitive, pan_token
from firmware.dukpt import DukptError, derive_initial_key
from firmware.messages import Fields
from sim.card.issuer import IssuerScripts
from sim.card.profile import load_profile
from sim.host.accounts import AccountRules
from sim.host.keys import KeyFileError, load_host_keys
from sim.host.server import HostError, HostSimulator
from sim.host.test_pki import make_test_pki

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # cryptography < 43
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
OPENING = 50_000  # AccountRules' default opening balance: 500.00 EUR
WRONG_PIN = "9999"


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("host-pki")
    make_test_pki(folder)
    return folder


def with_host(pki_dir: Path, test: Callable[[HostSimulator, Terminal], Awaitable[Any]],
              **options: Any) -> Any:
    async def main() -> Any:
        async with asyncio.timeout(60), HostSimulator(pki_dir, **options) as host:
            return await test(host, Terminal(host.pki))
    return asyncio.run(main())


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def chip(fields: Fields) -> dict[int, bytes]:
    return dict(tlv.primitives(tlv.decode(bytes.fromhex(fields["55"]))))


def with_tag(request: OnlineRequest, tag: int, value: bytes) -> OnlineRequest:
    items = tlv.primitives(tlv.decode(request.chip_data))
    return dataclasses.replace(request, chip_data=b"".join(tlv.encode(t, value if t == tag else v)
                                                           for t, v in items))


async def authorize(host: HostSimulator, terminal: Terminal, request: OnlineRequest, *,
                    pin: str | None = CARD_PIN, edit: Callable[[Fields], None] | None = None) -> Fields:
    fields, _, keys = terminal.sale(request, pin=pin)
    if edit is not None:
        edit(fields)
    return await terminal.exchange(host.port, terminal.sign(fields, keys), keys)


# --- Shared TEST keys -----------------------------------------------------------------------

def test_the_terminal_initial_key_is_derived_from_the_host_bdk() -> None:
    host = tomllib.loads((ROOT / "sim/host/test_keys.toml").read_text())
    terminal = tomllib.loads((ROOT / "sim/host/terminal_test_keys.toml").read_text())
    initial_key_id = bytes.fromhex(terminal["initial_key_id"])
    assert initial_key_id[:4] == bytes.fromhex(host["bdk_id"])
    derived = derive_initial_key(bytes.fromhex(host["bdk"]), initial_key_id)
    assert derived == bytes.fromhex(terminal["initial_key"])
    # ANSI X9.24-3-2017 Supplement: the initial key of this BDK and initial key ID.
    assert derived == bytes.fromhex("1273671EA26AC29AFA4D1084127652A1")


@pytest.mark.parametrize("name", ["test_keys.toml", "terminal_test_keys.toml"])
def test_key_files_say_they_hold_test_keys(name: str) -> None:
    assert "TEST KEYS" in (ROOT / "sim/host" / name).read_text().splitlines()[0]


# --- Real kernel sales ----------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_a_real_sale_is_approved_and_the_card_accepts_the_arpc(pki_dir: Path, profile: str) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        sale, link = await live_sale(terminal, host.port, profile)
        o = sale.outcome
        assert o.first_cryptogram_type == "ARQC"
        assert o.kind.value == "approved_online" and o.cryptogram_type == "TC"
        assert o.response_code == b"00"
        assert o.issuer_authentication in ("passed", None)  # None: the ARPC went in CDOL2 (M/Chip)
        assert o.aid is not None
        assert sale.card.state.apps[o.aid].counters.issuer_auth_failed_last_online is False
        answer = link.answers[0]
        assert answer["39"] == "00" and 0x91 in chip(answer)
        assert o.authorization_code == answer["38"].encode() and o.host_reference == answer["37"]
        [entry] = host.ledger.entries()
        pan = load_profile(profile).applications[0].pan
        assert entry.approved and entry.amount == AMOUNT and entry.stan == link.sent[0]["11"]
        assert entry.pan_token == pan_token(pan) and pan not in repr(entry)
        assert entry.pan_masked == pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
        assert entry.rrn == answer["37"] and entry.approval_code == answer["38"]
        assert host.ledger.balance(pan_token(pan)) == OPENING - AMOUNT

    with_host(pki_dir, test)


def test_the_online_pin_is_really_checked(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        sale, link = await live_sale(terminal, host.port, "visa_cda_online", pin=WRONG_PIN)
        assert "52" in link.sent[0]
        assert sale.outcome.kind.value == "declined_online" and sale.outcome.response_code == b"55"
        [entry] = host.ledger.entries()
        assert entry.response_code == "55" and not entry.approved
        pan = load_profile("visa_cda_online").applications[0].pan
        assert host.ledger.balance(pan_token(pan)) == OPENING

    with_host(pki_dir, test)


def _tdes(key: bytes, data: bytes) -> bytes:
    full = key + key[:8] if len(key) == 16 else key
    encryptor = Cipher(TripleDES(full), modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def test_a_decline_carries_an_arpc_over_its_own_response_code(pki_dir: Path) -> None:
    """EMV 4.4 Book 2, A1.4.1 (ICC master key, option A) and 8.2.1 (ARPC method 1, VIS CVN 10),
    written out with plain TDES: the '91' of a '55' decline is ARPC(ARQC xor '55') || '55'."""
    app = load_profile("sda_only").applications[0]

    async def test(host: HostSimulator, terminal: Terminal) -> Fields:
        return await authorize(host, terminal, kernel_request("sda_only"), pin=WRONG_PIN)

    answer = with_host(pki_dir, test)
    assert answer["39"] == "55" and "38" not in answer
    z = bytes.fromhex((app.pan + app.psn)[-16:])
    icc_mk = _tdes(app.keys.ac, z) + _tdes(app.keys.ac, bytes(b ^ 0xFF for b in z))
    icc_mk = bytes(b & 0xFE | (bin(b >> 1).count("1") + 1) % 2 for b in icc_mk)
    arqc = dict(tlv.primitives(tlv.decode(kernel_request("sda_only").chip_data)))[0x9F26]
    arpc = _tdes(icc_mk, bytes(a ^ b for a, b in zip(arqc, b"55" + bytes(6), strict=True)))
    assert chip(answer)[0x91] == arpc + b"55"


@pytest.mark.parametrize("profile", ["visa_cda_online", "mastercard_cda"])
def test_issuer_scripts_reach_the_card(pki_dir: Path, profile: str) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        host.scripts = IssuerScripts(put_data={0x9F14: b"\x07"})
        sale, link = await live_sale(terminal, host.port, profile)
        o = sale.outcome
        assert o.kind.value == "approved_online" and o.aid is not None
        assert sale.card.state.apps[o.aid].risk.lower_consecutive_offline_limit == 7
        assert o.script_results == bytes.fromhex("2000000001")  # Book 3, Annex A '9F5B'
        assert [obj.tag for obj in tlv.decode(bytes.fromhex(link.answers[0]["55"]))] == [0x91, 0x72]

    with_host(pki_dir, test)


def test_a_script_in_template_71_runs_before_the_second_generate_ac(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        host.scripts = IssuerScripts(put_data={0x9F14: b"\x04"}, template=0x71)
        sale, link = await live_sale(terminal, host.port, "visa_cda_online")
        assert [obj.tag for obj in tlv.decode(bytes.fromhex(link.answers[0]["55"]))] == [0x91, 0x71]
        assert sale.commands.index("PUT DATA") < len(sale.commands) - 1
        assert sale.commands[-1] == "GENERATE AC"
        o = sale.outcome
        assert o.aid is not None and sale.card.state.apps[o.aid].risk.lower_consecutive_offline_limit == 4

    with_host(pki_dir, test)


def test_no_script_goes_with_a_decline(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> Fields:
        host.scripts = IssuerScripts(put_data={0x9F14: b"\x07"})
        return await authorize(host, terminal, kernel_request("visa_cda_online"), pin=WRONG_PIN)

    answer = with_host(pki_dir, test)
    assert answer["39"] == "55" and list(chip(answer)) == [0x91]


# --- PIN tries ------------------------------------------------------------------------------

def test_wrong_pins_count_up_to_the_limit_then_75_even_with_the_right_pin(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> list[str]:
        request = kernel_request("visa_cda_online")
        codes = []
        for pin in (WRONG_PIN, WRONG_PIN, WRONG_PIN, CARD_PIN):
            codes.append((await authorize(host, terminal, request, pin=pin))["39"])
        return codes

    assert with_host(pki_dir, test) == ["55", "55", "75", "75"]


def test_the_right_pin_resets_the_wrong_pin_count(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> list[str]:
        request = kernel_request("visa_cda_online")
        return [(await authorize(host, terminal, request, pin=pin))["39"]
                for pin in (WRONG_PIN, WRONG_PIN, CARD_PIN, WRONG_PIN, WRONG_PIN)]

    assert with_host(pki_dir, test) == ["55", "55", "00", "55", "55"]


def test_a_pin_block_under_another_key_is_a_wrong_pin(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> str:
        request = kernel_request("visa_cda_online")
        other, _ = terminal.with_pin(request, CARD_PIN)  # enciphered under another KSN's PIN key
        fields, _, keys = terminal.sale(request, pin=CARD_PIN)
        fields["52"] = other.pin_block.reveal().hex().upper() if other.pin_block else ""
        return (await terminal.exchange(host.port, terminal.sign(fields, keys), keys))["39"]

    assert with_host(pki_dir, test) == "55"


def test_a_card_without_pin_block_is_not_asked_for_one(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> Fields:
        return await authorize(host, terminal, kernel_request("sda_only"), pin=None)

    answer = with_host(pki_dir, test)
    assert answer["39"] == "00"


# --- ARQC -----------------------------------------------------------------------------------

@pytest.mark.parametrize("tag", [0x9F26, 0x9F02, 0x9F37, 0x9F36, 0x95])
def test_data_changed_under_the_arqc_is_declined_without_arpc(pki_dir: Path, tag: int) -> None:
    request = kernel_request("visa_cda_online")
    value = bytearray(dict(tlv.primitives(tlv.decode(request.chip_data)))[tag])
    value[-1] ^= 0x01
    changed = with_tag(request, tag, bytes(value))
    if tag == 0x9F02:  # field 4 follows the amount, so that only the ARQC can catch it
        changed = dataclasses.replace(changed, amount=int(bytes(value).hex()))

    async def test(host: HostSimulator, terminal: Terminal) -> tuple[Fields, list[Any]]:
        return await authorize(host, terminal, changed), host.ledger.entries()

    answer, entries = with_host(pki_dir, test)
    assert answer["39"] == "05" and "55" not in answer and "38" not in answer
    assert [entry.response_code for entry in entries] == ["05"]


def test_field_55_missing_data_the_arqc_covers_is_a_format_error(pki_dir: Path) -> None:
    request = kernel_request("visa_cda_online")
    items = [(t, v) for t, v in tlv.primitives(tlv.decode(request.chip_data)) if t != 0x9F37]
    short = dataclasses.replace(request, chip_data=b"".join(tlv.encode(t, v) for t, v in items))

    async def test(host: HostSimulator, terminal: Terminal) -> Fields:
        return await authorize(host, terminal, short)

    assert with_host(pki_dir, test)["39"] == "30"


def test_an_unknown_card_is_14(pki_dir: Path) -> None:
    request = dataclasses.replace(kernel_request("visa_cda_online"), pan=Sensitive("4000000000000002", "PAN"),
                                  track2=None)

    async def test(host: HostSimulator, terminal: Terminal) -> Fields:
        return await authorize(host, terminal, request)

    answer = with_host(pki_dir, test)
    assert answer["39"] == "14" and "55" not in answer


# --- Account rules --------------------------------------------------------------------------

def test_insufficient_funds(pki_dir: Path) -> None:
    pan = load_profile("visa_cda_online").applications[0].pan

    async def test(host: HostSimulator, terminal: Terminal) -> tuple[list[str], int]:
        request = kernel_request("visa_cda_online")
        codes = [(await authorize(host, terminal, request))["39"] for _ in range(3)]
        return codes, host.ledger.balance(pan_token(pan))

    rules = AccountRules(balances={"visa_cda_online": 2 * AMOUNT + 1})
    codes, balance = with_host(pki_dir, test, rules=rules)
    assert codes == ["00", "00", "51"]
    assert balance == 1


def test_per_transaction_limit(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> str:
        return (await authorize(host, terminal, kernel_request("visa_cda_online")))["39"]

    assert with_host(pki_dir, test, rules=AccountRules(transaction_limit=AMOUNT - 1)) == "61"
    assert with_host(pki_dir, test, rules=AccountRules(transaction_limit=AMOUNT)) == "00"


def test_blocked_card(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> list[str]:
        request = kernel_request("visa_cda_online")
        first = (await authorize(host, terminal, request))["39"]
        host.accounts.block("visa_cda_online", False)
        return [first, (await authorize(host, terminal, request))["39"]]

    rules = AccountRules(blocked=frozenset({"visa_cda_online"}))
    assert with_host(pki_dir, test, rules=rules) == ["62", "00"]


def test_expired_card(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> list[str]:
        request = kernel_request("visa_cda_online")
        this_month = now().strftime("%y%m")
        expired = dataclasses.replace(request, expiry="2012")
        current = dataclasses.replace(request, expiry=this_month)
        return [(await authorize(host, terminal, r))["39"] for r in (expired, current)]

    assert with_host(pki_dir, test) == ["54", "00"]


def test_field_4_must_be_the_amount_the_card_signed(pki_dir: Path) -> None:
    request = dataclasses.replace(kernel_request("visa_cda_online"), amount=AMOUNT - 1)

    async def test(host: HostSimulator, terminal: Terminal) -> Fields:
        return await authorize(host, terminal, request)

    answer = with_host(pki_dir, test)
    assert answer["39"] == "13" and 0x91 in chip(answer)  # the ARQC verified: an authentic decline


def test_other_currency_is_not_permitted(pki_dir: Path) -> None:
    request = dataclasses.replace(kernel_request("visa_cda_online"), currency=840)

    async def test(host: HostSimulator, terminal: Terminal) -> str:
        return (await authorize(host, terminal, request))["39"]

    assert with_host(pki_dir, test) == "57"


def test_a_refund_credits_the_card(pki_dir: Path) -> None:
    pan = load_profile("sda_only").applications[0].pan

    async def test(host: HostSimulator, terminal: Terminal) -> tuple[str, int]:
        refund = dataclasses.replace(kernel_request("sda_only"), transaction_type=0x20)
        answer = await authorize(host, terminal, refund, pin=None)
        return answer["39"], host.ledger.balance(pan_token(pan))

    assert with_host(pki_dir, test, rules=AccountRules(balances={"sda_only": 10})) == ("00", 10 + AMOUNT)


# --- Duplicates -----------------------------------------------------------------------------

@pytest.mark.parametrize("later", [0, 60], ids=["same-field-7", "another-field-7"])
def test_a_reused_stan_is_94_and_a_retransmission_gets_the_same_answer(pki_dir: Path, later: int) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> tuple[list[Fields], list[Any]]:
        at = now()
        _, first_data, keys = terminal.sale(kernel_request("visa_cda_online"), stan=41, at=at)
        # another card's transaction under the same STAN
        _, again_data, keys_again = terminal.sale(kernel_request("sda_only"), stan=41,
                                                  at=at + datetime.timedelta(seconds=later))
        answers = [await terminal.exchange(host.port, first_data, keys),
                   await terminal.exchange(host.port, again_data, keys_again),
                   await terminal.exchange(host.port, first_data, keys)]  # the very same bytes again
        return answers, host.ledger.entries()

    answers, entries = with_host(pki_dir, test)
    assert [answer["39"] for answer in answers] == ["00", "94", "00"]
    assert "38" not in answers[1]
    assert [answers[2][key] for key in ("37", "38", "55")] == [answers[0][key] for key in ("37", "38", "55")]
    assert len(entries) == 1 and entries[0].stan == "000041"


def test_the_ledger_is_a_file_others_can_read_while_the_host_writes(pki_dir: Path, tmp_path: Path) -> None:
    from sim.host.ledger import Ledger

    path = tmp_path / "ledger.sqlite3"

    async def test(host: HostSimulator, terminal: Terminal) -> None:
        await authorize(host, terminal, kernel_request("sda_only"), pin=None)
        with Ledger(path) as reader:
            [entry] = reader.entries()
            assert entry.approved and reader.balance(entry.pan_token or "") == OPENING - AMOUNT
            assert reader._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    with_host(pki_dir, test, ledger=path)
    with Ledger(path) as again:
        assert len(again.entries()) == 1


# --- What the host says about itself --------------------------------------------------------

def test_logs_hold_no_card_data(pki_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    secrets: list[str] = []

    async def test(host: HostSimulator, terminal: Terminal) -> None:
        _, link = await live_sale(terminal, host.port, "visa_cda_online", pin=WRONG_PIN)
        fields, data, keys = terminal.sale(kernel_request("visa_cda_online"))
        secrets.extend([fields["2"], fields["35"], fields["52"]])
        await terminal.exchange(host.port, data[:-1] + bytes([data[-1] ^ 1]), keys)  # wrong MAC
        secrets.extend([link.sent[0]["2"], link.sent[0]["35"], link.sent[0]["52"]])

    with caplog.at_level(logging.DEBUG):
        with_host(pki_dir, test)
    assert "MAC does not verify" in caplog.text and "-> 55" in caplog.text
    for secret in secrets:
        assert secret not in caplog.text
    assert WRONG_PIN not in caplog.text


@pytest.mark.parametrize(("text", "reason"), [
    ('bdk_id = "12345678"', "bdk: missing"),
    ('bdk = "XYZ"\nbdk_id = "12345678"', "bdk: not hexadecimal"),
    ('bdk = "00112233"\nbdk_id = "12345678"', "bdk: 4 bytes, 16 expected"),
    ('bdk = "00112233445566778899AABBCCDDEEFF"\nbdk_id = "12345678"\nextra = 1', "extra: unknown key"),
    ("bdk = ", "not TOML"),
])
def test_a_bad_key_file_is_refused_without_showing_the_key(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(KeyFileError) as caught:
        load_host_keys(path)
    assert reason in str(caught.value) and "00112233" not in str(caught.value)


def test_the_host_keys_refuse_a_ksn_of_another_bdk() -> None:
    keys = load_host_keys()
    with pytest.raises(DukptError):
        keys.request_keys(bytes.fromhex("87654321" "90123456" "00000001"))
    assert "FEDCBA" not in repr(keys).upper()


def test_a_folder_that_is_not_a_test_pki_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a PKI")
    with pytest.raises(HostError):
        HostSimulator(tmp_path)
