"""How long a REST ring scan holds the worker's event loop: on the loop (before) and in the scan
thread (now).

    .venv/bin/python benchmarks/bench_ringscan.py [--capacity 262144] [--repeat 5]

A full ring (`--capacity` records of the realistic mix) and the list query's body
(`packets._list_body`) with a filter that matches nothing, so the scan walks the whole ring. A
ticker on the event loop wakes every 1 ms and records how late it woke; that lateness is what
a WebSocket frame due at that moment waits. Reference: the same scan called on the loop, as
`GET /api/capture/packets` did. Prints the scan's own duration and the ticker's max and p99
lateness for both, and the load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_encode import realistic
from leireye.ring import Ring, RingLayout, RingWriter
from leireye.ring.segments import SegmentNames, close_and_unlink
from leireye.web.api import ringscan
from leireye.web.api.packets import _list_body, query_filter

TICK_S = 0.001


async def lateness_during(how: str, ring: Ring) -> tuple[float, list[float]]:
    late: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            due = time.perf_counter() + TICK_S
            await asyncio.sleep(TICK_S)
            late.append(time.perf_counter() - due)

    flt = query_filter({"protocol": "ICMP"}, ())
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    late.clear()
    t = time.perf_counter()
    if how == "thread":
        await ringscan.run(_list_body, ring, flt, 1000, None, None)
    elif how == "loop":
        _list_body(ring, flt, 1000, None, None)
        await asyncio.sleep(0)
    else:
        await asyncio.sleep(0.05)
    took = time.perf_counter() - t
    await asyncio.sleep(0.005)
    done.set()
    await task
    return took, late


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capacity", type=int, default=262_144)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    names = SegmentNames.for_run(f"benchscan{os.getpid()}")
    ring = Ring.create(names.ring, RingLayout(args.capacity, 64))
    try:
        writer = RingWriter(ring)
        records = realistic(args.capacity)
        records = records[records["proto"] != 2]  # nothing ICMP: the filter matches nothing
        writer.write(records)
        print(f"# bench_ringscan: {len(records)} records, load {os.getloadavg()[0]:.2f}")
        runs = (("no scan (baseline)", "none"), ("on the loop (before)", "loop"),
                ("scan thread (now)", "thread"))  # fmt: skip
        for label, how in runs:
            took, worst, p99 = [], [], []
            for _ in range(args.repeat):
                scan_s, late = asyncio.run(lateness_during(how, ring))
                late.sort()
                took.append(scan_s)
                worst.append(late[-1])
                p99.append(late[int(0.99 * (len(late) - 1))])
            median = sorted(worst)[len(worst) // 2] * 1e3
            print(
                f"  {label:22s} scan {min(took) * 1e3:6.1f} ms   loop late: max {median:6.2f} ms"
                f" (median of runs; best {min(worst) * 1e3:.2f}),"
                f" p99 {sorted(p99)[len(p99) // 2] * 1e3:5.2f} ms"
            )
    finally:
        close_and_unlink(ring)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
