"""The WebSocket API against a real `leireye run`: 2 uvicorn workers, live capture on `lo`, real
clients (the `websockets` library, and the spec's own Python class)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from leireye.accounts.tokens import issue_token, load_or_create_secret
from leireye.accounts.users import load_users
from leireye.config import load_config
from leireye.wire import CloseCode
from tests.accounts import users_yaml
from tests.sensor import Sensor, send_udp
from tests.waiting import scaled, wait_for
from tests.wsclient import client, closed_with, packets, recv, recv_type, run, send

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
]

PORTS = (47000, 47999)  # the sensor captures UDP to these ports; each test uses its own
USERS = ["admin", "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "websocket-api.md"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def users_file() -> str:
    return users_yaml(
        {name: ("ADMIN" if name == "admin" else "VIEWER", f"{name}-password") for name in USERS}
    )


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    tmp = tmp_path_factory.mktemp("ws")
    config = "auth: {auth_timeout_s: 2}\nweb: {port: 0, workers: 2}\n"
    bpf = f"udp and dst portrange {PORTS[0]}-{PORTS[1]}"
    s = Sensor(tmp, "--interface", "lo", "--bpf", bpf, config=config, users=users_file())
    s.web_port()
    s.wait_capturing(s.status())
    yield s
    s.kill()


class Api:
    """The sensor's address and a token maker for one test."""

    def __init__(self, sensor: Sensor) -> None:
        self.sensor = sensor
        self.port = sensor.web_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws/capture"
        self._tokens: dict[str, str] = {}

    def token(self, user: str = "admin") -> str:
        """A token from `leireye token`, as a script user would get one."""
        if user not in self._tokens:
            cmd = [sys.executable, "-m", "leireye.cli", "token", "--user", user]
            cmd += ["-c", str(self.sensor.config_path)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
            self._tokens[user] = out.stdout.strip()
        return self._tokens[user]


_port_counter = iter(range(PORTS[0], PORTS[1]))


def udp_port() -> int:
    return next(_port_counter)


@pytest.fixture
def api(sensor: Sensor) -> Api:
    return Api(sensor)


# -- authentication ------------------------------------------------------------------------------


def test_query_token_gets_auth_success_status_and_stats(api: Api) -> None:
    async def go() -> None:
        async with client(f"{api.url}?token={api.token()}") as ws:
            first = await recv(ws)
            assert first["type"] == "auth_success"
            assert first["user"] == {"id": 1, "username": "admin", "role": "ADMIN"}
            status = await recv_type(ws, "status")
            data = status["data"]
            assert data["is_capturing"] is True and data["interface"] == "lo"
            assert {"started_at", "packets_captured", "bpf", "kernel_drops", "error"} <= set(data)
            stats = await recv_type(ws, "stats", timeout=5)
            assert {"packets_total", "packets_per_second", "bytes_per_second", "protocols"} <= set(
                stats["data"]
            )

    run(go())


def test_first_message_auth(api: Api) -> None:
    async def go() -> None:
        async with client(api.url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": api.token("alice")}))
            message = await recv(ws)
            assert message["type"] == "auth_success"
            assert message["user"]["username"] == "alice"

    run(go())


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwiZXhwIjo5OTk5OTk5OTk5fQ.",
        "x" * 10_000,
    ],
    ids=["garbage", "alg-none", "oversized"],
)
def test_forged_tokens_get_auth_error_and_a_close(api: Api, token: str) -> None:
    async def go() -> None:
        async with client(api.url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            message = await recv(ws)
            assert message == {"type": "auth_error", "message": "Invalid or expired token"}
            code, _ = await closed_with(ws)
            assert code == CloseCode.AUTH_FAILED

    run(go())
    assert token not in api.sensor.log


def test_expired_token_is_refused(api: Api) -> None:
    config = load_config(api.sensor.config_path)
    user = next(u for u in load_users(api.sensor.state_dir / "users.yaml") if u.username == "bob")
    secret = load_or_create_secret(config)
    token = issue_token(secret, user, ttl_s=60, now=time.time() - 120)

    async def go() -> None:
        async with client(f"{api.url}?token={token}") as ws:
            message = await recv(ws)
            assert message["type"] == "auth_error"
            code, _ = await closed_with(ws)
            assert code == CloseCode.AUTH_FAILED

    run(go())


def test_nothing_is_streamed_before_auth_and_silence_is_closed(api: Api) -> None:
    async def go() -> None:
        async with client(api.url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "channel": "packets"}))
            message = await recv(ws)
            assert message["type"] in ("auth_error", "error")
            code, _ = await closed_with(ws, timeout=10)  # auth_timeout_s is 2 in this sensor
            assert code == CloseCode.AUTH_TIMEOUT

    run(go())


