"""The Python client (`leireye.client`) against a real `leireye run` capturing on `lo`."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from leireye.client import (
    AuthenticationError,
    ConnectionFailed,
    Gap,
    LeirEyeClient,
    PacketData,
    SubscriptionError,
    TokenExpired,
    iter_packets,
)
from leireye.client.auth import StaticToken, ring_head
from tests.clientenv import FAST, PASSWORD, Live
from tests.sensor import free_udp_port, send_udp
from tests.waiting import scaled, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    env = Live(tmp_path_factory.mktemp("client"))
    yield env
    env.sensor.kill()


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, scaled(60)))  # type: ignore[arg-type]


async def take(stream: object, count: int) -> list[PacketData]:
    got: list[PacketData] = []
    async for packet in stream:  # type: ignore[attr-defined]
        got.append(packet)
        if len(got) == count:
            break
    return got


def test_the_client_receives_what_the_test_sends(live: Live) -> None:
    async def go() -> None:
        async with LeirEyeClient(live.url, token=live.token()) as c:
            assert c.user is not None and c.user.username == "admin"
            stream = await c.subscribe_packets(protocol="UDP", port=live.port)
            await asyncio.to_thread(send_udp, live.port, 5, b"hello")
            got = await asyncio.wait_for(take(stream, 5), scaled(10))
        ids = [p.id for p in got]
        assert ids == list(range(ids[0], ids[0] + 5))
        for p in got:
            assert (p.dst_ip, p.dst_port, p.protocol) == ("127.0.0.1", live.port, "UDP")
            assert p.length == 14 + 20 + 8 + 5

    run(go())


def test_binary_columns_and_json_streams_carry_the_same_packets(live: Live) -> None:
    """The default (binary batches, one PacketData each), JSON batches, and columns as arrays:
    three subscriptions at once, the same packets in every field."""

    async def go() -> None:
        async with (
            LeirEyeClient(live.url, token=live.token()) as a,
            LeirEyeClient(live.url, token=live.token()) as b,
            LeirEyeClient(live.url, token=live.token()) as c,
        ):
            default = await a.subscribe_packets(protocol="UDP", port=live.port)
            as_json = await b.subscribe_packets(protocol="UDP", port=live.port, binary=False)
            columns = await c.subscribe_packets(protocol="UDP", port=live.port, columns=True)
            await asyncio.to_thread(send_udp, live.port, 7, b"columns")
            got = await asyncio.wait_for(take(default, 7), scaled(10))
            assert await asyncio.wait_for(take(as_json, 7), scaled(10)) == got
            rows: list[int] = []
            async for arrays in columns:
                rows += arrays["id"].tolist()
                for name in ("src_ip", "dst_ip", "dst_port", "length", "info", "protocol"):
                    want = [getattr(p, name) for p in got[len(rows) - len(arrays["id"]) :]]
                    assert arrays[name].tolist() == want[: len(arrays["id"])], name
                if len(rows) >= 7:
                    break
            assert rows == [p.id for p in got]

    run(go())


def test_the_ring_head_is_read_from_health_with_the_token(live: Live) -> None:
    """Where a packets iteration starts by default: `/health` shows the ring only to a user."""
    api = f"http://127.0.0.1:{live.web}"
    head = asyncio.run(ring_head(api, StaticToken(live.token())))
    assert head is not None and head == live.ring_head()
    assert asyncio.run(ring_head(api, StaticToken("not-a-token"))) is None


def test_since_replays_what_was_sent_between_two_connections(live: Live) -> None:
    async def go() -> None:
        async with LeirEyeClient(live.url, token=live.token()) as c:
            stream = await c.subscribe_packets(port=live.port)
            await asyncio.to_thread(send_udp, live.port, 1)
            (last,) = await asyncio.wait_for(take(stream, 1), scaled(10))
        await asyncio.to_thread(send_udp, live.port, 3)  # nobody is connected now
        await asyncio.to_thread(wait_for, lambda: live.ring_head() >= last.id + 3, 10, "capture")
        async with LeirEyeClient(live.url, token=live.token()) as c:
            got = await take(c.packets(port=live.port, since=last.id), 3)
        assert [p.id for p in got] == [last.id + 1, last.id + 2, last.id + 3]

    run(go())


def test_stats_at_the_asked_interval(live: Live) -> None:
    async def go() -> None:
        async with LeirEyeClient(live.url, token=live.token()) as c:
            seen = []
            async for s in c.stats(interval_ms=200):
                seen.append(s)
                if len(seen) == 3:
                    break
        assert seen[0].timestamp < seen[1].timestamp < seen[2].timestamp

    run(go())


def test_a_bad_token_raises_authentication_error(live: Live) -> None:
    async def go() -> None:
        with pytest.raises(AuthenticationError, match="Invalid or expired token") as info:
            async with LeirEyeClient(live.url, token="garbage", backoff=FAST):
                pass
        assert info.value.close_code == 4001

    run(go())


def test_a_refused_connection_raises_connection_failed() -> None:
    port = free_udp_port()  # nothing listens on it over TCP either, most likely

    async def go() -> None:
        with pytest.raises(ConnectionFailed, match="cannot connect"):
            async with LeirEyeClient(f"ws://127.0.0.1:{port}/ws/capture", token="t"):
                pass

    run(go())


def test_a_bad_filter_raises_subscription_error_naming_it(live: Live) -> None:
    async def go() -> None:
        async with LeirEyeClient(live.url, token=live.token()) as c:
            with pytest.raises(SubscriptionError) as info:
                await take(c.packets(port=70000), 1)
            assert info.value.field == "port" and info.value.code == "invalid_filter"
            with pytest.raises(SubscriptionError) as info:
                await c.subscribe_packets(src_ip="10.0.0.300")
            assert info.value.field == "src_ip" and info.value.code == "invalid_filter"
            stream = await c.subscribe_packets(port=live.port)  # refusals leave nothing behind
            await asyncio.to_thread(send_udp, live.port, 1)
            assert len(await asyncio.wait_for(take(stream, 1), scaled(10))) == 1

    run(go())


def test_the_token_is_renewed_before_it_expires(live: Live) -> None:
    issued: list[str] = []

    def fresh() -> str:
        issued.append(live.token(ttl=3))
        return issued[-1]

    async def go() -> None:
        async with LeirEyeClient(live.url, token=fresh, backoff=FAST) as c:
            stream = await c.subscribe_packets(port=live.port)
            deadline = time.monotonic() + scaled(15)
            while len(issued) < 3 and time.monotonic() < deadline:  # two renewals
                await asyncio.sleep(0.05)
            await asyncio.to_thread(send_udp, live.port, 2)
            got = await asyncio.wait_for(take(stream, 2), scaled(10))
            assert len(issued) >= 3 and len(got) == 2
            assert c.connections == 1  # renewed in place, never closed with 4003

    run(go())


def test_a_static_token_that_expires_ends_with_token_expired(live: Live) -> None:
    async def go() -> None:
        async with LeirEyeClient(live.url, token=live.token(ttl=2), backoff=FAST) as c:
            with pytest.raises(TokenExpired):
                await take(c.packets(port=live.port), 1)

    run(go())


def test_password_login_streams_and_renews_through_the_refresh_api(live: Live) -> None:
    async def go() -> None:
        client = LeirEyeClient(live.url, username="watcher", password=PASSWORD, backoff=FAST)
        async with client as c:
            assert c.user is not None and c.user.username == "watcher"
            first_expiry = c.expires_at
            assert first_expiry is not None and first_expiry - time.time() <= 10  # access_ttl_s
            stream = await c.subscribe_packets(port=live.port)
            deadline = time.monotonic() + scaled(20)
            while c.expires_at == first_expiry and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert c.expires_at is not None and c.expires_at > first_expiry, "no renewal"
            await asyncio.to_thread(send_udp, live.port, 2)
            assert len(await asyncio.wait_for(take(stream, 2), scaled(10))) == 2
            assert c.connections == 1

    run(go())


def test_a_wrong_password_raises_authentication_error(live: Live) -> None:
    async def go() -> None:
        with pytest.raises(AuthenticationError):
            async with LeirEyeClient(live.url, username="watcher", password="wrong"):
                pass

    run(go())


def test_iter_packets_blocking(live: Live) -> None:
    since = live.ring_head()  # where the stream starts, taken before the traffic it must see
    send_udp(live.port, 3)
    got = []
    for packet in iter_packets(live.url, token=live.token(), port=live.port, since=since):
        got.append(packet)
        if len(got) == 3:
            break
    assert [p.id for p in got] == list(range(got[0].id, got[0].id + 3))
    assert got[0].id > since


# -- last: these restart the web worker of the module's sensor ---------------------------------


def test_killed_workers_mid_stream_lose_and_repeat_nothing(live: Live) -> None:
    total = 3000
    kill_at = (total // 4, total // 2)

    async def go() -> None:
        gaps: list[Gap] = []
        async with LeirEyeClient(live.url, token=live.token(), backoff=FAST) as c:

            async def connected(n: int) -> None:
                """Until our n-th connection is up and its worker's start is in the log. The
                packets up to a kill point may all have come before the reconnect after the
                previous kill (a replay burst when the worker took long to restart): killing
                `worker_pids()[-1]` then would hit the dead worker again."""
                deadline = time.monotonic() + scaled(20)
                while c.connections < n or len(live.worker_pids()) < n:
                    assert time.monotonic() < deadline, f"no connection {n}"
                    await asyncio.sleep(0.02)

            stream = await c.subscribe_packets(port=live.port, gaps=True)
            sender = asyncio.create_task(
                asyncio.to_thread(send_udp, live.port, total, b"k" * 50, rate=1000)
            )
            got: list[PacketData] = []
            async for item in stream:
                if isinstance(item, Gap):
                    gaps.append(item)
                    continue
                got.append(item)
                if len(got) in kill_at:
                    await connected(1 + kill_at.index(len(got)))
                    os.kill(live.worker_pids()[-1], signal.SIGKILL)  # the one serving us
                if len(got) == total:
                    break
            await sender
            await connected(1 + len(kill_at))  # the last reconnect may come after the last id
            reconnected = c.connections
        ids = [p.id for p in got]
        assert ids == list(range(ids[0], ids[0] + total)), "a gap or a repeat"
        assert reconnected == 1 + len(kill_at)
        assert gaps == []

    run(go())
