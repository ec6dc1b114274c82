"""Transport of APDUs over T=0 and T=1, the rules of EMV 4.4 Book 1, 9.3 (examples in Annex A).

Sans-I/O: `Exchange` says which TPDU to send next and is fed the card's raw answers; `transceive`
drives it with any `send` function (the PC/SC reader adapter, the in-process card simulator, a
recorded trace).

What `send` carries is the C-TPDU as a PC/SC reader takes it: header, P3 and data. Procedure
bytes (INS, ~INS, '60') are the reader's business; the status words '61xx' and '6Cxx' come back
to us and are handled here:

* T=0 case 1: P3 = '00' (9.3.1.1.1). Case 2: P3 = Le (9.3.1.1.2). Case 3: P3 = Lc, then data
  (9.3.1.1.3). Case 4: sent as case 3, without Le; the data comes back through GET RESPONSE
  (9.3.1.1.4).
* '61xx': GET RESPONSE (9.3.1.3) with Le = xx; the data of successive answers is concatenated
  (9.3.1.2).
* '6Cxx': the last TPDU is sent again with P3 = xx (9.3.1.2), GET RESPONSE included.
* T=0 case 4 answered by a warning '62xx'/'63xx' without data: GET RESPONSE with Le = '00'; the
  data it brings is returned with the original warning status (9.3.1.1.4, Annex A7).
* T=1: the whole APDU, case 4 with its Le, is sent as it is (9.3.2); '61xx' and '6Cxx' are still
  followed when a card answers so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NoReturn

from emv import apdu
from emv.apdu import Command, Response
from emv.errors import TransportError
from emv.status import is_warning

Protocol = Literal["T=0", "T=1"]
PROTOCOLS: tuple[Protocol, ...] = ("T=0", "T=1")

# Guards against a card that never stops asking for GET RESPONSE or a new Le.
MAX_ROUNDS = 64
MAX_DATA = 65536


class Exchange:
    """One APDU carried to the card and its response brought back, as a state machine.

    Call `next_tpdu()`; while it returns bytes, send them and give the card's raw answer to
    `receive()`. When `next_tpdu()` returns None, `result` holds the response APDU.
    """

    def __init__(self, command: Command | bytes, protocol: Protocol | str) -> None:
        # A malformed raw command raises ApduError from Command.parse.
        self.command = command if isinstance(command, Command) else Command.parse(command)
        if protocol not in PROTOCOLS:
            raise TransportError(f"unknown protocol {protocol!r}, expected 'T=0' or 'T=1'")
        self.protocol: Protocol = protocol  # type: ignore[assignment]
        self.rounds = 0
        self._data = bytearray()
        self._warning: int | None = None
        self._result: Response | None = None
        self._failed = False
        self._next: bytes | None = self._first_tpdu()

    def _first_tpdu(self) -> bytes:
        cmd = self.command
        if self.protocol == "T=1":
            return cmd.encode()
        if cmd.case == 1:
            return cmd.header + b"\x00"  # Book 1, 9.3.1.1.1
        if cmd.case == 4:
            return cmd.with_le(None).encode()  # Book 1, 9.3.1.1.4
        return cmd.encode()

    @property
    def finished(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> Response:
        if self._result is None:
            raise TransportError("the exchange failed" if self._failed else "the exchange is not finished")
        return self._result

    def next_tpdu(self) -> bytes | None:
        """The TPDU to send now, or None once the exchange is over."""
        return self._next

    def receive(self, raw_response: bytes) -> None:
        """Take the card's answer to the TPDU last returned by `next_tpdu()`."""
        sent = self._next
        if sent is None:
            raise TransportError("no TPDU is waiting for an answer")
        if not isinstance(raw_response, bytes | bytearray | memoryview):
            self._fail(f"card answer must be bytes, not {type(raw_response).__name__}")
        raw = bytes(raw_response)
        if len(raw) < 2:
            self._fail(f"card answer of {len(raw)} bytes has no status word")
        body, sw1, sw2 = raw[:-2], raw[-2], raw[-1]
        sw = (sw1 << 8) | sw2
        if sw1 == 0x61:
            self._collect(body)
            self._continue(apdu.get_response(sw2 or apdu.MAX_LE).encode())
        elif sw1 == 0x6C:
            # The answer carries no data (ISO 7816-3, 10.3.3): the same TPDU comes again.
            self._continue(self._resend_with_le(sent, sw2 or apdu.MAX_LE, sw))
        elif self._is_case4_warning(body, sw):
            self._warning = sw
            self._continue(apdu.get_response(apdu.MAX_LE).encode())
        else:
            self._collect(body)
            self._result = Response(bytes(self._data), self._warning if self._warning is not None else sw)
            self._next = None

    def _is_case4_warning(self, body: bytes, sw: int) -> bool:
        # Book 1, 9.3.1.1.4 and Annex A7: only the answer to the case 4 command itself, on T=0.
        return (self.protocol == "T=0" and self.command.case == 4 and self.rounds == 0
                and not body and is_warning(sw))

    def _resend_with_le(self, sent: bytes, le: int, sw: int) -> bytes:
        last = Command.parse(sent)
        if self.protocol == "T=0" and last.data:
            self._fail(f"card answered {sw:04X} to a TPDU carrying data; P3 cannot become Le")
        if self.protocol == "T=1" and last.le is None:
            self._fail(f"card answered {sw:04X} to a {last.name} command that has no Le")
        return last.with_le(le).encode()

    def _collect(self, body: bytes) -> None:
        if len(self._data) + len(body) > MAX_DATA:
            self._fail(f"card sent more than {MAX_DATA} bytes of response data")
        self._data += body

    def _continue(self, tpdu: bytes) -> None:
        self.rounds += 1
        if self.rounds > MAX_ROUNDS:
            self._fail(f"card asked for more than {MAX_ROUNDS} GET RESPONSE / new Le rounds")
        self._next = tpdu

    def _fail(self, reason: str) -> NoReturn:
        self._next = None
        self._failed = True
        raise TransportError(f"{self.command.name}: {reason}")


def transceive(send: Callable[[bytes], bytes], command: Command | bytes,
               protocol: Protocol | str) -> Response:
    """Carry one command to the card through `send` and return its complete response."""
    exchange = Exchange(command, protocol)
    while (tpdu := exchange.next_tpdu()) is not None:
        exchange.receive(send(tpdu))
    return exchange.result