def test_query_string_tokens_never_reach_the_log(api: Api) -> None:
    token = api.token("carol")

    async def go() -> None:
        async with client(f"{api.url}?token={token}") as ws:
            assert (await recv(ws))["type"] == "auth_success"

    run(go())
    assert "/ws/capture" in api.sensor.log  # the handshake was logged...
    assert token not in api.sensor.log  # ...without the token


def test_a_cross_site_origin_is_refused(api: Api) -> None:
    async def go() -> None:
        with pytest.raises(InvalidStatus) as info:
            async with client(f"{api.url}?token={api.token()}", origin="https://evil.example"):
                pass
        assert info.value.response.status_code == 403
        async with client(
            f"{api.url}?token={api.token()}", origin=f"http://127.0.0.1:{api.port}"
        ) as ws:
            assert (await recv(ws))["type"] == "auth_success"

    run(go())


# -- packets -------------------------------------------------------------------------------------


def test_subscribed_client_receives_the_packets_the_test_sends(api: Api) -> None:
    port = udp_port()

    async def go() -> None:
        async with client(f"{api.url}?token={api.token()}") as ws:
            await recv_type(ws, "auth_success")
            filters = {"protocol": "UDP", "port": port}
            await ws.send(
                json.dumps({"type": "subscribe", "channel": "packets", "filters": filters})
            )
            sub = await recv_type(ws, "subscribed")
            assert sub["channel"] == "packets"
            assert sub["filters"]["protocol"] == "UDP" and sub["filters"]["port"] == port
            await asyncio.to_thread(send_udp, port, 5, b"hello")
            got = await packets(ws, 5)
        ids = [p["id"] for p in got]
        assert ids == sorted(ids) and len(set(ids)) == 5
        for p in got:
            assert set(p) >= {"id", "timestamp", "src_ip", "dst_ip", "src_port", "dst_port",
                              "protocol", "length", "flags", "info"}  # fmt: skip
            assert ISO_MS.match(p["timestamp"]), p["timestamp"]
            assert (p["src_ip"], p["dst_ip"], p["dst_port"]) == ("127.0.0.1", "127.0.0.1", port)
            assert p["protocol"] == "UDP" and p["flags"] == [] and p["length"] == 14 + 20 + 8 + 5
            assert isinstance(p["info"], str) and p["info"]

    run(go())


