"""Hourly compaction of the flow store: an hour's flows part files merged into one file.

The writer leaves one flows file (and its `flows_by_resp` twin) per flush: 120 an hour at
`flush_s` 30, and a query's time grows with the number of files it opens. Once an hour is
finished (its end, `flush_s` and `GRACE_S` past), a thread of the flow process merges its
parts into `flows/hour=H/merged-<low>-<high>.parquet`, sorted by originator, and the same
rows sorted by responder into the twin of that name under `flows_by_resp/`: statistics on
`columns.FLOW_STATISTICS` as the writer writes, but row groups of `MERGED_ROW_GROUP_ROWS`
(2^18, not the writer's 8 192: a query pays for every row group of every file it opens). DuckDB
sorts (one thread, `memory_mb`, spilling under `<store>/.compact/`) and pyarrow writes the
batches it streams: memory stays bounded whatever the hour holds. The thread runs at a lower
priority (nice 10), so packet processing keeps the CPU it needs.

The swap, and what a crash leaves at each step (the writer's `_recover` cleans up at start):

1. twin written as `.merged-....tmp`, fsynced, renamed: a crash before leaves a `.tmp`
   (deleted); a twin without its flows file is deleted (not committed), and the hour is
   merged again later.
2. flows file likewise; its rename commits the merge, under the writer's lock and only if the
   hour's parts are still those merged (else it is dropped and redone at the next pass).
   From then on readers take the merged file and ignore the hour's parts (`layout.hour_files`):
   a reader sees the parts or the merged file, never both and never neither.
3. the parts are deleted at a later pass, `PARTS_KEEP_S` after the rename, so that a query
   that listed them just before still reads them. A crash leaves them until then.

Rows filed into an hour after its merge (a late flush, a central's late sensor) are written
as `late-...` files, which readers take beside the merged file; they are not merged again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from leireye.flows.columns import FLOW_STATISTICS, FLOWS_SCHEMA, SORT_ORDER
from leireye.flows.layout import (
    BY_RESP,
    HOUR_NS,
    LATE_FLOW_COLUMNS,
    MERGED,
    hour_files,
    hour_start_ns,
    merged_name,
)
from leireye.flows.store import FILE_MODE, FlowStoreWriter, sync_dir

log = logging.getLogger("leireye.flows.compact")

GRACE_S: Final = 60.0  # past the hour's end and flush_s: the last flush of the hour is in
PARTS_KEEP_S: Final = 120.0  # merged parts kept for the queries that listed them
EVERY_S: Final = 60.0
SPILL_DIR: Final = ".compact"
# Rows per row group of a merged file. Every file a query opens costs DuckDB its footer, one
# entry per column per row group: with the writer's 8 192 (an hour at 5 k/s, 2 198 row groups)
# that was a 6 MB footer, 0.1-0.4 s to open each file (docs/flows.md, "Over 24 hours").
MERGED_ROW_GROUP_ROWS: Final = 2**18


@dataclass
class CompactionCounts:
    hours: int = 0
    rows: int = 0
    seconds: float = 0.0
    failed: int = 0
    redone: int = 0  # merges dropped because a part came meanwhile
    parts_deleted: int = 0


def finished_hours(directory: Path, now_s: float, flush_s: float) -> list[str]:
    """The hours with parts and no merged file whose end is `flush_s` + `GRACE_S` past."""
    found: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for folder in sorted((directory / "flows").iterdir()):
            try:
                end_s = (hour_start_ns(folder.name) + HOUR_NS) / 1e9
            except ValueError:
                continue
            if end_s + flush_s + GRACE_S > now_s:
                continue
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                files = hour_files(folder)
                if files and all(f.kind == "part" for f in files):
                    found.append(folder.name)
    return found


def compact_hour(
    directory: Path, hour: str, lock: threading.Lock, memory_mb: int = 256
) -> int | None:
    """Merge `hour`'s flows parts (steps 1 and 2 of the module docstring): the rows merged,
    or None when there was nothing to merge or a part came meanwhile."""
    folder = directory / "flows" / hour
    with lock:
        parts = [f for f in hour_files(folder) if f.kind == "part"]
    if not parts or any(f.kind != "part" for f in hour_files(folder)):
        return None
    name = merged_name(min(p.low_ns for p in parts), max(p.high_ns for p in parts))
    files = [str(p.path) for p in parts]
    spill = directory / SPILL_DIR
    spill.mkdir(mode=0o700, exist_ok=True)
    db = duckdb.connect(
        ":memory:",
        config={"threads": 1, "memory_limit": f"{memory_mb}MB", "temp_directory": str(spill)},
    )
    try:
        late = ", ".join(f"'{name}'" for name in LATE_FLOW_COLUMNS)
        having = {
            row[0]
            for row in db.execute(
                f"SELECT DISTINCT name FROM parquet_schema(?) WHERE name IN ({late})", [files]
            ).fetchall()
        }
        columns = ", ".join(
            f"NULL::{LATE_FLOW_COLUMNS[c]} AS {c}"
            if c in LATE_FLOW_COLUMNS and c not in having
            else c
            for c in FLOWS_SCHEMA.names
        )
        twin = directory / BY_RESP / hour
        twin.mkdir(exist_ok=True)
        rows = 0
        for target in (twin, folder):  # the twin first: the flows file's rename commits both
            order = ", ".join(c for c, _ in SORT_ORDER[BY_RESP if target is twin else "flows"])
            result = db.sql(
                f"SELECT {columns} FROM read_parquet(?, union_by_name = true) ORDER BY {order}",
                params=[files],
            )
            temporary = _write_stream(target, name, result.to_arrow_reader(MERGED_ROW_GROUP_ROWS))
            rows = pq.ParquetFile(temporary).metadata.num_rows
            if target is twin:
                os.rename(temporary, twin / name)
                sync_dir(twin)
                continue
            with lock:  # the commit: only if the hour's parts are still those merged
                now = [str(f.path) for f in hour_files(folder)]
                if now != files:
                    temporary.unlink()
                    (twin / name).unlink(missing_ok=True)
                    return None
                os.rename(temporary, folder / name)
                sync_dir(folder)
        return rows
    finally:
        db.close()
        for path in (directory / BY_RESP / hour, folder):
            for left in path.glob(f".{name}.tmp"):
                left.unlink(missing_ok=True)


def _write_stream(
    folder: Path, name: str, batches: pa.RecordBatchReader, group_rows: int | None = None
) -> Path:
    """The batches (of `group_rows` rows, `MERGED_ROW_GROUP_ROWS` unless given; the last one
    fewer) as `folder/.name.tmp`, one row group each, in the writer's format, fsynced."""
    temporary = folder / f".{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb", closefd=False) as sink:
            writer = pq.ParquetWriter(
                sink, FLOWS_SCHEMA, compression="zstd", write_statistics=FLOW_STATISTICS
            )
            try:
                for batch in batches:
                    writer.write_table(
                        pa.Table.from_batches([batch]).cast(FLOWS_SCHEMA),
                        row_group_size=group_rows or MERGED_ROW_GROUP_ROWS,
                    )
            finally:
                writer.close()
            sink.flush()
        os.fchmod(fd, FILE_MODE)
        os.fsync(fd)
    finally:
        os.close(fd)
    return temporary


