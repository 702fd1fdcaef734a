"""The REST API's statistics views: plain dicts made from a `StatsSnapshot`, the capture status
and history rows (`HISTORY_DTYPE`, as `StatsSeries.history(seconds)` returns them).

Pure functions: no clock is read (`timeline` takes `now_s`), nothing is cached.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import numpy as np

from leireye.ring.status import CaptureStatus
from leireye.stats.layout import StatsSnapshot, TopAddress, TopPort
from leireye.web.encode import iso_ms
from leireye.web.statusview import capture_view

Metric = Literal["packets", "bytes"]

INTERVALS: Final = {"1s": 1, "10s": 10, "1m": 60}
"""The timeline intervals the API accepts, by their query-string spelling."""
_LABELS: Final = {seconds: label for label, seconds in INTERVALS.items()}


def parse_interval(text: str) -> int:
    """ "1s", "10s" or "1m" as seconds; ValueError naming the accepted values otherwise."""
    seconds = INTERVALS.get(text)
    if seconds is None:
        accepted = ", ".join(f'"{label}"' for label in INTERVALS)
        raise ValueError(f"interval must be one of {accepted}, not {text!r}")
    return seconds


def interval_label(interval_s: int) -> str:
    """60 -> "1m", 10 -> "10s"; any other number of seconds as "<n>s"."""
    return _LABELS.get(interval_s, f"{interval_s}s")


def _iso(ns: int) -> str | None:
    return iso_ms(ns) if ns > 0 else None


def summary(snapshot: StatsSnapshot, status: CaptureStatus) -> dict[str, Any]:
    """Totals, rates and losses since the stats process started, and what the capture does.

    `updated_at`/`started_at` are ISO-8601 UTC (milliseconds, Z) or None before anything
    happened; `uptime_s` is the stats' age at its last update; `kernel_drops`/`if_drops` are the
    capture's counters as the stats process last saw them.
    """
    published = snapshot.timestamp_ns > 0
    uptime_ns = snapshot.timestamp_ns - snapshot.started_ns if published else 0
    capture = capture_view(status)
    return {
        "packets_total": snapshot.packets_total,
        "bytes_total": snapshot.bytes_total,
        "packets_per_second": snapshot.packets_per_second,
        "bytes_per_second": snapshot.bytes_per_second,
        "kernel_drops": snapshot.kernel_drops,
        "if_drops": snapshot.if_drops,
        "ring_lost": snapshot.ring_lost,
        "decode_errors": snapshot.decode_errors,
        "uptime_s": max(0, uptime_ns) // 1_000_000_000,
        "top_seconds": snapshot.top_seconds,
        "updated_at": _iso(snapshot.timestamp_ns),
        "is_capturing": capture.is_capturing,
        "state": capture.state,
        "interface": capture.interface,
        "bpf": capture.bpf,
        "started_at": capture.started_at,
    }


def protocols(snapshot: StatsSnapshot) -> dict[str, Any]:
    """Packets by protocol label and by application label: per second (the last second) and
    totals since start. Only non-zero entries, in enum order; packets without an application
    are left out of `applications`."""
    return {
        "protocols": {
            "per_second": dict(snapshot.protocols),
            "total": dict(snapshot.protocols_total),
        },
        "applications": {"per_second": dict(snapshot.apps), "total": dict(snapshot.apps_total)},
    }


def _address(entry: TopAddress) -> dict[str, Any]:
    return {"address": entry.address, "packets": entry.packets, "bytes": entry.bytes}


def _port(entry: TopPort) -> dict[str, Any]:
    return {
        "protocol": entry.protocol,
        "port": entry.port,
        "packets": entry.packets,
        "bytes": entry.bytes,
    }


def top(snapshot: StatsSnapshot) -> dict[str, Any]:
    """The heaviest sources, destinations and destination ports over the last `window_s`
    complete seconds, heaviest first. `complete` is False when a busy second was cut to its
    heaviest keys, so the lists are estimates."""
    return {
        "window_s": snapshot.top_seconds,
        "complete": snapshot.top_complete,
        "sources": [_address(e) for e in snapshot.top_sources],
        "destinations": [_address(e) for e in snapshot.top_destinations],
        "ports": [_port(e) for e in snapshot.top_ports],
    }


def timeline(
    history: np.ndarray,
    interval_s: int,
    metric: Metric,
    now_s: int,
    seconds: int | None = None,
) -> dict[str, Any]:
    """`metric` summed per bucket of `interval_s` seconds, oldest first.

    Buckets start at multiples of `interval_s` (Unix seconds). The range covered runs from
    `now_s - seconds` (or, without `seconds`, from the oldest used row) to `now_s - 1`: `now_s`
    is the open second, not shown. Rows outside it and unused rows (`second == -1`) are ignored,
    seconds without a row inside it count 0, so a gap shows as zeros. Rows may come in any
    order (the series ring itself will do). Each point:
    `{"t": bucket start, "value": sum, "drops": kernel_drops + ring_lost, "seconds": n}` where
    `seconds` is how many seconds of the bucket lie in the range (less than `interval_s` for a
    partial first or last bucket).
    """
    if interval_s < 1:
        raise ValueError(f"interval must be a positive number of seconds, not {interval_s}")
    if metric not in ("packets", "bytes"):
        raise ValueError(f'metric must be "packets" or "bytes", not {metric!r}')
    result: dict[str, Any] = {"interval": interval_label(interval_s), "metric": metric}
    rows = history[history["second"] >= 0]
    last = now_s - 1
    if seconds is not None:
        first = now_s - seconds
    elif len(rows):
        first = int(rows["second"].min())
    else:
        return result | {"points": []}
    rows = rows[(rows["second"] >= first) & (rows["second"] <= last)]
    if first > last:
        return result | {"points": []}
    start = first // interval_s * interval_s
    count = (last // interval_s * interval_s - start) // interval_s + 1
    which = (rows["second"] - start) // interval_s
    values = np.zeros(count, dtype=np.uint64)
    drops = np.zeros(count, dtype=np.uint64)
    np.add.at(values, which, rows[metric])
    np.add.at(drops, which, rows["kernel_drops"] + rows["ring_lost"])
    starts = start + interval_s * np.arange(count, dtype=np.int64)
    covered = np.minimum(starts + interval_s - 1, last) - np.maximum(starts, first) + 1
    points = [
        {"t": t, "value": v, "drops": d, "seconds": c}
        for t, v, d, c in zip(
            starts.tolist(), values.tolist(), drops.tolist(), covered.tolist(), strict=True
        )
    ]
    return result | {"points": points}
