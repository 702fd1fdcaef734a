"""GET /api/stream in-process: a conversation written to the ring (256 raw bytes a frame),
reassembled by the real app, with the roles, the errors and the raw download."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import pytest

from leireye.record import LinkType
from tests.asgi import Reply
from tests.http import assert_error
from tests.inprocess import Frames, InProcessSensor
from tests.tcpframes import ACK, FIN, SYN, frame

C, S = ("10.9.0.1", 41000), ("10.9.0.2", 8080)
OTHER = ("10.9.0.3", 41001)
T0 = time.time_ns() - 10**9
REQUEST = b"POST /upload HTTP/1.1\r\nContent-Length: 1000\r\n\r\n"
BODY = bytes(range(256)) * 4  # 1024 bytes: its frame is cut at 256 in the ring
REPLY = b"HTTP/1.1 201 Created\r\n\r\n"


def conversation() -> list[bytes]:
    n = len(REQUEST)
    return [
        frame(C, S, 100, flags=SYN),
        frame(S, C, 900, flags=SYN | ACK),
        frame(OTHER, S, 5, b"noise"),
        frame(C, S, 101, REQUEST),
        frame(C, S, 101 + n, BODY),
        frame(S, C, 901, REPLY),
        frame(C, S, 101 + n + len(BODY), flags=FIN | ACK),
    ]


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessSensor]:
    s = InProcessSensor(tmp_path_factory.mktemp("stream"), capacity=64, raw_bytes=256)
    try:
        frames = conversation()
        s.write(Frames(LinkType.EN10MB, [T0 + i * 10**6 for i in range(len(frames))], frames))
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def get(sensor: InProcessSensor) -> Callable[..., Reply]:
    tokens = {name: sensor.token(name) for name in ("ana", "vic")}

    def get(query: dict[str, str], user: str = "ana") -> Reply:
        return sensor.http("GET", f"/api/stream?{urlencode(query)}", token=tokens[user])

    return get


ENDS = {"a": f"{S[0]}:{S[1]}", "b": f"{C[0]}:{C[1]}"}


def test_reassembled_json_with_the_ring_cut_marked(get: Callable[..., Reply]) -> None:
    reply = get({"transport": "tcp", **ENDS})
    assert reply.status == 200, reply.body
    body = reply.json
    assert body["client"] == {"ip": C[0], "port": C[1]} and body["source"] == "ring"
    segs = body["segments"]
    assert [(s["direction"], s["offset"]) for s in segs] == [
        ("client", 0), ("client", len(REQUEST) + 256 - 54), ("server", 0),
    ]  # fmt: skip
    kept = 256 - 54  # the ring's 256 bytes less Ethernet, IPv4 and TCP headers
    assert base64.b64decode(segs[0]["data"]) == REQUEST + BODY[:kept]
    assert segs[1]["gap"] == len(BODY) - kept
    assert base64.b64decode(segs[2]["data"]) == REPLY
    assert body["gap_bytes"] == len(BODY) - kept and body["cut_frames"] == 1
    assert "1 frame cut at 256 bytes" in body["incomplete"]
    assert body["ended"] == {"client": "fin"} and body["frames"] == 6


def test_text_encoding_and_raw_download(get: Callable[..., Reply]) -> None:
    segs = get({"transport": "tcp", **ENDS, "encoding": "text"}).json["segments"]
    assert segs[2]["text"] == REPLY.decode()
    reply = get({"transport": "tcp", **ENDS, "format": "raw", "direction": "server"})
    assert reply.status == 200 and reply.body == REPLY
    assert reply.headers["content-type"] == "application/octet-stream"
    assert "attachment" in reply.headers["content-disposition"]
    both = get({"transport": "tcp", **ENDS, "format": "raw"})
    assert both.body == REQUEST + BODY[: 256 - 54] + REPLY
    assert both.headers["x-stream-gap-bytes"] == str(len(BODY) - 256 + 54)


def test_time_range_and_cap(get: Callable[..., Reply]) -> None:
    after = (T0 + 4 * 10**6 - 10**4) / 1e9  # from the body's frame on: no handshake, request
    body = get({"transport": "tcp", **ENDS, "from": f"{after:.6f}"}).json
    assert body["frames"] == 3 and body["client_bytes"] == 256 - 54
    body = get({"transport": "tcp", **ENDS, "max_bytes": "10"}).json
    assert body["truncated"] and body["client_bytes"] + body["server_bytes"] == 10
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 / 1e9 - 60))
    assert_error(get({"transport": "tcp", **ENDS, "to": iso}), 404, "NOT_FOUND")


def test_roles_and_bad_queries(get: Callable[..., Reply]) -> None:
    assert_error(get({"transport": "tcp", **ENDS}, "vic"), 403, "FORBIDDEN")
    assert_error(get({**ENDS, "transport": "sctp"}), 400, "BAD_REQUEST")
    assert_error(get({"transport": "tcp", "a": "10.9.0.1", "b": ENDS["b"]}), 400, "BAD_REQUEST")
    assert_error(get({"a": "[::1]:99999", "b": ENDS["b"]}), 400, "BAD_REQUEST")
    assert_error(get({**ENDS, "colour": "red"}), 400, "BAD_REQUEST")
    assert_error(get({**ENDS, "from": "yesterday"}), 400, "BAD_REQUEST")
    assert_error(get({**ENDS, "max_bytes": str(1 << 40)}), 400, "BAD_REQUEST")
    assert_error(get({"transport": "udp", **ENDS}), 404, "NOT_FOUND")
    assert_error(get({"a": "[fd00::1]:80", "b": ENDS["b"]}), 404, "NOT_FOUND")


def test_a_flow_names_its_conversation_and_time_range() -> None:
    from leireye.flows.model import Flow
    from leireye.store.follow import Conversation
    from leireye.web.api.stream import conversation_of

    flow = Flow(uid="C1", vlan=None, transport="TCP", ip_version=4, orig_ip=C[0],
                orig_port=C[1], resp_ip=S[0], resp_port=S[1], app=None, first_ns=5,
                last_ns=9)  # fmt: skip
    assert conversation_of(flow) == (Conversation("TCP", C, S), 5, 9)
    icmp = Flow(uid="C2", vlan=None, transport="ICMP", ip_version=4, orig_ip=C[0], orig_port=8,
                resp_ip=S[0], resp_port=0, app=None, first_ns=5, last_ns=9)  # fmt: skip
    with pytest.raises(ValueError, match="no stream"):
        conversation_of(icmp)
