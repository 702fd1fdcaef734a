"""The flow store: what FlowStoreWriter writes, FlowHistory reads back, retention, recovery."""

from __future__ import annotations

import json
import random
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest

from leireye.flows.columns import FLOW_STATISTICS
from leireye.flows.history import FLOW_SORTS, FlowHistory, HistoryError, _matching
from leireye.flows.layout import BY_RESP, FLOW_FIELDS, LOSSES_FILE, PENDING_FILE, part_files
from leireye.flows.model import AppMinute, Flow, HostMinute
from leireye.flows.query import FilterValueError, FlowFilter, parse_flow_filter
from leireye.flows.store import ROW_GROUP_ROWS, FlowStoreWriter

HOUR_S = 3600
NOW_S = 1_780_000_000.0  # 2026-05-28T20:26:40Z
NOW_NS = int(NOW_S * 1e9)
SECOND = 10**9


class Clock:
    def __init__(self, now: float = NOW_S) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def full_flow(uid: str = "CfullA1", **changes: object) -> Flow:
    values: dict[str, object] = dict(
        uid=uid, vlan=42, transport="TCP", ip_version=6, orig_ip="2001:db8::1", orig_port=51000,
        resp_ip="2001:db8::2", resp_port=443, app="TLS", first_ns=NOW_NS - 5 * SECOND,
        last_ns=NOW_NS - SECOND, orig_pkts=10, orig_bytes=1500, resp_pkts=12, resp_bytes=90000,
        conn_state="SF", history="ShADadFf", end_reason="fin", dns_query="q.example",
        dns_rcode="NOERROR", tls_sni="sni.example", tls_alpn="h2", http_host="h.example",
        http_method="GET", http_path="/a?b=c", ssh_banner="SSH-2.0-OpenSSH_9.2",
    )  # fmt: skip
    values.update(changes)
    return Flow(**values)  # type: ignore[arg-type]


def bare_flow(uid: str = "Cbare", **changes: object) -> Flow:
    values: dict[str, object] = dict(
        uid=uid, vlan=None, transport="UDP", ip_version=4, orig_ip="10.0.0.1", orig_port=None,
        resp_ip="10.0.0.2", resp_port=None, app=None, first_ns=NOW_NS - 2 * SECOND,
        last_ns=NOW_NS - 2 * SECOND,
    )  # fmt: skip
    values.update(changes)
    return Flow(**values)  # type: ignore[arg-type]


def writer(directory: Path, clock: Clock | None = None, **kw: float) -> FlowStoreWriter:
    kw.setdefault("flows_days", 7.0)
    kw.setdefault("max_gb", 1.0)
    kw.setdefault("flush_s", 3600.0)
    return FlowStoreWriter(directory, clock=clock or Clock(), **kw)  # type: ignore[arg-type]


def random_flows(count: int, seed: int = 1) -> list[Flow]:
    rng = random.Random(seed)
    flows = []
    for i in range(count):
        first = NOW_NS - rng.randrange(3 * HOUR_S) * SECOND
        transport = rng.choice(["TCP", "UDP", "ICMP"])
        ports = transport != "ICMP" or rng.random() < 0.5
        flows.append(
            Flow(
                uid=f"C{i:06d}", vlan=rng.choice([None, 10, 20]), transport=transport,
                ip_version=4, orig_ip=f"10.0.{rng.randrange(4)}.{rng.randrange(1, 20)}",
                orig_port=rng.choice([80, rng.randrange(65536)]) if ports else None,
                resp_ip=rng.choice(["192.168.1.1", "192.168.1.2", "10.0.0.5", "8.8.8.8"]),
                resp_port=rng.choice([53, 80, 443, 22]) if ports else None,
                app=rng.choice([None, "DNS", "TLS", "HTTP"]), first_ns=first,
                last_ns=first + rng.randrange(600) * 10**7, orig_pkts=rng.randrange(100),
                orig_bytes=rng.randrange(100_000), resp_pkts=rng.randrange(100),
                resp_bytes=rng.randrange(100_000), conn_state=rng.choice(["SF", "S0", "REJ"]),
                end_reason="idle",
                icmp_id=(i * 7919) % 65536 if transport == "ICMP" and i % 3 else None,
            )
        )  # fmt: skip
    return flows


