"""A ring created with a base id (a fleet central's ring continuing its previous run's ids)."""

from __future__ import annotations

import numpy as np
import pytest

from leireye.errors import RingError
from leireye.record import RECORD_DTYPE
from leireye.ring import Ring, RingLayout, RingReader, RingWriter
from leireye.ring.shards import ShardSet

LAYOUT = RingLayout(capacity=16, raw_bytes=8)


def ring(base_id: int) -> Ring:
    return Ring.over(bytearray(LAYOUT.size), LAYOUT, base_id=base_id)


def rows(n: int) -> np.ndarray:
    out = np.zeros(n, dtype=RECORD_DTYPE)
    out["ts_ns"] = np.arange(n)
    out["cap_len"] = 10
    return out


def test_the_first_record_gets_the_id_after_the_base() -> None:
    r = ring(1000)
    assert (r.base_id, r.write_seq, r.oldest_id, r.fill) == (1000, 1000, 1001, 0.0)
    reader = RingReader(r, "oldest")
    assert len(reader.read()) == 0 and reader.lost_total == 0
    assert RingWriter(r).write(rows(5), [b"abcdefghij"] * 5) == 1001
    batch = reader.read()
    assert batch.records["seq"].tolist() == [1001, 1002, 1003, 1004, 1005] and batch.lost == 0
    assert r.fill == 5 / 16 and r.written == 5
    shards = ShardSet([r], None)  # as the web workers and /metrics read it
    assert (shards.written, shards.fill, shards.last_id) == (5, 5 / 16, 1005)
    assert r.get(1000) is None and r.get(1003) is not None
    assert r.get(1003)[1] == b"abcdefgh"  # type: ignore[index]


def test_a_reader_resuming_below_the_base_is_told_those_ids_are_lost() -> None:
    r = ring(100)
    RingWriter(r).write(rows(3))
    batch = RingReader(r, 91).read()
    assert batch.records["seq"].tolist() == [101, 102, 103] and batch.lost == 10


def test_laps_are_counted_as_without_a_base() -> None:
    r = ring(50)
    writer = RingWriter(r)
    reader = RingReader(r, "oldest")
    writer.write(rows(20))
    batch = reader.read()
    assert batch.lost == 4 and batch.records["seq"][0] == 55 and r.oldest_id == 55
    assert r.fill == 1.0 and r.written == 20 and ShardSet([r], None).written == 20


def test_a_restarted_writer_resumes_after_the_base() -> None:
    r = ring(7)
    assert RingWriter(r).next_id == 8
    RingWriter(r).write(rows(2))
    assert RingWriter(r).next_id == 10


def test_a_shard_of_several_takes_no_base() -> None:
    with pytest.raises(RingError):
        Ring.create("leireye-never-made", RingLayout(16, 8, 0, 2), base_id=5)
