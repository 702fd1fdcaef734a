"""The packet store: does it keep up with the capture, what it costs on disk, how fast it reads.

    .venv/bin/python benchmarks/bench_store.py [--packets N] [--store-gb G] [--dir D] [--repeat R]
        [--rounds K]

1. Hand-off (the choice in docs/store.md): per packet, in this process, on the realistic mix
   (`tests/traffic/mix.py`): the decoder (reference), the ring write, appending the whole frames
   to a frame segment (what the capture pays for the store), and, for the alternative of the
   capture writing files itself, building the pcapng blocks and `os.write`-ing them. The block
   building alone and the writer's whole work are timed twice: with the per-frame builder the
   store had before (`tests/pcapng_reference.py`) and with the batch one it has now.
2. Keep-up: the real capture process replays the mix from a pcap as fast as it can (its own
   ceiling: nothing waits, nothing is dropped by a kernel) without the store, then with the real
   store writer process beside it (building blocks per frame as before, then by batch as now):
   the capture's rate, frames the store lost, the writer's largest lag (frames captured, not
   yet read), how long it needed after the capture finished, and its CPU per packet.
3. Disk bytes per packet: the store's files against `tcpdump -r mix.pcap -w` of the same frames.
4. Reads from a large store (`--store-gb`, written with the store's own writer, the mix repeated
   with ids and times moving on): one packet by id, one flow's packets (a set of ids), a time
   range of 10 000 packets, against a full scan of the files (timed on up to 1 GB and scaled:
   said so). Files are dropped from the page cache (`posix_fadvise DONTNEED`, these files
   only) before each cold read.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

from leireye.capture.process import run_capture
from leireye.config import CaptureConfig, Config, ReplayConfig, StoreConfig
from leireye.decode.decode import decode_batch
from leireye.record import RECORD_DTYPE, LinkType
from leireye.ring import Ring, RingLayout, RingWriter
from leireye.ring.frames import (
    FrameAppender,
    FrameBatch,
    FrameReader,
    FrameSegment,
    frames_name,
    segment_size,
)
from leireye.ring.shm import unlink_segment
from leireye.ring.status import StatusBlock
from leireye.ring.storestatus import read_status
from leireye.store import pcapng
from leireye.store.reader import PacketStore
from leireye.store.writer import StoreFiles
from leireye.supervisor import child_main
from tests.pcapng_reference import reference_packet_blocks
from tests.traffic.mix import Mix, generate, write_pcap

BATCH = 1024


def cpu_seconds(pid: int | None, last: float) -> float:
    """User + system CPU time of `pid` so far (`last` once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return last
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_packet_us(run: object, n: int, repeat: int) -> float:
    assert callable(run)
    best = min(_timed(run) for _ in range(repeat))
    return best / n * 1e6


def _timed(run: object) -> float:
    assert callable(run)
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def handoff(mix: Mix, repeat: int, scratch: Path) -> None:
    n = len(mix.frames)
    batches = [(lo, min(n, lo + BATCH)) for lo in range(0, n, BATCH)]
    out = np.empty(BATCH, dtype=RECORD_DTYPE)
    layout = RingLayout(capacity=1 << 18, raw_bytes=256)
    ring = Ring.over(bytearray(layout.size), layout)
    writer = RingWriter(ring)
    records = [decode_batch(mix.frames[a:b], mix.ts_ns[a:b], mix.wire_lens[a:b],
                            LinkType.EN10MB).records.copy() for a, b in batches]  # fmt: skip
    segment = FrameSegment.over(bytearray(segment_size(64 << 20)), 64 << 20)
    appender = FrameAppender(segment, 1, 1600)
    reader = FrameReader(segment, 1)

    def decode() -> None:
        for a, b in batches:
            decode_batch(mix.frames[a:b], mix.ts_ns[a:b], mix.wire_lens[a:b], LinkType.EN10MB,
                         out[: b - a])  # fmt: skip

    def ring_write() -> None:
        for (a, b), recs in zip(batches, records, strict=True):
            writer.write(recs, mix.frames[a:b])

    def append() -> None:
        for a, b in batches:
            appender.append(a + 1, mix.ts_ns[a:b], mix.wire_lens[a:b], mix.frames[a:b])
        reader.next_seq = segment.write_seq + 1

    path = scratch / "inline.pcapng"

    def inline_file(build: Blocks) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for a, b in batches:
                appender.append(a + 1, mix.ts_ns[a:b], mix.wire_lens[a:b], mix.frames[a:b])
                batch = reader.read()
                e = batch.entries
                blob, _ = build(e["id"], e["ts_ns"], e["wire_len"], e["cap_len"], batch.data,
                                e["offset"])  # fmt: skip
                os.write(fd, blob)
        finally:
            os.close(fd)

    held = []
    for a, b in batches:
        appender.append(a + 1, mix.ts_ns[a:b], mix.wire_lens[a:b], mix.frames[a:b])
        held.append(reader.read())
        before, now = (build(*columns(held[-1]))[0] for build in builders.values())
        assert before == now, "the same bytes both ways"

    def blocks_only(build: Blocks) -> None:
        for batch in held:
            build(*columns(batch))

    print("1. per packet, in one process (best of", repeat, "runs)")
    steps = [
        ("decode (reference)", decode),
        ("ring write", ring_write),
        ("frame segment append [chosen]", append),
    ]
    for name, run in steps:
        print(f"   {name:<63} {per_packet_us(run, n, repeat):7.3f} us")
    whole = "append + read + pcapng + write (the writer's work)"
    for name, run in (("pcapng blocks alone", blocks_only), (whole, inline_file)):
        times = {how: per_packet_us(functools.partial(run, build), n, repeat)
                 for how, build in builders.items()}  # fmt: skip
        for how, us in times.items():
            print(f"   {name + ', ' + how:<63} {us:7.3f} us  {1e6 / us:12,.0f} packets/s")
        print(f"   {'':<63} batch / per frame: {times['batch'] / times['per frame']:.2f}")
    path.unlink(missing_ok=True)


Blocks = Callable[..., tuple[bytes, np.ndarray]]
builders: dict[str, Blocks] = {"per frame": reference_packet_blocks, "batch": pcapng.packet_blocks}


def columns(batch: FrameBatch) -> tuple[object, ...]:
    e = batch.entries
    return e["id"], e["ts_ns"], e["wire_len"], e["cap_len"], batch.data, e["offset"]


def run_store_with(blocks: str, *args: object) -> int:
    """The store writer process, building its blocks with `builders[blocks]` (in the child)."""
    from leireye.store.process import run_store

    pcapng.packet_blocks = builders[blocks]  # type: ignore[assignment]
    return run_store(*args)  # type: ignore[arg-type]


def keep_up(mix_path: Path, packets: int, scratch: Path, blocks: str | None) -> float | None:
    """One run; `blocks`: the store writer's block builder (`builders`), None: no store.
    Returns the writer's CPU seconds per packet."""
    with_store = blocks is not None
    base = f"leireye-bstore-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    ring_name, status_name = f"{base}-ring", f"{base}-status"
    store_dir = scratch / f"store-{base}"
    config = Config(
        state_dir=str(scratch),
        capture=CaptureConfig(pcap=str(mix_path), replay=ReplayConfig(speed="max"), user=None),
        store=StoreConfig(enabled=with_store, dir=str(store_dir), max_gb=100),
    )
    Ring.create(ring_name, RingLayout(capacity=1 << 18, raw_bytes=256)).close()
    status = StatusBlock.create(status_name)
    segment = FrameSegment.create(frames_name(ring_name, 0), 64 << 20) if with_store else None
    store_dir.mkdir(exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    procs = []
    target = functools.partial(run_capture, state_dir=str(scratch))
    capture = ctx.Process(target=child_main, args=("capture", "WARNING", None, target, config,
                                                   ring_name, status_name))  # fmt: skip
    writer_cpu = None
    if segment is not None:
        run_store = functools.partial(run_store_with, blocks)
        store = ctx.Process(target=child_main, args=("store", "WARNING", None, run_store, config,
                                                     ring_name, 1, 1))  # fmt: skip
        store.start()
        procs.append(store)
        deadline = time.monotonic() + 30
        while read_status(segment).state != "writing" and time.monotonic() < deadline:
            time.sleep(0.01)
    capture.start()
    procs.append(capture)
    lag = 0
    cpu = {"capture": 0.0, "store": 0.0}
    started = {"capture": 0.0, "store": 0.0}  # CPU spent before the first packet: not counted
    try:
        while status.read().state == "idle" or status.read().state == "starting":
            time.sleep(0.001)
        started["capture"] = cpu_seconds(capture.pid, 0.0)
        if segment is not None:
            started["store"] = cpu_seconds(procs[0].pid, 0.0)
        while status.read().state not in ("finished", "error") and capture.exitcode is None:
            if segment is not None:
                lag = max(lag, segment.write_seq - segment.disk_seq)
            cpu["capture"] = cpu_seconds(capture.pid, cpu["capture"])
            time.sleep(0.005)
        done = status.read()
        seconds = (done.updated_ns - done.started_at_ns) / 1e9
        rate = done.packets_captured / seconds
        how = f"on, blocks {blocks}" if with_store else "off"
        line = (f"   store {how}: capture {done.packets_captured} packets at {rate:,.0f}/s "
                f"(start to end of replay)")  # fmt: skip
        if segment is not None:
            finished = time.monotonic()
            while (s := read_status(segment)).frames_written + s.frames_lost < packets:
                lag = max(lag, segment.write_seq - segment.disk_seq)
                cpu["store"] = cpu_seconds(procs[0].pid, cpu["store"])
                if time.monotonic() - finished > 60:
                    break
                time.sleep(0.005)
            after = time.monotonic() - finished
            s = read_status(segment)
            cpu["store"] = cpu_seconds(procs[0].pid, cpu["store"])
            writer_cpu = (cpu["store"] - started["store"]) / packets
            line += (f"; store wrote {s.frames_written}, lost {s.frames_lost}, largest lag "
                     f"{lag} frames, done {after * 1000:.0f} ms after the capture; CPU per "
                     f"packet: store writer "
                     f"{(cpu['store'] - started['store']) / packets * 1e6:.1f} us")  # fmt: skip
        line += f", capture {(cpu['capture'] - started['capture']) / packets * 1e6:.1f} us"
        print(line)
        return writer_cpu
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(10)
        status.close()
        status.unlink()
        unlink_segment(ring_name)
        if segment is not None:
            segment.close()
            segment.unlink()
        shutil.rmtree(store_dir, ignore_errors=True)


def disk_bytes(mix: Mix, mix_path: Path, scratch: Path) -> None:
    store_dir = scratch / "bytes"
    store_dir.mkdir()
    files = StoreFiles(store_dir, file_bytes=1 << 40, file_s=1e9, max_bytes=1 << 50,
                       max_age_s=1e12, run=1)  # fmt: skip
    write_mix(files, mix, 1, 0)
    files.close()
    ours = sum(p.stat().st_size for p in store_dir.glob("*.pcapng"))
    index = sum(p.stat().st_size for p in store_dir.glob("*.idx"))
    n = len(mix.frames)
    print("3. disk bytes per packet (mean frame", f"{sum(map(len, mix.frames)) / n:.0f} B)")
    print(f"   store pcapng {ours / n:8.1f} B   + index {index / n:5.2f} B")
    if shutil.which("tcpdump"):
        theirs_path = scratch / "tcpdump.pcap"
        subprocess.run(["tcpdump", "-r", str(mix_path), "-w", str(theirs_path)],
                       check=True, capture_output=True)  # fmt: skip
        theirs = theirs_path.stat().st_size
        print(f"   tcpdump -w   {theirs / n:8.1f} B   ratio store/tcpdump "
              f"{(ours + index) / theirs:.3f}")  # fmt: skip
        theirs_path.unlink()
    else:
        print("   tcpdump missing: no comparison")
    shutil.rmtree(store_dir)


def write_mix(files: StoreFiles, mix: Mix, first_id: int, shift_ns: int) -> int:
    n = len(mix.frames)
    segment = FrameSegment.over(bytearray(segment_size(16 << 20)), 16 << 20)
    appender = FrameAppender(segment, 1, 1600)
    reader = FrameReader(segment, 1)
    ts = [t + shift_ns for t in mix.ts_ns]
    for lo in range(0, n, 4096):
        hi = min(n, lo + 4096)
        appender.append(first_id + lo, ts[lo:hi], mix.wire_lens[lo:hi], mix.frames[lo:hi])
        files.write(0, reader.read(), 1, 1600)
    files.flush()
    return first_id + n


def fetch(store: PacketStore, ids: list[int], out: list[int]) -> None:
    out.extend(f.id for f in store.frames(ids))


def count_range(store: PacketStore, t0: int, t1: int, out: list[int]) -> None:
    out.extend(f.id for f in store.between(t0, t1))


def cold(directory: Path) -> None:
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def large_store(mix: Mix, gb: float, scratch: Path) -> None:
    store_dir = scratch / "large"
    store_dir.mkdir()
    files = StoreFiles(store_dir, file_bytes=256 << 20, file_s=1e9, max_bytes=1 << 50,
                       max_age_s=1e12, run=1)  # fmt: skip
    span = mix.ts_ns[-1] - mix.ts_ns[0] + 1000
    next_id, rounds, start = 1, 0, time.perf_counter()
    while files.disk_bytes() < gb * 2**30:
        next_id = write_mix(files, mix, next_id, rounds * span)
        rounds += 1
    files.close()
    took = time.perf_counter() - start
    size = sum(p.stat().st_size for p in store_dir.iterdir())
    total = next_id - 1
    print(f"4. a store of {size / 2**30:.2f} GiB, {total:,} packets in "
          f"{len(list(store_dir.glob('*.pcapng')))} files; written by the store's writer alone "
          f"at {total / took:,.0f} packets/s ({size / took / 2**20:.0f} MiB/s)")  # fmt: skip
    store = PacketStore(store_dir)
    rng = random.Random(3)
    store.indexes()

    def timed_ms(run: object, is_cold: bool) -> float:
        if is_cold:
            cold(store_dir)
        return _timed(run) * 1000

    # The generated mix has no long connections: a flow is a set of ids, 1000 packets spread
    # over a million (a long, quiet connection: ~1000 index spans, one read each).
    singles = [rng.randrange(1, total + 1) for _ in range(30)]
    middle = total // 2
    ids = [middle - 500_000 + k * 1000 + rng.randrange(1000) for k in range(1000)]
    ids = sorted({i for i in ids if 1 <= i <= total})
    first = len(mix.ts_ns) // 10
    t0 = mix.ts_ns[first] + (rounds // 2) * span
    t1 = mix.ts_ns[min(len(mix.ts_ns) - 1, first + 10_000)] + (rounds // 2) * span
    for is_cold in (True, False):  # warm: the same reads again, from the page cache
        label = "cold" if is_cold else "warm"
        one = [timed_ms(functools.partial(store.frame, i), is_cold) for i in singles]
        got: list[int] = []
        flow_ms = timed_ms(functools.partial(fetch, store, ids, got), is_cold)
        assert got == ids, "the flow's packets"
        count: list[int] = []
        range_ms = timed_ms(functools.partial(count_range, store, t0, t1, count), is_cold)
        print(f"   {label}: one packet by id median {statistics.median(one):.2f} ms, max "
              f"{max(one):.2f} ms; one flow ({len(ids)} packets) {flow_ms:.1f} ms; a time "
              f"range ({len(count)} packets) {range_ms:.1f} ms")  # fmt: skip
    scanned = 0
    cold(store_dir)
    start = time.perf_counter()
    for path in sorted(store_dir.glob("*.pcapng")):
        with open(path, "rb") as f:
            carry, at = b"", 0
            while chunk := f.read(4 << 20):
                buf = carry + chunk
                _, end = pcapng.scan(buf, at)
                carry = buf[end - at :]
                at = end
        scanned += path.stat().st_size
        if scanned >= 2**30:
            break
    scan_s = (time.perf_counter() - start) * size / scanned
    how = "measured" if scanned >= size else f"measured on {scanned / 2**30:.2f} GiB, scaled"
    print(f"   full scan of the store (cold, {how}): {scan_s:.1f} s")
    cold(store_dir)
    read, start = 0, time.perf_counter()
    for path in sorted(store_dir.glob("*.pcapng")):
        with open(path, "rb") as f:
            while chunk := f.read(4 << 20):
                read += len(chunk)
        if read >= 2**30:
            break
    read_s = (time.perf_counter() - start) * size / read
    print(f"   reading the files alone, no parsing (cold, same way): {read_s:.1f} s")
    shutil.rmtree(store_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--store-gb", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="keep-up runs of each builder")
    parser.add_argument("--dir", default="/var/tmp", help="where the scratch directory goes")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="leireye-bench-store-", dir=args.dir))
    try:
        mix_path = scratch / "mix.pcap"
        mix = write_pcap(mix_path, args.packets, seed=15)
        handoff(mix, args.repeat, scratch)
        print(f"2. keep-up: the capture replays {args.packets} packets of the mix at full speed")
        keep_up(mix_path, args.packets, scratch, None)
        cpu: dict[str, list[float]] = {how: [] for how in builders}
        for _ in range(args.rounds):  # alternated: the machine's load moves both alike
            for how in builders:
                used = keep_up(mix_path, args.packets, scratch, how)
                if used is not None:
                    cpu[how].append(used)
        if all(cpu.values()):
            before, now = (statistics.median(cpu[how]) for how in builders)
            print(f"   store writer CPU per packet (median of {args.rounds}): per frame "
                  f"{before * 1e6:.2f} us, batch {now * 1e6:.2f} us; batch / per frame: "
                  f"{now / before:.2f}")  # fmt: skip
        disk_bytes(mix, mix_path, scratch)
        if args.store_gb > 0:
            large_store(generate(min(args.packets, 200_000), seed=16), args.store_gb, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
