"""What the simulated module sees of the cellular network: conditions, and the radio link.

`NetworkConditions` holds the knobs a test turns (round-trip time, bandwidth, signal, registration,
the module's own delays). `Radio` carries data sockets' bytes across the air interface with those
conditions: each direction is one shared channel where a packet first waits for the channel, then
takes `bytes * 8 / bandwidth` to serialise and `rtt / 2` to propagate. The conditions are read
again for every packet, so a change takes effect in the middle of a transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# 3GPP TS 27.007, 7.2: <stat> of +CREG/+CGREG/+CEREG.
REGISTRATION_STAT = {"none": 0, "home": 1, "searching": 2, "denied": 3, "roaming": 5}
REGISTERED = frozenset({"home", "roaming"})
# 3GPP TS 27.007, 7.3: <AcT> of +COPS (0 GSM, 2 UTRAN, 7 E-UTRAN).
TECHNOLOGY_ACT = {"2G": 0, "3G": 2, "4G": 7}
# The largest payload one radio packet carries (a TCP segment on a 1500-byte MTU).
PACKET_SIZE = 1460


class ConditionsError(ValueError):
    """A network condition out of range; the message says which and why."""


@dataclass(frozen=True)
class NetworkConditions:
    """The network as the simulated module finds it. Times in milliseconds.

    `bandwidth_kbit` None is an unlimited radio; `signal_dbm` None is an unknown signal
    (`+CSQ: 99,99`). `open_delay_ms` is the module's own time to set up a socket or a PDP
    context, on top of the round trip of the handshake; `answer_delay_ms` holds back every
    answer to a command (a slow module). `attach_ms` is how long the module searches before it
    registers after start-up, PIN entry or radio on. With `required_apn` set, the network
    refuses a PDP context on any other APN.
    """

    rtt_ms: float = 0.0
    bandwidth_kbit: float | None = None
    signal_dbm: int | None = -75
    registration: str = "home"
    technology: str = "4G"
    operator: str = "TestNet"
    plmn: str = "00101"  # ITU-T E.212 test network: MCC 001, MNC 01
    open_delay_ms: float = 20.0
    answer_delay_ms: float = 0.0
    attach_ms: float = 0.0
    required_apn: str | None = None

    def __post_init__(self) -> None:
        for name in ("rtt_ms", "open_delay_ms", "answer_delay_ms", "attach_ms"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 600_000:
                raise ConditionsError(f"{name} is a number of milliseconds from 0 to 600000")
        if self.bandwidth_kbit is not None and (
                not isinstance(self.bandwidth_kbit, int | float) or not math.isfinite(self.bandwidth_kbit)
                or not 0 < self.bandwidth_kbit <= 10_000_000):
            raise ConditionsError("bandwidth_kbit is a positive number of kbit/s, or None for unlimited")
        if self.signal_dbm is not None and (
                not isinstance(self.signal_dbm, int) or isinstance(self.signal_dbm, bool)
                or not -150 <= self.signal_dbm <= 0):
            raise ConditionsError("signal_dbm is a whole number of dBm from -150 to 0, or None")
        if self.registration not in REGISTRATION_STAT:
            raise ConditionsError(f"registration is one of {', '.join(REGISTRATION_STAT)}")
        if self.technology not in TECHNOLOGY_ACT:
            raise ConditionsError(f"technology is one of {', '.join(TECHNOLOGY_ACT)}")
        if not (self.plmn.isascii() and self.plmn.isdigit() and len(self.plmn) in (5, 6)):
            raise ConditionsError("plmn is MCC and MNC, 5 or 6 digits")
        if '"' in self.operator or not self.operator.isprintable():
            raise ConditionsError("the operator name is printable and has no double quote")

    def replace(self, **changes: object) -> NetworkConditions:
        """A copy with `changes`, checked like a new one."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def registered(self) -> bool:
        return self.registration in REGISTERED


def csq_rssi(signal_dbm: int | None) -> int:
    """<rssi> of +CSQ for a received signal level (3GPP TS 27.007, 8.5): 0 is -113 dBm or less,
    31 is -51 dBm or more, 2 dBm a step between; 99 not known."""
    if signal_dbm is None:
        return 99
    return max(0, min(31, (signal_dbm + 113) // 2))


@dataclass
class _Packet:
    payload: bytes
    on_air: Callable[[int], None]
    deliver: Callable[[bytes], None]
    timer: asyncio.TimerHandle | None = None


class Channel:
    """One direction of the air interface, shared by every socket, in order."""

    def __init__(self, conditions: Callable[[], NetworkConditions]) -> None:
        self._conditions = conditions
        self._queue: deque[_Packet] = deque()
        self._wake = asyncio.Event()
        self._busy_until = 0.0
        self._last_delivery = 0.0
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def stop(self) -> None:
        self.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def clear(self) -> None:
        """Forget every packet not yet delivered (the module restarts)."""
        self._queue.clear()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def submit(self, payload: bytes, on_air: Callable[[int], None], deliver: Callable[[bytes], None]) -> None:
        """Queue `payload` in packets of at most PACKET_SIZE; `on_air(n)` when a packet has been
        serialised, `deliver(piece)` when it reaches the far end. An empty payload is one empty
        packet (an end-of-stream marker that keeps its place behind the data)."""
        if not payload:
            self._queue.append(_Packet(b"", on_air, deliver))
        for start in range(0, len(payload), PACKET_SIZE):
            self._queue.append(_Packet(payload[start:start + PACKET_SIZE], on_air, deliver))
        self._wake.set()

    @property
    def queued(self) -> int:
        return sum(len(packet.payload) for packet in self._queue)

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            packet = self._queue.popleft()
            conditions = self._conditions()
            now = loop.time()
            start = max(now, self._busy_until)
            serialisation = (len(packet.payload) * 8 / (conditions.bandwidth_kbit * 1000)
                             if conditions.bandwidth_kbit else 0.0)
            self._busy_until = start + serialisation
            if self._busy_until > now:
                await asyncio.sleep(self._busy_until - now)
            packet.on_air(len(packet.payload))
            # Propagation keeps the order even when the RTT shrinks in the middle of a transfer.
            at = max(self._busy_until + conditions.rtt_ms / 2000, self._last_delivery, loop.time())
            self._last_delivery = at
            packet.timer = loop.call_at(at, self._fire, packet)
            self._timers.add(packet.timer)

    def _fire(self, packet: _Packet) -> None:
        if packet.timer is not None:
            self._timers.discard(packet.timer)
        packet.deliver(packet.payload)


class Radio:
    """The module's air interface: an uplink and a downlink channel."""

    def __init__(self, conditions: Callable[[], NetworkConditions]) -> None:
        self.uplink = Channel(conditions)
        self.downlink = Channel(conditions)

    def start(self) -> None:
        self.uplink.start()
        self.downlink.start()

    async def stop(self) -> None:
        await self.uplink.stop()
        await self.downlink.stop()

    def clear(self) -> None:
        self.uplink.clear()
        self.downlink.clear()
