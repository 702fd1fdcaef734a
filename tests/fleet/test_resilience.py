"""The fleet's failure proofs (issue 18), the whole chain real: sensors capturing on veth pairs
(`leireye run`, frames injected from the namespace end, a steady paced stream), nats-server
with JetStream, and `leireye central`.

- A three-node cluster with the sensor's streams replicated on all three, a node SIGKILLed while
  the sensor captures and publishes: the packets stream's leader on the node the sensor is
  connected to, the leader on another node (the sensor's connection stays, its acks stop), or
  the node leading the central's consumer. The central ends with every packet the sensor
  captured, each once, and nothing counted lost.
- One node stopped for 20 s while two sensors with small rings capture: the central gets what
  the rings still held and counts exactly the rest lost, the same number each publisher counted.

Each frame carries its own counter in its UDP payload, which the central's ring keeps (its raw
bytes): so "each once" is checked on the packets themselves, not on counters alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import numpy as np
import pytest
from nats.js import JetStreamContext

from leireye.errors import RingError
from leireye.fleet.model import (
    SENSOR_TABLE_FILE,
    SensorState,
    decode_batch,
    read_sensor_table,
    stream_name,
)
from leireye.fleet.status import PublisherStatus, StatusPage
from leireye.ring import Ring, RingReader
from leireye.ring.status import StatusBlock
from tests.fleet.nats import NatsCluster, NatsServer, js
from tests.netns import VethPair, inject_frames, skip_unless_root, udp_frame, veth_pair
from tests.sensor import Sensor
from tests.waiting import scaled, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow, skip_unless_root]

PORT = 9999
RAW_BYTES = 64  # the sensors' and the central's: the payload's counter (bytes 42..46) fits
COUNTER_AT = 42  # Ethernet 14 + IPv4 20 + UDP 8
DURABLE = "leireye-central-central"
OUTAGE_S = 20.0


# -- traffic ------------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Frames injected at the namespace end of `pair`, `rate` a second, until `stop()`; frame
    `i` carries `i` in its payload."""

    pair: VethPair
    rate: float
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: list[BaseException] = field(default_factory=list)

    def _frames(self) -> Iterator[bytes]:
        start = time.monotonic()
        i = 0
        while not self._stop.is_set():
            if i % 20 == 0:
                ahead = start + i / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the sender, not waiting on anything
            yield udp_frame(self.pair, 20000 + i % 64, PORT, i.to_bytes(4, "big") * 4)
            i += 1
            self.sent = i

    def _run(self) -> None:
        try:
            inject_frames(self.pair.ns_if, self._frames(), ns=self.pair.ns)
        except BaseException as exc:
            self._error.append(exc)

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name=f"traffic-{self.pair.ns}")
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sending; how many frames were sent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(scaled(30))
        if self._error:
            raise self._error[0]
        return self.sent


# -- the parts ------------------------------------------------------------------------------------


@dataclass
class Edge:
    """One sensor under test: its veth pair, process, capture status, publisher status page
    and traffic."""

    name: str  # its fleet name
    pair: VethPair
    sensor: Sensor
    traffic: Traffic
    status: StatusBlock | None = None
    page: StatusPage | None = None

    def wait_ready(self) -> None:
        with self.sensor.explained():
            self.status = self.sensor.status()
            self.sensor.wait_capturing(self.status, timeout=60)
            self.page = page_of(self.sensor)

    def captured(self) -> int:
        assert self.status is not None
        return self.status.read().packets_captured

    def publisher(self) -> PublisherStatus:
        assert self.page is not None
        return self.page.read()

    def close(self) -> None:
        for segment in (self.status, self.page):
            if segment is not None:
                segment.close()


