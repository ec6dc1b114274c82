"""Receipts on the ESC/POS printer (firmware/printer.py) against the simulated printer on a pty
(sim/printer.py), and the [printer] configuration section."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.config import ConfigError, parse_config
from firmware.printer import (
    EscPosPrinter,
    PaperOut,
    PrinterError,
    PrinterTimeout,
    PrinterUnavailable,
    RefusedReceipt,
    looks_like_card_number,
)
from sim.printer import PAPER_END, Cut, EscPosDecoder, Line, PrinterSimulator, QrCode

TIMEOUT = 10.0
DEFAULTS = Path(__file__).resolve().parent.parent / "firmware" / "defaults"
RECEIPT = ["TAXI DEMO PARIS", "VENTE", "Ticket n°                     12", "-" * 32,
           "TOTAL                 12,50 €", "  Carte                 12,50 €",
           "  N° carte      476173******0051", "Signature              A1B2 9F0E"]
QR = "https://r.example.fr/t/TPE00001/12?s=A1B2"


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(TIMEOUT):
            return await coroutine
    return asyncio.run(bounded())


async def print_on_sim(lines: list[str], qr: str | None = None, *, codepage: str = "cp858",
                       title: str | None = None, **sim_options: Any) -> PrinterSimulator:
    async with PrinterSimulator(**sim_options) as sim:
        assert sim.path is not None
        printer = EscPosPrinter(sim.path, 19200, 32, codepage, timeout=1.0)
        await printer.print_receipt(lines, qr, title=title)
        await sim.wait_for_cut()
    return sim


@pytest.mark.parametrize("codepage", ["cp858", "cp1252"])
def test_the_printed_text_is_the_receipt_with_the_euro_sign(codepage: str) -> None:
    sim = run(print_on_sim(RECEIPT, codepage=codepage))
    assert sim.errors == []
    assert sim.lines == RECEIPT
    assert "€" in sim.lines[4]
    assert sim.printed[-1] == Cut(partial=True, feed=sim.printed[-1].feed)
    assert sim.printed[-1].feed > 0


def test_a_character_the_code_page_lacks_becomes_a_question_mark() -> None:
    # PC437 has neither the euro sign nor Ő (U+0150)
    sim = run(print_on_sim(["12,50 €", "Ő ok é"], codepage="cp437"))
    assert sim.lines == ["12,50 ?", "? ok é"]


def test_title_is_bold_and_centred_and_lines_are_not() -> None:
    sim = run(print_on_sim(["TOTAL 1,00 €"], title="VENTE"))
    lines = [item for item in sim.printed if isinstance(item, Line)]
    assert lines == [Line("VENTE", bold=True, align=1), Line("TOTAL 1,00 €", bold=False, align=0)]


def test_qr_code_is_well_formed_and_printed_before_the_cut() -> None:
    sim = run(print_on_sim(RECEIPT, QR))
    assert sim.errors == []
    qrs = [item for item in sim.printed if isinstance(item, QrCode)]
    assert qrs == [QrCode(QR.encode(), model=50, module_size=qrs[0].module_size, error_correction=49)]
    assert 1 <= (qrs[0].module_size or 0) <= 16
    assert sim.lines == RECEIPT
    assert [type(item) for item in sim.printed] == [Line] * len(RECEIPT) + [QrCode, Cut]


def test_qr_store_length_bytes_count_the_data() -> None:
    # ESC/POS GS ( k: pL + pH * 256 counts cn, fn, m and the data; computed here by hand for
    # a 300-byte payload (> 255, so pH is used): 300 + 3 = 303 = 0x012F
    data = "A" * 300
    job = EscPosPrinter("/dev/null", check_paper=False).job([], data)
    store = b"\x1d(k\x2f\x01\x31\x50\x30" + data.encode()
    assert store in job
    decoder = EscPosDecoder()
    decoder.feed(job)
    assert decoder.errors == []
    assert [item.data for item in decoder.printed if isinstance(item, QrCode)] == [data.encode()]


def test_job_decodes_the_same_when_it_arrives_byte_by_byte() -> None:
    job = EscPosPrinter("/dev/null").job(RECEIPT, QR, title="VENTE")
    whole, pieces = EscPosDecoder(), EscPosDecoder()
    whole.feed(job)
    for byte in job:
        pieces.feed(bytes([byte]))
    assert pieces.printed == whole.printed
    assert pieces.errors == whole.errors == []


def test_long_lines_are_split_at_the_paper_width() -> None:
    sim = run(print_on_sim(["x" * 70]))
    assert sim.lines == ["x" * 32, "x" * 32, "x" * 6]


def test_control_characters_in_text_never_reach_the_printer_as_commands() -> None:
    sim = run(print_on_sim(["a\x1bd\x09b\x1dV\x00c"]))
    assert sim.errors == []
    assert sim.lines == ["a?d?b?V?c"]
    assert sum(isinstance(item, Cut) for item in sim.printed) == 1


def test_missing_port_is_a_printer_error(tmp_path: Path) -> None:
    printer = EscPosPrinter(str(tmp_path / "ttyNOPE"))
    with pytest.raises(PrinterUnavailable) as caught:
        run(printer.print_receipt(RECEIPT))
    assert isinstance(caught.value, PrinterError)


def test_paper_out_is_reported_and_nothing_is_printed() -> None:
    async def scenario() -> PrinterSimulator:
        async with PrinterSimulator(paper=PAPER_END) as sim:
            assert sim.path is not None
            with pytest.raises(PaperOut):
                await EscPosPrinter(sim.path, timeout=1.0).print_receipt(RECEIPT)
            await asyncio.sleep(0.05)
        return sim
    sim = run(scenario())
    assert sim.printed == []


def test_a_printer_that_never_answers_times_out() -> None:
    async def scenario() -> None:
        async with PrinterSimulator(answer_status=False) as sim:
            assert sim.path is not None
            with pytest.raises(PrinterTimeout):
                await EscPosPrinter(sim.path, timeout=0.2).print_receipt(RECEIPT)
    run(scenario())


def test_without_the_paper_check_a_silent_printer_still_prints() -> None:
    async def scenario() -> PrinterSimulator:
        async with PrinterSimulator(answer_status=False) as sim:
            assert sim.path is not None
            await EscPosPrinter(sim.path, check_paper=False, timeout=1.0).print_receipt(RECEIPT)
            await sim.wait_for_cut()
        return sim
    sim = run(scenario())
    assert sim.lines == RECEIPT
    assert sim.decoder.status_requests == []


@pytest.mark.parametrize("line", ["4761739001010051", "PAN 4761 7390 0101 0051", "x4761-7390-0101-0051y",
                                  "4222222222222", "12345678901234567890123"])
def test_a_line_with_a_card_number_is_refused_and_not_quoted(line: str) -> None:
    async def scenario() -> PrinterSimulator:
        async with PrinterSimulator() as sim:
            assert sim.path is not None
            with pytest.raises(RefusedReceipt) as caught:
                await EscPosPrinter(sim.path, timeout=1.0).print_receipt([*RECEIPT, line])
            assert "".join(c for c in line if c.isdigit())[-4:] not in str(caught.value)
            await asyncio.sleep(0.05)
        return sim
    sim = run(scenario())
    assert sim.printed == [] and sim.decoder.status_requests == []


@pytest.mark.parametrize("where", ["title", "qr"])
def test_a_card_number_in_the_title_or_qr_is_refused(where: str) -> None:
    printer = EscPosPrinter("/dev/null")
    pan = "4761739001010051"
    with pytest.raises(RefusedReceipt):
        printer.job(RECEIPT, pan if where == "qr" else None, title=pan if where == "title" else None)


@pytest.mark.parametrize("line", ["476173******0051", "Date 26/11/2026 13:30:05", "123456789012",
                                  "12 34 56 78 90 12", "1234  5678  9012  3456"])
def test_masked_pans_dates_and_short_numbers_print(line: str) -> None:
    EscPosPrinter("/dev/null").job([line])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(PrinterError):
        EscPosPrinter("/dev/null", width=40)
    with pytest.raises(PrinterError):
        EscPosPrinter("/dev/null", codepage="utf-8")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=80), max_size=12), st.one_of(st.none(), st.text(max_size=120)))
def test_any_receipt_either_prints_in_full_or_raises_printer_error(lines: list[str], qr: str | None) -> None:
    async def scenario() -> PrinterSimulator | None:
        async with PrinterSimulator() as sim:
            assert sim.path is not None
            try:
                await EscPosPrinter(sim.path, timeout=1.0).print_receipt(lines, qr)
            except PrinterError:
                return None
            await sim.wait_for_cut()
        return sim
    sim = run(scenario())
    if sim is None:
        return
    assert sim.errors == []
    # independent of the printer's split: every printed line fits, and the text survives
    # except the characters PC858 lacks or controls (each one "?")
    assert all(len(line) <= 32 for line in sim.lines)
    expected = [(line.rstrip() or "") for line in lines]
    got = iter(sim.lines)
    for line in expected:
        pieces = max(1, -(-len(line) // 32))
        text = "".join(next(got) for _ in range(pieces))
        assert len(text) == len(line)
        for want, have in zip(line, text, strict=True):
            assert have == want or have == "?"
    assert next(got, None) is None
    qrs = [item for item in sim.printed if isinstance(item, QrCode)]
    assert len(qrs) == (0 if qr is None else 1)


def config_with(section: str) -> str:
    return (DEFAULTS / "terminal.toml").read_text() + "\n" + section


def test_printer_section_is_read() -> None:
    config = parse_config(config_with('[printer]\nport = "/dev/ttyS1"\nwidth = 48\ncodepage = "cp1252"\n'),
                          "t.toml", DEFAULTS)
    assert config.printer is not None
    printer = config.printer
    assert (printer.port, printer.width, printer.codepage) == ("/dev/ttyS1", 48, "cp1252")
    assert EscPosPrinter.from_config(config.printer).width == 48


def test_default_configuration_has_no_printer() -> None:
    assert parse_config(config_with(""), "t.toml", DEFAULTS).printer is None


@pytest.mark.parametrize(("body", "key"), [
    ('port = "/dev/ttyS1"\nwidth = 40', "printer.width"),
    ('port = "/dev/ttyS1"\ncodepage = "utf-8"', "printer.codepage"),
    ('port = "/dev/ttyS1"\nbaudrate = 1200', "printer.baudrate"),
    ('width = 32', "printer.port"),
    ('port = "/dev/ttyS1"\ncolour = "red"', "printer.colour"),
])
def test_bad_printer_settings_name_file_and_key(body: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(f"[printer]\n{body}\n"), "t.toml", DEFAULTS)
    assert (caught.value.file, caught.value.key) == ("t.toml", key)



@pytest.mark.parametrize("line", ["AID             A0000000031010", "Ref 1234567890123", "RRN 263300000001"])
def test_numbers_that_fail_the_luhn_check_print(line: str) -> None:
    assert not looks_like_card_number(line)
    assert looks_like_card_number("4761739001010051")  # the same length, its check digit holds
