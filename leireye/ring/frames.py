"""The frame segment: whole frames on their way from a capture shard to the packet store.

Why it is shaped so
-------------------
The ring keeps only the first `ring.raw_bytes` of each frame; the packet store wants all of it,
and the capture process must never wait for a disk. So each capture shard appends every batch's
whole frames to a byte ring in shared memory (one `memcpy` of the joined batch, measured in
docs/store.md), and the store writer process (`leireye/store/process.py`) reads them at its own
pace. Like the packet ring, nobody waits: a writer process that falls more than the segment
behind loses the oldest frames *to the store only*, and counts them.

One producer (the capture shard), one consumer (the store writer). Frame `s` (1, 2, ...) of
this segment has an entry in slot `(s - 1) % slots` and its bytes at the absolute byte position
`offset` (`offset % data_bytes` in the data region; a frame may wrap around its end).

The producer, for a batch of n frames of b bytes in total:

1. stores `write_start = seq + n` and `data_start = head + b` (what may be touched from now on);
2. copies the bytes, then the entries;
3. stores `data_head = head + b`, then `write_seq = seq + n` (the publication).

The consumer loads `write_seq` first, copies entries and bytes, then loads `write_start` and
`data_start`: an entry `s <= write_start - slots`, or a frame whose bytes start before
`data_start - data_bytes`, may have been overwritten during the copy, so it is dropped and
counted as lost, never returned torn (x86-64 keeps stores in order and loads in order).

Page 1 is the store writer's: its status (`leireye/ring/storestatus.py`), which the web
workers read for `/metrics`, and which survives a restart of the writer.

Layout (little-endian):

    offset  size  field
    0       8     magic b"LEIRFRM\\0"
    8       4     version (u4)
    12      4     shard (u4)
    16      8     data_bytes (u8)
    24      8     slots (u8)
    64      8     write_seq (u8): frames published
    72      8     data_head (u8): bytes published
    128     8     write_start (u8)
    136     8     data_start (u8)
    192     8     dropped (u8): frames the producer could not append (a batch beyond the segment)
    200     8     linktype (u8): the LINKTYPE_* of the frames, set by the producer on start
    208     8     snaplen (u8): the capture's snaplen, set with it
    216     8     handed_id (u8): the last id the producer handed over, appended or dropped
                  (stored after `write_seq`: `storemark.py` reads how far the store is complete)
    256     8     disk_seq (u8): the store writer has dealt with every frame up to this one:
                  written it to a file, or counted it lost (it alone writes this word, after
                  each write: a restarted writer counts its gap from it, and `storemark.py`
                  how far the store is complete)
    4096    4096  the store writer's status (`StoreStatus`)
    8192    32 * slots  entries (`ENTRY_DTYPE`)
    then    data_bytes  the frames' bytes (page aligned)
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from leireye.errors import RingError
from leireye.ring.shm import PAGE, Segment, attach_segment, create_segment, page_align

MAGIC: Final = b"LEIRFRM\x00"
VERSION: Final = 1
ENTRY_DTYPE: Final = np.dtype(
    [("id", "<u8"), ("ts_ns", "<i8"), ("offset", "<u8"), ("wire_len", "<u4"), ("cap_len", "<u4")]
)
_HEADER: Final = struct.Struct("<8sIIQQ")
_WRITE_SEQ, _DATA_HEAD, _WRITE_START, _DATA_START, _DROPPED = 8, 9, 16, 17, 24  # u8 words
_LINKTYPE, _SNAPLEN, _HANDED = 25, 26, 27
_DISK_SEQ: Final = 32
_STATUS_OFFSET: Final = PAGE
_ENTRIES_OFFSET: Final = 2 * PAGE
MIN_DATA_BYTES: Final = 1 << 20
AVERAGE_FRAME: Final = 256  # slots = data_bytes / this


def frames_name(ring_name: str, shard: int) -> str:
    """The frame segment of capture shard `shard` of the run whose ring is `ring_name`."""
    return f"{ring_name}-frames-{shard}"


def segment_size(data_bytes: int) -> int:
    return _ENTRIES_OFFSET + page_align(_slots(data_bytes) * ENTRY_DTYPE.itemsize) + data_bytes


def _slots(data_bytes: int) -> int:
    return max(1024, data_bytes // AVERAGE_FRAME)


Buffer = bytearray | mmap.mmap


class FrameSegment:
    """A mapped frame segment (or a plain buffer in tests: `over`)."""

    def __init__(self, buf: Buffer, segment: Segment | None) -> None:
        magic, version, shard, data_bytes, slots = _HEADER.unpack_from(buf, 0)
        name = segment.name if segment is not None else "frame segment"
        if magic != MAGIC or version != VERSION:
            raise RingError(f"shared memory {name} is not a version {VERSION} frame segment")
        data_at = _ENTRIES_OFFSET + page_align(slots * ENTRY_DTYPE.itemsize)
        if len(buf) < data_at + data_bytes:
            raise RingError(f"shared memory {name} is shorter than its header says")
        self.name = name
        self.segment = segment
        self.shard: int = shard
        self.data_bytes: int = data_bytes
        self.slots: int = slots
        self.words: npt.NDArray[np.uint64] = np.frombuffer(buf, dtype="<u8", count=PAGE // 8)
        self.entries: npt.NDArray[np.void] = np.frombuffer(
            buf, dtype=ENTRY_DTYPE, count=slots, offset=_ENTRIES_OFFSET
        )
        self.data: npt.NDArray[np.uint8] = np.frombuffer(
            buf, dtype=np.uint8, count=data_bytes, offset=data_at
        )
        self.status_view = memoryview(buf)[_STATUS_OFFSET : _STATUS_OFFSET + PAGE]

    @classmethod
    def over(cls, buf: bytearray, data_bytes: int, shard: int = 0) -> FrameSegment:
        _init(buf, data_bytes, shard)
        return cls(buf, None)

    @classmethod
    def create(
        cls,
        name: str,
        data_bytes: int,
        shard: int = 0,
        *,
        owner: tuple[int, int] | None = None,
        mode: int = 0o600,
    ) -> FrameSegment:
        data_bytes = max(MIN_DATA_BYTES, page_align(data_bytes))
        segment = create_segment(name, segment_size(data_bytes), owner=owner, mode=mode)
        _init(segment.buf, data_bytes, shard)
        return cls(segment.buf, segment)

    @classmethod
    def attach(cls, name: str, *, writable: bool = False) -> FrameSegment:
        segment = attach_segment(name, writable=writable)
        try:
            return cls(segment.buf, segment)
        except BaseException:
            segment.close()
            raise

    @property
    def write_seq(self) -> int:
        return int(self.words[_WRITE_SEQ])

    @property
    def dropped(self) -> int:
        return int(self.words[_DROPPED])

    @property
    def handed_id(self) -> int:
        """The last id the producer handed over (appended, or dropped); 0: none yet."""
        return int(self.words[_HANDED])

    @property
    def disk_seq(self) -> int:
        return int(self.words[_DISK_SEQ])

    @disk_seq.setter
    def disk_seq(self, seq: int) -> None:
        self.words[_DISK_SEQ] = seq

    @property
    def link(self) -> tuple[int, int]:
        """`(linktype, snaplen)` as the producer set them."""
        return int(self.words[_LINKTYPE]), int(self.words[_SNAPLEN])

    def entry_id(self, seq: int) -> int | None:
        """The id of frame `seq` (published), or None when its entry may have been overwritten
        while it was read (`write_start` is loaded after the entry)."""
        if seq < 1:
            return None
        found = int(self.entries["id"][(seq - 1) % self.slots])
        return found if int(self.words[_WRITE_START]) < seq + self.slots else None

    def oldest_seq(self) -> int:
        """The oldest frame whose entry and bytes are still held (`write_seq + 1`: none)."""
        words = self.words
        seq, head = int(words[_WRITE_SEQ]), int(words[_DATA_HEAD])
        lo, hi = max(1, seq - self.slots + 1), seq + 1
        floor = head - self.data_bytes
        while lo < hi:  # offsets increase with the sequence
            mid = (lo + hi) // 2
            if int(self.entries[(mid - 1) % self.slots]["offset"]) < floor:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def close(self) -> None:
        self.status_view.release()
        del self.words, self.entries, self.data
        if self.segment is not None:
            self.segment.close()

    def unlink(self) -> None:
        if self.segment is None:
            raise RingError("this frame segment is not backed by shared memory")
        self.segment.unlink()


def _init(buf: Buffer, data_bytes: int, shard: int) -> None:
    _HEADER.pack_into(buf, 0, MAGIC, VERSION, shard, data_bytes, _slots(data_bytes))


class FrameAppender:
    """The producer side, in the capture process: `append` never waits and never fails on a
    full segment (it overwrites the oldest frames)."""

    def __init__(self, segment: FrameSegment, linktype: int, snaplen: int) -> None:
        """`linktype` is the LINKTYPE_* value files say (not libpcap's DLT_*)."""
        self.segment = segment
        segment.words[_LINKTYPE] = linktype
        segment.words[_SNAPLEN] = snaplen

    def append(
        self,
        first_id: int,
        ts_ns: Sequence[int],
        wire_lens: Sequence[int],
        frames: Sequence[bytes],
    ) -> None:
        """Append frames with the consecutive ids `first_id, first_id + 1, ...`."""
        seg = self.segment
        n = len(frames)
        if n == 0:
            return
        cap = np.fromiter(map(len, frames), dtype=np.int64, count=n)
        total = int(cap.sum())
        if n > seg.slots or total > seg.data_bytes:  # larger than the segment: keep what fits
            keep = min(seg.slots, int(np.searchsorted(np.cumsum(cap), seg.data_bytes, "right")))
            seg.words[_DROPPED] += n - keep
            if keep:
                self.append(first_id, ts_ns[:keep], wire_lens[:keep], frames[:keep])
            seg.words[_HANDED] = first_id + n - 1
            return
        words = seg.words
        seq, head = int(words[_WRITE_SEQ]), int(words[_DATA_HEAD])
        words[_WRITE_START] = seq + n
        words[_DATA_START] = head + total
        blob = np.frombuffer(b"".join(frames), dtype=np.uint8)
        _put(seg.data, head % seg.data_bytes, blob)
        rows = np.empty(n, dtype=ENTRY_DTYPE)
        rows["id"] = np.arange(first_id, first_id + n, dtype=np.uint64)
        rows["ts_ns"] = ts_ns
        rows["wire_len"] = np.asarray(wire_lens, dtype=np.int64) & 0xFFFF_FFFF
        rows["cap_len"] = cap
        starts = np.empty(n, dtype=np.uint64)
        starts[0] = head
        if n > 1:
            np.cumsum(cap[:-1], out=starts[1:].view(np.int64))
            starts[1:] += np.uint64(head)
        rows["offset"] = starts
        _put(seg.entries, seq % seg.slots, rows)
        words[_DATA_HEAD] = head + total
        words[_WRITE_SEQ] = seq + n
        words[_HANDED] = first_id + n - 1


def _put(ring: np.ndarray, at: int, values: np.ndarray) -> None:
    head = min(len(values), len(ring) - at)
    ring[at : at + head] = values[:head]
    if head < len(values):
        ring[: len(values) - head] = values[head:]


def _take(ring: np.ndarray, at: int, count: int) -> np.ndarray:
    at %= len(ring)
    if at + count <= len(ring):
        return ring[at : at + count].copy()
    return np.concatenate((ring[at:], ring[: count - (len(ring) - at)]))


@dataclass
class FrameBatch:
    """Frames copied out of a segment: `entries` (ENTRY_DTYPE, `offset` rewritten to the
    frame's start in `data`), their bytes, and how many frames before them were lost."""

    entries: npt.NDArray[np.void]
    data: bytes
    lost: int

    def __len__(self) -> int:
        return len(self.entries)

    def frame(self, i: int) -> bytes:
        start = int(self.entries["offset"][i])
        return self.data[start : start + int(self.entries["cap_len"][i])]


class FrameReader:
    """The consumer side, in the store writer: a cursor over the frames (`next_seq`)."""

    def __init__(self, segment: FrameSegment, next_seq: int | None = None) -> None:
        self.segment = segment
        self.next_seq = segment.write_seq + 1 if next_seq is None else next_seq
        self.lost_total = 0

    @property
    def backlog(self) -> int:
        """Frames published and not read yet."""
        return max(0, self.segment.write_seq - self.next_seq + 1)

    def seek_after(self, last_id: int) -> int:
        """Move the cursor to the first held frame with an id above `last_id` (ids increase
        with the position) and return it."""
        seg = self.segment
        lo, hi = seg.oldest_seq(), seg.write_seq + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if int(seg.entries[(mid - 1) % seg.slots]["id"]) <= last_id:
                lo = mid + 1
            else:
                hi = mid
        self.next_seq = lo
        return lo

    def read(self, max_frames: int = 65536, max_bytes: int = 64 << 20) -> FrameBatch:
        seg = self.segment
        words = seg.words
        published = int(words[_WRITE_SEQ])  # load first
        lost = 0
        start = self.next_seq
        if published - start + 1 > seg.slots:
            lost += published - seg.slots + 1 - start
            start = published - seg.slots + 1
        last = min(published, start + max_frames - 1)
        if last < start:
            return FrameBatch(np.empty(0, dtype=ENTRY_DTYPE), b"", 0)
        entries = _take(seg.entries, (start - 1) % seg.slots, last - start + 1)
        first_ok = max(start, int(words[_WRITE_START]) - seg.slots + 1)
        if first_ok > start:
            lost += first_ok - start
            entries = entries[first_ok - start :]
            start = first_ok
        held_from = max(0, int(words[_DATA_START]) - seg.data_bytes)
        gone = int(np.searchsorted(entries["offset"], held_from))
        if gone == len(entries):
            self.next_seq = start + gone
            self.lost_total += lost + gone
            return FrameBatch(np.empty(0, dtype=ENTRY_DTYPE), b"", lost + gone)
        ends = entries["offset"] + entries["cap_len"]
        base = int(entries["offset"][gone])
        within = gone + int(np.searchsorted(ends[gone:] - np.uint64(base), max_bytes, "right"))
        entries = entries[: max(gone + 1, within)]
        span = int(ends[len(entries) - 1]) - base
        data = _take(seg.data, base % seg.data_bytes, span)
        floor = int(words[_DATA_START]) - seg.data_bytes  # anything below may be torn
        torn = int(np.searchsorted(entries["offset"], max(0, floor)))
        lost += torn
        entries = entries[torn:]
        self.next_seq = start + torn + len(entries)
        self.lost_total += lost
        entries["offset"] -= np.uint64(base)
        return FrameBatch(entries, data.tobytes(), lost)
