"""What a module family adds to the simulator's core: its commands, URCs and start-up lines.

A `Dialect` is handed the `ModemSimulator` it runs in and uses its services (`info`, `urc`,
`prompt_data`, `create_socket`, `spawn`, ...). Handlers take an `ExtendedCommand` and return the
final result code (None for OK) or raise `AtFailure`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sim.modem.at_syntax import Arg, ExtendedCommand

if TYPE_CHECKING:
    from sim.modem.simulator import ModemSimulator
    from sim.modem.sockets import DataSocket

Handler = Callable[[ExtendedCommand], Awaitable[str | None]]

# 3GPP TS 27.007, 9.2.1: +CME ERROR <err> values and their verbose text (AT+CMEE=2).
CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    16: "incorrect password",
    30: "no network service",
    50: "Incorrect parameters",
    100: "unknown",
}

ERROR = "ERROR"
IMEI = "350000000000005"  # made up


class AtFailure(Exception):
    """A command ends with this final result code instead of OK."""

    def __init__(self, final: str) -> None:
        super().__init__(final)
        self.final = final


class Params:
    """The parameters of a set command, checked: any fault raises `AtFailure(failure)`."""

    def __init__(self, command: ExtendedCommand, failure: str, least: int, most: int) -> None:
        self.failure = failure
        if command.form != "set" or not least <= len(command.args) <= most:
            raise AtFailure(failure)
        self.args = command.args

    def __len__(self) -> int:
        return len(self.args)

    def _arg(self, index: int) -> Arg:
        return self.args[index] if index < len(self.args) else None

    def int(self, index: int, low: int, high: int, default: int | None = None) -> int:
        value = self._arg(index)
        if value is None and default is not None:
            return default
        if not isinstance(value, int) or not low <= value <= high:
            raise AtFailure(self.failure)
        return value

    def str(self, index: int, default: str | None = None, *, max_length: int = 255) -> str:
        value = self._arg(index)
        if value is None and default is not None:
            return default
        if not isinstance(value, str) or len(value) > max_length:
            raise AtFailure(self.failure)
        return value


class Dialect:
    """Base of the module families: the hooks the core calls."""

    name = ""
    max_sockets = 0
    manufacturer = ""
    model = ""
    revision = ""
    error_text: dict[int, str] = {}  # noqa: RUF012 - read-only table, overridden per dialect

    def __init__(self, modem: ModemSimulator) -> None:
        self.modem = modem

    def commands(self) -> dict[str, Handler]:
        return {}

    def identity(self) -> list[str]:
        """The information lines of ATI."""
        return [self.manufacturer, self.model, f"Revision: {self.revision}"]

    def boot_urcs(self) -> list[str]:
        """What the module says once it has started (after AT+CFUN=1,1)."""
        return ["RDY"]

    def sim_ready_urcs(self) -> list[str]:
        """What the module says once the SIM is unlocked (after AT+CPIN)."""
        return []

    def reset(self) -> None:
        """Forget the dialect's state: the module restarts."""

    def registration_lost(self) -> None:
        """The module left the network: PDP contexts and their sockets are gone."""

    def socket_closed_by_network(self, sock: DataSocket) -> None:
        """The network tore `sock` down (already aborted)."""

    def data_arrived(self, sock: DataSocket) -> None:
        """New bytes are in `sock.received`."""

    def peer_closed(self, sock: DataSocket) -> None:
        """The peer closed `sock` after everything it sent had arrived: both dialects report it
        as they report a close by the network."""
        self.socket_closed_by_network(sock)

    def current(self, sock: DataSocket) -> bool:
        """`sock` still holds its id (a URC about an older socket of that id is dropped)."""
        return self.modem.sockets.get(sock.socket_id) is sock

    def drop_sockets(self) -> None:
        """The network is gone: connected sockets are closed by it, opening ones abandoned."""
        for sock in list(self.modem.sockets.values()):
            if sock.state == "connected":
                sock.abort()
                self.socket_closed_by_network(sock)
            elif sock.state == "opening":
                sock.abort()

    def describe(self) -> str:
        """A few words of state for `status`."""
        return ""
