"""The hub in-process: a resume's hand-off from replay to live, and filter groups, over a real
ring written while the hub reads it; driven step by step (`Hub.step`), directly and through the
app's WebSocket shell (see tests/inprocess.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from leireye.record import Proto
from leireye.web.hub import Connection
from leireye.wire import Close
from tests.inprocess import InProcessSensor, read_pcap
from tests.waiting import scaled

MIXED = read_pcap("mixed.pcap")
ROUNDS_MAX = 500


@pytest.fixture
def sensor(tmp_path: Path) -> Iterator[InProcessSensor]:
    s = InProcessSensor(tmp_path, capacity=1024)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def small(tmp_path: Path) -> Iterator[InProcessSensor]:
    """Outboxes of 16 packets, the fewest the configuration allows: a replay takes many steps."""
    s = InProcessSensor(tmp_path, capacity=1024, web={"outbox_messages": 16})
    try:
        yield s
    finally:
        s.close()


def open_session(sensor: InProcessSensor, user: str, subscribe: dict[str, Any]) -> Connection:
    conn = sensor.hub.open(sensor.token(user), sensor.hub.clock())
    conn.receive(json.dumps({"type": "subscribe", "channel": "packets", **subscribe}), time.time())
    replies = [json.loads(m) for m in drain(conn)]
    assert [r["type"] for r in replies] == ["auth_success", "subscribed"], replies
    return conn


def drain(conn: Connection) -> list[str]:
    """What the connection's send loop would send now, as the text frames."""
    out: list[str] = []
    while (item := conn.session.next_outgoing()) is not None:
        assert not isinstance(item, Close), item
        out.append(item)
    return out


def packet_ids(messages: list[str]) -> list[int]:
    parsed = [json.loads(m) for m in messages]
    assert all(p["type"] == "packet" for p in parsed), [p["type"] for p in parsed]
    return [p["data"]["id"] for p in parsed]


def ids_of(sensor: InProcessSensor, proto: Proto, first: int, last: int) -> list[int]:
    return [i for i in range(first, last + 1) if sensor.record(i)["proto"] == proto]


def test_a_resume_replays_then_goes_live_each_id_once_while_the_writer_writes(
    small: InProcessSensor,
) -> None:
    sensor = small
    sensor.write(MIXED)  # ids 1..235
    sensor.hub.step()  # the hub's live reader is at the head, as it always nearly is
    conn = open_session(sensor, "vic", {"since": 100})
    got: list[int] = []
    steps_replaying = 0
    for _ in range(ROUNDS_MAX):
        sensor.write(MIXED, count=7)  # the capture goes on writing between steps
        sensor.hub.step()
        steps_replaying += conn.session.replaying
        got += packet_ids(drain(conn))  # a client that reads everything it is sent
        if not conn.session.replaying and steps_replaying > 5:
            break
    assert steps_replaying > 5, "the replay should have taken several steps"
    assert not conn.session.replaying
    for _ in range(3):  # and live from there on
        sensor.write(MIXED, count=5)
        sensor.hub.step()
        got += packet_ids(drain(conn))
    assert got == list(range(101, sensor.ring.write_seq + 1))
    assert conn.session.dropped == 0 and conn.session.stream_lost == 0


def test_the_step_that_ends_a_replay_skips_none_of_its_live_rows(small: InProcessSensor) -> None:
    """The last replayed chunk may fill the outbox; the live rows of that same step must then
    wait for the client like replayed ones, not be skipped as if it read too slowly."""
    sensor = small
    sensor.write(MIXED)
    sensor.hub.step()
    head = sensor.ring.write_seq
    conn = open_session(sensor, "vic", {"since": head - 16})  # exactly one outbox to replay
    got: list[int] = []
    for _ in range(3):
        sensor.write(MIXED, count=5)
        sensor.hub.step()
        got += packet_ids(drain(conn))
    assert got == list(range(head - 15, sensor.ring.write_seq + 1))
    assert conn.session.dropped == 0


def test_a_resume_from_overwritten_ids_says_how_many_first(tmp_path: Path) -> None:
    sensor = InProcessSensor(tmp_path, capacity=256)
    try:
        sensor.write(MIXED)
        sensor.write(MIXED)  # ids 1..470; the ring holds 215..470
        sensor.hub.step()
        conn = open_session(sensor, "ana", {"since": 100, "filters": {"protocol": "udp"}})
        sensor.write(MIXED, count=50)  # ids 471..520; the ring holds 265..520
        sensor.hub.step()
        messages = [json.loads(m) for m in drain(conn)]
        udp = ids_of(sensor, Proto.UDP, 265, 520)
    finally:
        sensor.close()
    first, rest = messages[0], messages[1:]
    assert (first["type"], first["reason"], first["count"]) == ("dropped", "resume", 265 - 101)
    assert [m["data"]["id"] for m in rest] == udp


def test_equal_filters_share_one_group_and_one_encoding(sensor: InProcessSensor) -> None:
    sensor.hub.step()
    udp = open_session(sensor, "vic", {"filters": {"protocol": "udp"}})
    same = open_session(sensor, "ana", {"filters": {"protocol": "UDP"}})  # another spelling
    tcp = open_session(sensor, "admin", {"filters": {"protocol": "tcp"}})
    encoded, delivered = sensor.hub.encoded, sensor.hub.delivered
    ids = sensor.write(MIXED, count=100)
    sensor.hub.step()
    got = {name: drain(conn) for name, conn in (("udp", udp), ("same", same), ("tcp", tcp))}
    udp_ids = ids_of(sensor, Proto.UDP, ids[0], ids[-1])
    tcp_ids = ids_of(sensor, Proto.TCP, ids[0], ids[-1])
    assert udp_ids and tcp_ids
    assert packet_ids(got["udp"]) == udp_ids and packet_ids(got["tcp"]) == tcp_ids
    # One group for the two equal filters: the very same encoded strings, not equal copies.
    assert all(a is b for a, b in zip(got["udp"], got["same"], strict=True))
    assert sensor.hub.encoded - encoded == len(udp_ids) + len(tcp_ids)
    assert sensor.hub.delivered - delivered == 2 * len(udp_ids) + len(tcp_ids)


