"""The REST API in-process: the real app, hub, ring, status, stats, control server and tokens,
no root, capture, server process or network (see tests/inprocess.py)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dpkt
import pytest

from leireye.accounts.tokens import issue_token
from leireye.record import Proto
from leireye.web.api import ringscan
from leireye.web.export import CSV_COLUMNS
from leireye.wire import CloseCode
from tests.asgi import Closed, Reply
from tests.http import assert_error
from tests.inprocess import REPLAY, InProcessSensor, read_pcap

CAPACITY = 256
MIXED, HTTP = read_pcap("mixed.pcap"), read_pcap("http.pcap")
WRITTEN = len(MIXED.frames) + len(HTTP.frames)  # 275: ids 1..19 are overwritten
HELD = list(range(WRITTEN, WRITTEN - CAPACITY, -1))  # newest first


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessSensor]:
    s = InProcessSensor(tmp_path_factory.mktemp("api"), capacity=CAPACITY)
    try:
        s.write(MIXED)
        s.write(HTTP)
        s.capturing(MIXED, WRITTEN)
        s.publish_stats()
        s.hub.tick(s.hub.clock())  # what the hub's loop does every 100 ms
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def get(sensor: InProcessSensor) -> Callable[..., Reply]:
    tokens = {name: sensor.token(name) for name in ("admin", "ana", "vic")}

    def get(target: str, user: str | None = "vic") -> Reply:
        return sensor.http("GET", target, token=None if user is None else tokens[user])

    return get


def packets(get: Callable[..., Reply], query: str) -> list[dict[str, Any]]:
    reply = get(f"/api/capture/packets?{query}")
    assert reply.status == 200, reply.body
    found: list[dict[str, Any]] = reply.json["packets"]
    return found


# -- who may call what --------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/api/capture/packets"), ("GET", "/api/capture/packets/275"),
    ("GET", "/api/export/packets"), ("GET", "/api/capture/status"),
    ("GET", "/api/capture/interfaces"), ("POST", "/api/capture/start"),
    ("POST", "/api/capture/stop"), ("GET", "/api/stats/summary"), ("GET", "/api/stats/protocols"),
    ("GET", "/api/stats/top"), ("GET", "/api/stats/timeline"), ("GET", "/metrics"),
    ("GET", "/api/auth/me"), ("POST", "/api/auth/ticket"), ("GET", "/api/users"),
    ("GET", "/api/users/1"), ("DELETE", "/api/users/2"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "target"), ENDPOINTS)
def test_every_endpoint_needs_a_valid_access_token(
    sensor: InProcessSensor, method: str, target: str
) -> None:
    body = assert_error(sensor.http(method, target), 401, "AUTH_REQUIRED")
    assert body["detail"] == "Authentication required"
    vic = sensor.user("vic")
    refused = {
        "garbage": "not-a-token",
        "wrong secret": issue_token(b"x" * 64, vic, 600, time.time()),
        "expired": issue_token(sensor.secret, vic, 1, time.time() - 10),
        "refresh": issue_token(sensor.secret, vic, 600, time.time(), kind="refresh"),
    }
    for token in refused.values():
        reply = sensor.http(method, target, token=token)
        assert_error(reply, 401, "INVALID_TOKEN")
        assert reply.headers["www-authenticate"] == "Bearer"
    basic = sensor.http(method, target, headers=(("authorization", "Basic YTpi"),))
    assert_error(basic, 401, "INVALID_TOKEN")


@pytest.mark.parametrize(
    ("user", "method", "target", "role"),
    [
        ("vic", "GET", "/api/capture/packets/275", "ANALYST"),
        ("vic", "GET", "/api/export/packets?format=csv", "ANALYST"),
        ("ana", "GET", "/api/users", "ADMIN"),
        ("ana", "POST", "/api/capture/stop", "ADMIN"),
        ("ana", "GET", "/api/capture/interfaces", "ADMIN"),
    ],
)
def test_a_role_too_low_is_forbidden(
    sensor: InProcessSensor, user: str, method: str, target: str, role: str
) -> None:
    reply = sensor.http(method, target, token=sensor.token(user))
    body = assert_error(reply, 403, "FORBIDDEN")
    assert role in body["detail"]


def test_errors_have_one_shape(sensor: InProcessSensor, get: Callable[..., Reply]) -> None:
    assert_error(get("/api/no-such-thing"), 404, "NOT_FOUND")
    assert_error(sensor.http("DELETE", "/api/stats/summary"), 405, "METHOD_NOT_ALLOWED")
    login = "/api/auth/login"
    form = (("content-type", "application/x-www-form-urlencoded"),)
    assert_error(sensor.http("POST", login, body=b"a=b", headers=form), 415,
                 "UNSUPPORTED_MEDIA_TYPE")  # fmt: skip
    assert_error(sensor.http("POST", login, body=b"{not json"), 400, "BAD_REQUEST")
    typo = assert_error(sensor.http("POST", login, body={"usr": "a", "password": "b"}), 422,
                        "VALIDATION_ERROR")  # fmt: skip
    assert "usr" in typo["detail"]
    huge = {"username": "a", "password": "b" * 70_000}
    assert_error(sensor.http("POST", login, body=huge), 413, "PAYLOAD_TOO_LARGE")


# -- accounts, through the real control server --------------------------------------------------


def test_login_refresh_and_logout(sensor: InProcessSensor) -> None:
    login = {"username": "admin", "password": sensor.admin_password}
    pair = sensor.http("POST", "/api/auth/login", body=login)
    assert pair.status == 200, pair.body
    assert pair.json["token_type"] == "bearer" and pair.headers["cache-control"] == "no-store"
    me = sensor.http("GET", "/api/auth/me", token=pair.json["access_token"])
    assert (me.status, me.json["username"], me.json["role"]) == (200, "admin", "ADMIN")
    assert "has_password" not in me.json and "generation" not in me.json
    wrong = sensor.http("POST", "/api/auth/login", body={**login, "password": "not-it-at-all"})
    assert_error(wrong, 401, "INVALID_CREDENTIALS")

    old = {"refresh_token": pair.json["refresh_token"]}
    new = sensor.http("POST", "/api/auth/refresh", body=old)
    assert new.status == 200 and new.json["refresh_token"] != old["refresh_token"]
    assert_error(sensor.http("POST", "/api/auth/refresh", body=old), 401, "INVALID_TOKEN")
    access, renewed = new.json["access_token"], {"refresh_token": new.json["refresh_token"]}
    assert sensor.http("POST", "/api/auth/logout", token=access, body=renewed).status == 204
    assert_error(sensor.http("POST", "/api/auth/refresh", body=renewed), 401, "INVALID_TOKEN")


def test_a_ticket_opens_one_websocket_once(sensor: InProcessSensor) -> None:
    ticket = sensor.http("POST", "/api/auth/ticket", token=sensor.token("ana"))
    assert ticket.status == 200 and ticket.json["expires_in"] > 0
    target = f"/ws/capture?ticket={ticket.json['ticket']}"

    async def twice() -> tuple[Any, Any, Any]:
        first = sensor.websocket(target)
        assert await first.connect() is None
        welcome = await first.receive()
        await first.disconnect()
        again = sensor.websocket(target)
        assert await again.connect() is None
        refused = await again.receive()
        closed = await again.receive()
        await again.disconnect()
        return welcome, refused, closed

    welcome, refused, closed = asyncio.run(twice())
    assert welcome["type"] == "auth_success" and welcome["user"]["username"] == "ana"
    assert refused["type"] == "auth_error"
    assert closed == Closed(CloseCode.AUTH_FAILED, "authentication failed")
    assert not sensor.hub.connections


def test_an_admin_manages_users(sensor: InProcessSensor) -> None:
    admin = sensor.token("admin")
    listed = sensor.http("GET", "/api/users", token=admin)
    assert [u["username"] for u in listed.json["users"]] == ["admin", "ana", "vic"]
    assert all("password_hash" not in u and "salt" not in u for u in listed.json["users"])
    passwordless = {"username": "eve", "role": "VIEWER"}
    no_password = sensor.http("POST", "/api/users", token=admin, body=passwordless)
    assert_error(no_password, 422, "VALIDATION_ERROR")  # every user has a password
    eve_body = {"username": "eve", "role": "VIEWER", "password": "eve's own long password"}
    made = sensor.http("POST", "/api/users", token=admin, body=eve_body)
    assert made.status == 201 and made.json["username"] == "eve"
    eve = made.json["id"]
    assert sensor.http("GET", "/api/capture/status", token=sensor.token("eve")).status == 200
    dup = sensor.http("POST", "/api/users", token=admin, body={**eve_body, "username": "ana"})
    assert_error(dup, 409, "CONFLICT")
    patched = sensor.http("PATCH", f"/api/users/{eve}", token=admin, body={"role": "ANALYST"})
    assert patched.status == 200 and patched.json["role"] == "ANALYST"
    assert sensor.http("GET", f"/api/users/{eve}", token=admin).json["role"] == "ANALYST"
    assert sensor.http("DELETE", f"/api/users/{eve}", token=admin).status == 204
    assert_error(sensor.http("GET", f"/api/users/{eve}", token=admin), 404, "NOT_FOUND")
    assert_error(sensor.http("DELETE", "/api/users/1", token=admin), 409, "CONFLICT")


# -- capture ------------------------------------------------------------------------------------


def test_capture_status_and_the_supervisors_refusals(sensor: InProcessSensor) -> None:
    status = sensor.http("GET", "/api/capture/status", token=sensor.token("vic"))
    assert status.status == 200
    assert status.json["state"] == "capturing" and status.json["interface"] == str(REPLAY)
    assert status.json["packets_captured"] == WRITTEN and status.json["linktype"] == 1
    admin = sensor.token("admin")
    assert_error(sensor.http("POST", "/api/capture/stop", token=admin), 409, "CONFLICT")
    bad_bpf = sensor.http("POST", "/api/capture/start", token=admin, body={"filter": "udp and ("})
    assert "udp and (" in assert_error(bad_bpf, 400, "INVALID_BPF")["detail"]
    nosuch = {"interface": "leireye-nosuch0"}
    body = assert_error(sensor.http("POST", "/api/capture/start", token=admin, body=nosuch), 400,
                        "CAPTURE_ERROR")  # fmt: skip
    assert "leireye-nosuch0" in body["detail"]
    interfaces = sensor.http("GET", "/api/capture/interfaces", token=admin)
    assert "lo" in [i["name"] for i in interfaces.json["interfaces"]]


# -- packets ------------------------------------------------------------------------------------


def test_packets_are_listed_newest_first_and_paged(get: Callable[..., Reply]) -> None:
    reply = get("/api/capture/packets?limit=1000")
    assert reply.status == 200
    body = reply.json
    assert [p["id"] for p in body["packets"]] == HELD
    assert (body["count"], body["oldest_id"], body["newest_id"]) == (CAPACITY, 20, WRITTEN)
    assert body["next_before"] is None
    assert packets(get, "") == body["packets"][:100]  # the default limit

    paged: list[dict[str, Any]] = []
    query = "limit=100"
    while True:
        page = get(f"/api/capture/packets?{query}").json
        paged += page["packets"]
        if page["next_before"] is None:
            break
        query = f"limit=100&before={page['next_before']}"
    assert paged == body["packets"]
    assert [p["id"] for p in packets(get, "after=250&before=260")] == list(range(259, 250, -1))


def test_ring_scans_run_in_the_scan_thread_not_on_the_event_loop(
    get: Callable[..., Reply], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan of the whole ring would hold every WebSocket frame back: the list and the
    export scan in the worker's scan thread (the export streams from Starlette's pool)."""
    threads: list[str] = []

    def watched(name: str) -> Callable[..., Any]:
        real = getattr(ringscan, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return real(*args, **kwargs)

        return call

    for name in ("newest", "start_for_newest"):
        monkeypatch.setattr(ringscan, name, watched(name))
    listed = get("/api/capture/packets?protocol=ICMP&limit=5", "vic")
    exported = get("/api/export/packets?format=csv&protocol=ICMP", "ana")
    assert (listed.status, exported.status) == (200, 200)
    assert len(threads) == 2
    assert all(name.startswith("leireye-ringscan") for name in threads), threads


FILTERS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "protocol=udp": lambda p: p["protocol"] == "UDP",
    "protocol=dns": lambda p: p["app"] == "DNS",
    "port=53": lambda p: 53 in (p["src_port"], p["dst_port"]),
    "dst_port=80": lambda p: p["dst_port"] == 80,
    "ip=10.77.1.1": lambda p: "10.77.1.1" in (p["src_ip"], p["dst_ip"]),
    "src_ip=fd77:1::/64": lambda p: str(p["src_ip"]).startswith("fd77:1::"),
    "min_length=100&max_length=200": lambda p: 100 <= p["length"] <= 200,
    "protocol=tcp&dst_ip=10.77.1.2&min_length=60": lambda p: (
        p["protocol"] == "TCP" and p["dst_ip"] == "10.77.1.2" and p["length"] >= 60
    ),
}


