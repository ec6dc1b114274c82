"""T=0 / T=1 transport of APDUs (EMV 4.4 Book 1, 9.3), driven by scripted cards.

Each row follows one exchange of EMV 4.4 Book 1 Annex A "Examples of exchanges using T=0":
A1 case 1, A2 case 2 ('6Cxx'), A3 case 3, A4 case 4 ('61xx'), A5 case 2 using both '61' and
'6C', A6 case 4 using '61' repeatedly, A7 case 4 with a warning condition; plus the error and
warning variants 9.3.1 asks for, and the same commands over T=1 (9.3.2). A scripted card is a
list of (expected C-TPDU, answer) pairs: the test fails when the terminal sends anything else.

Answers are what a PC/SC reader hands back (data then SW1 SW2); procedure bytes stay in the
reader. The FCI and the record are ordinary card data written out by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emv import apdu
from emv.apdu import Command, CryptogramType, Response
from emv.errors import ApduError, TransportError
from emv.transport import MAX_DATA, MAX_ROUNDS, Exchange, transceive


def h(text: str) -> bytes:
    return bytes.fromhex(text)


PSE = b"1PAY.SYS.DDF01"
# FCI of the PSE: 6F 24 ... = 38 bytes ('26').
FCI = h("6F24840E315041592E5359532E4444463031A5128801015F2D08656E6573667264659F110101")
FCI_HEAD, FCI_TAIL = FCI[:18], FCI[18:]
# Record 1 of SFI 1: 70 1A ... = 28 bytes ('1C').
RECORD = h("701A61184F07A0000000031010500A56495341204445424954870101")
RECORD_HEAD, RECORD_TAIL = RECORD[:13], RECORD[13:]
SELECT_PSE = apdu.select(PSE)                      # case 4
READ_1_1 = apdu.read_record(1, 1)                   # case 2
EXT_AUTH = apdu.external_authenticate(h("11223344556677883030"))  # case 3
VERIFY = apdu.verify(h("241234FFFFFFFFFF"), enciphered=False)      # case 3
INT_AUTH = apdu.internal_authenticate(h("01020304"))               # case 4
CASE_1 = Command(0x80, 0x12, 0x34, 0x56)

assert len(FCI) == 0x26 and len(FCI_HEAD) == 0x12 and len(FCI_TAIL) == 0x14
assert len(RECORD) == 0x1C and len(RECORD_TAIL) == 0x0F

# T=0 C-TPDUs, written out: case 4 goes without Le (Book 1, 9.3.1.1.4), case 1 with P3 '00'.
T0_SELECT_PSE = h("00A404000E") + PSE
T1_SELECT_PSE = h("00A404000E") + PSE + h("00")
T0_READ = h("00B2010C00")
T0_EXT_AUTH = h("008200000A11223344556677883030")
T0_VERIFY = h("0020008008241234FFFFFFFFFF")
T0_INT_AUTH = h("008800000401020304")


class ScriptedCard:
    """Answers each expected C-TPDU in order; anything unexpected fails the test."""

    def __init__(self, script: list[tuple[bytes, bytes]]) -> None:
        self.script = list(script)
        self.sent: list[bytes] = []

    def __call__(self, tpdu: bytes) -> bytes:
        self.sent.append(tpdu)
        assert self.script, f"terminal sent {tpdu.hex().upper()} after the script ended"
        expected, answer = self.script.pop(0)
        assert tpdu == expected, f"terminal sent {tpdu.hex().upper()}, card expected {expected.hex().upper()}"
        return answer

    def finished(self) -> None:
        assert not self.script, f"{len(self.script)} exchanges of the script were not used"


@dataclass
class Row:
    name: str
    protocol: str
    command: Command | bytes
    script: list[tuple[bytes, bytes]]
    data: bytes
    sw: int


ROWS = [
    # --- Annex A1: case 1 -------------------------------------------------------------
    Row("A1 case 1", "T=0", CASE_1, [(h("8012345600"), h("9000"))], b"", 0x9000),
    Row("A1 case 1, error", "T=0", CASE_1, [(h("8012345600"), h("6A81"))], b"", 0x6A81),
    Row("A1 case 1 from raw bytes", "T=0", h("80123456"), [(h("8012345600"), h("9000"))], b"", 0x9000),
    # --- Annex A2: case 2, card gives the length with '6Cxx' ---------------------------
    Row("A2 case 2, 6Cxx then data", "T=0", READ_1_1,
        [(T0_READ, h("6C1C")), (h("00B2010C1C"), RECORD + h("9000"))], RECORD, 0x9000),
    Row("A2 case 2, data at once", "T=0", READ_1_1, [(T0_READ, RECORD + h("9000"))], RECORD, 0x9000),
    Row("A2 case 2, error at once", "T=0", READ_1_1, [(T0_READ, h("6A83"))], b"", 0x6A83),
    Row("A2 case 2, error after the new Le", "T=0", READ_1_1,
        [(T0_READ, h("6C1C")), (h("00B2010C1C"), h("6581"))], b"", 0x6581),
    Row("A2 case 2, 6C00 means 256", "T=0", Command(0x00, 0xB2, 1, 0x0C, le=0x10),
        [(h("00B2010C10"), h("6C00")), (h("00B2010C00"), bytes(256) + h("9000"))], bytes(256), 0x9000),
    # --- case 2 with a warning: returned as it is, no GET RESPONSE (9.3.1.1.2) ------------
    Row("case 2, warning 62xx with data", "T=0", READ_1_1,
        [(T0_READ, h("6C1C")), (h("00B2010C1C"), RECORD + h("6281"))], RECORD, 0x6281),
    Row("case 2, warning 62xx alone", "T=0", READ_1_1, [(T0_READ, h("6282"))], b"", 0x6282),
    # --- Annex A3: case 3 -------------------------------------------------------------
    Row("A3 case 3", "T=0", EXT_AUTH, [(T0_EXT_AUTH, h("9000"))], b"", 0x9000),
    Row("A3 case 3, error", "T=0", EXT_AUTH, [(T0_EXT_AUTH, h("6300"))], b"", 0x6300),
    Row("A3 case 3, VERIFY warning 63Cx is final", "T=0", VERIFY, [(T0_VERIFY, h("63C2"))], b"", 0x63C2),
    # --- Annex A4: case 4, sent without Le, data fetched with GET RESPONSE ----------------
    Row("A4 case 4", "T=0", SELECT_PSE,
        [(T0_SELECT_PSE, h("6126")), (h("00C0000026"), FCI + h("9000"))], FCI, 0x9000),
    Row("A4 case 4 from raw bytes", "T=0", T1_SELECT_PSE,
        [(T0_SELECT_PSE, h("6126")), (h("00C0000026"), FCI + h("9000"))], FCI, 0x9000),
    Row("A4 case 4, card has no data", "T=0", SELECT_PSE, [(T0_SELECT_PSE, h("9000"))], b"", 0x9000),
    Row("A4 case 4, error at once", "T=0", SELECT_PSE, [(T0_SELECT_PSE, h("6A82"))], b"", 0x6A82),
    Row("A4 case 4, error on GET RESPONSE", "T=0", SELECT_PSE,
        [(T0_SELECT_PSE, h("6126")), (h("00C0000026"), h("6581"))], b"", 0x6581),
    # --- Annex A5: case 2 using both '61' and '6C' ------------------------------------
    Row("A5 case 2, 6Cxx then 61xx chain", "T=0", READ_1_1,
        [(T0_READ, h("6C1C")),
         (h("00B2010C1C"), h("611C")),
         (h("00C000001C"), RECORD_HEAD + h("610F")),
         (h("00C000000F"), RECORD_TAIL + h("9000"))], RECORD, 0x9000),
    Row("A5 case 2, GET RESPONSE answered by 6Cxx", "T=0", READ_1_1,
        [(T0_READ, h("6100")),
         (h("00C0000000"), h("6C1C")),
         (h("00C000001C"), RECORD + h("9000"))], RECORD, 0x9000),
    # --- Annex A6: case 4 using '61' repeatedly, data concatenated whole -----------------
    Row("A6 case 4, chained 61xx", "T=0", SELECT_PSE,
        [(T0_SELECT_PSE, h("6126")),
         (h("00C0000026"), FCI_HEAD + h("6114")),
         (h("00C0000014"), FCI_TAIL + h("9000"))], FCI, 0x9000),
    Row("A6 case 4, chain ends in a warning", "T=0", SELECT_PSE,
        [(T0_SELECT_PSE, h("6126")),
         (h("00C0000026"), FCI_HEAD + h("6114")),
         (h("00C0000014"), FCI_TAIL + h("6283"))], FCI, 0x6283),
    # --- Annex A7: case 4 with a warning: GET RESPONSE Le '00', original status kept -----
    Row("A7 case 4, warning 62xx", "T=0", SELECT_PSE,
        [(T0_SELECT_PSE, h("6283")),
         (h("00C0000000"), h("6C26")),
         (h("00C0000026"), FCI + h("9000"))], FCI, 0x6283),
    Row("A7 case 4, warning 63xx, data chained", "T=0", INT_AUTH,
        [(T0_INT_AUTH, h("6300")),
         (h("00C0000000"), h("6126")),
         (h("00C0000026"), FCI + h("9000"))], FCI, 0x6300),
    Row("A7 case 4, warning then no data", "T=0", SELECT_PSE,
        [(T0_SELECT_PSE, h("6283")), (h("00C0000000"), h("6A86"))], b"", 0x6283),
    Row("A7 case 4, warning answered by a warning", "T=0", SELECT_PSE,
        [(T0_SELECT_PSE, h("6283")), (h("00C0000000"), h("6281"))], b"", 0x6283),
    Row("case 4, reader already fetched the data of a warning", "T=0", SELECT_PSE,
        [(T0_SELECT_PSE, FCI + h("6283"))], FCI, 0x6283),
    Row("case 4, GET RESPONSE answered by a warning alone", "T=0", SELECT_PSE,
        [(T0_SELECT_PSE, h("6126")), (h("00C0000026"), h("6281"))], b"", 0x6281),
    # --- T=1 (Book 1, 9.3.2): the whole APDU, Le included ----------------------------------
    Row("T=1 case 1", "T=1", CASE_1, [(h("80123456"), h("9000"))], b"", 0x9000),
    Row("T=1 case 2", "T=1", READ_1_1, [(T0_READ, RECORD + h("9000"))], RECORD, 0x9000),
    Row("T=1 case 3", "T=1", VERIFY, [(T0_VERIFY, h("9000"))], b"", 0x9000),
    Row("T=1 case 4", "T=1", SELECT_PSE, [(T1_SELECT_PSE, FCI + h("9000"))], FCI, 0x9000),
    Row("T=1 case 4, warning with its data", "T=1", SELECT_PSE,
        [(T1_SELECT_PSE, FCI + h("6283"))], FCI, 0x6283),
    Row("T=1 case 4, warning alone: no GET RESPONSE", "T=1", SELECT_PSE,
        [(T1_SELECT_PSE, h("6283"))], b"", 0x6283),
    Row("T=1 case 4, card still answers 61xx", "T=1", SELECT_PSE,
        [(T1_SELECT_PSE, h("6126")), (h("00C0000026"), FCI + h("9000"))], FCI, 0x9000),
    Row("T=1 case 4, card answers 6Cxx: same APDU, new Le", "T=1", SELECT_PSE,
        [(T1_SELECT_PSE, h("6C26")), (h("00A404000E") + PSE + h("26"), FCI + h("9000"))], FCI, 0x9000),
    Row("T=1 case 2, 6Cxx", "T=1", READ_1_1,
        [(T0_READ, h("6C1C")), (h("00B2010C1C"), RECORD + h("9000"))], RECORD, 0x9000),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_exchange(row: Row) -> None:
    card = ScriptedCard(row.script)
    response = transceive(card, row.command, row.protocol)
    card.finished()
    assert response == Response(row.data, row.sw)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_exchange_state_machine_by_hand(row: Row) -> None:
    exchange = Exchange(row.command, row.protocol)
    assert not exchange.finished
    for expected, answer in row.script:
        assert exchange.next_tpdu() == expected
        assert exchange.next_tpdu() == expected  # asking again does not advance
        exchange.receive(answer)
    assert exchange.next_tpdu() is None
    assert exchange.finished
    assert exchange.result == Response(row.data, row.sw)
    assert exchange.rounds == len(row.script) - 1


ERROR_ROWS = [
    ("answer without status word", "T=0", READ_1_1, [(T0_READ, h("90"))]),
    ("empty answer", "T=0", READ_1_1, [(T0_READ, b"")]),
    ("empty answer to GET RESPONSE", "T=0", SELECT_PSE, [(T0_SELECT_PSE, h("6126")), (h("00C0000026"), b"")]),
    # 6Cxx to a TPDU carrying data: P3 is Lc there and cannot become Le.
    ("T=0 case 3 answered 6Cxx", "T=0", VERIFY, [(T0_VERIFY, h("6C08"))]),
    ("T=0 case 4 answered 6Cxx", "T=0", SELECT_PSE, [(T0_SELECT_PSE, h("6C26"))]),
    ("T=1 case 3 answered 6Cxx", "T=1", EXT_AUTH, [(T0_EXT_AUTH, h("6C08"))]),
    ("T=1 case 1 answered 6Cxx", "T=1", CASE_1, [(h("80123456"), h("6C08"))]),
]


@pytest.mark.parametrize(("protocol", "command", "script"), [row[1:] for row in ERROR_ROWS],
                         ids=[row[0] for row in ERROR_ROWS])
def test_transport_errors(protocol: str, command: Command, script: list[tuple[bytes, bytes]]) -> None:
    card = ScriptedCard(script)
    exchange = Exchange(command, protocol)
    with pytest.raises(TransportError) as caught:
        while (tpdu := exchange.next_tpdu()) is not None:
            exchange.receive(card(tpdu))
    card.finished()
    assert command.name in str(caught.value)
    # A failed exchange is over: nothing more to send, no result.
    assert exchange.next_tpdu() is None
    with pytest.raises(TransportError):
        _ = exchange.result


def test_sixty_four_rounds_are_allowed() -> None:
    script = [(T0_READ, h("AA6101"))]
    script += [(h("00C0000001"), h("AA6101"))] * (MAX_ROUNDS - 1)
    script += [(h("00C0000001"), h("AA9000"))]
    card = ScriptedCard(script)
    response = transceive(card, READ_1_1, "T=0")
    card.finished()
    assert response == Response(b"\xaa" * (MAX_ROUNDS + 1), 0x9000)


def test_a_card_that_never_stops_chaining_is_cut_off() -> None:
    sent: list[bytes] = []

    def endless(tpdu: bytes) -> bytes:
        sent.append(tpdu)
        return h("AA6101")

    with pytest.raises(TransportError, match="64"):
        transceive(endless, READ_1_1, "T=0")
    assert len(sent) == MAX_ROUNDS + 1


def test_a_card_that_keeps_changing_le_is_cut_off() -> None:
    def fickle(tpdu: bytes) -> bytes:
        return h("6C10") if tpdu[4] != 0x10 else h("6C20")

    with pytest.raises(TransportError):
        transceive(fickle, READ_1_1, "T=0")


def test_chained_data_is_bounded() -> None:
    half = bytes(MAX_DATA // 2)
    card = ScriptedCard([(T0_READ, half + h("6100")), (h("00C0000000"), half + h("9000"))])
    assert transceive(card, READ_1_1, "T=0").data == bytes(MAX_DATA)
    card = ScriptedCard([(T0_READ, half + h("6100")), (h("00C0000000"), half + h("009000"))])
    with pytest.raises(TransportError, match=str(MAX_DATA)):
        transceive(card, READ_1_1, "T=0")


def test_bad_protocol_and_bad_command() -> None:
    with pytest.raises(TransportError):
        Exchange(READ_1_1, "T=2")
    with pytest.raises(ApduError):
        Exchange(h("00B2"), "T=0")


def test_misuse_of_the_state_machine() -> None:
    exchange = Exchange(CASE_1, "T=0")
    with pytest.raises(TransportError):
        _ = exchange.result
    exchange.receive(h("9000"))
    with pytest.raises(TransportError):
        exchange.receive(h("9000"))


def test_answer_that_is_not_bytes() -> None:
    with pytest.raises(TransportError):
        transceive(lambda tpdu: [0x90, 0x00], CASE_1, "T=0")  # type: ignore[arg-type,return-value]


def test_card_errors_are_not_hidden_by_the_transport() -> None:
    # A GENERATE AC refused by the card comes back as a response, not as an exception.
    command = apdu.generate_ac(CryptogramType.ARQC, bytes(29))
    card = ScriptedCard([(h("80AE80001D") + bytes(29), h("6985"))])
    assert transceive(card, command, "T=0") == Response(b"", 0x6985)


@given(data=st.binary(min_size=1, max_size=2000), cuts=st.lists(st.integers(1, 256), max_size=20))
def test_chained_pieces_are_concatenated_whole(data: bytes, cuts: list[int]) -> None:
    """Whatever sizes the card uses to cut its answer, the terminal gets all of it, in order."""
    pieces: list[bytes] = []
    rest = data
    for cut in cuts:
        if not rest:
            break
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    pieces = pieces[:MAX_ROUNDS]
    expected = b"".join(pieces)
    script = [(T0_INT_AUTH, bytes([0x61, len(pieces[0]) & 0xFF]))]
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        status = h("9000") if last else bytes([0x61, len(pieces[i + 1]) & 0xFF])
        script.append((apdu.get_response(len(piece)).encode(), piece + status))
    card = ScriptedCard(script)
    assert transceive(card, INT_AUTH, "T=0") == Response(expected, 0x9000)
    card.finished()


@settings(max_examples=300)
@given(answers=st.lists(st.binary(max_size=8), max_size=80), protocol=st.sampled_from(["T=0", "T=1"]),
       command=st.sampled_from([CASE_1, READ_1_1, VERIFY, SELECT_PSE, INT_AUTH]))
def test_any_card_behaviour_ends_in_a_response_or_a_transport_error(
        answers: list[bytes], protocol: str, command: Command) -> None:
    queue = list(answers)
    sent = 0

    def card(tpdu: bytes) -> bytes:
        nonlocal sent
        sent += 1
        Command.parse(tpdu)  # every TPDU the terminal writes is a well-formed short APDU
        return queue.pop(0) if queue else h("9000")

    try:
        response = transceive(card, command, protocol)
    except TransportError:
        return
    assert isinstance(response, Response)
    assert sent <= MAX_ROUNDS + 1
