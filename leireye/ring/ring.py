"""The packet ring: one writer, any number of readers, nobody waits.

Why it is shaped so
-------------------
The capture process must never wait for anyone: a slow web worker or a stalled stats process must
cost *them* packets, not the capture. So the ring is a plain array of fixed-size slots that the
single writer overwrites in order, and every reader keeps its own cursor. A reader that falls more
than `capacity` records behind has simply lost the oldest ones; it is told exactly how many and
continues from the oldest record still valid.

Packet ids are the ring's own sequence numbers: the n-th record ever written to this ring has id
n (the first is 1) and lives in slot `(n - 1) % capacity`. Ids never repeat and never go back, even
when the capture process restarts, because a new writer resumes from the published sequence.

Two counters in the header carry the whole protocol (no locks, no memory barriers beyond x86-64's
store order, which keeps stores in program order and loads in program order):

1. `write_start` = the last id of the batch about to be written. It is stored *before* any slot
   of the batch is touched.
2. the rows are copied into their slots, each row's `seq` field first written as 0 and then, once
   the whole batch is in place, set to its id;
3. `write_seq` = that same last id, stored *after* every row and raw byte of the batch.

A reader loads `write_seq` (everything up to it is complete), copies the rows it wants, then loads
`write_start`. Any row whose id is `<= write_start - capacity` may have been overwritten while it
was being copied, so it is dropped and counted as lost, never returned torn. As a second, cheaper
guard the reader checks each copied row's `seq` against the id it expected.

A batch larger than `capacity / 8` is written in chunks of that size, so that a reader that keeps
up is never lapped by a single write.

With several capture processes (`leireye/ring/shards.py`) each one writes its own ring, and the
sequence above becomes the ring's *position* counter, private to that shard, while the `seq`
field of each row carries a run-wide id handed out by the id allocator (`RingWriter.write(...,
first_id=)`). Within one shard those ids still increase with the position, so `copy_rows` checks
them for monotonicity instead of equality, and `ShardSet` merges the shards by id. With one
capture process (the default) ids and positions are the same numbers and nothing here changes.

The same code runs over any buffer: a `bytearray` in unit tests, a shared-memory mapping in the
sensor (`Ring.create` / `Ring.attach`).
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from leireye.errors import RingError
from leireye.record import RECORD_DTYPE
from leireye.ring.layout import BASE_ID_WORD, WRITE_SEQ_WORD, WRITE_START_WORD, RingLayout
from leireye.ring.shm import Segment, attach_segment, create_segment

Start = Literal["oldest", "latest"] | int
_ROW = np.dtype((np.void, RECORD_DTYPE.itemsize))
Buffer = bytearray | mmap.mmap


class Ring:
    """A ring over a buffer. Build it with `create`/`attach` (shared memory) or `over` (tests)."""

    def __init__(self, buf: Buffer, layout: RingLayout, segment: Segment | None = None) -> None:
        # Every view is made with np.frombuffer on the mapping itself, so each one holds a buffer
        # export: unmapping under a live view raises BufferError instead of crashing later.
        self.layout = layout
        self.capacity = layout.capacity
        self.raw_bytes = layout.raw_bytes
        self.segment = segment
        self._counters = np.frombuffer(buf, dtype="<u8", count=WRITE_SEQ_WORD + 1)
        self.records = np.frombuffer(
            buf, dtype=RECORD_DTYPE, count=layout.capacity, offset=layout.records_offset
        )
        self.raw = np.frombuffer(
            buf, dtype=np.uint8, count=layout.capacity * layout.raw_bytes, offset=layout.raw_offset
        ).reshape(layout.capacity, layout.raw_bytes)
        self._buf = buf
        # Fixed at creation: ids up to it were never in this ring (a fleet central's new ring
        # continues the ids of the one before; 0 everywhere else).
        self.base_id = int(self._counters[BASE_ID_WORD])

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def over(cls, buf: bytearray, layout: RingLayout | None = None, *, base_id: int = 0) -> Ring:
        """A ring over an existing buffer: initialise it when `layout` is given, else validate."""
        if layout is not None:
            if len(buf) < layout.size:
                raise RingError(f"buffer of {len(buf)} bytes is too small for {layout}")
            layout.write_header(buf, time.time_ns(), base_id)
        else:
            layout = RingLayout.read_header(buf)
        return cls(buf, layout)

    @classmethod
    def create(
        cls,
        name: str,
        layout: RingLayout,
        *,
        mode: int = 0o600,
        owner: tuple[int, int] | None = None,
        base_id: int = 0,
    ) -> Ring:
        """Create the shared-memory segment `name` (the caller owns and later unlinks it); its
        first record gets id `base_id + 1`."""
        if base_id and layout.shards > 1:
            raise RingError("a ring shard takes its ids from the id allocator, not a base id")
        segment = create_segment(name, layout.size, mode=mode, owner=owner)
        layout.write_header(segment.buf, time.time_ns(), base_id)
        return cls(segment.buf, layout, segment)

    @classmethod
    def attach(cls, name: str, *, writable: bool = False) -> Ring:
        """Map an existing ring, validating its layout. Read-only unless `writable`."""
        segment = attach_segment(name, writable=writable)
        try:
            layout = RingLayout.read_header(segment.buf, name)
        except RingError:
            segment.close()
            raise
        return cls(segment.buf, layout, segment)

    def close(self) -> None:
        """Drop this ring's views and unmap. Arrays returned by readers are copies and stay
        valid; a caller still holding a view of `records`/`raw` gets BufferError here."""
        if not hasattr(self, "records"):
            return  # closed already
        del self._counters, self.records, self.raw
        if self.segment is not None:
            self.segment.close()

    def unlink(self) -> None:
        if self.segment is None:
            raise RingError("this ring is not backed by shared memory")
        self.segment.unlink()

    # -- counters -----------------------------------------------------------------------------

    @property
    def write_seq(self) -> int:
        """The highest id whose record is completely written (0: none yet)."""
        return int(self._counters[WRITE_SEQ_WORD])

    @property
    def written(self) -> int:
        """Records written to this ring: the ids past `base_id` (a central's ring continues the
        ids of its previous run, so `write_seq` is not a count)."""
        return self.write_seq - self.base_id

    @property
    def write_start(self) -> int:
        return int(self._counters[WRITE_START_WORD])

    @property
    def oldest_id(self) -> int:
        """The oldest id still held (may be overwritten by the time it is read)."""
        return max(self.base_id + 1, self.write_seq - self.capacity + 1)

    @property
    def created_ns(self) -> int:
        """When the owner created the segment (time.time_ns): one run of the sensor from the
        next, whose ids start over at 1."""
        return int(np.frombuffer(self._buf, dtype="<i8", count=1, offset=40)[0])

    @property
    def fill(self) -> float:
        """How full the ring is, 0.0 to 1.0."""
        return min(self.written, self.capacity) / self.capacity

    # -- reading ------------------------------------------------------------------------------

    def copy_range(self, first: int, last: int, with_raw: bool = False) -> RingRead:
        """Copy ids `first..last` (inclusive, all `<= write_seq`) and drop the torn ones.

        Returns the rows still valid after the copy, which are always a suffix of the range: the
        rows lost to the writer are the oldest ones.
        """
        n = last - first + 1
        if n <= 0:
            return RingRead.empty(first, with_raw, self.raw_bytes)
        copied = self.copy_range_unchecked(first, last, with_raw)
        records, raw = copied.records, copied.raw
        # Anything the writer may have started overwriting while we copied is suspect.
        overwritten_upto = self.write_start - self.capacity
        skip = min(n, max(0, overwritten_upto - first + 1))
        expected = np.arange(first + skip, last + 1, dtype=np.uint64)
        bad = np.flatnonzero(records["seq"][skip:] != expected)
        if bad.size:
            skip += int(bad[-1]) + 1
        if skip:
            records = records[skip:]
            raw = raw[skip:] if raw is not None else None
        return RingRead(records=records, raw=raw, first_id=first + skip, lost=skip)

    def copy_rows(self, first: int, last: int, with_raw: bool = False) -> RowsCopy:
        """Copy positions `first..last` (all `<= write_seq`) of a ring whose rows carry run-wide
        ids (a shard), and keep the rows that are whole: not overwritten during the copy, not
        zeroed (left half-written by a killed writer), with ids increasing along the positions."""
        batch = self.copy_range_unchecked(first, last, with_raw)
        overwritten_upto = self.write_start - self.capacity
        positions = np.arange(first, last + 1, dtype=np.int64)
        ids = batch.records["seq"]
        keep = (positions > overwritten_upto) & (ids != 0)
        kept = np.flatnonzero(keep)
        if kept.size > 1:
            bad = np.flatnonzero(np.diff(ids[kept].astype(np.int64)) <= 0)
            if bad.size:  # a row overwritten under us that the counters did not show: drop all
                kept = kept[int(bad[-1]) + 1 :]  # before it, as `copy_range` does
        raw = batch.raw[kept] if batch.raw is not None else None
        return RowsCopy(records=batch.records[kept], raw=raw, positions=positions[kept])

    def copy_range_unchecked(self, first: int, last: int, with_raw: bool = False) -> RingRead:
        """Positions `first..last` copied as they are; the caller checks what it got."""
        n = max(0, last - first + 1)
        slot = (first - 1) % self.capacity
        head = min(n, self.capacity - slot)
        records = np.empty(n, dtype=RECORD_DTYPE)
        rows, ring_rows = records.view(_ROW), self.records.view(_ROW)  # one memcpy per part
        rows[:head] = ring_rows[slot : slot + head]
        rows[head:] = ring_rows[: n - head]
        raw = None
        if with_raw:
            raw = np.empty((n, self.raw_bytes), dtype=np.uint8)
            raw[:head] = self.raw[slot : slot + head]
            raw[head:] = self.raw[: n - head]
        return RingRead(records=records, raw=raw, first_id=first, lost=0)

    def id_at(self, position: int) -> int:
        """The id stored at `position` (0: none, or a zeroed row); no torn-read check."""
        return int(self.records["seq"][(position - 1) % self.capacity])

    def get(self, packet_id: int) -> tuple[np.void, bytes] | None:
        """One record and its stored raw bytes, or None when it is not (or no longer) held."""
        if not self.oldest_id <= packet_id <= self.write_seq:
            return None
        batch = self.copy_range(packet_id, packet_id, with_raw=True)
        if not len(batch.records):
            return None
        row = batch.records[0]
        assert batch.raw is not None
        keep = min(int(row["cap_len"]), self.raw_bytes)
        return row, batch.raw[0, :keep].tobytes()


@dataclass
class RowsCopy:
    """Whole rows copied from a shard, with the ring position each came from."""

    records: np.ndarray
    raw: np.ndarray | None
    positions: np.ndarray


@dataclass
class RingRead:
    """What one read returns. `records["seq"]` holds the ids: `first_id`, `first_id + 1`, ..."""

    records: np.ndarray
    first_id: int
    lost: int
    raw: np.ndarray | None = None

    @classmethod
    def empty(cls, next_id: int, with_raw: bool = False, raw_bytes: int = 0) -> RingRead:
        raw = np.empty((0, raw_bytes), dtype=np.uint8) if with_raw else None
        return cls(records=np.empty(0, dtype=RECORD_DTYPE), first_id=next_id, lost=0, raw=raw)

    def __len__(self) -> int:
        return len(self.records)


class RingReader:
    """One reader's cursor. `start` is the next id to read: "oldest", "latest" (only what is
    written from now on) or an id (a resume: `since + 1`)."""

    def __init__(self, ring: Ring, start: Start = "latest", *, with_raw: bool = False) -> None:
        if ring.layout.shards > 1:
            raise RingError("a ring shard holds run-wide ids: read it through ShardSet")
        self.ring = ring
        self.with_raw = with_raw
        self.lost_total = 0
        self.read_total = 0
        if start == "latest":
            self.cursor = ring.write_seq + 1
        elif start == "oldest":
            self.cursor = ring.oldest_id
        elif isinstance(start, int) and start >= 1:
            self.cursor = start
        else:
            raise RingError(f"invalid reader start {start!r}")

    @property
    def backlog(self) -> int:
        """How many published records this reader has not read yet."""
        return max(0, self.ring.write_seq - self.cursor + 1)

    def read(self, max_records: int = 65536) -> RingRead:
        """Everything after the cursor, up to `max_records`, as a copy. Never blocks.

        `lost` counts the records that were overwritten before this reader got to them; the
        cursor then continues from the oldest record still valid, so for any interleaving of
        writes and reads: records returned + lost == records written after the start.
        """
        ring = self.ring
        published = ring.write_seq
        lost = 0
        oldest = max(published - ring.capacity + 1, ring.base_id + 1)
        if self.cursor < oldest:
            lost = oldest - self.cursor
            self.cursor = oldest
        last = min(published, self.cursor + max_records - 1)
        if last < self.cursor:
            batch = RingRead.empty(self.cursor, self.with_raw, ring.raw_bytes)
        else:
            batch = ring.copy_range(self.cursor, last, self.with_raw)
            self.cursor = last + 1
        batch.lost += lost
        self.lost_total += batch.lost
        self.read_total += len(batch.records)
        return batch


class RingWriter:
    """The single writer. Resumes after the ring's published sequence, so ids keep increasing
    across capture restarts. Two writers on one ring corrupt it: the supervisor guarantees one."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.chunk = max(1, ring.capacity // 8)
        self._raw_dtype = np.dtype(f"S{max(1, ring.raw_bytes)}")
        counters = ring._counters
        # A writer killed between the two counters leaves write_start ahead: those ids were
        # never published, and their slots may be half written. Skip past them, so no reader can
        # ever see a half-written row under a published id.
        # Their ids are zeroed first: with run-wide ids (shards) a completed row of the dead batch
        # would otherwise carry ids the allocator hands out again.
        published = int(counters[WRITE_SEQ_WORD])
        self.next_id = max(published, int(counters[WRITE_START_WORD])) + 1
        if self.next_id - 1 != published:
            for position in range(max(published + 1, self.next_id - ring.capacity), self.next_id):
                ring.records["seq"][(position - 1) % ring.capacity] = 0
            counters[WRITE_SEQ_WORD] = self.next_id - 1
        np.frombuffer(ring._buf, dtype="<u8", count=1, offset=48)[0] = os.getpid()

    def write(
        self,
        records: np.ndarray,
        frames: Sequence[bytes] | None = None,
        *,
        first_id: int | None = None,
    ) -> int:
        """Append `records` (their `seq` field is overwritten) and the first `raw_bytes` of each
        frame; return the id of the first record (the next id when `records` is empty).

        The ids are the ring positions, unless `first_id` is given (a shard of a multi-process
        capture): the records then get ids `first_id, first_id + 1, ...`."""
        first = self.next_id if first_id is None else first_id
        n = len(records)
        if frames is not None and len(frames) != n:
            raise ValueError(f"{n} records but {len(frames)} frames")
        for start in range(0, n, self.chunk):
            stop = min(n, start + self.chunk)
            chunk_frames = frames[start:stop] if frames is not None else None
            self._write_chunk(records[start:stop], chunk_frames, first + start)
        return first

    def skip_to(self, next_id: int) -> None:
        """Publish up to `next_id - 1` without writing those ids: their rows are zeroed, so a
        reader counts them lost (a fleet central whose replay cannot fill them)."""
        if next_id <= self.next_id:
            return
        counters = self.ring._counters
        counters[WRITE_START_WORD] = next_id - 1
        positions = np.arange(max(self.next_id, next_id - self.ring.capacity), next_id)
        self.ring.records["seq"][(positions - 1) % self.ring.capacity] = 0
        counters[WRITE_SEQ_WORD] = next_id - 1
        self.next_id = next_id

    def _write_chunk(
        self, records: np.ndarray, frames: Sequence[bytes] | None, first_id: int
    ) -> None:
        ring = self.ring
        n = len(records)
        first = self.next_id
        last = first + n - 1
        counters = ring._counters
        counters[WRITE_START_WORD] = last
        ids = np.arange(first_id, first_id + n, dtype=np.uint64)
        records["seq"] = 0
        rows = records.view(_ROW)  # whole rows: a structured copy goes field by field, 10x slower
        slot = (first - 1) % ring.capacity
        head = min(n, ring.capacity - slot)
        for dst, src in (
            (slice(slot, slot + head), slice(0, head)),
            (slice(0, n - head), slice(head, n)),
        ):
            if src.start == src.stop:
                continue
            ring.records.view(_ROW)[dst] = rows[src]  # a view kept here would block close()
            if ring.raw_bytes:
                self._write_raw(ring.raw[dst], frames[src] if frames is not None else None)
            ring.records["seq"][dst] = ids[src]
        counters[WRITE_SEQ_WORD] = last
        self.next_id = last + 1

    def _write_raw(self, slots: np.ndarray, frames: Sequence[bytes] | None) -> None:
        """The first `raw_bytes` of each frame straight into its slot, NUL-padded: numpy's
        fixed-width bytes assignment cuts and pads in one C loop, with no joined copy between
        the frames and the shared memory."""
        if frames is None:
            slots[:] = 0
        else:
            slots.view(self._raw_dtype).reshape(-1)[:] = frames
