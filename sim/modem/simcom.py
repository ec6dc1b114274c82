"""The SIMCom SIM7600 dialect ("SIM7500_SIM7600 Series TCP/IP Application Note" and AT Command
Manual): the packet network with AT+NETOPEN/NETCLOSE, TCP client links with AT+CIPOPEN/
CIPSEND/CIPCLOSE, manual receive with AT+CIPRXGET, and the URCs +NETOPEN, +CIPOPEN, +CIPSEND,
+CIPRXGET: 1, +IPCLOSE and +CIPEVENT.

Simplified: TCP clients only (no UDP, no servers), non-transparent mode only (AT+CIPMODE=0),
AT+CIPSEND with a fixed length only (no Ctrl+Z mode), no hex read (AT+CIPRXGET=3). Received
data in the default push mode (AT+CIPRXGET=0) comes as "RECV FROM:<ip>:<port>" and
"+IPD<len>" (AT+CIPSRIP=1 and AT+CIPHEAD=1, the defaults), which cannot be changed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.modem.at_syntax import ExtendedCommand
from sim.modem.dialect import ERROR, IMEI, AtFailure, Dialect, Handler, Params

if TYPE_CHECKING:
    from sim.modem.simulator import ModemSimulator
    from sim.modem.sockets import DataSocket

MAX_SEND = 1500  # AT+CIPSEND <length> 1-1500
MAX_READ = 1500  # AT+CIPRXGET=2 <len> 1-1500
# AT Command Manual, "Unsolicited TCP/IP command <err> codes" (+NETOPEN, +CIPOPEN, +CIPCLOSE).
_CONNECT_FAILURE = {"refused": 1, "timeout": 10, "dns": 11, "aborted": 1}
NETWORK_FAILURE, NETWORK_NOT_OPENED, OPERATION_NOT_SUPPORTED = 1, 2, 4
# +IPCLOSE <close_reason>: 0 closed by the local side, 1 by the remote side, 2 send timeout.
CLOSED_BY_REMOTE = 1


class Simcom(Dialect):
    name = "simcom"
    max_sockets = 10  # <link_num> 0-9
    manufacturer = "SIMCOM INCORPORATED"
    model = "SIMCOM_SIM7600E-H"
    revision = "SIM7600M22_V2.0"

    def __init__(self, modem: ModemSimulator) -> None:
        super().__init__(modem)
        self.net_open = False
        self.net_opening = False
        self.manual_receive = False  # AT+CIPRXGET=1
        self.address = ""

    def reset(self) -> None:
        self.net_open = self.net_opening = self.manual_receive = False
        self.address = ""

    def commands(self) -> dict[str, Handler]:
        return {"+NETOPEN": self._netopen, "+NETCLOSE": self._netclose, "+IPADDR": self._ipaddr,
                "+CIPRXGET": self._ciprxget, "+CIPOPEN": self._cipopen, "+CIPSEND": self._cipsend,
                "+CIPCLOSE": self._cipclose, "+CIPMODE": self._cipmode, "+CRESET": self._creset,
                "+CICCID": self._ciccid, "+SPIC": self._spic}

    def identity(self) -> list[str]:
        return [f"Manufacturer: {self.manufacturer}", f"Model: {self.model}", f"Revision: {self.revision}",
                f"IMEI: {IMEI}", "+GCAP: +CGSM"]

    def boot_urcs(self) -> list[str]:
        sim = self.modem.sim_state
        if sim == "absent":
            return ["RDY", "+CPIN: SIM REMOVED"]
        if sim == "ready":
            return ["RDY", "+CPIN: READY", "SMS DONE", "PB DONE"]
        return ["RDY", "+CPIN: SIM PIN" if sim == "pin" else "+CPIN: SIM PUK"]

    def sim_ready_urcs(self) -> list[str]:
        return ["SMS DONE", "PB DONE"]

    def describe(self) -> str:
        return f"net={'open' if self.net_open else 'closed'} rxget={1 if self.manual_receive else 0}"

    # -- events ------------------------------------------------------------------------------

    def registration_lost(self) -> None:
        """The network dropped the packet service: +CIPEVENT, then +IPCLOSE for each link."""
        if not self.net_open:
            return
        self.net_open = False
        self.modem.urc("+CIPEVENT: NETWORK CLOSED UNEXPECTEDLY")
        self.drop_sockets()

    def socket_closed_by_network(self, sock: DataSocket) -> None:
        self.modem.urc(f"+IPCLOSE: {sock.socket_id},{CLOSED_BY_REMOTE}", valid=lambda: self.current(sock))

    def data_arrived(self, sock: DataSocket) -> None:
        if sock.push:
            data = sock.read(len(sock.received))
            self.modem.urc(f"RECV FROM:{sock.host}:{sock.port}")
            self.modem.urc(f"+IPD{len(data)}", data=data)
        elif not sock.notified:
            # Manual receive: one URC until the buffer has been read empty.
            sock.notified = True
            self.modem.urc(f"+CIPRXGET: 1,{sock.socket_id}",
                           valid=lambda: self.current(sock) and bool(sock.received))

    def _ip_error(self, text: str) -> AtFailure:
        self.modem.info(f"+IP ERROR: {text}")
        return AtFailure(ERROR)

    def _link(self, params: Params, index: int = 0) -> int:
        return params.int(index, 0, self.max_sockets - 1)

    # -- commands ----------------------------------------------------------------------------

    async def _netopen(self, command: ExtendedCommand) -> str | None:
        """AT+NETOPEN: OK, then +NETOPEN: 0 (or 1: network failure). AT+NETOPEN? tells."""
        if command.form == "read":
            self.modem.info(f"+NETOPEN: {1 if self.net_open else 0}")
            return None
        if command.form != "action":
            raise AtFailure(ERROR)
        if self.net_open or self.net_opening:
            raise self._ip_error("Network is already opened")
        self.net_opening = True
        self.modem.spawn(self._open_network())
        return None

    async def _open_network(self) -> None:
        try:
            await self.modem.network_delay()
        finally:
            self.net_opening = False
        if self.modem.registered and self.modem.apn_accepted(1):
            self.net_open = True
            self.address = self.modem.new_ip_address()
            self.modem.urc("+NETOPEN: 0")
        else:
            self.modem.urc(f"+NETOPEN: {NETWORK_FAILURE}")

    async def _netclose(self, command: ExtendedCommand) -> str | None:
        """AT+NETCLOSE: every link closed, OK, then +NETCLOSE: 0."""
        if command.form != "action":
            raise AtFailure(ERROR)
        if not self.net_open:
            raise self._ip_error("Network is already closed")
        for sock in self.modem.sockets.values():
            sock.close()
        self.modem.sockets.clear()
        self.net_open = False
        self.modem.urc("+NETCLOSE: 0")
        return None

    async def _ipaddr(self, command: ExtendedCommand) -> str | None:
        if command.form != "action":
            raise AtFailure(ERROR)
        if not self.net_open:
            raise self._ip_error("Network not opened")
        self.modem.info(f"+IPADDR: {self.address}")
        return None

    async def _ciprxget(self, command: ExtendedCommand) -> str | None:
        """AT+CIPRXGET=0|1 (push or manual receive), =2,<link>[,<len>] (read), =4,<link> (left)."""
        if command.form == "read":
            self.modem.info(f"+CIPRXGET: {1 if self.manual_receive else 0}")
            return None
        params = Params(command, ERROR, 1, 3)
        mode = params.int(0, 0, 4)
        if mode in (0, 1) and len(params) == 1:
            self.manual_receive = mode == 1
            return None
        if mode == 2 and len(params) in (2, 3):
            link, length = self._link(params, 1), params.int(2, 1, MAX_READ, MAX_READ)
            sock = self.modem.sockets.get(link)
            if sock is None:
                raise AtFailure(ERROR)
            if not sock.received:
                raise self._ip_error("No data")
            data = sock.read(length)
            self.modem.info_data(f"+CIPRXGET: 2,{link},{len(data)},{len(sock.received)}", data)
            return None
        if mode == 4 and len(params) == 2:
            link = self._link(params, 1)
            sock = self.modem.sockets.get(link)
            if sock is None:
                raise AtFailure(ERROR)
            self.modem.info(f"+CIPRXGET: 4,{link},{len(sock.received)}")
            return None
        raise AtFailure(ERROR)

    async def _cipopen(self, command: ExtendedCommand) -> str | None:
        """AT+CIPOPEN=<link_num>,"TCP",<serverIP>,<serverPort>[,<localPort>]: OK, then
        +CIPOPEN: <link_num>,<err>. AT+CIPOPEN? lists the links."""
        if command.form == "read":
            lines = []
            for link in range(self.max_sockets):
                sock = self.modem.sockets.get(link)
                if sock is not None and sock.state in ("opening", "connected"):
                    lines.append(f'+CIPOPEN: {link},"TCP","{sock.host}",{sock.port},-1')
                else:
                    lines.append(f"+CIPOPEN: {link}")
            self.modem.info(*lines)
            return None
        params = Params(command, ERROR, 4, 5)
        link, kind, host = self._link(params), params.str(1).upper(), params.str(2)
        port = params.int(3, 1, 65535)
        params.int(4, 0, 65535, 0)
        if kind != "TCP" or not host:
            raise AtFailure(ERROR)
        existing = self.modem.sockets.get(link)
        if existing is not None and existing.state in ("opening", "connected"):
            self.modem.urc(f"+CIPOPEN: {link},{OPERATION_NOT_SUPPORTED}")
            return None
        if not self.net_open:
            self.modem.urc(f"+CIPOPEN: {link},{NETWORK_NOT_OPENED}")
            return None
        sock = self.modem.create_socket(link, host, port, push=not self.manual_receive)
        self.modem.spawn(self._open(sock))
        return None

    async def _open(self, sock: DataSocket) -> None:
        failure = await sock.connect(self.modem.connect_timeout)
        if not self.current(sock) or sock.state == "closed":
            return
        if failure is None:
            self.modem.urc(f"+CIPOPEN: {sock.socket_id},0")
            return
        sock.abort()
        del self.modem.sockets[sock.socket_id]
        self.modem.urc(f"+CIPOPEN: {sock.socket_id},{_CONNECT_FAILURE[failure]}")

    async def _cipsend(self, command: ExtendedCommand) -> str | None:
        """AT+CIPSEND=<link_num>,<length>: ">", the data, OK, then +CIPSEND: <link>,<req>,<cnf>
        once it is on the air (<cnf> 0: the send buffer was full; -1: the link is down)."""
        params = Params(command, ERROR, 2, 2)
        link, length = self._link(params), params.int(1, 1, MAX_SEND)
        sock = self.modem.sockets.get(link)
        if sock is None or sock.state != "connected":
            raise AtFailure(ERROR)
        data = await self.modem.prompt_data(length)
        if sock.state != "connected":
            self.modem.urc(f"+CIPSEND: {link},{length},-1")
        elif sock.unacked + length > self.modem.send_buffer:
            self.modem.urc(f"+CIPSEND: {link},{length},0")
        else:
            sock.send(data, on_air=lambda: self.modem.urc(f"+CIPSEND: {link},{length},{length}"))
        return None

    async def _cipclose(self, command: ExtendedCommand) -> str | None:
        """AT+CIPCLOSE=<link_num>: OK, then +CIPCLOSE: <link_num>,0. AT+CIPCLOSE? tells which
        links are open."""
        if command.form == "read":
            states = [1 if (sock := self.modem.sockets.get(link)) is not None and sock.state == "connected"
                      else 0 for link in range(self.max_sockets)]
            self.modem.info("+CIPCLOSE: " + ",".join(map(str, states)))
            return None
        link = self._link(Params(command, ERROR, 1, 1))
        sock = self.modem.sockets.get(link)
        if sock is None or sock.state not in ("opening", "connected"):
            raise AtFailure(ERROR)
        del self.modem.sockets[link]
        sock.close()
        self.modem.urc(f"+CIPCLOSE: {link},0")
        return None

    async def _cipmode(self, command: ExtendedCommand) -> str | None:
        if command.form == "read":
            self.modem.info("+CIPMODE: 0")
            return None
        if Params(command, ERROR, 1, 1).int(0, 0, 1) != 0:
            raise AtFailure(ERROR)  # transparent mode is not simulated
        return None

    async def _creset(self, command: ExtendedCommand) -> str | None:
        if command.form != "action":
            raise AtFailure(ERROR)
        self.modem.after_final(self.modem.reboot)
        return None

    async def _ciccid(self, command: ExtendedCommand) -> str | None:
        if command.form != "action":
            raise AtFailure(ERROR)
        if self.modem.sim_state == "absent":
            raise self.modem.cme(10)
        self.modem.info("+ICCID: 89001010000000000019")
        return None

    async def _spic(self, command: ExtendedCommand) -> str | None:
        """AT+SPIC: the PIN1, PUK1, PIN2 and PUK2 tries left."""
        if command.form != "action":
            raise AtFailure(ERROR)
        self.modem.info(f"+SPIC: {self.modem.pin_tries},{self.modem.puk_tries},3,10")
        return None
