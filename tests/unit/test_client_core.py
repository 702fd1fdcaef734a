"""The client's pure parts: backoff, since bookkeeping, close codes, decoding, feeds, routing."""

from __future__ import annotations

import asyncio
import random

import msgspec
import pytest

from leireye.client.core import (
    Backoff,
    Gap,
    Outcome,
    ResumeCursor,
    close_outcome,
    decode_server,
    http_base,
    packet_filters,
    parse_iso,
    refresh_delay,
)
from leireye.client.errors import ClientError, ProtocolError, SubscriptionError
from leireye.client.feed import Feed, FeedClosed
from leireye.client.streams import PacketStream, StatsStream, Subscriptions
from leireye.wire import (
    Dropped,
    ErrorMessage,
    PacketData,
    PacketMessage,
    PacketsMessage,
    Subscribed,
)


def packet(i: int) -> PacketData:
    return PacketData(i, "2024-01-20T10:30:01.123Z", "10.0.0.1", "10.0.0.2", 5353, 53,
                      "UDP", 60, [], "DNS A example.org", "DNS", 4, None)  # fmt: skip


def test_backoff_follows_the_spec_then_stays_at_30_s() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(8)] == [1, 2, 5, 10, 30, 30, 30, 30]


def test_backoff_jitter_only_stretches_and_is_injectable() -> None:
    backoff = Backoff((1.0, 2.0), jitter=0.5, rng=random.Random(7))
    delays = [backoff.delay(1) for _ in range(100)]
    assert all(2.0 <= d <= 3.0 for d in delays) and len(set(delays)) > 1
    with pytest.raises(ValueError):
        Backoff(())


def test_resume_cursor_refuses_repeats_and_old_ids() -> None:
    cursor = ResumeCursor()
    assert cursor.since() is None
    assert [cursor.accept(i) for i in (5, 6, 6, 4, 9)] == [True, True, False, False, True]
    assert cursor.since() == 9
    started = ResumeCursor(100)
    assert not started.accept(100) and started.accept(101)


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (4001, Outcome.AUTH_FAILED),
        (4003, Outcome.RENEW),
        (4008, Outcome.REFUSED),
        (4029, Outcome.REFUSED),
        (1009, Outcome.REFUSED),
        (1006, Outcome.RECONNECT),  # a killed worker
        (1001, Outcome.RECONNECT),
        (4000, Outcome.RECONNECT),
        (4002, Outcome.RECONNECT),
        (4013, Outcome.RECONNECT),
        (None, Outcome.RECONNECT),
    ],
)
def test_close_outcome(code: int | None, outcome: Outcome) -> None:
    assert close_outcome(code) is outcome


def test_decode_server_types_messages_and_refuses_the_unknown() -> None:
    raw = msgspec.json.encode(PacketMessage(packet(3)))
    message = decode_server(raw)
    assert isinstance(message, PacketMessage) and message.data.id == 3
    for bad in (b"{", b'{"type":"teleport"}', b'{"type":"packet","data":{}}'):
        with pytest.raises(ProtocolError):
            decode_server(bad)


def test_packet_filters_keep_only_what_was_given() -> None:
    assert packet_filters(protocol="TCP", port=443) == {"protocol": "TCP", "port": 443}
    assert packet_filters(src_ip="10.0.0.0/8", port=0) == {"src_ip": "10.0.0.0/8", "port": 0}


def test_refresh_delay_renews_before_expiry() -> None:
    assert refresh_delay(1000.0, 0.0) == 940.0  # a minute early
    assert refresh_delay(10.0, 0.0) == 8.0  # short tokens: at 80 %
    assert refresh_delay(5.0, 10.0) == 0.0
    assert parse_iso("1970-01-01T00:00:10.500Z") == 10.5


def test_http_base() -> None:
    assert http_base("ws://127.0.0.1:8000/ws/capture?x=1") == "http://127.0.0.1:8000"
    assert http_base("wss://sensor.example/ws/capture") == "https://sensor.example"
    with pytest.raises(ValueError):
        http_base("ftp://x")


def test_feed_waits_when_full_and_ends_after_its_items() -> None:
    async def go() -> None:
        feed: Feed[int] = Feed(2)
        await feed.put(1)
        await feed.put(2)
        third = asyncio.create_task(feed.put(3))
        await asyncio.sleep(0)
        assert not third.done()  # full: the reader waits
        assert await feed.get() == 1
        assert await feed.get() == 2
        await third
        feed.fail(RuntimeError("boom"))
        assert await feed.get() == 3  # items before the error first
        with pytest.raises(RuntimeError):
            await feed.get()
        latest: Feed[int] = Feed(2)
        for i in range(5):
            latest.put_latest(i)
        latest.finish()
        assert [await latest.get(), await latest.get()] == [3, 4]
        with pytest.raises(FeedClosed):
            await latest.get()

    asyncio.run(go())


