"""The store's completeness mark (`leireye/ring/storemark.py`) over real rings, an id allocator,
real frame segments and the store writer's reader, for any interleaving of capture shards
(ring write, then hand-off), the store writer (read a batch, write it, move `disk_seq`) and the
mark's own loads: no id at or below a mark ever reaches the store after the mark was read, and
once everything is written the mark reaches the last id (it never holds a resume back for
good)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.record import RECORD_DTYPE
from leireye.ring import Ring, RingLayout
from leireye.ring.frames import FrameAppender, FrameReader, FrameSegment, segment_size
from leireye.ring.ids import IdAllocator
from leireye.ring.shards import ShardSet, ShardWriter
from leireye.ring.storemark import ShardLook, StoreMark, store_mark

DATA_BYTES = 4096  # 1024 entry slots, 256 frames of 16 bytes: the writer gets lapped
FRAME = 16


class Sensor:
    """`shards` capture shards and one store writer, stepped one action at a time."""

    def __init__(self, shards: int, capacity: int) -> None:
        self.ids = IdAllocator.over(bytearray(4096), shards)
        self.rings = []
        for k in range(shards):
            layout = RingLayout(capacity=capacity, raw_bytes=4, shard=k, shards=shards)
            self.rings.append(Ring.over(bytearray(layout.size), layout))
        peers = ShardSet(self.rings, self.ids)
        self.writers = [ShardWriter(r, k, self.ids, peers) for k, r in enumerate(self.rings)]
        self.segments = [
            FrameSegment.over(bytearray(segment_size(DATA_BYTES)), DATA_BYTES, k)
            for k in range(shards)
        ]
        self.appenders = [FrameAppender(s, 1, 65535) for s in self.segments]
        self.readers = [FrameReader(s, 1) for s in self.segments]
        self.unappended: list[list[tuple[int, int]]] = [[] for _ in range(shards)]
        self.in_flight: tuple[int, list[int]] | None = None  # (shard, ids) read, not written
        self.stored: set[int] = set()

    def publish(self, shard: int, n: int) -> None:
        shard %= len(self.rings)
        records = np.zeros(n, dtype=RECORD_DTYPE)
        first = self.writers[shard].write(records)
        self.unappended[shard].append((first, n))

    def append(self, shard: int) -> None:
        shard %= len(self.rings)
        if self.unappended[shard]:
            first, n = self.unappended[shard].pop(0)
            self.appenders[shard].append(first, [0] * n, [FRAME] * n, [bytes(FRAME)] * n)

    def read(self, shard: int, most: int) -> None:
        shard %= len(self.rings)
        if self.in_flight is None:
            batch = self.readers[shard].read(most)
            self.in_flight = (shard, [int(i) for i in batch.entries["id"]])

    def write(self) -> None:
        """What `_Writer._drain` does after reading: the file, then `disk_seq`."""
        if self.in_flight is not None:
            shard, ids = self.in_flight
            self.stored.update(ids)
            self.segments[shard].disk_seq = self.readers[shard].next_seq - 1
            self.in_flight = None

    def act(self, action: tuple[Any, ...]) -> None:
        getattr(self, action[0])(*action[1:])

    def settle(self) -> None:
        """Every batch handed off, every frame read and written."""
        self.write()
        for shard in range(len(self.rings)):
            while self.unappended[shard]:
                self.append(shard)
            while self.readers[shard].backlog:
                self.read(shard, 10_000)
                self.write()
            self.read(shard, 10_000)  # a read that only counts lost frames still moves on
            self.write()


class Interleaved:
    """An object whose every attribute load first lets `step` run another actor."""

    def __init__(self, target: object, step: Callable[[], None]) -> None:
        self._target = target
        self._step = step

    def __getattr__(self, name: str) -> Any:
        self._step()
        return getattr(self._target, name)


actions = st.one_of(
    st.tuples(st.just("publish"), st.integers(0, 2), st.integers(1, 300)),
    st.tuples(st.just("append"), st.integers(0, 2)),
    st.tuples(st.just("read"), st.integers(0, 2), st.integers(1, 400)),
    st.tuples(st.just("write")),
)


@settings(max_examples=1000, deadline=None)
@given(
    shards=st.integers(1, 3),
    capacity=st.sampled_from([16, 64, 1024]),
    before=st.lists(actions, max_size=30),
    during=st.lists(actions, max_size=30),
    gaps=st.lists(st.booleans(), max_size=60),
)
def test_no_id_at_or_below_the_mark_reaches_the_store_after_it(
    shards: int,
    capacity: int,
    before: list[tuple[Any, ...]],
    during: list[tuple[Any, ...]],
    gaps: list[bool],
) -> None:
    sensor = Sensor(shards, capacity)
    for action in before:
        sensor.act(action)
    pending: Iterator[tuple[Any, ...]] = iter(during)
    flags = iter(gaps)

    def step() -> None:
        if next(flags, False):
            action = next(pending, None)
            if action is not None:
                sensor.act(action)

    proxied = ShardSet([Interleaved(r, step) for r in sensor.rings],  # type: ignore[misc]
                       Interleaved(sensor.ids, step))  # type: ignore[arg-type]  # fmt: skip
    reader = StoreMark(proxied, [Interleaved(s, step) for s in sensor.segments])  # type: ignore[misc]
    mark = reader.read()
    stored_then = set(sensor.stored)
    for action in pending:
        sensor.act(action)
    sensor.settle()
    late = sorted(i for i in sensor.stored - stored_then if i <= mark)
    assert late == [], f"ids {late[:5]} reached the store after a mark of {mark}"
    # Caught up: the mark reaches the last id handed out (a resume is not held back).
    settled = StoreMark(ShardSet(sensor.rings, sensor.ids), sensor.segments)
    assert settled.read() == sensor.ids.next_id - 1


def test_one_shard_behind_holds_the_mark_below_its_first_unwritten_id() -> None:
    """Shard 0 has written id 3 while shard 1 has not written id 2: the mark is 1, where the
    store's newest id (3) would count 2 lost."""
    sensor = Sensor(2, 64)
    sensor.publish(0, 1)  # id 1
    sensor.publish(1, 1)  # id 2
    sensor.publish(0, 1)  # id 3
    for shard in (0, 1):
        sensor.append(shard)
    sensor.append(0)
    sensor.read(0, 10)
    sensor.write()
    assert sensor.stored == {1, 3}
    assert StoreMark(ShardSet(sensor.rings, sensor.ids), sensor.segments).read() == 1
    sensor.read(1, 10)
    sensor.write()
    assert StoreMark(ShardSet(sensor.rings, sensor.ids), sensor.segments).read() == 3


