"""Any sequence of inputs leaves a session open, or closed with exactly one Close.

Inputs are drawn from everything the shell and the hub can do: client frames (arbitrary text and
bytes, and well-formed messages with good and bad values), live and replayed packets, ticks with
the clock moving by any step (backwards too), drains of any size, and shutdown. After each input:
nothing raised, every output is one schema-valid server message within `max_message_bytes`, the
queues stay within their bounds, and once the Close has been seen nothing else comes out.
"""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from leireye.flows.view import ENDED, STARTED, UPDATED
from leireye.ring.status import CaptureState
from leireye.web.encode import utf8_size
from leireye.web.flowfeed import flow_messages
from leireye.web.frames import PacketRun
from leireye.web.session import CONTROL_QUEUE_MIN, Session, State
from leireye.wire import Close, FlowMessage, ServerMessage
from tests.unit.test_web_flows import ROWS as FLOW_ROWS
from tests.unit.test_web_session import T0, Users, capture, new_session, packets, snapshot

SERVER = msgspec.json.Decoder(ServerMessage, strict=True)

tokens = st.sampled_from(
    [f"1:alice:{T0 + 30}", f"1:alice:{T0 + 900}", "1:alice:-", "2:bob:-", "bad", ""]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
filter_values = st.fixed_dictionaries(
    {},
    optional={
        "protocol": st.sampled_from(["tcp", "DNS", "nope", 5]),
        "ip": st.sampled_from(["10.0.0.0/8", "::/0", "300.1.1.1", None]),
        "port": st.sampled_from([443, 70000, "x", None]),
        "max_length": st.integers(-1, 3000),
        "min_bytes": st.integers(-1, 3000),
        "state": st.sampled_from(["SF", "sf", "X"]),
        "bogus": st.just(1),
    },
)
messages = st.one_of(
    st.builds(lambda t: {"type": "auth", "token": t}, tokens),
    st.builds(
        lambda c, f, o, s: {
            "type": "subscribe",
            "channel": c,
            "filters": f,
            "options": o,
            "since": s,
        },
        st.sampled_from(["packets", "stats", "flows"]),
        st.none() | filter_values,
        st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "batch": st.booleans() | st.just("y"),
                "interval_ms": st.integers(-5, 10**6),
                "x": st.just(1),
            },
        ),
        st.none() | st.integers(0, 400),
    ),
    st.builds(
        lambda c: {"type": "unsubscribe", "channel": c},
        st.sampled_from(["packets", "stats", "flows", "x"]),
    ),
    st.builds(lambda i: {"type": "ping", "id": i}, json_values),
    st.just({"type": "ping"}),
    st.builds(lambda v: {"type": v}, json_values),
)
frames = st.one_of(
    messages.map(json.dumps),
    messages.map(lambda m: json.dumps(m).encode()),
    st.text(max_size=60),
    st.binary(max_size=60),
    st.builds(lambda n: '{"type":"ping","id":"' + "x" * n + '"}', st.integers(900, 1100)),
)
steps = st.sampled_from([-50.0, 0.0, 0.001, 0.05, 0.3, 1.0, 4.0, 11.0, 40.0])

good_frames = st.sampled_from(
    [
        {"type": "auth", "token": "1:alice:-"},
        {"type": "subscribe", "channel": "packets"},
        {"type": "subscribe", "channel": "packets", "since": 5, "filters": {"port": 443}},
        {"type": "subscribe", "channel": "packets", "options": {"batch": True}},
        {"type": "subscribe", "channel": "stats", "options": {"interval_ms": 100}},
        {"type": "subscribe", "channel": "flows", "options": {"interval_ms": 100}},
        {"type": "subscribe", "channel": "flows", "filters": {"protocol": "tcp"}},
        {"type": "ping", "id": 1},
    ]
).map(json.dumps)
receive = st.tuples(st.just("receive"), frames | good_frames, steps)
burst = st.tuples(st.just("burst"), frames, st.sampled_from([2, 5, 20, 120, 400]))
tick = st.tuples(st.just("tick"), steps, st.booleans(), st.sampled_from(list(CaptureState)))
deliver = st.tuples(st.just("deliver"), st.integers(0, 400), st.integers(0, 40), st.integers(0, 3))
deliver_flows = st.tuples(
    st.just("deliver_flows"), st.integers(0, 400), st.integers(0, 40), st.integers(0, 3)
)
hub_replay = st.tuples(st.just("hub_replay"), st.integers(0, 3), st.booleans())
drain = st.tuples(st.just("drain"), st.integers(0, 50))
operations = st.one_of(
    receive,
    receive,
    receive,
    burst,
    tick,
    tick,
    deliver,
    deliver,
    deliver_flows,
    hub_replay,
    drain,
    drain,
)


