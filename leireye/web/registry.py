"""Open connections per user, counted across every web worker process.

The limit (`limits.connections_per_user`) holds for the whole sensor, but the workers are
separate processes that share no Python memory, and a user's connections land on whichever
worker the kernel picks. So the counts live in a small shared-memory segment:

    offset 0   magic b"LEIRCONN", u32 version, u32 workers, u32 slots   (little-endian, 64 bytes)
    offset 64  int64[workers][slots][2]: (user_id, count) per slot; user_id 0 = free slot
    then       uint64[workers][len(COUNTERS)]: each worker's own counters, for /metrics

Each worker writes only its own row, so when a worker dies its connections are exactly its row,
and the supervisor zeroes it (`clear_worker`) before starting the replacement; a worker also
zeroes its own row when it attaches. Admission is check-then-increment over all rows, which two
workers must not interleave (both would see four connections and admit a fifth and a sixth), so
every access holds an exclusive `flock` on the segment's file in /dev/shm for a few
microseconds. `flock` rather than `lockf`/`fcntl` record locks: a POSIX record lock is dropped
as soon as the process closes *any* descriptor of the file (`shm.attach_segment` closes its
own right after mapping), while a `flock` belongs to our own open file description and the
kernel drops it when the holder dies, so a crashed worker cannot leave it held. (A forked child
would share the parent's description and hence its lock: each worker attaches by itself.)
A thread lock serialises threads within one process, which a `flock` does not.

The counters need no lock: each worker stores only its own row (whole 8-byte words), and
/metrics reads every row as it is; a counter restarts from 0 with its worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
from collections.abc import Iterator
from typing import Final

import numpy as np

from leireye.errors import RingError
from leireye.ring.shm import SHM_DIR, Segment, attach_segment, create_segment, page_align

log = logging.getLogger("leireye.web.registry")

MAGIC: Final = b"LEIRCONN"
VERSION: Final = 2
HEADER: Final = struct.Struct("<8sIII")
ROWS_OFFSET: Final = 64
DEFAULT_SLOTS: Final = 1024  # distinct users with an open connection, per worker
MAX_WORKERS: Final = 1024
MAX_SLOTS: Final = 65536


COUNTERS: Final = (
    "connections",  # open WebSocket connections (a gauge)
    "messages_sent",  # WebSocket messages sent
    "packets_delivered",  # packets handed to sessions (a packet to 3 sessions counts 3)
    "packets_encoded",  # packets JSON-encoded (once per worker)
    "client_dropped",  # packets skipped for clients that did not keep up
    "ring_lost",  # ring records overwritten before the worker read them
    "http_requests",  # REST API requests answered
)


def registry_size(workers: int, slots: int) -> int:
    return page_align(_counters_offset(workers, slots) + workers * len(COUNTERS) * 8)


def _counters_offset(workers: int, slots: int) -> int:
    return ROWS_OFFSET + workers * slots * 16


class ConnectionRegistry:
    """Create once in the supervisor (`create`), attach once per worker (`attach`)."""

    def __init__(self, segment: Segment, lock_fd: int, worker_index: int | None) -> None:
        magic, version, workers, slots = HEADER.unpack_from(segment.buf, 0)
        if magic != MAGIC or version != VERSION:
            raise RingError(f"shared memory {segment.name} is not a version {VERSION} registry")
        if not (1 <= workers <= MAX_WORKERS and 1 <= slots <= MAX_SLOTS):
            raise RingError(f"shared memory {segment.name}: bad registry shape")
        if segment.size < registry_size(workers, slots):
            raise RingError(f"shared memory {segment.name} is smaller than its registry")
        if worker_index is not None and not 0 <= worker_index < workers:
            raise RingError(f"worker index {worker_index} outside 0..{workers - 1}")
        self.segment = segment
        self.name = segment.name
        self.workers: int = workers
        self.slots: int = slots
        self.worker_index = worker_index
        self._lock_fd = lock_fd
        self._thread_lock = threading.Lock()
        self._rows: np.ndarray | None = np.ndarray(
            (workers, slots, 2), dtype="<i8", buffer=segment.buf, offset=ROWS_OFFSET
        )
        self._counters: np.ndarray | None = np.ndarray(
            (workers, len(COUNTERS)), dtype="<u8", buffer=segment.buf,
            offset=_counters_offset(workers, slots),
        )  # fmt: skip

    @classmethod
    def create(
        cls,
        name: str,
        workers: int,
        slots: int = DEFAULT_SLOTS,
        *,
        owner: tuple[int, int] | None = None,
    ) -> ConnectionRegistry:
        """A new zeroed registry for `workers` workers, mode 0600, owned by `owner`."""
        if not (1 <= workers <= MAX_WORKERS and 1 <= slots <= MAX_SLOTS):
            raise ValueError(f"workers must be 1..{MAX_WORKERS} and slots 1..{MAX_SLOTS}")
        segment = create_segment(name, registry_size(workers, slots), owner=owner)
        HEADER.pack_into(segment.buf, 0, MAGIC, VERSION, workers, slots)
        return cls._with_lock(segment, None)

    @classmethod
    def attach(cls, name: str, worker_index: int) -> ConnectionRegistry:
        """Map the registry writable as worker `worker_index`, whose row is cleared."""
        registry = cls._with_lock(attach_segment(name, writable=True), worker_index)
        registry.clear_worker(worker_index)
        return registry

    @classmethod
    def _with_lock(cls, segment: Segment, worker_index: int | None) -> ConnectionRegistry:
        try:
            lock_fd = os.open(SHM_DIR / segment.name, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            segment.close()
            raise RingError(f"cannot open {segment.name} for locking: {exc.strerror}") from None
        try:
            return cls(segment, lock_fd, worker_index)
        except BaseException:
            os.close(lock_fd)
            segment.close()
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[np.ndarray]:
        if self._rows is None:
            raise RingError(f"registry {self.name} is closed")
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield self._rows
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _own_row(self) -> int:
        if self.worker_index is None:
            raise RingError("the registry is not attached as a worker")
        return self.worker_index

    # -- a worker's side ----------------------------------------------------------------------

    def try_acquire(self, user_id: int, limit: int) -> bool:
        """Count one more connection of `user_id` on this worker, unless the user already has
        `limit` connections over all workers (or this worker's row is full)."""
        if user_id < 1:
            raise ValueError("user ids start at 1")
        row = self._own_row()
        with self._locked() as rows:
            if int(rows[:, :, 1][rows[:, :, 0] == user_id].sum()) >= limit:
                return False
            own = rows[row]
            hit = np.flatnonzero(own[:, 0] == user_id)
            if hit.size:
                own[hit[0], 1] += 1
                return True
            free = np.flatnonzero(own[:, 1] == 0)
            if not free.size:
                log.warning("registry %s: worker %d has %d users; refusing", self.name, row,
                            self.slots)  # fmt: skip
                return False
            own[free[0]] = (user_id, 1)
            return True

    def release(self, user_id: int) -> None:
        """Forget one connection of `user_id` on this worker."""
        row = self._own_row()
        with self._locked() as rows:
            own = rows[row]
            hit = np.flatnonzero((own[:, 0] == user_id) & (own[:, 1] > 0))
            if not hit.size:
                log.warning("registry %s: release of user %d without a connection", self.name,
                            user_id)  # fmt: skip
                return
            own[hit[0], 1] -= 1
            if own[hit[0], 1] == 0:
                own[hit[0], 0] = 0

    # -- anyone -------------------------------------------------------------------------------

    def count(self, user_id: int) -> int:
        """Open connections of `user_id` over all workers."""
        with self._locked() as rows:
            return int(rows[:, :, 1][rows[:, :, 0] == user_id].sum())

    def totals(self) -> dict[int, int]:
        """Open connections per user over all workers (users with none are left out)."""
        with self._locked() as rows:
            flat = rows.reshape(-1, 2).copy()
        totals: dict[int, int] = {}
        for user_id, count in flat[flat[:, 1] > 0].tolist():
            totals[user_id] = totals.get(user_id, 0) + count
        return totals

    def publish_counters(self, values: dict[str, int]) -> None:
        """Store this worker's counters (names from COUNTERS; others are ignored)."""
        if self._counters is None:
            raise RingError(f"registry {self.name} is closed")
        row = self._counters[self._own_row()]
        for index, name in enumerate(COUNTERS):
            if name in values:
                row[index] = values[name]

    def read_counters(self) -> dict[str, list[int]]:
        """Every worker's counters: name -> one value per worker index."""
        if self._counters is None:
            raise RingError(f"registry {self.name} is closed")
        table = self._counters.copy()
        return {name: table[:, i].tolist() for i, name in enumerate(COUNTERS)}

    def clear_worker(self, worker_index: int) -> None:
        """Forget every connection of a worker (the supervisor, once that worker is dead and
        before its replacement starts)."""
        if not 0 <= worker_index < self.workers:
            raise ValueError(f"worker index {worker_index} outside 0..{self.workers - 1}")
        with self._locked() as rows:
            rows[worker_index] = 0

    def close(self) -> None:
        """Unmap and close the lock descriptor; idempotent."""
        self._rows = None
        self._counters = None
        self.segment.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def unlink(self) -> None:
        self.segment.unlink()

    def __repr__(self) -> str:
        return (
            f"ConnectionRegistry({self.name!r}, {self.workers} workers x {self.slots} slots, "
            f"worker={self.worker_index})"
        )
