"""WebSocket resume from the packet store (`options.from_store`), in-process: a `since` older
than the ring is replayed from the store, each id once, in order, then from the ring, then live;
without the option, the documented `dropped` `resume` notice. And the replay's rate bound."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from leireye.record import Proto
from leireye.store.reader import PacketStore
from leireye.web.frames import PacketRun
from leireye.web.hub import Connection
from leireye.wire import Close
from tests.inprocess import Frames, InProcessSensor, read_pcap

MIXED = read_pcap("mixed.pcap")
ROUNDS_MAX = 500


@pytest.fixture
def sensor(tmp_path: Path) -> Iterator[InProcessSensor]:
    s = InProcessSensor(tmp_path, capacity=256, web={"outbox_messages": 64})
    try:
        yield s
    finally:
        s.close()


def capture(sensor: InProcessSensor, count: int | None = None) -> None:
    """What the capture and the store writer do: the ring, and the same frames whole on disk."""
    ids = sensor.write(MIXED, count)
    part = Frames(MIXED.linktype, MIXED.ts_ns[: len(ids)], MIXED.frames[: len(ids)])
    sensor.store(part.linktype, ids[0], part.ts_ns, part.frames)


def subscribe(
    sensor: InProcessSensor, filters: dict[str, Any] | None = None, **options: Any
) -> Connection:
    conn = sensor.hub.open(sensor.token("ana"), sensor.hub.clock())
    message = {"type": "subscribe", "channel": "packets", "since": 100,
               "filters": {"protocol": "udp"} if filters is None else filters,
               "options": options}  # fmt: skip
    conn.receive(json.dumps(message), time.time())
    replies = drain(conn)
    assert [r["type"] for r in replies] == ["auth_success", "subscribed"], replies
    return conn


def drain(conn: Connection) -> list[dict[str, Any]]:
    out = []
    while (item := conn.session.next_outgoing()) is not None:
        assert not isinstance(item, Close), item
        out.append(json.loads(item))
    return out


def udp_ids(sensor: InProcessSensor, first: int, last: int) -> list[int]:
    return [i for i in range(first, last + 1) if sensor.record(i)["proto"] == Proto.UDP]


def test_a_since_past_the_ring_is_replayed_from_the_store_then_live(
    sensor: InProcessSensor,
) -> None:
    capture(sensor)
    capture(sensor)  # ids 1..470: the ring holds 215..470
    sensor.hub.step()
    conn = subscribe(sensor, from_store=True)
    got: list[dict[str, Any]] = []
    steps = 0
    for steps in range(1, ROUNDS_MAX):  # noqa: B007 - counted
        capture(sensor, 7)  # the capture goes on between steps
        sensor.hub.step()
        got += drain(conn)
        if not conn.session.replaying:
            break
    assert not conn.session.replaying and steps > 1
    for _ in range(3):  # live from there on
        capture(sensor, 5)
        sensor.hub.step()
        got += drain(conn)
    assert {m["type"] for m in got} == {"packet"}, [m for m in got if m["type"] != "packet"]
    ids = [m["data"]["id"] for m in got]
    assert ids == udp_ids(sensor, 101, sensor.ring.write_seq)
    assert min(ids) < sensor.ring.oldest_id  # some did come from the store
    assert conn.session.stream_lost == 0 and conn.session.dropped == 0


def test_without_from_store_the_overwritten_part_is_reported_dropped(
    sensor: InProcessSensor,
) -> None:
    capture(sensor)
    capture(sensor)
    sensor.hub.step()
    conn = subscribe(sensor)
    sensor.hub.step()
    messages = drain(conn)
    first = messages[0]
    assert (first["type"], first["reason"]) == ("dropped", "resume")
    assert first["count"] == sensor.ring.oldest_id - 101
    assert [m["data"]["id"] for m in messages[1:]] == udp_ids(
        sensor, sensor.ring.oldest_id, sensor.ring.write_seq
    )


def test_from_store_must_be_a_boolean(sensor: InProcessSensor) -> None:
    conn = sensor.hub.open(sensor.token("ana"), sensor.hub.clock())
    bad = {"type": "subscribe", "channel": "packets", "options": {"from_store": "yes"}}
    conn.receive(json.dumps(bad), time.time())
    error = drain(conn)[-1]
    assert (error["type"], error["code"], error["field"]) == ("error", "invalid_option",
                                                              "from_store")  # fmt: skip


class Target:
    """A session's side of a replay, recording what it is given."""

    replaying = True
    columns = True

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.lost = 0

    def outbox_room(self) -> int:
        return 10_000

    def replay_lost(self, lost: int) -> None:
        self.lost += lost

    def deliver_run(self, run: PacketRun, *, lost: int = 0) -> None:
        self.ids += run.ids.tolist()


