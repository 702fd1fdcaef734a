"""The sessions' wall clock: steps of the system clock are reported, slewing is not, and the
timers of a session move with a step (neither fired nor frozen by it)."""

from __future__ import annotations

import pytest

from leireye.web.clock import STEP_S, WallClock
from leireye.wire import Close
from tests.unit.test_web_session import ALICE, T0, drain, new_session, send, snapshot, types

PING = '{"type":"ping"}'


class Clocks:
    """A wall clock and a monotonic one that tests move by hand."""

    def __init__(self) -> None:
        self.wall = T0
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_steps_are_reported_before_the_new_time_and_slewing_is_not() -> None:
    clocks, steps = Clocks(), []
    clock = WallClock(steps.append, lambda: clocks.wall, lambda: clocks.mono)
    assert clock() == T0
    for _ in range(100):  # 50 ms of slewing per second: followed, never a step
        clocks.advance(1.0)
        clocks.wall += 0.05
        clock()
    assert steps == []
    clocks.wall += 600
    assert clock() == clocks.wall and steps == [pytest.approx(600)]
    clocks.wall -= 30
    clock()
    assert steps == [pytest.approx(600), pytest.approx(-30)]
    clocks.wall += STEP_S / 2
    clock()
    assert len(steps) == 2


def test_a_step_forward_fires_no_idle_timeout_and_the_next_comes_on_time() -> None:
    session = new_session(token="1:alice:-")  # a token that does not expire
    drain(session)
    session.receive(PING, T0 + 100)
    session.clock_stepped(3600.0)  # NTP puts a clock an hour slow right
    session.tick(T0 + 3600 + 101)
    assert session.closed is None
    session.tick(T0 + 3600 + 399.9)
    assert session.closed is None
    session.tick(T0 + 3600 + 400)
    assert session.closed == Close(4000, "idle timeout")


def test_a_step_back_still_times_out_and_does_not_freeze_the_rate_limit() -> None:
    session = new_session()
    drain(session)
    for i in range(100):  # the whole second's allowance
        session.receive(PING, T0 + i * 0.001)
    drain(session)
    session.clock_stepped(-3600.0)
    session.receive(PING, T0 - 3600 + 1.5)  # 1.5 s later in real time: allowed again
    assert types(drain(session)) == ["pong"]
    session.tick(T0 - 3600 + 1.5 + 299.9)
    assert session.closed is None
    session.tick(T0 - 3600 + 1.5 + 300)
    assert session.closed == Close(4000, "idle timeout")


def test_stats_keep_their_interval_across_a_step() -> None:
    session = new_session()
    drain(session)
    assert types(send(session, {"type": "subscribe", "channel": "stats", "options":
                                {"interval_ms": 1000}}))[-1] == "subscribed"  # fmt: skip
    session.tick(T0 + 1, snapshot())
    assert types(drain(session)) == ["stats"]
    session.clock_stepped(-3600.0)
    session.tick(T0 - 3600 + 1.5, snapshot(timestamp_ns=2))
    assert types(drain(session)) == []
    session.tick(T0 - 3600 + 2, snapshot(timestamp_ns=3))
    assert types(drain(session)) == ["stats"]


def test_a_token_expiry_is_a_date_a_step_does_not_move() -> None:
    session = new_session(token=ALICE)  # expires at T0 + 3600
    drain(session)
    session.clock_stepped(4000.0)
    session.receive(PING, T0 + 4000)
    session.tick(T0 + 4000)
    assert session.closed == Close(4003, "token expired")
