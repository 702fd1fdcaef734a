"""`subscribe_packets` and `subscribe_stats` against a loopback server whose answers the test
holds back: they return only once `subscribed` came, raise on a refusal or a closed client, and
wait through a reconnect. No real sensor."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
from websockets.asyncio.server import ServerConnection, serve

from leireye.client import ClientError, LeirEyeClient, SubscriptionError
from leireye.wire import (
    AuthSuccess,
    ErrorMessage,
    LimitsInfo,
    PacketData,
    PacketsMessage,
    StatsData,
    StatsMessage,
    StatusData,
    StatusMessage,
    Subscribed,
    UserInfo,
)

LIMITS = LimitsInfo(5, 100, 65536, 300.0, 4096, 1000, 100, 60000)
HELLO = AuthSuccess(UserInfo(1, "admin", "ADMIN"), LIMITS, None)
NO_API = "http://127.0.0.1:9"  # nothing answers /health: the stream starts with since=None
Script = Callable[["Peer"], Awaitable[None]]


def packet(i: int) -> PacketData:
    return PacketData(i, "2024-01-20T10:30:01.123Z", "10.0.0.1", "10.0.0.2", 5353, 53,
                      "UDP", 60, [], "DNS A example.org", "DNS", 4, None)  # fmt: skip


def stats(total: int) -> StatsData:
    return StatsData(total, 1, 60, {"UDP": 1}, 60 * total, {}, 0, 0, 0, 0, 0, 0,
                     "2024-01-20T10:30:01Z")  # fmt: skip


# Sent before the held-back answer: once the client has handled it, a subscribe that did not
# wait for its answer would have returned already.
READ_ON = StatusMessage(StatusData(True, "lo", None, 0, "capturing", "", "", 0, 0, None))


class Peer:
    """One server side of a connection, as a script drives it."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    async def recv(self) -> dict[str, Any]:
        message: dict[str, Any] = msgspec.json.decode(await self.ws.recv())
        return message

    async def expect(self, kind: str) -> dict[str, Any]:
        while (message := await self.recv())["type"] != kind:
            assert message["type"] in ("ping", "unsubscribe"), message
        return message

    async def send(self, message: msgspec.Struct) -> None:
        await self.ws.send(msgspec.json.encode(message).decode())


async def server(*scripts: Script) -> tuple[str, Callable[[], None]]:
    """A server that plays `scripts[n]` on its n-th connection (after authenticating it), then
    keeps the connection open; the URL and a function that stops it."""
    connections = iter(scripts)

    async def handler(ws: ServerConnection) -> None:
        peer = Peer(ws)
        assert (await peer.recv())["type"] == "auth"
        await peer.send(HELLO)
        await next(connections)(peer)
        await ws.wait_closed()

    running = await serve(handler, "127.0.0.1", 0)
    port = running.sockets[0].getsockname()[1]
    return f"ws://127.0.0.1:{port}/ws/capture", running.close


def client(url: str, read_on: asyncio.Event | None = None) -> LeirEyeClient:
    """A client that reconnects at once; `read_on` is set when it has handled `READ_ON`."""

    async def no_wait(seconds: float) -> None:
        await asyncio.sleep(0)

    def on_status(status: StatusData) -> None:
        if read_on is not None:
            read_on.set()

    return LeirEyeClient(url, token="t", api_url=NO_API, sleep=no_wait, on_status=on_status)


def test_subscribe_packets_returns_only_once_the_server_confirmed() -> None:
    async def go() -> None:
        read_on, answer = asyncio.Event(), asyncio.Event()

        async def script(peer: Peer) -> None:
            subscribe = await peer.expect("subscribe")
            assert subscribe["channel"] == "packets" and subscribe["filters"] == {"port": 53}
            await peer.send(READ_ON)
            await answer.wait()
            await peer.send(Subscribed("packets", {"port": 53}))
            await peer.send(PacketsMessage([packet(7), packet(8)]))

        url, stop = await server(script)
        async with client(url, read_on) as c:
            subscribing = asyncio.create_task(c.subscribe_packets(port=53))
            await asyncio.wait_for(read_on.wait(), 10)
            assert not subscribing.done(), "returned before the server confirmed"
            answer.set()
            stream = await asyncio.wait_for(subscribing, 10)
            assert [(await anext(stream)).id, (await anext(stream)).id] == [7, 8]
            await stream.aclose()
        stop()

    asyncio.run(go())


