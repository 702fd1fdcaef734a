from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.config import StatsConfig
from leireye.record import F_HAS_ADDR, F_HAS_PORTS, RECORD_DTYPE
from leireye.stats.accumulator import StatsAccumulator

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
CONFIG = StatsConfig(history_s=60, top_window_s=5, top_n=4)


def make_records(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.zeros(n, RECORD_DTYPE)
    r["proto"] = rng.integers(0, 12, n)  # a few values past the last Proto too
    r["app"] = rng.integers(0, 32, n)
    r["wire_len"] = rng.integers(0, 70_000, n)
    r["error"] = rng.integers(0, 3, n) * (rng.random(n) < 0.1)
    r["flags"] = rng.choice([0, F_HAS_ADDR, F_HAS_ADDR | F_HAS_PORTS], n)
    r["src_hi"] = rng.integers(0, 2, n) << 63
    r["src_lo"] = rng.integers(0, 6, n)
    r["dst_lo"] = rng.integers(0, 6, n)
    r["dst_port"] = rng.integers(0, 4, n)
    return r


batches = st.tuples(
    st.integers(0, 400),  # records
    st.integers(0, 2**32),  # seed
    st.lists(st.integers(0, 400), max_size=8),  # cut points
    st.lists(st.integers(0, 1_500_000_000), min_size=9, max_size=9),  # arrival gaps, ns
)


def feed(n: int, seed: int, cuts: list[int], gaps: list[int]) -> tuple[StatsAccumulator, int]:
    r = make_records(n, seed)
    acc = StatsAccumulator(CONFIG, T0)
    now = T0
    bounds = [0, *sorted(min(c, n) for c in cuts), n]
    for part, gap in zip(range(len(bounds) - 1), gaps, strict=False):
        now += gap
        acc.ingest(r[bounds[part] : bounds[part + 1]], now)
    return acc, now


@settings(max_examples=150, deadline=None)
@given(batches)
def test_totals_equal_the_inputs_for_any_split(case: tuple[int, int, list[int], list[int]]) -> None:
    n, seed, cuts, gaps = case
    r = make_records(n, seed)
    acc, now = feed(n, seed, cuts, gaps)
    snap = acc.snapshot(now)
    assert snap.packets_total == n
    assert snap.bytes_total == int(r["wire_len"].sum())
    assert sum(snap.protocols_total.values()) == n
    assert sum(snap.apps_total.values()) == int(np.count_nonzero((r["app"] > 0) & (r["app"] < 29)))
    assert snap.decode_errors == int(np.count_nonzero(r["error"]))
    rows = acc.last_seconds(CONFIG.history_s, include_current=True)
    assert int(rows["packets"].sum()) == n  # 9 gaps of <= 1.5 s stay within the series
    assert int(rows["bytes"].sum()) == snap.bytes_total
    assert (rows["proto"].sum(axis=1) == rows["packets"]).all()


@settings(max_examples=150, deadline=None)
@given(batches)
def test_the_window_holds_what_arrived_in_the_last_second(
    case: tuple[int, int, list[int], list[int]],
) -> None:
    n, seed, cuts, gaps = case
    acc, now = feed(n, seed, cuts, gaps)
    bounds = [0, *sorted(min(c, n) for c in cuts), n]
    arrivals = np.cumsum(gaps[: len(bounds) - 1]) + T0
    recent = sum(
        bounds[i + 1] - bounds[i] for i, t in enumerate(arrivals) if now - NS < int(t) <= now
    )
    snap = acc.snapshot(now)
    assert snap.packets_per_second == recent
    assert sum(snap.protocols.values()) == recent


@settings(max_examples=100, deadline=None)
@given(batches)
def test_top_tables_do_not_depend_on_the_split(case: tuple[int, int, list[int], list[int]]) -> None:
    n, seed, cuts, _ = case
    r = make_records(n, seed)
    whole = StatsAccumulator(CONFIG, T0)
    whole.ingest(r, T0 + 1)
    split, _ = feed(n, seed, cuts, [1] + [0] * 8)  # same second, any number of batches
    a, b = whole.snapshot(T0 + NS), split.snapshot(T0 + NS)
    assert (a.top_sources, a.top_destinations, a.top_ports) == (
        b.top_sources,
        b.top_destinations,
        b.top_ports,
    )
