"""WebSocket resume from the packet store: `subscribe` with `since` older than the ring and
`options.from_store: true`.

The hub replays a resuming session from the ring (`Hub._advance_replay`); when the ids after
`since` are already gone from the ring and the session asked for the store, a `StoreReplay`
feeds it first: the ids `since + 1, since + 2, ...` read from the store (`PacketStore.frames`,
a few seeks per chunk), decoded again into the records the capture made
(`storeread.records_of`), filtered with the session's filter and delivered as replayed packets,
in id order. It hands over to the ring replay once its next id is well inside the ring (`margin`
ids above `ShardSet.whole_from`, where every shard's ring still holds all of its ids: with
several shards, above the oldest id of the shard whose ring covers the fewest ids, so the ring
replay finds every id; and with a margin, so the ring does not overwrite it before it reads it)
or has reached the live cursor; from there on everything is as for a ring resume. The session
drops ids at or below the last one it queued, so no id is ever sent twice.

The rate is bounded (`limits.store_replay_pps` per connection, a token bucket that holds at
most one second's worth), and so is each step (`CHUNK` ids, and never more than the outbox takes
now): a replay of an hour costs the worker's event loop at most one chunk's work per step
(~20 µs a packet, ~5 ms for a chunk: `benchmarks/bench_store_read.py`), not the hour. Ids
the store no longer holds (retention, or frames the store lost) are counted once, as the ring's
are, in one `dropped` `resume` notice each time some are found missing; ids the store has not
written yet (it runs a little behind the capture) are waited for, up to `STALL_S`: a store that
stopped (a full disk) must not hold a client back from live for ever, so then the ring replay
takes over where the store stopped and counts what neither holds.

Which ids are "not written yet" is the store's completeness mark (`leireye/ring/storemark.py`),
not its newest id: with several capture shards the writer drains their frame segments one after
the other, so a shard's newer ids can be on disk while another's older ones are still on their
way. An id is only missing when it is at or below the mark (every shard's writer went past it),
and the store's files are looked at again after each new mark, so none read is older than it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

import numpy as np

from leireye.store.reader import PacketStore, StoredFrame
from leireye.web.encode import encode_packets
from leireye.web.frames import PacketRun
from leireye.web.storeread import records_of

CHUNK: Final = 256
STALL_S: Final = 5.0


class ReplayTarget(Protocol):
    """What a store replay drives: the session's side of a resume (`session.Session`)."""

    @property
    def replaying(self) -> bool: ...

    @property
    def columns(self) -> bool: ...

    def outbox_room(self) -> int: ...

    def replay_lost(self, lost: int) -> None: ...

    def deliver_run(self, run: PacketRun, *, lost: int = 0) -> None: ...


class StoreReplay:
    def __init__(self, store: PacketStore, start: int, pps: int, now: float) -> None:
        self.store = store
        self.next_id = start
        self.pps = pps
        self._tokens = float(min(pps, CHUNK))
        self._at = now
        self._waiting: float | None = None  # since when the store has had nothing new for us
        self.mark = 0  # the store is complete up to this id (the last `stored_through()`)

    def _budget(self, now: float) -> int:
        self._tokens = min(float(self.pps), self._tokens + max(0.0, now - self._at) * self.pps)
        self._at = now
        return int(self._tokens)

    def done(self, ring_oldest: int, cursor: int, margin: int, now: float) -> bool:
        """Whether the ring takes over at `next_id`: well inside the ring, caught up, or the
        store has had nothing new for `STALL_S`."""
        if self._waiting is not None and now - self._waiting > STALL_S:
            return True
        return self.next_id >= min(ring_oldest + margin, cursor)

    def step(
        self, target: ReplayTarget, flt_mask: _Mask, stored_through: Callable[[], int], now: float
    ) -> int:
        """Deliver the next chunk the budget, the outbox and the store allow; the ids covered.
        `stored_through()`: how far the store is complete (`ring/storemark.py`: every id up to
        it is on disk or never will be; ids above it are waited for), asked when the replay has
        reached the last answer."""
        if self.mark < self.next_id:
            mark = stored_through()
            if mark > self.mark:
                self.mark = mark
                self.store.look_again()  # the files as they are now, not as cached before it
        if self.mark < self.next_id:
            if self._waiting is None:
                self._waiting = now
            return 0
        self._waiting = None
        n = min(CHUNK, self._budget(now), target.outbox_room(), self.mark - self.next_id + 1)
        if n <= 0 or not target.replaying:
            return 0
        first = self.next_id
        ids = range(first, first + n)
        frames = list(self.store.frames(ids))
        missing = n - len(frames)
        if missing:
            target.replay_lost(missing)
        for group in _by_linktype(frames):
            records = records_of(group, group[0].linktype)
            picked = records[np.flatnonzero(flt_mask(records))]
            if len(picked):
                messages = None if target.columns else encode_packets(picked)
                target.deliver_run(PacketRun(picked["seq"], messages, picked))
        self.next_id = first + n
        self._tokens -= n
        return n


class _Mask(Protocol):
    def __call__(self, records: np.ndarray, /) -> np.ndarray: ...


def _by_linktype(frames: list[StoredFrame]) -> list[list[StoredFrame]]:
    groups: list[list[StoredFrame]] = []
    for frame in frames:
        if groups and groups[-1][0].linktype == frame.linktype:
            groups[-1].append(frame)
        else:
            groups.append([frame])
    return groups
