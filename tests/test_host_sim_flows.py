"""The host simulator as acquirer: reversals, advices, completions, reconciliation, network
management and MAC checks, over real TLS on loopback with messages of `firmware.messages`.

TEST KEYS: sim/host/*.toml and the simulator profiles' issuer master keys.

Codes chosen: a reversal of an unknown transaction is acknowledged '00' (nothing booked), of a
transaction already reversed by another 0400 '94'; a repeat gets its first answer again; a
completion of no approved 0100 '12', a second completion '94'; reconciliation '00' / '95';
network codes other than 001 and 301 '30'; a wrong MAC '63', never processed.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from test_host_sim_support import (
    AMOUNT,
    CARD_PIN,
    TIMEOUT,
    Terminal,
    kernel_config,
    kernel_request,
    now,
)

from emv.outcome import Outcome, OutcomeKind
from emv.sensitive import pan_token
from firmware import cli, messages
from firmware.messages import Fields, MacError, NetworkCode, ReversalReason, SchemeTotals
from firmware.tls_stream import StreamClosed
from sim.card.profile import load_profile
from sim.host.ledger import Ledger, LedgerError
from sim.host.server import HostSimulator
from sim.host.test_pki import make_test_pki
from sim.inprocess import fresh_card, transact

OPENING = 50_000
VISA, MASTERCARD = bytes.fromhex("A000000003"), bytes.fromhex("A000000004")


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


async def send(host: HostSimulator, terminal: Terminal, fields: Fields) -> Fields:
    data, keys = terminal.signed(fields)
    return await terminal.exchange(host.port, data, keys)


async def sale(host: HostSimulator, terminal: Terminal, profile: str, *,
               pin: str | None = CARD_PIN) -> tuple[Fields, Fields]:
    fields, data, keys = terminal.sale(kernel_request(profile), pin=pin)
    return fields, await terminal.exchange(host.port, data, keys)


def balance(host: HostSimulator, profile: str) -> int:
    return host.ledger.balance(pan_token(load_profile(profile).applications[0].pan))


def batch(terminal: Terminal, totals: list[SchemeTotals], number: int, currency: int = 978) -> Fields:
    return messages.reconciliation(totals, acceptor=terminal.acceptor, stan=terminal.next_stan(), at=now(),
                                   batch_number=number, currency=currency)


def offline_outcome() -> Outcome:
    run = transact(fresh_card("offline_approving"), kernel_config(), 1000)
    assert run.outcome.kind is OutcomeKind.APPROVED_OFFLINE and run.outcome.cryptogram_type == "TC"
    return run.outcome


# --- Reversals ------------------------------------------------------------------------------

def test_a_reversal_and_its_repeat_reverse_once(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        original, answer = await sale(host, terminal, "visa_cda_online")
        assert answer["39"] == "00" and balance(host, "visa_cda_online") == OPENING - AMOUNT
        reversal = messages.reversal(messages.identity(original), stan=terminal.next_stan(), at=now(),
                                     reason=ReversalReason.NO_RESPONSE)
        first = await send(host, terminal, reversal)
        assert first["t"] == "0410" and first["39"] == "00" and first["90"] == reversal["90"]
        assert first["37"] == answer["37"]
        [entry] = host.ledger.entries()
        assert entry.reversed and entry.reversed_at is not None
        assert balance(host, "visa_cda_online") == OPENING
        again = await send(host, terminal, messages.repeat(reversal))
        assert again["39"] == "00" and again["11"] == reversal["11"]
        assert host.ledger.entries() == [entry]  # nothing booked, reversed_at unchanged
        other = messages.reversal(messages.identity(original), stan=terminal.next_stan(), at=now(),
                                  reason=ReversalReason.CANCELLED)
        assert (await send(host, terminal, other))["39"] == "94"
        assert host.ledger.entries() == [entry] and balance(host, "visa_cda_online") == OPENING

    with_host(pki_dir, test)


def test_a_repeat_that_arrives_first_is_a_reversal(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        original, _ = await sale(host, terminal, "sda_only", pin=None)
        reversal = messages.reversal(original, stan=terminal.next_stan(), at=now(),
                                     reason=ReversalReason.NO_RESPONSE)
        assert (await send(host, terminal, messages.repeat(reversal)))["39"] == "00"
        assert [entry.reversed for entry in host.ledger.entries()] == [True]
        assert (await send(host, terminal, reversal))["39"] == "00"  # the lost 0400 after all
        assert balance(host, "sda_only") == OPENING

    with_host(pki_dir, test)


def test_a_reversal_of_an_unknown_transaction_is_acknowledged_without_booking(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        never_sent, _, _ = terminal.sale(kernel_request("visa_cda_online"))
        reversal = messages.reversal(never_sent, stan=terminal.next_stan(), at=now(),
                                     reason=ReversalReason.NO_RESPONSE)
        answer = await send(host, terminal, reversal)
        assert answer["39"] == "00" and "37" not in answer
        assert host.ledger.entries() == []

    with_host(pki_dir, test)


def test_a_reversed_decline_gives_nothing_back(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        original, answer = await sale(host, terminal, "visa_cda_online", pin="0000")
        assert answer["39"] == "55"
        reversal = messages.reversal(original, stan=terminal.next_stan(), at=now(),
                                     reason=ReversalReason.MALFUNCTION, response=answer)
        assert (await send(host, terminal, reversal))["39"] == "00"
        assert balance(host, "visa_cda_online") == OPENING

    with_host(pki_dir, test)


# --- Advices --------------------------------------------------------------------------------

def test_an_offline_approval_is_booked_once(pki_dir: Path) -> None:
    outcome = offline_outcome()

    async def test(host: HostSimulator, terminal: Terminal) -> None:
        at = now()
        advice = messages.offline_advice(outcome, acceptor=terminal.acceptor, stan=terminal.next_stan(),
                                         at=at, transaction_time=at)
        first = await send(host, terminal, advice)
        assert first["t"] == "0230" and first["39"] == "00"
        again = await send(host, terminal, messages.repeat(advice))
        assert again["39"] == "00" and again["37"] == first["37"]
        duplicate = await send(host, terminal, advice)  # the original sent twice
        assert duplicate["39"] == "00" and duplicate["37"] == first["37"]
        [entry] = host.ledger.entries()
        assert entry.advice and entry.approved and entry.mti == "0220" and entry.amount == 1000
        assert entry.rid == VISA.hex().upper()
        assert balance(host, "offline_approving") == OPENING - 1000

    with_host(pki_dir, test)


def test_a_pre_authorization_is_completed_once(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        request, keys = terminal.with_pin(kernel_request("visa_cda_online"), CARD_PIN)
        at = now() - datetime.timedelta(minutes=5)
        authorization = messages.authorization_request(request, acceptor=terminal.acceptor,
                                                       stan=terminal.next_stan(), at=at)
        answer = await terminal.exchange(host.port, terminal.sign(authorization, keys), keys)
        assert answer["t"] == "0110" and answer["39"] == "00"
        assert balance(host, "visa_cda_online") == OPENING - AMOUNT  # held
        completion = messages.completion_advice(authorization, answer, amount=4000, stan=terminal.next_stan(),
                                                at=now())
        assert (await send(host, terminal, completion))["39"] == "00"
        assert balance(host, "visa_cda_online") == OPENING - 4000
        second = messages.completion_advice(authorization, answer, amount=5000, stan=terminal.next_stan(),
                                            at=now())
        assert (await send(host, terminal, second))["39"] == "94"
        entries = host.ledger.entries()
        assert [(e.mti, e.amount, e.completes) for e in entries] == [("0100", AMOUNT, None),
                                                                     ("0220", 4000, entries[0].id)]

    with_host(pki_dir, test)


def test_a_completion_of_an_unknown_pre_authorization_is_12(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        request, _ = terminal.with_pin(kernel_request("visa_cda_online"), None)
        authorization = messages.authorization_request(request, acceptor=terminal.acceptor, stan=7, at=now())
        fake = messages.response_to(authorization, "00", approval_code="123456")
        completion = messages.completion_advice(authorization, fake, amount=4000, stan=8, at=now())
        assert (await send(host, terminal, completion))["39"] == "12"
        assert host.ledger.entries() == []

    with_host(pki_dir, test)


# --- Reconciliation -------------------------------------------------------------------------

def test_reconciliation_in_balance_then_not(pki_dir: Path) -> None:
    outcome = offline_outcome()

    async def test(host: HostSimulator, terminal: Terminal) -> None:
        visa, _ = await sale(host, terminal, "visa_cda_online")
        await sale(host, terminal, "mastercard_cda")
        reversed_sale, _ = await sale(host, terminal, "sda_only", pin=None)
        await sale(host, terminal, "visa_cda_online", pin="0000")  # declined: not in the totals
        await send(host, terminal, messages.reversal(reversed_sale, stan=terminal.next_stan(), at=now(),
                                                     reason=ReversalReason.CANCELLED))
        at = now()
        advice = messages.offline_advice(outcome, acceptor=terminal.acceptor, stan=terminal.next_stan(),
                                         at=at, transaction_time=at)
        await send(host, terminal, advice)
        # What this terminal sent and had approved: Visa 6000 + 1000 (advice), Mastercard 6000.
        totals = [SchemeTotals(VISA, 2, AMOUNT + 1000, 0, 0), SchemeTotals(MASTERCARD, 1, AMOUNT, 0, 0)]
        answer = await send(host, terminal, batch(terminal, totals, 1))
        assert answer["t"] == "0510" and answer["39"] == "00" and answer["60"] == "000001"
        assert {entry.batch for entry in host.ledger.entries()} == {1}
        # the 0510 was lost: a new 0500 for the same batch gets the same comparison
        assert (await send(host, terminal, batch(terminal, totals, 1)))["39"] == "00"
        # batch 2: one more sale, but the terminal counts it twice
        await sale(host, terminal, "mastercard_cda")
        wrong = batch(terminal, [SchemeTotals(MASTERCARD, 2, 2 * AMOUNT, 0, 0)], 2)
        assert (await send(host, terminal, wrong))["39"] == "95"
        assert host.ledger.entries()[-1].batch == 2  # closed all the same
        assert host.ledger.entries()[0].stan == visa["11"]
        # batch 3: nothing happened, and the terminal says so
        assert (await send(host, terminal, batch(terminal, [], 3)))["39"] == "00"

    with_host(pki_dir, test)


def test_reconciliation_in_another_currency_does_not_balance(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> str:
        await sale(host, terminal, "mastercard_cda")
        totals = [SchemeTotals(MASTERCARD, 1, AMOUNT, 0, 0)]
        return (await send(host, terminal, batch(terminal, totals, 1, currency=840)))["39"]

    assert with_host(pki_dir, test) == "95"


# --- Network management ---------------------------------------------------------------------

def test_sign_on_and_echo(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> list[tuple[str, str, str]]:
        answers = []
        for code in (NetworkCode.SIGN_ON, NetworkCode.ECHO):
            request = messages.network_request(code, acceptor=terminal.acceptor, stan=terminal.next_stan(),
                                               at=now())
            answer = await send(host, terminal, request)
            answers.append((answer["t"], answer["70"], answer["39"]))
        unknown = messages.network_request(NetworkCode.ECHO, acceptor=terminal.acceptor,
                                           stan=terminal.next_stan(), at=now())
        unknown["70"] = "999"
        answer = await send(host, terminal, unknown)
        answers.append((answer["t"], answer["70"], answer["39"]))
        assert host.ledger.entries() == []
        return answers

    assert with_host(pki_dir, test) == [("0810", "001", "00"), ("0810", "301", "00"), ("0810", "999", "30")]


# --- MAC ------------------------------------------------------------------------------------

def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


@pytest.mark.parametrize("where", ["mac", "amount", "other-key"])
def test_a_wrong_mac_is_refused_and_nothing_booked(pki_dir: Path, where: str) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> Fields:
        fields, data, keys = terminal.sale(kernel_request("visa_cda_online"))
        if where == "mac":
            data = _flip(data, len(data) - 1)
        elif where == "amount":
            position = data.index(fields["4"].encode())
            data = data[:position] + b"1" + data[position + 1:]
        else:  # MACed under the key the host answers with (usage 2001)
            data = messages.attach_mac(fields, keys.response_mac, ksn=keys.ksn)
        link = await terminal.connect(host.port)
        await link.send(data)
        answer = messages.verify_mac(await link.receive(TIMEOUT), keys.response_mac)
        # the connection stays usable: the next, correct request is served
        fields2, data2, keys2 = terminal.sale(kernel_request("sda_only"), pin=None)
        await link.send(data2)
        assert messages.verify_mac(await link.receive(TIMEOUT), keys2.response_mac)["39"] == "00"
        await link.close()
        assert [entry.stan for entry in host.ledger.entries()] == [fields2["11"]]
        return answer

    answer = with_host(pki_dir, test)
    assert answer["t"] == "0210" and answer["39"] == "63"
    assert not {"37", "38", "55", "2", "35", "52"} & set(answer)


def test_a_ksn_of_another_bdk_gets_no_answer(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        fields, _, keys = terminal.sale(kernel_request("sda_only"), pin=None)
        foreign = bytes.fromhex("87654321") + keys.ksn[4:]
        link = await terminal.connect(host.port)
        await link.send(messages.attach_mac(fields, keys.request_mac, ksn=foreign))
        with pytest.raises(StreamClosed):
            await link.receive(TIMEOUT)
        await link.close()
        assert host.ledger.entries() == []

    with_host(pki_dir, test)


def test_the_answer_is_maced_under_the_response_key_only(pki_dir: Path) -> None:
    async def test(host: HostSimulator, terminal: Terminal) -> None:
        _, data, keys = terminal.sale(kernel_request("sda_only"), pin=None)
        link = await terminal.connect(host.port)
        await link.send(data)
        raw = await link.receive(TIMEOUT)
        await link.close()
        assert messages.verify_mac(raw, keys.response_mac)["53"] == keys.ksn.hex().upper()
        with pytest.raises(MacError):
            messages.verify_mac(raw, keys.request_mac)

    with_host(pki_dir, test)


# --- tpe sim host ledger --------------------------------------------------------------------

def test_tpe_sim_host_ledger_prints_entries_without_card_numbers(pki_dir: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ledger.sqlite3"

    async def test(host: HostSimulator, terminal: Terminal) -> None:
        await sale(host, terminal, "visa_cda_online")
        await sale(host, terminal, "visa_cda_online", pin="0000")

    with_host(pki_dir, test, ledger=path)
    assert cli.main(["sim", "host", "ledger", "--ledger", str(path), "--json"]) == 0
    printed = capsys.readouterr().out
    entries = json.loads(printed)
    assert [(e["mti"], e["response_code"], e["amount"]) for e in entries] == [("0200", "00", AMOUNT),
                                                                           ("0200", "55", AMOUNT)]
    pan = load_profile("visa_cda_online").applications[0].pan
    assert pan not in printed and entries[0]["pan_masked"].endswith(pan[-4:])
    assert cli.main(["sim", "host", "ledger", "--ledger", str(path)]) == 0
    text = capsys.readouterr().out
    assert len(text.splitlines()) == 2 and pan not in text
    assert cli.main(["sim", "host", "ledger", "--ledger", str(tmp_path / "missing.sqlite3")]) == 2


def test_a_file_that_is_not_a_ledger_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "not-a-ledger.sqlite3"
    path.write_bytes(b"this is not an SQLite database, just text" * 100)
    with pytest.raises(LedgerError):
        Ledger(path)
    assert cli.main(["sim", "host", "ledger", "--ledger", str(path)]) == 2
    assert capsys.readouterr().out.startswith("error ")


def test_ledger_entries_by_terminal_and_card(pki_dir: Path) -> None:
    other = messages.Acceptor(terminal_id="TERM0002", merchant_id="MERCHANT0000002", acquirer_id="12345")

    async def test(host: HostSimulator, terminal: Terminal) -> None:
        await sale(host, terminal, "visa_cda_online")
        second = Terminal(host.pki, other)
        _, data, keys = second.sale(kernel_request("mastercard_cda"))
        await second.exchange(host.port, data, keys)
        ledger = host.ledger
        assert [e.terminal_id for e in ledger.entries()] == ["TERM0001", "TERM0002"]
        assert [e.terminal_id for e in ledger.entries(terminal_id="TERM0002")] == ["TERM0002"]
        token = pan_token(load_profile("visa_cda_online").applications[0].pan)
        assert [e.terminal_id for e in ledger.entries(pan_token=token)] == ["TERM0001"]
        account = ledger.account(token)
        assert account is not None and "visa_cda_online" in account.profile.split(",")

    with_host(pki_dir, test)