def start_edge(
    tmp_path: Path,
    stack: contextlib.ExitStack,
    name: str,
    servers: list[str],
    capacity: int,
    rate: float,
    replicas: int = 1,
) -> Edge:
    pair = stack.enter_context(veth_pair(ipv6=False))
    sensor = Sensor(
        tmp_path, "--interface", pair.host_if, "--bpf", f"udp and dst port {PORT}",
        config=(
            f"ring: {{capacity: {capacity}, raw_bytes: {RAW_BYTES}}}\n"
            "flows: {enabled: false}\n"
            f"fleet: {{enabled: true, sensor: {name}, batch_records: 256, max_pending: 8,"
            f" nats: {{servers: {servers!r}}},"
            f" streams: {{replicas: {replicas}, max_gb: 0.05, max_age_h: 1}}}}\n"
        ),
    )  # fmt: skip
    stack.callback(sensor.kill)
    edge = Edge(name, pair, sensor, Traffic(pair, rate))
    stack.callback(edge.close)
    stack.callback(edge.traffic.stop)
    return edge


def start_central(tmp_path: Path, stack: contextlib.ExitStack, names: list[str],
                  servers: list[str]) -> Sensor:  # fmt: skip
    central = Sensor(
        tmp_path,
        config=(
            f"ring: {{capacity: {1 << 17}, raw_bytes: {RAW_BYTES}}}\n"
            f"central: {{enabled: true, nats: {{servers: {servers!r}}}, sensors: {names!r},"
            " discover_s: 0.5}\n"
        ),
        command="central",
    )
    stack.callback(central.kill)
    return central


def page_of(sensor: Sensor) -> StatusPage:
    def attach() -> StatusPage | None:
        try:
            return StatusPage.attach(f"{sensor.name}-fleet")
        except RingError:
            return None

    return wait_for(attach, 30, "the publisher's status page")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- what the parts say ---------------------------------------------------------------------------


def settled(edge: Edge, captured: int) -> PublisherStatus:
    """The publisher's status once every captured id is published or counted lost."""

    def done() -> PublisherStatus | None:
        status = edge.publisher()
        if status.published_records + status.lost >= captured and status.behind == 0:
            return status
        return None

    with edge.sensor.explained():
        return wait_for(done, 60, f"{edge.name}'s publisher to settle")


def sensor_state(central: Sensor, name: str) -> SensorState | None:
    table = read_sensor_table(central.state_dir / SENSOR_TABLE_FILE)
    return next((s for s in table.sensors if s.name == name), None) if table else None


def consumer_done(servers: list[str], name: str) -> bool:
    """The central's consumer of `name`'s packets has had every message and acknowledged it."""

    async def ask() -> bool:
        async with js(servers) as (_, jetstream):
            info = await jetstream.consumer_info(stream_name(name, "packets"), DURABLE)
            return info.num_pending == 0 and info.num_ack_pending == 0

    return bool(run(ask()))


def central_settled(central: Sensor, servers: list[str], name: str, captured: int) -> SensorState:
    """The central's counters of sensor `name` once it has read (and acknowledged) all of its
    packets stream and has accounted for every captured id, from a table written after that."""

    def accounted() -> bool:
        if central.proc.poll() is not None:
            raise AssertionError(f"the central exited:\n{central.notable()}")
        state = sensor_state(central, name)
        return state is not None and state.packets + state.lost >= captured

    with central.explained():
        wait_for(accounted, 60, f"the central to account for {name}'s {captured} packets")
        wait_for(lambda: consumer_done(servers, name), 60, f"the central to ack all of {name}")
        after = time.time_ns()

        def fresh() -> SensorState | None:
            table = read_sensor_table(central.state_dir / SENSOR_TABLE_FILE)
            if table is None or table.updated_ns <= after:
                return None
            return next(s for s in table.sensors if s.name == name)

        state: SensorState = wait_for(fresh, 10, "a sensor table written after the last ack")
    return state


def central_counters(central: Sensor, index: int) -> np.ndarray:
    """The payload counter of every packet of sensor `index` in the central's ring."""
    ring = Ring.attach(f"{central.name}-ring")
    try:
        read = RingReader(ring, "oldest", with_raw=True).read(ring.capacity)
        assert read.lost == 0 and read.raw is not None
        raw = read.raw[read.records["sensor"] == index]
    finally:
        ring.close()
    counters = raw[:, COUNTER_AT : COUNTER_AT + 4].astype(np.uint32)
    return counters[:, 0] << 24 | counters[:, 1] << 16 | counters[:, 2] << 8 | counters[:, 3]


