"""The session's limits: message rate, message size, idleness, slow and non-reading clients."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leireye.record import INFO_BYTES
from leireye.web.encode import utf8_size
from leireye.web.frames import PacketRun
from leireye.web.outbox import Outbox
from leireye.web.ratelimit import RateLimiter, Verdict
from leireye.web.session import CONTROL_QUEUE_MIN, Session
from leireye.wire import Close, DropReason
from tests.unit.test_web_session import (
    T0,
    drain,
    new_session,
    packets,
    snapshot,
    subscribed,
    types,
)

PING = '{"type":"ping"}'

# -- message rate ---------------------------------------------------------------------------------


def test_the_limit_is_per_sliding_second_with_one_error_per_second() -> None:
    session = new_session()
    drain(session)
    for i in range(100):
        session.receive(PING, T0 + i * 0.001)
    assert types(drain(session)) == ["pong"] * 100
    for i in range(20):
        session.receive(PING, T0 + 0.5 + i * 0.001)
    [error] = drain(session)
    assert (error["type"], error["code"]) == ("error", "rate_limited")
    session.receive(PING, T0 + 1.0)  # the first ping left the window
    assert types(drain(session)) == ["pong"]
    assert session.closed is None


def test_a_burst_then_a_pause_is_never_closed() -> None:
    session = new_session()
    drain(session)
    for burst in range(6):
        for i in range(300):
            session.receive(PING, T0 + burst * 2.5 + i * 0.0001)
        out = drain(session)
        assert out.count({"type": "pong"}) == 100
        assert len(out) == 101 and session.closed is None


def test_ten_times_the_limit_in_a_second_closes_4029() -> None:
    session = new_session()
    drain(session)
    for i in range(1000):
        session.receive(PING, T0 + i * 0.0005)
    out = drain(session)
    assert out[-1] == Close(4029, "rate limit")
    assert out[-2]["code"] == "rate_limited"


def test_sustained_excess_closes_after_three_seconds() -> None:
    session = new_session()
    drain(session)
    now = T0
    while session.closed is None and now < T0 + 10:
        session.receive(PING, now)
        drain(session)
        now += 1 / 150  # 1.5 times the limit
    assert session.closed == Close(4029, "rate limit")
    assert T0 + 3 <= now < T0 + 4.5


def test_the_limit_counts_before_authentication_too() -> None:
    session = new_session(token=None)
    for i in range(150):
        session.receive(PING, T0 + i * 0.001)
    out = drain(session)
    assert types(out).count("error") == 101
    assert [e["code"] for e in out][-1] == "rate_limited"


def test_rate_limiter_verdicts() -> None:
    limiter = RateLimiter(2)
    verdicts = [limiter.check(t) for t in (0.0, 0.1, 0.2, 0.3, 1.05, 1.2)]
    assert verdicts == [
        Verdict.ACCEPT,
        Verdict.ACCEPT,
        Verdict.REJECT_NOTIFY,
        Verdict.REJECT,
        Verdict.ACCEPT,
        Verdict.ACCEPT,
    ]


# -- message size ---------------------------------------------------------------------------------


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_frame_over_the_limit_closes_1009(as_bytes: bool) -> None:
    session = new_session(max_message_bytes=1024)
    drain(session)
    fits = '{"type":"ping","id":"' + "x" * (1024 - 23) + '"}'
    assert len(fits) == 1024
    session.receive(fits.encode() if as_bytes else fits, T0)
    assert types(drain(session)) == ["pong"]
    big = fits[:-2] + 'x"}'
    session.receive(big.encode() if as_bytes else big, T0)
    out = drain(session)
    assert out[0]["code"] == "message_too_big" and out[1] == Close(1009, "message too big")


def test_the_size_limit_is_in_utf8_bytes() -> None:
    session = new_session(max_message_bytes=1024)
    drain(session)
    session.receive('{"type":"ping","id":"' + "é" * 600 + '"}', T0)  # 622 chars, 1222 bytes
    assert drain(session)[-1] == Close(1009, "message too big")


def test_no_packet_message_exceeds_a_small_limit() -> None:
    session = new_session(max_message_bytes=1024)
    drain(session)
    subscribed(session)
    ids, messages = packets(1, 3, info=[b"a", b"\x01" * INFO_BYTES, b"c"])
    session.deliver(ids, messages)
    out = drain(session)
    assert [m["data"]["id"] for m in out] == [1, 3]
    assert session.dropped == 1


# -- idleness -------------------------------------------------------------------------------------


def test_idle_timeout_closes_4000_and_a_ping_keeps_it_open() -> None:
    session = new_session()
    drain(session)
    session.receive(PING, T0 + 299)
    session.tick(T0 + 300)
    assert session.closed is None
    session.tick(T0 + 598.9)
    assert session.closed is None
    session.tick(T0 + 599)
    out = drain(session)
    assert out[-2]["code"] == "idle_timeout" and out[-1] == Close(4000, "idle timeout")


def test_packets_and_stats_do_not_count_as_client_activity() -> None:
    session = new_session(idle_timeout_s=5)
    drain(session)
    subscribed(session)
    for second in range(1, 6):
        session.deliver(*packets(second, 1))
        session.tick(T0 + second, snapshot())
    assert session.closed == Close(4000, "idle timeout")


def test_a_clock_that_goes_back_stands_still() -> None:
    session = new_session(token=None)
    session.tick(T0 + 5)
    session.tick(T0 - 1000)
    session.receive(PING, T0 - 1000)
    session.tick(T0 + 9.99)
    assert session.closed is None
    session.tick(T0 + 10)
    assert session.closed == Close(4002, "authentication timeout")


# -- slow and non-reading clients -----------------------------------------------------------------


def test_a_slow_consumer_skips_ahead_and_is_told_how_many_it_missed() -> None:
    session = new_session(outbox=16)
    drain(session)
    subscribed(session)
    session.deliver(*packets(1, 20))  # 16 fit
    session.deliver(*packets(21, 10))  # skipped: the outbox is still full
    assert session.queued == 16 and session.dropped == 14 and session.outbox_room() == 0
    got = [json.loads(str(session.next_outgoing())) for _ in range(8)]  # down to half
    session.deliver(*packets(31, 2))
    rest = drain(session)
    assert [m["data"]["id"] for m in got + rest[:8]] == list(range(1, 17))
    assert rest[8]["type"] == "dropped" and rest[8]["reason"] == "slow_consumer"
    assert rest[8]["count"] == 14
    assert [m["data"]["id"] for m in rest[9:]] == [31, 32]
    session.tick(T0 + 1, snapshot())
    [stats] = drain(session)
    assert stats["data"]["client_dropped"] == 14


def test_control_messages_jump_ahead_of_a_packet_backlog() -> None:
    session = new_session(outbox=16)
    drain(session)
    subscribed(session)
    session.deliver(*packets(1, 16))
    session.receive(PING, T0)
    assert types(drain(session)) == ["pong"] + ["packet"] * 16


def test_a_client_that_never_reads_its_replies_is_closed_4013() -> None:
    session = new_session()
    drain(session)
    limit = max(CONTROL_QUEUE_MIN, 200)
    for i in range(limit + 1):
        session.receive(PING, T0 + i * 0.02)
    assert session.control_queued <= limit + 2
    out = drain(session)
    assert out[-2]["code"] == "not_reading" and out[-1] == Close(4013, "client not reading")


def test_a_replay_never_skips_and_takes_only_what_fits() -> None:
    session = new_session(outbox=16)
    drain(session)
    subscribed(session, since=0)
    assert session.outbox_room() == 16
    session.deliver(*packets(1, 10))
    assert session.outbox_room() == 6 and session.dropped == 0
    session.deliver(*packets(11, 6))
    assert session.outbox_room() == 0 and session.dropped == 0


# -- the outbox on its own ------------------------------------------------------------------------


def _run(messages: list[str]) -> PacketRun:
    return PacketRun(range(1, len(messages) + 1), messages)


def test_outbox_bounds_and_notices() -> None:
    box = Outbox(capacity=4, control_limit=2)
    assert box.push_control("a") and box.push_control("b") and not box.push_control("c")
    box.push_live(_run(["1", "2", "3", "4", "5"]), None)
    assert (box.queued, box.dropped, box.skipping, box.room()) == (4, 1, True, 0)
    box.notice(DropReason.RING, 2)
    box.notice(DropReason.RING, 3)  # merged with the one before
    assert [box.pop() for _ in range(4)] == ["a", "b", "1", "2"]
    assert box.skipping is False  # down to half: the slow-consumer notice is queued
    rest = [box.pop() for _ in range(5)]
    assert rest[:2] == ["3", "4"]
    ring, slow = (json.loads(str(t)) for t in rest[2:4])
    assert (ring["reason"], ring["count"]) == ("ring", 5)
    assert (slow["reason"], slow["count"]) == ("slow_consumer", 1)
    assert rest[4] is None and len(box) == 0


def test_outbox_finish_keeps_only_the_final_words() -> None:
    box = Outbox(capacity=4, control_limit=2)
    box.push_control("a")
    box.push_live(_run(["1"]), None)
    box.finish(["bye"], Close(4000, "idle timeout"))
    box.push_live(_run(["2"]), None)
    assert box.push_control("late")
    assert [box.pop(), box.pop(), box.pop()] == ["bye", Close(4000, "idle timeout"), None]


def test_outbox_batches_count_their_packets() -> None:
    session = new_session(outbox=16)
    drain(session)
    subscribed(session, options={"batch": True})
    ids, messages = packets(1, 20)
    session.deliver(ids, messages)
    assert session.queued == 16 and session.dropped == 4
    out = drain(session)
    assert sum(len(m["data"]) for m in out if m["type"] == "packets") == 16
    assert all(utf8_size(json.dumps(m)) <= 65536 for m in out)


def test_ids_may_be_any_int_sequence() -> None:
    session: Session = new_session()
    drain(session)
    subscribed(session)
    _, messages = packets(1, 3)
    session.deliver([1, 2, 3], messages)
    session.deliver(np.array([3, 4], dtype=np.int64), messages[:2])
    assert types(drain(session)) == ["packet"] * 4
