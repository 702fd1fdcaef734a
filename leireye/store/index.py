"""The index of one store file: what it holds, and where every `MARK_EVERY`-th packet starts.

A store file `r<run>-s<shard>-<first id>.pcapng` gets an index `r<run>-s<shard>-<first id>.idx`
beside it. `run` is the sensor run that captured it (its start, in Unix seconds): packet ids
start over at 1 with every run, so an id names a packet only within its run.

    offset  size  field (little-endian)
    0       8     magic b"LEIRIDX\\0"
    8       4     version (u4)
    12      4     shard (u4)
    16      4     linktype (u4)       20  4  snaplen (u4)
    24      8     size (u8): the file bytes this index covers (whole blocks only)
    32      8     count (u8): packets in those bytes
    40      8     first_id (u8)       48  8  last_id (u8)
    56      8     first_ns (i8)       64  8  last_ns (i8)
    72      8     marks (u8): how many mark rows follow
    80      24 * marks  MARK_DTYPE: id, ts_ns, offset of packets 0, MARK_EVERY, 2*MARK_EVERY, ...

Packet ids increase within a file (one capture shard writes it), and so, in capture order, do
timestamps: a packet is found by a binary search over the marks and a read of at most
`MARK_EVERY` blocks from there; a time range starts at the last mark before it.

The index is rewritten whole and renamed into place (never half written) by the store writer,
every flush of the file it is writing and once when it closes a file. An index is stale when its
file is longer than `size` (a crash between a write and the next flush, or a reader looking at
the file being written): the rest is read from the file itself (`extend`), whose blocks each
carry their id. A missing or unreadable index is rebuilt from its file (`rebuild`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from leireye.store import pcapng

MAGIC: Final = b"LEIRIDX\x00"
VERSION: Final = 1
MARK_EVERY: Final = 64
MARK_DTYPE: Final = np.dtype([("id", "<u8"), ("ts_ns", "<i8"), ("offset", "<u8")])
_HEADER: Final = struct.Struct("<8sIIIIQQQQqqQ")
SCAN_CHUNK: Final = 4 << 20
FILE_SUFFIX: Final = ".pcapng"
INDEX_SUFFIX: Final = ".idx"


def file_name(run: int, shard: int, first_id: int) -> str:
    return f"r{run:010d}-s{shard}-{first_id:020d}{FILE_SUFFIX}"


def index_path(path: Path) -> Path:
    return path.with_suffix(INDEX_SUFFIX)


_NAME: Final = re.compile(r"r(\d{1,19})-s(\d{1,5})-(\d{1,20})")


def parse_name(path: Path) -> tuple[int, int, int] | None:
    """`(run, shard, first id)` of a store file name; None for anything else."""
    found = _NAME.fullmatch(path.stem) if path.suffix == FILE_SUFFIX else None
    if found is None:
        return None
    run, shard, first = found.groups()
    return int(run), int(shard), int(first)


@dataclass
class FileIndex:
    path: Path
    shard: int
    linktype: int
    snaplen: int
    size: int = pcapng.HEADER_BYTES
    count: int = 0
    first_id: int = 0
    last_id: int = 0
    first_ns: int = 0
    last_ns: int = 0
    marks: npt.NDArray[np.void] = field(default_factory=lambda: np.empty(0, dtype=MARK_DTYPE))
    _pending: list[tuple[int, int, int]] = field(default_factory=list)

    def add(self, ids: Iterable[int], ts_ns: Iterable[int], offsets: Iterable[int]) -> None:
        """Packets appended at these file offsets (in file order)."""
        for packet_id, ts, offset in zip(ids, ts_ns, offsets, strict=True):
            if self.count == 0:
                self.first_id, self.first_ns = packet_id, ts
            if self.count % MARK_EVERY == 0:
                self._pending.append((packet_id, ts, offset))
            self.count += 1
            self.last_id, self.last_ns = packet_id, ts

    def add_batch(
        self, ids: npt.NDArray[np.uint64], ts: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64]
    ) -> None:
        """As `add`, for a numpy batch: only the marked rows are touched in Python."""
        n = len(ids)
        if n == 0:
            return
        if self.count == 0:
            self.first_id, self.first_ns = int(ids[0]), int(ts[0])
        at = (-self.count) % MARK_EVERY
        for i in range(at, n, MARK_EVERY):
            self._pending.append((int(ids[i]), int(ts[i]), int(offsets[i])))
        self.count += n
        self.last_id, self.last_ns = int(ids[-1]), int(ts[-1])

    def mark_rows(self) -> npt.NDArray[np.void]:
        if self._pending:
            extra = np.array(self._pending, dtype=MARK_DTYPE)
            self.marks = np.concatenate((self.marks, extra))
            self._pending = []
        return self.marks

    def covers_time(self, from_ns: int, to_ns: int) -> bool:
        return self.count > 0 and self.first_ns <= to_ns and self.last_ns >= from_ns

    def span_of_id(self, packet_id: int) -> tuple[int, int]:
        """The file bytes `[start, end)` in which packet `packet_id` lies, if it is here."""
        marks = self.mark_rows()
        at = int(np.searchsorted(marks["id"], packet_id, side="right")) - 1
        start = int(marks["offset"][max(at, 0)])
        end = int(marks["offset"][at + 1]) if at + 1 < len(marks) else self.size
        return start, end

    def start_of_time(self, from_ns: int) -> int:
        """The offset of the last mark before `from_ns` (where a range read begins)."""
        marks = self.mark_rows()
        at = int(np.searchsorted(marks["ts_ns"], from_ns, side="left")) - 1
        return int(marks["offset"][max(at, 0)]) if len(marks) else self.size

    def end_of_time(self, to_ns: int) -> int:
        """The offset of the first mark after `to_ns` (where a range read may stop)."""
        marks = self.mark_rows()
        at = int(np.searchsorted(marks["ts_ns"], to_ns, side="right"))
        return int(marks["offset"][at]) if at < len(marks) else self.size

    # -- on disk ------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        marks = self.mark_rows()
        head = _HEADER.pack(
            MAGIC, VERSION, self.shard, self.linktype, self.snaplen, self.size, self.count,
            self.first_id, self.last_id, self.first_ns, self.last_ns, len(marks),
        )  # fmt: skip
        return head + marks.tobytes()

    def save(self, mode: int = 0o640) -> None:
        """Write the index beside its file, atomically (a temporary file renamed over it)."""
        target = index_path(self.path)
        tmp = target.with_name(f".{target.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, self.to_bytes())
        finally:
            os.close(fd)
        os.replace(tmp, target)

    @functools.cached_property
    def run(self) -> int:
        named = parse_name(self.path)
        return named[0] if named is not None else 0

    @classmethod
    def load(cls, path: Path) -> FileIndex | None:
        """The saved index of store file `path`; None when missing or unreadable."""
        try:
            raw = index_path(path).read_bytes()
        except OSError:
            return None
        if len(raw) < _HEADER.size:
            return None
        (magic, version, shard, linktype, snaplen, size, count, first_id, last_id, first_ns,
         last_ns, n) = _HEADER.unpack_from(raw, 0)  # fmt: skip
        if magic != MAGIC or version != VERSION or len(raw) != _HEADER.size + n * 24:
            return None
        marks = np.frombuffer(raw, dtype=MARK_DTYPE, count=n, offset=_HEADER.size).copy()
        return cls(path, shard, linktype, snaplen, size, count, first_id, last_id, first_ns,
                   last_ns, marks)  # fmt: skip

    def extend(self) -> int:
        """Read the file past `size` and add the whole blocks found there; return the bytes
        left after the last whole block (a cut block, or one being written)."""
        with open(self.path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            f.seek(self.size)
            carry = b""
            while True:
                chunk = f.read(SCAN_CHUNK)
                if not chunk:
                    break
                buf = carry + chunk
                blocks, end = pcapng.scan(buf, self.size)
                self.add((b.id for b in blocks), (b.ts_ns for b in blocks),
                         (b.offset for b in blocks))  # fmt: skip
                carry = buf[end - self.size :]
                self.size = end
                if len(carry) > 2 * SCAN_CHUNK + 2 * 262144:  # garbage, not a block
                    break
        return file_size - self.size


def rebuild(path: Path, shard: int) -> FileIndex | None:
    """The index of `path` made from the file alone; None if it is not a store file."""
    with open(path, "rb") as f:
        link = pcapng.header_link(f.read(pcapng.HEADER_BYTES))
    if link is None:
        return None
    index = FileIndex(path, shard, *link)
    index.extend()
    return index


@dataclass(frozen=True)
class Recovered:
    """What opening a file found: its index, and what a crash had cut (bytes past the last
    whole block, removed from the file)."""

    index: FileIndex
    cut_bytes: int
    rebuilt: bool


def recover(path: Path, shard: int, *, truncate: bool) -> Recovered | None:
    """The index of `path`: the saved one brought up to date, or rebuilt; with `truncate`
    (the store writer, on start), a cut last block is removed from the file and the fresh
    index saved."""
    index = FileIndex.load(path)
    rebuilt = index is None or index.shard != shard or index.size < pcapng.HEADER_BYTES
    if not rebuilt and index is not None:
        with contextlib.suppress(OSError):
            if index.size > path.stat().st_size:  # the file lost bytes the index had
                rebuilt = True
    if rebuilt:
        index = rebuild(path, shard)
        if index is None:
            return None
    assert index is not None
    before = index.size
    cut = index.extend()
    if truncate and (cut or rebuilt or index.size != before):
        if cut:
            os.truncate(path, index.size)
        index.save()
    return Recovered(index, cut, rebuilt)
