"""The run's shared-memory segments: their names, and the clean-up of what a dead run left.

The supervisor creates every segment and unlinks every segment; see `docs/architecture.md`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from leireye.errors import LeirEyeError
from leireye.ring.frames import frames_name
from leireye.ring.shards import ids_name, shard_name
from leireye.ring.shardstatus import StatusSet
from leireye.ring.shm import SHM_DIR, unlink_segment

log = logging.getLogger("leireye.supervisor")


@dataclass(frozen=True)
class SegmentNames:
    """`ring` and `status` name shard 0; with several capture shards, shard k's are
    `NAME-ring-k` and `NAME-status-k`, and `NAME-ring-ids` is their id allocator."""

    ring: str
    status: str
    stats: str
    conns: str
    flows: str = ""
    shards: int = 1
    fleet: str = ""  # the publisher's status page (leireye/fleet/status.py)

    @classmethod
    def for_run(cls, base: str, shards: int = 1) -> SegmentNames:
        return cls(
            ring=f"{base}-ring",
            status=f"{base}-status",
            stats=f"{base}-stats",
            conns=f"{base}-conns",
            flows=f"{base}-flows",
            shards=shards,
            fleet=f"{base}-fleet",
        )

    @property
    def ids(self) -> str:
        return ids_name(self.ring)

    def rings(self) -> list[str]:
        return [shard_name(self.ring, k) for k in range(self.shards)]

    def statuses(self) -> list[str]:
        return [shard_name(self.status, k) for k in range(self.shards)]

    def frames(self) -> list[str]:
        """The frame segments (whole frames for the packet store), one per shard."""
        return [frames_name(self.ring, k) for k in range(self.shards)]

    def all(self) -> tuple[str, ...]:
        sharded = (*self.rings()[1:], *self.statuses()[1:], self.ids) if self.shards > 1 else ()
        flows = (self.flows,) if self.flows else ()
        fleet = (self.fleet,) if self.fleet else ()
        return (self.ring, self.status, self.stats, self.conns, *flows, *fleet, *sharded,
                *self.frames())  # fmt: skip

    def as_dict(self) -> dict[str, str]:
        return {
            "ring": self.ring,
            "status": self.status,
            "stats": self.stats,
            "conns": self.conns,
            "flows": self.flows,
            "fleet": self.fleet,
        }


class StatusDrops:
    """The stats process's view of the capture's kernel drops: `(ps_drop, ps_ifdrop)` summed
    over the status blocks of every capture shard. A shard that restarts starts its counters
    over; its new counts are added to what it had, so the sum never goes back. Picklable (it
    holds only the names), so it crosses the spawn boundary."""

    def __init__(self, status_name: str, shards: int = 1) -> None:
        self.status_name = status_name
        self.shards = shards
        self._blocks: Any = None
        self._last = [(0, 0)] * shards
        self._total = [0, 0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_blocks": None}

    def __call__(self) -> tuple[int, int]:
        if self._blocks is None:
            self._blocks = StatusSet.attach(self.status_name, self.shards)
        for k, status in enumerate(self._blocks.read_all()):
            now = (status.kernel_drops, status.if_drops)
            for i in (0, 1):
                before = self._last[k][i]
                self._total[i] += now[i] - before if now[i] >= before else now[i]
            self._last[k] = now
        return self._total[0], self._total[1]


def close_and_unlink(segment_owner: Any) -> None:
    with contextlib.suppress(LeirEyeError, FileNotFoundError):
        segment_owner.unlink()
    segment_owner.close()


def remove_stale_segments() -> list[str]:
    """Unlink `leireye-<pid>-*` segments whose supervisor is gone (left by a SIGKILLed run)."""
    removed = []
    for path in SHM_DIR.glob("leireye-*-*"):
        parts = path.name.split("-")
        if len(parts) < 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if unlink_segment(path.name):
            removed.append(path.name)
    if removed:
        log.warning("removed stale shared memory of dead runs: %s", ", ".join(sorted(removed)))
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
