"""SIMCom SIM7500/SIM7600 modules (SIMCom "SIM7500_SIM7600 Series TCPIP Application Note" and
"AT Command Manual", chapter TCP/IP).

PDP context 1 from AT+CGDCONT (with AT+CGAUTH, whose password comes before the user name in
SIMCom's syntax), the socket service opened with AT+NETOPEN (OK then `+NETOPEN: <err>`), manual
receive with AT+CIPRXGET=1: `+CIPRXGET: 1,<link_num>` says data waits, AT+CIPRXGET=2 reads it
with what is left (`+CIPRXGET: 2,<link_num>,<read_len>,<rest_len>`); AT+CIPOPEN answers OK then
`+CIPOPEN: <link_num>,<err>`; AT+CIPSEND with the `>` prompt answers OK then
`+CIPSEND: <link_num>,<reqSendLength>,<cnfSendLength>`; the peer's close is `+IPCLOSE`, a lost
network `+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from modem.module import (
    Credentials,
    DataContextError,
    ModemError,
    Module,
    final_of,
    first_line,
    info_fields,
    int_fields,
)
from modem.runner import AtCommandError, AtError, AtResponse
from modem.socket_stream import ModemSocketError, SocketOpenError

log = logging.getLogger(__name__)

CONTEXT_ID = 1
# TCPIP Application Note, description of <err> (AT+NETOPEN, AT+CIPOPEN, AT+CIPCLOSE, ...)
ERRORS: dict[int, str] = {
    1: "network failure",
    2: "network not opened",
    3: "wrong parameter",
    4: "operation not supported",
    5: "failed to create socket",
    6: "failed to bind socket",
    7: "TCP server is already listening",
    8: "busy",
    9: "sockets opened",
    10: "timeout",
    11: "DNS parse failed",
    255: "unknown error",
}
# errors after which the network service is suspect: open it again before the next connection
NETWORK_ERRORS = frozenset({1, 2})
# +IPCLOSE <close_reason>
CLOSE_REASONS = {0: "closed by the module", 1: "closed by the peer", 2: "send timeout"}
# AT+CGAUTH <auth_type>: 0 none, 1 PAP, 2 CHAP
AUTH_PAP = 1
NETOPEN_TIMEOUT = 120.0
NETCLOSE_TIMEOUT = 30.0
CLOSE_TIMEOUT = 10.0
SEND_TIMEOUT = 30.0
# +CIPSEND with fewer bytes confirmed than asked: the rest is sent again, a few times
SEND_ATTEMPTS = 5
SEND_PAUSE = 0.2


def describe(code: int) -> str:
    return ERRORS.get(code, f"error {code}")


class SimcomModule(Module):
    """A SIMCom SIM7600-class module."""

    dialect = "SIMCom"
    socket_ids = range(10)  # <link_num> 0-9
    max_send = 1500  # AT+CIPSEND <length>
    max_read = 1500  # AT+CIPRXGET=2 <len>
    drain_after_close = True

    def _urc_handlers(self) -> dict[str, Callable[[str], None]]:
        return {
            "+CIPOPEN:": self._on_cipopen,
            "+CIPRXGET:": self._on_ciprxget,
            "+CIPSEND:": self._on_cipsend,
            "+CIPCLOSE:": self._on_cipclose,
            "+IPCLOSE:": self._on_ipclose,
            "+NETOPEN:": self._on_network("+NETOPEN"),
            "+NETCLOSE:": self._on_network("+NETCLOSE"),
            "+CIPEVENT:": self._on_cipevent,
        }

    async def _configure_context(self, credentials: Credentials) -> None:
        try:
            await self._at(f'AT+CGDCONT={CONTEXT_ID},"IP","{credentials.apn}"')
            if credentials.user or credentials.password:
                # SIMCom's order: <passwd> before <user>
                await self._at(f'AT+CGAUTH={CONTEXT_ID},{AUTH_PAP},"{credentials.password}",'
                               f'"{credentials.user}"')
        except AtCommandError as exc:
            raise DataContextError("the module refused the APN settings", code=final_of(exc)[1]) from None

    async def _network_open(self) -> bool:
        response = await self._at("AT+NETOPEN?", expect="+NETOPEN:")
        (state,) = int_fields(first_line(response, "+NETOPEN:"), "+NETOPEN:", 1)
        return state == 1

    async def _activate(self) -> None:
        if await self._network_open():
            log.info("SIMCom: the network service is open already")
            return
        error = await self._command_then_urc("AT+NETOPEN", ("+NETOPEN", None), NETOPEN_TIMEOUT,
                                             DataContextError, "AT+NETOPEN")
        if error[0] != 0:
            raise DataContextError(f"the module could not open the network ({describe(error[0])})",
                                   code=error[0])

    async def _after_activate(self) -> None:
        # manual receive: data waits in the module until AT+CIPRXGET=2
        await self._at("AT+CIPRXGET=1")

    async def _deactivate(self) -> None:
        error = await self._command_then_urc("AT+NETCLOSE", ("+NETCLOSE", None), NETCLOSE_TIMEOUT,
                                             DataContextError, "AT+NETCLOSE")
        if error[0] != 0:
            raise DataContextError(f"the module could not close the network ({describe(error[0])})",
                                   code=error[0])

    async def _command_then_urc(self, command: str, key: tuple[str, int | None], timeout: float,
                                error: type[DataContextError] | type[ModemSocketError],
                                what: str, *, data: bytes | None = None) -> list[int]:
        """`command`, its OK, then the URC with its outcome (`key`), within `timeout` seconds."""
        outcome = self._expect(key)
        try:
            try:
                response = await self._at(command, data=data)
            except AtCommandError as exc:
                result, code = final_of(exc)
                raise error(f"{what} refused ({result})", code=code) from None
            self._claimed_urcs(response)
            try:
                return await asyncio.wait_for(outcome, timeout)
            except TimeoutError:
                raise error(f"no {key[0]} within {timeout} s after {what}") from None
        finally:
            self._forget(key)

    def _claimed_urcs(self, response: AtResponse) -> None:
        """URCs the runner gave to the command because they came before its final result."""
        handlers = self._urc_handlers()
        for line in response.lines:
            for prefix, handler in handlers.items():
                if line.startswith(prefix):
                    handler(line)

    async def _open(self, socket_id: int, host: str, port: int, timeout: float) -> None:
        try:
            _socket_id, error = await self._command_then_urc(
                f'AT+CIPOPEN={socket_id},"TCP","{host}",{port}', ("+CIPOPEN", socket_id), timeout,
                SocketOpenError, "AT+CIPOPEN")
        except SocketOpenError as exc:
            if exc.code is None:  # no answer in time: the module may still be connecting
                await self._quiet_close(socket_id)
            raise
        if error != 0:
            if error in NETWORK_ERRORS and self._context_cause is None:
                self._context_cause = f"+CIPOPEN error {error} ({describe(error)})"
            raise SocketOpenError(f"the module could not connect ({describe(error)})", code=error)

    async def _quiet_close(self, socket_id: int) -> None:
        with contextlib.suppress(AtError, ModemError):
            await self._at(f"AT+CIPCLOSE={socket_id}", timeout=CLOSE_TIMEOUT)

    async def socket_send(self, socket_id: int, data: bytes) -> None:
        remaining = data
        for _attempt in range(SEND_ATTEMPTS):
            try:
                _link, _requested, confirmed = await self._command_then_urc(
                    f"AT+CIPSEND={socket_id},{len(remaining)}", ("+CIPSEND", socket_id), SEND_TIMEOUT,
                    ModemSocketError, "AT+CIPSEND", data=remaining)
            except (AtError, ModemError) as exc:
                raise ModemSocketError(f"AT+CIPSEND: {exc}") from exc
            if confirmed < 0:
                raise ModemSocketError("the connection is closed (+CIPSEND: -1)")
            remaining = remaining[confirmed:]
            if not remaining:
                return
            await asyncio.sleep(SEND_PAUSE)
        raise ModemSocketError(f"the module took {len(data) - len(remaining)} of {len(data)} bytes")

    async def socket_read(self, socket_id: int, size: int) -> tuple[bytes, bool]:
        try:
            response = await self._at(f"AT+CIPRXGET=2,{socket_id},{size}", expect="+CIPRXGET:")
        except AtCommandError as exc:
            result, code = final_of(exc)
            raise ModemSocketError(f"AT+CIPRXGET=2 refused ({result})", code=code) from None
        except (AtError, ModemError) as exc:
            raise ModemSocketError(f"AT+CIPRXGET=2: {exc}") from exc
        header: list[int] | None = None
        for line in response.lines:
            if line.startswith("+CIPRXGET: 2,"):
                header = int_fields(line, "+CIPRXGET:", 4)
            elif line.startswith("+CIPRXGET:"):
                self._on_ciprxget(line)  # a "data waits" URC that came during the command
        if header is None:
            raise ModemSocketError("no +CIPRXGET: 2 line in the answer to AT+CIPRXGET=2")
        _mode, link, length, rest = header
        data = response.data
        if link != socket_id or length != len(data) or length > size:
            raise ModemSocketError(f"+CIPRXGET announced {length} bytes of link {link}, "
                                   f"{len(data)} came")
        return data, rest > 0

    async def _close(self, socket_id: int, peer_closed: bool) -> None:
        if peer_closed:
            return  # +IPCLOSE: the module closed the link already
        try:
            _link, error = await self._command_then_urc(f"AT+CIPCLOSE={socket_id}", ("+CIPCLOSE", socket_id),
                                                        CLOSE_TIMEOUT, ModemSocketError, "AT+CIPCLOSE")
        except (AtError, ModemError) as exc:
            raise ModemSocketError(f"AT+CIPCLOSE: {exc}") from exc
        if error != 0:
            raise ModemSocketError(f"AT+CIPCLOSE failed ({describe(error)})", code=error)

    # --- URCs ----------------------------------------------------------------------------

    def _on_cipopen(self, line: str) -> None:
        fields = info_fields(line, "+CIPOPEN:")
        if len(fields) < 2 or fields[1].quoted:
            return  # an AT+CIPOPEN? answer line
        socket_id, error = int_fields(line, "+CIPOPEN:", 2)
        if not self._resolve(("+CIPOPEN", socket_id), [socket_id, error]):
            log.info("SIMCom: +CIPOPEN for link %d nobody waits for (error %d)", socket_id, error)
            if error == 0 and self._socket(socket_id) is None:
                self._spawn(self._quiet_close(socket_id))

    def _on_ciprxget(self, line: str) -> None:
        fields = info_fields(line, "+CIPRXGET:")
        if fields[0].value != "1" or len(fields) < 2:
            return
        socket_id = int_fields(line, "+CIPRXGET:", 2)[1]
        sock = self._socket(socket_id)
        if sock is not None:
            sock.data_waiting()

    def _on_cipsend(self, line: str) -> None:
        values = int_fields(line, "+CIPSEND:", 3)
        self._resolve(("+CIPSEND", values[0]), values)

    def _on_cipclose(self, line: str) -> None:
        values = int_fields(line, "+CIPCLOSE:", 2)
        self._resolve(("+CIPCLOSE", values[0]), values)

    def _on_ipclose(self, line: str) -> None:
        socket_id, reason = int_fields(line, "+IPCLOSE:", 2)
        sock = self._socket(socket_id)
        if sock is None:
            return
        log.info("SIMCom: link %d %s", socket_id, CLOSE_REASONS.get(reason, f"closed ({reason})"))
        sock.peer_closed(drain=self.drain_after_close)

    def _on_network(self, prefix: str) -> Callable[[str], None]:
        def handler(line: str) -> None:
            self._resolve((prefix, None), int_fields(line, prefix + ":", 1))
        return handler

    def _on_cipevent(self, line: str) -> None:
        event = line[len("+CIPEVENT:"):].strip()
        if event == "NETWORK CLOSED UNEXPECTEDLY":
            self._context_lost(f"+CIPEVENT: {event}")
        else:
            log.info("SIMCom: %s", line)
