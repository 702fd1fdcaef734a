"""The capture path against the decoder alone, on the same pcap, in the same run.

    .venv/bin/python benchmarks/bench_capture_path.py [--packets 500000] [--repeat 3] [--process]

A realistic mix (`tests/traffic/mix.py`) is written to a pcap once (kept in /tmp between runs,
keyed by its size and seed). Each round measures, in this process, on one core:

- `decoder alone`: `decode_batch` over the frames already in memory, `--batch` at a time (what
  `bench_decode.py` measures) — the reference;
- `read`: the file through `OfflineSource` (`capture.replay.speed: max`), nothing else;
- `read + decode`;
- `whole path`: read, decode and the ring write with raw bytes (`ShardWriter` over a ring of
  capacity 2^18 and `--raw-bytes`), what the capture loop does for each batch.

With `--process` it also runs the real capture process (spawned, as a sensor runs it, privileges
dropped to `--user`) on the pcap at max speed and times it from its first to its last packet,
through its status block (needs root). The best of `--repeat` rounds is shown with the ratio to
the decoder's best in the same run.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the traffic generator lives beside the tests
    sys.path.insert(0, str(ROOT))

import numpy as np

from leireye.capture.handoff import FrameHandoff
from leireye.capture.process import _Loop
from leireye.capture.source import CapturedFrames, OfflineSource
from leireye.config import CaptureConfig, Config, ReplayConfig
from leireye.decode.decode import decode_batch
from leireye.record import RECORD_DTYPE, DecodeError, LinkType
from leireye.ring import Ring, RingLayout
from leireye.ring.shards import ShardWriter
from tests.traffic.mix import Mix, write_pcap


def _pcap(n: int, seed: int) -> tuple[str, Mix | None]:
    path = f"/tmp/leireye-bench-mix-{n}-{seed}.pcap"
    if not os.path.exists(path):
        start = time.perf_counter()
        tmp = f"{path}.{os.getpid()}"
        mix = write_pcap(tmp, n, seed)
        os.replace(tmp, path)
        print(f"{path}: {n} packets written in {time.perf_counter() - start:.1f} s")
        return path, mix
    return path, None


def _frames(path: str, batch: int) -> CapturedFrames:
    source = _source(path, batch)
    parts = []
    while not source.finished:
        parts.append(source.poll(1.0))
    source.close()
    frames = [f for p in parts for f in p.frames]
    ts = [t for p in parts for t in p.ts_ns]
    wire = [w for p in parts for w in p.wire_lens]
    return CapturedFrames(ts, wire, frames, LinkType.EN10MB)


def _source(path: str, batch: int) -> OfflineSource:
    config = CaptureConfig(pcap=path, replay=ReplayConfig(speed="max"), batch_max=batch)
    return OfflineSource(path, config)


def _decoder(mix: CapturedFrames, batch: int) -> Callable[[], int]:
    out = np.empty(batch, dtype=RECORD_DTYPE)

    def run() -> int:
        n = len(mix.frames)
        for lo in range(0, n, batch):
            hi = lo + batch
            decode_batch(mix.frames[lo:hi], mix.ts_ns[lo:hi], mix.wire_lens[lo:hi], 1, out)
        return n

    return run


class _Stage:
    """The capture loop's per-batch work (`_Loop._handle`) with its parts switched off."""

    def __init__(self, path: str, batch: int, raw_bytes: int, decode: bool, write: bool) -> None:
        self.path, self.batch = path, batch
        self.decode, self.write = decode, write
        self.ring = Ring.over(
            bytearray(RingLayout(1 << 18, raw_bytes).size), RingLayout(1 << 18, raw_bytes)
        )

    def __call__(self) -> int:
        source = _source(self.path, self.batch)
        loop = _Loop.__new__(_Loop)  # the real `_handle`, without a status block or watchdog
        loop.watchdog = _NoWatchdog()  # type: ignore[assignment]
        loop.handoff = FrameHandoff(None)  # the packet store's hand-off off (bench_store has it)
        loop.decode = decode_batch if self.decode else _skip_decode
        loop.writer = ShardWriter(self.ring, 0, None, None)
        if not self.write:
            loop.writer.write = lambda *a, **k: None  # type: ignore[method-assign]
        loop.out = np.empty(self.batch, dtype=RECORD_DTYPE)
        loop.packets = loop.bytes = 0
        loop.errors_by_kind = np.zeros(len(DecodeError), dtype=np.int64)
        while not source.finished:
            batch = source.poll(1.0)
            if batch.frames:
                loop._handle(batch)
        source.close()
        return loop.packets


class _NoWatchdog:
    def mark(self, batch: object) -> None:
        pass


def _skip_decode(frames, ts, wire, linktype, out=None):  # type: ignore[no-untyped-def]
    from leireye.decode.batch import DecodedBatch

    return DecodedBatch(out[: len(frames)], np.zeros(len(DecodeError), dtype=np.int64))


