"""/api/flows, /api/flows/{uid}, /api/hosts, /api/hosts/{ip} and /api/stats/protocols with a
time range: the real app in-process (tests/inprocess.py) over a flow store of synthetic flows
written by the real FlowStoreWriter, and the ring holding real decoded packets."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from leireye.flows.model import AppMinute, Flow, Host, HostMinute
from leireye.flows.store import FlowStoreWriter
from leireye.web.api.flows import packet_ids
from tests.asgi import Reply
from tests.http import assert_error
from tests.inprocess import InProcessSensor, read_pcap

SECOND = 10**9
NOW_NS = time.time_ns()
MINUTE = NOW_NS // (60 * SECOND) * 60 * SECOND
FROM = str((NOW_NS - 3 * 86400 * SECOND) // SECOND)  # Unix seconds, three days ago


def flow(uid: str, orig: str, resp: str, nbytes: int, **more: Any) -> Flow:
    values: dict[str, Any] = dict(
        uid=uid, vlan=None, transport="TCP", ip_version=4, orig_ip=orig, orig_port=40000,
        resp_ip=resp, resp_port=443, app="TLS", first_ns=NOW_NS - 60 * SECOND,
        last_ns=NOW_NS - 30 * SECOND, orig_pkts=3, orig_bytes=nbytes, resp_pkts=2,
        resp_bytes=10, conn_state="SF", history="ShADadFf", end_reason="fin",
    )  # fmt: skip
    values.update(more)
    return Flow(**values)


class LiveStub:
    """A live view with fixed contents (the flow process's is `leireye.flows.view`)."""

    def __init__(self, flows: Sequence[Flow], hosts: Sequence[Host]) -> None:
        self._flows, self._hosts = flows, hosts

    def active(self) -> Sequence[Flow]:
        return self._flows

    def hosts(self) -> Sequence[Host]:
        return self._hosts


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessSensor]:
    s = InProcessSensor(tmp_path_factory.mktemp("flows"), capacity=1024)
    try:
        s.write(read_pcap("http.pcap"))
        w = FlowStoreWriter(s.config.history_dir, flows_days=7, max_gb=1)
        w.add_flows([flow(f"C{i}", f"10.0.0.{i}", "10.0.0.100", 100 * i) for i in range(1, 31)])
        w.add_minute(
            [HostMinute(minute_ns=MINUTE, ip="10.0.0.1", bytes_sent=500, peers=["10.0.0.100"],
                        apps={"TLS": 500}, names=["one.example"])],
            [AppMinute(minute_ns=MINUTE, app="TLS", packets=5, bytes=500)],
        )  # fmt: skip
        w.close()
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def get(sensor: InProcessSensor) -> Callable[..., Reply]:
    tokens = {name: sensor.token(name) for name in ("admin", "ana", "vic")}

    def get(target: str, user: str | None = "vic") -> Reply:
        return sensor.http("GET", target, token=None if user is None else tokens[user])

    return get


@pytest.mark.parametrize(
    "target",
    ["/api/flows", "/api/flows/C1", "/api/hosts", "/api/hosts/10.0.0.1",
     f"/api/stats/protocols?from={FROM}"],
)  # fmt: skip
def test_every_endpoint_needs_a_token_and_a_viewer_may_call_it(
    get: Callable[..., Reply], target: str
) -> None:
    assert_error(get(target, user=None), 401, "AUTH_REQUIRED")
    assert get(target).status == 200, get(target).body


