"""The `flows` channel against a real `leireye run`: live capture on `lo`, the flow process, one
uvicorn worker, real TCP conversations made by the test and real WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from leireye.accounts.tokens import issue_token, load_or_create_secret
from leireye.accounts.users import load_users
from leireye.client import FlowMessage, LeirEyeClient
from leireye.config import load_config
from tests.accounts import users_yaml
from tests.sensor import Sensor
from tests.waiting import scaled
from tests.wsclient import client, recv, recv_type, run, send

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
]

# Connections to the other port: ~6000 events, ~5 MB of `flow` messages, far more than a
# never-reading client's socket (64 KiB send buffer, 4 KiB receive) and outbox (16) hold.
FLOOD = 3000


class Servers:
    """Two TCP servers on lo: `talk` answers 200 bytes to the 100 it reads, then closes after
    its client; `flood` accepts and closes."""

    def __init__(self) -> None:
        self.talk, self.flood = _listener(), _listener()
        self.talk_port = self.talk.getsockname()[1]
        self.flood_port = self.flood.getsockname()[1]
        self._threads = [
            threading.Thread(target=self._serve, args=(self.talk, True), daemon=True),
            threading.Thread(target=self._serve, args=(self.flood, False), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self, listener: socket.socket, talk: bool) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed
                return
            with conn:
                if talk:
                    _read_exactly(conn, 100)
                    conn.sendall(b"r" * 200)
                    while conn.recv(4096):  # until the client's FIN
                        pass

    def close(self) -> None:
        for listener in (self.talk, self.flood):
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for thread in self._threads:
            thread.join(scaled(5))


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    return sock


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def conversation(port: int) -> int:
    """One TCP conversation (100 bytes up, 200 down, closed by the client): its client port."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)) as sock:
        sock.sendall(b"q" * 100)
        _read_exactly(sock, 200)
        client_port: int = sock.getsockname()[1]
    return client_port


def flood(port: int, count: int) -> None:
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)):
            pass


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    s = Servers()
    yield s
    s.close()


@pytest.fixture(scope="module")
def sensor(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Sensor, str]]:
    config = (
        "web: {port: 0, workers: 1, outbox_messages: 16, send_buffer_kib: 64}\n"
        "flows: {tcp_close_s: 1, event_interval_s: 0.5, update_ms: 200}\n"
    )
    bpf = f"tcp port {servers.talk_port} or tcp port {servers.flood_port}"
    users = users_yaml({"admin": ("ADMIN", "admin-password"), "vic": ("VIEWER", "vic-pw-12345")})
    s = Sensor(tmp_path_factory.mktemp("wsflows"), "--interface", "lo", "--bpf", bpf,
               config=config, users=users)  # fmt: skip
    port = s.web_port()
    s.wait_capturing(s.status())
    yield s, f"ws://127.0.0.1:{port}/ws/capture"
    s.kill()


def token(sensor: Sensor, name: str) -> str:
    config = load_config(sensor.config_path)
    user = next(u for u in load_users(sensor.state_dir / "users.yaml") if u.username == name)
    return issue_token(load_or_create_secret(config), user, ttl_s=600, now=time.time())


async def subscribed(ws: Any, **message: Any) -> dict[str, Any]:
    await send(ws, type="subscribe", **message)
    return await recv_type(ws, "subscribed")