@pytest.mark.parametrize("query", FILTERS)
def test_filters_pick_what_the_packets_say(get: Callable[..., Reply], query: str) -> None:
    everything = packets(get, "limit=1000")
    expected = [p for p in everything if FILTERS[query](p)]
    assert expected, "the sample traffic should have some of these"
    assert packets(get, f"{query}&limit=1000") == expected
    assert packets(get, f"{query}&limit=3") == expected[:3]


def test_bad_queries_are_refused(get: Callable[..., Reply]) -> None:
    assert_error(get("/api/capture/packets?protocol=bogus"), 400, "INVALID_FILTER")
    assert_error(get("/api/capture/packets?prot=udp"), 400, "INVALID_FILTER")
    assert_error(get("/api/capture/packets?port=70000"), 400, "INVALID_FILTER")
    assert_error(get("/api/capture/packets?limit=0"), 400, "INVALID_FILTER")
    assert_error(get("/api/capture/packets?limit=1001"), 400, "BAD_REQUEST")


def test_one_packet_has_its_layers_and_bytes(
    sensor: InProcessSensor, get: Callable[..., Reply]
) -> None:
    frame = sensor.frames[WRITTEN]
    reply = get(f"/api/capture/packets/{WRITTEN}", "ana")
    assert reply.status == 200, reply.body
    body = reply.json
    assert body["id"] == WRITTEN and body["summary"]["id"] == WRITTEN
    assert body["wire_length"] == len(frame) and body["linktype"] == 1
    assert body["raw_hex"] == frame[:256].hex()
    assert body["truncated"] == (len(frame) > 256)
    assert body["hex_dump"].startswith("00000000  ")
    names = [layer["layer"] for layer in body["layers"]]
    assert names[:3] == ["Ethernet", "IPv6", "TCP"], names
    for missing in ("19", "1", str(WRITTEN + 1), "abc", "9" * 30):
        assert_error(get(f"/api/capture/packets/{missing}", "ana"), 404, "NOT_FOUND")


