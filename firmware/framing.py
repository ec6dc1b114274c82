"""The acquirer link's framing: each message preceded by its length in 2 bytes, big-endian.

No I/O here: bytes in, frames out, so the same code frames messages over TCP, over TLS and
over a modem's AT data sockets, in the terminal and in the host simulator. What a frame holds
(ISO 8583:1987 messages) is `firmware.messages`' business, not this module's.
"""

from __future__ import annotations

from collections.abc import Sequence

HEADER_LENGTH = 2
# Two length bytes cannot announce more than this.
LARGEST_FRAME = 0xFFFF
# An ISO 8583 authorization with field 55 and a MAC stays well under 2 KiB.
DEFAULT_MAX_FRAME = 8192


class FrameError(ValueError):
    """Bytes that break the framing: a frame over the agreed size, or a size that cannot be framed.

    `partial` holds the frames completed in the same `FrameDecoder.feed` call before the fault;
    the stream is no longer trusted, so they are handed over only for diagnosis.
    """

    def __init__(self, reason: str, *, partial: Sequence[bytes] = ()) -> None:
        self.reason = reason
        self.partial = list(partial)
        super().__init__(reason)


def _check_max_size(max_size: int) -> None:
    if not 0 <= max_size <= LARGEST_FRAME:
        raise FrameError(f"the largest frame must be 0..{LARGEST_FRAME} bytes, not {max_size}")


def encode_frame(payload: bytes, max_size: int = DEFAULT_MAX_FRAME) -> bytes:
    """`payload` with its 2-byte big-endian length in front. An empty payload is a valid frame
    (two zero bytes); a payload over `max_size` raises `FrameError` and nothing is produced."""
    _check_max_size(max_size)
    if len(payload) > max_size:
        raise FrameError(f"a {len(payload)}-byte frame is over the {max_size}-byte limit")
    return len(payload).to_bytes(HEADER_LENGTH, "big") + payload


class FrameDecoder:
    """Cuts a byte stream into frames, however the stream arrives (whole, split, byte by byte).

    A header announcing more than `max_size` bytes raises `FrameError`; from then on every
    `feed` raises again, because the stream can no longer be followed: drop the connection.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        _check_max_size(max_size)
        self.max_size = max_size
        self._buffer = bytearray()
        self._failure: str | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame (header included)."""
        return len(self._buffer)

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def feed(self, data: bytes) -> list[bytes]:
        """Every frame that `data` completes, in order (often none, sometimes several)."""
        if self._failure is not None:
            raise FrameError(f"the stream broke the framing before: {self._failure}")
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        start = 0
        while len(buffer) - start >= HEADER_LENGTH:
            length = int.from_bytes(buffer[start:start + HEADER_LENGTH], "big")
            if length > self.max_size:
                self._failure = f"a frame announces {length} bytes, over the {self.max_size}-byte limit"
                buffer.clear()
                raise FrameError(self._failure, partial=frames)
            end = start + HEADER_LENGTH + length
            if end > len(buffer):
                break
            frames.append(bytes(buffer[start + HEADER_LENGTH:end]))
            start = end
        del buffer[:start]
        return frames

    def __repr__(self) -> str:
        state = "failed" if self.failed else f"{self.pending} bytes pending"
        return f"FrameDecoder(max {self.max_size}, {state})"
