from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from leireye.config import StatsConfig
from leireye.record import (
    F_HAS_ADDR,
    F_HAS_PORTS,
    RECORD_DTYPE,
    App,
    DecodeError,
    Proto,
)
from leireye.stats.accumulator import StatsAccumulator
from leireye.stats.topn import service_ports
from tests.records import ip_to_halves

NS = 1_000_000_000
T0 = 1_700_000_000 * NS  # a whole second


def records(n: int, seed: int = 0, *, hosts: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.zeros(n, RECORD_DTYPE)
    r["proto"] = rng.choice(
        [Proto.TCP, Proto.UDP, Proto.ICMP, Proto.ARP], n, p=[0.6, 0.3, 0.05, 0.05]
    )
    r["app"] = rng.choice([App.NONE, App.TLS, App.DNS, App.HTTP], n)
    r["wire_len"] = rng.integers(60, 1515, n)
    r["src_hi"] = np.where(rng.random(n) < 0.2, 0x2001_0DB8_0000_0000, 0)
    r["src_lo"] = 0xFFFF_0A00_0000 + rng.integers(0, hosts, n)
    r["dst_lo"] = 0xFFFF_0A00_0000 + rng.integers(0, hosts, n)
    r["dst_port"] = rng.choice([22, 53, 80, 443, 8080], n)
    r["src_port"] = rng.choice([0, 22, 1500, 8080, 40000, 50000, 60000], n)
    r["flags"] = F_HAS_ADDR | np.where(np.isin(r["proto"], [Proto.TCP, Proto.UDP]), F_HAS_PORTS, 0)
    r["error"] = np.where(rng.random(n) < 0.01, DecodeError.TRUNCATED, 0)
    return r


def make(**overrides: int) -> StatsAccumulator:
    return StatsAccumulator(StatsConfig(**overrides), T0)


def test_totals_by_protocol_app_and_errors() -> None:
    acc = make()
    r = records(1000)
    acc.ingest(r[:400], T0 + 1)
    acc.ingest(r[400:], T0 + 2)
    snap = acc.snapshot(T0 + 3)
    assert snap.packets_total == 1000
    assert snap.bytes_total == int(r["wire_len"].sum())
    expected = Counter(Proto(int(p)).label for p in r["proto"])
    assert snap.protocols_total == dict(expected)
    apps = Counter(App(int(a)).label for a in r["app"] if a)
    assert snap.apps_total == dict(apps)
    assert snap.decode_errors == int(np.count_nonzero(r["error"]))
    assert snap.protocols == snap.protocols_total  # all within the last second


def test_unknown_enum_values_count_as_other() -> None:
    acc = make()
    r = records(10)
    r["proto"] = [1, 1, 200, 200, 200, 2, 2, 2, 2, 2]
    r["app"] = 250
    acc.ingest(r, T0)
    snap = acc.snapshot(T0)
    assert snap.protocols_total == {"OTHER": 3, "TCP": 2, "UDP": 5}
    assert snap.apps_total == {}


def test_rate_window_slides_over_arrival_time() -> None:
    acc = make()
    acc.ingest(records(100), T0 + 100_000_000)
    acc.ingest(records(50), T0 + 600_000_000)
    assert acc.snapshot(T0 + 900_000_000).packets_per_second == 150
    # (now - 1 s, now]: the batch that arrived exactly 1 s ago has left the window.
    assert acc.snapshot(T0 + 1_100_000_000).packets_per_second == 50
    snap = acc.snapshot(T0 + 1_600_000_000)
    assert (snap.packets_per_second, snap.bytes_per_second, snap.protocols) == (0, 0, {})
    assert snap.packets_total == 150


def test_rates_ignore_capture_timestamps() -> None:
    acc = make()
    r = records(10)
    r["ts_ns"] = 1_000_000 * NS  # a pcap recorded long ago
    acc.ingest(r, T0 + 5)
    assert acc.snapshot(T0 + 10).packets_per_second == 10
    assert int(acc.last_seconds(1, include_current=True)["packets"][0]) == 10


def test_protocol_rates_sum_to_packet_rate() -> None:
    acc = make()
    r = records(777)
    acc.ingest(r, T0)
    snap = acc.snapshot(T0 + 1)
    assert sum(snap.protocols.values()) == snap.packets_per_second == 777


def test_clock_going_back_is_held() -> None:
    acc = make()
    acc.ingest(records(10), T0 + 2 * NS)
    acc.ingest(records(10), T0 + NS)  # earlier: counted at the last time seen
    assert acc.current_second == T0 // NS + 2
    assert int(acc.last_seconds(1, include_current=True)["packets"][0]) == 20


def test_history_rows_per_second_and_gaps() -> None:
    acc = make()
    acc.ingest(records(5), T0 + 10)
    acc.ingest(records(7), T0 + 3 * NS + 10)
    rows = acc.last_seconds(10)
    assert rows["second"].tolist() == [T0 // NS + i for i in range(3)]
    assert rows["packets"].tolist() == [5, 0, 0]
    current = acc.last_seconds(1, include_current=True)
    assert current["packets"].tolist() == [7]


def test_history_wraps_beyond_history_s() -> None:
    history_s = 60
    acc = make(history_s=history_s)
    total = history_s + 45
    for i in range(total):
        acc.ingest(records(i + 1, seed=i), T0 + i * NS + 1)
    acc.advance(T0 + total * NS)
    rows = acc.last_seconds(10_000)
    assert len(rows) == history_s
    assert rows["second"].tolist() == [T0 // NS + i for i in range(total - history_s, total)]
    assert rows["packets"].tolist() == list(range(total - history_s + 1, total + 1))
    proto = rows["proto"].sum(axis=1)
    assert proto.tolist() == rows["packets"].tolist()
    # A jump longer than the whole series clears every row.
    acc.advance(T0 + (total + 5 * history_s) * NS)
    assert acc.last_seconds(history_s)["packets"].sum() == 0
    assert len(acc.last_seconds(history_s)) == history_s


def test_dirty_rows() -> None:
    acc = make(history_s=60)
    assert len(acc.take_dirty()) == 61  # everything, once, so a new writer overwrites it all
    acc.ingest(records(3), T0 + 1)
    assert acc.take_dirty().tolist() == [(T0 // NS) % 61]
    assert acc.take_dirty().tolist() == []
    acc.ingest(records(0), T0 + 2)  # an idle poll changes nothing
    assert acc.take_dirty().tolist() == []
    acc.advance(T0 + 3 * NS)
    assert sorted(acc.take_dirty().tolist()) == sorted((T0 // NS + i) % 61 for i in (1, 2, 3))


def test_drops_from_cumulative_counters() -> None:
    acc = make()
    acc.observe_drops(100, 4, T0)  # baseline: drops before stats started are not counted
    acc.observe_drops(130, 4, T0 + NS)
    acc.observe_drops(10, 1, T0 + 2 * NS)  # the capture restarted: counters from zero
    snap = acc.snapshot(T0 + 3 * NS)
    assert (snap.kernel_drops, snap.if_drops) == (40, 1)
    rows = acc.last_seconds(3)
    assert rows["kernel_drops"].tolist() == [0, 30, 10]
    assert rows["if_drops"].tolist() == [0, 0, 1]


def test_ring_lost_per_second() -> None:
    acc = make()
    acc.ingest(records(0), T0 + 1, lost=12)
    acc.ingest(records(4), T0 + NS + 1, lost=3)
    assert acc.snapshot(T0 + 2 * NS).ring_lost == 15
    assert acc.last_seconds(2)["ring_lost"].tolist() == [12, 3]


def service_port(sport: int, dport: int) -> int:
    low, high = sorted((sport, dport))
    if low < 1024 or (high >= 32768 > low):
        return low
    return dport


def naive_top(batches: list[np.ndarray], top_n: int) -> dict[str, list[tuple[int, ...]]]:
    src: Counter[tuple[int, int]] = Counter()
    dst: Counter[tuple[int, int]] = Counter()
    ports: Counter[tuple[int, int]] = Counter()
    sizes: dict[str, Counter[tuple[int, int]]] = {
        "src": Counter(),
        "dst": Counter(),
        "ports": Counter(),
    }
    for batch in batches:
        for row in batch:
            length = int(row["wire_len"])
            if row["flags"] & F_HAS_ADDR:
                for name, counter, key in (
                    ("src", src, (int(row["src_hi"]), int(row["src_lo"]))),
                    ("dst", dst, (int(row["dst_hi"]), int(row["dst_lo"]))),
                ):
                    counter[key] += 1
                    sizes[name][key] += length
            if row["flags"] & F_HAS_PORTS:
                key = (int(row["proto"]), service_port(int(row["src_port"]), int(row["dst_port"])))
                ports[key] += 1
                sizes["ports"][key] += length

    def best(name: str, counter: Counter[tuple[int, int]]) -> list[tuple[int, ...]]:
        ranked = sorted(counter, key=lambda k: (-counter[k], -sizes[name][k], k))[:top_n]
        return [(*k, counter[k], sizes[name][k]) for k in ranked]

    return {"src": best("src", src), "dst": best("dst", dst), "ports": best("ports", ports)}


def test_top_n_matches_a_naive_count_over_the_window() -> None:
    window, top_n = 5, 7
    acc = make(top_window_s=window, top_n=top_n)
    by_second: dict[int, list[np.ndarray]] = {}
    for i in range(40):
        second = i // 4
        r = records(300, seed=i, hosts=15 + i)
        r["flags"][::17] = 0  # some records with neither addresses nor ports
        acc.ingest(r, T0 + second * NS + (i % 4) * 200_000_000)
        by_second.setdefault(second, []).append(r)
    open_second = 10
    snap = acc.snapshot(T0 + open_second * NS)
    counted = [b for s in range(open_second - window, open_second) for b in by_second[s]]
    expected = naive_top(counted, top_n)
    got_src = [(a.hi, a.lo, a.packets, a.bytes) for a in snap.top_sources]
    got_dst = [(a.hi, a.lo, a.packets, a.bytes) for a in snap.top_destinations]
    got_ports = [
        (int(Proto[p.protocol.upper()]), p.port, p.packets, p.bytes) for p in snap.top_ports
    ]
    assert got_src == expected["src"]
    assert got_dst == expected["dst"]
    assert got_ports == expected["ports"]
    assert snap.top_seconds == window
    assert snap.top_complete


def test_top_addresses_render_as_text() -> None:
    acc = make()
    r = records(3)
    r["src_hi"], r["src_lo"] = zip(
        *[ip_to_halves(a) for a in ("192.0.2.1", "2001:db8::1", "192.0.2.1")], strict=True
    )
    acc.ingest(r, T0)
    snap = acc.snapshot(T0 + NS)
    assert [a.address for a in snap.top_sources] == ["192.0.2.1", "2001:db8::1"]


def test_top_window_forgets_old_seconds() -> None:
    acc = make(top_window_s=3)
    acc.ingest(records(100), T0)
    assert len(acc.snapshot(T0 + NS).top_sources) > 0
    assert acc.snapshot(T0 + 4 * NS).top_sources == []


@pytest.mark.parametrize("max_keys", [10, 10_000])
def test_busy_second_is_cut_to_its_heaviest_keys(max_keys: int) -> None:
    acc = make(top_n=3)
    acc.sources.max_keys = max_keys
    r = records(2000, hosts=1000)
    r["src_lo"][:300] = 7  # one heavy hitter among many light ones
    acc.ingest(r, T0)
    snap = acc.snapshot(T0 + NS)
    assert snap.top_sources[0].lo == 7
    assert snap.top_complete == (max_keys > 1000)


def test_a_download_counts_for_the_service_port_not_the_clients() -> None:
    acc = make(top_n=3)
    r = records(10)
    r["proto"], r["flags"] = Proto.TCP, F_HAS_ADDR | F_HAS_PORTS
    r["src_port"][:8], r["dst_port"][:8] = 443, 51234  # the data, from the server
    r["src_port"][8:], r["dst_port"][8:] = 51234, 443  # the client's ACKs
    acc.ingest(r, T0)
    ports = [(p.protocol, p.port, p.packets) for p in acc.snapshot(T0 + NS).top_ports]
    assert ports == [("TCP", 443, 10)]


@pytest.mark.parametrize(
    ("sport", "dport", "port"),
    [
        (443, 51234, 443),
        (51234, 53, 53),
        (8080, 40000, 8080),  # registered against ephemeral
        (40000, 3389, 3389),
        (5353, 5353, 5353),
        (1500, 8080, 8080),  # two registered ports: the destination
        (50000, 60000, 60000),  # two ephemeral ports: the destination
        (22, 1023, 22),
    ],
)
def test_the_service_port_rule(sport: int, dport: int, port: int) -> None:
    got = service_ports(np.array([sport], np.uint16), np.array([dport], np.uint16))
    assert got.tolist() == [port] == [service_port(sport, dport)]
