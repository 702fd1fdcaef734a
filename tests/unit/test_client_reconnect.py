"""The reconnect loop's schedule, with an injected sleep: a loopback server that authenticates
once, then goes away for good. No real sensor: what is checked is the client's timing."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from websockets.asyncio.server import ServerConnection, serve

from leireye.client import ConnectionFailed, LeirEyeClient
from leireye.wire import AuthSuccess, LimitsInfo, UserInfo

LIMITS = LimitsInfo(5, 100, 65536, 300.0, 4096, 1000, 100, 60000)
HELLO = msgspec.json.encode(AuthSuccess(UserInfo(1, "admin", "ADMIN"), LIMITS, None)).decode()


def test_reconnects_follow_the_backoff_schedule_through_the_injected_sleep() -> None:
    async def go() -> None:
        slept: list[float] = []
        enough = asyncio.Event()

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            if len(slept) == 7:
                enough.set()
                await asyncio.Event().wait()  # until the client is closed

        async def handler(ws: ServerConnection) -> None:
            assert msgspec.json.decode(await ws.recv())["type"] == "auth"
            await ws.send(HELLO)
            server.close()  # nobody will answer the reconnects
            await ws.close(1001, "going away")

        server = await serve(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/ws/capture"
        client = LeirEyeClient(url, token="t", sleep=sleep, api_url="http://127.0.0.1:9")
        await client.connect()
        await asyncio.wait_for(enough.wait(), 10)
        await client.close()
        assert slept == [1, 2, 5, 10, 30, 30, 30]
        assert client.connections == 1

    asyncio.run(go())


def test_the_first_connection_failing_raises_instead_of_retrying() -> None:
    async def go() -> None:
        async def sleep(seconds: float) -> None:
            raise AssertionError("no retry expected before the first connection")

        server = await serve(lambda ws: ws.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionFailed, match="cannot connect"):
            await LeirEyeClient(f"ws://127.0.0.1:{port}/", token="t", sleep=sleep).connect()

    asyncio.run(go())