def stream_ids(servers: list[str], name: str) -> list[int]:
    """The sensor ids in `name`'s packets stream, in stream order."""

    async def read() -> list[int]:
        async with js(servers) as (_, jetstream):
            stream = stream_name(name, "packets")
            info = await jetstream.stream_info(stream)
            ids: list[int] = []
            for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
                msg = await jetstream.get_msg(stream, seq=seq)
                batch = decode_batch(name, msg.headers, msg.data or b"")
                ids += [int(i) for i in batch.records["seq"]]
            return ids

    result: list[int] = run(read())
    return result


def check_exactly_once(
    central: Sensor, servers: list[str], edge: Edge, captured: int
) -> tuple[SensorState, PublisherStatus]:
    """The central has every captured packet that was not counted lost, each once, and counts
    exactly the rest lost; the same as the publisher's own counters."""
    publisher = settled(edge, captured)
    state = central_settled(central, servers, edge.name, captured)
    assert (state.packets + state.lost, state.bad_batches) == (captured, 0), state
    assert (state.packets, state.lost) == (publisher.published_records, publisher.lost)
    counters = central_counters(central, state.index)
    assert len(counters) == state.packets  # the ring has what the table counts
    assert len(np.unique(counters)) == len(counters), "a packet reached the central twice"
    assert int(counters.max()) < edge.traffic.sent
    ids = stream_ids(servers, edge.name)
    assert ids == sorted(set(ids)) and len(ids) == state.packets  # the stream: in order, once
    assert ids[-1] == captured
    return state, publisher


# -- the proofs ---------------------------------------------------------------------------------


def stream_leader(servers: list[str], name: str) -> str:
    async def ask() -> str:
        async with js(servers) as (_, jetstream):
            info = await jetstream.stream_info(stream_name(name, "packets"))
            assert info.cluster is not None and info.cluster.leader
            assert len(info.cluster.replicas or []) == 2  # three copies
            return str(info.cluster.leader)

    return str(run(ask()))


def connected_node(cluster: NatsCluster, client: str) -> str:
    """The node a client (by its connection name) is connected to, from the nodes' /connz."""
    for node in cluster.nodes:
        url = f"http://127.0.0.1:{node.http_port}/connz?limit=4096"
        with urllib.request.urlopen(url, timeout=scaled(5)) as answer:
            connections = json.load(answer).get("connections") or []
        if any(c.get("name") == client for c in connections):
            return node.name
    raise AssertionError(f"{client} is connected to no node")


def place_leader(servers: list[str], name: str, fits: Callable[[str], bool]) -> str:
    """Step the packets stream's leader down until a node that `fits` leads it; its name."""
    stream = stream_name(name, "packets")

    async def leader_now(jetstream: JetStreamContext) -> str:
        with contextlib.suppress(TimeoutError, nats.errors.Error):
            info = await jetstream.stream_info(stream)
            return str(info.cluster.leader or "") if info.cluster else ""
        return ""

    async def place() -> str:
        async with js(servers) as (nc, jetstream):
            deadline = time.monotonic() + scaled(60)
            while time.monotonic() < deadline:
                leader = await leader_now(jetstream)
                if leader and fits(leader):
                    return leader
                if not leader:  # an election under way
                    await asyncio.sleep(0.05)  # polling the election, bounded
                    continue
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"",
                                 timeout=scaled(5))  # fmt: skip
                while await leader_now(jetstream) in ("", leader):
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
            raise AssertionError(f"no leader of {stream} could be placed")

    return str(run(place()))


def consumer_leader(servers: list[str], name: str) -> str:
    async def ask() -> str:
        async with js(servers) as (_, jetstream):
            info = await jetstream.consumer_info(stream_name(name, "packets"), DURABLE)
            assert info.cluster is not None and info.cluster.leader
            return str(info.cluster.leader)

    return str(run(ask()))


