"""The id allocator on real shared memory: a flock'd counter, recovered after a killed holder."""

from __future__ import annotations

import multiprocessing
import os
import signal
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from leireye.errors import RingError
from leireye.record import RECORD_DTYPE
from leireye.ring import Ring, RingLayout
from leireye.ring.ids import IdAllocator
from leireye.ring.shards import ShardSet, ShardWriter, ids_name, shard_name


@pytest.fixture
def run_name() -> Iterator[str]:
    name = f"leireye-test-{uuid.uuid4().hex[:10]}-ring"
    yield name
    for seg in (ids_name(name), name, shard_name(name, 1)):
        path = f"/dev/shm/{seg}"
        if os.path.exists(path):
            os.unlink(path)


def create_run(name: str, shards: int = 2, capacity: int = 1024) -> None:
    for k in range(shards):
        layout = RingLayout(capacity=capacity, raw_bytes=16, shard=k, shards=shards)
        Ring.create(shard_name(name, k), layout).close()
    IdAllocator.create(ids_name(name), shards).close()


def write_batches(name: str, shard: int, batches: int, size: int) -> None:
    ring = Ring.attach(shard_name(name, shard), writable=True)
    peers = ShardSet.attach(name)
    ids = IdAllocator.attach(ids_name(name), writable=True)
    writer = ShardWriter(ring, shard, ids, peers)
    for _ in range(batches):
        recs = np.zeros(size, dtype=RECORD_DTYPE)
        recs["wire_len"] = shard
        writer.write(recs)
    ids.close()
    peers.close()
    ring.close()


def test_two_processes_share_one_id_space(run_name: str) -> None:
    create_run(run_name, capacity=1 << 14)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=write_batches, args=(run_name, k, 200, 7)) for k in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    shards = ShardSet.attach(run_name)
    reader = shards.reader("oldest")
    batch = reader.read(100_000)
    ids = batch.records["seq"].tolist()
    assert ids == list(range(1, 2 * 200 * 7 + 1))
    assert batch.lost == 0 and shards.last_id == 2800
    assert np.bincount(batch.records["wire_len"]).tolist() == [1400, 1400]
    assert shards.get(1234) is not None and int(shards.get(1234)[0]["seq"]) == 1234  # type: ignore[index]
    del batch
    shards.close()


def _hold_lock_and_die(name: str) -> None:
    ring = Ring.attach(shard_name(name, 1), writable=True)
    peers = ShardSet.attach(name)
    ids = IdAllocator.attach(ids_name(name), writable=True)
    writer = ShardWriter(ring, 1, ids, peers)

    def publish_then_die(first: int) -> None:
        writer.writer.write(np.zeros(5, dtype=RECORD_DTYPE), first_id=first)
        os.kill(os.getpid(), signal.SIGKILL)  # published, next_id not stored yet

    ids.allocate(1, 5, publish_then_die, writer.last_published)


def test_a_writer_killed_inside_the_lock_keeps_its_published_ids(run_name: str) -> None:
    create_run(run_name)
    write_batches(run_name, 0, 1, 3)  # ids 1..3
    proc = multiprocessing.get_context("fork").Process(target=_hold_lock_and_die, args=(run_name,))
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    ids = IdAllocator.attach(ids_name(run_name))
    assert ids.next_id == 4 and ids.holder == 2  # died between publishing and next_id
    ids.close()
    write_batches(run_name, 0, 1, 2)  # recovers: ids 9, 10
    shards = ShardSet.attach(run_name)
    batch = shards.reader("oldest").read()
    assert batch.records["seq"].tolist() == list(range(1, 11)) and batch.lost == 0
    del batch
    shards.close()


def test_a_reader_cannot_allocate_and_a_bad_segment_is_refused(run_name: str) -> None:
    create_run(run_name)
    ids = IdAllocator.attach(ids_name(run_name))
    with pytest.raises(RingError, match="not attached writable"):
        ids.allocate(0, 1, lambda first: None, lambda shard: 0)
    ids.close()
    with pytest.raises(RingError, match="id allocator"):
        IdAllocator.attach(run_name)  # a ring, not an allocator