def flow_run(first: int, count: int) -> PacketRun:
    """`count` flow events numbered from `first`, of every kind, as the hub makes them."""
    index = [i % len(FLOW_ROWS) for i in range(count)]
    kinds = np.array([(STARTED, UPDATED, ENDED)[i % 3] for i in range(count)], np.uint64)
    messages = flow_messages(kinds, FLOW_ROWS[index]) if count else []
    return PacketRun(list(range(first, first + count)), messages)


class Run:
    def __init__(self, session: Session, max_bytes: int, outbox: int) -> None:
        self.session = session
        self.max_bytes = max_bytes
        self.outbox = outbox
        self.control_limit = max(CONTROL_QUEUE_MIN, 2 * session.limits.messages_per_second)
        self.now = T0
        self.closes: list[Close] = []
        self.after_close = 0
        self.sent = 0
        self.flow_events = 0

    def take(self, n: int) -> None:
        for _ in range(n):
            item = self.session.next_outgoing()
            if item is None:
                return
            if self.closes:
                self.after_close += 1
            if isinstance(item, Close):
                self.closes.append(item)
                assert item == self.session.closed
                assert len(item.reason.encode()) <= 123
                continue
            assert isinstance(item, str)
            self.sent += 1
            assert utf8_size(item) <= self.max_bytes, item[:200]
            if isinstance(SERVER.decode(item), FlowMessage):
                self.flow_events += 1

    def apply(self, op: tuple[Any, ...]) -> None:
        s = self.session
        kind = op[0]
        if kind == "receive":
            self.now += op[2]
            s.receive(op[1], self.now)
        elif kind == "burst":
            for _ in range(op[2]):
                s.receive(op[1], self.now)
        elif kind == "tick":
            self.now += op[1]
            status = capture(state=op[3], bpf="udp" if op[2] else "")
            s.tick(self.now, snapshot(packets_total=int(self.now)) if op[2] else None, status)
        elif kind == "deliver":
            ids, encoded = packets(op[1] + 1, op[2])
            s.deliver(ids, encoded, lost=op[3])
        elif kind == "deliver_flows":
            s.deliver_flows(flow_run(op[1] + 1, op[2]), lost=op[3])
        elif kind == "hub_replay":
            if s.resume_from is not None:
                s.resume_from = None
            s.replay_lost(op[1])
            if op[2]:
                s.replay_done()
        elif kind == "drain":
            self.take(op[1])
        else:
            s.shutdown()

    def check(self) -> None:
        s = self.session
        assert len(self.closes) <= 1 and self.after_close == 0
        assert (s.closed is None) == (s.state is not State.CLOSED)
        assert 0 <= s.queued <= self.outbox
        assert 0 <= s._flow_outbox.queued <= self.outbox
        assert s.control_queued <= self.control_limit + 2  # + the final message and the Close


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(operations, min_size=5, max_size=120),
    st.booleans(),
    st.sampled_from([None, "1:alice:-", "1:alice:-", f"1:alice:{T0 + 30}", "bad"]),
    st.sampled_from([0, 5, 5, 5]),
    st.sampled_from([1024, 65536]),
    st.sampled_from([16, 64]),
    st.sampled_from([3, 100]),
    st.booleans(),
)
def test_any_sequence_ends_open_or_with_exactly_one_close(
    ops: list[tuple[Any, ...]],
    shutdown: bool,
    token: str | None,
    per_user: int,
    max_bytes: int,
    outbox: int,
    rate: int,
    flows: bool,
) -> None:
    session = new_session(
        token=token,
        flows=flows,
        users=Users(limit=per_user),
        max_message_bytes=max_bytes,
        outbox=outbox,
        messages_per_second=rate,
        idle_timeout_s=60,
    )
    run = Run(session, max_bytes, outbox)
    for op in ops:
        run.apply(op)
        run.check()
    if shutdown:
        run.apply(("shutdown",))
    run.take(10**6)
    run.check()
    event(f"close {session.closed.code if session.closed else None}")
    event(f"server messages: {'many' if run.sent > 20 else 'few'}")
    event(f"flow events: {'some' if run.flow_events else 'none'}")
    if session.closed is None:
        assert run.closes == [] and session.state is not State.CLOSED
    else:
        assert run.closes == [session.closed]
    assert session.next_outgoing() is None