def test_the_pure_rule() -> None:
    assert store_mark(10, [ShardLook(4), ShardLook(None, 7), ShardLook(None)]) == 3
    assert store_mark(10, [ShardLook(None, 7), ShardLook(None)]) == 6
    assert store_mark(10, [ShardLook(None), ShardLook(None)]) == 9


class Once:
    """A step that runs `action` at the first load it is called for, then nothing."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action: Callable[[], None] | None = action

    def __call__(self) -> None:
        action, self.action = self.action, None
        if action is not None:
            action()


def late_ids(sensor: Sensor, mark: int, stored_then: set[int]) -> list[int]:
    sensor.settle()
    return sorted(i for i in sensor.stored - stored_then if i <= mark)


def test_the_allocator_is_read_before_the_shards() -> None:
    """A batch published between a caught-up shard's look and the allocator's load would be
    counted under the mark without being written."""
    sensor = Sensor(2, 64)
    sensor.publish(0, 5)
    sensor.settle()
    ids = Interleaved(sensor.ids, Once(lambda: sensor.publish(1, 3)))
    mark = StoreMark(ShardSet(sensor.rings, ids), sensor.segments).read()  # type: ignore[arg-type]
    assert mark == 5 and late_ids(sensor, mark, set(sensor.stored)) == []


def test_the_last_id_handed_over_is_read_before_the_frames_appended() -> None:
    """A batch in the ring before the look, handed over just before `handed_id` is loaded: read
    after `write_seq`, it would cover frames the writer has not seen."""
    sensor = Sensor(1, 64)
    sensor.publish(0, 5)
    sensor.settle()
    sensor.publish(0, 3)  # ids 6..8 in the ring, not handed over yet
    hand_over = Once(lambda: sensor.append(0))

    class HandOverFirst(Interleaved):
        def __getattr__(self, name: str) -> Any:
            if name == "handed_id":
                hand_over()
            return getattr(self._target, name)

    segment = HandOverFirst(sensor.segments[0], lambda: None)
    reader = StoreMark(ShardSet(sensor.rings, None), [segment])  # type: ignore[list-item]
    mark = reader.read()
    assert late_ids(sensor, mark, set(sensor.stored)) == [] and mark == 5