@pytest.mark.parametrize("where", ["sensors-node", "another-node", "consumers-node"])
def test_a_killed_stream_leader_loses_and_repeats_nothing(
    tmp_path: Path, nats_cluster: NatsCluster, where: str
) -> None:
    """The leader of the sensor's packets stream SIGKILLed: on the node the sensor is connected
    to (its connection drops too), or on another (the connection stays, acks stop coming)."""
    servers = nats_cluster.urls
    with contextlib.ExitStack() as stack:
        edge = start_edge(tmp_path, stack, "edge-r", servers, capacity=1 << 17, rate=2000,
                          replicas=3)  # fmt: skip
        central = start_central(tmp_path, stack, [edge.name], servers)
        edge.wait_ready()
        central.web_port(60)
        edge.traffic.start()
        wait_for(lambda: edge.publisher().published_records >= 4000, 60, "publishing")
        wait_for(lambda: (s := sensor_state(central, edge.name)) and s.packets > 0, 30,
                 "the central to receive")  # fmt: skip
        home = connected_node(nats_cluster, f"leireye-{edge.name}")
        if where == "consumers-node":
            leader = consumer_leader(servers, edge.name)
        else:
            leader = place_leader(
                servers, edge.name, lambda n: (n == home) == (where == "sensors-node")
            )
        index = next(i for i, node in enumerate(nats_cluster.nodes) if node.name == leader)
        nats_cluster.kill(index)
        alive = [url for i, url in enumerate(servers) if i != index]
        before = edge.publisher().published_records
        with edge.sensor.explained():  # a new leader takes the packets on
            wait_for(lambda: edge.publisher().published_records >= before + 6000, 90,
                     "publishing to go on after the leader's death")  # fmt: skip
        if where != "consumers-node":
            assert stream_leader(alive, edge.name) != leader
        sent = edge.traffic.stop()
        wait_for(lambda: edge.captured() >= sent, 30, "the capture")
        captured = edge.captured()
        assert captured == sent  # the veth delivered every frame and the capture kept it
        state, publisher = check_exactly_once(central, alive, edge, captured)
        assert (state.lost, publisher.lost, state.missed_messages) == (0, 0, 0)
        assert publisher.published_records == captured


def test_nats_down_twenty_seconds_counts_exactly_what_the_rings_lost(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    servers = [nats_server.url]
    capacity = 4096
    with contextlib.ExitStack() as stack:
        edges = [start_edge(tmp_path, stack, f"edge-{k}", servers, capacity=capacity, rate=1000)
                 for k in "ab"]  # fmt: skip
        central = start_central(tmp_path, stack, [e.name for e in edges], servers)
        for edge in edges:
            edge.wait_ready()
        central.web_port(60)
        for edge in edges:
            edge.traffic.start()
        for edge in edges:
            wait_for(lambda e=edge: e.publisher().published_records >= 1000, 60, "publishing")
            wait_for(lambda e=edge: (s := sensor_state(central, e.name)) and s.packets > 0, 30,
                     "the central to receive")  # fmt: skip
        nats_server.stop()
        time.sleep(OUTAGE_S)  # the outage itself: the traffic goes on meanwhile
        nats_server.start(scaled(20))
        for edge in edges:
            before = edge.publisher().published_records
            with edge.sensor.explained():
                wait_for(lambda e=edge, b=before: e.publisher().published_records >= b + 2000,
                         60, "publishing after NATS came back")  # fmt: skip
        sent = [edge.traffic.stop() for edge in edges]
        for edge, count in zip(edges, sent, strict=True):
            wait_for(lambda e=edge, c=count: e.captured() >= c, 30, "the capture")
            captured = edge.captured()
            assert captured == count
            state, publisher = check_exactly_once(central, servers, edge, captured)
            assert publisher.lost > capacity  # the outage lapped the ring: loss really counted
            assert state.missed_messages == 0
            # what the ring held when the publisher read again went out whole, to the last id
            ids = np.sort(central_counters(central, state.index)) + 1  # frame i is id i + 1
            gaps = np.flatnonzero(np.diff(ids) > 1)
            resumed = int(ids[gaps[-1] + 1]) if len(gaps) else 1
            assert captured - resumed + 1 >= capacity and ids[-1] == captured
