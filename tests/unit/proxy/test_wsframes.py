"""The tunnel's frame-boundary follower against frames built by the ``websockets`` library."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader

from fastgw.proxy.wsframes import CLOSE_TO_CLIENT, FrameBoundary, close_to_upstream

OPCODES = [Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING, Opcode.PONG]
# Payload sizes around the 7-bit, 16-bit and 64-bit length forms of RFC 6455 5.2.
SIZES = st.one_of(st.integers(0, 130), st.sampled_from([65_535, 65_536, 70_000]))
frames = st.lists(st.tuples(st.sampled_from(OPCODES), SIZES, st.booleans()), min_size=1, max_size=6)


def wire(opcode: Opcode, size: int, mask: bool) -> bytes:
    if opcode in (Opcode.PING, Opcode.PONG):
        size = min(size, 125)  # control frames are short (5.5)
    return Frame(opcode, bytes(range(256)) * (size // 256) + bytes(size % 256)).serialize(mask=mask)


@given(frames, st.lists(st.integers(1, 70_000), max_size=8))
def test_boundaries_are_exactly_the_frame_ends_however_the_bytes_are_split(spec, cuts):
    encoded = [wire(*frame) for frame in spec]
    data = b"".join(encoded)
    ends, total = set(), 0
    for frame in encoded:
        total += len(frame)
        ends.add(total)
    points = sorted({min(cut, len(data)) for cut in cuts} | {len(data)})
    tracker, last = FrameBoundary(), 0
    for point in points:
        tracker.feed(data[last:point])
        last = point
        assert tracker.at_boundary == (point in ends or point == 0), point


def test_one_byte_at_a_time_through_a_large_masked_frame():
    data = wire(Opcode.BINARY, 70_000, True)
    tracker = FrameBoundary()
    for i in range(len(data) - 1):
        tracker.feed(data[i : i + 1])
        assert not tracker.at_boundary
    tracker.feed(data[-1:])
    assert tracker.at_boundary


def parse(data: bytes, mask: bool) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=mask)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete frame")


def test_the_close_frames_are_valid_going_away_frames_for_each_side():
    to_client = parse(CLOSE_TO_CLIENT, mask=False)
    to_upstream = parse(close_to_upstream(), mask=True)  # a server requires masked client frames
    for frame in (to_client, to_upstream):
        assert frame.opcode is Opcode.CLOSE and Close.parse(frame.data).code == 1001
    assert close_to_upstream()[2:6] != close_to_upstream()[2:6]  # a fresh masking key each time