def test_filters_are_applied_and_a_second_subscribe_replaces_them(api: Api) -> None:
    wanted, other = udp_port(), udp_port()

    async def go() -> None:
        async with client(f"{api.url}?token={api.token()}") as ws:
            await recv_type(ws, "auth_success")
            filters = {"dst_ip": "127.0.0.0/8", "port": other}
            await send(ws, type="subscribe", channel="packets", filters=filters)
            await recv_type(ws, "subscribed")
            filters = {"port": wanted, "min_length": 60}
            await send(ws, type="subscribe", channel="packets", filters=filters)
            await recv_type(ws, "subscribed")
            await asyncio.to_thread(send_udp, other, 3, b"x" * 40)
            await asyncio.to_thread(send_udp, wanted, 3, b"x")  # 43 bytes: under min_length
            await asyncio.to_thread(send_udp, wanted, 3, b"x" * 40)
            got = await packets(ws, 3)
            assert {p["dst_port"] for p in got} == {wanted}
            assert all(p["length"] >= 60 for p in got)
            with pytest.raises(TimeoutError):
                await recv_type(ws, "packet", timeout=1)

    run(go())


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"port": 70000}, "port"),
        ({"src_ip": "10.0.0.300"}, "src_ip"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_filter_names_the_field_and_changes_nothing(
    api: Api, filters: dict[str, Any], field: str
) -> None:
    port = udp_port()

    async def go() -> None:
        async with client(f"{api.url}?token={api.token()}") as ws:
            await recv_type(ws, "auth_success")
            good = {"type": "subscribe", "channel": "packets", "filters": {"port": port}}
            await ws.send(json.dumps(good))
            await recv_type(ws, "subscribed")
            await ws.send(
                json.dumps({"type": "subscribe", "channel": "packets", "filters": filters})
            )
            error = await recv_type(ws, "error")
            assert error.get("field") == field, error
            assert field in error["message"]
            await asyncio.to_thread(send_udp, port, 2)
            assert len(await packets(ws, 2)) == 2  # the previous filter still holds

    run(go())


def test_resume_with_since_loses_nothing_still_in_the_ring(api: Api) -> None:
    port = udp_port()

    async def go() -> None:
        sub = {"type": "subscribe", "channel": "packets", "filters": {"port": port}}
        async with client(f"{api.url}?token={api.token()}") as ws:
            await recv_type(ws, "auth_success")
            await ws.send(json.dumps(sub))
            await recv_type(ws, "subscribed")
            await asyncio.to_thread(send_udp, port, 3)
            first = await packets(ws, 3)
        await asyncio.to_thread(send_udp, port, 7)  # sent while disconnected
        async with client(f"{api.url}?token={api.token()}") as ws:
            await recv_type(ws, "auth_success")
            await ws.send(json.dumps({**sub, "since": first[-1]["id"]}))
            await recv_type(ws, "subscribed")
            replayed = await packets(ws, 7)
            await asyncio.to_thread(send_udp, port, 2)
            live = await packets(ws, 2)
        ids = [p["id"] for p in first + replayed + live]
        assert ids == sorted(ids) and len(set(ids)) == 12

    run(go())


# -- channels and control messages ---------------------------------------------------------------


def test_ping_pong_unsubscribe_and_bad_messages_keep_the_connection(api: Api) -> None:
    async def go() -> None:
        async with client(f"{api.url}?token={api.token()}") as ws:
            await recv_type(ws, "auth_success")
            await ws.send(json.dumps({"type": "ping", "id": 7}))
            assert (await recv_type(ws, "pong")).get("id") == 7
            await ws.send("{not json")
            assert (await recv_type(ws, "error"))["message"]
            await ws.send(json.dumps({"type": "teleport"}))
            assert (await recv_type(ws, "error"))["message"]
            await ws.send(json.dumps({"type": "subscribe", "channel": "stats",
                                      "options": {"interval_ms": 200}}))  # fmt: skip
            sub = await recv_type(ws, "subscribed")
            assert sub["channel"] == "stats"
            t0 = await recv_type(ws, "stats")
            t1 = await recv_type(ws, "stats", timeout=2)
            assert t0["data"]["timestamp"] < t1["data"]["timestamp"]
            await ws.send(json.dumps({"type": "unsubscribe", "channel": "stats"}))
            assert (await recv_type(ws, "unsubscribed"))["channel"] == "stats"
            await ws.send(json.dumps({"type": "ping"}))
            assert (await recv_type(ws, "pong"))["type"] == "pong"

    run(go())


# -- limits --------------------------------------------------------------------------------------


def test_the_sixth_connection_of_a_user_is_refused_across_workers(api: Api) -> None:
    token = api.token("dave")

    async def go() -> None:
        opened: list[ClientConnection] = []
        try:
            for _ in range(5):
                ws = await connect(f"{api.url}?token={token}", open_timeout=scaled(10))
                opened.append(ws)
                assert (await recv(ws))["type"] == "auth_success"
            async with client(f"{api.url}?token={token}") as sixth:
                error = await recv(sixth)
                assert error["type"] == "error" and error["code"] == "too_many_connections"
                code, _ = await closed_with(sixth)
                assert code == CloseCode.TOO_MANY_CONNECTIONS
            for ws in opened:  # the first five keep working
                await ws.send(json.dumps({"type": "ping", "id": 1}))
                assert (await recv_type(ws, "pong"))["id"] == 1
        finally:
            for ws in opened:
                await ws.close()

    run(go())


def test_a_frame_over_64_kb_closes_with_1009(api: Api) -> None:
    async def go() -> None:
        async with client(f"{api.url}?token={api.token('erin')}", max_size=None) as ws:
            await recv_type(ws, "auth_success")
            await ws.send(json.dumps({"type": "ping", "pad": "x" * 65_536}))
            code, _ = await closed_with(ws)
            assert code == 1009

    run(go())


def test_more_than_100_messages_a_second_is_rate_limited(api: Api) -> None:
    async def go() -> None:
        async with client(f"{api.url}?token={api.token('frank')}") as ws:
            await recv_type(ws, "auth_success")
            for i in range(101):
                await ws.send(json.dumps({"type": "ping", "id": i}))
            error = await recv_type(ws, "error")
            assert error["code"] == "rate_limited"

    run(go())


def test_a_client_that_never_reads_does_not_hold_back_one_that_does(api: Api) -> None:
    """20 000 packets at 10 000/s: the reader gets every one while the other connection never
    reads (its outbox overflows). The rate leaves the one-message-per-packet reader (a Python
    client on the same 2 cores) about 3x headroom; what the server holds at higher rates is
    benchmarks/bench_ws.py's business."""
    port = udp_port()
    count = 20_000

    async def receive_all(ws: ClientConnection) -> tuple[set[int], list[dict[str, Any]]]:
        ids: set[int] = set()
        notices: list[dict[str, Any]] = []
        skipped = 0
        while len(ids) + skipped < count:
            message = await recv(ws, timeout=30)
            if message["type"] == "packet":
                ids.add(message["data"]["id"])
            elif message["type"] == "dropped":
                notices.append(message)
                skipped += message["count"]
        return ids, notices

    async def go() -> None:
        sub = json.dumps({"type": "subscribe", "channel": "packets", "filters": {"port": port}})
        drops_before = api.sensor.status().read().kernel_drops
        async with client(f"{api.url}?token={api.token('grace')}", max_queue=1) as stuck:
            await stuck.send(sub)
            async with client(f"{api.url}?token={api.token('heidi')}") as ws:
                await recv_type(ws, "auth_success")
                await ws.send(sub)
                await recv_type(ws, "subscribed")
                sender = asyncio.create_task(
                    asyncio.to_thread(send_udp, port, count, b"z" * 200, rate=10_000)
                )
                ids, notices = await receive_all(ws)
                await sender
            stuck.transport.abort()  # closing politely would wait on its full buffers
        assert notices == [] and len(ids) == count
        assert api.sensor.status().read().kernel_drops == drops_before

    with api.sensor.explained():
        run(go())


# -- the spec's own client -----------------------------------------------------------------------


def test_the_specs_python_client_works_unchanged(api: Api) -> None:
    if not SPEC.exists():
        pytest.skip(f"the spec is not beside this checkout ({SPEC})")
    text = SPEC.read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None, "the spec's Python example"
    source = code.group(1).split("# Uso")[0]  # the class, without its usage lines
    source = source.replace("ws://localhost:8000", f"ws://127.0.0.1:{api.port}")
    namespace: dict[str, Any] = {}
    exec(compile(source, str(SPEC), "exec"), namespace)
    port = udp_port()
    seen: list[dict[str, Any]] = []
    stats_seen: list[dict[str, Any]] = []
    subscribed, all_seen, stats_came = asyncio.Event(), asyncio.Event(), asyncio.Event()

    class Client(namespace["LeirEyeWebSocket"]):  # type: ignore[misc]
        async def handle_message(self, message: dict[str, Any]) -> None:
            if message.get("type") == "subscribed":  # the spec's client ignores it; we wait on it
                subscribed.set()
            await super().handle_message(message)

        async def on_packet(self, packet: dict[str, Any]) -> None:
            if packet.get("dst_port") == port:
                seen.append(packet)
                if len(seen) == 4:
                    all_seen.set()

        async def on_stats(self, stats: dict[str, Any]) -> None:
            stats_seen.append(stats)
            stats_came.set()

    async def go() -> None:
        task = asyncio.create_task(Client(api.token()).connect())
        await asyncio.wait_for(subscribed.wait(), scaled(15))
        await asyncio.to_thread(send_udp, port, 4)
        await asyncio.wait_for(all_seen.wait(), scaled(15))
        await asyncio.wait_for(stats_came.wait(), scaled(15))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())
    assert len(seen) == 4
    assert stats_seen and "packets_per_second" in stats_seen[0]


