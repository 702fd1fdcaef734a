"""leireye-client.js under Node against a real `leireye run`: streaming, a killed worker, and
its unit checks. Node 20 needs `--experimental-websocket` for a global WebSocket; without it the
`ws` package from tests/js/node_modules is used (scripts/setup.sh installs it where needed)."""

from __future__ import annotations

import base64
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

import msgspec
import numpy as np
import pytest

from leireye.web.columns import column_batches, encode_columns
from leireye.web.encode import encode_packets, packet_data
from tests.clientenv import Live
from tests.sensor import send_udp
from tests.unit.test_web_encode import random_records
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


def column_fixture(
    records: np.ndarray, sensors: list[str | None] | None = None
) -> dict[str, object]:
    """A frame made by the server's column encoder and the JSON texts the JSON path sends."""
    frame = encode_columns(records, sensors)
    json_names = None if sensors is None else [msgspec.json.encode(s).decode() for s in sensors]
    packets = [packet_data(m) for m in encode_packets(records, json_names)]
    return {"frame": base64.b64encode(frame).decode(), "packets": packets}


@needs_node
def test_node_decodes_the_server_column_frames_into_the_json_packets(tmp_path: Path) -> None:
    """Random records (every field, odd addresses, ids past 2**53), realistic ids, a central's
    `sensor` column (an index past its table: null), and the byte-capped batches a session
    sends, streamed through the client (tests/js/columns.mjs)."""
    batches = [column_fixture(random_records(n, seed)) for n, seed in ((1, 1), (300, 2), (64, 3))]
    realistic = random_records(500, 4)
    realistic["seq"] = np.arange(10**6, 10**6 + 500)
    realistic["ts_ns"] = 1_700_000_000_123_456_789 + np.arange(500) * 999_999
    batches.append(column_fixture(realistic))
    realistic["sensor"] = np.arange(500) % 4
    names: list[str | None] = ["branch-7", "hq", "édge"]
    batches.append(column_fixture(realistic, names))
    json_names = [msgspec.json.encode(name).decode() for name in names]
    start, client = 0, []
    for frame, n in column_batches(realistic[:200], 2048, names):
        client.append(len(batches))
        packets = [packet_data(m) for m in encode_packets(realistic[start : start + n], json_names)]
        batches.append({"frame": base64.b64encode(frame).decode(), "packets": packets})
        start += n
    good = base64.b64decode(str(batches[1]["frame"]))
    bad = [b"", b"\x80", b"{}", good[:-3], msgspec.msgpack.encode({"type": "packets"})]
    fields = msgspec.msgpack.decode(good)
    bad.append(msgspec.msgpack.encode({**fields, "count": 301}))
    bad.append(msgspec.msgpack.encode({**fields, "flag_sets": [None] * 9}))
    bad.append(msgspec.msgpack.encode({**fields, "addresses": []}))  # indexes past the table
    bad.append(msgspec.msgpack.encode({**fields, "sensor": fields["id"][: 4 * 300]}))  # no table
    fixture = tmp_path / "columns.json"
    bad_frames = [base64.b64encode(b).decode() for b in bad]
    fixture.write_text(json.dumps({"batches": batches, "bad": bad_frames, "client": client}))
    assert len(client) > 2
    command = node_command()
    assert command is not None
    out = subprocess.run([*command, str(JS / "columns.mjs"), str(fixture)], capture_output=True,
                         text=True, timeout=scaled(30))  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    env = Live(tmp_path_factory.mktemp("js"))
    yield env
    env.sensor.kill()


class Node:
    """tests/js/stream.mjs as a subprocess, its stdout collected line by line."""

    def __init__(
        self, live: Live, count: int, env: dict[str, str] | None = None, fmt: str = "json"
    ) -> None:
        command = node_command()
        assert command is not None
        args = [str(JS / "stream.mjs"), live.url, live.token(), str(live.port), str(count), fmt]
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
def test_node_asking_for_columns_gets_the_packets_a_json_client_gets(live: Live) -> None:
    """The same traffic to a JSON client and a `format: "columns"` one: the same packet objects,
    field for field, in the same order (infos and lengths vary with the payloads)."""
    total = 300
    clients = [Node(live, total, fmt=fmt) for fmt in ("json", "columns")]
    for node in clients:
        wait_for(lambda node=node: "ready" in node.lines, 20, "node to subscribe")
    for n in range(0, total, 30):
        send_udp(live.port, 30, b"c" * (n // 10 + 1))
    assert [node.finish() for node in clients] == [0, 0], [n.lines[-3:] for n in clients]
    json_packets, column_packets = (node.packets() for node in clients)
    assert len(json_packets) == total
    assert column_packets == json_packets
    echoes = [[line for line in node.lines if line.startswith("options ")] for node in clients]
    assert echoes == [['options {"batch":true}'], ['options {"batch":true,"format":"columns"}']]
    assert len({p["length"] for p in column_packets}) == total // 30


@needs_node
@live_capture
@pytest.mark.parametrize("fmt", ["json", "columns"])
def test_node_resumes_across_a_killed_worker_without_gap_or_repeat(live: Live, fmt: str) -> None:
    total = 2000
    node = Node(live, total, fmt=fmt)
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
    odd = [line[:200] for line in node.lines if not line.startswith("{")]
    assert len(ids) == total and not gaps, (len(node.lines), odd[:10])
    assert node.lines[-1] == "done connections=2"
