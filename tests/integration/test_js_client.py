"""leireye-client.js under Node against a real `leireye run`: streaming, a killed worker, and
its unit checks. Node 20 needs `--experimental-websocket` for a global WebSocket; without it the
`ws` package from tests/js/node_modules is used (scripts/setup.sh installs it where needed)."""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clientenv import Live
from tests.sensor import send_udp
from tests.waiting import scaled, wait_for

JS = Path(__file__).resolve().parents[1] / "js"


@functools.cache
def node_command() -> list[str] | None:
    """`node` with what it needs for a WebSocket, or None when it cannot have one."""
    node = shutil.which("node")
    if node is None:
        return None
    check = "if (typeof WebSocket !== 'function') process.exit(1)"
    for flags in ([], ["--experimental-websocket"]):
        probe = subprocess.run([node, *flags, "-e", check], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [node, *flags]
    return [node] if (JS / "node_modules" / "ws").is_dir() else None


needs_node = pytest.mark.skipif(
    node_command() is None, reason="no node with a WebSocket (run scripts/setup.sh)"
)
live_capture = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root")


@needs_node
def test_the_pure_parts_and_the_reconnect_schedule() -> None:
    command = node_command()
    assert command is not None
    out = subprocess.run([*command, str(JS / "unit.mjs")], capture_output=True, text=True,
                         timeout=scaled(30))  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    env = Live(tmp_path_factory.mktemp("js"))
    yield env
    env.sensor.kill()


class Node:
    """tests/js/stream.mjs as a subprocess, its stdout collected line by line."""

    def __init__(self, live: Live, count: int, env: dict[str, str] | None = None) -> None:
        command = node_command()
        assert command is not None
        args = [str(JS / "stream.mjs"), live.url, live.token(), str(live.port), str(count)]
        self.proc = subprocess.Popen([*command, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def packets(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def finish(self) -> int:
        try:
            code = self.proc.wait(scaled(30))
        finally:
            self.proc.kill()
            self.proc.wait()
            self.reader.join(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        return code


@needs_node
@live_capture
def test_node_receives_what_the_test_sends(live: Live) -> None:
    node = Node(live, 5)
    wait_for(lambda: "ready" in node.lines, 20, "node to subscribe")
    send_udp(live.port, 5, b"node")
    assert node.finish() == 0, node.lines
    packets = node.packets()
    ids = [p["id"] for p in packets]
    assert ids == list(range(int(ids[0]), int(ids[0]) + 5))  # type: ignore[call-overload]
    assert all(p["dst_port"] == live.port and p["protocol"] == "UDP" for p in packets)
    assert node.lines[-1] == "done connections=1"


@needs_node
@live_capture
def test_node_resumes_across_a_killed_worker_without_gap_or_repeat(live: Live) -> None:
    total = 2000
    node = Node(live, total)
    wait_for(lambda: "ready" in node.lines, 20, "node to subscribe")
    sender = threading.Thread(target=send_udp, args=(live.port, total, b"n" * 40, 1000))
    sender.start()
    wait_for(lambda: len(node.lines) > total // 4, 20, "a quarter of the packets")
    os.kill(live.worker_pids()[-1], signal.SIGKILL)
    sender.join()
    assert node.finish() == 0, node.lines[-5:]
    ids = [int(p["id"]) for p in node.packets()]  # type: ignore[call-overload]
    jumps = [(a, b) for a, b in itertools.pairwise(ids) if b != a + 1]
    gaps = [line for line in node.lines if line.startswith("gap")]
    assert not jumps, f"ids jump at {jumps[:5]}; gaps: {gaps[:3]}"
    assert len(ids) == total and not gaps
    assert node.lines[-1] == "done connections=2"
