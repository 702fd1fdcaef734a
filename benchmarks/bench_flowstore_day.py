"""One host over a day of stored flows, each hour stored as compaction leaves it.

The issue's target: a query for one host over 24 h of flows at 5 k/s (432 M flows) answers in
under 1 s. Writing 2 880 part files and merging 24 hours (`compact.compact_hour`) would cost
about an hour of CPU, so each hour is written directly as the merge leaves it (`write_merged`:
`bench_flowstore.synthetic`'s flows, sorted as `compact_hour` sorts them, written by its
writer `compact._write_stream` in batches of `compact.MERGED_ROW_GROUP_ROWS`, twin first, the same
`merged-<low>-<high>` names). The same run first proves, on one small hour, that this gives
what the real path gives (parts written as the writer writes them, `compact_hour`, parts
deleted): the same file names, schema, row groups, statistics, sort order, rows, and the same
answers to every query below (`prove_direct`, asserted).

Then `--hours` hours at `--rate` flows/s are written under `--dir` (`write_day`: one hour made
by the generator, written for every hour with its times shifted and its uids suffixed; making
24 distinct hours would take hours here), stopping early when the disk would keep less than
`--min-free-gb` free, and timed over the last 1 h, 6 h and 24 h (those
written), through `FlowHistory` with DuckDB on 1 thread, as `GET /api/flows?ip=` and
`GET /api/hosts/{ip}` ask: one host's page of 100 and count newest first and by bytes, the
count alone, the host's summary (its flows part: top peers; no hosts minute files are written)
and, as a reference in the same run, a full scan (`sum(bytes)` over the range's files). Cold
(the page cache dropped before each query: root only) and warm (best of `--repeat`).

    nice -n 19 .venv/bin/python benchmarks/bench_flowstore_day.py --dir /work/q24-store \
        [--hours 24] [--rate 5000] [--keep] [--reuse] [--explain]

Measured (docs/flows.md, "Over 24 hours"): 24 h at 5 k/s, merged row groups of 262 144 rows,
load average 1-6 on 2 shared cores: one host (925 k flows) newest first 0.77-0.83 s warm,
1.14-1.21 s cold; by bytes 1.5 s warm. With the writer's 8 192 rows per group each merged hour
cost 0.1-0.4 s to open (a 6 MB footer).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_flowstore import INSIDE, NS, OUTSIDE, Pool, address_pool, synthetic
from leireye.flows.columns import FLOW_STATISTICS, SORT_ORDER
from leireye.flows.compact import (
    MERGED_ROW_GROUP_ROWS,
    _write_stream,
    compact_hour,
    delete_merged_parts,
)
from leireye.flows.history import FLOW_SORTS, MINUTE_NS, FlowHistory, _matching
from leireye.flows.layout import BY_RESP, HOUR_NS, hour_files, hour_name, merged_name, part_files
from leireye.flows.query import parse_flow_filter
from leireye.flows.store import sync_dir, write_atomically

HOST = "10.0.0.40"  # a mid-ranked local host, as in bench_flowstore
SPANS_H = (1, 6, 24)


def hour_table(start_ns: int, rate: int, flush_s: int, serial: int, rng: np.random.Generator,
               pools: tuple[Pool, Pool]) -> pa.Table:  # fmt: skip
    """The hour from `start_ns`: the flows of its `3600 / flush_s` parts, as the part path
    makes them (same generator, same order of draws)."""
    span = flush_s * NS
    parts = [synthetic(rate * flush_s, start_ns + k * span, span, serial + k, rng, pools)
             for k in range(3600 // flush_s)]  # fmt: skip
    return pa.concat_tables(parts).combine_chunks()


def write_file(folder: Path, name: str, ordered: pa.Table, group_rows: int) -> None:
    """As `compact_hour` writes a merged file: its writer, batches of `group_rows`, renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary = _write_stream(folder, name, ordered.to_reader(max_chunksize=group_rows), group_rows)
    os.rename(temporary, folder / name)
    sync_dir(folder)


def write_merged(
    store: Path, hour: str, table: pa.Table, group_rows: int = MERGED_ROW_GROUP_ROWS
) -> str:
    """`table` as `compact_hour` leaves an hour: the twin sorted by responder, then the flows
    file sorted by originator. The file name."""
    low, high = int(pc.min(table["first_ns"]).as_py()), int(pc.max(table["last_ns"]).as_py())
    name = merged_name(low, high)
    for directory in (BY_RESP, "flows"):
        ordered = table.sort_by(SORT_ORDER[directory]).combine_chunks()
        write_file(store / directory / hour, name, ordered, group_rows)
    return name


