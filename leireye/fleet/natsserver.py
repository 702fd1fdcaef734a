"""A local nats-server process with JetStream: for `leireye fleet-demo`, the fleet's tests and
its benchmark. Not how a fleet is deployed (docs/fleet-deploy.md): a real NATS runs on its own.

The server gets a config file written beside its store (`<dir>/<name>.conf`, its log in
`<dir>/<name>.log`), listens on 127.0.0.1 only, on ports chosen free at creation and kept
across restarts (never 4222, where a NATS of the machine's own may listen). Ready means the
monitoring endpoint's `/healthz` answers 200: for a cluster node, its JetStream has joined the
meta group, so a stream can be created at once. The process is started with PR_SET_PDEATHSIG,
so it does not outlive whoever started it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from leireye.fleet.model import FleetError

NATS_SERVER_PATHS: Final = ("nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server")
DEFAULT_PORT: Final = 4222  # never chosen
PR_SET_PDEATHSIG: Final = 1

_libc = ctypes.CDLL(None, use_errno=True)


def nats_server_binary() -> str:
    """The nats-server executable; FleetError saying how to install it when there is none."""
    for candidate in NATS_SERVER_PATHS:
        found = shutil.which(candidate)
        if found:
            return found
    raise FleetError("nats-server is not installed (Debian: apt-get install nats-server)")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice), never 4222."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != DEFAULT_PORT:
            return port


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """For `preexec_fn`: the child gets `sig` when the process that started it dies."""
    _libc.prctl(PR_SET_PDEATHSIG, sig)


@dataclass
class NatsServer:
    """One nats-server: its ports, store and process. `start()`, `stop()` and `kill()` may be
    called any number of times; ports and store stay the same."""

    name: str
    directory: Path
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)  # the other nodes' cluster ports
    cluster_name: str = "leireye"
    max_file_store: str = "4GB"
    extra_config: str = ""  # appended to the config (accounts, TLS, ...)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

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
            f"  max_file_store: {self.max_file_store}",
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
        return "\n".join(lines) + "\n" + self.extra_config

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self) -> None:
        """Start the process without waiting for it (a cluster starts every node, then waits)."""
        if self.running:
            raise FleetError(f"nats-server {self.name} is already running")
        binary = nats_server_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as conf:  # it may hold passwords (extra_config)
            conf.write(self.config_text())
        self._close_log()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is for whoever started it
            preexec_fn=die_with_parent,
        )

    def healthy(self) -> bool:
        """`/healthz` answers 200 (JetStream ready); False while the node is starting.
        FleetError, with the end of its log, when the process has exited."""
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise FleetError(f"nats-server {self.name} exited ({code}):\n{self.log_tail()}")
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise FleetError(
                    f"nats-server {self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def start(self, timeout: float = 20.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """A clean stop: SIGTERM, then SIGKILL after `timeout`."""
        self._end(signal.SIGTERM, timeout)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL, as a crash or a power cut would end it."""
        self._end(signal.SIGKILL, timeout)

    def _end(self, sig: int, timeout: float) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
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