def test_routing_hands_over_only_answered_subscriptions_without_repeats() -> None:
    async def go() -> None:
        subs = Subscriptions()
        stream = subs.packets = PacketStream({"port": 53}, True, ResumeCursor())
        message = await subs.subscribe_message(stream)
        assert message["since"] is None and message["options"] == {"batch": True}
        await subs.route(PacketMessage(packet(1)))  # from before the answer: not ours
        assert len(stream.feed) == 0
        assert await subs.route(Subscribed("packets"))
        await subs.route(PacketsMessage([packet(2), packet(3)]))
        await subs.route(Dropped("slow_consumer", 7, "..."))
        await subs.route(PacketsMessage([packet(3), packet(11)]))  # 3 again: dropped
        items = [await stream.feed.get() for _ in range(len(stream.feed))]
        assert [getattr(i, "id", None) for i in items] == [2, 3, None, 11]
        assert items[2] == Gap("slow_consumer", 7, "...", after_id=3)
        subs.new_connection()  # a reconnect resumes after the last id
        assert (await subs.subscribe_message(stream))["since"] == 11

    asyncio.run(go())


def test_a_reconnect_without_any_id_is_reported_as_an_unknown_gap() -> None:
    async def go() -> None:
        subs = Subscriptions()
        stream = subs.packets = PacketStream({}, False, ResumeCursor())
        await subs.subscribe_message(stream)
        subs.new_connection()
        await subs.subscribe_message(stream)
        gap = await stream.feed.get()
        assert isinstance(gap, Gap) and gap.reason == "reconnect" and gap.count is None

    asyncio.run(go())


def test_an_error_answer_fails_the_oldest_pending_subscription() -> None:
    async def go() -> None:
        subs = Subscriptions()
        stats = subs.stats = StatsStream(100)
        packets = subs.packets = PacketStream({"port": 70000}, True, ResumeCursor())
        assert (await subs.subscribe_message(stats))["options"] == {"interval_ms": 100}
        await subs.subscribe_message(packets)
        await subs.route(Subscribed("stats"))
        assert await subs.route(ErrorMessage("invalid_filter", "port must be...", "port"))
        with pytest.raises(SubscriptionError) as info:
            await packets.feed.get()
        assert (info.value.code, info.value.field) == ("invalid_filter", "port")
        assert not await subs.route(ErrorMessage("idle_timeout", "bye"))  # not an answer

    asyncio.run(go())


def test_the_first_answer_makes_a_stream_live_and_later_ones_change_nothing() -> None:
    async def go() -> None:
        subs = Subscriptions()
        packets = subs.packets = PacketStream({"port": 53}, True, ResumeCursor(5))
        stats = subs.stats = StatsStream(50)
        await subs.subscribe_message(packets)
        await subs.subscribe_message(stats)
        waiting = asyncio.create_task(packets.live.wait())
        await asyncio.sleep(0)
        assert not waiting.done()  # asked, not answered
        await subs.route(Subscribed("packets"))
        await waiting
        await subs.route(ErrorMessage("invalid_options", "interval_ms too small", "interval_ms"))
        with pytest.raises(SubscriptionError) as info:
            await stats.live.wait()
        assert info.value.field == "interval_ms"
        subs.new_connection()  # a reconnect: asked again, still live meanwhile
        await subs.subscribe_message(packets)
        await packets.live.wait()
        subs.finish()
        await packets.live.wait()  # it went live once: closing ends the feed only
        with pytest.raises(FeedClosed):
            await packets.feed.get()

    asyncio.run(go())


def test_a_stream_still_unanswered_raises_when_the_client_fails_or_closes() -> None:
    async def go() -> None:
        subs = Subscriptions()
        stream = subs.packets = PacketStream({}, True, ResumeCursor())
        await subs.subscribe_message(stream)
        subs.fail(ProtocolError("closed 4008: too many connections", close_code=4008))
        with pytest.raises(ProtocolError, match="4008"):
            await stream.live.wait()
        closed = Subscriptions()
        stats = closed.stats = StatsStream(None)
        await closed.subscribe_message(stats)
        closed.finish()
        with pytest.raises(ClientError, match="closed before the subscription was confirmed"):
            await stats.live.wait()

    asyncio.run(go())
