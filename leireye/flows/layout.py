"""The flow store's files: their names, partitions and the loss counts beside them.

The layout, and why it is so, is described in `leireye.flows.store`, which writes these files;
`leireye.flows.history` reads them; `leireye.flows.columns` holds their columns. Nothing here
imports pyarrow: the web workers read with DuckDB alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from leireye.flows.model import Flow

TABLES: Final = ("flows", "hosts", "apps")
# The flows again, sorted by responder: a one-host query finds the host as responder by the
# row-group statistics too (twice the bytes of the flows, for 10-100x less read).
BY_RESP: Final = "flows_by_resp"
DATA_DIRS: Final = (*TABLES, BY_RESP)
PENDING_FILE: Final = "pending.json"
LOSSES_FILE: Final = "losses.json"
HOUR_NS: Final = 3600 * 10**9
MERGED: Final = "merged"

# The columns a `Flow` has (the files hold derived ones too: keys, duration, totals).
FLOW_FIELDS: Final = tuple(f for f in Flow.__struct_fields__)
# The flows columns added after the first files were written, with their DuckDB types: a file
# written before one of them lacks it, and reads it as null.
LATE_FLOW_COLUMNS: Final = {"sensor": "VARCHAR", "icmp_id": "INTEGER"}


def hour_name(ns: int) -> str:
    """The partition directory of a time: `hour=YYYYMMDDHH` (UTC)."""
    return "hour=" + dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y%m%d%H")


def hour_start_ns(name: str) -> int:
    """The start of the hour a partition directory names (ValueError for another name)."""
    stamp = dt.datetime.strptime(name.removeprefix("hour="), "%Y%m%d%H").replace(tzinfo=dt.UTC)
    return int(stamp.timestamp()) * 10**9


@dataclass(frozen=True)
class PartFile:
    """A data file and the time bounds its name gives: a flush's `part-<low>-<high>-<pid>-<n>`,
    an hour's merge of them `merged-<low>-<high>`, or a `late-<low>-<high>-<pid>-<n>` (rows
    filed into an hour after its merge)."""

    path: Path
    low_ns: int
    high_ns: int
    kind: str = "part"

    @classmethod
    def parse(cls, path: Path) -> PartFile | None:
        parts = path.name.removesuffix(".parquet").split("-")
        if not path.name.endswith(".parquet"):
            return None
        flushed = parts[0] in ("part", "late") and len(parts) == 5
        if not (flushed or (parts[0] == MERGED and len(parts) == 3)):
            return None
        try:
            return cls(path, int(parts[1]), int(parts[2]), parts[0])
        except ValueError:
            return None


def merged_name(low_ns: int, high_ns: int) -> str:
    return f"{MERGED}-{low_ns}-{high_ns}.parquet"


def hour_files(folder: Path) -> list[PartFile]:
    """The files a reader takes in one hour's directory: its merged file and late files when it
    has been merged (the parts it merged are ignored until they are deleted), else its parts."""
    found = [f for f in map(PartFile.parse, sorted(folder.iterdir())) if f is not None]
    if any(f.kind == MERGED for f in found):
        return [f for f in found if f.kind != "part"]
    return found


def part_files(directory: Path, table: str) -> Iterator[PartFile]:
    """Every data file of `table` a reader takes, oldest hour first."""
    root = directory / table
    with contextlib.suppress(FileNotFoundError):
        for hour in sorted(root.iterdir()):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                yield from hour_files(hour)


def read_losses(directory: Path) -> dict[str, int]:
    """Rows lost by crashes so far, per table (with "crashes": how many starts found some)."""
    try:
        data = json.loads((directory / LOSSES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: int(v) for k, v in data.items() if isinstance(v, int)}
