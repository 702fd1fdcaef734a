"""Ended flows into the flow store: `Flow` structs against rows handed over as they are.

The flow process ends flows as `rows.FLOW_ROW` arrays. Before, it turned each into a `Flow`
(`rows.to_flows`) and the store turned those into Arrow columns (`columns.flows_table`): one
Python object and one attribute read per field per flow. Now it hands the rows to
`FlowStoreWriter.add_rows`, which builds the columns with numpy and pyarrow
(`columns.flows_table_from_rows`). Both paths write the same files (a property test keeps the
tables equal); this times them in turns, in one process, on the same rows:

- the rows: the realistic mix (tests/traffic) through a real `FlowTable`, ended, then copied
  with fresh uids and shifted addresses up to `--flows`;
- each path: the flow process's calls (a chunk per `_emit`, `--chunk` flows) and one flush of
  every file (flows and the twin, sorted, written) into a temporary store.

    .venv/bin/python benchmarks/bench_flow_sink.py [--flows 200000] [--chunk 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leireye.config import FlowsConfig
from leireye.decode.decode import decode_batch
from leireye.flows.rows import to_flows
from leireye.flows.store import FlowStoreWriter
from leireye.flows.table import FlowTable
from leireye.record import LinkType
from tests.flowcheck import raw_rows
from tests.traffic.mix import generate


def ended_rows(count: int) -> np.ndarray:
    mix = generate(50_000, seed=11)
    records = decode_batch(mix.frames, mix.ts_ns, mix.wire_lens, LinkType.EN10MB).records
    table = FlowTable(FlowsConfig(), uid_prefix=1)
    table.ingest(records, raw_rows(mix.frames))
    table.end_all()
    base = table.take_ended()
    copies = [base]
    while sum(len(c) for c in copies) < count:
        copy = base.copy()
        k = len(copies)
        copy["uid"] += np.uint64(k << 32)
        copy["orig_lo"] += np.uint64(k)  # other hosts, as on a busy network
        copies.append(copy)
    return np.concatenate(copies)[:count]


def run(directory: Path, rows: np.ndarray, chunk: int, direct: bool) -> None:
    writer = FlowStoreWriter(directory, flows_days=7, max_gb=100, flush_s=3600)
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        if direct:
            writer.add_rows(part)
        else:
            writer.add_flows(to_flows(part))
    writer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=500, help="flows per _emit")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = ended_rows(args.flows)
    print(f"{len(rows)} ended flows ({rows.dtype.itemsize} B rows), chunks of {args.chunk}; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    paths: dict[str, Callable[[Path], None]] = {
        "Flow structs": lambda d: run(d, rows, args.chunk, direct=False),
        "rows": lambda d: run(d, rows, args.chunk, direct=True),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.repeat):
        for name, call in paths.items():
            with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
                started = time.perf_counter()
                call(Path(tmp))
                times[name].append(time.perf_counter() - started)
    best = {name: min(t) for name, t in times.items()}
    for name, seconds in best.items():
        print(f"  {name:<22} {len(rows) / seconds:>10,.0f} flows/s  (best of {args.repeat}: "
              f"{seconds:.2f} s)")  # fmt: skip
    before, now = best["Flow structs"], best["rows"]
    print(f"  now / before: {now / before:.2f} of the time ({before / now:.1f}x the rate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
