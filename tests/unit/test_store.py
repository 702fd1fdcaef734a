"""The packet store without a sensor: pcapng blocks, the index (saved, rebuilt, recovered after a
cut), retention, and `PacketStore` reading what `StoreFiles` wrote."""

from __future__ import annotations

import os
import random
from pathlib import Path

import dpkt
import numpy as np
import pytest

from leireye.ring.frames import FrameAppender, FrameBatch, FrameReader, FrameSegment, segment_size
from leireye.store import pcapng
from leireye.store.index import MARK_EVERY, FileIndex, index_path, parse_name, rebuild, recover
from leireye.store.reader import PacketStore
from leireye.store.writer import StoreFiles

T0 = 1_700_000_000_000_000_000
LINKTYPE_ETHERNET = 1


class Capture:
    """Frames with ids and times through a real frame segment, as the store writer gets them."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        size = 8 << 20
        self.segment = FrameSegment.over(bytearray(segment_size(size)), size)
        self.appender = FrameAppender(self.segment, LINKTYPE_ETHERNET, 9100)
        self.reader = FrameReader(self.segment, 1)
        self.next_id = 1
        self.sent: dict[int, tuple[int, bytes]] = {}

    def batch(self, n: int, step_ns: int = 1000) -> FrameBatch:
        frames = [self.rng.randbytes(self.rng.randint(14, 3000)) for _ in range(n)]
        ids = range(self.next_id, self.next_id + n)
        ts = [T0 + i * step_ns for i in ids]
        self.appender.append(self.next_id, ts, [len(f) + 4 for f in frames], frames)
        for i, t, f in zip(ids, ts, frames, strict=True):
            self.sent[i] = (t, f)
        self.next_id += n
        return self.reader.read()


def files(directory: Path, **kw: float) -> StoreFiles:
    args = {"file_bytes": 256 << 10, "file_s": 3600.0, "max_bytes": 1 << 40, "max_age_s": 1e9}
    run = int(kw.pop("run", 7))
    args.update(kw)
    return StoreFiles(directory, run=run, **args)  # type: ignore[arg-type]


def write(store: StoreFiles, capture: Capture, batches: int, size: int = 100) -> None:
    for _ in range(batches):
        store.write(0, capture.batch(size), LINKTYPE_ETHERNET, 9100)
    store.flush()


def test_blocks_read_back_with_another_reader_and_scan_stops_at_a_cut_block(
    tmp_path: Path,
) -> None:
    capture = Capture()
    batch = capture.batch(50)
    e = batch.entries
    blob, offsets = pcapng.packet_blocks(
        e["id"], e["ts_ns"], e["wire_len"], e["cap_len"], batch.data, e["offset"]
    )
    path = tmp_path / "x.pcapng"
    path.write_bytes(pcapng.file_header(LINKTYPE_ETHERNET, 9100) + blob)
    with open(path, "rb") as f:
        theirs = [(ts, bytes(buf)) for ts, buf in dpkt.pcapng.Reader(f)]
    assert [buf for _, buf in theirs] == [capture.sent[i][1] for i in range(1, 51)]
    for (ts, _), i in zip(theirs, range(1, 51), strict=True):
        assert abs(ts * 10**9 - capture.sent[i][0]) < 1000  # dpkt makes a float of it
    blocks, end = pcapng.scan(blob)
    assert [b.id for b in blocks] == list(range(1, 51))
    assert [b.offset for b in blocks] == offsets.tolist() and end == len(blob)
    assert blocks[3].wire_len == len(blocks[3].data) + 4
    cut, cut_end = pcapng.scan(blob[:-5])
    assert len(cut) == 49 and cut_end == offsets[-1]


def test_index_saved_loaded_and_rebuilt_alike(tmp_path: Path) -> None:
    store = files(tmp_path, file_bytes=1 << 30)
    write(store, Capture(), 10)
    (index,) = store.all_indexes()
    loaded = FileIndex.load(index.path)
    rebuilt = rebuild(index.path, 0)
    assert loaded is not None and rebuilt is not None
    for other in (loaded, rebuilt):
        assert (other.count, other.size, other.first_id, other.last_id) == (1000, index.size, 1,
                                                                            1000)  # fmt: skip
        assert other.first_ns == T0 + 1000 and other.last_ns == T0 + 1_000_000
        assert other.mark_rows().tobytes() == index.mark_rows().tobytes()
    assert len(index.marks) == -(-1000 // MARK_EVERY)
    assert oct(index_path(index.path).stat().st_mode & 0o777) == "0o640"
    assert parse_name(index.path) == (7, 0, 1)


def test_a_cut_last_file_is_recovered_to_its_last_whole_packet(tmp_path: Path) -> None:
    capture = Capture()
    store = files(tmp_path, file_bytes=1 << 30)
    write(store, capture, 3)  # indexed up to 300 packets
    store.write(0, capture.batch(100), LINKTYPE_ETHERNET, 9100)  # 100 more, index not saved
    (index,) = store.all_indexes()
    path = index.path
    os.close(store.current[0].fd)  # a crash: no close, no last flush
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 7)  # the last block cut
    found = recover(path, 0, truncate=True)
    assert found is not None and found.cut_bytes > 0 and not found.rebuilt
    assert found.index.count == 399 and found.index.last_id == 399
    assert path.stat().st_size == found.index.size
    assert FileIndex.load(path) is not None and FileIndex.load(path).count == 399  # type: ignore[union-attr]
    index_path(path).unlink()  # a lost index is rebuilt from the file alone
    again = files(tmp_path).open_existing()
    assert again.last_ids == {0: 399} and again.rebuilt == 1 and again.cut_bytes == 0
    reader = PacketStore(tmp_path)
    assert reader.frame(399) is not None and reader.frame(400) is None
    assert reader.frame(399).data == capture.sent[399][1]  # type: ignore[union-attr]


def test_reads_by_id_set_and_time_range(tmp_path: Path) -> None:
    capture = Capture()
    store = files(tmp_path)
    write(store, capture, 60, 50)  # ~3000 packets, several 256 KiB files
    reader = PacketStore(tmp_path)
    info = reader.info()
    assert info.files > 3 and info.packets == 3000
    assert (info.oldest_id, info.newest_id) == (1, 3000)
    rng = random.Random(5)
    for packet_id in rng.sample(range(1, 3001), 100):
        got = reader.frame(packet_id)
        assert got is not None and (got.ts_ns, got.data) == capture.sent[packet_id]
        assert got.linktype == LINKTYPE_ETHERNET
    assert reader.frame(0) is None and reader.frame(3001) is None
    wanted = [*rng.sample(range(1, 3001), 300), 5000]
    assert [f.id for f in reader.frames(wanted)] == sorted(set(wanted) - {5000})
    lo, hi = T0 + 1234 * 1000, T0 + 2345 * 1000
    ranged = reader.between(lo, hi)
    assert next(ranged).id == 1234  # streamed: the first packet comes before the rest is read
    assert [f.id for f in ranged] == list(range(1235, 2346))
    assert list(reader.between(0, T0)) == []
    assert reader.oldest() == T0 + 1000


def test_one_read_finds_a_packet(tmp_path: Path) -> None:
    store = files(tmp_path, file_bytes=1 << 30)
    write(store, Capture(), 40)
    (index,) = store.all_indexes()
    start, end = index.span_of_id(2345)
    blocks, _ = pcapng.scan(Path(index.path).read_bytes()[start:end], start)
    assert len(blocks) <= MARK_EVERY and 2345 in [b.id for b in blocks]


def test_shards_merge_by_time_and_ids_belong_to_the_newest_run(tmp_path: Path) -> None:
    old = files(tmp_path, run=1)
    write(old, Capture(seed=9), 2)  # ids 1..200 of an earlier run, earlier times
    old.close()
    capture = Capture()
    store = files(tmp_path, run=2)
    batch = capture.batch(100, step_ns=10_000_000)
    half = FrameBatch(batch.entries[::2].copy(), batch.data, 0)
    other = FrameBatch(batch.entries[1::2].copy(), batch.data, 0)
    store.write(0, half, LINKTYPE_ETHERNET, 9100)
    store.write(1, other, LINKTYPE_ETHERNET, 9100)
    store.flush()
    reader = PacketStore(tmp_path)
    assert reader.frame(7) is not None and reader.frame(7).data == capture.sent[7][1]  # type: ignore[union-attr]
    merged = [f.id for f in reader.between(T0 + 10_000_000, T0 + 100 * 10_000_000)]
    assert merged == list(range(1, 101))
    assert len(list(reader.between(0, 2**63 - 1))) == 300  # both runs by time


def test_retention_deletes_the_oldest_files_first_and_never_the_open_one(tmp_path: Path) -> None:
    now = [T0]
    store = files(tmp_path, max_bytes=1 << 20, clock=lambda: now[0])  # type: ignore[arg-type]
    capture = Capture()
    write(store, capture, 100, 50)  # ~7.5 MB through 256 KiB files
    held = sorted(tmp_path.glob("*.pcapng"))
    total = sum(p.stat().st_size for p in held)
    assert total <= (1 << 20) + (256 << 10) + 200_000
    assert parse_name(held[0])[2] > 1  # type: ignore[index]  # the first ones went
    reader = PacketStore(tmp_path)
    assert reader.frame(1) is None and reader.frame(capture.next_id - 1) is not None
    assert reader.oldest() == reader.info().oldest_ns > T0 + 1000
    now[0] = T0 + 2 * 10**18  # everything closed is now too old
    store.flush()
    assert [p.name for p in tmp_path.glob("*.pcapng")] == [store.current[0].index.path.name]


def test_frames_larger_than_the_segment_are_dropped_and_counted() -> None:
    segment = FrameSegment.over(bytearray(segment_size(1 << 20)), 1 << 20)
    appender = FrameAppender(segment, 1, 65535)
    appender.append(1, [0] * 20, [0] * 20, [bytes(65535)] * 20)  # 1.25 MiB into 1 MiB
    assert segment.dropped == 4
    batch = FrameReader(segment, 1).read()
    assert batch.entries["id"].tolist() == list(range(1, 17))
    assert np.all(batch.entries["cap_len"] == 65535)


@pytest.mark.parametrize("name", ["s0-1.pcapng", "r1-s0-1.pcap", "r1-sx-1.pcapng", "x.pcapng"])
def test_other_files_are_not_store_files(name: str) -> None:
    assert parse_name(Path(name)) is None


@pytest.mark.parametrize("seed", range(60))
def test_find_agrees_with_a_full_scan_whatever_the_gaps(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 80)
    ids = np.cumsum([rng.choice([1, 1, 1, 2, 5]) for _ in range(n)]).astype(np.uint64)
    frames = [rng.randbytes(rng.randint(0, 70)) for _ in range(n)]
    cap = np.array([len(f) for f in frames], dtype=np.uint32)
    starts = np.concatenate(([0], np.cumsum(cap)[:-1])).astype(np.uint64)
    blob, _ = pcapng.packet_blocks(
        ids, np.arange(n, dtype=np.int64), cap, cap, b"".join(frames), starts
    )
    everything, _ = pcapng.scan(blob, 100)
    wanted = sorted(set(rng.sample(range(1, int(ids[-1]) + 3), min(10, int(ids[-1])))))
    if seed % 2:
        wanted = sorted({*wanted, int(ids[-1])})  # the last block, past gaps
    assert pcapng.find(blob, wanted, 100) == [b for b in everything if b.id in wanted]
    last = [int(ids[-1])]  # alone: a jump over gaps runs past the end of the buffer
    assert pcapng.find(blob, last, 100) == everything[-1:]