def test_flows_filtered_sorted_and_paged(get: Callable[..., Reply]) -> None:
    reply = get(f"/api/flows?from={FROM}&sort=bytes&limit=10&offset=5")
    body = reply.json
    assert body["total"] == 30 and [f["uid"] for f in body["flows"]] == [
        f"C{i}" for i in range(25, 15, -1)
    ]
    first = body["flows"][0]
    assert first["bytes"] == 2510 and first["active"] is False and first["first_seen"].endswith("Z")
    one = get(f"/api/flows?from={FROM}&ip=10.0.0.7&min_bytes=1&state=SF").json
    assert [f["uid"] for f in one["flows"]] == ["C7"]
    assert get(f"/api/flows?from={FROM}&ip=10.9.0.0/16").json["total"] == 0
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW_NS // SECOND - 600))
    assert get(f"/api/flows?from={iso}").json["total"] == 30
    # the default range is the last hour, which holds them too
    assert get("/api/flows?order=asc&sort=start").json["total"] == 30


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("ip=10.0.0.1'%20OR%20'1'='1", "INVALID_FILTER"),
        ("state=SF;DROP", "INVALID_FILTER"),
        ("min_length=10", "INVALID_FILTER"),
        ("bogus=1", "INVALID_FILTER"),
        ("port=70000", "INVALID_FILTER"),
        ("sort=uid", "BAD_REQUEST"),
        ("order=up", "BAD_REQUEST"),
        ("limit=0", "BAD_REQUEST"),
        ("limit=100000", "BAD_REQUEST"),
        ("offset=-1", "BAD_REQUEST"),
        ("from=yesterday", "BAD_REQUEST"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "BAD_REQUEST"),
        ("status=dead", "BAD_REQUEST"),
    ],
)
def test_bad_flow_queries_are_clear_400s(get: Callable[..., Reply], query: str, code: str) -> None:
    detail = assert_error(get(f"/api/flows?{query}"), 400, code)["detail"]
    assert query.split("=")[0] in detail or code == "BAD_REQUEST"


def test_active_flows_from_the_live_view_join_the_list(
    sensor: InProcessSensor, get: Callable[..., Reply]
) -> None:
    live = flow("Clive", "10.0.0.200", "10.0.0.100", 99_999, end_reason=None, last_ns=NOW_NS)
    api = sensor.app.state.api
    named = Host(ip="10.0.0.200", first_ns=NOW_NS, last_ns=NOW_NS, names=["live.example"])
    assert get("/api/hosts").json["live"] is None  # no flow process
    api.live_flows = LiveStub([live], [named])
    try:
        body = get(f"/api/flows?from={FROM}&sort=bytes&limit=2").json
        assert body["total"] == 31 and body["flows"][0]["uid"] == "Clive"
        assert body["flows"][0]["active"] is True and body["live"] is True
        assert get(f"/api/flows?from={FROM}&status=active").json["total"] == 1
        assert get(f"/api/flows?from={FROM}&status=ended").json["total"] == 30
        assert get("/api/flows/Clive").json["flow"]["active"] is True
        host = get("/api/hosts/10.0.0.200").json
        assert host["summary"] is None and host["live"]["ip"] == "10.0.0.200"
        hosts = get("/api/hosts").json  # the live host's name at once, before any stored minute
        assert [(h["ip"], h["names"]) for h in hosts["live"]] == [("10.0.0.200", ["live.example"])]
        assert hosts["live"][0]["first_seen"].endswith("Z")
    finally:
        api.live_flows = None


def test_one_flow_and_its_packets_in_the_ring(
    sensor: InProcessSensor, get: Callable[..., Reply]
) -> None:
    packets = get("/api/capture/packets?protocol=TCP&limit=1000").json["packets"]
    first = packets[-1]
    ends = {(first["src_ip"], first["src_port"]), (first["dst_ip"], first["dst_port"])}
    same = [
        p for p in packets if {(p["src_ip"], p["src_port"]), (p["dst_ip"], p["dst_port"])} == ends
    ]
    stamps = [sensor.record(p["id"])["ts_ns"] for p in same]
    w = FlowStoreWriter(sensor.config.history_dir, flows_days=7, max_gb=1)
    ring_flow = flow("Cring", first["src_ip"], first["dst_ip"], 1, orig_port=first["src_port"],
                     resp_port=first["dst_port"], first_ns=int(min(stamps)),
                     last_ns=int(max(stamps)))  # fmt: skip
    w.add_flows([ring_flow])
    w.close()
    body = get("/api/flows/Cring").json
    assert body["flow"]["uid"] == "Cring" and len(body["records"]) == 1
    assert sorted(body["packet_ids"]) == sorted(p["id"] for p in same)
    # at a central a flow's packets are its own sensor's: the records' `sensor` index (0 here)
    start = ring_flow.first_ns
    assert packet_ids(sensor.hub.ring, ring_flow, start, 0) == body["packet_ids"]
    assert packet_ids(sensor.hub.ring, ring_flow, start, 1) == []
    assert_error(get("/api/flows/nope"), 404, "NOT_FOUND")
    assert_error(get("/api/flows/" + "x" * 100), 404, "NOT_FOUND")


