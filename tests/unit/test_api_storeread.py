"""The REST API reading the packet store in-process: packet detail whole from the store once
the ring has moved on (or cut the frame), exports and the packet list of a time range."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import dpkt
import pytest

from leireye.record import Proto
from tests.asgi import Reply
from tests.http import assert_error
from tests.inprocess import Frames, InProcessSensor, read_pcap

CAPACITY = 64
MIXED = read_pcap("mixed.pcap")
_HTTP = read_pcap("http.pcap")
SHIFT = MIXED.ts_ns[-1] + 1_000_000 - _HTTP.ts_ns[0]  # after MIXED, so ids and times agree
HTTP = Frames(_HTTP.linktype, [t + SHIFT for t in _HTTP.ts_ns], _HTTP.frames)
WRITTEN = len(MIXED.frames) + len(HTTP.frames)
TS = dict(enumerate(MIXED.ts_ns + HTTP.ts_ns, start=1))


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessSensor]:
    s = InProcessSensor(tmp_path_factory.mktemp("storeread"), capacity=CAPACITY)
    try:
        s.write(MIXED)
        s.write(HTTP)
        s.store(1, 1, MIXED.ts_ns + HTTP.ts_ns, MIXED.frames + HTTP.frames)
        s.capturing(MIXED, WRITTEN)
        s.hub.tick(s.hub.clock())
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def get(sensor: InProcessSensor) -> Callable[..., Reply]:
    tokens = {name: sensor.token(name) for name in ("ana", "vic")}

    def get(target: str, user: str = "ana") -> Reply:
        return sensor.http("GET", target, token=tokens[user])

    return get


def digest(frames: list[bytes]) -> list[str]:
    return [hashlib.sha256(f).hexdigest() for f in frames]


# -- detail ------------------------------------------------------------------------------------


def test_detail_of_an_overwritten_packet_comes_whole_from_the_store(
    sensor: InProcessSensor, get: Callable[..., Reply]
) -> None:
    big = next(i for i in range(1, WRITTEN - CAPACITY) if len(sensor.frames[i]) > 256)
    for packet_id in (1, big):
        body = get(f"/api/capture/packets/{packet_id}").json
        frame = sensor.frames[packet_id]
        assert body["source"] == "store" and body["id"] == packet_id
        assert body["raw_hex"] == frame.hex() and body["stored_length"] == len(frame)
        assert body["truncated"] is False and body["summary"]["id"] == packet_id
        record = sensor.record(packet_id)
        assert body["summary"]["length"] == len(frame)
        assert body["summary"]["dst_port"] == (int(record["dst_port"]) or None)
        assert body["layers"][0]["layer"] == "Ethernet"
    assert_error(get(f"/api/capture/packets/{WRITTEN + 1}"), 404, "NOT_FOUND")


def test_detail_in_the_ring_is_the_rings_unless_it_cut_the_frame(
    sensor: InProcessSensor, get: Callable[..., Reply]
) -> None:
    held = range(WRITTEN - CAPACITY + 1, WRITTEN + 1)
    small = next(i for i in held if len(sensor.frames[i]) <= 256)
    cut = next(i for i in held if len(sensor.frames[i]) > 256)
    assert get(f"/api/capture/packets/{small}").json["source"] == "ring"
    body = get(f"/api/capture/packets/{cut}").json
    assert body["source"] == "store" and body["raw_hex"] == sensor.frames[cut].hex()
    assert body["summary"]["id"] == cut and body["truncated"] is False


# -- export of a time range -------------------------------------------------------------------


def seconds(ts_ns: int) -> str:
    return f"{ts_ns // 10**9}.{ts_ns % 10**9:09d}"


def pcap_frames(reply: Reply) -> list[bytes]:
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/vnd.tcpdump.pcap"
    return [bytes(buf) for _, buf in dpkt.pcap.Reader(io.BytesIO(reply.body))]


def test_a_range_export_is_every_frame_whole_from_the_store(
    sensor: InProcessSensor, get: Callable[..., Reply]
) -> None:
    everything = f"from={seconds(TS[1])}&to={seconds(TS[WRITTEN])}"
    reply = get(f"/api/export/packets?format=pcap&{everything}")
    sent = [sensor.frames[i] for i in range(1, WRITTEN + 1)]
    assert digest(pcap_frames(reply)) == digest(sent)
    assert reply.headers["x-leireye-past-retention"] == "false"
    assert reply.headers["x-leireye-store-oldest"].startswith("20")
    early = get(
        f"/api/export/packets?format=pcap&from={seconds(TS[1] - 10**9)}&to={seconds(TS[3])}"
    )
    assert early.headers["x-leireye-past-retention"] == "true"
    assert digest(pcap_frames(early)) == digest(sent[:3])
    middle = get(f"/api/export/packets?from={seconds(TS[10])}&to={seconds(TS[20])}&limit=5")
    assert digest(pcap_frames(middle)) == digest(sent[9:14])


def test_a_range_export_filters_like_the_ring(
    sensor: InProcessSensor, get: Callable[..., Reply]
) -> None:
    everything = f"from={seconds(TS[1])}&to={seconds(TS[WRITTEN])}"
    tcp = [i for i in range(1, WRITTEN + 1) if sensor.record(i)["proto"] == Proto.TCP]
    frames = pcap_frames(get(f"/api/export/packets?format=pcap&protocol=tcp&{everything}"))
    assert digest(frames) == digest([sensor.frames[i] for i in tcp]) and len(tcp) > 10
    rows = list(
        csv.reader(
            io.StringIO(get(f"/api/export/packets?format=csv&protocol=tcp&{everything}").text)
        )
    )
    assert [int(r[0]) for r in rows[1:]] == tcp
    exported = json.loads(get(f"/api/export/packets?format=json&port=80&{everything}").body)
    port80 = [i for i in tcp if 80 in (sensor.record(i)["src_port"], sensor.record(i)["dst_port"])]
    assert [p["id"] for p in exported] == port80 and port80
    assert_error(get("/api/export/packets?from=yesterday"), 400, "BAD_REQUEST")
    assert_error(get(f"/api/export/packets?{everything}", "vic"), 403, "FORBIDDEN")


def test_a_range_export_needs_the_store(tmp_path: Any) -> None:
    s = InProcessSensor(tmp_path, capacity=CAPACITY, store={"enabled": False})
    try:
        reply = s.http("GET", "/api/export/packets?from=1&to=2", token=s.token("ana"))
        assert_error(reply, 409, "CONFLICT")
    finally:
        s.close()


def test_the_packet_list_of_a_time_range_pages_through_the_store(
    sensor: InProcessSensor, get: Callable[..., Reply]
) -> None:
    everything = f"from={seconds(TS[1])}&to={seconds(TS[WRITTEN])}&protocol=tcp"
    tcp = [i for i in range(1, WRITTEN + 1) if sensor.record(i)["proto"] == Proto.TCP]
    seen: list[int] = []
    after = ""
    while True:
        page = get(f"/api/capture/packets?{everything}&limit=40{after}", "vic").json
        assert page["source"] == "store" and page["past_retention"] is False
        seen += [p["id"] for p in page["packets"]]
        if page["next_after"] is None:
            break
        after = f"&after={page['next_after']}"
    assert seen == tcp
    first = get(f"/api/capture/packets?from={seconds(TS[1])}&to={seconds(TS[1])}", "vic").json
    assert first["packets"][0]["id"] == 1 and first["count"] == 1
    assert first["packets"][0]["length"] == len(sensor.frames[1])


def test_a_browser_download_with_a_ticket_instead_of_the_header(
    sensor: InProcessSensor, get: Callable[..., Reply]
) -> None:
    def ticket(user: str) -> str:
        reply = sensor.http("POST", "/api/auth/ticket", token=sensor.token(user))
        assert reply.status == 200, reply.body
        value: str = reply.json["ticket"]
        return value

    everything = f"from={seconds(TS[1])}&to={seconds(TS[WRITTEN])}"
    once = ticket("ana")
    reply = sensor.http("GET", f"/api/export/packets?format=pcap&{everything}&ticket={once}")
    assert digest(pcap_frames(reply)) == digest([sensor.frames[i] for i in range(1, WRITTEN + 1)])
    again = sensor.http("GET", f"/api/export/packets?format=pcap&{everything}&ticket={once}")
    assert_error(again, 401, "INVALID_TOKEN")  # a ticket works once
    viewer = sensor.http("GET", f"/api/export/packets?ticket={ticket('vic')}")
    assert_error(viewer, 403, "FORBIDDEN")


def test_pages_of_a_range_stored_by_two_shards_follow_time_not_ids(tmp_path: Any) -> None:
    """With two capture shards, time order is not id order (each shard's batch takes its ids
    when it is written): paging on `after=next_after` gives every packet once, in time order."""
    s = InProcessSensor(tmp_path, capacity=CAPACITY, shards=2)
    try:
        n, base = 100, 1_700_000_000 * 10**9
        frames = MIXED.frames[:n]
        s.store(MIXED.linktype, 1, [base + 2000 * i + 1000 for i in range(n)], frames, shard=0)
        s.store(MIXED.linktype, n + 1, [base + 2000 * i for i in range(n)], frames, shard=1)
        in_time = [
            i for pair in zip(range(n + 1, 2 * n + 1), range(1, n + 1), strict=True) for i in pair
        ]
        token = s.token("ana")
        span = f"from={seconds(base)}&to={seconds(base + 2000 * n)}"
        seen: list[int] = []
        after = ""
        while True:
            page = s.http("GET", f"/api/capture/packets?{span}&limit=30{after}", token=token).json
            seen += [p["id"] for p in page["packets"]]
            if page["next_after"] is None:
                break
            after = f"&after={page['next_after']}"
        assert seen == in_time
    finally:
        s.close()
