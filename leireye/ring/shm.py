"""Named shared-memory segments: one owner creates and unlinks, everyone else only attaches.

We map `/dev/shm/<name>` ourselves instead of using `multiprocessing.shared_memory`, for three
reasons measured on Python 3.11:

- an attaching `SharedMemory` registers the segment with the process's resource tracker, which
  unlinks it when that process exits: the ring would vanish under everyone else;
- `SharedMemory.close()` succeeds under a live numpy view, and the next access through the view
  segfaults; `mmap.close()` instead raises `BufferError` while a view exists;
- readers should map the segment read-only (`PROT_READ`), so a bug in a reader cannot corrupt it.

The owner decides who may attach: `create_segment(..., owner=(uid, gid), mode=0o640)` hands the
segment to the unprivileged user the child processes run as.
"""

from __future__ import annotations

import mmap
import os
import re
from pathlib import Path
from typing import Final

from leireye.errors import RingError

SHM_DIR: Final = Path("/dev/shm")
PAGE: Final = 4096
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")


def page_align(n: int) -> int:
    """`n` rounded up to a whole page: every region of a segment starts on one."""
    return (n + PAGE - 1) // PAGE * PAGE


def _path(name: str) -> Path:
    if not _NAME_RE.match(name):
        raise RingError(f"invalid shared-memory name {name!r}")
    return SHM_DIR / name


class Segment:
    """A mapped segment. `buf` is the mmap; build numpy views on it with `np.frombuffer`."""

    def __init__(self, name: str, mapping: mmap.mmap, *, writable: bool, owner: bool) -> None:
        self.name = name
        self.buf = mapping
        self.writable = writable
        self.owner = owner

    @property
    def size(self) -> int:
        return len(self.buf)

    def close(self) -> None:
        """Unmap. Raises BufferError while a numpy view on it is alive: drop views first."""
        if not self.buf.closed:
            self.buf.close()

    def unlink(self) -> None:
        """Remove the name (owner only); mappings stay valid until closed."""
        if not self.owner:
            raise RingError(f"segment {self.name} is not owned by this process")
        unlink_segment(self.name)

    def __repr__(self) -> str:
        mode = "rw" if self.writable else "ro"
        return f"Segment({self.name!r}, {self.size} bytes, {mode}{', owner' if self.owner else ''})"


def create_segment(
    name: str,
    size: int,
    *,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
) -> Segment:
    """Create a new zero-filled segment (fails if the name exists) and map it read-write."""
    path = _path(name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise RingError(
            f"shared memory {name} already exists (another run, or a stale one)"
        ) from None
    try:
        os.fchmod(fd, mode)  # the umask must not narrow what the owner asked for
        if owner is not None:
            os.fchown(fd, owner[0], owner[1])
        os.ftruncate(fd, size)
        mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return Segment(name, mapping, writable=True, owner=True)


def attach_segment(name: str, *, writable: bool = False) -> Segment:
    """Map an existing segment; read-only unless `writable`. Never unlinks anything."""
    path = _path(name)
    try:
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    except FileNotFoundError:
        raise RingError(f"shared memory {name} does not exist (is the sensor running?)") from None
    except PermissionError:
        raise RingError(f"no permission to open shared memory {name}") from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise RingError(f"shared memory {name} is empty")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
    finally:
        os.close(fd)
    return Segment(name, mapping, writable=writable, owner=False)


def unlink_segment(name: str) -> bool:
    """Remove a segment's name; True if it existed."""
    try:
        _path(name).unlink()
    except FileNotFoundError:
        return False
    return True