def test_a_conversation_starts_and_ends_with_the_packets_counts_and_a_stuck_reader_holds_no_one(
    sensor: tuple[Sensor, str], servers: Servers
) -> None:
    running, url = sensor

    async def go() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, list[Any]]:
        # A client that never reads: a tiny receive buffer, a tiny library queue.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", int(url.split(":")[2].split("/")[0])))
        async with (
            client(f"{url}?token={token(running, 'admin')}", sock=raw, max_queue=2) as stuck,
            client(f"{url}?token={token(running, 'vic')}") as ws,
        ):
            await subscribed(stuck, channel="flows")
            talk = servers.talk_port
            reply = await subscribed(ws, channel="flows", filters={"port": talk})
            assert reply["filters"] == {"port": talk} and reply["options"] == {"interval_ms": 0}
            await subscribed(ws, channel="packets", filters={"port": talk})
            await asyncio.to_thread(flood, servers.flood_port, FLOOD)
            client_port = await asyncio.to_thread(conversation, talk)
            flows: list[dict[str, Any]] = []
            packets: list[dict[str, Any]] = []
            deadline = time.monotonic() + scaled(30)
            while not any(f["event"] == "ended" for f in flows):
                message = await recv(ws, max(0.1, deadline - time.monotonic()))
                if message["type"] == "flow":
                    flows.append(message)
                elif message["type"] == "packet":
                    packets.append(message["data"])
            # Now the stuck client reads: it was told what it missed, where it missed it.
            notices: list[Any] = []
            while not notices:
                message = await recv(stuck, 30)
                if message["type"] == "dropped":
                    notices.append(message)
            return flows, packets, client_port, notices

    flows, packets, client_port, notices = run(go())
    talk = servers.talk_port
    ours = [f for f in flows if f["data"]["orig_port"] == client_port]
    assert all(talk in (f["data"]["orig_port"], f["data"]["resp_port"]) for f in flows), flows
    events = [f["event"] for f in ours]
    assert events[0] == "started" and events[-1] == "ended", events
    assert set(events[1:-1]) <= {"updated"}
    assert len({f["data"]["uid"] for f in ours}) == 1
    ended = ours[-1]["data"]
    assert (ended["orig_ip"], ended["resp_ip"], ended["resp_port"]) == (
        "127.0.0.1", "127.0.0.1", talk,
    )  # fmt: skip
    assert (ended["transport"], ended["conn_state"], ended["end_reason"]) == ("TCP", "SF", "fin")
    assert ended["history"].startswith("ShAD"), ended["history"]
    # The counts agree with the packets channel's view of the same conversation.
    up = [p for p in packets if p["src_port"] == client_port and p["dst_port"] == talk]
    down = [p for p in packets if p["src_port"] == talk and p["dst_port"] == client_port]
    assert (ended["orig_pkts"], ended["orig_bytes"]) == (len(up), sum(p["length"] for p in up))
    assert (ended["resp_pkts"], ended["resp_bytes"]) == (len(down), sum(p["length"] for p in down))
    assert ended["orig_pkts"] >= 4 and ended["resp_pkts"] >= 3  # SYN, data, FIN, acks
    assert ended["duration_ms"] == (ended["last_ns"] - ended["first_ns"]) // 1_000_000
    reasons = {n["reason"] for n in notices}
    assert "flow_slow_consumer" in reasons and all(n["count"] > 0 for n in notices), notices


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"filters": {"min_length": 60}}, "invalid_filter", "min_length"),
        ({"filters": {"state": "CLOSED"}}, "invalid_filter", "state"),
        ({"filters": {"ip": "10.0.0.0/33"}}, "invalid_filter", "ip"),
        ({"options": {"interval_ms": "often"}}, "invalid_option", "interval_ms"),
    ],
)
def test_bad_flow_subscriptions_are_refused(
    sensor: tuple[Sensor, str], fields: dict[str, Any], code: str, field: str
) -> None:
    running, url = sensor

    async def go() -> dict[str, Any]:
        async with client(f"{url}?token={token(running, 'vic')}") as ws:
            await send(ws, type="subscribe", channel="flows", **fields)
            return await recv_type(ws, "error")

    error = run(go())
    assert (error["code"], error["field"]) == (code, field)


def test_the_python_client_streams_a_conversation(
    sensor: tuple[Sensor, str], servers: Servers
) -> None:
    running, url = sensor
    talk = servers.talk_port

    async def go() -> tuple[int, list[FlowMessage]]:
        async with LeirEyeClient(url, token=token(running, "vic")) as c:
            stream = await c.subscribe_flows(port=talk, protocol="tcp")
            client_port = await asyncio.to_thread(conversation, talk)
            got: list[FlowMessage] = []
            async with asyncio.timeout(scaled(30)):
                async for message in stream:
                    if message.data.orig_port == client_port:
                        got.append(message)
                        if message.event == "ended":
                            break
            await stream.aclose()
        return client_port, got

    client_port, got = run(go())
    assert got[0].event == "started" and got[-1].event == "ended"
    ended = got[-1].data
    assert (ended.orig_port, ended.resp_port, ended.conn_state) == (client_port, talk, "SF")