def _best(run: Callable[[], int], repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        n = run()
        best = max(best, n / (time.perf_counter() - start))
    return best


def _process(
    path: str, batch: int, raw_bytes: int, user: str, profile: tuple[str, float] | None = None
) -> float:
    """The real capture process replaying `path` at max speed: packets/s from its first
    published status with packets to its FINISHED status. With `profile` (py-spy's path,
    seconds) the replay loops, py-spy records that long, and its top entries are printed."""
    from leireye.capture.process import run_capture
    from leireye.ring.shm import unlink_segment
    from leireye.ring.status import StatusBlock
    from leireye.supervisor import child_main

    base = f"leireye-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    ring_name, status_name = f"{base}-ring", f"{base}-status"
    Ring.create(ring_name, RingLayout(1 << 18, raw_bytes), owner=_owner(user)).close()
    status = StatusBlock.create(status_name)
    capture = CaptureConfig(
        pcap=path,
        replay=ReplayConfig(speed="max", loop=profile is not None),
        batch_max=batch,
        user=user,
    )
    target = functools.partial(run_capture, state_dir=f"/tmp/{base}-state")
    proc = multiprocessing.get_context("spawn").Process(
        target=child_main,
        args=("capture", "WARNING", None, target, Config(capture=capture), ring_name, status_name),
    )
    proc.start()
    try:
        first = (0.0, 0)
        while True:
            s = status.read()
            now = time.perf_counter()
            if s.packets_captured and not first[1]:
                first = (now, s.packets_captured)
                if profile is not None:
                    _py_spy(profile[0], proc.pid or 0, profile[1])
                    proc.terminate()
            if s.state in ("finished", "error", "stopped") or proc.exitcode is not None:
                break
            time.sleep(0.002)
        if profile is not None:
            return 0.0
        if s.state != "finished":
            raise RuntimeError(f"capture ended {s.state}: {s.last_error}")
        return (s.packets_captured - first[1]) / (now - first[0])
    finally:
        proc.join(10)
        status.close()
        status.unlink()
        unlink_segment(ring_name)
        for d in (f"/tmp/{base}-state/stuck", f"/tmp/{base}-state"):
            if os.path.isdir(d):
                os.rmdir(d)


def _py_spy(py_spy: str, pid: int, seconds: float) -> None:
    """Record `pid` for `seconds` and print the functions with the most samples: in the stack
    (total) and on top of it (self)."""
    import collections
    import subprocess

    out = f"/tmp/leireye-bench-{pid}.txt"
    subprocess.run(
        [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
         "--format", "raw", "--output", out, "--nonblocking"],
        check=True, capture_output=True,
    )  # fmt: skip
    total: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    samples = 0
    with open(out) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            frames = [fr.split(" (")[0] + " (" + fr.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                      for fr in stack.split(";") if " (" in fr]  # fmt: skip
            n = int(count)
            samples += n
            for name in set(frames):
                total[name] += n
            if frames:
                own[frames[-1]] += n
    os.unlink(out)
    print(f"py-spy: {samples} samples of the capture process")
    print(f"{'total %':>8}{'self %':>8}  function")
    for name, n in total.most_common(30):
        print(f"{100 * n / samples:>8.1f}{100 * own[name] / samples:>8.1f}  {name}")


def _owner(user: str) -> tuple[int, int] | None:
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packets", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4096, help="capture.batch_max")
    parser.add_argument("--raw-bytes", type=int, default=256, help="ring.raw_bytes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--process", action="store_true", help="also the real capture process")
    parser.add_argument("--user", default="nobody", help="the account --process drops to")
    parser.add_argument("--py-spy", help="profile the capture process with this py-spy binary")
    parser.add_argument("--profile-seconds", type=float, default=10)
    args = parser.parse_args()
    if args.py_spy:
        path, _ = _pcap(args.packets, args.seed)
        profile = (args.py_spy, args.profile_seconds)
        _process(path, args.batch, args.raw_bytes, args.user, profile)
        return 0

    path, _ = _pcap(args.packets, args.seed)
    mix = _frames(path, args.batch)
    runs: list[tuple[str, Callable[[], int]]] = [
        ("decoder alone (reference)", _decoder(mix, args.batch)),
        ("read", _Stage(path, args.batch, args.raw_bytes, decode=False, write=False)),
        ("read + decode", _Stage(path, args.batch, args.raw_bytes, decode=True, write=False)),
        ("whole path", _Stage(path, args.batch, args.raw_bytes, decode=True, write=True)),
    ]
    best = {name: 0.0 for name, _ in runs}
    if args.process:
        best["capture process"] = 0.0
    for _ in range(args.repeat):  # interleaved, so a busy spell hits every path alike
        for name, run in runs:
            best[name] = max(best[name], _best(run, 1))
        if args.process:
            rate = _process(path, args.batch, args.raw_bytes, args.user)
            best["capture process"] = max(best["capture process"], rate)
    reference = best[runs[0][0]]
    print(f"{len(mix.frames)} packets, batch {args.batch}, raw_bytes {args.raw_bytes}, "
          f"best of {args.repeat}")  # fmt: skip
    print(f"{'path':<28}{'packets/s':>12}{'ratio':>8}")
    for name, rate in best.items():
        print(f"{name:<28}{rate:>12,.0f}{rate / reference:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
