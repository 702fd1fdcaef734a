"""The sensor's host and application minutes, read for the publisher from its flow store.

Why from the store's files, not from shared memory: the flow process already writes every
closed minute (`HostMinute`, `AppMinute`: exact, counted from every packet it read, whether
packets are published or not) to `hosts/` and `apps/` Parquet files (`leireye.flows.store`)
every `history.flush_s`. Those files are immutable once renamed into place, stay for
`history.flows_days`, and are readable by the publisher (both run as `capture.user`, the
store's owner). Reading them changes nothing in the flow process, which so never waits for the
publisher nor holds a minute for it; a publisher that is down or cut off from NATS for hours
sends the minutes it missed when it comes back, as long as the store keeps them. A ring of
minutes in the flow view's segment would instead need a size for rows of any length (up to
`PEERS_MAX` peers each) and lose what it overwrote. The cost: a minute reaches the central
`history.flush_s` (30 s by default) after it closed at the latest, which a per-minute chart
does not notice.

Which files are new: the flow process writes one file at a time, each renamed into place
after the previous, so their modification times follow the order they were written in; but
the kernel stamps them with a coarse clock (a tick, ~4 ms), so files written one after the
other may share one mtime. The cursor is the mtime of the last file sent and the paths (under
the store) of the files of that mtime sent; a file is new when its mtime is later, or the same
and its path not among those. The cursor is kept in `<history.dir>/fleet-minutes.json`
(0640, written by the publisher under a temporary name and renamed), so a restarted publisher
or sensor goes on after the last file it sent; without one it starts with the files written
since `since_ns` (the side publisher gives now minus the flows stream's `max_age`: older rows
would expire from the stream anyway). A scan stats each hour's directory and lists only those
whose own mtime is not before the cursor's: renaming a file into a directory moves its mtime
on, past the file's (the flow store never changes an old hour's `hosts/` or `apps/`
directory; retention deletes it whole). A file
gone (retention) or unreadable between its listing and its read is counted missed by the
caller. The wall clock stepped back would make the files written next look old: they are
skipped, never sent twice.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow.parquet as pq

from leireye.flows.model import AppMinute, HostMinute

CURSOR_FILE: Final = "fleet-minutes.json"
TABLES: Final = ("hosts", "apps")
FILE_MODE: Final = 0o640


@dataclass(frozen=True, order=True)
class Mark:
    """A minute file: its modification time (ns) and its path under the store."""

    mtime_ns: int
    name: str


class MinuteFiles:
    def __init__(self, directory: Path, since_ns: int) -> None:
        self.directory = directory
        self.mtime_ns, self.sent = self._load() or (since_ns, set())

    def is_new(self, mark: Mark) -> bool:
        return mark.mtime_ns > self.mtime_ns or (
            mark.mtime_ns == self.mtime_ns and mark.name not in self.sent
        )

    def new(self, limit: int = 64) -> list[Mark]:
        """The files after the cursor, oldest first, at most `limit`."""
        found: list[Mark] = []
        for table in TABLES:
            with contextlib.suppress(FileNotFoundError):
                for hour in os.scandir(self.directory / table):
                    if not hour.name.startswith("hour="):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        if hour.stat().st_mtime_ns < self.mtime_ns:
                            continue  # nothing renamed into it since the cursor's file
                        for entry in os.scandir(hour.path):
                            if entry.name.startswith(".") or not entry.name.endswith(".parquet"):
                                continue
                            try:
                                mtime = entry.stat().st_mtime_ns
                            except FileNotFoundError:
                                continue
                            mark = Mark(mtime, f"{table}/{hour.name}/{entry.name}")
                            if self.is_new(mark):
                                found.append(mark)
        return sorted(found)[:limit]

    def read(self, mark: Mark) -> tuple[list[HostMinute], list[AppMinute]]:
        """The rows of one file (OSError when it is gone, pyarrow's error when unreadable)."""
        rows: list[dict[str, Any]] = pq.ParquetFile(self.directory / mark.name).read().to_pylist()
        if mark.name.startswith("hosts/"):
            return [_host(row) for row in rows], []
        return [], [_app(row) for row in rows]

    def done(self, mark: Mark) -> None:
        """`mark` is sent: the cursor moves to it, on disk too."""
        if mark.mtime_ns != self.mtime_ns:
            self.mtime_ns, self.sent = mark.mtime_ns, set()
        self.sent.add(mark.name)
        path = self.directory / CURSOR_FILE
        temporary = path.with_name(f".{CURSOR_FILE}.{os.getpid()}.part")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            data = {"mtime_ns": self.mtime_ns, "sent": sorted(self.sent)}
            os.write(fd, json.dumps(data).encode())
        finally:
            os.close(fd)
        os.rename(temporary, path)

    def _load(self) -> tuple[int, set[str]] | None:
        try:
            data = json.loads((self.directory / CURSOR_FILE).read_text())
            return int(data["mtime_ns"]), {str(name) for name in data["sent"]}
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _host(row: dict[str, Any]) -> HostMinute:
    return HostMinute(
        minute_ns=row["minute_ns"],
        ip=row["ip"],
        pkts_sent=row["pkts_sent"],
        bytes_sent=row["bytes_sent"],
        pkts_recv=row["pkts_recv"],
        bytes_recv=row["bytes_recv"],
        peers=row["peers"] or [],
        apps=dict(row["apps"] or []),
        ports_served=row["ports_served"] or [],
        names=row["names"] or [],
    )


def _app(row: dict[str, Any]) -> AppMinute:
    return AppMinute(
        minute_ns=row["minute_ns"], app=row["app"], packets=row["packets"], bytes=row["bytes"]
    )