# -- exports ------------------------------------------------------------------------------------


def test_a_pcap_export_reads_back_as_the_stored_frames(
    sensor: InProcessSensor, get: Callable[..., Reply]
) -> None:
    reply = get("/api/export/packets?format=pcap", "ana")
    assert reply.status == 200 and reply.headers["content-type"] == "application/vnd.tcpdump.pcap"
    assert reply.headers["content-disposition"].endswith('.pcap"')
    reader = dpkt.pcap.Reader(io.BytesIO(reply.body))
    assert reader.datalink() == 1
    read = [(round(ts * 1e6), bytes(buf)) for ts, buf in reader]
    ts_us = {i: ts // 1000 for i, ts in enumerate(MIXED.ts_ns + HTTP.ts_ns, start=1)}
    assert read == [(ts_us[i], sensor.frames[i][:256]) for i in reversed(HELD)]
    tcp = get("/api/export/packets?format=pcap&protocol=tcp&limit=10", "ana")
    newest_tcp = [i for i in reversed(HELD) if sensor.record(i)["proto"] == Proto.TCP][-10:]
    frames = [bytes(buf) for _, buf in dpkt.pcap.Reader(io.BytesIO(tcp.body))]
    assert frames == [sensor.frames[i][:256] for i in newest_tcp]


def test_csv_and_json_exports(get: Callable[..., Reply]) -> None:
    listed = packets(get, "protocol=udp&limit=1000")
    rows = list(csv.reader(io.StringIO(get("/api/export/packets?format=csv&protocol=udp",
                                           "ana").text)))  # fmt: skip
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(r[0]) for r in rows[1:]] == [p["id"] for p in reversed(listed)]
    exported = json.loads(get("/api/export/packets?format=json&protocol=udp", "ana").body)
    assert [p["id"] for p in exported] == [p["id"] for p in reversed(listed)]
    assert_error(get("/api/export/packets?format=xml", "ana"), 400, "BAD_REQUEST")