def test_the_store_replay_keeps_to_its_rate_and_counts_what_the_store_lost(
    sensor: InProcessSensor,
) -> None:
    from leireye.web.storereplay import STALL_S, StoreReplay

    sensor.store(MIXED.linktype, 1, MIXED.ts_ns[:100], MIXED.frames[:100])
    sensor.store(MIXED.linktype, 151, MIXED.ts_ns[100:200], MIXED.frames[100:200])  # 101..150 lost
    store = PacketStore(sensor.config.store_dir, refresh_s=0)
    replay = StoreReplay(store, 1, 100, now=0.0)
    target = Target()

    def everything(records: np.ndarray) -> np.ndarray:
        return np.ones(len(records), dtype=np.bool_)

    def stored() -> int:
        return 250

    assert replay.step(target, everything, stored, now=0.0) == 100  # one second's worth at most
    assert replay.step(target, everything, stored, now=0.0) == 0
    assert replay.step(target, everything, stored, now=0.5) == 50
    assert target.ids == list(range(1, 101)) and target.lost == 50
    assert replay.step(target, everything, stored, now=100.0) == 100
    assert target.ids == list(range(1, 101)) + list(range(151, 251))
    assert replay.step(target, everything, stored, now=200.0) == 0  # the store has no more yet
    assert not replay.done(10**6, 10**6, 64, now=200.0)
    assert replay.done(10**6, 10**6, 64, now=200.0 + STALL_S + 1)  # a stopped store: the ring


def test_with_two_shards_ids_one_shard_has_not_stored_yet_are_waited_for(
    tmp_path: Path,
) -> None:
    """Ids interleave across capture shards and the store writer drains one shard's frames
    after the other: shard 1's ids still on their way to the store are waited for, not counted
    lost because shard 0 has stored newer ones."""
    sensor = InProcessSensor(tmp_path, capacity=128, shards=2, web={"outbox_messages": 64})
    try:
        n = 20

        def capture_on(shard: int, written: bool = True) -> list[int]:
            ids = sensor.write(MIXED, n, shard=shard)
            sensor.hand_off(MIXED.linktype, ids[0], MIXED.ts_ns[:n], MIXED.frames[:n], shard)
            if written:
                sensor.write_stored(shard)
            return ids

        behind: list[int] = []  # shard 1's ids handed over, not written yet
        for turn in range(15):  # ids 1..600, 20 at a time on each shard in turn
            capture_on(0)
            ids = capture_on(1, written=turn < 4)
            if turn >= 4:
                behind += ids
        sensor.hub.step()
        assert sensor.hub.ring.oldest_id > behind[0] + 64  # the ring no longer holds them
        store = PacketStore(sensor.config.store_dir, refresh_s=0)
        assert store.info().newest_id == 600 - n  # shard 0 stored past them

        conn = subscribe(sensor, {}, from_store=True)
        got: list[dict[str, Any]] = []
        for _ in range(50):
            sensor.hub.step()
            got += drain(conn)
        assert [m for m in got if m["type"] != "packet"] == []  # nothing counted lost
        assert conn.session.replaying
        assert [m["data"]["id"] for m in got] == list(range(101, behind[0]))

        sensor.write_stored(1)  # the store writer gets to shard 1
        for _ in range(ROUNDS_MAX):
            sensor.hub.step()
            got += drain(conn)
            if not conn.session.replaying:
                break
        assert not conn.session.replaying
        assert {m["type"] for m in got} == {"packet"}
        assert [m["data"]["id"] for m in got] == list(range(101, 601))
        assert conn.session.stream_lost == 0 and conn.session.dropped == 0
    finally:
        sensor.close()


def test_with_two_shards_the_ring_takes_over_only_where_every_shard_holds_its_ids(
    tmp_path: Path,
) -> None:
    """Shard 1 takes most of the traffic, so its ring covers far fewer ids than shard 0's: the
    store replay must go on past the ring's oldest id (shard 0's) until shard 1's ring holds
    every id too, or the ring replay counts shard 1's overwritten ids lost."""
    sensor = InProcessSensor(tmp_path, capacity=128, shards=2, web={"outbox_messages": 64})
    try:
        for _ in range(30):  # ids 1..1350: 5 on shard 0, then 40 on shard 1
            for shard, n in ((0, 5), (1, 40)):
                ids = sensor.write(MIXED, n, shard=shard)
                sensor.store(MIXED.linktype, ids[0], MIXED.ts_ns[:n], MIXED.frames[:n], shard)
        sensor.hub.step()
        ring = sensor.hub.ring
        assert ring.whole_from > ring.oldest_id + 512
        conn = subscribe(sensor, {}, from_store=True)
        got: list[dict[str, Any]] = []
        for _ in range(ROUNDS_MAX):
            sensor.hub.step()
            got += drain(conn)
            if not conn.session.replaying:
                break
        assert not conn.session.replaying
        assert [m for m in got if m["type"] != "packet"] == []
        assert [m["data"]["id"] for m in got] == list(range(101, 1351))
    finally:
        sensor.close()