# -- faults (last: it restarts a worker of the shared sensor) --------------------------------------


def test_a_killed_web_worker_is_restarted_and_its_connections_stop_counting(api: Api) -> None:
    token = api.token("dave")

    async def go() -> None:
        async with AsyncExitStack() as stack:
            await killed_worker(stack)

    async def killed_worker(stack: AsyncExitStack) -> None:
        opened = [await stack.enter_async_context(connect(f"{api.url}?token={token}"))
                  for _ in range(5)]  # fmt: skip
        for ws in opened:
            assert (await recv(ws))["type"] == "auth_success"
        pids = {int(line.split("pid=")[1]) for line in api.sensor.lines
                if "supervisor: web-" in line and "started pid=" in line}  # fmt: skip
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        survivors = []
        for ws in opened:  # the victim's connections drop; the others keep working
            try:
                await send(ws, type="ping", id=1)
                await recv_type(ws, "pong", timeout=5)
                survivors.append(ws)
            except (ConnectionClosed, TimeoutError):
                pass
        restarted = wait_for_line(api.sensor, "started pid=", exclude=pids)
        assert restarted
        # The dead worker's slots were freed: as many new connections as were lost now fit.
        for _ in range(5 - len(survivors)):
            ws = await stack.enter_async_context(connect(f"{api.url}?token={token}"))
            assert (await recv(ws))["type"] == "auth_success"

    run(go())


def wait_for_line(sensor: Sensor, needle: str, exclude: set[int]) -> str:
    def found() -> str:
        for line in sensor.lines:
            if (
                "supervisor: web-" in line
                and needle in line
                and (int(line.split("pid=")[1]) not in exclude)
            ):
                return line
        return ""

    return wait_for(found, 20, "a restarted web worker")
