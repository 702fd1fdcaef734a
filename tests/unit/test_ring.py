"""Ring arithmetic on a plain bytearray: ids, wrap, laps, torn-read protection, layout checks."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from leireye.errors import RingError
from leireye.record import RECORD_DTYPE
from leireye.ring import Ring, RingLayout, RingReader, RingWriter
from leireye.ring.layout import WRITE_START_WORD
from leireye.ring.shm import unlink_segment


def make_ring(capacity: int = 64, raw_bytes: int = 16) -> Ring:
    layout = RingLayout(capacity=capacity, raw_bytes=raw_bytes)
    return Ring.over(bytearray(layout.size), layout)


def records(n: int, tag: int = 0) -> np.ndarray:
    out = np.zeros(n, dtype=RECORD_DTYPE)
    out["wire_len"] = np.arange(n) + tag
    out["cap_len"] = 8
    return out


def test_ids_start_at_one_and_are_returned_in_seq() -> None:
    ring = make_ring()
    writer = RingWriter(ring)
    reader = RingReader(ring, "oldest")
    assert writer.write(records(5)) == 1
    assert writer.write(records(3)) == 6
    batch = reader.read()
    assert batch.first_id == 1 and batch.lost == 0
    assert batch.records["seq"].tolist() == list(range(1, 9))
    assert ring.write_seq == 8


def test_latest_reader_sees_only_new_records() -> None:
    ring = make_ring()
    writer = RingWriter(ring)
    writer.write(records(10))
    reader = RingReader(ring, "latest")
    assert len(reader.read()) == 0
    writer.write(records(2))
    assert reader.read().records["seq"].tolist() == [11, 12]


def test_wraparound_keeps_order_and_content() -> None:
    ring = make_ring(capacity=16)
    writer = RingWriter(ring)
    reader = RingReader(ring, "oldest")
    seen: list[int] = []
    for i in range(10):
        writer.write(records(7, tag=100 * i))
        batch = reader.read()
        assert batch.lost == 0
        assert batch.records["wire_len"].tolist() == [100 * i + k for k in range(7)]
        seen += batch.records["seq"].tolist()
    assert seen == list(range(1, 71))


def test_lapped_reader_is_told_exactly_how_many_it_lost() -> None:
    ring = make_ring(capacity=16)
    writer = RingWriter(ring)
    reader = RingReader(ring, "oldest")
    for _ in range(5):
        writer.write(records(10))  # 50 written, the ring holds the last 16
    batch = reader.read()
    assert batch.lost == 34
    assert batch.first_id == 35
    assert batch.records["seq"].tolist() == list(range(35, 51))
    assert reader.lost_total == 34


def test_read_is_bounded_by_max_records() -> None:
    ring = make_ring()
    writer = RingWriter(ring)
    writer.write(records(40))
    reader = RingReader(ring, "oldest")
    assert len(reader.read(max_records=15)) == 15
    assert reader.read(max_records=100).records["seq"][0] == 16
    assert reader.backlog == 0


def test_resume_from_an_id() -> None:
    ring = make_ring()
    writer = RingWriter(ring)
    writer.write(records(30))
    reader = RingReader(ring, 21)
    assert reader.read().records["seq"].tolist() == list(range(21, 31))


def test_rows_being_overwritten_during_a_copy_are_dropped_not_torn() -> None:
    ring = make_ring(capacity=16)
    writer = RingWriter(ring)
    writer.write(records(16))
    reader = RingReader(ring, "oldest")
    # A writer that announced ids 17..20 and has half-written slots 0..1 (ids 1..2 before).
    ring._counters[WRITE_START_WORD] = 20
    ring.records[0:2] = records(2, tag=999)
    batch = reader.read()
    # ids 1..4 share slots with 17..20 and may be torn: all four are reported lost.
    assert batch.lost == 4
    assert batch.records["seq"].tolist() == list(range(5, 17))
    assert 999 not in batch.records["wire_len"]


def test_a_row_with_the_wrong_seq_is_never_returned() -> None:
    ring = make_ring(capacity=16)
    writer = RingWriter(ring)
    writer.write(records(8))
    ring.records["seq"][3] = 0  # as if caught between a row copy and its seq store
    batch = RingReader(ring, "oldest").read()
    assert batch.lost == 4
    assert batch.records["seq"].tolist() == [5, 6, 7, 8]


def test_a_new_writer_resumes_after_the_published_sequence() -> None:
    ring = make_ring()
    RingWriter(ring).write(records(10))
    assert RingWriter(ring).write(records(1)) == 11


def test_a_writer_killed_mid_batch_never_publishes_its_half_written_ids() -> None:
    ring = make_ring()
    RingWriter(ring).write(records(10))
    ring._counters[WRITE_START_WORD] = 14  # died after announcing 11..14
    reader = RingReader(ring, "latest")
    assert RingWriter(ring).write(records(1)) == 15
    batch = reader.read()
    assert batch.records["seq"].tolist() == [15]
    assert batch.first_id == 15


def test_large_writes_are_chunked_so_readers_are_not_lapped_by_one_call() -> None:
    ring = make_ring(capacity=64)
    writer = RingWriter(ring)
    assert writer.chunk == 8
    writer.write(records(100))
    assert ring.write_seq == 100
    assert RingReader(ring, "oldest").read().records["seq"][0] == 37


def test_raw_bytes_are_kept_and_truncated() -> None:
    ring = make_ring(capacity=8, raw_bytes=4)
    recs = records(2)
    recs["cap_len"] = [2, 10]
    RingWriter(ring).write(recs, [b"ab", b"0123456789"])
    assert ring.get(1) is not None and ring.get(1)[1] == b"ab"  # type: ignore[index]
    assert ring.get(2)[1] == b"0123"  # type: ignore[index]
    assert ring.get(3) is None


def test_get_refuses_overwritten_ids() -> None:
    ring = make_ring(capacity=8)
    RingWriter(ring).write(records(20))
    assert ring.get(12) is None
    row = ring.get(13)
    assert row is not None and int(row[0]["seq"]) == 13


def test_frames_must_match_records() -> None:
    ring = make_ring()
    with pytest.raises(ValueError):
        RingWriter(ring).write(records(2), [b"x"])


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [(0, b"NOTARING", "bad magic"), (8, b"\x63\x00\x00\x00", "layout version")],
)
def test_layout_is_validated_on_attach(offset: int, value: bytes, message: str) -> None:
    layout = RingLayout(capacity=16, raw_bytes=0)
    buf = bytearray(layout.size)
    Ring.over(buf, layout)
    buf[offset : offset + len(value)] = value
    with pytest.raises(RingError, match=message):
        Ring.over(buf)


def test_truncated_segment_is_refused() -> None:
    layout = RingLayout(capacity=1024, raw_bytes=64)
    buf = bytearray(layout.size)
    Ring.over(buf, layout)
    with pytest.raises(RingError, match="needs"):
        Ring.over(buf[: layout.size // 2])


def test_invalid_start_is_refused() -> None:
    with pytest.raises(RingError):
        RingReader(make_ring(), 0)


def test_writes_lay_out_every_byte_of_rows_and_raw_frames_across_wraps() -> None:
    """Each slot holds the record's 256 bytes as given (seq = its id) and the frame's first
    `raw_bytes` NUL-padded, whatever the frame: empty, one byte, exactly `raw_bytes`, longer,
    ending in NULs, all NULs; a short frame clears what a longer one left in its slot."""
    size = 8
    ring = make_ring(capacity=16, raw_bytes=size)
    writer = RingWriter(ring)
    rng = np.random.default_rng(7)
    shapes = [b"", b"\x01", b"ab\x00", bytes(size), b"\xff" * size, b"\xfe" * 40, b"x\x00\x00y"]
    written: list[tuple[bytes, bytes]] = []
    for n in (5, 16, 3, 11, 16, 1):
        recs = np.frombuffer(rng.bytes(n * RECORD_DTYPE.itemsize), dtype=RECORD_DTYPE).copy()
        frames = [shapes[int(i)] for i in rng.integers(0, len(shapes), n)]
        if not written:
            frames = [b"\xee" * 40] * n  # long frames first: later short ones must clear them
        first = writer.write(recs, frames)
        recs["seq"] = np.arange(first, first + n, dtype=np.uint64)
        padded = [f[:size].ljust(size, b"\0") for f in frames]
        written += [(r.tobytes(), raw) for r, raw in zip(recs, padded, strict=True)]
    last = ring.write_seq
    assert last == len(written)
    for packet_id in range(ring.oldest_id, last + 1):
        slot = (packet_id - 1) % ring.capacity
        row, raw = written[packet_id - 1]
        assert ring.records[slot].tobytes() == row
        assert ring.raw[slot].tobytes() == raw


def test_a_shared_ring_closes_while_its_writer_lives() -> None:
    """The capture process closes its ring with the writer still referenced: the writer must
    hold no view of the mapping (unmapping under one raises BufferError)."""
    name = f"leireye-test-ring-{uuid.uuid4().hex[:10]}"
    ring = Ring.create(name, RingLayout(capacity=64, raw_bytes=16))
    try:
        writer = RingWriter(ring)
        writer.write(records(70), [b"frame"] * 70)
        ring.close()
    finally:
        unlink_segment(name)
    assert writer.next_id == 71


def test_copies_hold_every_byte_of_the_rows_across_the_wrap() -> None:
    """`copy_range_unchecked` copies whole rows: the same bytes as a field-by-field copy, for
    ranges that wrap, end at the last slot, start at the first, and hold one row or all."""
    ring = make_ring(capacity=16, raw_bytes=8)
    writer = RingWriter(ring)
    rng = np.random.default_rng(11)
    for n in (9, 16, 5):
        writer.write(np.frombuffer(rng.bytes(n * 256), dtype=RECORD_DTYPE).copy(), [b"x"] * n)
    assert ring.write_seq == 30  # slots hold ids 17..30 (slots 0..13) and 15..16 (14, 15)
    for first, end in ((15, 30), (26, 30), (17, 30), (15, 16), (30, 30), (20, 25)):
        got = ring.copy_range_unchecked(first, end, with_raw=True)
        expected = np.zeros(end - first + 1, dtype=RECORD_DTYPE)
        for k, position in enumerate(range(first, end + 1)):
            row = ring.records[(position - 1) % ring.capacity]
            for name in RECORD_DTYPE.names or ():
                expected[name][k] = row[name]
        assert got.records.tobytes() == expected.tobytes()
        assert got.records["seq"].tolist() == list(range(first, end + 1))
