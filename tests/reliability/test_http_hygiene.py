"""HTTP hygiene of the web workers against a live sensor (docs/security.md, "HTTP hygiene"):
deadlines for a request's head and body, a cap on one worker's connections, forwarding headers
from peers that are not trusted proxies, the `Host` check, what `/health` tells a stranger, and
the close code for a text frame that is not UTF-8.

The deadlines are configured short (1 s and 2 s, times LEIREYE_TEST_TIMEOUT_SCALE) and every
test waits for an event (the server closing the connection) with a deadline of its own."""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Iterator

import pytest

from tests.http import Http
from tests.reliability.live import ROOT_ONLY, cli_token, start, wait_roles
from tests.reliability.rawws import OP_CLOSE, OP_TEXT, RawSocket, frame
from tests.sensor import Sensor
from tests.waiting import scaled, wait_for

pytestmark = ROOT_ONLY

HEAD_S = scaled(1.0)
BODY_S = scaled(2.0)
CAP = 16
ADDRESS_FAILURES = 5


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    config = (
        f"web: {{port: 0, workers: 1, header_timeout_s: {HEAD_S}, body_timeout_s: {BODY_S}, "
        f"max_connections: {CAP}}}\n"
        f"auth: {{login_failures_per_address: {ADDRESS_FAILURES}, login_window_s: 60, "
        "auth_timeout_s: 60}\n"
    )
    users = {"admin": "ADMIN", "vera": "VIEWER"}
    s = start(tmp_path_factory.mktemp("hygiene"), "udp and dst port 9", users, config)
    yield s
    s.kill()


@pytest.fixture(scope="module")
def worker(sensor: Sensor) -> int:
    """The web worker's pid."""
    return wait_roles(sensor, 1)["web-0"]


@pytest.fixture(scope="module")
def idle_fds(sensor: Sensor, worker: int) -> int:
    """The worker's open descriptors with no client connected (after a first request)."""
    Http(sensor.web_port()).get("/health")
    return wait_for(lambda: _stable_fds(worker), 10, "the worker's descriptors to settle")


def _stable_fds(pid: int) -> int:
    first = open_fds(pid)
    _, _, _ = select.select([], [], [], 0.2)  # two looks 0.2 s apart agree: no close pending
    return first if open_fds(pid) == first else 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=scaled(5))


def until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection (EOF or reset); fails at
    `deadline` (time.monotonic) if the connection is still open."""
    got = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk
    raise AssertionError(f"the server left the connection open (it sent {got[:80]!r})")


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length (the connection stays open)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


# -- deadlines -------------------------------------------------------------------------------

PARTIAL_HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1"
SLOW_BODY = (
    b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 200\r\n\r\n{"username": '
)
UNREAD_BODY = b"POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 200\r\n\r\nxx"


def test_slow_and_silent_clients_are_closed_by_the_head_and_body_deadlines(
    sensor: Sensor, worker: int, idle_fds: int
) -> None:
    """Silent connections, heads that never end, bodies that never end (one the app waits
    for, one it answered without reading) and a keep-alive connection whose second head never
    ends: every one is closed by the server, 408 where a request had begun, and each held
    exactly one descriptor of the worker until then."""
    port = sensor.web_port()
    kinds = {"silent": b"", "partial head": PARTIAL_HEAD, "slow body": SLOW_BODY,
             "unread body": UNREAD_BODY}  # fmt: skip
    socks = {kind: [connect(port) for _ in range(3)] for kind in kinds}
    kept_alive = connect(port)
    try:
        for kind, payload in kinds.items():
            for sock in socks[kind]:
                sock.sendall(payload)
        kept_alive.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_of(read_response(kept_alive)) == 200
        kept_alive.sendall(PARTIAL_HEAD)
        opened = 3 * len(kinds) + 1
        held = wait_for(
            lambda: (n := open_fds(worker)) >= idle_fds + opened and n, HEAD_S / 2,
            "one descriptor per connection",
        )  # fmt: skip
        deadline = time.monotonic() + BODY_S + scaled(10)
        replies = {kind: [status_of(until_closed(s, deadline)) for s in socks[kind]]
                   for kind in kinds}  # fmt: skip
        replies["kept alive"] = [status_of(until_closed(kept_alive, deadline))]
    finally:
        for sock in [kept_alive, *(s for group in socks.values() for s in group)]:
            sock.close()
    assert replies == {"silent": [0] * 3, "partial head": [408] * 3, "slow body": [408] * 3,
                       "unread body": [404] * 3, "kept alive": [408]}  # fmt: skip
    wait_for(lambda: open_fds(worker) <= idle_fds, 10, "the worker's descriptors to be freed")
    print(f"\nworker descriptors: idle {idle_fds}, with {opened} slow clients {held}")
    assert "Traceback" not in sensor.log


def test_a_head_sent_a_byte_at_a_time_is_cut_at_its_deadline(sensor: Sensor) -> None:
    """The head deadline runs from the connection's start, not from the last byte received:
    a client that keeps dripping header bytes is closed all the same."""
    with connect(sensor.web_port()) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ")
        deadline = time.monotonic() + HEAD_S + scaled(10)
        reply = None
        while reply is None:
            assert time.monotonic() < deadline, "the dripping client was never closed"
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                reply = b""
                break
            readable, _, _ = select.select([sock], [], [], 0.25)  # the client's pace
            if readable:
                reply = until_closed(sock, deadline)
    assert status_of(reply) in (0, 408)


def test_a_worker_holds_at_most_max_connections(sensor: Sensor, worker: int, idle_fds: int) -> None:
    """WebSockets count against the cap, and a connection over it is answered 503 and closed
    at once, before it has sent a byte; a freed slot is usable again."""
    port = sensor.web_port()
    wait_for(lambda: open_fds(worker) <= idle_fds, 10, "earlier connections to be gone")
    sockets = [RawSocket(port) for _ in range(CAP)]
    try:
        assert [raw.status for raw in sockets] == [101] * CAP
        with connect(port) as extra:
            reply = until_closed(extra, time.monotonic() + scaled(5))
        assert status_of(reply) == 503, reply
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error_code"] == "SERVICE_UNAVAILABLE"
        assert open_fds(worker) <= idle_fds + CAP + 1
        sockets.pop().close()
        wait_for(lambda: _health_status(port) == 200, 10, "a freed slot")
    finally:
        for raw in sockets:
            raw.close()


def _health_status(port: int) -> int:
    try:
        return Http(port).get("/health", timeout=5).status
    except OSError:  # refused at the cap: the answer may come as a reset
        return 0


# -- forwarding headers ----------------------------------------------------------------------


def test_forwarded_for_from_an_untrusted_peer_is_ignored(sensor: Sensor) -> None:
    """25 failed logins from 127.0.0.1, each naming another client in X-Forwarded-For and
    Forwarded: the per-address limit counts them as one address, and the log names the real
    one."""
    http = Http(sensor.web_port())
    statuses = [
        http.post(
            "/api/auth/login",
            {"username": f"ghost{i}", "password": "not-the-password"},
            headers={"X-Forwarded-For": f"203.0.113.{i}", "Forwarded": f"for=198.51.100.{i}"},
        ).status
        for i in range(25)
    ]
    assert statuses == [401] * ADDRESS_FAILURES + [429] * (25 - ADDRESS_FAILURES)
    wait_for(lambda: "failed login for 'ghost0' from 127.0.0.1" in sensor.log, 10, "the log")
    assert "203.0.113." not in sensor.log and "198.51.100." not in sensor.log


def test_forwarded_proto_from_an_untrusted_peer_does_not_make_a_request_https(
    sensor: Sensor,
) -> None:
    """`X-Forwarded-Proto: https` would make the page origin https://127.0.0.1:PORT the
    sensor's own; from a peer that is no trusted proxy the request stays plain ws."""
    port = sensor.web_port()
    forged = {"Origin": f"https://127.0.0.1:{port}", "X-Forwarded-Proto": "https"}
    with RawSocket(port, headers=forged) as raw:
        assert raw.status == 403
    with RawSocket(port, headers={"Origin": f"http://127.0.0.1:{port}"}) as raw:
        assert raw.status == 101


