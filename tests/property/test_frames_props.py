"""The frame segment: for any interleaving of appends and reads, every frame the store writer
reads is whole and its own, and frames read + lost + dropped == frames appended."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.ring.frames import MIN_DATA_BYTES, FrameAppender, FrameReader, FrameSegment
from leireye.ring.frames import segment_size as frames_segment_size

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.integers(1, 300_000), max_size=12)),
        st.tuples(st.just("read"), st.integers(1, 40), st.integers(1, 2_000_000)),
    ),
    max_size=40,
)


def frame(packet_id: int, size: int) -> bytes:
    return (packet_id.to_bytes(4, "big") * (size // 4 + 1))[:size]


@settings(max_examples=200, deadline=None)
@given(operations=ops)
def test_read_plus_lost_plus_dropped_equals_appended(operations: list[tuple]) -> None:  # type: ignore[type-arg]
    segment = FrameSegment.over(bytearray(frames_segment_size(MIN_DATA_BYTES)), MIN_DATA_BYTES)
    appender = FrameAppender(segment, 1, 65535)
    reader = FrameReader(segment, 1)
    appended = read = 0
    last_id = 0
    for op in operations:
        if op[0] == "append":
            sizes = op[1]
            frames = [frame(appended + 1 + i, size) for i, size in enumerate(sizes)]
            appender.append(appended + 1, [0] * len(frames), [0] * len(frames), frames)
            appended += len(frames)
        else:
            batch = reader.read(op[1], op[2])
            for i in range(len(batch)):
                packet_id = int(batch.entries["id"][i])
                assert packet_id > last_id
                last_id = packet_id
                assert batch.frame(i) == frame(packet_id, int(batch.entries["cap_len"][i]))
            read += len(batch)
    assert read + reader.lost_total + reader.backlog + segment.dropped == appended
