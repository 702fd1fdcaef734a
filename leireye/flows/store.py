"""The flow store's writer: ended flows and per-minute summaries as Parquet files by the hour.

Why Parquet files written with pyarrow and read with DuckDB, not one DuckDB database: one
process (the flow process) writes while many (every web worker, the CLI as root) read. A DuckDB
database file is locked by the process that opens it for writing, and another process cannot
open it at all meanwhile, not even read-only ("Could not set lock on file ... Conflicting lock
is held"; checked with duckdb 2.0 in tests/unit/test_flowstore.py); a read-only open would in
turn block the writer. Immutable files need no lock: a reader opens whatever files exist when
its query starts, with DuckDB in memory, and the writer only ever adds whole files or deletes
whole hours.

Layout under `history.dir` (mode 2750: owned by the flow process's user, group of the web
user, the setgid bit so every directory and file below gets that group; files 0640):

    flows/hour=2026120312/part-<min first_ns>-<max last_ns>-<pid>-<n>.parquet
    flows_by_resp/hour=2026120312/part-...parquet   the same rows sorted by responder
    hosts/hour=2026120312/part-<min minute_ns>-<max minute_ns>-<pid>-<n>.parquet
    apps/hour=.../...
    flows/hour=2026120312/merged-<low>-<high>.parquet   a finished hour's parts merged, and
    flows_by_resp/hour=2026120312/merged-...            its twin (`leireye.flows.compact`)
    flows/hour=.../late-...parquet   rows filed into an hour after its merge (and the twin)
    pending.json          rows held in memory, not written yet (rewritten on every change)
    losses.json           rows lost by crashes, counted at each start (cumulative)
    fleet-minutes.json    on a fleet sensor, the last minute file its publisher sent
                          (`leireye.fleet.minutes`; written by the publisher, same user)

A flow is filed under the UTC hour of its `last_ns` (when it ended), a summary under its
minute's. The times in a file's name bound its rows, so a reader picks the files of a time range
from names alone. Within a file, flows are sorted by originator address and time, with row
groups of `ROW_GROUP_ROWS` (8 192; 32 768 before, a store may hold both) and min/max
statistics on the keys and times alone (`columns.FLOW_STATISTICS`), so that the row-group
statistics skip most of a file for a one-host query and a page's rows come from small row
groups; the same rows sorted by responder go to a twin file of the same name under
`flows_by_resp/`, written first: the flows file's rename commits both, and a twin without its
flows file (a crash between the two) is deleted at the next start.

Crash safety: a file is written under a dot-name ending in `.tmp` in its hour's directory,
fsynced, renamed to its final name and the directory fsynced: a reader sees a whole file or
none. A crash leaves at most `.tmp` files (deleted at the next start) and loses the rows held
in memory, at most `history.flush_s` worth: `pending.json` says how many (rewritten, without
fsync, after every add and after every file written, so it is exact unless the process dies
between a file's rename and that rewrite: then that file's rows are counted lost although
they are kept, an over-count, never an under-count), and the next start adds them to
`losses.json` and logs them.

Retention (at most once a minute, and at start): every hour older than `history.flows_days`,
then the oldest hours while the store is over `history.max_gb`; an hour's three tables go
together, each deletion logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from leireye.flows.columns import (
    FLOW_STATISTICS,
    SORT_ORDER,
    TIME_COLUMNS,
    apps_table,
    flows_table,
    flows_table_from_rows,
    hosts_table,
)
from leireye.flows.layout import (
    BY_RESP,
    DATA_DIRS,
    HOUR_NS,
    LOSSES_FILE,
    MERGED,
    PENDING_FILE,
    TABLES,
    hour_name,
    hour_start_ns,
    read_losses,
)
from leireye.flows.model import AppMinute, Flow, HostMinute

log = logging.getLogger("leireye.flows.store")

DIR_MODE: Final = 0o2750
FILE_MODE: Final = 0o640
ROW_GROUP_ROWS: Final = 8192
RETENTION_EVERY_S: Final = 60.0
PENDING_BYTES: Final = 128  # pending.json's fixed size: its counts fit many times over
ROWS_PER_CONVERSION: Final = 16384  # ended-flow rows held before they are turned into Arrow


def prepare_history_dir(path: Path, writer: pwd.struct_passwd | None, group: int | None) -> Path:
    """Make the store's directory while still root: owned by the flow process's user
    (`writer`), group `group` (the web user's), mode 2750. Called by the supervisor."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        uid = writer.pw_uid if writer is not None else 0
        os.chown(path, uid, -1 if group is None else group)
        for sub in path.rglob("*"):  # a directory made by an earlier run as another user
            os.chown(sub, uid, -1 if group is None else group, follow_symlinks=False)
    os.chmod(path, DIR_MODE)
    return path


class FlowStoreWriter:
    """`model.FlowSink` on Parquet files (the layout is in this module's docstring). Rows are
    buffered and written every `flush_s` (checked on each add and `tick`) or on `flush`/`close`.
    One writer per directory: the flow process's, or at a fleet central its ingest's (every
    sensor's ended flows and host and app minutes, each with its `sensor`)."""

    def __init__(
        self,
        directory: Path,
        *,
        flows_days: float,
        max_gb: float,
        flush_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.flows_days = flows_days
        self.max_bytes = int(max_gb * 1e9)
        self.flush_s = flush_s
        self._clock = clock
        self._flows: list[Flow] = []
        self._flow_rows: list[np.ndarray] = []  # from `add_rows`, not yet in Arrow
        self._flow_tables: list[pa.Table] = []  # in Arrow, waiting for the flush
        self._flow_count = 0  # rows in both
        self._hosts: list[HostMinute] = []
        self._apps: list[AppMinute] = []
        self._serial = 0
        self._marked: list[int] = [0, 0, 0]  # what pending.json says
        self._pending_fd = -1
        self._retention_at = 0.0
        self.lock = threading.Lock()  # held while writing files: `compact` commits under it
        directory.mkdir(parents=True, exist_ok=True)
        self.recovered = self._recover()
        self._flushed_at = clock()
        self.enforce_retention()

    # -- FlowSink --------------------------------------------------------------------------

    def add_flows(self, flows: Sequence[Flow]) -> None:
        self._flows.extend(flows)
        self._tick()

    def add_rows(self, rows: np.ndarray) -> None:
        """Ended flows as `rows.FLOW_ROW` (the flow process's): turned into Arrow columns at
        once, without a `Flow` per row."""
        if len(rows):
            self._flow_rows.append(rows)
            self._flow_count += len(rows)
            if sum(len(r) for r in self._flow_rows) >= ROWS_PER_CONVERSION:
                self._convert_rows()
        self._tick()

    def _convert_rows(self) -> None:
        if self._flow_rows:
            self._flow_tables.append(flows_table_from_rows(np.concatenate(self._flow_rows)))
            self._flow_rows.clear()

    def add_minute(self, hosts: Sequence[HostMinute], apps: Sequence[AppMinute]) -> None:
        self._hosts.extend(hosts)
        self._apps.extend(apps)
        self._tick()

    def tick(self) -> None:
        """Flush when `flush_s` has passed since the last flush: for a writer whose rows may
        stop coming for a while (a fleet central's ingest calls it on its own tick)."""
        self._tick()

    def flush(self) -> None:
        """Write every row held: one file per table and hour that has rows."""
        now = self._clock()
        self._convert_rows()
        if self._flows:
            self._flow_tables.append(flows_table(self._flows))
            self._flow_count += len(self._flows)
            self._flows.clear()
        if self._flow_tables:
            self._write_table(0, pa.concat_tables(self._flow_tables))
            self._flow_tables.clear()
            self._flow_count = 0
        if self._hosts:
            self._write_table(1, hosts_table(self._hosts))
            self._hosts.clear()
        if self._apps:
            self._write_table(2, apps_table(self._apps))
            self._apps.clear()
        self._flushed_at = now
        self._mark(list(self.pending))
        if now - self._retention_at >= RETENTION_EVERY_S:
            self.enforce_retention()

    def close(self) -> None:
        self.flush()
        if self._pending_fd >= 0:
            os.close(self._pending_fd)
            self._pending_fd = -1
        with contextlib.suppress(FileNotFoundError):
            (self.directory / PENDING_FILE).unlink()

    @property
    def pending(self) -> tuple[int, int, int]:
        """Rows held in memory: flows, host minutes, app minutes."""
        return len(self._flows) + self._flow_count, len(self._hosts), len(self._apps)

    # -- writing ---------------------------------------------------------------------------

    def _tick(self) -> None:
        if self._clock() - self._flushed_at >= self.flush_s:
            self.flush()
        else:
            self._mark(list(self.pending))

    def _write_table(self, index: int, data: pa.Table) -> None:
        """One file per hour; after each, pending.json counts its rows as written."""
        table = TABLES[index]
        time_column = TIME_COLUMNS[table][0]
        hours = data.column(time_column).to_numpy() // HOUR_NS
        for hour_index in np.unique(hours).tolist():
            hour = hour_name(hour_index * HOUR_NS)
            rows = np.flatnonzero(hours == hour_index)
            part = data.take(pa.array(rows)).sort_by(SORT_ORDER[table])
            low_column = TIME_COLUMNS[table][-1]
            low = int(pc.min(part.column(low_column)).as_py())
            high = int(pc.max(part.column(time_column)).as_py())
            folder = self.directory / table / hour
            self._make_dir(self.directory / table)
            self._make_dir(folder)
            self._serial += 1
            stats: bool | list[str] = FLOW_STATISTICS if table == "flows" else True
            with self.lock:  # an hour already merged (`compact`) takes late files beside it
                late = any(folder.glob(f"{MERGED}-*.parquet"))
                kind = "late" if late else "part"
                name = f"{kind}-{low}-{high}-{os.getpid()}-{self._serial}.parquet"
                if table == "flows":  # its twin first: the flows file's rename commits both
                    twin = self.directory / BY_RESP / hour
                    self._make_dir(twin.parent)
                    self._make_dir(twin)
                    write_atomically(twin, name, part.sort_by(SORT_ORDER[BY_RESP]), stats)
                write_atomically(folder, name, part, stats)
            marked = list(self._marked)
            marked[index] -= part.num_rows
            self._mark(marked)

    def _make_dir(self, path: Path) -> None:
        if not path.is_dir():
            path.mkdir(exist_ok=True)
            os.chmod(path, DIR_MODE)

    def _mark(self, counts: list[int]) -> None:
        """Overwrite pending.json in place when the rows held in memory changed: one `pwrite`
        of a fixed-size record (JSON padded with spaces), which a killed process cannot leave
        half done; no fsync: it must survive the process, not the machine."""
        if counts != self._marked:
            data = json.dumps(dict(zip(TABLES, counts, strict=True))).encode()
            if self._pending_fd < 0:
                self._pending_fd = os.open(self.directory / PENDING_FILE,
                                           os.O_WRONLY | os.O_CREAT, FILE_MODE)  # fmt: skip
            os.pwrite(self._pending_fd, data.ljust(PENDING_BYTES - 1) + b"\n", 0)
            self._marked = counts

    # -- start: what a crash left ----------------------------------------------------------

    def _recover(self) -> dict[str, int]:
        """Delete half-written files; count the rows the last run held when it died."""
        temporary = 0
        for table in DATA_DIRS:
            for path in (self.directory / table).glob("hour=*/.*.tmp"):
                path.unlink(missing_ok=True)
                temporary += 1
        for path in self.directory.glob(".*.json.tmp"):  # pending.json or losses.json, half-made
            path.unlink(missing_ok=True)
        for path in (self.directory / BY_RESP).glob("hour=*/[!.]*.parquet"):
            if not (self.directory / "flows" / path.parent.name / path.name).exists():
                path.unlink()  # a twin whose flows file was never renamed: not committed
                temporary += 1
        lost: dict[str, int] = {}
        try:
            data = json.loads((self.directory / PENDING_FILE).read_text())
            lost = {t: int(data.get(t, 0)) for t in TABLES if int(data.get(t, 0)) > 0}
        except (OSError, ValueError, AttributeError):
            pass
        (self.directory / PENDING_FILE).unlink(missing_ok=True)
        if lost or temporary:
            total = read_losses(self.directory)
            for table, count in lost.items():
                total[table] = total.get(table, 0) + count
            total["crashes"] = total.get("crashes", 0) + 1
            _replace_text(self.directory / LOSSES_FILE, json.dumps(total), sync=True)
            log.warning(
                "flow store: the last run stopped without writing %s (%d half-written files"
                " removed); lost since the store began: %s",
                ", ".join(f"{n} {t} rows" for t, n in lost.items()) or "no rows",
                temporary,
                total,
            )
        return lost

    # -- retention -------------------------------------------------------------------------

    def enforce_retention(self) -> list[str]:
        """Delete hours past `flows_days`, then the oldest while over `max_gb`; their names."""
        now = self._clock()
        self._retention_at = now
        hours: dict[str, int] = {}  # hour -> bytes over all tables
        for table in DATA_DIRS:
            with contextlib.suppress(FileNotFoundError):
                for folder in (self.directory / table).iterdir():
                    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
                    hours[folder.name] = hours.get(folder.name, 0) + size
        deleted: list[str] = []
        total = sum(hours.values())
        cutoff_ns = int((now - self.flows_days * 86400) * 1e9)
        for hour in sorted(hours):
            try:
                end_ns = hour_start_ns(hour) + HOUR_NS
            except ValueError:
                continue
            old = end_ns <= cutoff_ns
            if not old and total <= self.max_bytes:
                break
            why = "older than history.flows_days" if old else "history.max_gb reached"
            self._delete_hour(hour)
            log.info("flow store: deleted %s (%d bytes): %s", hour, hours[hour], why)
            total -= hours[hour]
            deleted.append(hour)
        return deleted

    def _delete_hour(self, hour: str) -> None:
        for table in DATA_DIRS:
            shutil.rmtree(self.directory / table / hour, ignore_errors=True)


def write_atomically(
    folder: Path,
    name: str,
    table: pa.Table,
    statistics: bool | list[str] = True,
    row_group_rows: int | None = None,
) -> Path:
    """Write `table` as `folder/name`: under a temporary name, fsynced, renamed, the
    directory fsynced; mode 0640. Row groups of `ROW_GROUP_ROWS` (unless `row_group_rows`),
    with min/max statistics on the `statistics` columns (all with True)."""
    temporary = folder / f".{name}.tmp"
    final = folder / name
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb", closefd=False) as sink:
            pq.write_table(
                table,
                sink,
                row_group_size=row_group_rows or ROW_GROUP_ROWS,
                compression="zstd",
                write_statistics=statistics,
            )
            sink.flush()
        os.fchmod(fd, FILE_MODE)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, final)
    sync_dir(folder)
    return final


def _replace_text(path: Path, text: str, *, sync: bool) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, text.encode())
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, path)
    if sync:
        sync_dir(path.parent)


def sync_dir(folder: Path) -> None:
    """fsync a directory: the renames in it last."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