def test_a_flows_stream_is_its_conversation_followed(
    sensor: InProcessSensor, get: Callable[..., Reply]
) -> None:
    """GET /api/flows/{uid}/stream answers what GET /api/stream answers for the flow's ends and
    span (the HTTP request and response of http.pcap's first conversation, in the ring)."""
    packets = get("/api/capture/packets?protocol=TCP&limit=1000").json["packets"]
    syn = packets[-1]  # the oldest: the first conversation's SYN
    same = [p for p in packets if {p["src_port"], p["dst_port"]} == {syn["src_port"], 80}]
    stamps = [int(sensor.record(p["id"])["ts_ns"]) for p in same]
    w = FlowStoreWriter(sensor.config.history_dir, flows_days=7, max_gb=1)
    ends = dict(orig_port=syn["src_port"], resp_port=80, first_ns=min(stamps), last_ns=max(stamps))
    w.add_flows([flow("Cfollow", syn["src_ip"], syn["dst_ip"], 1, **ends),
                 flow("Cping", syn["src_ip"], syn["dst_ip"], 1, transport="ICMP", orig_port=8,
                      resp_port=0, first_ns=min(stamps), last_ns=max(stamps))])  # fmt: skip
    w.close()
    assert_error(get("/api/flows/Cfollow/stream"), 403, "FORBIDDEN")  # a viewer
    body = get("/api/flows/Cfollow/stream?encoding=text", user="ana").json
    a, b = f"{syn['src_ip']}:{syn['src_port']}", f"{syn['dst_ip']}:80"
    direct = get(f"/api/stream?transport=tcp&a={a}&b={b}&encoding=text", user="ana").json
    assert body == direct
    client = "".join(s["text"] for s in body["segments"] if s["direction"] == "client")
    assert client.startswith("GET ")
    assert_error(get("/api/flows/Cping/stream", user="ana"), 400, "BAD_REQUEST")
    assert_error(get("/api/flows/nope/stream", user="ana"), 404, "NOT_FOUND")


def test_hosts_and_one_host(get: Callable[..., Reply]) -> None:
    body = get(f"/api/hosts?from={FROM}&sort=sent").json
    assert body["total"] == 1 and body["hosts"][0]["ip"] == "10.0.0.1"
    assert body["hosts"][0]["names"] == ["one.example"]
    host = get(f"/api/hosts/10.0.0.1?from={FROM}&step=86400").json
    assert host["summary"]["bytes_sent"] == 500 and host["apps"] == [{"app": "TLS", "bytes": 500}]
    assert host["peers"][0]["ip"] == "10.0.0.100" and host["step_s"] == 86400
    assert_error(get("/api/hosts/10.0.0.250"), 404, "NOT_FOUND")
    assert_error(get("/api/hosts/not-an-ip"), 400, "BAD_REQUEST")
    assert_error(get("/api/hosts?sort=ip"), 400, "BAD_REQUEST")
    assert_error(get("/api/hosts/10.0.0.1?step=61"), 400, "BAD_REQUEST")
    # a lone sensor: `sensor` is a central's filter (minutes carry none here)
    assert_error(get(f"/api/hosts?from={FROM}&sensor=east"), 400, "INVALID_FILTER")
    assert_error(get("/api/hosts/10.0.0.1?sensor=east"), 400, "INVALID_FILTER")
    assert_error(get(f"/api/stats/protocols?from={FROM}&sensor=east"), 400, "INVALID_FILTER")


def test_protocols_over_time_and_still_live_without_a_range(get: Callable[..., Reply]) -> None:
    body = get(f"/api/stats/protocols?from={FROM}&step=86400").json
    assert body["step_s"] == 86400
    assert [i["apps"] for i in body["intervals"]] == [{"TLS": {"packets": 5, "bytes": 500}}]
    assert_error(get(f"/api/stats/protocols?from={FROM}&step=60"), 400, "BAD_REQUEST")
    assert_error(get("/api/stats/protocols?minutes=5"), 400, "INVALID_FILTER")