def test_a_refused_filter_raises_subscription_error_and_frees_the_slot() -> None:
    async def go() -> None:
        async def script(peer: Peer) -> None:
            await peer.expect("subscribe")
            await peer.send(ErrorMessage("invalid_filter", "port must be 0..65535", "port"))
            assert (await peer.expect("subscribe"))["filters"] == {"port": 53}
            await peer.send(Subscribed("packets", {"port": 53}))

        url, stop = await server(script)
        async with client(url) as c:
            with pytest.raises(SubscriptionError) as info:
                await asyncio.wait_for(c.subscribe_packets(port=70000), 10)
            assert (info.value.code, info.value.field) == ("invalid_filter", "port")
            stream = await asyncio.wait_for(c.subscribe_packets(port=53), 10)
            await stream.aclose()
        stop()

    asyncio.run(go())


def test_closing_the_client_ends_a_subscribe_still_waiting() -> None:
    async def go() -> None:
        asked = asyncio.Event()

        async def script(peer: Peer) -> None:
            await peer.expect("subscribe")
            asked.set()  # and never answers

        url, stop = await server(script)
        c = client(url)
        await c.connect()
        subscribing = asyncio.create_task(c.subscribe_packets(port=53))
        await asyncio.wait_for(asked.wait(), 10)
        await c.close()
        with pytest.raises(ClientError, match="closed before the subscription was confirmed"):
            await asyncio.wait_for(subscribing, 10)
        with pytest.raises(ClientError, match="closed"):  # and after close: at once
            await asyncio.wait_for(c.subscribe_stats(), 10)
        stop()

    asyncio.run(go())


def test_a_reconnect_before_the_answer_waits_for_the_next_connections() -> None:
    async def go() -> None:
        async def dropped(peer: Peer) -> None:
            await peer.expect("subscribe")
            await peer.ws.close(1001, "going away")  # no answer on this connection

        async def answered(peer: Peer) -> None:
            await peer.expect("subscribe")
            await peer.send(Subscribed("packets", {"port": 53}))
            await peer.send(PacketsMessage([packet(1)]))

        url, stop = await server(dropped, answered)
        async with client(url) as c:
            stream = await asyncio.wait_for(c.subscribe_packets(port=53, gaps=True), 10)
            assert c.connections == 2
            items = [await anext(stream), await anext(stream)]
            assert getattr(items[0], "reason", None) == "reconnect"  # no id to resume from
            assert getattr(items[1], "id", None) == 1
            await stream.aclose()
        stop()

    asyncio.run(go())


def test_subscribe_stats_returns_once_confirmed_and_then_streams() -> None:
    async def go() -> None:
        read_on, answer = asyncio.Event(), asyncio.Event()

        async def script(peer: Peer) -> None:
            subscribe = await peer.expect("subscribe")
            assert subscribe["channel"] == "stats" and subscribe["options"] == {"interval_ms": 200}
            await peer.send(READ_ON)
            await answer.wait()
            await peer.send(Subscribed("stats"))
            await peer.send(StatsMessage(stats(42)))

        url, stop = await server(script)
        async with client(url, read_on) as c:
            subscribing = asyncio.create_task(c.subscribe_stats(interval_ms=200))
            await asyncio.wait_for(read_on.wait(), 10)
            assert not subscribing.done(), "returned before the server confirmed"
            answer.set()
            stream = await asyncio.wait_for(subscribing, 10)
            assert (await anext(stream)).packets_total == 42
            await stream.aclose()
        stop()

    asyncio.run(go())
