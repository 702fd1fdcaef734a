"""Reading the packet store: one packet, a set of packets, or a time range, by a few seeks.

`PacketStore(directory)` is what the web tier uses (detail, export, Follow Stream, resume from
the store). It only reads: the files and indexes the store writer keeps (`leireye/store/index.py`
has the layout). Every call looks at the directory again (cheaply: an index is re-read only
when it changed), so files that retention deleted vanish and new ones appear; the file being
written is read up to its last whole block, so a packet is readable as soon as its batch is
on disk.

A packet is found by its id: the files whose id range holds it (one per capture shard at most),
the last index mark at or before it, and one read of at most `MARK_EVERY` blocks. A time range
starts at the last mark before it in each file that overlaps it and streams block by block (one
read of `READ_CHUNK` at a time), merged across shards by time: nothing holds the whole range.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from leireye.store import pcapng
from leireye.store.index import FILE_SUFFIX, FileIndex, index_path, parse_name, rebuild

READ_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredFrame:
    id: int
    ts_ns: int
    wire_len: int
    linktype: int  # LINKTYPE_* (as a pcap file says it)
    data: bytes


@dataclass(frozen=True)
class StoreInfo:
    """What the store holds now: `oldest_ns` is where retention has cut it; `oldest_id` and
    `newest_id` are ids of the newest run (`PacketStore.latest_run`), 0 when it holds none."""

    files: int
    bytes: int
    packets: int
    oldest_ns: int
    newest_ns: int
    oldest_id: int
    newest_id: int


@dataclass
class _Cached:
    stamp: tuple[int, int, int, int]  # file size, file mtime, index size, index mtime
    index: FileIndex


class PacketStore:
    """`refresh_s`: how long a look at the directory is reused (files that appear or are
    deleted are seen at most this late; 0: every call looks again)."""

    def __init__(self, directory: str | Path, refresh_s: float = 0.2) -> None:
        self.directory = Path(directory)
        self.refresh_s = refresh_s
        self._cache: dict[Path, _Cached] = {}
        self._held: list[FileIndex] = []
        self._looked = -1e9

    # -- the files ----------------------------------------------------------------------------

    def indexes(self) -> list[FileIndex]:
        """Every file's index, up to date with the file, ordered by run, shard and first id."""
        now = time.monotonic()
        if now - self._looked < self.refresh_s:
            return self._held
        found: dict[Path, _Cached] = {}
        try:
            paths = list(self.directory.glob(f"r*{FILE_SUFFIX}"))
        except OSError:
            paths = []
        for path in paths:
            known = self._cache.get(path)
            if known is None:
                named = parse_name(path)
                if named is None:
                    continue
                shard = named[1]
            else:
                shard = known.index.shard
            cached = self._refresh(path, shard)
            if cached is not None and cached.index.count:
                found[path] = cached
        self._cache = found
        self._held = sorted(
            (c.index for c in found.values()), key=lambda i: (i.run, i.shard, i.first_id)
        )
        self._looked = now
        return self._held

    def look_again(self) -> None:
        """The next call looks at the directory again, whatever `refresh_s` says: what the
        writer had written before this call is then seen."""
        self._looked = -1e9

    def _refresh(self, path: Path, shard: int) -> _Cached | None:
        try:
            st = path.stat()
            try:
                ist = index_path(path).stat()
                istamp = (ist.st_size, ist.st_mtime_ns)
            except FileNotFoundError:
                istamp = (0, 0)
            stamp = (st.st_size, st.st_mtime_ns, *istamp)
            cached = self._cache.get(path)
            if cached is not None and cached.stamp == stamp:
                return cached
            found: FileIndex | None
            if cached is not None and cached.stamp[2:] == stamp[2:]:
                found = cached.index  # only the file grew: read its new blocks
            else:
                found = FileIndex.load(path) or rebuild(path, shard)
            if found is None:
                return None
            index = found
            if index.size > st.st_size:
                rebuilt = rebuild(path, shard)
                if rebuilt is None:
                    return None
                index = rebuilt
            elif index.size < st.st_size:
                index.extend()
        except OSError:
            return None  # deleted by retention meanwhile
        return _Cached(stamp, index)

    def info(self) -> StoreInfo:
        held = self.indexes()
        if not held:
            return StoreInfo(0, 0, 0, 0, 0, 0, 0)
        return StoreInfo(
            files=len(held),
            bytes=sum(i.size for i in held),
            packets=sum(i.count for i in held),
            oldest_ns=min(i.first_ns for i in held),
            newest_ns=max(i.last_ns for i in held),
            oldest_id=min(i.first_id for i in self.latest_run(held)),
            newest_id=max(i.last_id for i in self.latest_run(held)),
        )

    def oldest(self) -> int | None:
        """The time (Unix ns) of the oldest packet held; None when the store is empty: a range
        that starts before it is partly past retention."""
        info = self.info()
        return info.oldest_ns if info.files else None

    # -- by id --------------------------------------------------------------------------------

    def latest_run(self, held: list[FileIndex] | None = None) -> list[FileIndex]:
        """The files of the newest run: the one whose packet ids the ring and clients see."""
        held = self.indexes() if held is None else held
        newest = max((i.run for i in held), default=0)
        return [i for i in held if i.run == newest]

    def frame(self, packet_id: int) -> StoredFrame | None:
        """The packet with this id in the newest run (ids start over with every run)."""
        for index in self.latest_run():
            if index.first_id <= packet_id <= index.last_id:
                for found in _find(index, [packet_id]):
                    return found
        return None

    def frames(self, ids: Iterable[int]) -> Iterator[StoredFrame]:
        """The packets of `ids` the store holds, in id order (a missing id is skipped),
        streamed: one file's span at a time, shards merged by id."""
        wanted = sorted(set(ids))
        if not wanted:
            return
        by_shard: dict[int, list[FileIndex]] = {}
        for index in self.latest_run():
            by_shard.setdefault(index.shard, []).append(index)
        streams = [_by_ids(files, wanted) for _, files in sorted(by_shard.items())]
        yield from heapq.merge(*streams, key=lambda f: f.id)

    # -- by time ------------------------------------------------------------------------------

    def between(self, from_ns: int, to_ns: int) -> Iterator[StoredFrame]:
        """The packets stamped `from_ns <= ts <= to_ns`, in time order, streamed."""
        by_shard: dict[tuple[int, int], list[FileIndex]] = {}
        for index in self.indexes():
            if index.covers_time(from_ns, to_ns):
                by_shard.setdefault((index.run, index.shard), []).append(index)
        streams = [_range(files, from_ns, to_ns) for _, files in sorted(by_shard.items())]
        if len(streams) == 1:
            yield from streams[0]
        else:
            yield from heapq.merge(*streams, key=lambda f: (f.ts_ns, f.id))


