"""A WebSocket resume from the packet store (`options.from_store`) on a real sensor with two
capture shards (`capture.workers: 2`) on a veth pair, the ring far smaller than the traffic: ids
interleave across the shards and the store writer drains one shard's frames after the other.

- With the writer stopped (SIGSTOP) while 3000 frames arrive, a client resuming from id 0 gets
  what is stored, waits for the rest (nothing is counted lost because one shard is behind), gets
  it once the writer goes on, then live: every id once, in order, no `dropped`.
- After a SIGKILL of the writer that cost the store frames of both shards, a resume counts
  exactly the ids the writer lost (its `frames_lost`, once) and delivers every other one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leireye.errors import RingError
from leireye.ring.frames import FrameSegment, frames_name
from leireye.ring.storestatus import StoreStatus, read_status
from leireye.store.reader import PacketStore
from tests.accounts import users_yaml
from tests.http import Http
from tests.integration.test_fanout import shard_statuses, wait_accounted, wait_all_capturing
from tests.netns import VethPair, inject_frames, skip_unless_root, udp_frame, veth_pair
from tests.sensor import Sensor
from tests.waiting import wait_for
from tests.wsclient import client, recv, recv_type, run, send

pytestmark = [pytest.mark.root, skip_unless_root]
UDP_PORT = 9996
FLOWS = 40  # source ports: the kernel's hash spreads them over both shards
USERS = users_yaml({"ana": ("ANALYST", "analyst-pass-3")})
CONFIG = "capture: {workers: 2, fanout_mode: hash}\nring: {capacity: 1024}\n"


@pytest.fixture
def pair() -> Iterator[VethPair]:
    with veth_pair(ipv6=False) as p:
        yield p


def frames(pair: VethPair, n: int, base: int, rng: random.Random, sizes: list[int]) -> list[bytes]:
    return [udp_frame(pair, 30000 + (base + i) % FLOWS, UDP_PORT,
                      (base + i).to_bytes(4, "big") + rng.randbytes(rng.choice(sizes)))
            for i in range(n)]  # fmt: skip


def store_statuses(sensor: Sensor) -> list[StoreStatus]:
    found = []
    for shard in (0, 1):
        try:
            segment = FrameSegment.attach(frames_name(f"{sensor.name}-ring", shard))
        except RingError:
            return []
        try:
            found.append(read_status(segment))
        finally:
            segment.close()
    return found


def wait_stored(sensor: Sensor, count: int) -> list[StoreStatus]:
    """Both shards' store status once the writer has accounted for `count` frames."""

    def done() -> list[StoreStatus] | None:
        each = store_statuses(sensor)
        return (
            each if each and sum(s.frames_written + s.frames_lost for s in each) >= count else None
        )

    with sensor.explained():
        found: list[StoreStatus] = wait_for(done, 60, f"the store to account for {count} frames")
    return found


def ws_url(sensor: Sensor) -> str:
    http = Http(sensor.web_port())
    login = http.post("/api/auth/login", {"username": "ana", "password": "analyst-pass-3"})
    assert login.status == 200, login.body
    return f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token={login.json['access_token']}"


def test_a_resume_from_the_store_waits_for_a_shard_not_written_yet_then_goes_live(
    pair: VethPair, tmp_path: Path
) -> None:
    sensor = Sensor(tmp_path, "--interface", pair.host_if, "--bpf", f"udp and dst port {UDP_PORT}",
                    config=CONFIG + "store: {max_gb: 1, file_mb: 4}\n", users=USERS)  # fmt: skip
    writer = 0
    try:
        statuses = shard_statuses(sensor)
        wait_all_capturing(sensor, statuses)
        rng = random.Random(21)
        sizes = [10, 300, 1400]
        inject_frames(pair.ns_if, frames(pair, 1000, 0, rng, sizes), ns=pair.ns, interval=0.0002)
        wait_accounted(statuses, 1000)
        before = wait_stored(sensor, 1000)
        assert all(s.frames_written for s in before)  # both shards had some
        writer = before[0].pid
        url = ws_url(sensor)

        os.kill(writer, signal.SIGSTOP)  # frames pile up in both shards' segments
        inject_frames(pair.ns_if, frames(pair, 3000, 1000, rng, sizes), ns=pair.ns,
                      interval=0.0002)  # fmt: skip
        wait_accounted(statuses, 4000)
        live = frames(pair, 300, 4000, rng, sizes)

        async def resume() -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = []
            sending: asyncio.Task[int] | None = None
            async with client(url) as ws:
                await send(ws, type="subscribe", channel="packets", since=0,
                           options={"from_store": True}, filters={"port": UDP_PORT})  # fmt: skip
                await recv_type(ws, "subscribed")
                packets = 0
                while packets < 4300:
                    message = await recv(ws, 30)
                    if message["type"] not in ("packet", "dropped"):
                        continue
                    got.append(message)
                    packets += message["type"] == "packet"
                    if packets == 1000 and sending is None:  # all the store held: go on
                        os.kill(writer, signal.SIGCONT)
                        sending = asyncio.create_task(
                            asyncio.to_thread(
                                inject_frames, pair.ns_if, live, ns=pair.ns, interval=0.0005
                            )
                        )
                if sending is not None:
                    await sending
            return got

        got = run(resume())
        assert [m for m in got if m["type"] != "packet"] == []  # nothing counted lost
        assert [m["data"]["id"] for m in got] == list(range(1, 4301))  # each once, in order
        assert wait_accounted(statuses, 4300).kernel_drops == 0  # the status lags a little
        stored = sorted(f.id for f in PacketStore(sensor.state_dir / "store").between(0, 2**63))
        assert stored[:4000] == list(range(1, 4001))
    finally:
        if writer:
            with contextlib.suppress(ProcessLookupError):
                os.kill(writer, signal.SIGCONT)
        sensor.kill()


