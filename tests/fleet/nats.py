"""Real nats-server processes for the fleet's tests: one node, or a cluster of three.

    server = single(tmp_path / "nats")                  # JetStream on, free ports
    server.start()                                      # returns once /healthz says ready
    async with js(server) as (nc, jetstream): ...       # a nats-py client and its JetStream
    server.stop(); ...; server.start()                  # "NATS down for a while": same port, store
    cluster.kill(1); ...; cluster.restart(1)            # SIGKILL one node, bring it back

A server is `leireye.fleet.natsserver.NatsServer` (the one `leireye fleet-demo` and the
benchmark start too): the Debian `nats-server` with a config file beside its store, on
127.0.0.1 and ports taken free at creation and kept across restarts, never 4222; ready when
`/healthz` answers 200 (a cluster node: its JetStream has joined the meta group). Every server
is started with PR_SET_PDEATHSIG = SIGKILL, so a test run that dies leaves none behind; the
fixtures (tests/fleet/conftest.py) kill them at teardown in any case.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from leireye.fleet.natsserver import DEFAULT_PORT, NatsServer, free_port, nats_server_binary
from tests.waiting import scaled

__all__ = [
    "DEFAULT_PORT",
    "NatsCluster",
    "NatsServer",
    "free_port",
    "js",
    "nats_server_binary",
    "running",
    "single",
]


def single(directory: Path, name: str = "n1") -> NatsServer:
    """One node with JetStream, not started."""
    return NatsServer(name, directory, cluster_name="leireye-test")


READY_TIMEOUT = 20.0  # seconds (scaled) for a node to answer /healthz


@dataclass
class NatsCluster:
    """Three (or `size`) nodes joined by cluster routes, JetStream on each: streams with
    `num_replicas=3` are possible, and survive one node lost."""

    nodes: list[NatsServer]

    @classmethod
    def create(cls, directory: Path, size: int = 3) -> NatsCluster:
        ports = [free_port() for _ in range(size)]
        nodes = [
            NatsServer(
                f"n{index + 1}",
                directory,
                cluster_port=port,
                routes=[other for other in ports if other != port],
                cluster_name="leireye-test",
            )
            for index, port in enumerate(ports)
        ]
        return cls(nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            if not node.running:
                node.launch()
        for node in self.nodes:
            node.wait_ready(scaled(READY_TIMEOUT))

    def kill(self, index: int) -> NatsServer:
        """SIGKILL node `index` (0-based); returns it."""
        node = self.nodes[index]
        node.kill()
        return node

    def stop(self, index: int) -> NatsServer:
        node = self.nodes[index]
        node.stop()
        return node

    def restart(self, index: int) -> NatsServer:
        """Start node `index` again on its ports and store, and wait until it is healthy (it
        has rejoined the cluster and caught up with the meta group)."""
        node = self.nodes[index]
        node.start(scaled(READY_TIMEOUT))
        return node

    def shutdown(self) -> None:
        for node in self.nodes:
            node.kill()


@contextlib.contextmanager
def running(server: NatsServer | NatsCluster) -> Iterator[None]:
    """Start `server` (all its nodes) and kill it on exit, whatever happened."""
    try:
        if isinstance(server, NatsCluster):
            server.start()
        else:
            server.start(scaled(READY_TIMEOUT))
        yield
    finally:
        if isinstance(server, NatsCluster):
            server.shutdown()
        else:
            server.kill()


def _servers(target: NatsServer | NatsCluster | Sequence[str]) -> list[str]:
    if isinstance(target, NatsServer):
        return [target.url]
    if isinstance(target, NatsCluster):
        return target.urls
    return list(target)


@contextlib.asynccontextmanager
async def js(
    target: NatsServer | NatsCluster | Sequence[str], **options: Any
) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    """A connected nats-py client (reconnecting across the given servers) and its JetStream
    context; drained and closed on exit. `options` go to `nats.connect`."""
    options.setdefault("connect_timeout", scaled(2.0))
    options.setdefault("reconnect_time_wait", 0.2)
    options.setdefault("max_reconnect_attempts", -1)
    nc = await nats.connect(servers=_servers(target), **options)
    try:
        yield nc, nc.jetstream(timeout=scaled(5.0))
    finally:
        await nc.close()
