"""The fleet's NATS fixtures work: real servers, outages, a replicated stream surviving a node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from tests.fleet.nats import DEFAULT_PORT, NatsCluster, NatsServer, js, running, single
from tests.waiting import scaled

RETRYABLE = (NatsTimeout, NoRespondersError, NoStreamResponseError, ServiceUnavailableError)


async def publish_sure(jetstream: JetStreamContext, subject: str, index: int) -> None:
    """Publish message `index` until JetStream acknowledges it; the same Nats-Msg-Id on each
    try, so a retry after a lost ack stores nothing twice (as the sensor's publisher does)."""
    deadline = asyncio.get_running_loop().time() + scaled(30.0)
    while True:
        try:
            await jetstream.publish(
                subject, str(index).encode(), headers={"Nats-Msg-Id": f"m{index}"}, timeout=1.0
            )
            return
        except RETRYABLE:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)  # a retry pause while a leader is elected, not a sync


async def read_all(jetstream: JetStreamContext, stream: str, count: int) -> list[int]:
    info = await jetstream.stream_info(stream)
    assert info.state.messages == count
    values = []
    for seq in range(1, count + 1):
        message = await jetstream.get_msg(stream, seq)
        values.append(int(message.data or b""))
    return values


def test_single_node_outage_keeps_the_stream(nats_server: NatsServer) -> None:
    assert nats_server.port != DEFAULT_PORT

    async def before() -> None:
        async with js(nats_server) as (_, jetstream):
            await jetstream.add_stream(
                StreamConfig(name="T", subjects=["t.>"], storage=StorageType.FILE)
            )
            for index in range(50):
                await publish_sure(jetstream, "t.a", index)

    async def after() -> list[int]:
        async with js(nats_server) as (_, jetstream):
            for index in range(50, 60):
                await publish_sure(jetstream, "t.a", index)
            return await read_all(jetstream, "T", 60)

    asyncio.run(before())
    nats_server.stop()
    assert not nats_server.running
    nats_server.start()  # same port, same store
    assert asyncio.run(after()) == list(range(60))


def test_client_rides_out_an_outage(nats_server: NatsServer) -> None:
    """A client connected before the outage publishes again after it, without reconnecting by
    hand: what a sensor does when NATS is down for a while."""

    async def body() -> list[int]:
        async with js(nats_server) as (_, jetstream):
            await jetstream.add_stream(StreamConfig(name="T", subjects=["t.>"]))
            await publish_sure(jetstream, "t.a", 0)
            await asyncio.to_thread(nats_server.stop)
            await asyncio.to_thread(nats_server.start)
            await publish_sure(jetstream, "t.a", 1)
            return await read_all(jetstream, "T", 2)

    assert asyncio.run(body()) == [0, 1]


@pytest.mark.slow
def test_r3_stream_survives_its_leader_killed(nats_cluster: NatsCluster) -> None:
    async def body() -> None:
        async with js(nats_cluster) as (_, jetstream):
            info = await jetstream.add_stream(
                StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3)
            )
            assert info.config.num_replicas == 3
            for index in range(100):
                await publish_sure(jetstream, "r3.x", index)
            info = await jetstream.stream_info("R3")
            assert info.cluster is not None and info.cluster.leader is not None
            leader = next(
                i for i, n in enumerate(nats_cluster.nodes) if n.name == info.cluster.leader
            )
            await asyncio.to_thread(nats_cluster.kill, leader)
            for index in range(100, 200):
                await publish_sure(jetstream, "r3.x", index)
            assert await read_all(jetstream, "R3", 200) == list(range(200))
            info = await jetstream.stream_info("R3")
            assert (
                info.cluster is not None and info.cluster.leader != nats_cluster.nodes[leader].name
            )
            await asyncio.to_thread(nats_cluster.restart, leader)
            # the restarted node catches up: every replica current again
            deadline = asyncio.get_running_loop().time() + scaled(30.0)
            while True:
                info = await jetstream.stream_info("R3")
                replicas = (info.cluster.replicas or []) if info.cluster else []
                if len(replicas) == 2 and all(r.current for r in replicas):
                    break
                assert asyncio.get_running_loop().time() < deadline, f"replicas {replicas}"
                await asyncio.sleep(0.1)

    asyncio.run(body())


def test_running_kills_the_server_when_the_test_fails(tmp_path: Path) -> None:
    server = single(tmp_path)
    with pytest.raises(RuntimeError, match="boom"), running(server):
        assert server.running
        raise RuntimeError("boom")
    assert server.proc is not None and server.proc.poll() is not None
