"""The id allocator: run-wide packet ids for several capture processes, one ring each.

Why it is shaped so
-------------------
With `capture.workers: N` the kernel spreads packets over N capture processes (PACKET_FANOUT),
and each writes its own ring (a *shard*). Clients still see one stream of packet ids and resume
it with one integer (`since`), so ids must be totally ordered by publication: when a reader sees
`next_id == N`, every id below N must already be readable in some shard. A shard writer
therefore, for each batch of n records:

1. takes an exclusive `flock` on this segment's file (the kernel drops it if the holder dies);
2. stores `holder = shard + 1`, loads `next_id = G`;
3. writes its records with ids `G .. G+n-1` into its own ring and publishes them there;
4. stores `next_id = G + n`, then `holder = 0`, and unlocks.

A reader loads `next_id` first and then each shard's `write_seq` (x86-64 keeps loads in order and
stores in order), so every id below the `next_id` it saw is published in the shard it reads.

A writer killed inside the lock leaves `holder` set and `next_id` not (or not fully) advanced.
The next writer to take the lock sees `holder`, asks that shard's ring for the last id it
published (`last_published`), and moves `next_id` past it: a batch published in part (the ring
writes big batches in chunks) keeps its published ids, and the ids it never published are handed
out again. Nobody can ever read those: the restarted writer of that shard zeroes the ids of the
rows it did not publish (`RingWriter.__init__`). So each id below `next_id` is published exactly
once, in exactly one shard.

Layout (little-endian, one 4096-byte page):

    offset  size  field
    0       8     magic b"LEIRIDS\\0"
    8       4     version (u4)
    12      4     shards (u4)
    64      8     next_id (u8): the next id to hand out; starts at 1. Own cache line.
    128     8     holder (u8): shard + 1 while a writer is between steps 2 and 4, else 0
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from collections.abc import Callable
from typing import Final

import numpy as np

from leireye.errors import RingError
from leireye.ring.shm import PAGE, SHM_DIR, Segment, attach_segment, create_segment

MAGIC: Final = b"LEIRIDS\x00"
VERSION: Final = 1
_HEADER: Final = struct.Struct("<8sII")
_NEXT_WORD: Final = 64 // 8
_HOLDER_WORD: Final = 128 // 8


class IdAllocator:
    """Create once in the supervisor (`create`); attach writable in each capture shard, read-only
    in readers (which only load `next_id`)."""

    def __init__(
        self, buf: bytearray | mmap.mmap, segment: Segment | None, lock_fd: int | None
    ) -> None:
        magic, version, shards = _HEADER.unpack_from(buf, 0)
        name = segment.name if segment is not None else "id allocator"
        if magic != MAGIC or version != VERSION:
            raise RingError(f"shared memory {name} is not a version {VERSION} id allocator")
        self.segment = segment
        self.name = name
        self.shards: int = shards
        self._lock_fd = lock_fd
        self._locking = segment is not None
        self._words: np.ndarray = np.frombuffer(buf, dtype="<u8", count=PAGE // 8)

    @classmethod
    def over(cls, buf: bytearray, shards: int) -> IdAllocator:
        """An allocator in a plain buffer, without a lock: one process (tests)."""
        _init(buf, shards)
        return cls(buf, None, None)

    @classmethod
    def create(cls, name: str, shards: int, *, owner: tuple[int, int] | None = None) -> IdAllocator:
        segment = create_segment(name, PAGE, owner=owner)
        _init(segment.buf, shards)
        return cls(segment.buf, segment, None)

    @classmethod
    def attach(cls, name: str, *, writable: bool = False) -> IdAllocator:
        segment = attach_segment(name, writable=writable)
        lock_fd = None
        try:
            if writable:
                lock_fd = os.open(SHM_DIR / name, os.O_RDWR | os.O_CLOEXEC)
            return cls(segment.buf, segment, lock_fd)
        except OSError as exc:
            segment.close()
            raise RingError(f"cannot open {name} for locking: {exc.strerror}") from None
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            segment.close()
            raise

    @property
    def next_id(self) -> int:
        """Every id below this one is published in some shard."""
        return int(self._words[_NEXT_WORD])

    @property
    def holder(self) -> int:
        return int(self._words[_HOLDER_WORD])

    def allocate(
        self,
        shard: int,
        count: int,
        publish: Callable[[int], object],
        last_published: Callable[[int], int],
    ) -> int:
        """Run `publish(first_id)` under the lock for `count` ids and return `first_id`.

        `publish` must write and publish the records in the shard's ring before it returns;
        `last_published(shard)` gives the last id a shard published (recovery, see above)."""
        if self._locking and self._lock_fd is None:
            raise RingError(f"{self.name} is not attached writable")
        words = self._words
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            dead = int(words[_HOLDER_WORD])
            if dead:
                self.recover(dead - 1, last_published)
            words[_HOLDER_WORD] = shard + 1
            first = int(words[_NEXT_WORD])
            publish(first)
            words[_NEXT_WORD] = first + count
            words[_HOLDER_WORD] = 0
            return first
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def recover(self, shard: int, last_published: Callable[[int], int]) -> None:
        """Shard `shard` died holding the lock: keep what it published, reuse the rest."""
        words = self._words
        words[_NEXT_WORD] = max(int(words[_NEXT_WORD]), last_published(shard) + 1)
        words[_HOLDER_WORD] = 0

    def close(self) -> None:
        del self._words
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self.segment is not None:
            self.segment.close()

    def unlink(self) -> None:
        if self.segment is None:
            raise RingError("this id allocator is not backed by shared memory")
        self.segment.unlink()


def _init(buf: bytearray | mmap.mmap, shards: int) -> None:
    _HEADER.pack_into(buf, 0, MAGIC, VERSION, shards)
    struct.pack_into("<Q", buf, _NEXT_WORD * 8, 1)
