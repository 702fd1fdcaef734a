"""The flow store's read side: DuckDB, in memory, over the Parquet files `store.py` writes.

Each query picks its files by the time bounds in their names (no file outside the range is
opened), binds every value a client gave as a parameter (`query.FlowFilter.where`), and runs on
a cursor of its own that a timer interrupts after `timeout_s`: a query cannot keep a web worker
busy for minutes. Pages hold at most `rows_max` rows and `offset` is capped. A file that
retention deletes while a query lists it makes the query start over once with a fresh list.

Nothing here holds a lock on the files: any number of processes read while the flow process
writes (the writer only adds whole files by rename, and deletes whole hours).
The flows files gained columns after the first were written (`layout.LATE_FLOW_COLUMNS`:
`sensor`, as a fleet central's store holds every sensor's flows; `icmp_id`); files written
before one lack it and read it as null: which of these columns a file has is looked up once per
file (`parquet_schema`; files never change) and the files that lack some are read through a
subquery that adds them, a branch per set of missing columns, joined `UNION ALL BY NAME`. At a
fleet central the host and app minute files gained a `sensor` column too, read by name when
asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import duckdb
import msgspec

from leireye.errors import LeirEyeError
from leireye.flows.layout import (
    BY_RESP,
    FLOW_FIELDS,
    LATE_FLOW_COLUMNS,
    PartFile,
    part_files,
    read_losses,
)
from leireye.flows.model import Flow
from leireye.flows.query import FlowFilter, IpSide, KeyRange

FLOW_SORTS: Final = {"bytes": "bytes", "packets": "pkts", "duration": "duration_ns",
                     "start": "first_ns"}  # fmt: skip
HOST_SORTS: Final = {
    "bytes": "bytes_sent + bytes_recv",
    "packets": "pkts_sent + pkts_recv",
    "sent": "bytes_sent",
    "received": "bytes_recv",
    "peers": "peers",
    "last": "last_ns",
    "first": "first_ns",
}
_SORT_KEYS: Final[dict[str, Callable[[Flow], int]]] = {
    "bytes": lambda f: f.orig_bytes + f.resp_bytes,
    "packets": lambda f: f.orig_pkts + f.resp_pkts,
    "duration": lambda f: f.duration_ns,
    "start": lambda f: f.first_ns,
}
OFFSET_MAX: Final = 100_000
PEERS_MAX: Final = 50
STEPS_MAX: Final = 2000
MINUTE_NS: Final = 60 * 10**9
SCHEMA_CACHE_MAX: Final = 50_000  # files remembered with their missing columns, then pruned
_LATE_NAMES: Final = ", ".join(f"'{name}'" for name in LATE_FLOW_COLUMNS)
_FLOW_COLUMNS: Final = ", ".join(FLOW_FIELDS)
Lacking = tuple[str, ...]  # the late columns a file lacks, in LATE_FLOW_COLUMNS order
_NO_TIME: Final = (-(2**63), 2**63 - 1)


class HistoryError(LeirEyeError):
    """A query the store cannot answer: too slow (`timed_out`), or an argument out of range."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class FlowHistory:
    def __init__(
        self,
        directory: Path,
        *,
        timeout_s: float = 10.0,
        rows_max: int = 1000,
        threads: int = 1,
        memory_mb: int = 512,
    ) -> None:
        self.directory = directory
        self.timeout_s = timeout_s
        self.rows_max = rows_max
        self._db = duckdb.connect(
            ":memory:", config={"threads": threads, "memory_limit": f"{memory_mb}MB"}
        )
        self._lock = threading.Lock()
        self._lacking: dict[str, Lacking] = {}  # file -> late columns it lacks (never change)

    def close(self) -> None:
        self._db.close()

    # -- flows -----------------------------------------------------------------------------

    def flows(
        self,
        from_ns: int | None = None,
        to_ns: int | None = None,
        flt: FlowFilter | None = None,
        *,
        sort: str = "start",
        descending: bool = True,
        limit: int = 100,
        offset: int = 0,
        active: Sequence[Flow] = (),
        ended: bool = True,
    ) -> tuple[list[Flow], int]:
        """Ended flows that overlap [from_ns, to_ns] and pass `flt` (none with `ended=False`),
        and as many of the `active` ones (the live flows, not in the store): one page in
        `sort` order (ties by uid), and how many match in all."""
        column = FLOW_SORTS.get(sort)
        if column is None:
            raise HistoryError(f"sort must be one of {', '.join(FLOW_SORTS)}")
        self._check_page(limit, offset)
        low, high = _range(from_ns, to_ns)
        flt = flt or FlowFilter()
        live = [f for f in active if f.last_ns >= low and f.first_ns <= high and flt.matches(f)]
        if not live and ended:
            return self._ended(low, high, flt, column, descending, limit, offset)
        # The page of the merged order holds at most offset + limit ended flows.
        stored: list[Flow] = []
        total = 0
        if ended:
            stored, total = self._ended(low, high, flt, column, descending, offset + limit, 0)
        key = _SORT_KEYS[sort]
        merged = sorted([*stored, *live], key=lambda f: (key(f), f.uid), reverse=descending)
        return merged[offset : offset + limit], total + len(live)

    def _ended(
        self,
        low: int,
        high: int,
        flt: FlowFilter,
        column: str,
        descending: bool,
        limit: int,
        offset: int,
    ) -> tuple[list[Flow], int]:
        """One page in two steps (a late materialisation). First one scan of the few columns
        the filter and the order need gives the count and the page's places (file, row
        number): `max_by`/`min_by` keeps the first `offset + limit` by (sort column, uid).
        Then every column of those rows alone (`_fetch`). One step made DuckDB decode every
        column of each row group holding a match: for one host, most of the query's time."""
        parts = self._parts("flows", low, high)
        if not parts:
            return [], 0
        source, params = _matching(parts, low, high, flt, self._twins(parts), self._old(parts))
        pick = "max_by" if descending else "min_by"
        found = self._query(
            f"SELECT count(*) AS n, {pick}(struct_pack(f := filename, r := file_row_number),"
            f" struct_pack(k := {column}, u := uid), ?) AS places FROM {source}",
            [offset + limit, *params],
            "flows",
            (low, high),
        )[0]
        places = [(p["f"], p["r"]) for p in (found["places"] or [])[offset:]]
        return self._fetch(places, (low, high)), int(found["n"])

    def _fetch(self, places: list[tuple[str, int]], span: tuple[int, int]) -> list[Flow]:
        """The flows at `places` (file, row number), in that order: one scan per file, whose
        row numbers DuckDB prunes row groups with. A file that retention deleted meanwhile
        gives nothing."""
        by_file: dict[str, list[int]] = {}
        for name, number in places:
            by_file.setdefault(name, []).append(number)
        branches: list[str] = []
        params: list[object] = []
        old = self._old_paths([Path(name) for name in by_file])
        for name, rows in by_file.items():
            if not Path(name).exists():
                continue
            marks = ", ".join(["?"] * len(rows))
            branches.append(
                f"SELECT {_FLOW_COLUMNS}, filename AS _file, file_row_number AS _row"
                f" FROM {_reader(old.get(Path(name), ()))} WHERE file_row_number IN ({marks})"
            )
            params += [[name], *rows]
        if not branches:
            return []
        found: dict[tuple[str, int], Flow] = {}
        for row in self._query(" UNION ALL ".join(branches), params, "flows", span):
            found[(row.pop("_file"), row.pop("_row"))] = _flow(row)
        return [found[place] for place in places if place in found]

    def flow(self, uid: str) -> list[Flow]:
        """Every record of one flow (a long flow has one per active timeout), oldest first."""
        parts = self._parts("flows", *_NO_TIME)
        if not parts:
            return []
        old = self._old(parts)
        branches: dict[Lacking, list[str]] = {}
        for part in parts:
            branches.setdefault(old.get(part.path, ()), []).append(str(part.path))
        source = " UNION ALL BY NAME ".join(
            f"SELECT * FROM {_reader(lacking)} WHERE uid = ?" for lacking in sorted(branches)
        )
        params = [value for lacking in sorted(branches) for value in (branches[lacking], uid)]
        rows = self._query(
            f"SELECT {_FLOW_COLUMNS} FROM ({source}) ORDER BY first_ns", params, "flows", _NO_TIME
        )
        return [_flow(row) for row in rows]

    # -- hosts -----------------------------------------------------------------------------

    def hosts(
        self,
        from_ns: int | None = None,
        to_ns: int | None = None,
        *,
        sort: str = "bytes",
        descending: bool = True,
        limit: int = 100,
        offset: int = 0,
        sensors: Sequence[str] | None = None,
        with_sensors: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        """Every address seen in [from_ns, to_ns], summed over its minutes (and over the
        sensors that saw it, of `sensors` only when given): one page, and how many addresses
        in all. `with_sensors` (a fleet central) adds to each the `sensors` that saw it."""
        expression = HOST_SORTS.get(sort)
        if expression is None:
            raise HistoryError(f"sort must be one of {', '.join(HOST_SORTS)}")
        self._check_page(limit, offset)
        low, high = _range(from_ns, to_ns)
        files = self._files("hosts", low - MINUTE_NS, high)
        if not files:
            return [], 0
        order = "DESC" if descending else "ASC"
        scan, test, values = _minutes(sensors, with_sensors)
        which = ", list_sort(list_distinct(list(sensor))) AS sensors" if with_sensors else ""
        rows = self._query(
            f"SELECT * FROM (SELECT ip{which}, min(minute_ns) AS first_ns,"
            " max(minute_ns) + 60000000000 AS last_ns,"
            " sum(pkts_sent)::BIGINT AS pkts_sent, sum(bytes_sent)::BIGINT AS bytes_sent,"
            " sum(pkts_recv)::BIGINT AS pkts_recv, sum(bytes_recv)::BIGINT AS bytes_recv,"
            " len(list_distinct(flatten(list(peers)))) AS peers,"
            " list_distinct(flatten(list(names))) AS names"
            f" FROM {scan} WHERE minute_ns >= ? AND minute_ns <= ?{test}"
            f" GROUP BY ip) ORDER BY {expression} {order}, ip LIMIT ? OFFSET ?",
            [files, low - MINUTE_NS + 1, high, *values, limit, offset],
            "hosts",
            (low, high),
        )
        total = self._query(
            f"SELECT count(DISTINCT ip) AS n FROM {scan}"
            f" WHERE minute_ns >= ? AND minute_ns <= ?{test}",
            [files, low - MINUTE_NS + 1, high, *values],
            "hosts",
            (low, high),
        )
        for row in rows:
            row["names"] = sorted(row["names"] or [])
        return rows, int(total[0]["n"])

    def host(
        self,
        ip: str,
        from_ns: int,
        to_ns: int,
        step_ns: int,
        sensors: Sequence[str] | None = None,
    ) -> dict[str, Any] | None:
        """One address in [from_ns, to_ns]: totals, names, ports served, apps (bytes), its
        top peers (from the flows) and its bytes per app per `step_ns`, summed over the sensors
        that saw it (of `sensors` only when given); None if never seen."""
        one = KeyRange.parse(ip)  # ValueError for a bad address: the caller checked it
        low, high = _range(from_ns, to_ns)
        step = self._check_step(low, high, step_ns)
        hosts = self._files("hosts", low - MINUTE_NS, high)
        host_test, host_values = one.sql("ip")
        scan, test, values = _minutes(sensors)
        where = f"{host_test} AND minute_ns >= ? AND minute_ns <= ?{test}"
        params: list[object] = [*host_values, low - MINUTE_NS + 1, high, *values]
        summary: dict[str, Any] | None = None
        apps: list[dict[str, Any]] = []
        series: list[dict[str, Any]] = []
        if hosts:
            found = self._query(
                "SELECT min(minute_ns) AS first_ns, max(minute_ns) + 60000000000 AS last_ns,"
                " sum(pkts_sent)::BIGINT AS pkts_sent, sum(bytes_sent)::BIGINT AS bytes_sent,"
                " sum(pkts_recv)::BIGINT AS pkts_recv, sum(bytes_recv)::BIGINT AS bytes_recv,"
                " list_distinct(flatten(list(peers))) AS peer_list,"
                " list_distinct(flatten(list(names))) AS names,"
                " list_distinct(flatten(list(ports_served))) AS ports_served, count(*) AS n"
                f" FROM {scan} WHERE {where}",
                [hosts, *params],
                "hosts",
                (low, high),
            )
            if found and found[0]["n"]:
                summary = found[0]
                summary["peers"] = len(summary.pop("peer_list") or [])
                summary["names"] = sorted(summary["names"] or [])
                summary["ports_served"] = sorted(summary["ports_served"] or [])
                del summary["n"]
                unnested = (
                    "SELECT minute_ns, unnest(map_keys(apps)) AS app,"
                    f" unnest(map_values(apps)) AS b FROM {scan} WHERE {where}"
                )
                apps = self._query(
                    f"SELECT app, sum(b)::BIGINT AS bytes FROM ({unnested})"
                    " GROUP BY app ORDER BY bytes DESC, app",
                    [hosts, *params],
                    "hosts",
                    (low, high),
                )
                series = self._query(
                    "SELECT (minute_ns // ?) * ? AS start_ns, app, sum(b)::BIGINT AS bytes"
                    f" FROM ({unnested}) GROUP BY 1, 2 ORDER BY 1, 2",
                    [step, step, hosts, *params],
                    "hosts",
                    (low, high),
                )
        peers: list[dict[str, Any]] = []
        flows = self._parts("flows", low, high)
        if flows:
            flt = FlowFilter(ip=one, sensor=None if sensors is None else tuple(sensors))
            source, matched = _matching(flows, low, high, flt, self._twins(flows), self._old(flows))
            peers = self._query(
                "SELECT CASE WHEN side = 'orig_only' THEN resp_ip ELSE orig_ip END AS ip,"
                " count(*) AS flows, sum(pkts)::BIGINT AS packets, sum(bytes)::BIGINT AS bytes"
                f" FROM {source} GROUP BY 1 ORDER BY bytes DESC, ip LIMIT ?",
                [*matched, PEERS_MAX],
                "flows",
                (low, high),
            )
        if summary is None and not peers:
            return None
        return {"ip": ip, "summary": summary, "apps": apps, "peers": peers, "series": series}

    # -- protocols -------------------------------------------------------------------------

    def protocols(
        self, from_ns: int, to_ns: int, step_ns: int, sensors: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Packets and bytes per app label per `step_ns` interval in [from_ns, to_ns],
        intervals aligned to multiples of the step, oldest first; summed over the sensors (of
        `sensors` only when given)."""
        step = self._check_step(from_ns, to_ns, step_ns)
        files = self._files("apps", from_ns - MINUTE_NS, to_ns)
        if not files:
            return []
        scan, test, values = _minutes(sensors)
        return self._query(
            "SELECT (minute_ns // ?) * ? AS start_ns, app, sum(packets)::BIGINT AS packets,"
            f" sum(bytes)::BIGINT AS bytes FROM {scan}"
            f" WHERE minute_ns >= ? AND minute_ns <= ?{test} GROUP BY 1, 2 ORDER BY 1, 2",
            [step, step, files, from_ns - MINUTE_NS + 1, to_ns, *values],
            "apps",
            (from_ns, to_ns),
        )

    def losses(self) -> dict[str, int]:
        """Rows the flow process lost in crashes, per table, since the store began."""
        return read_losses(self.directory)

    # -- plumbing --------------------------------------------------------------------------

    def _check_page(self, limit: int, offset: int) -> None:
        if not 1 <= limit <= self.rows_max:
            raise HistoryError(f"limit must be 1 to {self.rows_max}")
        if not 0 <= offset <= OFFSET_MAX:
            raise HistoryError(f"offset must be 0 to {OFFSET_MAX}")

    def _check_step(self, low: int, high: int, step_ns: int) -> int:
        if step_ns < MINUTE_NS or step_ns % MINUTE_NS:
            raise HistoryError("step must be a whole number of minutes (60 s at least)")
        if high < low:
            raise HistoryError("to is before from")
        if (high - low) // step_ns > STEPS_MAX:
            raise HistoryError(f"from..to holds more than {STEPS_MAX} steps: take a longer step")
        return step_ns

    def _parts(self, table: str, low: int, high: int) -> list[PartFile]:
        """The files of `table` that may hold rows in [low, high], by their names' bounds."""
        return [
            p for p in part_files(self.directory, table) if p.low_ns <= high and p.high_ns >= low
        ]

    def _files(self, table: str, low: int, high: int) -> list[str]:
        """The files of `table` that may hold rows in [low, high], by their names' bounds."""
        return [
            str(part.path)
            for part in part_files(self.directory, table)
            if part.low_ns <= high and part.high_ns >= low
        ]

    def _old(self, parts: list[PartFile]) -> dict[Path, Lacking]:
        """The flows files among `parts` written before some of `LATE_FLOW_COLUMNS`, with the
        ones each lacks."""
        return self._old_paths([p.path for p in parts])

    def _old_paths(self, paths: list[Path]) -> dict[Path, Lacking]:
        unknown = [str(p) for p in paths if str(p) not in self._lacking]
        if unknown:
            rows = self._query(
                f"SELECT DISTINCT file_name, name FROM parquet_schema(?)"
                f" WHERE name IN ({_LATE_NAMES})",
                [unknown],
                "flows",
                _NO_TIME,
            )
            having: dict[str, set[str]] = {}
            for row in rows:
                having.setdefault(str(row["file_name"]), set()).add(str(row["name"]))
            with self._lock:
                if len(self._lacking) + len(unknown) > SCHEMA_CACHE_MAX:
                    cached = self._lacking.items()  # drop the files retention deleted
                    self._lacking = {k: v for k, v in cached if Path(k).exists()}
                for name in unknown:
                    if Path(name).exists():  # not cached when retention took it meanwhile
                        found = having.get(name, set())
                        self._lacking[name] = tuple(c for c in LATE_FLOW_COLUMNS if c not in found)
        return {p: lacking for p in paths if (lacking := self._lacking.get(str(p), ()))}

    def _refresh(self, files: list[str]) -> list[str]:
        """A file list without the files retention deleted since it was made."""
        return [f for f in files if Path(f).exists()]

    def _twins(self, parts: list[PartFile]) -> list[str] | None:
        """The `flows_by_resp` twins of flows files; None when one is missing (a store
        written without them): then the responder side is read from the flows files."""
        twins = [str(p.path.parents[2] / BY_RESP / p.path.parent.name / p.path.name)
                 for p in parts]  # fmt: skip
        return twins if all(Path(t).exists() for t in twins) else None

    def _query(
        self, sql: str, params: Sequence[object], table: str, span: tuple[int, int]
    ) -> list[dict[str, Any]]:
        """Rows as dicts; interrupted after `timeout_s`. Starts over once with a fresh file
        list when a file vanished (retention) under it."""
        for attempt in (1, 2):
            with self._lock:
                cursor = self._db.cursor()
            timer = threading.Timer(self.timeout_s, cursor.interrupt)
            timer.start()
            try:
                result = cursor.execute(sql, list(params))
                names = [d[0] for d in result.description or ()]
                return [dict(zip(names, row, strict=True)) for row in result.fetchall()]
            except duckdb.InterruptException:
                raise HistoryError(
                    f"the query took longer than {self.timeout_s:g} s: narrow the time range"
                    " or the filter",
                    timed_out=True,
                ) from None
            except duckdb.IOException:
                if attempt == 2:
                    raise
                params = [self._refresh(p) if isinstance(p, list) else p for p in params]
            finally:
                timer.cancel()
                cursor.close()
        raise AssertionError("unreachable")


def _matching(
    files: list[PartFile],
    low: int,
    high: int,
    flt: FlowFilter,
    twins: list[str] | None = None,
    old: Mapping[Path, Lacking] | None = None,
) -> tuple[str, list[object]]:
    """A subquery of the flows in `files` that overlap [low, high] and pass `flt`, and its
    parameters. An `ip` filter becomes two scans joined by UNION ALL: the host as originator
    (and not responder) in `files`, sorted by originator, and as responder in `twins`, the
    same rows sorted by responder (`flows_by_resp`): each is a conjunction DuckDB pushes into
    the Parquet reader and prunes row groups with, where `orig OR resp` would read every
    column of every row. The time test is left out for the files that lie inside the range
    by their names (reading two columns of every row for nothing). A `side` column says which
    branch a row came from. The files in `old` lack some of `LATE_FLOW_COLUMNS`: they are read
    apart, through a subquery that adds them (null), and the branches joined by name."""
    sides: tuple[IpSide | None, ...] = ("orig_only", "resp") if flt.ip is not None else (None,)
    groups: dict[tuple[bool, Lacking], list[int]] = {}
    for i, f in enumerate(files):
        timed = not (f.low_ns >= low and f.high_ns <= high)
        groups.setdefault((timed, (old or {}).get(f.path, ())), []).append(i)
    branches: list[str] = []
    params: list[object] = []
    for side in sides:
        condition, values = flt.where(side)
        names = twins if side == "resp" and twins else [str(f.path) for f in files]
        for (timed, lacking), chosen in sorted(groups.items()):
            test = f"last_ns >= ? AND first_ns <= ? AND {condition}" if timed else condition
            branches.append(
                f"SELECT *, '{side or 'any'}' AS side FROM {_reader(lacking)} WHERE {test}"
            )
            params += [[names[i] for i in chosen], *((low, high) if timed else ()), *values]
    return "(" + " UNION ALL BY NAME ".join(branches) + ")", params


def _reader(lacking: Lacking) -> str:
    """A scan of the files bound to its `?`, with their names and row numbers, and the late
    columns they lack (written before those columns) as nulls."""
    extra = "".join(f", NULL::{LATE_FLOW_COLUMNS[name]} AS {name}" for name in lacking)
    return f"(SELECT *, filename, file_row_number{extra} FROM read_parquet(?))"


def _minutes(sensors: Sequence[str] | None, by_name: bool = False) -> tuple[str, str, list[object]]:
    """The scan of host or app minute files bound to its `?`, a test to add to its WHERE and
    the test's parameters: no test without `sensors`; with them, the rows of those sensors.
    With `sensors` or `by_name`, the files are read by name so that those written before the
    `sensor` column read it null."""
    if sensors is None and not by_name:
        return "read_parquet(?)", "", []
    scan = "read_parquet(?, union_by_name = true)"
    if sensors is None:
        return scan, "", []
    if not sensors:  # a user limited to no sensor
        return scan, " AND FALSE", []
    return scan, " AND list_contains(?::VARCHAR[], sensor)", [list(sensors)]


def _range(from_ns: int | None, to_ns: int | None) -> tuple[int, int]:
    low = _NO_TIME[0] if from_ns is None else from_ns
    high = _NO_TIME[1] if to_ns is None else to_ns
    if high < low:
        raise HistoryError("to is before from")
    return low, high


def _flow(row: dict[str, Any]) -> Flow:
    return msgspec.convert(row, Flow)
