"""All the rings of a run as one: the reader side of multi-process capture.

Why it is shaped so
-------------------
With `capture.workers: N` every capture process writes its own ring (shard `k` is the segment
`NAME-ring-k`, shard 0 keeps the plain `NAME-ring`; the header of each says `shard`/`shards`).
Each record's `seq` field carries a run-wide id from the id allocator (`leireye/ring/ids.py`);
each ring's own `write_seq` stays a private *position* counter. Within a shard, ids increase with
the position; across shards they interleave.

A `MergedReader` keeps one global cursor (the next id it owes its caller) and one position per
shard. A read of up to `m` ids:

1. loads `next_id = N` from the allocator: every id below N is published in some shard;
2. copies, from each shard, up to `m` rows after its position (a shard holds at most `m` of the
   ids `cursor .. cursor+m-1`, because its ids increase);
3. takes the ids in `cursor .. min(N-1, cursor+m-1)` (fewer if a shard's copy was cut short
   by rows it could not use: then only up to the last id that copy proved), merges them by id,
   and counts every id of that range that no shard still holds as lost; each shard's position
   moves to just after the last row taken from it.

So for any interleaving of writes and reads, ids come out in order, each once, and
`returned + lost == ids handed out after the start`; a `since` resume loses only what no shard
still holds. With one shard (the default) `reader()` returns the plain `RingReader`: ids are the
ring's positions and nothing above costs anything.

`get(id)` finds a single packet by binary search over each shard's live positions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from leireye.errors import RingError
from leireye.ring.ids import IdAllocator
from leireye.ring.ring import Ring, RingRead, RingReader, RingWriter, RowsCopy, Start


def shard_name(name: str, shard: int) -> str:
    """The segment of shard `shard` of the segment family `name` (ring or capture status)."""
    return name if shard == 0 else f"{name}-{shard}"


def ids_name(ring_name: str) -> str:
    return f"{ring_name}-ids"


class Waiter(Protocol):
    """What a reader process waits with: true once it should stop; `wait` sleeps until then
    (`leireye.stopping.StopFlag`, which this layer does not import)."""

    def __call__(self) -> bool: ...

    def wait(self, seconds: float) -> None: ...


def attach_when_ready(
    name: str, stopping: Waiter, period: float, log: logging.Logger
) -> ShardSet | None:
    """The run's shards once the supervisor has made them, trying every `period` s; None when
    asked to stop first. Each new reason for waiting is logged once."""
    reported = ""
    while not stopping():
        try:
            return ShardSet.attach(name)
        except RingError as exc:
            if str(exc) != reported:
                reported = str(exc)
                log.warning("waiting for the ring: %s", exc)
        stopping.wait(period)
    return None


class PacketReader(Protocol):
    """What `ShardSet.reader` returns: a `RingReader` (one shard) or a `MergedReader`."""

    cursor: int
    lost_total: int
    read_total: int

    @property
    def backlog(self) -> int: ...

    def read(self, max_records: int = 65536) -> RingRead: ...


class ShardSet:
    """The rings of one run, read as one ring of run-wide ids."""

    def __init__(self, rings: Sequence[Ring], ids: IdAllocator | None) -> None:
        if not rings:
            raise RingError("a shard set needs at least one ring")
        if len(rings) > 1 and ids is None:
            raise RingError("several shards need an id allocator")
        self.rings = list(rings)
        self.ids = ids if len(rings) > 1 else None
        self.shards = len(rings)
        self.capacity = sum(r.capacity for r in rings)
        self.raw_bytes = rings[0].raw_bytes

    @classmethod
    def attach(cls, ring_name: str) -> ShardSet:
        """Map every shard of the run whose first ring is `ring_name` (read-only)."""
        first = Ring.attach(ring_name)
        rings = [first]
        ids = None
        try:
            for shard in range(1, first.layout.shards):
                rings.append(Ring.attach(shard_name(ring_name, shard)))
            if first.layout.shards > 1:
                ids = IdAllocator.attach(ids_name(ring_name))
        except BaseException:
            for ring in rings:
                ring.close()
            raise
        return cls(rings, ids)

    def close(self) -> None:
        for ring in self.rings:
            ring.close()
        if self.ids is not None:
            self.ids.close()

    # -- what the ring says about itself ------------------------------------------------------

    @property
    def last_id(self) -> int:
        """The highest id published (0: none yet)."""
        if self.ids is None:
            return self.rings[0].write_seq
        return self.ids.next_id - 1

    write_seq = last_id  # the name `Ring` uses

    @property
    def oldest_id(self) -> int:
        """The oldest id still held in any shard (may be overwritten by the time it is read)."""
        if self.ids is None:
            return self.rings[0].oldest_id
        held = [ring.id_at(ring.oldest_id) for ring in self.rings if ring.write_seq]
        held = [i for i in held if i]
        return min(held) if held else self.ids.next_id

    @property
    def written(self) -> int:
        """Records written to the shards by this run (not the last id: a central's ring starts
        past its `base_id`)."""
        return sum(r.written for r in self.rings)

    @property
    def whole_from(self) -> int:
        """The oldest id from which every shard still holds all of its ids (may be overwritten
        by the time it is read): a shard whose ring has moved on holds none of its own below its
        oldest row, and the shards' rings cover different spans of ids when their traffic
        differs, so a replay that must not lose an id hands over to the ring only above this
        (`oldest_id` is the smallest instead)."""
        if self.ids is None:
            return self.rings[0].oldest_id
        lapped = [ring.id_at(ring.oldest_id) for ring in self.rings
                  if ring.oldest_id > ring.base_id + 1]  # fmt: skip
        return max([1, *lapped])

    @property
    def fill(self) -> float:
        return sum(min(r.written, r.capacity) for r in self.rings) / self.capacity

    # -- reading ------------------------------------------------------------------------------

    def reader(self, start: Start = "latest", *, with_raw: bool = False) -> PacketReader:
        if self.ids is None:
            return RingReader(self.rings[0], start, with_raw=with_raw)
        return MergedReader(self, start, with_raw=with_raw)

    def copy_range(self, first: int, last: int, with_raw: bool = False) -> RingRead:
        """The records with ids `first..last` that some shard still holds, in id order (the
        REST API pages through the ring with this); `lost` counts the ids no shard holds."""
        if self.ids is None:
            return self.rings[0].copy_range(first, last, with_raw)
        last = min(last, self.last_id)
        reader = MergedReader(self, max(1, first), with_raw=with_raw)
        return reader.read(max(0, last - first + 1))

    def get(self, packet_id: int) -> tuple[np.void, bytes] | None:
        """One record and its stored raw bytes, or None when no shard holds it (any more)."""
        if self.ids is None:
            return self.rings[0].get(packet_id)
        if not 1 <= packet_id < self.ids.next_id:
            return None
        for ring in self.rings:
            position = seek(ring, packet_id)
            if position > ring.write_seq:
                continue
            rows = ring.copy_rows(position, position, with_raw=True)
            if len(rows.records) and int(rows.records["seq"][0]) == packet_id:
                row = rows.records[0]
                assert rows.raw is not None
                keep = min(int(row["cap_len"]), ring.raw_bytes)
                return row, rows.raw[0, :keep].tobytes()
        return None


def seek(ring: Ring, target: int) -> int:
    """The first live position of `ring` whose id is `>= target` (`write_seq + 1` if none).

    Binary search over the positions (ids increase with them); a zeroed row (left by a killed
    writer) breaks that order locally, so meeting one falls back to a search over a copy."""
    lo, hi = ring.oldest_id, ring.write_seq + 1
    first, last = lo, hi - 1
    while lo < hi:
        mid = (lo + hi) // 2
        found = ring.id_at(mid)
        if found == 0:
            return _seek_copy(ring, first, last, target)
        if found < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _seek_copy(ring: Ring, first: int, last: int, target: int) -> int:
    rows = ring.copy_rows(first, last)
    at = int(np.searchsorted(rows.records["seq"], target))
    return int(rows.positions[at]) if at < len(rows.positions) else last + 1


class MergedReader:
    """One reader's cursor over every shard; see the module docstring. `start` as for
    `RingReader`: "oldest", "latest" or the first id wanted (a resume: `since + 1`)."""

    def __init__(
        self, shards: ShardSet, start: Start = "latest", *, with_raw: bool = False
    ) -> None:
        assert shards.ids is not None
        self.shards = shards
        self.ids = shards.ids
        self.with_raw = with_raw
        self.lost_total = 0
        self.read_total = 0
        if start == "latest":
            self.cursor = self.ids.next_id
        elif start == "oldest":
            self.cursor = shards.oldest_id
        elif isinstance(start, int) and start >= 1:
            self.cursor = start
        else:
            raise RingError(f"invalid reader start {start!r}")
        self.positions = [seek(ring, self.cursor) for ring in shards.rings]
        self.lapped = [0] * shards.shards  # positions each shard overwrote before we read them

    @property
    def backlog(self) -> int:
        return max(0, self.ids.next_id - self.cursor)

    def read(self, max_records: int = 65536) -> RingRead:
        """Ids `cursor .. cursor + max_records - 1` that are published, merged in id order."""
        start = self.cursor
        limit = min(self.ids.next_id - 1, start + max_records - 1)  # load next_id first
        if limit < start:
            return RingRead.empty(start, self.with_raw, self.shards.raw_bytes)
        copies: list[tuple[int, RowsCopy]] = []
        for k, ring in enumerate(self.shards.rings):
            published = ring.write_seq
            position = self.positions[k]
            oldest = published - ring.capacity + 1
            if position < oldest:
                self.lapped[k] += oldest - position
                position = oldest
            last = min(published, position + max_records - 1)
            rows = ring.copy_rows(position, last, self.with_raw)
            if last < published and len(rows.positions) < last - position + 1:
                # cut short with unusable rows: later rows may hold ids this copy did not prove
                proven = int(rows.records["seq"][-1]) if len(rows.positions) else start - 1
                limit = min(limit, proven)
            copies.append((last, rows))
        parts: list[RowsCopy] = []
        for k, (last, rows) in enumerate(copies):
            ids = rows.records["seq"]
            lo = int(np.searchsorted(ids, start))
            hi = int(np.searchsorted(ids, limit, side="right"))
            self.positions[k] = int(rows.positions[hi]) if hi < len(ids) else last + 1
            if hi > lo:
                raw = rows.raw[lo:hi] if rows.raw is not None else None
                parts.append(RowsCopy(rows.records[lo:hi], raw, rows.positions[lo:hi]))
        batch = _merge(parts, start, self.with_raw, self.shards.raw_bytes)
        batch.lost = limit - start + 1 - len(batch.records)
        self.cursor = limit + 1
        self.lost_total += batch.lost
        self.read_total += len(batch.records)
        return batch


def _merge(parts: list[RowsCopy], first_id: int, with_raw: bool, raw_bytes: int) -> RingRead:
    if not parts:
        return RingRead.empty(first_id, with_raw, raw_bytes)
    if len(parts) == 1:
        return RingRead(records=parts[0].records, first_id=first_id, lost=0, raw=parts[0].raw)
    records = np.concatenate([p.records for p in parts])
    order = np.argsort(records["seq"], kind="stable")
    raw = None
    if with_raw:
        raw = np.concatenate([p.raw for p in parts if p.raw is not None])[order]
    return RingRead(records=records[order], first_id=first_id, lost=0, raw=raw)


class ShardWriter:
    """A capture shard's writer: ids from the allocator, rows into its own ring. With one shard
    (no allocator) it is the plain `RingWriter`, ids = positions."""

    def __init__(
        self,
        ring: Ring,
        shard: int = 0,
        ids: IdAllocator | None = None,
        peers: ShardSet | None = None,
    ) -> None:
        if ids is not None and peers is None:
            raise RingError("a shard writer with an id allocator needs the other shards' rings")
        self.writer = RingWriter(ring)
        self.shard = shard
        self.ids = ids
        self.peers = peers

    def write(self, records: np.ndarray, frames: Sequence[bytes] | None = None) -> int:
        if self.ids is None:
            return self.writer.write(records, frames)
        if not len(records):
            return self.ids.next_id
        return self.ids.allocate(
            self.shard,
            len(records),
            lambda first: self.writer.write(records, frames, first_id=first),
            self.last_published,
        )

    def last_published(self, shard: int) -> int:
        """The last id shard `shard` published (0: none)."""
        assert self.peers is not None
        return last_published(self.peers.rings[shard])


def last_published(ring: Ring) -> int:
    """The highest id a shard's ring holds (0: none). Rows a restarted writer zeroed (at most
    one chunk) may sit at its `write_seq`: look behind them. Only recovery calls this."""
    for position in range(ring.write_seq, ring.oldest_id - 1, -1):
        found = ring.id_at(position)
        if found:
            return found
    return 0