def test_a_resume_counts_what_a_killed_writer_lost_once_across_two_shards(
    pair: VethPair, tmp_path: Path
) -> None:
    sensor = Sensor(tmp_path, "--interface", pair.host_if, "--bpf", f"udp and dst port {UDP_PORT}",
                    config=CONFIG + "store: {max_gb: 1, file_mb: 4, buffer_mb: 1}\n",
                    users=USERS)  # fmt: skip
    try:
        statuses = shard_statuses(sensor)
        wait_all_capturing(sensor, statuses)
        rng = random.Random(22)
        big = [1400]
        inject_frames(pair.ns_if, frames(pair, 300, 0, rng, big), ns=pair.ns, interval=0.0002)
        wait_accounted(statuses, 300)
        before = wait_stored(sensor, 300)
        os.kill(before[0].pid, signal.SIGKILL)
        # ~6 MB at once while no writer runs: more than both 1 MiB segments hold.
        inject_frames(pair.ns_if, frames(pair, 4000, 300, rng, big), ns=pair.ns)
        wait_accounted(statuses, 4300)
        down = statuses.read().packets_captured  # the ids up to here are where losses can be

        def restarted() -> bool:
            each = store_statuses(sensor)
            return bool(each) and each[0].pid not in (0, before[0].pid)

        with sensor.explained():
            wait_for(restarted, 60, "the store writer to be restarted")
        # Then enough that the ring (2 x 1024) holds none of what the store lost.
        inject_frames(pair.ns_if, frames(pair, 4000, 4300, rng, big), ns=pair.ns, interval=0.0002)
        wait_accounted(statuses, 8300)
        total = statuses.read().packets_captured
        after = wait_stored(sensor, total)
        lost = sum(s.frames_lost for s in after)
        assert lost > 0 and all(s.frames_lost for s in after)  # both shards lost frames
        held = {f.id for f in PacketStore(sensor.state_dir / "store").between(0, 2**63)}
        assert len(held) + lost == total
        assert max(set(range(1, total + 1)) - held) <= down

        async def resume() -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = []
            async with client(ws_url(sensor)) as ws:
                await send(ws, type="subscribe", channel="packets", since=0,
                           options={"from_store": True}, filters={"port": UDP_PORT})  # fmt: skip
                await recv_type(ws, "subscribed")
                accounted = 0  # ids delivered or counted
                while accounted < total:
                    message = await recv(ws, 30)
                    if message["type"] == "packet":
                        accounted += 1
                    elif message["type"] == "dropped":
                        accounted += message["count"]
                    else:
                        continue
                    got.append(message)
                stats = 0
                while stats < 2:  # two stats messages later: no late packet or notice either
                    message = await recv(ws, 10)
                    assert message["type"] not in ("packet", "dropped"), message
                    stats += message["type"] == "stats"
            return got

        got = run(resume())
        counted = [m["count"] for m in got if m["type"] == "dropped"]
        assert all(m["reason"] == "resume" for m in got if m["type"] == "dropped")
        assert sum(counted) == lost  # the writer's losses, each once
        assert [m["data"]["id"] for m in got if m["type"] == "packet"] == sorted(held)
    finally:
        sensor.kill()
