"""Ring throughput: batched writes (with and without raw frames) and batched reads.

    .venv/bin/python benchmarks/bench_ring.py [--capacity N] [--batch N] [--seconds S]

Prints records/s for each case; the reference is the plain numpy copy of the same bytes, so the
ratio shows what the ring's bookkeeping costs on top of memory bandwidth.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import numpy as np

from leireye.record import RECORD_DTYPE
from leireye.ring import Ring, RingLayout, RingReader, RingWriter


def rate(fn: object, seconds: float) -> float:
    assert callable(fn)
    done = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += fn()
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--capacity", type=int, default=1 << 18)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--raw-bytes", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    name = f"leireye-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    ring = Ring.create(name, RingLayout(capacity=args.capacity, raw_bytes=args.raw_bytes))
    try:
        writer = RingWriter(ring)
        records = np.zeros(args.batch, dtype=RECORD_DTYPE)
        records["cap_len"] = 200
        frames = [os.urandom(200) for _ in range(args.batch)]
        target = np.empty_like(records)

        def copy_only() -> int:
            target[:] = records
            return args.batch

        def write_frames() -> int:
            writer.write(records, frames)
            return args.batch

        def write_records() -> int:
            writer.write(records)
            return args.batch

        print(f"capacity={args.capacity} batch={args.batch} raw_bytes={args.raw_bytes}")
        reference = rate(copy_only, args.seconds)
        print(f"reference numpy copy       {reference / 1e6:8.2f} M records/s")
        for label, fn in (
            ("write records+frames", write_frames),
            ("write records only", write_records),
        ):
            r = rate(fn, args.seconds)
            print(f"{label:26} {r / 1e6:8.2f} M records/s  ({r / reference:.2f}x reference)")

        reader_side = Ring.attach(name)
        for max_records in (args.batch, 16384, 65536):
            reader = RingReader(reader_side, "oldest")

            def read(reader: RingReader = reader, max_records: int = max_records) -> int:
                got = len(reader.read(max_records))
                if got == 0:  # caught up: start over from the oldest record
                    reader.cursor = reader_side.oldest_id
                return got

            r = rate(read, args.seconds)
            label = f"read max={max_records}"
            print(f"{label:26} {r / 1e6:8.2f} M records/s  ({r / reference:.2f}x reference)")
        reader_side.close()
    finally:
        ring.unlink()
        ring.close()


if __name__ == "__main__":
    main()
