"""What the kernel asks of its driver. The kernel yields these and is sent the answer back.

The driver in `firmware/` fulfils them from the reader, the UI and the host; tests fulfil
them from the in-process card simulator or recorded traces (ARCHITECTURE principle 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from emv.apdu import Command


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send one command APDU; the driver answers with an `emv.apdu.Response` (transport
    rules of Book 1, 9.3 already applied)."""

    command: Command