def random_walk(rng: random.Random, length: int) -> list[tuple[Any, ...]]:
    """A long, mostly well-behaved life: an authenticated client that subscribes, reads at
    varying speeds, resumes, and now and then misbehaves."""
    good = [
        {"type": "subscribe", "channel": "packets"},
        {"type": "subscribe", "channel": "packets", "since": 3, "options": {"batch": True}},
        {"type": "subscribe", "channel": "packets", "filters": {"port": 443, "ip": "10.0.0.0/8"}},
        {"type": "subscribe", "channel": "stats", "options": {"interval_ms": 100}},
        {"type": "unsubscribe", "channel": "packets"},
        {"type": "subscribe", "channel": "flows", "options": {"interval_ms": 100}},
        {"type": "subscribe", "channel": "flows", "filters": {"min_bytes": 10}},
        {"type": "unsubscribe", "channel": "flows"},
        {"type": "ping", "id": "x"},
        {"type": "auth", "token": "1:alice:-"},
        {"type": "auth", "token": "2:bob:-"},
    ]
    bad = ["{", '{"type":"nope"}', '{"type":"subscribe","channel":"packets","filters":{"a":1}}']
    ops: list[tuple[Any, ...]] = []
    next_id = next_flow = 1
    for _ in range(length):
        roll = rng.random()
        if roll < 0.15:
            frame = json.dumps(rng.choice(good)) if rng.random() < 0.9 else rng.choice(bad)
            ops.append(("receive", frame, rng.choice([0.0, 0.01, 0.2])))
        elif roll < 0.2:
            ops.append(("burst", '{"type":"ping"}', rng.choice([5, 50, 150])))
        elif roll < 0.4:
            ops.append(("tick", rng.choice([0.01, 0.1, 0.5, 1.0]), True, CaptureState.CAPTURING))
        elif roll < 0.5:
            n = rng.choice([1, 5, 40])
            ops.append(("deliver_flows", next_flow, n, rng.choice([0, 0, 3])))
            next_flow += n
        elif roll < 0.7:
            n = rng.choice([1, 5, 40])
            ops.append(
                ("deliver", next_id - 1 - rng.choice([0, 0, 0, 3]), n, rng.choice([0, 0, 7]))
            )
            next_id += n
        elif roll < 0.75:
            ops.append(("hub_replay", rng.choice([0, 2]), rng.random() < 0.7))
        else:
            ops.append(("drain", rng.choice([0, 1, 5, 30, 200])))
    return ops


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([16, 64]), st.sampled_from([1024, 65536]))
def test_long_lives_keep_every_invariant(seed: int, outbox: int, max_bytes: int) -> None:
    session = new_session(
        token="1:alice:-",
        max_message_bytes=max_bytes,
        outbox=outbox,
        idle_timeout_s=60,
        flows=True,
    )
    run = Run(session, max_bytes, outbox)
    for op in random_walk(random.Random(seed), 400):
        run.apply(op)
        run.check()
    run.take(10**6)
    run.check()
    assert run.closes == ([] if session.closed is None else [session.closed])
    event(f"close {session.closed.code if session.closed else None}")
    event(f"dropped {'some' if session.dropped else 'none'}")
    event(f"server messages: {'many' if run.sent > 200 else 'few'}")
    event(f"flow events: {'some' if run.flow_events else 'none'}")
    event(f"flow events dropped: {'some' if session.flows_dropped else 'none'}")
