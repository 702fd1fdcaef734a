"""Processes killed under a live stream: the capture, the stats process and the web worker are
each SIGKILLed while a client follows the packets; each is restarted, the client is told
(`status`, fresh `stats`), reconnects with `since` after losing its worker, and the ids it saw are
gap-free and without duplicates. Then SIGTERM to the supervisor stops everything in time and
leaves no shared memory.

test_supervisor.py already checks a killed capture at the ring level and a clean SIGTERM without
clients; test_websocket.py a killed worker's connection slots. This is the same under a stream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from leireye.ring.shm import SHM_DIR
from tests.reliability.live import ROOT_ONLY, cli_token, current_pids, start, wait_roles
from tests.sensor import free_udp_port, send_udp
from tests.waiting import scaled
from tests.wsclient import run

pytestmark = ROOT_ONLY

BURST = 300


class Follower:
    """A client that follows the packets, reconnecting with `since` whenever it loses its
    connection; everything it saw is kept."""

    def __init__(self, url: str, port: int) -> None:
        self.url = url
        self.port = port
        self.ids: list[int] = []
        self.statuses: list[tuple[float, dict[str, Any]]] = []
        self.stats_at: list[float] = []
        self.connections = 0
        self.subscriptions = 0  # `subscribed` answers: the stream is live from the first
        self.closes: list[int | None] = []
        self.stop = False

    async def run(self) -> None:
        deadline = time.monotonic() + scaled(120)
        while not self.stop and time.monotonic() < deadline:
            try:
                await self._follow()
            except (ConnectionClosed, OSError, InvalidStatus, TimeoutError) as exc:
                code = exc.rcvd.code if isinstance(exc, ConnectionClosed) and exc.rcvd else None
                self.closes.append(code)
                await asyncio.sleep(0.1)  # reconnect backoff while the worker restarts

    async def _follow(self) -> None:
        async with connect(self.url, open_timeout=scaled(5)) as ws:
            self.connections += 1
            sub: dict[str, Any] = {"type": "subscribe", "channel": "packets",
                                   "filters": {"port": self.port}}  # fmt: skip
            if self.ids:
                sub["since"] = self.ids[-1]
            await ws.send(json.dumps(sub))
            while not self.stop:
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.2)
                except TimeoutError:
                    continue
                message = json.loads(raw)
                kind = message["type"]
                if kind == "packet":
                    self.ids.append(message["data"]["id"])
                elif kind == "subscribed":
                    self.subscriptions += 1
                elif kind == "status":
                    self.statuses.append((time.monotonic(), message["data"]))
                elif kind == "stats":
                    self.stats_at.append(time.monotonic())


async def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if value := condition():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {scaled(timeout):.1f}s waiting for {what}")


def test_killed_children_are_restarted_and_a_follower_loses_nothing(
    tmp_path: Path,
) -> None:
    port = free_udp_port()
    config = "web: {port: 0, workers: 1}\nsupervisor: {restart_backoff_s: [0.2]}\n"
    users = {"admin": "ADMIN", "fol": "VIEWER"}
    sensor = start(tmp_path, f"udp and dst port {port}", users, config)
    try:
        wait_roles(sensor, 1)
        url = f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token={cli_token(sensor, 'fol')}"
        follower = Follower(url, port)
        status_block = sensor.status()

        sent = [0]

        async def burst() -> None:
            await asyncio.to_thread(send_udp, port, BURST, b"f" * 64, 5_000)
            sent[0] += BURST

        async def burst_and_see(what: str) -> None:
            await burst()
            await until(lambda: len(follower.ids) >= sent[0], 20, f"packets after {what}")

        async def kill(role: str) -> int:
            victim = current_pids(sensor)[role]
            os.kill(victim, signal.SIGKILL)
            return victim

        async def go() -> None:
            task = asyncio.create_task(follower.run())
            await until(lambda: follower.subscriptions and follower.statuses, 10, "a subscription")
            await burst_and_see("start")

            # The capture: restarted, the client is told, ids go on.
            victim = await kill("capture")
            await until(lambda: current_pids(sensor)["capture"] != victim, 20, "a new capture")
            await until(lambda: capturing_again(status_block, victim), 20, "capturing")
            await burst_and_see("the capture restart")

            # The stats process: restarted, `stats` messages keep coming.
            victim = await kill("stats")
            killed_at = time.monotonic()
            await until(lambda: current_pids(sensor)["stats"] != victim, 20, "a new stats")
            await until(lambda: sum(t > killed_at + 1 for t in follower.stats_at) >= 2, 20,
                        "stats from the new process")  # fmt: skip

            # The web worker: the client loses its connection and resumes with `since`; what
            # was sent while it was away is replayed.
            connections = follower.connections
            victim = await kill("web-0")
            await until(lambda: follower.closes, 10, "the connection to drop")
            await burst()  # while away
            await until(lambda: current_pids(sensor)["web-0"] != victim, 20, "a new worker")
            await until(lambda: follower.connections > connections, 20, "a reconnection")
            await burst_and_see("the worker restart")
            await asyncio.sleep(0.3)  # let any extra (duplicate) packet arrive before stopping
            follower.stop = True
            await task

        run(go())
        status_block.close()
        ids = follower.ids
        assert len(ids) == len(set(ids)), "duplicates across the reconnect"
        assert ids == list(range(ids[0], ids[0] + len(ids))), "a gap in the ids"
        assert len(ids) == 4 * BURST  # the burst sent while away included
        states = [data["state"] for _, data in follower.statuses]
        assert states[0] == "capturing" and len(states) >= 2, states
        assert status_block_restarts(sensor) >= 1
        for role in ("capture", "stats", "web-0"):
            assert f"{role} died" in sensor.log, role

        # SIGTERM to the supervisor: everything stops within the shutdown timeout.
        children = list(current_pids(sensor).values())
        began = time.monotonic()
        sensor.proc.send_signal(signal.SIGTERM)
        code = sensor.proc.wait(scaled(2.0) + 1)
        took = time.monotonic() - began
        assert code == 0, sensor.log[-2000:]
        assert took < scaled(2.0) + 0.5, took
        print(f"\nSIGTERM to exit: {took:.2f} s")
        assert not [p for p in SHM_DIR.iterdir() if p.name.startswith(sensor.name)]
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()
                    and "zombie" not in Path(f"/proc/{pid}/status").read_text()]  # fmt: skip
    finally:
        sensor.kill()


def capturing_again(block: Any, old_pid: int) -> bool:
    status = block.read()
    return bool(status.state == "capturing" and status.pid not in (0, old_pid))


def status_block_restarts(sensor: Any) -> int:
    block = sensor.status()
    try:
        return int(block.read().restarts)
    finally:
        block.close()