# -- stats, metrics, health ---------------------------------------------------------------------


def test_stats_come_from_the_published_series(
    sensor: InProcessSensor, get: Callable[..., Reply]
) -> None:
    held = [sensor.frames[i] for i in reversed(HELD)]
    summary = get("/api/stats/summary").json
    assert summary["packets_total"] == CAPACITY
    assert summary["bytes_total"] == sum(len(f) for f in held)
    assert summary["state"] == "capturing" and summary["interface"] == str(REPLAY)
    protocols = get("/api/stats/protocols").json["protocols"]["total"]
    expected = {p: sum(1 for q in packets(get, "limit=1000") if q["protocol"] == p)
                for p in ("TCP", "UDP", "ICMP", "ICMPv6", "ARP")}  # fmt: skip
    assert {p: n for p, n in protocols.items() if n} == {p: n for p, n in expected.items() if n}
    top = get("/api/stats/top").json
    assert top["sources"] and {s["address"] for s in top["sources"]} <= {
        "10.77.1.1", "10.77.1.2", "fd77:1::1", "fd77:1::2", "fe80::1", "fe80::2",
    }  # fmt: skip
    timeline = get("/api/stats/timeline?interval=1s&metric=packets&minutes=1").json
    assert sum(p["value"] for p in timeline["points"]) == CAPACITY
    assert_error(get("/api/stats/timeline?interval=2s"), 400, "BAD_REQUEST")
    assert_error(get("/api/stats/timeline?minutes=61"), 400, "BAD_REQUEST")


def test_metrics_and_health(get: Callable[..., Reply]) -> None:
    assert_error(get("/metrics", None), 401, "AUTH_REQUIRED")
    metrics = get("/metrics")
    assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain")
    lines = metrics.text.splitlines()
    for line in (
        "leireye_capture_up 1", f"leireye_capture_packets_total {WRITTEN}",
        f"leireye_ring_written_total {WRITTEN}", f"leireye_ring_capacity {CAPACITY}",
    ):  # fmt: skip
        assert line in lines
    assert any(line.startswith('leireye_web_http_requests_total{worker="0"} ') for line in lines)
    stranger = get("/health", None)
    assert (stranger.status, stranger.json) == (200, {"status": "ok"})  # nothing more
    health = get("/health")
    assert health.status == 200
    assert health.json["ring"] == {"capacity": CAPACITY, "fill": 1.0, "last_id": WRITTEN,
                                   "shards": 1}  # fmt: skip
    assert health.json["capture"]["state"] == "capturing"
    assert health.json["capture"]["packets_captured"] == WRITTEN
