"""The fast decoder of another commit against this tree's, alternated in one process, records
compared byte for byte.

    .venv/bin/python benchmarks/bench_decode_ab.py --base 8ac2364 [--packets 200000] [--rounds 7]

`leireye/decode` at `--base` is extracted from git into a temporary package and imported beside
the current one; both decode the same realistic mix (`tests/traffic/mix.py`) in batches, one run
each per round, alternating which goes first; the medians and the ratio new/old are printed. The
machine is shared, so only the ratio of runs taken side by side means anything. Before timing,
both decode the mix, every cut of some of its frames and the pcaps in tests/data, and the records
must be equal byte for byte (a difference is an error, exit 1).

`--whole-path` times, the same way, the capture loop's whole per-batch work with each decoder
(`bench_capture_path`'s in-process path: the pcap read through `OfflineSource` at max speed,
decode, ring write with 256 raw bytes) on a `--packets` pcap of the mix.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the traffic generator lives beside the tests
    sys.path.insert(0, str(ROOT))

import numpy as np
import pcap

from leireye.decode.decode import decode_batch
from leireye.record import LinkType
from tests.traffic.mix import generate

Decode = Callable[..., Any]


def _base_decoder(commit: str, into: Path) -> Decode:
    """`decode_batch` of `leireye/decode` at `commit`, imported as the package `base_decode`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "leireye/decode"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "leireye" / "decode").rename(into / "base_decode")
    sys.path.insert(0, str(into))
    module = importlib.import_module("base_decode.decode")
    decode: Decode = module.decode_batch
    return decode


def _records(decode: Decode, frames: Sequence[bytes], linktype: int) -> bytes:
    n = len(frames)
    out = decode(frames, np.arange(n, dtype=np.int64), [len(f) for f in frames], linktype)
    return bytes(out.records.tobytes()) + bytes(out.errors.tobytes())


def _same(old: Decode, new: Decode) -> int:
    """How many frames were compared; raises SystemExit on the first difference."""
    cases: list[tuple[str, Sequence[bytes], int]] = []
    mix = generate(20_000, 7)
    cases.append(("mix", mix.frames, LinkType.EN10MB))
    cuts = [f[:k] for f in mix.frames[:400] for k in range(len(f) + 1)]
    cases.append(("every cut", cuts, LinkType.EN10MB))
    for linktype in (LinkType.LINUX_SLL, LinkType.RAW, LinkType.NULL, LinkType.IPV6):
        cases.append((f"mix as link {int(linktype)}", mix.frames[:3000], linktype))
    for path in sorted((ROOT / "tests" / "data").glob("*.pcap")):
        reader = pcap.pcap(str(path))
        cases.append((path.name, [bytes(buf) for _, buf in reader], reader.datalink()))
        reader.close()
    total = 0
    for label, frames, linktype in cases:
        for lo in range(0, len(frames), 4096):
            batch = frames[lo : lo + 4096]
            if _records(old, batch, linktype) != _records(new, batch, linktype):
                raise SystemExit(f"records differ: {label}, batch at {lo}")
        total += len(frames)
    return total


def _run(decode: Decode, frames: Sequence[bytes], ts: Any, wire: Any, batch: int) -> float:
    start = time.process_time()
    for lo in range(0, len(frames), batch):
        hi = lo + batch
        decode(frames[lo:hi], ts[lo:hi], wire[lo:hi], LinkType.EN10MB)
    return len(frames) / (time.process_time() - start)


def _whole_path(decode: Decode, path: str, batch: int) -> float:
    from benchmarks import bench_capture_path as capture_path

    stage = capture_path._Stage(path, batch, 256, decode=True, write=True)
    capture_path.decode_batch = decode  # what the stage's capture loop calls
    start = time.process_time()
    n = stage()
    return n / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="HEAD", help="the commit to compare against")
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--whole-path", action="store_true", help="read + decode + ring write")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        old = _base_decoder(args.base, Path(tmp))
        compared = _same(old, decode_batch)
        print(f"records identical on {compared} frames (mix, cuts, link types, tests/data)")
        if args.whole_path:
            from benchmarks.bench_capture_path import _pcap

            path = _pcap(args.packets, args.seed)[0]

            def measure(decode: Decode) -> float:
                return _whole_path(decode, path, args.batch)
        else:
            mix = generate(args.packets, args.seed)
            ts, wire = np.asarray(mix.ts_ns), np.asarray(mix.wire_lens)

            def measure(decode: Decode) -> float:
                return _run(decode, mix.frames, ts, wire, args.batch)

        print("whole capture path" if args.whole_path else "decoder alone")
        rates: dict[str, list[float]] = {"old": [], "new": []}
        ratios = []
        for r in range(args.rounds):
            order = [("old", old), ("new", decode_batch)]
            if r % 2:
                order.reverse()
            got = {name: measure(fn) for name, fn in order}
            for name, rate in got.items():
                rates[name].append(rate)
            ratios.append(got["new"] / got["old"])
    old_rate, new_rate = statistics.median(rates["old"]), statistics.median(rates["new"])
    print(f"base {args.base}: median {old_rate:,.0f} packets/s (best {max(rates['old']):,.0f})")
    print(f"this tree:     median {new_rate:,.0f} packets/s (best {max(rates['new']):,.0f})")
    print(
        f"new/old: median of per-round ratios {statistics.median(ratios):.3f} "
        f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
    )


if __name__ == "__main__":
    main()
