"""The packet store writer's status as a web worker sees it: summed over every capture shard's
frame segment (page 1, `leireye/ring/frames.py`), attached read-only on first use. None when the
store is disabled (no segments) or not there yet."""

from __future__ import annotations

from leireye.errors import LeirEyeError
from leireye.ring.frames import FrameSegment, frames_name
from leireye.ring.shards import ShardSet
from leireye.ring.storestatus import StoreState, StoreStatus, read_status

_WORST = (StoreState.FAILED, StoreState.STARTING, StoreState.STOPPED, StoreState.WRITING)


class StoreView:
    def __init__(self, ring_name: str | None, shards: int) -> None:
        self.ring_name = ring_name
        self.shards = shards
        self._segments: list[FrameSegment] | None = None

    @classmethod
    def of(cls, ring: ShardSet) -> StoreView:
        segment = ring.rings[0].segment
        return cls(segment.name if segment is not None else None, ring.shards)

    def segments(self) -> list[FrameSegment] | None:
        """Every shard's frame segment, read-only; None while they are not all there."""
        if self.ring_name is None:
            return None
        if self._segments is None:
            attached: list[FrameSegment] = []
            try:
                for k in range(self.shards):
                    attached.append(FrameSegment.attach(frames_name(self.ring_name, k)))
            except LeirEyeError:
                for segment in attached:
                    segment.close()
                return None
            self._segments = attached
        return self._segments

    def read(self) -> StoreStatus | None:
        segments = self.segments()
        if segments is None:
            return None
        try:
            return summed([read_status(segment) for segment in segments])
        except LeirEyeError:
            return None


def summed(statuses: list[StoreStatus]) -> StoreStatus:
    """One status for the store: the worst state, the shards' counters added up (files, bytes
    and times are the store's own, the same in every shard's copy)."""
    first = statuses[0]
    state = next((s for s in _WORST if any(x.state == s for x in statuses)), first.state)
    return StoreStatus(
        state=state, pid=first.pid, updated_ns=min(s.updated_ns for s in statuses),
        frames_written=sum(s.frames_written for s in statuses),
        bytes_written=first.bytes_written,
        frames_lost=sum(s.frames_lost for s in statuses),
        lag_frames=sum(s.lag_frames for s in statuses),
        files=first.files, disk_bytes=first.disk_bytes, oldest_ns=first.oldest_ns,
        newest_ns=first.newest_ns,
        last_error=next((s.last_error for s in statuses if s.last_error), ""),
    )  # fmt: skip
