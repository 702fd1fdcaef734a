"""Decoder throughput: the fast path against the dpkt reference on the same generated mix.

    .venv/bin/python benchmarks/bench_decode.py [--packets 200000] [--batch 4096] [--repeat 5]

Both run on one core in this process; the best of `--repeat` runs is reported (the machine may be
shared, so the best run is the one least disturbed), with the median beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the traffic generator lives beside the tests
    sys.path.insert(0, str(ROOT))

import dpkt
import dpkt.ethernet

from leireye.decode.decode import decode_batch
from leireye.decode.reference.decoder import decode_reference
from leireye.record import RECORD_DTYPE, LinkType
from tests.traffic.mix import Mix, generate


def _fast(mix: Mix, batch: int) -> Callable[[], None]:
    n = len(mix.frames)

    def run() -> None:
        for lo in range(0, n, batch):
            hi = lo + batch
            decode_batch(mix.frames[lo:hi], mix.ts_ns[lo:hi], mix.wire_lens[lo:hi], LinkType.EN10MB)

    return run


def _reference(mix: Mix) -> Callable[[], None]:
    def run() -> None:
        for frame, ts, wire in zip(mix.frames, mix.ts_ns, mix.wire_lens, strict=True):
            decode_reference(frame, ts, wire, LinkType.EN10MB)

    return run


def _dpkt_tree(mix: Mix) -> Callable[[], None]:
    """For scale: building dpkt's own object tree per frame, with no record and no text."""

    def run() -> None:
        for frame in mix.frames:
            try:
                dpkt.ethernet.Ethernet(frame)
            except (dpkt.Error, IndexError, AttributeError, ValueError):
                continue

    return run


def _rates(run: Callable[[], None], n: int, repeat: int) -> tuple[float, float]:
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        rates.append(n / (time.perf_counter() - start))
    return max(rates), statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4096, help="frames per decode_batch call")
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs of the fast path (the reference: 2)"
    )
    args = parser.parse_args()

    start = time.perf_counter()
    mix = generate(args.packets, args.seed)
    print(
        f"mix: {args.packets} packets generated in {time.perf_counter() - start:.1f} s "
        f"(record {RECORD_DTYPE.itemsize} bytes)"
    )
    fast_best, fast_median = _rates(_fast(mix, args.batch), args.packets, args.repeat)
    ref_best, ref_median = _rates(_reference(mix), args.packets, max(1, min(2, args.repeat)))
    tree_best, tree_median = _rates(_dpkt_tree(mix), args.packets, max(1, min(2, args.repeat)))
    print(f"{'path':<28}{'best pkt/s':>14}{'median pkt/s':>16}")
    print(f"{'fast decode_batch':<28}{fast_best:>14,.0f}{fast_median:>16,.0f}")
    print(f"{'reference (dpkt per packet)':<28}{ref_best:>14,.0f}{ref_median:>16,.0f}")
    print(f"{'  dpkt Ethernet() tree only':<28}{tree_best:>14,.0f}{tree_median:>16,.0f}")
    print(f"ratio fast/reference (best): {fast_best / ref_best:.1f}x  (batch {args.batch})")


if __name__ == "__main__":
    main()