# -- Host ------------------------------------------------------------------------------------

FOREIGN_HOSTS = ["evil.example", "evil.example:8000", "127.0.0.1.evil.example",
                 "localhost.evil.example", "sensor.example"]  # fmt: skip


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_a_foreign_host_header_is_refused_on_http_and_websocket(sensor: Sensor, host: str) -> None:
    """The shape of DNS rebinding: a page of evil.example whose name now points at the sensor.
    Its requests carry `Host: evil.example`: 400 on HTTP (the API's error shape, for /health,
    the API and the console alike), and the WebSocket handshake is refused before accept."""
    port = sensor.web_port()
    token = cli_token(sensor, "vera")
    http = Http(port, token)
    for path in ("/health", "/api/capture/status", "/"):
        reply = http.get(path, headers={"Host": host})
        assert reply.status == 400, (path, reply.body)
        assert reply.json["error_code"] == "INVALID_HOST"
    with RawSocket(port, f"?token={token}", headers={"Host": host}) as raw:
        assert raw.status == 400


def test_the_sensors_own_names_are_allowed(sensor: Sensor) -> None:
    port = sensor.web_port()
    token = cli_token(sensor, "vera")
    own = [f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "10.1.2.3",
           "app.localhost", socket.gethostname(), f"{socket.getfqdn()}:{port}"]  # fmt: skip
    for host in own:
        assert Http(port).get("/health", headers={"Host": host}).status == 200, host
        with RawSocket(port, f"?token={token}", headers={"Host": host}) as raw:
            assert raw.status == 101, host


# -- /health ---------------------------------------------------------------------------------


def test_health_tells_a_stranger_only_that_it_is_ok(sensor: Sensor) -> None:
    port = sensor.web_port()
    anonymous = Http(port).get("/health")
    assert (anonymous.status, anonymous.json) == (200, {"status": "ok"})
    full = Http(port, cli_token(sensor, "vera")).get("/health")
    assert full.status == 200
    assert full.json["status"] == "ok" and full.json["pid"] > 0
    assert {"capture", "ring", "connections", "worker"} <= set(full.json)
    assert Http(port, "not-a-token").get("/health").status == 401


# -- WebSocket frames ------------------------------------------------------------------------


@pytest.mark.parametrize("authenticated", [False, True], ids=["before-auth", "after-auth"])
@pytest.mark.parametrize(
    "frames",
    [
        [frame(OP_TEXT, b'{"type":"ping","id":"\xc3\x28"}')],
        [frame(OP_TEXT, b'{"type":"ping","id":"\xe2\x82', fin=False), frame(0x0, b"\x28")],
    ],
    ids=["one-frame", "split-over-fragments"],
)
def test_a_text_frame_that_is_not_utf8_is_closed_with_1007(
    sensor: Sensor, authenticated: bool, frames: list[bytes]
) -> None:
    port = sensor.web_port()
    query = f"?token={cli_token(sensor, 'vera')}" if authenticated else ""
    with RawSocket(port, query) as raw:
        assert raw.status == 101
        raw.send(b"".join(frames))
        got = raw.frames_until_close(timeout=5)
    assert got and got[-1].opcode == OP_CLOSE, got
    assert got[-1].close_code == 1007
    assert "Traceback" not in sensor.log
