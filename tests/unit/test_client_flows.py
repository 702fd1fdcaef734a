"""`flows()` / `subscribe_flows()` against a loopback server the test scripts: the subscribe
message, confirmation before returning, `flow` events, gaps of their own, a refusal."""

from __future__ import annotations

import asyncio

import pytest

from leireye.client import FlowMessage, Gap, SubscriptionError
from leireye.wire import Dropped, ErrorMessage, FlowData, Subscribed
from tests.unit.test_client_subscribe import READ_ON, Peer, client, server


def flow(event: str, uid: str = "C0000000000000001") -> FlowMessage:
    data = FlowData(
        uid, None, "TCP", 4, "10.0.0.1", 40000, "10.0.0.2", 443, "TLS",
        1_700_000_000_000_000_000, 1_700_000_001_000_000_000, 5, 600, 4, 5000, "SF",
        "ShADadFf", "fin" if event == "ended" else None, None, None, "example.org", None,
        None, None, None, None, "2023-11-14T22:13:20.000Z", "2023-11-14T22:13:21.000Z", 1000,
    )  # fmt: skip
    return FlowMessage(event, data)


def test_subscribe_flows_returns_once_confirmed_and_streams_events_and_their_gaps() -> None:
    async def go() -> None:
        read_on, answer = asyncio.Event(), asyncio.Event()

        async def script(peer: Peer) -> None:
            subscribe = await peer.expect("subscribe")
            assert subscribe["channel"] == "flows"
            assert subscribe["filters"] == {"port": 443, "min_bytes": 100, "state": "SF"}
            assert subscribe["options"] == {"interval_ms": 5000}
            await peer.send(READ_ON)
            await answer.wait()
            await peer.send(Subscribed("flows", {"port": 443}))
            await peer.send(flow("started"))
            await peer.send(Dropped("slow_consumer", 9, "9 packets ..."))  # not the flows'
            await peer.send(Dropped("flow_slow_consumer", 3, "3 flow events ..."))
            await peer.send(flow("ended"))

        url, stop = await server(script)
        async with client(url, read_on) as c:
            subscribing = asyncio.create_task(
                c.subscribe_flows(port=443, min_bytes=100, state="SF", interval_ms=5000, gaps=True)
            )
            await asyncio.wait_for(read_on.wait(), 10)
            assert not subscribing.done(), "returned before the server confirmed"
            answer.set()
            stream = await asyncio.wait_for(subscribing, 10)
            items = [await anext(stream) for _ in range(3)]
            assert isinstance(items[0], FlowMessage) and items[0].event == "started"
            assert items[1] == Gap("flow_slow_consumer", 3, "3 flow events ...")
            assert isinstance(items[2], FlowMessage) and items[2].data.end_reason == "fin"
            await stream.aclose()
        stop()

    asyncio.run(go())


def test_a_refused_flows_subscription_raises() -> None:
    async def go() -> None:
        async def script(peer: Peer) -> None:
            await peer.expect("subscribe")
            await peer.send(ErrorMessage("invalid_channel", "no flow process", "channel"))

        url, stop = await server(script)
        async with client(url) as c:
            with pytest.raises(SubscriptionError) as info:
                await asyncio.wait_for(c.subscribe_flows(), 10)
            assert (info.value.code, info.value.field) == ("invalid_channel", "channel")
        stop()

    asyncio.run(go())


def test_a_reconnect_says_flow_events_may_be_missing() -> None:
    async def go() -> None:
        async def dropped(peer: Peer) -> None:
            await peer.expect("subscribe")
            await peer.send(Subscribed("flows"))
            await peer.send(flow("started"))
            await peer.ws.close(1001, "going away")

        async def answered(peer: Peer) -> None:
            assert (await peer.expect("subscribe"))["channel"] == "flows"
            await peer.send(Subscribed("flows"))
            await peer.send(flow("ended"))

        url, stop = await server(dropped, answered)
        async with client(url) as c:
            stream = c.flows(gaps=True)
            items = [await asyncio.wait_for(anext(stream), 10) for _ in range(3)]
            assert [getattr(i, "event", getattr(i, "reason", None)) for i in items] == [
                "started", "reconnect", "ended",
            ]  # fmt: skip
            await stream.aclose()
        stop()

    asyncio.run(go())
