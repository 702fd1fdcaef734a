"""The statistics views over hand-built snapshots and history rows: a gap, partial buckets, the
series ring wrapped around, and the JSON shapes the REST API serves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leireye.record import Proto
from leireye.ring.status import CaptureState, CaptureStatus
from leireye.stats.layout import (
    HISTORY_DTYPE,
    StatsSnapshot,
    TopAddress,
    TopPort,
    last_seconds,
)
from leireye.web.statsview import (
    interval_label,
    parse_interval,
    protocols,
    summary,
    timeline,
    top,
)

STARTED_NS = 1_705_746_600_000_000_000  # 2024-01-20T10:30:00Z


def _snapshot(**changes: object) -> StatsSnapshot:
    fields: dict[str, object] = {
        "timestamp_ns": STARTED_NS + 90_500_000_000,
        "started_ns": STARTED_NS,
        "packets_total": 1567,
        "bytes_total": 2_000_000,
        "packets_per_second": 45,
        "bytes_per_second": 125_000,
        "protocols": {"TCP": 35, "UDP": 10},
        "apps": {"DNS": 3},
        "protocols_total": {"TCP": 1200, "UDP": 367},
        "apps_total": {"DNS": 300, "TLS": 700},
        "kernel_drops": 7,
        "if_drops": 1,
        "ring_lost": 2,
        "decode_errors": 4,
        "top_seconds": 60,
        "top_complete": True,
        "top_sources": [TopAddress("10.0.0.1", 0, 0xFFFF_0A00_0001, 10, 1000)],
        "top_destinations": [TopAddress("fd00::2", 0xFD00 << 48, 2, 8, 800)],
        "top_ports": [TopPort("TCP", 443, 9, 900)],
    }
    fields.update(changes)
    return StatsSnapshot(**fields)  # type: ignore[arg-type]


def _history(
    seconds: dict[int, tuple[int, int]], drops: dict[int, int] | None = None
) -> np.ndarray:
    """Rows in the given order: second -> (packets, bytes); `drops` as kernel drops."""
    rows = np.zeros(len(seconds), dtype=HISTORY_DTYPE)
    for row, (second, (packets, size)) in zip(rows, seconds.items(), strict=True):
        row["second"], row["packets"], row["bytes"] = second, packets, size
        row["proto"][Proto.TCP] = packets
        row["kernel_drops"] = (drops or {}).get(second, 0)
    return rows


def test_summary() -> None:
    status = CaptureStatus(
        state=CaptureState.CAPTURING,
        capturing=True,
        interface="eth0",
        bpf="not port 22",
        started_at_ns=STARTED_NS,
    )
    view = summary(_snapshot(), status)
    assert view == {
        "packets_total": 1567,
        "bytes_total": 2_000_000,
        "packets_per_second": 45,
        "bytes_per_second": 125_000,
        "kernel_drops": 7,
        "if_drops": 1,
        "ring_lost": 2,
        "decode_errors": 4,
        "uptime_s": 90,
        "top_seconds": 60,
        "updated_at": "2024-01-20T10:31:30.500Z",
        "is_capturing": True,
        "state": "capturing",
        "interface": "eth0",
        "bpf": "not port 22",
        "started_at": "2024-01-20T10:30:00.000Z",
    }
    json.dumps(view)


def test_summary_before_anything_happened() -> None:
    view = summary(_snapshot(timestamp_ns=0, started_ns=0), CaptureStatus())
    assert view["updated_at"] is None and view["started_at"] is None
    assert view["uptime_s"] == 0 and view["is_capturing"] is False and view["state"] == "idle"


def test_protocols() -> None:
    assert protocols(_snapshot()) == {
        "protocols": {"per_second": {"TCP": 35, "UDP": 10}, "total": {"TCP": 1200, "UDP": 367}},
        "applications": {"per_second": {"DNS": 3}, "total": {"DNS": 300, "TLS": 700}},
    }


def test_top() -> None:
    assert top(_snapshot(top_complete=False)) == {
        "window_s": 60,
        "complete": False,
        "sources": [{"address": "10.0.0.1", "packets": 10, "bytes": 1000}],
        "destinations": [{"address": "fd00::2", "packets": 8, "bytes": 800}],
        "ports": [{"protocol": "TCP", "port": 443, "packets": 9, "bytes": 900}],
    }


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1), ("10s", 10), ("1m", 60)])
def test_parse_interval(text: str, seconds: int) -> None:
    assert parse_interval(text) == seconds
    assert interval_label(seconds) == text


@pytest.mark.parametrize("text", ["", "5s", "60s", "1h", "1M", " 1s", "10"])
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(ValueError, match='one of "1s", "10s", "1m"'):
        parse_interval(text)


def test_one_second_points_with_a_gap() -> None:
    history = _history({100: (5, 500), 101: (6, 600), 103: (8, 800)}, drops={103: 2})
    view = timeline(history, 1, "packets", now_s=104)
    assert view["interval"] == "1s" and view["metric"] == "packets"
    assert [(p["t"], p["value"], p["drops"]) for p in view["points"]] == [
        (100, 5, 0),
        (101, 6, 0),
        (102, 0, 0),  # the gap counts as 0
        (103, 8, 2),
    ]
    json.dumps(view)


def test_ten_second_buckets_are_aligned_and_partial_ones_say_so() -> None:
    history = _history({s: (1, 100) for s in range(95, 123)})
    view = timeline(history, 10, "bytes", now_s=123)
    assert view["points"] == [
        {"t": 90, "value": 500, "drops": 0, "seconds": 5},  # 95..99
        {"t": 100, "value": 1000, "drops": 0, "seconds": 10},
        {"t": 110, "value": 1000, "drops": 0, "seconds": 10},
        {"t": 120, "value": 300, "drops": 0, "seconds": 3},  # 120..122; 123 is still open
    ]


def test_minute_buckets_and_a_requested_window_with_no_rows() -> None:
    history = _history({125: (4, 40), 179: (6, 60), 180: (1, 10)})
    view = timeline(history, 60, "packets", now_s=200, seconds=140)
    assert view["interval"] == "1m"
    assert [(p["t"], p["value"], p["seconds"]) for p in view["points"]] == [
        (60, 0, 60),  # 60..119: asked for, never used
        (120, 10, 60),
        (180, 1, 20),
    ]


def test_unused_rows_and_rows_outside_the_range_are_ignored() -> None:
    history = _history({-1: (99, 99), 50: (1, 1), 51: (2, 2), 52: (3, 3)})
    history[0]["second"] = -1
    points = timeline(history, 1, "packets", now_s=52)["points"]
    assert [(p["t"], p["value"]) for p in points] == [(50, 1), (51, 2)]  # 52 is the open second
    assert timeline(history[:1], 1, "packets", now_s=52)["points"] == []
    assert timeline(history[:0], 10, "bytes", now_s=52) == {
        "interval": "10s",
        "metric": "bytes",
        "points": [],
    }


def test_the_series_ring_wrapped_around() -> None:
    """Row `s % rows` holds second `s`: after 105 seconds in a 10-row ring, the rows are stored
    100..104 then 95..99, and a stale row from the previous lap is dropped by last_seconds."""
    ring = np.zeros(10, dtype=HISTORY_DTYPE)
    ring["second"] = -1
    for second in range(86, 105):
        row = ring[second % 10]
        row["second"], row["packets"], row["bytes"] = second, second, second * 10
    ring[3]["second"] = 83  # a row the writer has not reached again this lap
    rows = last_seconds(ring, current_second=105, seconds=10)
    assert rows["second"].tolist() == [95, 96, 97, 98, 99, 100, 101, 102, 104]  # 103 stale
    view = timeline(rows, 10, "packets", now_s=105)
    assert view["points"] == [
        {"t": 90, "value": sum(range(95, 100)), "drops": 0, "seconds": 5},
        {"t": 100, "value": 100 + 101 + 102 + 104, "drops": 0, "seconds": 5},
    ]
    # the raw ring, unsorted, gives the same once the window is asked for
    assert timeline(ring, 10, "packets", now_s=105, seconds=10) == view


def test_drops_add_kernel_drops_and_ring_lost() -> None:
    history = _history({10: (1, 1), 11: (1, 1)}, drops={10: 3})
    history["ring_lost"] = [4, 5]
    points = timeline(history, 10, "packets", now_s=12)["points"]
    assert points == [{"t": 10, "value": 2, "drops": 12, "seconds": 2}]


def test_bad_arguments() -> None:
    history = _history({1: (1, 1)})
    with pytest.raises(ValueError, match="metric"):
        timeline(history, 1, "frames", now_s=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval"):
        timeline(history, 0, "packets", now_s=2)
