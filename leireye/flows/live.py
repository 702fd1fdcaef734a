"""The flow process's pure core: the flow table and the host table fed the same batches.

`feed` takes a batch of ring records (and their kept bytes); `expire` moves time on; ended flow
rows, the flows started since the last look (for the event feed) and the closed minutes are
taken by the caller, which writes them out (sink, shared memory). No clock, no I/O.
"""

from __future__ import annotations

import numpy as np

from leireye.config import FlowsConfig

from .hosts import HostTable
from .model import AppMinute, HostMinute
from .table import FlowTable, distinct


class LiveState:
    def __init__(self, config: FlowsConfig, *, uid_prefix: int | None = None) -> None:
        self.config = config
        self.table = FlowTable(config, uid_prefix=uid_prefix)
        self.hosts = HostTable(config.max_hosts)
        self._started: list[np.ndarray] = []

    def feed(self, records: np.ndarray, raw: np.ndarray | None = None) -> None:
        table = self.table
        table.ingest(records, raw)
        if table.ip_columns:
            self.hosts.ingest(table.ip_columns)
            table.ip_columns = {}
        started = table.take_started()
        if len(started):
            self.hosts.add_peers(*table.endpoints(started))
            self._started.append(started)
        if table.names:
            self.hosts.add_names(table.names)
            table.names = []

    def expire(self, now_ns: int | None = None) -> None:
        self.table.expire(now_ns)
        self.hosts.close_quiet_minute(self.table.now_ns if now_ns is None else now_ns)

    def take_ended(self) -> np.ndarray:
        rows = self.table.take_ended()
        self.hosts.add_ports(rows)
        return rows

    def take_started(self) -> np.ndarray:
        """Slots of the flows started since the last call that are still active."""
        slots = np.concatenate(self._started) if self._started else np.empty(0, np.int64)
        self._started = []
        slots = distinct(slots)  # a slot freed and taken again: one flow, one event
        live: np.ndarray = slots[self.table.used[slots]]
        return live

    def take_minutes(self, flush: bool = False) -> list[tuple[list[HostMinute], list[AppMinute]]]:
        return self.hosts.take_minutes(flush)

    def end_all(self) -> None:
        self.table.end_all()
