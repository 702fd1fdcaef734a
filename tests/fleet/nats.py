"""Real nats-server processes for the fleet's tests: one node, or a cluster of three.

    server = NatsServer.single(tmp_path / "nats")      # JetStream on, free ports
    server.start()                                      # returns once /healthz says ready
    async with js(server) as (nc, jetstream): ...       # a nats-py client and its JetStream
    server.stop(); ...; server.start()                  # "NATS down for a while": same port, store
    cluster.kill(1); ...; cluster.restart(1)            # SIGKILL one node, bring it back

Each server runs the Debian `nats-server` binary with a config file written next to its store
(`<dir>/<name>.conf`, log in `<dir>/<name>.log`) and listens on 127.0.0.1 only, on ports taken
free at creation and kept across restarts, never 4222. Readiness is the monitoring endpoint's
`/healthz` answering 200: for a cluster node that means its JetStream has joined the meta group
(a leader is elected), so a stream can be created at once. Every server is started with
PR_SET_PDEATHSIG = SIGKILL, so a test run that dies leaves none behind; the fixtures
(tests/fleet/conftest.py) kill them at teardown in any case.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from tests.waiting import scaled, wait_for

NATS_SERVER = "/usr/sbin/nats-server"
DEFAULT_PORT = 4222  # never used: a test must not meet a NATS the machine runs for real
PR_SET_PDEATHSIG = 1
READY_TIMEOUT = 20.0  # seconds (scaled) for a node to answer /healthz
STOP_TIMEOUT = 10.0

_libc = ctypes.CDLL(None, use_errno=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice), never 4222."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != DEFAULT_PORT:
            return port


def _die_with_parent() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class NatsServer:
    """One nats-server: its ports, store and process. `start()` / `stop()` / `kill()` may be
    called any number of times; ports and store stay the same."""

    name: str
    directory: Path
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)  # the other nodes' cluster ports
    cluster_name: str = "leireye-test"
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @classmethod
    def single(cls, directory: Path, name: str = "n1") -> NatsServer:
        return cls(name, directory)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def store_dir(self) -> Path:
        return self.directory / f"{self.name}-store"

    @property
    def conf_path(self) -> Path:
        return self.directory / f"{self.name}.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    def config_text(self) -> str:
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            "jetstream {",
            f'  store_dir: "{self.store_dir}"',
            "  max_memory_store: 256MB",
            "  max_file_store: 4GB",
            "}",
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.routes)
            lines += [
                "cluster {",
                f"  name: {self.cluster_name}",
                f"  listen: 127.0.0.1:{self.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self) -> None:
        """Start the process without waiting for it (a cluster starts all nodes, then waits)."""
        if self.running:
            raise RuntimeError(f"nats-server {self.name} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text())
        self._close_log()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    def healthy(self) -> bool:
        """The monitoring endpoint's `/healthz` answers 200 (JetStream ready); False while the
        node is starting. Raises when the process has exited."""
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"nats-server {self.name} exited ({code}):\n{self.log_tail()}")
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=scaled(2.0)) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        wait_for(self.healthy, timeout, f"nats-server {self.name} /healthz", interval=0.05)

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def stop(self) -> None:
        """A clean stop (SIGTERM, then SIGKILL after STOP_TIMEOUT)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a node lost as a crash or power cut loses it."""
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(scaled(STOP_TIMEOUT))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(scaled(STOP_TIMEOUT))
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


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
            node.wait_ready()

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
        node.start()
        return node

    def shutdown(self) -> None:
        for node in self.nodes:
            node.kill()


@contextlib.contextmanager
def running(server: NatsServer | NatsCluster) -> Iterator[None]:
    """Start `server` (all its nodes) and kill it on exit, whatever happened."""
    try:
        server.start()
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