def _layout(path: Path) -> dict[str, Any]:
    """What of a Parquet file must agree: schema, row groups, codecs, statistics."""
    meta = pq.ParquetFile(path).metadata
    groups = []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        columns = []
        for c in range(group.num_columns):
            chunk = group.column(c)
            stats = chunk.statistics if chunk.is_stats_set else None
            columns.append((chunk.path_in_schema, chunk.compression,
                            None if stats is None or not stats.has_min_max
                            else (stats.min, stats.max)))  # fmt: skip
        groups.append((group.num_rows, columns))
    schema = meta.schema
    columns = [schema.column(i) for i in range(len(schema))]
    kinds = [(c.path, c.physical_type, str(c.logical_type), c.max_definition_level)
             for c in columns]  # fmt: skip
    return {"schema": schema.to_arrow_schema(), "parquet": kinds, "rows": meta.num_rows,
            "groups": groups}  # fmt: skip


def _sorted_by(table: pa.Table, keys: list[tuple[str, str]]) -> bool:
    columns = [table[k].to_numpy() for k, _ in keys]
    order = np.lexsort(columns[::-1])
    return bool(np.array_equal(order, np.arange(len(order))))


def prove_direct(root: Path, rate: int, flush_s: int, pools: tuple[Pool, Pool]) -> str:
    """One hour at `rate` both ways: asserts that the files and the answers are the same."""
    start = (time.time_ns() // HOUR_NS - 48) * HOUR_NS
    hour, span = hour_name(start), flush_s * NS
    real, direct = root / "proof-real", root / "proof-direct"
    rng = np.random.default_rng(7)
    for k in range(3600 // flush_s):  # as bench_flowstore writes parts (the writer's layout)
        part = synthetic(rate * flush_s, start + k * span, span, k, rng, pools)
        low, high = pc.min(part["first_ns"]).as_py(), pc.max(part["last_ns"]).as_py()
        for directory in (BY_RESP, "flows"):
            folder = real / directory / hour
            folder.mkdir(parents=True, exist_ok=True)
            write_atomically(folder, f"part-{low}-{high}-1-{k}.parquet",
                             part.sort_by(SORT_ORDER[directory]), FLOW_STATISTICS)  # fmt: skip
    started = time.perf_counter()
    rows = compact_hour(real, hour, threading.Lock())
    took = time.perf_counter() - started
    delete_merged_parts(real, {}, time.time(), keep_s=0)
    write_merged(direct, hour, hour_table(start, rate, flush_s, 0, np.random.default_rng(7), pools))
    for directory in ("flows", BY_RESP):
        files = [hour_files(store / directory / hour) for store in (real, direct)]
        assert [[f.path.name for f in found] for found in files] == [[files[1][0].path.name]] * 2
        a, b = (found[0].path for found in files)
        assert _layout(a) == _layout(b), directory
        tables = pq.read_table(a), pq.read_table(b)
        assert all(_sorted_by(t, SORT_ORDER[directory]) for t in tables)
        keys = [k for k, _ in SORT_ORDER[directory]]
        assert tables[0].select(keys).equals(tables[1].select(keys))
        assert tables[0].sort_by("uid").equals(tables[1].sort_by("uid"))
    histories = FlowHistory(real, timeout_s=600), FlowHistory(direct, timeout_s=600)
    answers = [[*queries(h, HOST, start - HOUR_NS, start + 2 * HOUR_NS),
                *queries(h, HOST, start + 20 * MINUTE_NS, start + 40 * MINUTE_NS),
                h.flows(sort="bytes", limit=100, offset=100)] for h in histories]  # fmt: skip
    assert answers[0] == answers[1]
    return (
        f"proof on one hour at {rate} flows/s ({rows:,} flows, {3600 // flush_s} parts):"
        f" parts -> compact_hour ({took:.1f} s) and the direct writing give the same file names,"
        f" schema, {len(_layout(a)['groups'])} row groups, statistics, sort order and rows, and"
        f" the same answers to {len(answers[0])} queries (asserted)"
    )


def _step(low: int, high: int) -> int:
    """The smallest whole-minute step that keeps [low, high] within 2 000 steps."""
    return MINUTE_NS * max(1, -(-(high - low) // (2000 * MINUTE_NS)))


def count(history: FlowHistory, host: str, low: int, high: int) -> int:
    """One host's flows in [low, high], counted alone through `history`'s own query."""
    parts = history._parts("flows", low, high)
    flt = parse_flow_filter({"ip": host})
    source, params = _matching(parts, low, high, flt, history._twins(parts), history._old(parts))
    found = history._query(f"SELECT count(*) AS n FROM {source}", params, "flows", (low, high))
    return int(found[0]["n"])


def full_scan(history: FlowHistory, low: int, high: int) -> int:
    files = history._files("flows", low, high)
    sql = "SELECT sum(bytes) AS b FROM read_parquet(?)"
    found = history._query(sql, [files], "flows", (low, high))
    return int(found[0]["b"])


def queries(history: FlowHistory, host: str, low: int, high: int) -> list[Any]:
    flt = parse_flow_filter({"ip": host})
    return [
        *(history.flows(low, high, flt, sort=s, limit=100) for s in FLOW_SORTS),
        history.flows(low, high, flt, sort="start", descending=False, limit=50, offset=70),
        count(history, host, low, high),
        history.host(host, low, high, _step(low, high)),
    ]


def drop_caches() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def timed(call: Callable[[], object], repeat: int, cold: bool) -> float:
    """Cold: one run after the page cache is dropped. Warm: best of `repeat` after one run."""
    if cold:
        drop_caches()
        started = time.perf_counter()
        call()
        return time.perf_counter() - started
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def write_day(store: Path, hours: int, rate: int, flush_s: int, min_free_gb: float) -> int:
    """`hours` hours ending at the last full hour: one hour made by the generator and sorted
    both ways once, then written for every hour with its times shifted by whole hours and
    `-<hour>` appended to its uids (a file per hour and copy, two writers at a time). How
    many hours were written (fewer when the disk would keep less than `min_free_gb`)."""
    pools = (address_pool(INSIDE, "10.0.0.1"), address_pool(OUTSIDE, "100.64.0.1"))
    begin = (time.time_ns() // HOUR_NS - hours) * HOUR_NS
    started = time.perf_counter()
    table = hour_table(begin, rate, flush_s, 0, np.random.default_rng(1), pools)
    made = time.perf_counter() - started
    low, high = int(pc.min(table["first_ns"]).as_py()), int(pc.max(table["last_ns"]).as_py())
    ordered = {d: table.sort_by(SORT_ORDER[d]).combine_chunks() for d in (BY_RESP, "flows")}
    del table
    print(f"one hour: {ordered['flows'].num_rows:,} flows made in {made:.0f} s, sorted both"
          f" ways in {time.perf_counter() - started - made:.0f} s", flush=True)  # fmt: skip

    def write_hour(h: int) -> bool:
        free = shutil.disk_usage(store.parent).free / 1e9
        if free < min_free_gb:
            return False
        t0, shift = time.perf_counter(), h * HOUR_NS
        for directory in (BY_RESP, "flows"):
            copy = ordered[directory]
            for column in ("first_ns", "last_ns"):
                copy = copy.set_column(
                    copy.schema.get_field_index(column), column, pc.add(copy[column], shift)
                )
            uids = pc.binary_join_element_wise(copy["uid"], f"-{h}", "")
            copy = copy.set_column(copy.schema.get_field_index("uid"), "uid", uids)
            folder = store / directory / hour_name(begin + shift)
            write_file(folder, merged_name(low + shift, high + shift), copy, MERGED_ROW_GROUP_ROWS)
        print(f"hour {h + 1}/{hours} written (both copies) in {time.perf_counter() - t0:.0f} s;"
              f" {free:.0f} GB free before", flush=True)  # fmt: skip
        return True

    with ThreadPoolExecutor(2) as pool:
        done = sum(pool.map(write_hour, range(hours)))
    if done < hours:
        print(f"stopped at {done} hours: less than {min_free_gb:g} GB would stay free")
    return done


def explain(history: FlowHistory, host: str, low: int, high: int) -> None:
    """Where the first step's time goes: its plan with timings, and the footers' cost."""
    parts = history._parts("flows", low, high)
    flt = parse_flow_filter({"ip": host})
    source, params = _matching(parts, low, high, flt, history._twins(parts), history._old(parts))
    sql = (f"SELECT count(*) AS n, max_by(struct_pack(f := filename, r := file_row_number),"
           f" struct_pack(k := first_ns, u := uid), ?) AS places FROM {source}")  # fmt: skip
    plan = history._query(f"EXPLAIN ANALYZE {sql}", [100, *params], "flows", (low, high))
    print(plan[0]["explain_value"])
    files = [str(p.path) for p in parts] + (history._twins(parts) or [])
    sizes = []
    for name in files:
        with open(name, "rb") as f:
            f.seek(-8, os.SEEK_END)
            sizes.append(int.from_bytes(f.read(4), "little"))
    footers = "SELECT count(*) AS n FROM parquet_metadata(?)"
    for state in ("cold", "warm"):
        took = timed(
            lambda: history._query(footers, [files], "flows", (low, high)), 1, state == "cold"
        )
        print(f"footers ({state}): {len(files)} files, {sum(sizes) / 1e6:.1f} MB of footers"
              f" ({max(sizes) / 1e6:.2f} MB the largest), read by parquet_metadata in"
              f" {took * 1000:.0f} ms")  # fmt: skip


def timed_calls(history: FlowHistory, low: int, high: int) -> dict[str, Callable[[], object]]:
    flt = parse_flow_filter({"ip": HOST})
    return {
        "page newest first": lambda: history.flows(low, high, flt, sort="start", limit=100),
        "page by bytes": lambda: history.flows(low, high, flt, sort="bytes", limit=100),
        "count alone": lambda: count(history, HOST, low, high),
        "summary (peers)": lambda: history.host(HOST, low, high, _step(low, high)),
        "full scan sum(bytes)": lambda: full_scan(history, low, high),
    }


def measure(store: Path, hours: int, repeat: int, show_plan: bool) -> None:
    history = FlowHistory(store, timeout_s=600, threads=1)
    ends = [p.high_ns for p in part_files(store, "flows")]
    end = (max(ends) // HOUR_NS + 1) * HOUR_NS
    history._old(history._parts("flows", -(2**63), 2**63 - 1))  # as a running worker has
    dropped = "works" if drop_caches() else "refused (not root): cold = warm"
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())};"
          f" page cache drop {dropped}")  # fmt: skip
    for span in [s for s in SPANS_H if s <= hours]:
        low, high = end - span * HOUR_NS, end
        files = history._files("flows", low, high)
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        calls = timed_calls(history, low, high)
        found = count(history, HOST, low, high)
        times = {(what, cold): timed(call, repeat, cold)
                 for cold in (True, False) for what, call in calls.items()}  # fmt: skip
        print(f"last {span} h: {rows:,} flows in {len(files)} files and twins; {HOST} in"
              f" {found:,} ({found / rows:.2%})")  # fmt: skip
        for what in calls:
            cold, warm = times[(what, True)], times[(what, False)]
            scan_cold, scan_warm = (times[("full scan sum(bytes)", c)] for c in (True, False))
            print(f"  {what:22} cold {cold * 1000:7.0f} ms ({cold / scan_cold:.2f}x scan)"
                  f"  warm {warm * 1000:7.0f} ms ({warm / scan_warm:.2f}x scan)")  # fmt: skip
        if span == 24:
            verdict = {
                (what, cold): "under" if times[(what, cold)] < 1.0 else "over"
                for what in ("page newest first", "page by bytes")
                for cold in (True, False)
            }
            print("  the issue's target (one host over 24 h under 1 s): newest first"
                  f" {verdict[('page newest first', True)]} cold,"
                  f" {verdict[('page newest first', False)]} warm; by bytes"
                  f" {verdict[('page by bytes', True)]} cold,"
                  f" {verdict[('page by bytes', False)]} warm")  # fmt: skip
        if show_plan and span == max(s for s in SPANS_H if s <= hours):
            explain(history, HOST, low, high)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="the store's directory (removed at the end)")
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--rate", type=int, default=5000, help="flows per second")
    parser.add_argument("--flush-s", type=int, default=30)
    parser.add_argument("--proof-rate", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--min-free-gb", type=float, default=20.0)
    parser.add_argument("--keep", action="store_true", help="keep the store at the end")
    parser.add_argument("--reuse", action="store_true", help="measure the store left by --keep")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE, footers' cost")
    args = parser.parse_args()
    root = Path(args.dir)
    store = root / "store"
    try:
        if not args.reuse:
            root.mkdir(exist_ok=False)
            pools = (address_pool(INSIDE, "10.0.0.1"), address_pool(OUTSIDE, "100.64.0.1"))
            print(prove_direct(root / "proof", args.proof_rate, args.flush_s, pools), flush=True)
            shutil.rmtree(root / "proof")
            started = time.perf_counter()
            hours = write_day(store, args.hours, args.rate, args.flush_s, args.min_free_gb)
            size = sum(p.stat().st_size for p in store.rglob("*.parquet"))
            rows = hours * 3600 * args.rate
            print(f"written: {hours} h at {args.rate} flows/s = {rows:,} flows in"
                  f" {time.perf_counter() - started:.0f} s; {size / 1e9:.1f} GB with the twins"
                  f" ({size / max(rows, 1):.1f} bytes per flow)", flush=True)  # fmt: skip
        else:
            hours = len(list(part_files(store, "flows")))
        measure(store, hours, args.repeat, args.explain)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
