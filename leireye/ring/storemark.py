"""How far the packet store is complete, in run-wide ids: what a resume from the store
(`options.from_store`) may read before it declares an id lost.

Why it is shaped so
-------------------
Each capture shard hands its whole frames to the store writer through its own frame segment
(`frames.py`), and the writer drains the segments one after the other. Ids interleave across
shards, so the store's newest id says nothing about another shard's older ids: with two shards,
id 1001 (shard 0) can be on disk while 1000 (shard 1) is still in shard 1's segment. A reader
may call an id lost only when it can no longer arrive: when every shard's writer has gone past
it (written it, or counted it lost) or retention deleted it.

So per shard k a *mark* M_k: every id of shard k up to M_k has been dealt with by the store
writer. The store is complete (each id on disk, or never to be) up to M = min over k of M_k.
Every quantity below only grows, so a bound that held at the moment of its loads holds from then
on. They are loaded in this order:

1. N, the allocator's `next_id` (one shard: the ring's `write_seq + 1`): every id below N is
   already published in some shard's ring;
2. the segment's `disk_seq` d (the writer has dealt with frames 1..d, in order), then its
   `handed_id` H (the last id the capture handed over: appended, or dropped because the batch
   was larger than the whole segment; stored after the batch is published), then its
   `write_seq` w (frames appended);
3. d < w: frame d + 1 is the first one the writer has not dealt with; the shard's ids increase
   with its frames, so M_k = id(d + 1) - 1;
4. d == w: every frame appended had been dealt with when w was loaded, those up to H among them
   (H's batch was published before H was stored); the capture hands a batch over right after
   its ring write, so the shard's next frame is the first id its ring holds above H: M_k = that
   id - 1; if its ring holds none above H, each of the shard's ids below N (published before N
   was loaded, ring loaded after) is at most H: M_k = N - 1.

An entry or ring row overwritten while it was read (the writer lapped, a ring lapped between a
write and its hand-off) gives no bound; the shard keeps the last one. A shard whose frames never
come (its capture died between the ring write and the hand-off, the store failed) holds M back:
the replay then waits, and hands over to the ring after a while (`web/storereplay.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from leireye.ring.frames import FrameSegment
from leireye.ring.ring import Ring
from leireye.ring.shards import ShardSet, seek


@dataclass(frozen=True)
class ShardLook:
    """What one shard's hand-off says. `pending`: the id of the first frame the store writer has
    not dealt with (None: it has dealt with all appended); `next_in_ring`: then, the first id of
    the shard's ring above the last one it handed over (None: the ring holds none)."""

    pending: int | None
    next_in_ring: int | None = None


def shard_mark(next_id: int, look: ShardLook) -> int:
    """M_k: every id of the shard up to it has been dealt with (see the module docstring)."""
    if look.pending is not None:
        return look.pending - 1
    if look.next_in_ring is not None:
        return look.next_in_ring - 1
    return next_id - 1


def store_mark(next_id: int, looks: Sequence[ShardLook]) -> int:
    """M: every id up to it is on disk or will never be."""
    return min((shard_mark(next_id, look) for look in looks), default=next_id - 1)


class StoreMark:
    """Reads M from the rings and the frame segments (a web worker's, read-only)."""

    def __init__(self, shards: ShardSet, segments: Sequence[FrameSegment]) -> None:
        if len(segments) != shards.shards:
            raise ValueError("one frame segment per shard")
        self.shards = shards
        self.segments = list(segments)
        self._marks = [0] * len(self.segments)

    def read(self) -> int:
        next_id = self.shards.last_id + 1  # first
        for k, (ring, segment) in enumerate(zip(self.shards.rings, self.segments, strict=True)):
            look = look_at(ring, segment)
            if look is not None:
                self._marks[k] = max(self._marks[k], shard_mark(next_id, look))
        return min(self._marks)


def look_at(ring: Ring, segment: FrameSegment) -> ShardLook | None:
    """The shard's `ShardLook` (loads in the order above); None when a row it needed was being
    overwritten."""
    done = segment.disk_seq
    last = segment.handed_id
    appended = segment.write_seq
    if done < appended:
        pending = segment.entry_id(done + 1)
        return None if pending is None else ShardLook(pending)
    if done > appended:
        return None
    position = seek(ring, last + 1)
    if position > ring.write_seq:
        return ShardLook(None)
    found = ring.id_at(position)
    oldest = ring.oldest_id  # after the row: was it, or the one before it, overwritten since?
    first_ever = position == ring.base_id + 1
    if found <= last or position < oldest or (not first_ever and position - 1 < oldest):
        return None  # a zeroed row, or one overwritten: not proven the first above `last`
    return ShardLook(None, found)
