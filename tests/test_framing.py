"""2-byte big-endian length framing: encoding, incremental decoding, refusals, property tests."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.framing import LARGEST_FRAME, FrameDecoder, FrameError, encode_frame


def reference_frames(stream: bytes, max_size: int) -> tuple[list[bytes], int] | None:
    """An independent reading of the framing with `struct`: (frames, leftover bytes), or None
    when a header announces more than `max_size`."""
    frames: list[bytes] = []
    offset = 0
    while len(stream) - offset >= 2:
        (length,) = struct.unpack_from(">H", stream, offset)
        if length > max_size:
            return None
        if offset + 2 + length > len(stream):
            break
        frames.append(stream[offset + 2:offset + 2 + length])
        offset += 2 + length
    return frames, len(stream) - offset


def test_encode_puts_the_big_endian_length_in_front() -> None:
    assert encode_frame(b"\x02\x00ABC", 100) == b"\x00\x05\x02\x00ABC"
    assert encode_frame(b"x" * 258, 300)[:2] == b"\x01\x02"


def test_an_empty_payload_is_a_frame_of_two_zero_bytes() -> None:
    assert encode_frame(b"", 10) == b"\x00\x00"
    decoder = FrameDecoder(10)
    assert decoder.feed(b"\x00\x00\x00\x00") == [b"", b""]
    assert decoder.pending == 0


def test_encode_takes_exactly_max_size_and_refuses_one_more() -> None:
    assert len(encode_frame(b"a" * 64, 64)) == 66
    with pytest.raises(FrameError, match="65-byte frame"):
        encode_frame(b"a" * 65, 64)


def test_the_two_length_bytes_bound_every_frame() -> None:
    assert encode_frame(b"z" * LARGEST_FRAME, LARGEST_FRAME)[:2] == b"\xff\xff"
    with pytest.raises(FrameError):
        encode_frame(b"z" * (LARGEST_FRAME + 1), LARGEST_FRAME)
    with pytest.raises(FrameError):
        encode_frame(b"z", LARGEST_FRAME + 1)
    with pytest.raises(FrameError):
        FrameDecoder(LARGEST_FRAME + 1)
    with pytest.raises(FrameError):
        FrameDecoder(-1)


def test_byte_at_a_time_gives_each_frame_once_complete() -> None:
    stream = b"\x00\x03abc\x00\x00\x00\x01z"
    decoder = FrameDecoder(16)
    seen: list[tuple[int, list[bytes], int]] = []
    for index in range(len(stream)):
        frames = decoder.feed(stream[index:index + 1])
        if frames:
            seen.append((index, frames, decoder.pending))
    assert seen == [(4, [b"abc"], 0), (6, [b""], 0), (9, [b"z"], 0)]


def test_pending_counts_header_and_partial_body() -> None:
    decoder = FrameDecoder(16)
    assert decoder.feed(b"\x00") == []
    assert decoder.pending == 1
    assert decoder.feed(b"\x05ab") == []
    assert decoder.pending == 4
    assert decoder.feed(b"cde\x00") == [b"abcde"]
    assert decoder.pending == 1


def test_a_header_over_max_fails_and_the_decoder_stays_failed() -> None:
    decoder = FrameDecoder(100)
    with pytest.raises(FrameError, match="101 bytes") as caught:
        decoder.feed(b"\x00\x02ok\x00\x65")
    assert caught.value.partial == [b"ok"]
    assert decoder.failed
    with pytest.raises(FrameError):
        decoder.feed(b"")
    with pytest.raises(FrameError):
        decoder.feed(b"\x00\x00")


def test_the_failure_is_seen_from_the_header_alone() -> None:
    decoder = FrameDecoder(100)
    assert decoder.feed(b"\xff") == []
    with pytest.raises(FrameError):
        decoder.feed(b"\xff")


payloads = st.lists(st.binary(max_size=300), max_size=12)


@given(payloads, st.data())
@settings(max_examples=200)
def test_any_split_of_a_valid_stream_gives_the_same_frames(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(frame, 300) for frame in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    decoder = FrameDecoder(300)
    decoded: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoded += decoder.feed(stream[start:end])
    assert decoded == frames
    assert decoder.pending == 0


@given(st.binary(max_size=400), st.integers(0, 300), st.data())
@settings(max_examples=300)
def test_any_bytes_give_frames_or_frame_error(stream: bytes, max_size: int, data: st.DataObject) -> None:
    expected = reference_frames(stream, max_size)
    cut = data.draw(st.integers(0, len(stream)))
    decoder = FrameDecoder(max_size)
    decoded: list[bytes] = []
    try:
        decoded += decoder.feed(stream[:cut])
        decoded += decoder.feed(stream[cut:])
    except FrameError:
        assert expected is None
        assert decoder.failed
        return
    assert expected is not None
    assert (decoded, decoder.pending) == expected
