"""The statistics core: batches of records in, counters, rates, a per-second series and top
tables out. No shared memory, no processes, no clock: every call is given the time.

Which clock
-----------
Records carry their capture time `ts_ns`, but the statistics are bucketed by *arrival*: the time
at which the stats process read the batch, passed in as `now_ns`. A pcap replayed today carries
timestamps from the day it was recorded, and at `speed: max` a minute of capture arrives in a
fraction of a second; bucketing by capture time would put today's traffic into seconds long gone
(or into one second), and a live console must show what the sensor sees now. Live, arrival lags
capture by at most one poll interval (`update_ms` plus the capture's own batching), so the two
clocks agree to within about a tenth of a second.

The time given must not go backwards; a smaller value is treated as the last one. The process
shell passes a monotonic clock anchored to the Unix epoch once at start, so a wall-clock step
does not tear the series, and the second numbers still read as Unix seconds.

What is kept
------------
- Totals since start: packets, bytes (`wire_len`), packets by `Proto` and by `App`, decode
  errors, ring laps, kernel and interface drops.
- The rate window: the batches that arrived in `(now - 1 s, now]`, each as one entry with its
  sums, kept in a deque with running totals; an update adds one entry and drops the expired
  ones, so the rates are exact sums over the window, not a decaying average.
- The series: `history_s + 1` rows of `HISTORY_DTYPE` in a ring indexed by `second % rows`, the
  last row being the open second; `history_s` closed seconds are always available. Rows touched
  since the last `take_dirty` are flagged so a publisher copies only those.
- Top sources, destinations and service ports over the last `top_window_s` closed seconds
  (`leireye.stats.topn`; a packet counts under its service's port, `topn.service_ports`).

Drops come from the capture's cumulative counters (`observe_drops`): the first observation is
the baseline (drops are counted from when stats started, like packets), a smaller value than
the last means the capture restarted, and the new value is then all new drops.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import numpy as np

from leireye.config import StatsConfig
from leireye.record import F_HAS_ADDR, F_HAS_PORTS
from leireye.stats.layout import (
    HISTORY_DTYPE,
    N_APP,
    N_PROTO,
    StatsSnapshot,
    decode_frame,
    frame_dtype,
    last_seconds,
)
from leireye.stats.topn import TopWindow, service_ports

NS: Final = 1_000_000_000
RATE_WINDOW_NS: Final = NS


def _label_counts(column: np.ndarray, size: int) -> np.ndarray:
    """Packets per enum value; values this code does not know count under 0 (OTHER / NONE)."""
    counts = np.bincount(column, minlength=size).astype(np.uint64)
    if len(counts) > size:
        counts[0] += counts[size:].sum()
        counts = counts[:size]
    return counts


class _Entry:
    __slots__ = ("app", "bytes", "packets", "proto", "t_ns")

    def __init__(self, t_ns: int) -> None:
        self.t_ns = t_ns
        self.packets = 0
        self.bytes = 0
        self.proto = np.zeros(N_PROTO, np.uint64)
        self.app = np.zeros(N_APP, np.uint64)


class StatsAccumulator:
    def __init__(self, config: StatsConfig, start_ns: int) -> None:
        self.config = config
        self.started_ns = start_ns
        self.rows = config.history_s + 1
        self._frame_dtype = frame_dtype(config.top_n)
        self._now = start_ns
        self._second = start_ns // NS
        self._start_second = self._second
        self._history = np.zeros(self.rows, HISTORY_DTYPE)
        self._history["second"] = -1
        self._history["second"][self._second % self.rows] = self._second
        self._dirty = np.ones(self.rows, dtype=bool)

        self.packets_total = 0
        self.bytes_total = 0
        self.decode_errors = 0
        self.ring_lost = 0
        self.kernel_drops = 0
        self.if_drops = 0
        self.proto_total = np.zeros(N_PROTO, np.uint64)
        self.app_total = np.zeros(N_APP, np.uint64)
        self._drops_seen: tuple[int, int] | None = None

        self._window: deque[_Entry] = deque()
        self._window_sum = _Entry(0)

        self.sources = TopWindow(config.top_window_s, config.top_n)
        self.destinations = TopWindow(config.top_window_s, config.top_n)
        self.ports = TopWindow(config.top_window_s, config.top_n)

    @property
    def current_second(self) -> int:
        return self._second

    @property
    def history(self) -> np.ndarray:
        """The series ring (`rows` rows, row `s % rows` holds second `s`). Do not modify."""
        return self._history

    def ingest(self, records: np.ndarray, now_ns: int, lost: int = 0) -> None:
        """Count a batch of `RECORD_DTYPE` rows that arrived at `now_ns`, and `lost` records the
        reader missed (ring laps)."""
        self.advance(now_ns)
        i = self._second % self.rows
        h = self._history
        n = len(records)
        if n == 0 and lost == 0:
            return
        self._dirty[i] = True
        self.ring_lost += lost
        h["ring_lost"][i] += lost
        if n == 0:
            return
        proto = _label_counts(records["proto"], N_PROTO)
        app = _label_counts(records["app"], N_APP)
        wire = records["wire_len"]
        nbytes = int(wire.sum(dtype=np.uint64))
        errors = int(np.count_nonzero(records["error"]))

        h["packets"][i] += n
        h["bytes"][i] += nbytes
        h["proto"][i] += proto
        h["app"][i] += app
        h["decode_errors"][i] += errors
        self.packets_total += n
        self.bytes_total += nbytes
        self.decode_errors += errors
        self.proto_total += proto
        self.app_total += app

        entry = self._window[-1] if self._window and self._window[-1].t_ns == self._now else None
        if entry is None:
            entry = _Entry(self._now)
            self._window.append(entry)
        for e in (entry, self._window_sum):
            e.packets += n
            e.bytes += nbytes
            e.proto += proto
            e.app += app

        flags = records["flags"]
        addr = (flags & F_HAS_ADDR) != 0
        if addr.all():
            self.sources.add(records["src_hi"], records["src_lo"], wire)
            self.destinations.add(records["dst_hi"], records["dst_lo"], wire)
        elif addr.any():
            self.sources.add(records["src_hi"][addr], records["src_lo"][addr], wire[addr])
            self.destinations.add(records["dst_hi"][addr], records["dst_lo"][addr], wire[addr])
        ports = (flags & F_HAS_PORTS) != 0
        if ports.any():
            port = service_ports(records["src_port"][ports], records["dst_port"][ports])
            key = records["proto"][ports].astype(np.uint64) << 16 | port
            self.ports.add(np.zeros(len(key), np.uint64), key, wire[ports])

    def observe_drops(self, kernel_drops: int, if_drops: int, now_ns: int) -> None:
        """The capture's cumulative `(ps_drop, ps_ifdrop)` as read at `now_ns`."""
        self.advance(now_ns)
        seen = self._drops_seen
        self._drops_seen = (kernel_drops, if_drops)
        if seen is None:
            return
        dk = kernel_drops - seen[0] if kernel_drops >= seen[0] else kernel_drops
        di = if_drops - seen[1] if if_drops >= seen[1] else if_drops
        if dk or di:
            i = self._second % self.rows
            self._history["kernel_drops"][i] += dk
            self._history["if_drops"][i] += di
            self._dirty[i] = True
            self.kernel_drops += dk
            self.if_drops += di

    def advance(self, now_ns: int) -> None:
        """Move the clock: close elapsed seconds, open empty rows, expire the rate window."""
        now = max(now_ns, self._now)
        self._now = now
        second = now // NS
        if second > self._second:
            for top in (self.sources, self.destinations, self.ports):
                top.close_second(self._second)
            first = max(self._second + 1, second - self.rows + 1)
            seconds = np.arange(first, second + 1, dtype=np.int64)
            index = seconds % self.rows
            self._history[index] = np.zeros(1, HISTORY_DTYPE)
            self._history["second"][index] = seconds
            self._dirty[index] = True
            self._second = second
        window = self._window
        horizon = now - RATE_WINDOW_NS
        total = self._window_sum
        while window and window[0].t_ns <= horizon:
            e = window.popleft()
            total.packets -= e.packets
            total.bytes -= e.bytes
            total.proto -= e.proto
            total.app -= e.app

    def take_dirty(self) -> np.ndarray:
        """Indices of the series rows changed since the last call."""
        index = np.flatnonzero(self._dirty)
        self._dirty[:] = False
        return index

    def last_seconds(self, seconds: int, include_current: bool = False) -> np.ndarray:
        return last_seconds(self._history, self._second, seconds, include_current)

    def frame(self, now_ns: int) -> np.ndarray:
        """The current state as a 0-d array of `frame_dtype(top_n)`."""
        self.advance(now_ns)
        f = np.zeros((), self._frame_dtype)
        f["timestamp_ns"] = self._now
        f["started_ns"] = self.started_ns
        f["current_second"] = self._second
        f["packets_total"] = self.packets_total
        f["bytes_total"] = self.bytes_total
        w = self._window_sum
        f["packets_per_second"] = w.packets
        f["bytes_per_second"] = w.bytes
        f["proto_pps"] = w.proto
        f["app_pps"] = w.app
        f["proto_total"] = self.proto_total
        f["app_total"] = self.app_total
        f["kernel_drops"] = self.kernel_drops
        f["if_drops"] = self.if_drops
        f["ring_lost"] = self.ring_lost
        f["decode_errors"] = self.decode_errors
        f["top_seconds"] = min(self.config.top_window_s, self._second - self._start_second)
        complete = True
        for name, top in (
            ("sources", self.sources),
            ("destinations", self.destinations),
            ("ports", self.ports),
        ):
            table, top_complete = top.top(self._second)
            complete &= top_complete
            out = f[f"top_{name}"]
            n = len(table)
            if name == "ports":
                out["proto"][:n] = table.k2 >> 16
                out["port"][:n] = table.k2 & 0xFFFF
            else:
                out["hi"][:n] = table.k1
                out["lo"][:n] = table.k2
            out["packets"][:n] = table.packets
            out["bytes"][:n] = table.bytes
            f[f"n_{name}"] = n
        f["top_complete"] = complete
        return f

    def snapshot(self, now_ns: int) -> StatsSnapshot:
        return decode_frame(self.frame(now_ns))
