"""WebSocket subscribers for the end-to-end benchmarks, in processes of their own so their CPU
shows apart from the server's.

`ClientGroup(plan, procs)` starts the processes, each opening its share of `plan.filters` (one
subscriber per entry) and reporting "ready"; after the traffic, `drain(idle_s, bound_s)` lets
them read until nothing came for `idle_s` or `bound_s` passed, and returns what each subscriber
received (`bench_ws.Counts` as dicts). Two protocols:

- `leireye`: `/ws/capture?token=...`, auth, subscribe to `packets` with the entry's filter
  (batch mode or not); packets counted and timed by `bench_ws.read_loop`.
- `lines`: any server that pushes one packet per message (`reference_broadcaster.py`): each
  message is a packet, its latency read from the tshark EK `"timestamp":"<epoch ms>"` field.

Latency is recorded on the first subscriber of each process only (timing every packet of every
subscriber would make the clients the bottleneck).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.bench_ws import Counts, read_loop

EK_TS = '"timestamp":"'
CONNECT_GATE = 20  # handshakes in flight per process


@dataclass(frozen=True)
class ClientPlan:
    url: str
    filters: list[dict[str, Any] | None]
    batch: bool = True
    protocol: str = "leireye"
    format: str = "json"  # or "columns": binary batches


async def open_leireye(
    url: str, filters: dict[str, Any] | None, batch: bool, fmt: str = "json"
) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(url, open_timeout=60, close_timeout=2, max_size=None, compression=None)
    subscribe: dict[str, Any] = {"type": "subscribe", "channel": "packets", "filters": filters}
    subscribe["options"] = {"batch": batch} if fmt == "json" else {"format": fmt}
    await ws.send(json.dumps(subscribe))
    deadline = time.monotonic() + 60
    while True:  # auth_success, status, stats... then subscribed
        message = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if message["type"] == "subscribed":
            return ws
        if message["type"] in ("auth_error", "error"):
            raise RuntimeError(f"server said {message}")


async def open_lines(url: str) -> Any:
    from websockets.asyncio.client import connect

    return await connect(url, open_timeout=60, close_timeout=2, max_size=None, compression=None)


async def read_lines(ws: Any, counts: Counts, latency: bool) -> None:
    from websockets.exceptions import ConnectionClosed

    with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
        async for raw in ws:
            now = time.time()
            counts.packets += 1
            counts.messages += 1
            counts.first = counts.first or now
            counts.last = now
            if latency and (at := raw.find(EK_TS)) >= 0:
                at += len(EK_TS)
                counts.latencies.append(now - int(raw[at : at + 13]) / 1000)


async def wait_drain(pipe: Connection, counts: list[Counts]) -> None:
    while not pipe.poll():
        await asyncio.sleep(0.05)
    idle_s, bound_s = pipe.recv()
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if time.time() - max((c.last for c in counts), default=0.0) > idle_s:
            return
        await asyncio.sleep(0.05)


async def run_clients(pipe: Connection, plan: ClientPlan) -> list[Counts]:
    counts = [Counts() for _ in plan.filters]
    gate = asyncio.Semaphore(CONNECT_GATE)

    async def one(filters: dict[str, Any] | None) -> Any:
        async with gate:
            if plan.protocol == "lines":
                return await open_lines(plan.url)
            return await open_leireye(plan.url, filters, plan.batch, plan.format)

    sockets = await asyncio.gather(*(one(f) for f in plan.filters))
    reader = read_lines if plan.protocol == "lines" else read_loop
    tasks = [
        asyncio.create_task(reader(ws, c, i == 0))
        for i, (ws, c) in enumerate(zip(sockets, counts, strict=True))
    ]
    pipe.send("ready")
    try:
        await wait_drain(pipe, counts)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closing = (asyncio.wait_for(ws.close(), 3) for ws in sockets)
        await asyncio.gather(*closing, return_exceptions=True)
    return counts


def client_main(pipe: Connection, plan: ClientPlan) -> None:
    try:
        counts = asyncio.run(run_clients(pipe, plan))
        pipe.send([c.__dict__ for c in counts])
    except BaseException as exc:  # tell the parent rather than leave it waiting
        with contextlib.suppress(Exception):
            pipe.send(f"error: {exc!r}")
        raise


class ClientGroup:
    """Client processes sharing one plan's subscribers; a context manager that kills them."""

    def __init__(self, plan: ClientPlan, procs: int = 1) -> None:
        ctx = multiprocessing.get_context("spawn")
        procs = max(1, min(procs, len(plan.filters)))
        self.children: list[tuple[Any, Connection]] = []
        for i in range(procs):
            mine, theirs = ctx.Pipe()
            share = replace(plan, filters=plan.filters[i::procs])
            proc = ctx.Process(target=client_main, args=(theirs, share), daemon=True)
            proc.start()
            self.children.append((proc, mine))

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc, _ in self.children]

    def ready(self, timeout_s: float = 120) -> None:
        for _, pipe in self.children:
            if not pipe.poll(timeout_s):
                raise RuntimeError(f"clients did not connect within {timeout_s} s")
            if (msg := pipe.recv()) != "ready":
                raise RuntimeError(f"client process: {msg}")

    def drain(self, idle_s: float, bound_s: float) -> list[dict[str, Any]]:
        for _, pipe in self.children:
            pipe.send((idle_s, bound_s))
        results: list[dict[str, Any]] = []
        for _, pipe in self.children:
            if not pipe.poll(bound_s + 30):
                raise RuntimeError("clients did not report in time")
            msg = pipe.recv()
            if isinstance(msg, str):
                raise RuntimeError(f"client process: {msg}")
            results += msg
        return results

    def __enter__(self) -> ClientGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc, pipe in self.children:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            pipe.close()
