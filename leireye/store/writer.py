"""The store's files: rotation, retention, and the one way they are written.

`StoreFiles` appends batches of whole frames (`FrameBatch`, from a shard's frame segment) to the
current file of their shard (`r<run>-s<shard>-<first id>.pcapng`, `leireye/store/pcapng.py`), one
`os.write` per batch straight to the file descriptor (no user-space buffer: the file size is
always the end of the last whole batch, or of a cut one after a crash). A file is closed and a
new one begun when it reaches `file_mb` or has been open `file_s` seconds; each file's index is
saved on every `flush` and when it is closed (`leireye/store/index.py`).

Retention: after each rotation and every `flush`, closed files are deleted oldest first (by
their newest packet) while the store holds more than `max_bytes`, or while their newest packet
is older than `max_age_s`. The file being written is never deleted.

Failures: an `OSError` while writing (ENOSPC, EIO, EDQUOT, a file system gone read-only) raises
`StoreFailed` after cutting the file back to its last whole batch; the caller (the writer
process) stops writing, says so, and keeps counting what the store misses. The capture never
learns of it.

Permissions: files and indexes are created 0640 (owner: the writer's account, `leireye`; group:
that of the directory, the web user's), so the web workers read them and nobody else.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from leireye.errors import LeirEyeError
from leireye.ring.frames import FrameBatch
from leireye.store import pcapng
from leireye.store.index import (
    FILE_SUFFIX,
    FileIndex,
    file_name,
    index_path,
    parse_name,
    recover,
)

log = logging.getLogger("leireye.store")

FILE_MODE: Final = 0o640


class StoreFailed(LeirEyeError):
    """The disk refused a write: the store stops (the capture does not)."""

    def __init__(self, message: str, err: int) -> None:
        super().__init__(message)
        self.errno = err


@dataclass
class _Open:
    fd: int
    index: FileIndex
    opened: float  # monotonic


@dataclass(frozen=True)
class Recovery:
    """What `StoreFiles.open_existing` found: per shard the last id this run has on disk; bytes
    and files cut or rebuilt."""

    last_ids: dict[int, int]
    cut_bytes: int
    rebuilt: int
    unreadable: list[str]


class StoreFiles:
    def __init__(
        self,
        directory: Path,
        *,
        file_bytes: int,
        file_s: float,
        max_bytes: int,
        max_age_s: float,
        run: int,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.directory = directory
        self.file_bytes = file_bytes
        self.file_s = file_s
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.run = run
        self._now_ns = clock
        self.closed: dict[Path, FileIndex] = {}
        self.current: dict[int, _Open] = {}
        self.frames_written = 0
        self.bytes_written = 0
        self.deleted_files = 0

    # -- start --------------------------------------------------------------------------------

    def open_existing(self) -> Recovery:
        """Take stock of the files a previous writer left: recover each index, cut a torn last
        block; new frames always go to new files."""
        last: dict[int, int] = {}
        cut = rebuilt = 0
        unreadable = []
        for path in sorted(self.directory.glob(f"r*{FILE_SUFFIX}")):
            named = parse_name(path)
            if named is None:
                continue
            run, shard, _ = named
            try:
                found = recover(path, shard, truncate=True)
            except OSError as exc:
                unreadable.append(f"{path.name}: {exc.strerror}")
                continue
            if found is None:
                unreadable.append(f"{path.name}: not a store file")
                continue
            cut += found.cut_bytes
            rebuilt += found.rebuilt
            if found.index.count == 0:
                _remove(path)
                continue
            self.closed[path] = found.index
            if run == self.run:
                last[shard] = max(last.get(shard, 0), found.index.last_id)
        return Recovery(last, cut, rebuilt, unreadable)

    # -- writing ------------------------------------------------------------------------------

    def write(self, shard: int, batch: FrameBatch, linktype: int, snaplen: int) -> None:
        if not len(batch):
            return
        entries = batch.entries
        current = self.current.get(shard)
        if current is not None and (
            current.index.size >= self.file_bytes
            or time.monotonic() - current.opened >= self.file_s
            or (current.index.linktype, current.index.snaplen) != (linktype, snaplen)
        ):
            self._close(shard)
            current = None
        if current is None:
            current = self._open(shard, int(entries["id"][0]), linktype, snaplen)
        blob, offsets = pcapng.packet_blocks(
            entries["id"], entries["ts_ns"], entries["wire_len"], entries["cap_len"], batch.data,
            entries["offset"],
        )  # fmt: skip
        index = current.index
        try:
            written = os.write(current.fd, blob)
            while written < len(blob):
                written += os.write(current.fd, memoryview(blob)[written:])
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(current.fd, index.size)
            raise StoreFailed(
                f"cannot write {index.path}: {exc.strerror or exc}", exc.errno or errno.EIO
            ) from None
        index.add_batch(entries["id"], entries["ts_ns"], offsets + index.size)
        index.size += len(blob)
        self.frames_written += len(batch)
        self.bytes_written += len(blob)

    def flush(self) -> None:
        """Save the index of every open file; apply retention."""
        for current in self.current.values():
            self._save(current.index)
        self.enforce_retention()

    def close(self) -> None:
        for shard in list(self.current):
            with contextlib.suppress(StoreFailed):
                self._close(shard)

    def _open(self, shard: int, first_id: int, linktype: int, snaplen: int) -> _Open:
        path = self.directory / file_name(self.run, shard, first_id)
        header = pcapng.file_header(linktype, snaplen)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise StoreFailed(f"cannot create {path}: {exc.strerror}", exc.errno or 0) from None
        try:
            os.write(fd, header)
        except OSError as exc:
            os.close(fd)
            _remove(path)
            raise StoreFailed(f"cannot write {path}: {exc.strerror}", exc.errno or 0) from None
        opened = _Open(fd, FileIndex(path, shard, linktype, snaplen), time.monotonic())
        self.current[shard] = opened
        self.enforce_retention()
        return opened

    def _close(self, shard: int) -> None:
        current = self.current.pop(shard)
        try:
            self._save(current.index)
        finally:
            os.close(current.fd)
            if current.index.count:
                self.closed[current.index.path] = current.index  # retention sees it
            else:
                _remove(current.index.path)

    def _save(self, index: FileIndex) -> None:
        try:
            index.save(FILE_MODE)
        except OSError as exc:
            raise StoreFailed(
                f"cannot save the index of {index.path}: {exc.strerror}", exc.errno or 0
            ) from None

    # -- retention ----------------------------------------------------------------------------

    def enforce_retention(self) -> None:
        by_age = sorted(self.closed.values(), key=lambda i: (i.last_ns, i.path.name))
        total = self.disk_bytes()
        too_old = self._now() - int(self.max_age_s * 1e9)
        for index in by_age:
            if total <= self.max_bytes and index.last_ns >= too_old:
                break
            total -= index.size
            self._delete(index)

    def _delete(self, index: FileIndex) -> None:
        self.closed.pop(index.path, None)
        _remove(index_path(index.path))
        _remove(index.path)
        self.deleted_files += 1
        log.debug("store: deleted %s (retention)", index.path.name)

    def _now(self) -> int:
        return self._now_ns()

    # -- what it holds ------------------------------------------------------------------------

    def all_indexes(self) -> list[FileIndex]:
        return [*self.closed.values(), *(c.index for c in self.current.values())]

    def disk_bytes(self) -> int:
        return sum(i.size for i in self.all_indexes())

    def time_span(self) -> tuple[int, int]:
        held = [i for i in self.all_indexes() if i.count]
        if not held:
            return 0, 0
        return min(i.first_ns for i in held), max(i.last_ns for i in held)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
