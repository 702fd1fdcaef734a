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
from leireye.shm import SHM_DIR, unlink_segment

log = logging.getLogger("leireye.supervisor")


@dataclass(frozen=True)
class SegmentNames:
    ring: str
    status: str
    stats: str
    conns: str

    @classmethod
    def for_run(cls, base: str) -> SegmentNames:
        return cls(
            ring=f"{base}-ring",
            status=f"{base}-status",
            stats=f"{base}-stats",
            conns=f"{base}-conns",
        )

    def all(self) -> tuple[str, ...]:
        return (self.ring, self.status, self.stats, self.conns)

    def as_dict(self) -> dict[str, str]:
        return {"ring": self.ring, "status": self.status, "stats": self.stats, "conns": self.conns}


class StatusDrops:
    """The stats process's view of the capture's kernel drops: `(ps_drop, ps_ifdrop)` read from
    the status block. Picklable (it holds only the name), so it crosses the spawn boundary."""

    def __init__(self, status_name: str) -> None:
        self.status_name = status_name
        self._block: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"status_name": self.status_name, "_block": None}

    def __call__(self) -> tuple[int, int]:
        from leireye.capture.status import StatusBlock

        if self._block is None:
            self._block = StatusBlock.attach(self.status_name)
        status = self._block.read()
        return status.kernel_drops, status.if_drops


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