def test_every_field_round_trips(tmp_path: Path) -> None:
    ping = bare_flow("Cping", transport="ICMP", orig_port=8, resp_port=0, icmp_id=0xBEEF)
    v4 = full_flow("Cv4", ip_version=4, orig_ip="192.0.2.1", resp_ip="198.51.100.7", vlan=0)
    flows = [full_flow(), bare_flow(), v4, ping]
    w = writer(tmp_path)
    w.add_flows(flows)
    w.close()
    history = FlowHistory(tmp_path)
    rows, total = history.flows(sort="start", descending=False)
    assert total == 4
    assert sorted(rows, key=lambda f: f.uid) == sorted(flows, key=lambda f: f.uid)
    assert history.flow("CfullA1") == [flows[0]]
    assert not (tmp_path / PENDING_FILE).exists()


def test_partitions_by_hour_of_the_end_and_file_names_bound_the_rows(tmp_path: Path) -> None:
    hour_ns = HOUR_S * SECOND
    flows = [bare_flow(f"C{i}", first_ns=NOW_NS - i * hour_ns, last_ns=NOW_NS - i * hour_ns + 5)
             for i in range(3)]  # fmt: skip
    w = writer(tmp_path)
    w.add_flows(flows)
    w.flush()
    parts = list(part_files(tmp_path, "flows"))
    assert len({p.path.parent.name for p in parts}) == 3
    for part in parts:
        assert part.low_ns <= part.high_ns
    assert not list(tmp_path.rglob("*.tmp"))
    history = FlowHistory(tmp_path)
    rows, total = history.flows(NOW_NS - hour_ns // 2, NOW_NS)
    assert [f.uid for f in rows] == ["C0"] and total == 1
    assert {f.uid for f in history.flows(NOW_NS - 3 * hour_ns, NOW_NS)[0]} == {"C0", "C1", "C2"}


def test_files_and_directories_are_group_readable_only(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.add_flows([bare_flow()])
    w.flush()
    (part,) = part_files(tmp_path, "flows")
    assert stat.S_IMODE(part.path.stat().st_mode) == 0o640
    assert stat.S_IMODE(part.path.parent.stat().st_mode) == 0o2750


def test_flush_happens_on_add_after_flush_s(tmp_path: Path) -> None:
    clock = Clock()
    w = writer(tmp_path, clock, flush_s=10.0)
    w.add_flows([bare_flow("C1")])
    assert not list(part_files(tmp_path, "flows"))
    clock.now += 10
    w.add_flows([bare_flow("C2")])
    assert w.pending == (0, 0, 0)
    assert len(list(part_files(tmp_path, "flows"))) == 1


def test_retention_by_age_deletes_whole_old_hours(tmp_path: Path) -> None:
    clock = Clock()
    w = writer(tmp_path, clock, flows_days=1.0)
    old = NOW_NS - 2 * 86400 * SECOND
    w.add_flows([bare_flow("Cold", first_ns=old, last_ns=old), bare_flow("Cnew")])
    minute = old // (60 * SECOND) * 60 * SECOND
    w.add_minute([HostMinute(minute_ns=minute, ip="10.0.0.1")],
                 [AppMinute(minute_ns=minute, app="DNS")])  # fmt: skip
    w.flush()
    assert len(list(part_files(tmp_path, "hosts"))) == 1
    deleted = w.enforce_retention()
    assert len(deleted) == 1
    assert [f.uid for f in FlowHistory(tmp_path).flows()[0]] == ["Cnew"]
    assert not list(part_files(tmp_path, "hosts")) and not list(part_files(tmp_path, "apps"))


def test_retention_by_size_deletes_the_oldest_hours_first(tmp_path: Path) -> None:
    hour_ns = HOUR_S * SECOND
    w = writer(tmp_path)
    for i in (3, 2, 1, 0):
        w.add_flows(
            [bare_flow(f"C{i}", first_ns=NOW_NS - i * hour_ns, last_ns=NOW_NS - i * hour_ns)]
        )
        w.flush()
    size = max(  # an hour's files: the flows and their twin sorted by responder
        p.path.stat().st_size
        + (tmp_path / "flows_by_resp" / p.path.parent.name / p.path.name).stat().st_size
        for p in part_files(tmp_path, "flows")
    )
    w.max_bytes = int(size * 2.5)
    assert len(w.enforce_retention()) == 2
    assert sorted(f.uid for f in FlowHistory(tmp_path).flows()[0]) == ["C0", "C1"]


FILTER_CASES = [
    {"ip": "10.0.1.0/24"},
    {"src_ip": "10.0.0.3"},
    {"dst_ip": "192.168.1.1"},
    {"ip": "8.8.8.8", "port": "53"},
    {"protocol": "udp"},
    {"protocol": "TLS"},
    {"src_port": "80"},
    {"dst_port": "443", "state": "sf"},
    {"vlan": "10"},
    {"min_bytes": "100000"},
    {"min_duration_ms": "3000"},
    {"ip": "::/0"},
    {"ip": "0.0.0.0/0", "protocol": "icmp"},
]


@pytest.mark.parametrize(
    "spec", FILTER_CASES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
)
def test_sql_filters_agree_with_the_python_ones(tmp_path: Path, spec: dict[str, str]) -> None:
    flows = random_flows(400)
    w = writer(tmp_path)
    w.add_flows(flows)
    w.close()
    flt = parse_flow_filter(spec)
    expected = sorted(f.uid for f in flows if flt.matches(f))
    rows, total = FlowHistory(tmp_path).flows(flt=flt, limit=1000)
    assert sorted(f.uid for f in rows) == expected
    assert total == len(expected)
    assert spec.get("ip") == "::/0" or 0 < total < 400


HOSTILE = [
    {"state": "SF' OR 1=1 --"},
    {"ip": "10.0.0.1' OR '1'='1"},
    {"protocol": "TCP; DROP TABLE flows"},
    {"port": "1 OR 1=1"},
    {"min_bytes": "-1"},
    {"vlan": "99999"},
    {"uid": "x"},
    {"src_ip": "a" * 10_000},
]


@pytest.mark.parametrize("spec", HOSTILE)
def test_hostile_filter_values_are_refused_naming_the_key(spec: dict[str, str]) -> None:
    with pytest.raises(FilterValueError) as caught:
        parse_flow_filter(spec)
    assert caught.value.key == next(iter(spec))[:60]


def test_a_hostile_uid_is_only_ever_a_value(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.add_flows([bare_flow("C1")])
    w.close()
    history = FlowHistory(tmp_path)
    assert history.flow("C1' OR '1'='1") == []
    assert history.flow("'); SELECT 1; --") == []
    assert [f.uid for f in history.flow("C1")] == ["C1"]


@pytest.mark.parametrize("sort", ["bytes", "packets", "duration", "start"])
def test_sort_and_paging(tmp_path: Path, sort: str) -> None:
    flows = random_flows(250, seed=7)
    w = writer(tmp_path)
    w.add_flows(flows)
    w.close()
    history = FlowHistory(tmp_path)
    key = {"bytes": lambda f: f.orig_bytes + f.resp_bytes,
           "packets": lambda f: f.orig_pkts + f.resp_pkts,
           "duration": lambda f: f.duration_ns, "start": lambda f: f.first_ns}[sort]  # fmt: skip
    expected = [f.uid for f in sorted(flows, key=lambda f: (key(f), f.uid), reverse=True)]
    pages = []
    for offset in range(0, 250, 100):
        rows, total = history.flows(sort=sort, limit=100, offset=offset)
        assert total == 250
        pages += [f.uid for f in rows]
    assert pages == expected
    ascending, _ = history.flows(sort=sort, descending=False, limit=5)
    assert [f.uid for f in ascending] == expected[::-1][:5]


def test_active_flows_merge_into_the_pages_in_order(tmp_path: Path) -> None:
    flows = random_flows(120, seed=3)
    ended, active = flows[:100], flows[100:]
    w = writer(tmp_path)
    w.add_flows(ended)
    w.close()
    history = FlowHistory(tmp_path)
    flt = parse_flow_filter({"protocol": "TCP"})
    wanted = [f for f in flows if flt.matches(f)]
    expected = [f.uid for f in sorted(wanted, key=lambda f: (f.orig_bytes + f.resp_bytes, f.uid))]
    pages: list[str] = []
    for offset in range(0, 120, 7):
        rows, total = history.flows(
            flt=flt, sort="bytes", descending=False, limit=7, offset=offset, active=active
        )
        assert total == len(wanted)
        pages += [f.uid for f in rows]
    assert pages == expected


def test_bad_query_arguments_are_refused(tmp_path: Path) -> None:
    history = FlowHistory(tmp_path, rows_max=50)
    with pytest.raises(HistoryError, match="sort"):
        history.flows(sort="uid; DROP")
    with pytest.raises(HistoryError, match="limit"):
        history.flows(limit=51)
    with pytest.raises(HistoryError, match="offset"):
        history.flows(limit=10, offset=10**9)
    with pytest.raises(HistoryError, match="before"):
        history.flows(10, 5, limit=10)
    with pytest.raises(HistoryError, match="steps"):
        history.protocols(0, 10**18, 60 * SECOND)
    assert history.flows(limit=10) == ([], 0)  # an empty store answers


def test_a_slow_query_is_interrupted(tmp_path: Path) -> None:
    history = FlowHistory(tmp_path, timeout_s=0.05)
    with pytest.raises(HistoryError) as caught:
        history._query("SELECT count(*) FROM range(1000000000000)", [], "flows", (0, 0))
    assert caught.value.timed_out


def test_hosts_host_and_protocols(tmp_path: Path) -> None:
    minute = NOW_NS // (60 * SECOND) * 60 * SECOND
    w = writer(tmp_path)
    w.add_flows(
        [
            bare_flow("C1", orig_ip="10.0.0.1", resp_ip="10.0.0.2", orig_bytes=70),
            bare_flow("C2", orig_ip="10.0.0.3", resp_ip="10.0.0.1", resp_bytes=30),
        ]
    )
    for m in (minute - 60 * SECOND, minute):
        w.add_minute(
            [HostMinute(minute_ns=m, ip="10.0.0.1", pkts_sent=1, bytes_sent=100, bytes_recv=5,
                        peers=["10.0.0.2", "10.0.0.3"], apps={"DNS": 60, "TLS": 45},
                        ports_served=[53], names=["one.example"]),
             HostMinute(minute_ns=m, ip="10.0.0.2", bytes_sent=1)],
            [AppMinute(minute_ns=m, app="DNS", packets=2, bytes=60),
             AppMinute(minute_ns=m, app="TLS", packets=1, bytes=45)],
        )  # fmt: skip
    w.close()
    history = FlowHistory(tmp_path)
    hosts, total = history.hosts(sort="bytes")
    assert total == 2 and [h["ip"] for h in hosts] == ["10.0.0.1", "10.0.0.2"]
    assert hosts[0]["bytes_sent"] == 200 and hosts[0]["peers"] == 2
    assert hosts[0]["names"] == ["one.example"]
    found = history.host("10.0.0.1", NOW_NS - HOUR_S * SECOND, NOW_NS, 60 * SECOND)
    assert found is not None and found["summary"]["ports_served"] == [53]
    assert {p["ip"]: p["bytes"] for p in found["peers"]} == {"10.0.0.2": 70, "10.0.0.3": 30}
    assert found["apps"] == [{"app": "DNS", "bytes": 120}, {"app": "TLS", "bytes": 90}]
    assert len(found["series"]) == 4
    assert history.host("10.9.9.9", NOW_NS - HOUR_S * SECOND, NOW_NS, 60 * SECOND) is None
    chart = history.protocols(NOW_NS - HOUR_S * SECOND, NOW_NS, 120 * SECOND)
    assert sum(r["bytes"] for r in chart) == 210
    assert {r["app"] for r in chart} == {"DNS", "TLS"}


def test_rows_held_at_a_crash_are_counted_at_the_next_start(tmp_path: Path) -> None:
    clock = Clock()
    w = writer(tmp_path, clock)
    w.add_flows([bare_flow("C1")])
    w.add_flows([bare_flow("C2"), bare_flow("C3")])
    assert json.loads((tmp_path / PENDING_FILE).read_text())["flows"] == 3
    hour = tmp_path / "flows" / "hour=2026052820"
    hour.mkdir(parents=True)
    (hour / ".part-1-2-3-4.parquet.tmp").write_bytes(b"half")
    # `w` is dropped without close(), as in a crash
    again = writer(tmp_path, clock)
    assert again.recovered == {"flows": 3}
    assert json.loads((tmp_path / LOSSES_FILE).read_text()) == {"flows": 3, "crashes": 1}
    assert not list(tmp_path.rglob("*.tmp"))
    assert FlowHistory(tmp_path).losses()["flows"] == 3
    again.close()
    assert writer(tmp_path, clock).recovered == {}


def test_a_duckdb_database_file_cannot_be_read_while_another_process_writes_it(
    tmp_path: Path,
) -> None:
    """Why the store is Parquet files rather than one DuckDB database (store.py)."""
    import duckdb

    db = tmp_path / "flows.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t AS SELECT 1 AS x")
    try:
        reader = subprocess.run(
            [sys.executable, "-c",
             f"import duckdb; duckdb.connect({str(db)!r}, read_only=True).sql('SELECT 1')"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        con.close()
    assert reader.returncode != 0
    assert "lock" in reader.stderr.lower()


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("fe80::/10", {"C1", "C2"}),
        ("fe80::1", {"C1"}),
        ("ff02::fb", {"C2"}),
        ("2001:db8::/64", {"C3"}),
        ("2001:db8::5", {"C3"}),
        ("::/1", {"C3", "C4"}),
        ("10.0.0.0/8", {"C4"}),
        ("::ffff:0:0/96", {"C4"}),
    ],
)
def test_ipv6_networks_across_both_halves(tmp_path: Path, network: str, expected: set[str]) -> None:
    flows = [
        bare_flow("C1", ip_version=6, orig_ip="fe80::1", resp_ip="fe80::2"),
        bare_flow("C2", ip_version=6, orig_ip="fe80::9", resp_ip="ff02::fb"),
        bare_flow("C3", ip_version=6, orig_ip="2001:db8::5", resp_ip="2001:db8:1::1"),
        bare_flow("C4", orig_ip="10.1.2.3", resp_ip="192.0.2.1"),
    ]
    w = writer(tmp_path)
    w.add_flows(flows)
    w.close()
    flt = parse_flow_filter({"ip": network})
    assert {f.uid for f in flows if flt.matches(f)} == expected
    assert {f.uid for f in FlowHistory(tmp_path).flows(flt=flt)[0]} == expected
    assert {
        f.uid for f in FlowHistory(tmp_path).flows(flt=parse_flow_filter({"src_ip": network}))[0]
    } <= expected


def test_a_twin_without_its_flows_file_is_not_committed(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.add_flows([bare_flow("C1"), bare_flow("C2", orig_ip="10.0.0.9", resp_ip="10.0.0.1")])
    w.close()
    (part,) = part_files(tmp_path, "flows")
    twin = tmp_path / "flows_by_resp" / part.path.parent.name / part.path.name
    assert twin.exists()
    flt = parse_flow_filter({"ip": "10.0.0.1"})
    assert FlowHistory(tmp_path).flows(flt=flt)[1] == 2  # C1 as originator, C2 as responder
    part.path.unlink()  # as if the writer died between the twin and the flows file
    writer(tmp_path).close()
    assert not twin.exists()
    assert FlowHistory(tmp_path).flows(flt=flt) == ([], 0)


@pytest.mark.parametrize("store", ["now", "mixed", "without-twins"])
def test_one_host_pages_are_the_rows_of_the_one_step_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    """The two-step page (places, then the rows) answers what one query with ORDER BY,
    LIMIT and OFFSET over every column answered before it, with ties, over many files and
    small row groups; and so for a store whose older files have larger row groups and
    statistics on every column ("mixed": written before, then now), and for one whose flows
    have no `flows_by_resp` twins (written before them)."""
    monkeypatch.setattr("leireye.flows.store.ROW_GROUP_ROWS", 8)
    flows = random_flows(400, seed=11)
    flows += [bare_flow(f"T{i:03d}", orig_ip="10.0.0.5", orig_bytes=777, resp_bytes=0,
                        first_ns=NOW_NS - 7 * SECOND) for i in range(30)]  # fmt: skip
    w = writer(tmp_path, Clock())
    for start in range(0, len(flows), 60):
        old = store == "mixed" and start < len(flows) // 2
        monkeypatch.setattr("leireye.flows.store.ROW_GROUP_ROWS", 32 if old else 8)
        monkeypatch.setattr("leireye.flows.store.FLOW_STATISTICS", True if old else FLOW_STATISTICS)
        w.add_flows(flows[start : start + 60])
        w.flush()
    w.close()
    if store == "without-twins":
        shutil.rmtree(tmp_path / BY_RESP)
    assert len(list(part_files(tmp_path, "flows"))) > 8
    history = FlowHistory(tmp_path)
    for spec in ({"ip": "10.0.0.5"}, {"ip": "192.168.1.1"}, {"ip": "10.0.0.0/24"}):
        flt = parse_flow_filter(spec)
        for sort, column in FLOW_SORTS.items():
            for descending, offset, limit in ((True, 0, 100), (False, 35, 20)):
                rows, total = history.flows(
                    flt=flt, sort=sort, descending=descending, limit=limit, offset=offset
                )
                expected, count = one_step(history, flt, column, descending, limit, offset)
                assert (rows, total) == (expected, count), (spec, sort, descending, offset)
                assert rows
        assert total == sum(flt.matches(f) for f in flows)
    one = parse_flow_filter({"ip": "10.0.0.5"})
    assert history.flows(flt=one, offset=400) == ([], sum(one.matches(f) for f in flows))


def one_step(
    history: FlowHistory, flt: FlowFilter, column: str, descending: bool, limit: int, offset: int
) -> tuple[list[Flow], int]:
    """The page as the store answered it before the two-step read: one query."""
    parts = history._parts("flows", -(2**63), 2**63 - 1)
    source, params = _matching(parts, -(2**63), 2**63 - 1, flt, history._twins(parts))
    order = "DESC" if descending else "ASC"
    rows = history._query(
        f"SELECT {', '.join(FLOW_FIELDS)} FROM {source}"
        f" ORDER BY {column} {order}, uid {order} LIMIT ? OFFSET ?",
        [*params, limit, offset],
        "flows",
        (0, 0),
    )
    count = history._query(f"SELECT count(*) AS n FROM {source}", params, "flows", (0, 0))
    return [msgspec.convert(row, Flow) for row in rows], int(count[0]["n"])


def test_flows_files_keep_statistics_on_the_keys_and_times_alone(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.add_flows(random_flows(50))
    w.close()
    for table in ("flows", BY_RESP):
        for part in part_files(tmp_path, table):
            meta = pq.ParquetFile(part.path).metadata
            assert all(
                meta.row_group(i).num_rows <= ROW_GROUP_ROWS for i in range(meta.num_row_groups)
            )
            group = meta.row_group(0)
            kept = {
                group.column(i).path_in_schema
                for i in range(group.num_columns)
                if group.column(i).is_stats_set
            }
            assert kept == set(FLOW_STATISTICS)
