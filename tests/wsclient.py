"""WebSocket client helpers for integration tests: a real `websockets` client and waits on
messages (every wait has a timeout, scaled by LEIREYE_TEST_TIMEOUT_SCALE)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.waiting import scaled


@asynccontextmanager
async def client(url: str, **kw: Any) -> AsyncIterator[ClientConnection]:
    async with connect(url, open_timeout=scaled(10), close_timeout=scaled(5), **kw) as ws:
        yield ws


async def recv(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return await _recv_within(ws, scaled(timeout))


async def _recv_within(ws: ClientConnection, seconds: float) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), max(0.01, seconds))
    assert isinstance(raw, str), "every server message is a text frame"
    message: dict[str, Any] = json.loads(raw)
    return message


async def recv_type(ws: ClientConnection, kind: str, timeout: float = 10) -> dict[str, Any]:
    """The next message of type `kind`, skipping the other types that arrive in between."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        message = await _recv_within(ws, deadline - time.monotonic())
        if message["type"] == kind:
            return message


async def send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))


async def packets(ws: ClientConnection, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        message = await recv_type(ws, "packet", timeout)
        got.append(message["data"])
    return got


async def closed_with(ws: ClientConnection, timeout: float = 10) -> tuple[int | None, str]:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), scaled(timeout))
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        return (rcvd.code, rcvd.reason) if rcvd else (None, "")


def run(coro: Any) -> Any:
    return asyncio.run(coro)
