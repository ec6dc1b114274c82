"""The Quectel EC2x dialect ("EC2x&EG9x&EG2x-G&EM05 Series TCP/IP(s) AT Commands Manual"): PDP
contexts with AT+QICSGP/QIACT/QIDEACT, TCP client sockets with AT+QIOPEN/QISEND/QIRD/QICLOSE/
QISTATE, and their URCs +QIOPEN, +QIURC: "recv"/"closed"/"pdpdeact".

Simplified: TCP clients only (no UDP, no listeners), buffer access mode (0) and direct push
mode (1) but not transparent mode (2); AT+QISEND takes a fixed length only (no Ctrl+Z mode);
each context gets a made-up IPv4 address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.modem.at_syntax import ExtendedCommand
from sim.modem.dialect import ERROR, AtFailure, Dialect, Handler, Params

if TYPE_CHECKING:
    from sim.modem.simulator import ModemSimulator
    from sim.modem.sockets import DataSocket

MAX_SEND = 1460  # AT+QISEND: <send_length> up to 1460
MAX_READ = 1500  # AT+QIRD: <read_length> up to 1500
# Manual, "Summary of Error Codes" (the <err> of +QIOPEN and AT+QIGETERROR).
QUECTEL_ERRORS = {
    0: "operation successful", 550: "unknown error", 551: "operation blocked", 552: "invalid parameters",
    553: "memory not enough", 554: "create socket failed", 555: "operation not supported",
    556: "socket bind failed", 557: "socket listen failed", 558: "socket write failed",
    559: "socket read failed", 560: "socket accept failed", 561: "open PDP context failed",
    562: "close PDP context failed", 563: "socket identity has been used", 564: "DNS busy",
    565: "DNS parse failed", 566: "socket connect failed", 567: "socket has been closed",
    568: "operation busy", 569: "operation timeout", 570: "PDP context broken down", 571: "cancel send",
    572: "operation not allowed", 573: "APN not configured", 574: "port busy",
}
_CONNECT_FAILURE = {"dns": 565, "refused": 566, "timeout": 569, "aborted": 566}
# AT+QICSGP <context_type>: 1 IPv4, 2 IPv6, 3 IPv4v6.
_CONTEXT_TYPE = {"IP": 1, "IPV6": 2, "IPV4V6": 3}
# AT+QISTATE <socket_state>: 1 opening, 2 connected, 4 closing.
_SOCKET_STATE = {"opening": 1, "connected": 2, "closing": 4}
_NETWORK_INFO = {"4G": '"FDD LTE","{plmn}","LTE BAND 3",1300', "3G": '"WCDMA","{plmn}","WCDMA 2100",10700',
                 "2G": '"GSM","{plmn}","GSM 900",62'}


class Quectel(Dialect):
    name = "quectel"
    max_sockets = 12  # <connectID> 0-11
    manufacturer = "Quectel"
    model = "EC25"
    revision = "EC25EFAR06A06M4G"
    error_text = QUECTEL_ERRORS

    def __init__(self, modem: ModemSimulator) -> None:
        super().__init__(modem)
        self.active: dict[int, str] = {}  # activated PDP contexts: <contextID> -> IP address
        self.last_error = 0

    def reset(self) -> None:
        self.active = {}
        self.last_error = 0

    def commands(self) -> dict[str, Handler]:
        return {"+QICSGP": self._qicsgp, "+QIACT": self._qiact, "+QIDEACT": self._qideact,
                "+QIOPEN": self._qiopen, "+QISEND": self._qisend, "+QIRD": self._qird,
                "+QICLOSE": self._qiclose, "+QISTATE": self._qistate, "+QIGETERROR": self._qigeterror,
                "+QNWINFO": self._qnwinfo, "+QCCID": self._qccid, "+QPINC": self._qpinc}

    def boot_urcs(self) -> list[str]:
        sim = self.modem.sim_state
        urcs = ["RDY", "+CFUN: 1"]
        if sim == "absent":
            return [*urcs, "+CPIN: NOT INSERTED"]
        if sim == "ready":
            return [*urcs, "+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE", "+QIND: PB DONE"]
        return [*urcs, "+CPIN: SIM PIN" if sim == "pin" else "+CPIN: SIM PUK", "+QUSIM: 1"]

    def sim_ready_urcs(self) -> list[str]:
        return ["+QIND: SMS DONE", "+QIND: PB DONE"]

    def describe(self) -> str:
        return "pdp=" + (",".join(str(cid) for cid in sorted(self.active)) or "none")

    # -- events ------------------------------------------------------------------------------

    def registration_lost(self) -> None:
        """The network deactivated the contexts: +QIURC: "pdpdeact", then each socket closed."""
        for context in sorted(self.active):
            self.modem.urc(f'+QIURC: "pdpdeact",{context}')
        self.active = {}
        self.drop_sockets()

    def socket_closed_by_network(self, sock: DataSocket) -> None:
        self.modem.urc(f'+QIURC: "closed",{sock.socket_id}', valid=lambda: self.current(sock))

    def data_arrived(self, sock: DataSocket) -> None:
        if sock.push:
            data = sock.read(len(sock.received))
            self.modem.urc(f'+QIURC: "recv",{sock.socket_id},{len(data)}', data=data + b"\r\n")
        elif not sock.notified:
            # Buffer access mode: one URC until the buffer has been read empty.
            sock.notified = True
            self.modem.urc(f'+QIURC: "recv",{sock.socket_id}',
                           valid=lambda: self.current(sock) and bool(sock.received))

    def _fail(self, code: int) -> AtFailure:
        self.last_error = code
        return AtFailure(ERROR)

    # -- commands ----------------------------------------------------------------------------

    async def _qicsgp(self, command: ExtendedCommand) -> str | None:
        """AT+QICSGP=<contextID>[,<context_type>,<APN>[,<username>,<password>[,<authentication>]]]."""
        params = Params(command, ERROR, 1, 6)
        cid = params.int(0, 1, 16)
        if len(params) == 1:
            kind, apn, user, password, auth = self.modem.pdp_profiles.get(cid, ("IP", "", "", "", 0))
            self.modem.info(f'+QICSGP: {_CONTEXT_TYPE[kind]},"{apn}","{user}","{password}",{auth}')
            return None
        if len(params) not in (3, 5, 6):
            raise self._fail(552)
        kind = {number: name for name, number in _CONTEXT_TYPE.items()}[params.int(1, 1, 3)]
        self.modem.pdp_profiles[cid] = (kind, params.str(2, ""), params.str(3, ""), params.str(4, ""),
                                        params.int(5, 0, 3, 0))
        return None

    async def _qiact(self, command: ExtendedCommand) -> str | None:
        """AT+QIACT=<contextID> (up to 150 s on a real network); AT+QIACT? lists the active ones."""
        if command.form == "read":
            lines = []
            for cid, address in sorted(self.active.items()):
                kind = self.modem.pdp_profiles.get(cid, ("IP",))[0]
                lines.append(f'+QIACT: {cid},1,{_CONTEXT_TYPE[kind]},"{address}"')
            if lines:
                self.modem.info(*lines)
            return None
        cid = Params(command, ERROR, 1, 1).int(0, 1, 16)
        if cid in self.active or not self.modem.registered:
            raise self._fail(561)
        await self.modem.network_delay()
        if not self.modem.registered or not self.modem.apn_accepted(cid):
            raise self._fail(561)
        self.active[cid] = self.modem.new_ip_address()
        self.last_error = 0
        return None

    async def _qideact(self, command: ExtendedCommand) -> str | None:
        """AT+QIDEACT=<contextID>: the context's sockets are closed with it."""
        cid = Params(command, ERROR, 1, 1).int(0, 1, 16)
        self.active.pop(cid, None)
        for socket_id, sock in list(self.modem.sockets.items()):
            if sock.context == cid:
                sock.abort(final_state="closed")
                del self.modem.sockets[socket_id]
        return None

    async def _qiopen(self, command: ExtendedCommand) -> str | None:
        """AT+QIOPEN=<contextID>,<connectID>,"TCP",<host>,<port>[,<local_port>[,<access_mode>]]:
        OK, then +QIOPEN: <connectID>,<err> once the connection is up or has failed."""
        params = Params(command, ERROR, 5, 7)
        try:
            cid, socket_id = params.int(0, 1, 16), params.int(1, 0, self.max_sockets - 1)
            service, host = params.str(2).upper(), params.str(3)
            port, access = params.int(4, 1, 65535), params.int(6, 0, 2, 0)
            params.int(5, 0, 65535, 0)
        except AtFailure:
            self.last_error = 552
            raise
        if service != "TCP" or access == 2 or not host:
            raise self._fail(555 if host else 552)
        if socket_id in self.modem.sockets:
            self.last_error = 563
            self.modem.urc(f"+QIOPEN: {socket_id},563")
            return None
        if cid not in self.active:
            self.last_error = 561
            self.modem.urc(f"+QIOPEN: {socket_id},561")
            return None
        sock = self.modem.create_socket(socket_id, host, port, context=cid, push=access == 1)
        self.modem.spawn(self._open(sock))
        return None

    async def _open(self, sock: DataSocket) -> None:
        failure = await sock.connect(self.modem.connect_timeout)
        if not self.current(sock) or sock.state == "closed":
            return
        if failure is None:
            self.last_error = 0
            self.modem.urc(f"+QIOPEN: {sock.socket_id},0")
            return
        # The connectID stays taken until AT+QICLOSE, as on the module.
        sock.abort()
        self.last_error = _CONNECT_FAILURE[failure]
        self.modem.urc(f"+QIOPEN: {sock.socket_id},{self.last_error}")

    async def _qisend(self, command: ExtendedCommand) -> str | None:
        """AT+QISEND=<connectID>,<send_length>: "> ", the data, SEND OK (or SEND FAIL when the
        send buffer is full); AT+QISEND=<connectID>,0: +QISEND: <total>,<acked>,<unacked>."""
        params = Params(command, ERROR, 2, 2)
        socket_id, length = params.int(0, 0, self.max_sockets - 1), params.int(1, 0, MAX_SEND)
        sock = self.modem.sockets.get(socket_id)
        if length == 0:
            if sock is None:
                raise self._fail(552)
            self.modem.info(f"+QISEND: {sock.sent_total},{sock.acked},{sock.unacked}")
            return None
        if sock is None or sock.state != "connected":
            raise self._fail(567)
        data = await self.modem.prompt_data(length)
        if sock.state != "connected" or sock.unacked + length > self.modem.send_buffer:
            return "SEND FAIL"
        sock.send(data)
        return "SEND OK"

    async def _qird(self, command: ExtendedCommand) -> str | None:
        """AT+QIRD=<connectID>[,<read_length>]: +QIRD: <n> and n bytes; with length 0:
        +QIRD: <total_receive_length>,<have_read_length>,<unread_length>."""
        params = Params(command, ERROR, 1, 2)
        socket_id, length = params.int(0, 0, self.max_sockets - 1), params.int(1, 0, MAX_READ, MAX_READ)
        sock = self.modem.sockets.get(socket_id)
        if sock is None:
            raise self._fail(552)
        if length == 0:
            self.modem.info(f"+QIRD: {sock.received_total},{sock.read_total},{len(sock.received)}")
            return None
        data = sock.read(length)
        if data:
            self.modem.info_data(f"+QIRD: {len(data)}", data)
        else:
            self.modem.info("+QIRD: 0")
        return None

    async def _qiclose(self, command: ExtendedCommand) -> str | None:
        """AT+QICLOSE=<connectID>[,<timeout>]: the socket is closed and its connectID free."""
        params = Params(command, ERROR, 1, 2)
        socket_id = params.int(0, 0, self.max_sockets - 1)
        params.int(1, 0, 65535, 10)
        sock = self.modem.sockets.pop(socket_id, None)
        if sock is not None:
            sock.close()
        return None

    async def _qistate(self, command: ExtendedCommand) -> str | None:
        """AT+QISTATE? (all sockets), AT+QISTATE=0,<contextID>, AT+QISTATE=1,<connectID>."""
        sockets = sorted(self.modem.sockets.items())
        if command.form == "set":
            params = Params(command, ERROR, 2, 2)
            kind = params.int(0, 0, 1)
            value = params.int(1, 0, 16)
            sockets = [(sid, sock) for sid, sock in sockets if (sock.context if kind == 0 else sid) == value]
        elif command.form not in ("read", "action"):
            raise AtFailure(ERROR)
        lines = [f'+QISTATE: {sid},"TCP","{sock.host}",{sock.port},{sock.local_port},'
                 f'{_SOCKET_STATE.get(sock.state, 4)},{sock.context},0,{1 if sock.push else 0},"uart1"'
                 for sid, sock in sockets]
        if lines:
            self.modem.info(*lines)
        return None

    async def _qigeterror(self, command: ExtendedCommand) -> str | None:
        if command.form != "action":
            raise AtFailure(ERROR)
        self.modem.info(f"+QIGETERROR: {self.last_error},{QUECTEL_ERRORS[self.last_error]}")
        return None

    async def _qnwinfo(self, command: ExtendedCommand) -> str | None:
        if command.form != "action":
            raise AtFailure(ERROR)
        conditions = self.modem.conditions
        if self.modem.registered:
            self.modem.info("+QNWINFO: " + _NETWORK_INFO[conditions.technology].format(plmn=conditions.plmn))
        else:
            self.modem.info("+QNWINFO: No Service")
        return None

    async def _qccid(self, command: ExtendedCommand) -> str | None:
        if command.form != "action":
            raise AtFailure(ERROR)
        if self.modem.sim_state == "absent":
            raise self.modem.cme(10)
        self.modem.info("+QCCID: 89001010000000000019")
        return None

    async def _qpinc(self, command: ExtendedCommand) -> str | None:
        """AT+QPINC="SC": the PIN and PUK tries left."""
        line = f'+QPINC: "SC",{self.modem.pin_tries},{self.modem.puk_tries}'
        if command.form == "read":
            self.modem.info(line, '+QPINC: "P2",3,10')
            return None
        if Params(command, self.modem.cme_text(50), 1, 1).str(0).upper() != "SC":
            raise self.modem.cme(50)
        self.modem.info(line)
        return None