def delete_merged_parts(
    directory: Path, seen: dict[str, float], now_s: float, keep_s: float = PARTS_KEEP_S
) -> int:
    """Step 3: the parts (flows and twins) of every merged hour that `seen` says was first
    seen merged `keep_s` ago or more; an hour seen merged for the first time is noted in
    `seen` (after a restart too: the parts a crash left stay `keep_s` more). How many."""
    deleted = 0
    with contextlib.suppress(FileNotFoundError):
        for folder in (directory / "flows").iterdir():
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                parts = [
                    part
                    for table in ("flows", BY_RESP)
                    for part in (directory / table / folder.name).glob("part-*.parquet")
                ]
                if not parts or not any(folder.glob(f"{MERGED}-*.parquet")):
                    seen.pop(folder.name, None)
                    continue
                if seen.setdefault(folder.name, now_s) + keep_s > now_s:
                    continue
                for part in parts:
                    part.unlink(missing_ok=True)
                    deleted += 1
    return deleted


class Compactor:
    """A thread beside a `FlowStoreWriter`: every `EVERY_S`, merges the finished hours and
    deletes the parts merged earlier. `run_once` is the whole of one pass (tests call it)."""

    def __init__(
        self,
        writer: FlowStoreWriter,
        *,
        memory_mb: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.writer = writer
        self.memory_mb = memory_mb
        self.counts = CompactionCounts()
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._merged_seen: dict[str, float] = {}  # hour -> when first seen merged with parts

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="flow-compaction", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        with contextlib.suppress(OSError):  # a lower priority for this thread alone
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while not self._stop.wait(EVERY_S):
            try:
                self.run_once()
            except Exception:  # a bug: say so and try again at the next pass, the store is safe
                self.counts.failed += 1
                log.exception("flow store: a compaction pass crashed")

    def run_once(self) -> None:
        directory = self.writer.directory
        self.counts.parts_deleted += delete_merged_parts(
            directory, self._merged_seen, self._clock()
        )
        for hour in finished_hours(directory, self._clock(), self.writer.flush_s):
            if self._stop.is_set():
                return
            started = time.perf_counter()
            try:
                rows = compact_hour(directory, hour, self.writer.lock, self.memory_mb)
            except (OSError, duckdb.Error, pa.ArrowException) as exc:
                self.counts.failed += 1
                log.error("flow store: merging %s failed (retried later): %s", hour, exc)
                continue
            elapsed = time.perf_counter() - started
            if rows is None:
                self.counts.redone += 1
                log.info("flow store: %s changed while it was merged: merged again later", hour)
                continue
            self._merged_seen[hour] = self._clock()
            self.counts.hours += 1
            self.counts.rows += rows
            self.counts.seconds += elapsed
            log.info(
                "flow store: merged %s (%d flows) in %.1f s; %d hours merged since start",
                hour,
                rows,
                elapsed,
                self.counts.hours,
            )
        shutil.rmtree(directory / SPILL_DIR, ignore_errors=True)
