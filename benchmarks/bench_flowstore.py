"""The flow store: how fast flows are written, how big they are, and how fast one host is found.

1. The writer as the flow process uses it: `FlowStoreWriter.add_flows` with `Flow` structs and
   a flush (`--writer-flows` of them): flows per second, the cost the flow process pays.
2. `--hours` of history at `--rate` flows/s, made vectorised (numpy, pyarrow) and written in the
   store's own layout (`columns.FLOWS_SCHEMA`, sorted as the writer sorts, one file per
   `--flush-s` and its `flows_by_resp` twin, `store.write_atomically`): rows per second and
   bytes per flow on disk (both copies).
3. Queries over all of it through `FlowHistory`: one host (`ip=`: its flows, a page of 100
   and the count, as `GET /api/flows?ip=` asks: newest first, and by bytes), against three
   references measured in the same run: the same page in one step (one query with ORDER BY,
   LIMIT over every column, and a count: what `FlowHistory` did before its two-step read), a
   full scan (`sum(bytes)` over every row) and the one-host count on the address texts, which
   no statistics can prune. Best of `--repeat` on one DuckDB (the page cache warm).
4. With `--old-format`, the same flows also written as the store wrote them before (row groups
   of 32 768, statistics on every column): the time to write both copies each way, and the
   one-host page now (two steps, new files) against before (one step, old files), in turns.

5. With `--compact`, a copy of the store with every hour merged into one file per table
   (`compact.compact_hour`, its parts then deleted): the merge's time, and the one-host page
   on the merged store against the store of parts, in turns, same data, same run.

    .venv/bin/python benchmarks/bench_flowstore.py [--hours 2] [--rate 5000] [--old-format]
        [--compact]

The issue's target is a one-host query over 24 h at 5 k flows/s (432 M flows) under 1 s:
`bench_flowstore_day.py` runs it, on hours written as compaction leaves them.
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from leireye.flows.columns import FLOW_STATISTICS, FLOWS_SCHEMA, SORT_ORDER
from leireye.flows.compact import compact_hour, delete_merged_parts
from leireye.flows.history import FLOW_SORTS, FlowHistory, _matching
from leireye.flows.layout import FLOW_FIELDS, hour_name, part_files
from leireye.flows.model import Flow
from leireye.flows.query import FlowFilter, ip_halves, parse_flow_filter
from leireye.flows.store import FlowStoreWriter, write_atomically

NS = 10**9
INSIDE = 2000  # local hosts (10.x): every flow has one end among them
OUTSIDE = 200_000  # remote hosts


Pool = tuple[pa.Array, pa.Array, pa.Array]  # texts, high halves, low halves


def address_pool(count: int, base: str) -> Pool:
    start = int(ipaddress.ip_address(base))
    texts = [str(ipaddress.ip_address(start + i)) for i in range(count)]
    halves = [ip_halves(t) for t in texts]
    return (pa.array(texts, pa.string()), pa.array([h[0] for h in halves], pa.uint64()),
            pa.array([h[1] for h in halves], pa.uint64()))  # fmt: skip


def synthetic(n: int, start_ns: int, span_ns: int, serial: int, rng: np.random.Generator,
              pools: tuple[Pool, Pool]) -> pa.Table:  # fmt: skip
    """`n` flows ending in [start_ns, start_ns + span_ns): 80 % outbound, Zipf-like hosts."""
    inside = pa.array(np.minimum(rng.zipf(1.2, n), INSIDE) - 1)
    outside = pa.array(rng.integers(0, OUTSIDE, n))
    mask = pa.array(rng.random(n) < 0.8)  # outbound: the local host originates
    ends = [
        (pc.if_else(mask, a.take(inside), b.take(outside)),
         pc.if_else(mask, b.take(outside), a.take(inside)))
        for a, b in zip(pools[0], pools[1], strict=True)
    ]  # fmt: skip
    (orig_text, resp_text), (orig_hi, resp_hi), (orig_lo, resp_lo) = ends
    last = start_ns + np.sort(rng.integers(0, span_ns, n))
    duration = (rng.exponential(2.0, n) * NS).astype(np.int64)
    tcp = rng.random(n) < 0.7
    opk, rpk = rng.integers(1, 40, n), rng.integers(0, 40, n)
    obytes, rbytes = opk * rng.integers(60, 1500, n), rpk * rng.integers(60, 1500, n)
    uids = pc.binary_join_element_wise(
        "C", pa.array(np.arange(n) + serial * 10**7).cast(pa.string()), ""
    )
    apps = pa.array(rng.choice(np.array(["TLS", "DNS", "HTTP", "QUIC", ""], dtype=object), n))
    columns = {
        "uid": uids,
        "vlan": pa.nulls(n, pa.int32()),
        "transport": pa.array(np.where(tcp, "TCP", "UDP")),
        "ip_version": pa.array(np.full(n, 4, np.int8)),
        "orig_ip": orig_text,
        "orig_hi": orig_hi,
        "orig_lo": orig_lo,
        "orig_port": pa.array(rng.integers(1024, 65536, n).astype(np.int32)),
        "resp_ip": resp_text,
        "resp_hi": resp_hi,
        "resp_lo": resp_lo,
        "resp_port": pa.array(np.where(tcp, 443, 53).astype(np.int32)),
        "app": pc.if_else(pc.equal(apps, ""), pa.scalar(None, pa.string()), apps),
        "first_ns": pa.array(last - duration),
        "last_ns": pa.array(last),
        "duration_ns": pa.array(duration),
        "orig_pkts": pa.array(opk),
        "orig_bytes": pa.array(obytes),
        "resp_pkts": pa.array(rpk),
        "resp_bytes": pa.array(rbytes),
        "pkts": pa.array(opk + rpk),
        "bytes": pa.array(obytes + rbytes),
        "conn_state": pa.array(np.where(tcp, "SF", "SF")),
        "history": pa.array(np.where(tcp, "ShADadFf", "Dd")),
        "end_reason": pa.array(np.where(tcp, "fin", "idle")),
    }
    for name in FLOWS_SCHEMA.names:
        if name not in columns:
            columns[name] = pa.nulls(n, pa.string())
    return pa.table([columns[f.name].cast(f.type) for f in FLOWS_SCHEMA], schema=FLOWS_SCHEMA)


def bench_writer(directory: Path, count: int) -> float:
    now = time.time_ns()
    flows = [
        Flow(uid=f"W{i}", vlan=None, transport="TCP", ip_version=4, orig_ip=f"10.0.1.{i % 200}",
             orig_port=40000 + i % 20000, resp_ip="192.0.2.1", resp_port=443, app="TLS",
             first_ns=now - NS, last_ns=now, orig_pkts=10, orig_bytes=1000, resp_pkts=8,
             resp_bytes=9000, conn_state="SF", history="ShADadFf", end_reason="fin",
             tls_sni="example.org")
        for i in range(count)
    ]  # fmt: skip
    writer = FlowStoreWriter(directory, flows_days=7, max_gb=100, flush_s=3600)
    started = time.perf_counter()
    for i in range(0, count, 1000):
        writer.add_flows(flows[i : i + 1000])
    writer.flush()
    elapsed = time.perf_counter() - started
    writer.close()
    return count / elapsed


def best(call: object, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times), result


def alternately(*calls: object, repeat: int) -> list[tuple[float, object]]:
    """Best time and result of each call, run in turns (a load that drifts meets all)."""
    times: list[list[float]] = [[] for _ in calls]
    results: list[object] = [None for _ in calls]
    for _ in range(repeat):
        for i, call in enumerate(calls):
            started = time.perf_counter()
            results[i] = call()  # type: ignore[operator]
            times[i].append(time.perf_counter() - started)
    return [(min(t), r) for t, r in zip(times, results, strict=True)]


def bench_compact(
    store: Path, merged: Path, history: FlowHistory, flt: FlowFilter, host: str, repeat: int
) -> None:
    shutil.copytree(store, merged)
    hours = sorted(p.name for p in (merged / "flows").iterdir())
    started = time.perf_counter()
    rows = sum(compact_hour(merged, hour, threading.Lock()) or 0 for hour in hours)
    took = time.perf_counter() - started
    delete_merged_parts(merged, {}, time.time(), keep_s=0)
    print(
        f"compaction: {len(hours)} hours, {rows:,} flows merged in {took:.1f} s"
        f" ({rows / took:,.0f} flows/s, both copies, DuckDB threads=1, 256 MB);"
        f" {len(list(part_files(merged, 'flows')))} flows files left"
    )
    compacted = FlowHistory(merged, timeout_s=600, threads=1)
    for sort in ("start", "bytes"):
        (parts_s, (page, total)), (merged_s, (merged_page, merged_total)) = alternately(
            lambda s=sort: history.flows(flt=flt, sort=s, limit=100),  # type: ignore[misc]
            lambda s=sort: compacted.flows(flt=flt, sort=s, limit=100),  # type: ignore[misc]
            repeat=repeat,
        )
        assert (page, total) == (merged_page, merged_total)
        print(
            f"one host ({host}, {total:,} flows) by {sort}: merged {merged_s * 1000:.0f} ms,"
            f" parts {parts_s * 1000:.0f} ms (merged / parts = {merged_s / parts_s:.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--rate", type=int, default=5000, help="flows per second")
    parser.add_argument("--flush-s", type=int, default=30)
    parser.add_argument("--writer-flows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--old-format",
        action="store_true",
        help="write the same flows also as before (row groups of 32 768, statistics on every"
        " column) and compare writing and the one-host query",
    )
    parser.add_argument(
        "--compact",
        action="store_true",
        help="merge a copy of the store hour by hour and compare the one-host query",
    )
    parser.add_argument("--dir", help="where to write (default: a temporary directory, removed)")
    args = parser.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-flowstore-"))
    try:
        rate = bench_writer(root / "writer", args.writer_flows)
        print(f"writer (Flow structs -> add_flows -> flush): {rate:,.0f} flows/s")

        store = root / "store"
        rng = np.random.default_rng(1)
        pools = (address_pool(INSIDE, "10.0.0.1"), address_pool(OUTSIDE, "100.64.0.1"))
        span = args.flush_s * NS
        files = int(args.hours * 3600 / args.flush_s)
        per_file = args.rate * args.flush_s
        begin = time.time_ns() - files * span
        elapsed = 0.0
        formats = [(store, FLOW_STATISTICS, None)]  # as the writer writes now
        if args.old_format:  # as it wrote before: row groups of 32 768, statistics on all
            formats.append((root / "store-old", True, 32_768))
        written = [0.0 for _ in formats]
        for serial in range(files):
            table = synthetic(per_file, begin + serial * span, span, serial, rng, pools)
            low = int(pc.min(table["first_ns"]).as_py())
            high = int(pc.max(table["last_ns"]).as_py())
            name = f"part-{low}-{high}-1-{serial}.parquet"
            turns = range(len(formats))
            for i in turns if serial % 2 == 0 else reversed(turns):  # each first in turn
                where, stats, group_rows = formats[i]
                t0 = time.perf_counter()
                for directory in ("flows_by_resp", "flows"):
                    folder = where / directory / hour_name(begin + serial * span)
                    folder.mkdir(parents=True, exist_ok=True)
                    part = table.sort_by(SORT_ORDER[directory])
                    write_atomically(folder, name, part, stats, group_rows)
                written[i] += time.perf_counter() - t0
        elapsed = written[0]
        rows = files * per_file
        size = sum(p.path.stat().st_size for p in part_files(store, "flows"))
        size += sum(p.path.stat().st_size for p in part_files(store, "flows_by_resp"))
        print(
            f"history: {args.hours:g} h at {args.rate} flows/s = {rows:,} flows in {files} files;"
            f" written at {rows / elapsed:,.0f} flows/s (generation excluded);"
            f" {size / rows:.1f} bytes per flow on disk ({size / 1e9:.2f} GB;"
            f" 24 h would be {size / rows * 432e6 / 1e9:.1f} GB)"
        )

        if args.old_format:
            old_size = sum(p.path.stat().st_size for p in part_files(formats[1][0], "flows"))
            old_size += sum(
                p.path.stat().st_size for p in part_files(formats[1][0], "flows_by_resp")
            )
            print(
                f"the old format (row groups of 32 768, statistics on every column): written in"
                f" {written[1]:.1f} s against {written[0]:.1f} s (now / before ="
                f" {written[0] / written[1]:.2f}), {old_size / rows:.1f} bytes per flow"
            )
        host = "10.0.0.40"  # a mid-ranked local host
        history = FlowHistory(store, timeout_s=600, threads=1)
        flt = parse_flow_filter({"ip": host})
        files_all = [str(p.path) for p in part_files(store, "flows")]

        def one_step(sort: str, history: FlowHistory = history) -> object:
            parts = history._parts("flows", -(2**63), 2**63 - 1)
            source, params = _matching(parts, -(2**63), 2**63 - 1, flt, history._twins(parts))
            page = history._query(
                f"SELECT {', '.join(FLOW_FIELDS)} FROM {source}"
                f" ORDER BY {FLOW_SORTS[sort]} DESC, uid DESC LIMIT 100",
                params, "flows", (0, 0),
            )  # fmt: skip
            count = history._query(f"SELECT count(*) AS n FROM {source}", params, "flows", (0, 0))
            return [row["uid"] for row in page], count[0]["n"]

        def full_scan() -> object:
            return history._query(
                "SELECT sum(bytes) AS b, count(*) AS n FROM read_parquet(?)", [files_all], "flows",
                (0, 0),
            )  # fmt: skip

        def by_text() -> object:
            return history._query(
                "SELECT count(*) AS n FROM read_parquet(?) WHERE orig_ip = ? OR resp_ip = ?",
                [files_all, host, host], "flows", (0, 0),
            )  # fmt: skip

        scan, _ = best(full_scan, args.repeat)
        text, counted = best(by_text, args.repeat)
        for sort in ("start", "bytes"):
            (one, (page, total)), (before, (uids, count)) = alternately(
                lambda s=sort: history.flows(flt=flt, sort=s, limit=100),  # type: ignore[misc]
                lambda s=sort: one_step(s),  # type: ignore[misc]
                repeat=args.repeat,
            )
            assert counted[0]["n"] == total == count, (counted, total, count)  # type: ignore[index]
            assert [f.uid for f in page] == uids
            print(
                f"one host ({host}, {total:,} of {rows:,} flows; page of {len(page)} by {sort}"
                f" + count): {one * 1000:.0f} ms; in one step {before * 1000:.0f} ms"
                f" (two steps / one step = {one / before:.2f}); one host / full scan ="
                f" {one / scan:.2f}"
            )
        if args.old_format:
            before_history = FlowHistory(formats[1][0], timeout_s=600, threads=1)
            for sort in ("start", "bytes"):
                (now_s, (page, _)), (old_s, (old_page, _)), (before_s, (uids, _)) = alternately(
                    lambda s=sort: history.flows(flt=flt, sort=s, limit=100),  # type: ignore[misc]
                    lambda s=sort: before_history.flows(flt=flt, sort=s, limit=100),  # type: ignore[misc]
                    lambda s=sort: one_step(s, before_history),  # type: ignore[misc]
                    repeat=args.repeat,
                )
                assert page == old_page and [f.uid for f in page] == uids
                print(
                    f"by {sort}: two steps on the new files {now_s * 1000:.0f} ms, on the old"
                    f" files {old_s * 1000:.0f} ms (new / old files = {now_s / old_s:.2f}); one"
                    f" step on the old files (as before) {before_s * 1000:.0f} ms (now / before ="
                    f" {now_s / before_s:.2f})"
                )
        if args.compact:
            bench_compact(store, root / "store-compact", history, flt, host, args.repeat)
        print(
            f"references: full scan sum(bytes) {scan * 1000:.0f} ms; the host counted by address"
            f" text {text * 1000:.0f} ms; DuckDB threads=1"
        )
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
