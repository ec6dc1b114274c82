"""APDU logging: one DEBUG line per exchange, and never the command or response data."""

from __future__ import annotations

import logging

import pytest

from emv import apdu
from emv.transport import transceive
from firmware.apdu_log import LoggingSend, logged

LOGGER = "firmware.apdu_log"
# A Visa test PAN and a format 2 PIN block for PIN 1234 (EMV 4.4 Book 3, 6.5.12.3).
PAN = "4761739001010010"
PIN_BLOCK = bytes.fromhex("241234FFFFFFFFFF")
RECORD = bytes.fromhex("70155A08" + PAN + "5F24032512319F0702FF00")


def _forms(secret: bytes) -> list[str]:
    """Ways a careless log line could spell `secret`."""
    return [secret.hex(), secret.hex().upper(), secret.hex(" "), secret.hex(" ").upper(),
            repr(secret), str(list(secret))]


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


def test_verify_is_logged_without_the_pin_block(caplog: pytest.LogCaptureFixture) -> None:
    send = logged(lambda tpdu: bytes.fromhex("63C2"))
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        transceive(send, apdu.verify(PIN_BLOCK, enciphered=False), "T=0")
    text = _logged(caplog)
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.DEBUG
    assert "VERIFY" in text
    assert "CLA=00 INS=20 P1=00 P2=80" in text
    assert "Lc=8" in text and "Le=-" in text
    assert "63C2" in text and "2 tries" in text
    for form in _forms(PIN_BLOCK) + _forms(PIN_BLOCK[:3]):
        assert form not in text


def test_read_record_is_logged_without_the_pan(caplog: pytest.LogCaptureFixture) -> None:
    answers = {bytes.fromhex("00B2010C00"): bytes.fromhex("6C17"),
               bytes.fromhex("00B2010C17"): RECORD + bytes.fromhex("9000")}
    send = LoggingSend(answers.__getitem__)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        response = transceive(send, apdu.read_record(1, 1), "T=0")
    assert response.data == RECORD
    text = _logged(caplog)
    lines = text.splitlines()
    assert len(lines) == 2
    assert all("READ RECORD" in line for line in lines)
    assert "6C17" in lines[0] and "Le=256" in lines[0]
    assert "9000" in lines[1] and "23 data bytes" in lines[1] and "Le=23" in lines[1]
    assert PAN not in text
    for form in _forms(RECORD[4:12]):
        assert form not in text


def test_failed_send_is_logged_and_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(tpdu: bytes) -> bytes:
        raise OSError(f"reader gone while sending {tpdu.hex()}")

    send = logged(broken)
    command = apdu.put_data(0x5A, bytes.fromhex(PAN), bytes(8))
    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(OSError):
        send(command.encode())
    text = _logged(caplog)
    assert "PUT DATA" in text and "OSError" in text
    assert PAN not in text


def test_unparsable_tpdu_is_logged_by_length_only(caplog: pytest.LogCaptureFixture) -> None:
    send = logged(lambda tpdu: b"\x90")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert send(b"\x24\x12\x34") == b"\x90"
    text = _logged(caplog)
    assert "unparsable command of 3 bytes" in text
    assert "no status word" in text
    assert "241234" not in text


def test_nothing_is_formatted_above_debug(caplog: pytest.LogCaptureFixture) -> None:
    send = logged(lambda tpdu: bytes.fromhex("9000"))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        send(apdu.get_challenge().encode())
    assert caplog.records == []


def test_custom_logger(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.card")
    send = logged(lambda tpdu: bytes.fromhex("9000"), logger)
    with caplog.at_level(logging.DEBUG, logger="tests.card"):
        send(apdu.get_challenge().encode())
    assert [record.name for record in caplog.records] == ["tests.card"]
    assert "GET CHALLENGE" in caplog.records[0].getMessage()
