"""Quectel EC2x/EG2x modules (Quectel "EC2x&EG2x&EG9x&EM05 Series TCP/IP AT Commands Manual").

Data context 1 with AT+QICSGP / AT+QIACT / AT+QIDEACT (2.1-2.4); TCP clients in buffer access
mode (access mode 0): AT+QIOPEN answers OK then `+QIOPEN: <connectID>,<err>` (2.7); data waits in
the module and `+QIURC: "recv",<connectID>` says so, read with AT+QIRD until `+QIRD: 0` (2.12,
4.2.1: no new "recv" URC until the buffer was read empty); AT+QISEND with the `>` prompt, up to
1460 bytes, then `SEND OK` (2.11); `+QIURC: "closed"` (4.2.2) leaves the received bytes readable
and the connectID held until AT+QICLOSE (2.8); `+QIURC: "pdpdeact"` (4.2.4) means the context is
gone.
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
    field_int,
    final_of,
    first_line,
    info_fields,
    int_fields,
)
from modem.runner import AtCommandError, AtError
from modem.socket_stream import ModemSocketError, SocketOpenError

log = logging.getLogger(__name__)

CONTEXT_ID = 1
# TCP/IP AT Commands Manual, 5 (summary of error codes)
ERRORS: dict[int, str] = {
    550: "unknown error",
    551: "operation blocked",
    552: "invalid parameters",
    553: "memory not enough",
    554: "create socket failed",
    555: "operation not supported",
    556: "socket bind failed",
    557: "socket listen failed",
    558: "socket write failed",
    559: "socket read failed",
    560: "socket accept failed",
    561: "open PDP context failed",
    562: "close PDP context failed",
    563: "socket identity has been used",
    564: "DNS busy",
    565: "DNS parse failed",
    566: "socket connect failed",
    567: "socket has been closed",
    568: "operation busy",
    569: "operation timeout",
    570: "PDP context broken down",
    571: "cancel send",
    572: "operation not allowed",
    573: "APN not configured",
    574: "port busy",
}
# errors after which the context itself is suspect: re-activate it before the next connection
CONTEXT_ERRORS = frozenset({561, 570, 573})
# AT+QICSGP <authentication>: 0 none, 1 PAP, 2 CHAP, 3 PAP or CHAP
AUTH_NONE, AUTH_PAP = 0, 1
# maximum response times the manual gives (2.4 QIACT 150 s, QIDEACT 40 s; 2.8 QICLOSE 10 s)
ACTIVATE_TIMEOUT = 150.0
DEACTIVATE_TIMEOUT = 40.0
CLOSE_TIMEOUT = 11.0
SEND_TIMEOUT = 10.0
# SEND FAIL: the module's send buffer is full; tried again after a pause
SEND_ATTEMPTS = 5
SEND_PAUSE = 0.2


def describe(code: int) -> str:
    return ERRORS.get(code, f"error {code}")


class QuectelModule(Module):
    """A Quectel EC25/EG25-class module."""

    dialect = "Quectel"
    socket_ids = range(12)  # <connectID> 0-11
    max_send = 1460  # AT+QISEND <send_length>
    max_read = 1500  # AT+QIRD <read_length>
    drain_after_close = True

    def _urc_handlers(self) -> dict[str, Callable[[str], None]]:
        return {"+QIURC:": self._on_qiurc, "+QIOPEN:": self._on_qiopen}

    async def _configure_context(self, credentials: Credentials) -> None:
        auth = AUTH_PAP if credentials.user or credentials.password else AUTH_NONE
        try:
            # <context_type> 1: IPv4
            await self._at(f'AT+QICSGP={CONTEXT_ID},1,"{credentials.apn}","{credentials.user}",'
                           f'"{credentials.password}",{auth}')
        except AtCommandError as exc:
            raise DataContextError("the module refused the APN settings", code=final_of(exc)[1]) from None

    async def _context_active(self) -> bool:
        response = await self._at("AT+QIACT?", expect="+QIACT:")
        for line in response.lines:
            if line.startswith("+QIACT:"):
                context, state = int_fields(line, "+QIACT:", 2)
                if context == CONTEXT_ID and state == 1:
                    return True
        return False

    async def _activate(self) -> None:
        if await self._context_active():
            log.info("Quectel: data context %d already active", CONTEXT_ID)
            return
        try:
            await self._at(f"AT+QIACT={CONTEXT_ID}", timeout=ACTIVATE_TIMEOUT)
        except AtCommandError as exc:
            raise DataContextError("the module could not activate the data context",
                                   code=final_of(exc)[1]) from None

    async def _deactivate(self) -> None:
        try:
            await self._at(f"AT+QIDEACT={CONTEXT_ID}", timeout=DEACTIVATE_TIMEOUT)
        except AtCommandError as exc:
            raise DataContextError("the module could not deactivate the data context",
                                   code=final_of(exc)[1]) from None

    async def _after_activate(self) -> None:
        """Nothing: buffer access mode is chosen per connection in AT+QIOPEN."""

    async def _open(self, socket_id: int, host: str, port: int, timeout: float) -> None:
        key = ("+QIOPEN", socket_id)
        opened = self._expect(key)
        try:
            try:
                # <access_mode> 0: buffer access mode; <local_port> 0: any
                await self._at(f'AT+QIOPEN={CONTEXT_ID},{socket_id},"TCP","{host}",{port},0,0')
            except AtCommandError as exc:
                code = final_of(exc)[1]
                raise SocketOpenError("the module refused AT+QIOPEN", code=code) from None
            try:
                _socket_id, error = await asyncio.wait_for(opened, timeout)
            except TimeoutError:
                await self._quiet_close(socket_id)
                raise SocketOpenError(f"no +QIOPEN within {timeout} s") from None
        finally:
            self._forget(key)
        if error != 0:
            if error in CONTEXT_ERRORS and self._context_cause is None:
                self._context_cause = f"+QIOPEN error {error} ({describe(error)})"
            # 2.7: after a failed open the connectID is closed with AT+QICLOSE
            await self._quiet_close(socket_id)
            raise SocketOpenError(f"the module could not connect ({describe(error)})", code=error)

    async def _quiet_close(self, socket_id: int) -> None:
        with contextlib.suppress(AtError, ModemError):
            await self._at(f"AT+QICLOSE={socket_id}", timeout=CLOSE_TIMEOUT)

    async def socket_send(self, socket_id: int, data: bytes) -> None:
        for _attempt in range(SEND_ATTEMPTS):
            try:
                response = await self._at(f"AT+QISEND={socket_id},{len(data)}", data=data,
                                          timeout=SEND_TIMEOUT)
            except AtCommandError as exc:
                result, code = final_of(exc)
                if result == "SEND FAIL":
                    await asyncio.sleep(SEND_PAUSE)
                    continue
                raise ModemSocketError(f"AT+QISEND refused ({result}): the connection is gone",
                                       code=code) from None
            except (AtError, ModemError) as exc:
                raise ModemSocketError(f"AT+QISEND: {exc}") from exc
            if response.final.result == "SEND FAIL":
                await asyncio.sleep(SEND_PAUSE)
                continue
            return
        raise ModemSocketError(f"the module's send buffer stayed full ({SEND_ATTEMPTS} x SEND FAIL)")

    async def socket_read(self, socket_id: int, size: int) -> tuple[bytes, bool]:
        try:
            response = await self._at(f"AT+QIRD={socket_id},{size}", expect="+QIRD:")
            (length,) = int_fields(first_line(response, "+QIRD:"), "+QIRD:", 1)
        except AtCommandError as exc:
            result, code = final_of(exc)
            raise ModemSocketError(f"AT+QIRD refused ({result})", code=code) from None
        except (AtError, ModemError) as exc:
            raise ModemSocketError(f"AT+QIRD: {exc}") from exc
        data = response.data
        if length != len(data) or length > size:
            raise ModemSocketError(f"+QIRD announced {length} bytes and {len(data)} came")
        # 2.12: read until +QIRD: 0, or no "recv" URC comes for the next data
        return data, length > 0

    async def _close(self, socket_id: int, peer_closed: bool) -> None:
        try:
            await self._at(f"AT+QICLOSE={socket_id}", timeout=CLOSE_TIMEOUT)
        except AtCommandError as exc:
            result, code = final_of(exc)
            raise ModemSocketError(f"AT+QICLOSE refused ({result})", code=code) from None
        except (AtError, ModemError) as exc:
            raise ModemSocketError(f"AT+QICLOSE: {exc}") from exc

    # --- URCs (4.2) --------------------------------------------------------------------

    def _on_qiopen(self, line: str) -> None:
        socket_id, error = int_fields(line, "+QIOPEN:", 2)
        if not self._resolve(("+QIOPEN", socket_id), [socket_id, error]):
            log.info("Quectel: +QIOPEN for connection %d nobody waits for (error %d)", socket_id, error)
            if error == 0 and self._socket(socket_id) is None:
                # an open given up on that the module finished anyway
                self._spawn(self._quiet_close(socket_id))

    def _on_qiurc(self, line: str) -> None:
        fields = info_fields(line, "+QIURC:")
        kind = fields[0].value
        if kind in ("recv", "closed"):
            socket_id = field_int(fields, 1, line)
            sock = self._socket(socket_id)
            if sock is None:
                log.info("Quectel: %s for connection %d, which is not open here", kind, socket_id)
            elif kind == "recv":
                sock.data_waiting()
            else:
                log.info("Quectel: the network closed connection %d", socket_id)
                sock.peer_closed(drain=self.drain_after_close)
        elif kind == "pdpdeact":
            context = field_int(fields, 1, line)
            if context == CONTEXT_ID:
                self._context_lost(f'+QIURC: "pdpdeact",{context}')
        elif kind == "incoming full":
            log.warning("Quectel: the module's receive buffer is full")
        else:
            log.debug("Quectel: URC ignored: %s", kind)