def _bisect(values: list[int], x: int) -> int:
    lo, hi = 0, len(values)
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _by_ids(files: list[FileIndex], wanted: list[int]) -> Iterator[StoredFrame]:
    for index in files:  # one shard's files, in id order
        lo = _bisect(wanted, index.first_id)
        hi = _bisect(wanted, index.last_id + 1)
        if hi > lo:
            yield from _find(index, wanted[lo:hi])


def _find(index: FileIndex, ids: list[int]) -> Iterator[StoredFrame]:
    """The packets of sorted `ids` in one file: one read per index span they fall in."""
    try:
        f = open(index.path, "rb")  # noqa: SIM115 - held across yields
    except OSError:
        return  # deleted by retention meanwhile: those packets are gone
    with f:
        at = 0
        while at < len(ids):
            start, end = index.span_of_id(ids[at])
            upto = at + 1
            while upto < len(ids) and index.span_of_id(ids[upto]) == (start, end):
                upto += 1
            f.seek(start)
            chunk = f.read(end - start)
            for block in pcapng.find(chunk, ids[at:upto], start):
                yield _stored(block, index.linktype)
            at = upto


def _range(files: list[FileIndex], from_ns: int, to_ns: int) -> Iterator[StoredFrame]:
    for index in files:
        start, end = index.start_of_time(from_ns), index.end_of_time(to_ns)
        try:
            f = open(index.path, "rb")  # noqa: SIM115 - held across yields
        except OSError:
            continue
        with f:
            f.seek(start)
            carry = b""
            at = start
            while at < end:
                chunk = f.read(min(READ_CHUNK, end - at))
                if not chunk:
                    break
                buf = carry + chunk
                blocks, stop = pcapng.scan(buf, at - len(carry))
                for block in blocks:
                    if from_ns <= block.ts_ns <= to_ns:
                        yield _stored(block, index.linktype)
                carry = buf[stop - (at - len(carry)) :]
                at += len(chunk)


def _stored(block: pcapng.Block, linktype: int) -> StoredFrame:
    return StoredFrame(block.id, block.ts_ns, block.wire_len, linktype, block.data)
