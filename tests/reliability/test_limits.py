"""The WebSocket limits test_websocket.py does not reach: the idle timeout, the exact 64 KiB
boundary, the close for rate-limit abuse, and clients that stall in the middle of a frame.

Already covered there (not repeated): the 6th connection of a user, the 101st message in a second
(`rate_limited`), a frame well over 64 KiB (1009), a cross-site `Origin` (403)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from leireye.wire import CloseCode
from tests.reliability.live import ROOT_ONLY, cli_token, health_ok, start
from tests.reliability.rawws import OP_CLOSE, OP_TEXT, RawSocket, frame
from tests.sensor import Sensor
from tests.waiting import scaled
from tests.wsclient import client, closed_with, recv_type, run, send

pytestmark = ROOT_ONLY

IDLE_S = 1.5
AUTH_S = 2.0
LIMIT = 65_536


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    config = (
        f"limits: {{idle_timeout_s: {IDLE_S}}}\nauth: {{auth_timeout_s: {AUTH_S}}}\n"
        "web: {port: 0, workers: 1}\n"
    )
    users = {"admin": "ADMIN", "una": "VIEWER", "dos": "VIEWER", "tres": "VIEWER"}
    s = start(tmp_path_factory.mktemp("limits"), "udp and dst port 9", users, config)
    yield s
    s.kill()


def url(sensor: Sensor, user: str) -> str:
    return f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token={cli_token(sensor, user)}"


def ping_of_size(size: int) -> str:
    """A `ping` whose UTF-8 text is exactly `size` bytes."""
    bare = json.dumps({"type": "ping", "id": ""})
    text = json.dumps({"type": "ping", "id": "x" * (size - len(bare))})
    assert len(text.encode()) == size
    return text


def test_an_idle_connection_is_closed_and_pings_keep_one_open(sensor: Sensor) -> None:
    async def go() -> None:
        async with client(url(sensor, "una")) as quiet, client(url(sensor, "dos")) as chatty:
            for ws in (quiet, chatty):
                await recv_type(ws, "auth_success")
            opened = time.monotonic()
            for i in range(8):  # 3 s of a ping every 0.4 s: twice the idle timeout
                await send(chatty, type="ping", id=i)
                assert (await recv_type(chatty, "pong"))["id"] == i
                await asyncio.sleep(0.4)  # the client's pace, not a wait on the server
            error = await recv_type(quiet, "error", timeout=5)
            assert error["code"] == "idle_timeout"
            assert await closed_with(quiet) == (CloseCode.IDLE_TIMEOUT, "idle timeout")
            await send(chatty, type="ping", id="still")
            assert (await recv_type(chatty, "pong"))["id"] == "still"
            error = await recv_type(chatty, "error", timeout=IDLE_S + 5)
            assert error["code"] == "idle_timeout"
            idle_for = time.monotonic() - opened - 3.2
            assert idle_for >= IDLE_S - 0.2
            code, _ = await closed_with(chatty)
            assert code == CloseCode.IDLE_TIMEOUT

    run(go())


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_exactly_64_kib_passes_and_one_byte_more_closes_with_1009(
    sensor: Sensor, binary: bool
) -> None:
    async def go() -> None:
        async with client(url(sensor, "tres"), max_size=None) as ws:
            await recv_type(ws, "auth_success")
            fits = ping_of_size(LIMIT)
            await ws.send(fits.encode() if binary else fits)
            assert (await recv_type(ws, "pong"))["id"] == json.loads(fits)["id"]
            over = ping_of_size(LIMIT + 1)
            await ws.send(over.encode() if binary else over)
            code, _ = await closed_with(ws)
            assert code == CloseCode.MESSAGE_TOO_BIG

    run(go())


def test_ten_times_the_message_rate_in_a_second_closes_with_4029(sensor: Sensor) -> None:
    async def go() -> None:
        async with client(url(sensor, "una")) as ws:
            await recv_type(ws, "auth_success")
            ping = json.dumps({"type": "ping"})
            for _ in range(1_001):
                await ws.send(ping)
            error = await recv_type(ws, "error")
            assert error["code"] == "rate_limited"
            code, _ = await closed_with(ws)
            assert code == CloseCode.RATE_LIMITED

    run(go())
    assert health_ok(sensor)


@pytest.mark.parametrize("authenticated", [True, False])
def test_a_client_stalled_inside_a_frame_is_closed_by_the_clock(
    sensor: Sensor, authenticated: bool
) -> None:
    """A frame header that announces 2^62 bytes, then nothing: the server cannot know the frame is
    too big until it sees it (wsproto waits for the payload), but the idle timeout still closes
    the connection instead of holding it for ever, authenticated or not (here the idle timeout,
    1.5 s, comes before the auth timeout, 2 s)."""
    query = f"?token={cli_token(sensor, 'dos')}" if authenticated else ""
    with RawSocket(sensor.web_port(), query) as raw:
        assert raw.status == 101
        began = time.monotonic()
        raw.send(frame(OP_TEXT, b"", length=1 << 62)[:14])  # the header and mask only
        frames = raw.frames_until_close(timeout=max(IDLE_S, AUTH_S) + 10)
        took = time.monotonic() - began
    texts = [json.loads(f.payload) for f in frames if f.opcode == OP_TEXT]
    assert frames and frames[-1].opcode == OP_CLOSE, texts
    assert frames[-1].close_code == CloseCode.IDLE_TIMEOUT
    assert texts[-1]["code"] == "idle_timeout"
    assert took < scaled(IDLE_S + 3)
