"""Several shards, one id space: for any interleaving of shard writes (some killed mid-batch)
and reads, every id comes out at most once, in order, and `seen + lost == ids handed out`."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.record import RECORD_DTYPE
from leireye.ring import Ring, RingLayout
from leireye.ring.ids import IdAllocator
from leireye.ring.layout import WRITE_START_WORD
from leireye.ring.shards import ShardSet, ShardWriter


class Killed(Exception):
    """A writer died inside the allocator's lock."""


def make_set(shards: int, capacity: int) -> tuple[ShardSet, IdAllocator]:
    ids = IdAllocator.over(bytearray(4096), shards)
    rings = []
    for k in range(shards):
        layout = RingLayout(capacity=capacity, raw_bytes=4, shard=k, shards=shards)
        rings.append(Ring.over(bytearray(layout.size), layout))
    return ShardSet(rings, ids), ids


def records(n: int, shard: int) -> np.ndarray:
    recs = np.zeros(n, dtype=RECORD_DTYPE)
    recs["wire_len"] = shard + 1
    return recs


def die_mid_batch(writer: ShardWriter, n: int, published: int) -> int:
    """Publish `published` of `n` records, write the rest whole but unpublished, and die;
    return the first id it was given."""
    assert writer.ids is not None
    given: list[int] = []

    def publish(first: int) -> None:
        given.append(first)
        ring_writer = writer.writer
        ring_writer.write(records(published, writer.shard), first_id=first)
        rest = records(n - published, writer.shard)
        ring = ring_writer.ring
        start = ring_writer.next_id
        ring._counters[WRITE_START_WORD] = start + len(rest) - 1
        for i in range(len(rest)):  # rows in place, ids set, write_seq never stored
            slot = (start + i - 1) % ring.capacity
            ring.records[slot] = rest[i]
            ring.records["seq"][slot] = first + published + i
        raise Killed

    with pytest.raises(Killed):
        writer.ids.allocate(writer.shard, n, publish, writer.last_published)
    return given[0]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 3), st.integers(0, 30), st.just(0)),
        st.tuples(st.just("kill"), st.integers(0, 3), st.integers(1, 30), st.integers(0, 30)),
        st.tuples(st.just("read"), st.integers(1, 50), st.just(0), st.just(0)),
        st.tuples(st.just("resume"), st.integers(0, 200), st.just(0), st.just(0)),
    ),
    max_size=50,
)


@settings(max_examples=300, deadline=None)
@given(
    shards=st.integers(2, 4),
    capacity=st.integers(8, 40),
    operations=ops,
    start=st.sampled_from(["oldest", "latest"]),
)
def test_every_id_once_in_order_and_seen_plus_lost_is_written(
    shards: int, capacity: int, operations: list[tuple[str, int, int, int]], start: str
) -> None:
    ring_set, ids = make_set(shards, capacity)
    writers = [ShardWriter(r, k, ids, ring_set) for k, r in enumerate(ring_set.rings)]
    owner: dict[int, int] = {}  # id -> shard that published it
    reader = ring_set.reader(start)  # type: ignore[arg-type]
    first_cursor = reader.cursor
    seen: list[int] = []

    def check(batch_ids: list[int], shards_of: list[int]) -> None:
        for i, s in zip(batch_ids, shards_of, strict=True):
            assert owner[i] == s - 1, (i, owner.get(i), s)

    for op, a, b, c in operations:
        if op == "write":
            k = a % shards
            first = writers[k].write(records(b, k))
            owner.update({i: k for i in range(first, first + b)})
        elif op == "kill":
            k = a % shards
            published = min(c, b)
            before = die_mid_batch(writers[k], b, published)
            writers[k] = ShardWriter(ring_set.rings[k], k, ids, ring_set)  # the restart
            # the dead batch's published prefix belongs to k until the next allocation
            owner.update({i: k for i in range(before, before + published)})
        elif op == "read":
            batch = reader.read(a)
            got = batch.records["seq"].tolist()
            check(got, batch.records["wire_len"].tolist())
            assert got == sorted(set(got))
            assert not seen or not got or got[0] > seen[-1]
            seen += got
        else:  # a fresh `since` resume: everything after `since` still held, in order
            since = max(0, ids.next_id - 1 - a)
            resumed = ring_set.reader(since + 1)
            batch = resumed.read(10_000)
            got = batch.records["seq"].tolist()
            assert got == sorted(set(got)) and all(i > since for i in got)
            check(got, batch.records["wire_len"].tolist())
            assert len(got) + batch.lost == ids.next_id - 1 - since
            if got:
                assert ring_set.get(got[-1]) is not None
    while reader.backlog:
        batch = reader.read(7)
        got = batch.records["seq"].tolist()
        check(got, batch.records["wire_len"].tolist())
        seen += got
    assert seen == sorted(set(seen))
    assert len(seen) + reader.lost_total == ids.next_id - first_cursor
    assert ring_set.last_id == ids.next_id - 1