# -- through the app's WebSocket shell ----------------------------------------------------------


async def flushed(conn: Connection) -> None:
    """Let the connection's send loop run until its outbox is empty (a pop and the send that
    follows it happen without a yield in between, so nothing is then in flight)."""
    deadline = time.monotonic() + scaled(5)
    while conn.session.queued or conn.session.control_queued:
        assert time.monotonic() < deadline, "the send loop did not drain the outbox"
        await asyncio.sleep(0)


def test_a_websocket_resume_gets_every_matching_id_once_in_order(
    small: InProcessSensor,
) -> None:
    sensor = small
    sensor.write(MIXED)
    sensor.capturing(MIXED, len(MIXED.frames))
    sensor.hub.step()
    sensor.hub.tick(sensor.hub.clock())

    async def session() -> tuple[list[str], list[int]]:
        ws = sensor.websocket(f"/ws/capture?token={sensor.token('vic')}")
        assert await ws.connect() is None
        since = {"type": "subscribe", "channel": "packets", "filters": {"protocol": "tcp"},
                 "since": 40}  # fmt: skip
        await ws.send(since)
        kinds = []
        while (reply := await ws.receive())["type"] != "subscribed":
            kinds.append(reply["type"])
        (conn,) = sensor.hub.connections
        got: list[int] = []
        for _ in range(40):
            sensor.write(MIXED, count=9)
            sensor.hub.step()
            await flushed(conn)
            got += [m["data"]["id"] for m in ws.pending() if m["type"] == "packet"]
        await ws.disconnect()
        return kinds, got

    kinds, got = asyncio.run(session())
    assert kinds == ["auth_success", "status"]
    assert got == ids_of(sensor, Proto.TCP, 41, sensor.ring.write_seq)
    assert not sensor.hub.connections
    assert sensor.hub.registry.count(sensor.user("vic").id) == 0


def test_records_the_hub_never_read_are_reported_once(sensor: InProcessSensor) -> None:
    conn = open_session(sensor, "vic", {})
    sensor.hub.step()
    sensor.write(MIXED)
    sensor.write(MIXED)
    sensor.write(MIXED)
    sensor.write(MIXED)
    sensor.write(MIXED)  # 1175 written over a ring of 1024 before the hub looks
    sensor.hub.step()
    messages = [json.loads(m) for m in drain(conn)]
    notice = messages[0]
    assert (notice["type"], notice["reason"], notice["count"]) == ("dropped", "ring", 151)
    assert sensor.hub.lost == 151
    assert np.all(np.diff([m["data"]["id"] for m in messages[1:] if m["type"] == "packet"]) == 1)


# -- an idle hub --------------------------------------------------------------------------------


async def until(condition: Callable[[], object], what: str) -> None:
    """Let the hub's loop run until `condition` holds (a deadline, not a sleep)."""
    deadline = time.monotonic() + scaled(10)
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def subscribed(sensor: InProcessSensor, subscribe: dict[str, Any]) -> Connection:
    """A session of vic's subscribed to packets on a hub that has ticked (so it is also sent
    the capture status), its replies drained."""
    conn = sensor.hub.open(sensor.token("vic"), sensor.hub.clock())
    conn.receive(json.dumps({"type": "subscribe", "channel": "packets", **subscribe}), time.time())
    replies = [json.loads(m)["type"] for m in drain(conn)]
    assert replies == ["auth_success", "status", "subscribed"], replies
    return conn


async def received(conn: Connection, count: int) -> list[int]:
    """The ids of the first `count` packets the connection is sent, while the hub's loop runs."""
    got: list[int] = []

    def more() -> bool:
        got.extend(packet_ids(drain(conn)))
        return len(got) >= count

    await until(more, f"{count} packets (got {len(got)})")
    return got


def test_an_idle_hub_reads_nothing_and_a_subscriber_gets_every_packet_after_its_reply(
    sensor: InProcessSensor,
) -> None:
    hub = sensor.hub

    async def scenario() -> tuple[int, int, list[int], list[int], list[int]]:
        loop = asyncio.create_task(hub.run())
        try:
            await until(lambda: hub.status is not None, "the first tick")
            before = hub.reader.cursor
            sensor.write(MIXED)  # 235 packets and nobody listening
            ticked = hub.status
            await until(lambda: hub.status is not ticked, "a tick after the writes")
            idle_cursor = hub.reader.cursor
            assert idle_cursor == before, "an idle hub read the ring"
            conn = subscribed(sensor, {})  # `subscribed` is out: the hub reads from here on
            head = hub.reader.cursor
            live = sensor.write(MIXED, count=30)
            got = await received(conn, len(live))
            resumed = subscribed(sensor, {"since": 0})
            replayed = await received(resumed, len(MIXED.frames) + len(live))
            return before, head, live, got, replayed
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    before, head, live, got, replayed = asyncio.run(scenario())
    assert head == before + len(MIXED.frames)  # moved to the head on subscribing
    assert got == live
    assert replayed == list(range(1, len(MIXED.frames) + len(live) + 1))
