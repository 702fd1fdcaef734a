"""50 clients that never read while 5 keep up: the 5 receive every packet, the capture loses
nothing, the stuck ones are told what they missed, and the workers' memory stays bounded.

test_websocket.py has one stuck client beside one reader; this is the crowd version, with the
stuck clients on raw sockets that stop reading right after `subscribed`.

A client that stops reading is not stuck for the server until the kernel stops taking its data:
the server's send buffer autotunes up to `net.ipv4.tcp_wmem` max (4 MiB here), so each one first
absorbs ~10 000 packets at the full cost of a fast client (measured: 10 000 of 10 000 sent, with
an 8 KiB receive buffer on the client). This module's sensor caps the buffer
(`web.send_buffer_kib: 128`), and `test_a_client_that_never_reads_is_cut_off_early` checks that
the cap works; the crowd test first fills the stuck clients' buffers, waits for the workers to go
idle, and then measures the steady state.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.http import Http
from tests.reliability.live import (
    ROOT_ONLY,
    cli_token,
    current_pids,
    health_ok,
    start,
    wait_roles,
    web_rss_kb,
)
from tests.reliability.rawws import OP_TEXT, RawSocket, frame
from tests.sensor import Sensor, free_udp_port, send_udp
from tests.waiting import scaled, wait_for
from tests.wsclient import client, recv_type, run, send

pytestmark = ROOT_ONLY

STUCK = 50
READERS = 5
PACKETS = int(os.environ.get("LEIREYE_SLOW_CONSUMER_PACKETS", "20000"))
PREFILL = 30_000  # packets that fill the stuck clients' socket buffers and outboxes first
RATE = 10_000  # packets/s sent on lo
STUCK_RCVBUF = 8192  # bytes: a stalled client's window
MEMORY_BOUND_KB = 64 * 1024  # growth of each worker's RSS (see docs/reliability.md)


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    # A capped send buffer, as a sensor serving many untrusted clients would set it.
    config = (
        "limits: {connections_per_user: 100}\nweb: {port: 0, workers: 2, send_buffer_kib: 128}\n"
    )
    port = free_udp_port()
    s = start(tmp_path_factory.mktemp("slow"), f"udp and dst port {port}",
              {"admin": "ADMIN", "crowd": "VIEWER"}, config)  # fmt: skip
    s.udp_port = port  # type: ignore[attr-defined]
    wait_roles(s, 2)
    yield s
    s.kill()


def subscribe_stuck(sensor: Sensor, token: str, port: int) -> RawSocket:
    raw = RawSocket(sensor.web_port(), f"?token={token}", rcvbuf=STUCK_RCVBUF)
    with ExitStack() as on_failure:
        on_failure.callback(raw.close)
        assert raw.status == 101
        sub = {"type": "subscribe", "channel": "packets", "filters": {"port": port}}
        raw.send(frame(OP_TEXT, json.dumps(sub).encode()))
        seen: list[bytes] = []
        try:
            for _ in range(100):  # auth_success, status, maybe stats, then subscribed
                seen.append(raw.read_frame().payload)
                if b'"subscribed"' in seen[-1]:
                    on_failure.pop_all()
                    return raw  # from here on it never reads
        except OSError as exc:
            raise AssertionError(f"{exc!r} after {[p[:120] for p in seen]}") from exc
        raise AssertionError(f"no subscribed in {[p[:120] for p in seen]}")
    raise AssertionError("unreachable")


def web_cpu_s(sensor: Sensor) -> float:
    """CPU seconds the web workers have used."""
    total = 0.0
    for role, pid in current_pids(sensor).items():
        if role.startswith("web-"):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_idle(sensor: Sensor) -> None:
    """Until the workers (together) used under 20 % of a core over the last half second: busy
    pushing a backlog they use a whole core or more; idle with 50 connections, from ~2 % up to
    ~8 % on a slow day, so a 5 % line was crossed by chance or never."""
    samples = [web_cpu_s(sensor)]

    def idle() -> bool:
        samples.append(web_cpu_s(sensor))
        return len(samples) > 5 and samples[-1] - samples[-6] < 0.1

    wait_for(idle, 60, "the workers to go idle", interval=0.1)


def drain_until_dropped(raw: RawSocket) -> dict[str, Any]:
    """Read a stuck client's backlog until its `dropped` notice."""
    raw.sock.settimeout(10)
    for _ in range(PACKETS + 1000):
        payload = raw.read_frame().payload
        if b'"dropped"' in payload:
            message: dict[str, Any] = json.loads(payload)
            return message
    raise AssertionError("no dropped message in the backlog")


def test_fifty_stuck_clients_cost_nothing_to_five_readers(sensor: Sensor) -> None:
    port: int = sensor.udp_port  # type: ignore[attr-defined]
    token = cli_token(sensor, "crowd")
    url = f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token={token}"

    async def reader(ready: asyncio.Event, count: list[int]) -> list[int]:
        ids: list[int] = []
        async with client(url) as ws:
            await recv_type(ws, "auth_success")
            await send(ws, type="subscribe", channel="packets", filters={"port": port},
                       options={"batch": True})  # fmt: skip
            await recv_type(ws, "subscribed")
            count.append(1)
            if len(count) == READERS:
                ready.set()
            notices: list[dict[str, Any]] = []
            deadline = time.monotonic() + scaled(30)
            while len(ids) < PACKETS:
                try:
                    left = max(0.01, deadline - time.monotonic())
                    message = json.loads(await asyncio.wait_for(ws.recv(), left))
                except TimeoutError:
                    raise AssertionError(f"got {len(ids)} packets; {notices}") from None
                if message["type"] == "packets":
                    ids.extend(p["id"] for p in message["data"])
                elif message["type"] == "dropped":
                    notices.append(message)
        return ids

    async def go() -> list[list[int]]:
        ready, count = asyncio.Event(), []
        tasks = [asyncio.create_task(reader(ready, count)) for _ in range(READERS)]
        await asyncio.wait_for(ready.wait(), 30)
        sender = asyncio.create_task(
            asyncio.to_thread(send_udp, port, PACKETS, b"s" * 200, rate=RATE)
        )
        got = await asyncio.gather(*tasks)
        await sender
        return list(got)

    with sensor.explained(), ExitStack() as opened:
        status = sensor.status()
        opened.callback(status.close)
        drops_before = status.read().kernel_drops
        rss_before = web_rss_kb(sensor)
        stuck = [opened.enter_context(subscribe_stuck(sensor, token, port)) for _ in range(STUCK)]
        send_udp(port, PREFILL, b"s" * 200, rate=RATE)
        wait_idle(sensor)
        received = run(go())
        rss_loaded = web_rss_kb(sensor)
        for ids in received:
            assert len(ids) == PACKETS and len(set(ids)) == PACKETS
            assert ids == sorted(ids)
        assert len({tuple(ids) for ids in received}) == 1  # the same packets for all five
        assert status.read().kernel_drops == drops_before
        dropped = drain_until_dropped(stuck[0])
        assert dropped["reason"] == "slow_consumer" and dropped["count"] > 0
    grew = {role: rss_loaded[role] - rss_before[role] for role in rss_before}
    print(f"\nslow consumers: worker RSS before {rss_before} KiB, loaded {rss_loaded} KiB")
    assert all(kb < MEMORY_BOUND_KB for kb in grew.values()), (rss_before, rss_loaded)
    metrics = Http(sensor.web_port(), token).get("/metrics").body.decode()
    skipped = sum(int(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith("leireye_web_client_dropped_total{"))  # fmt: skip
    assert skipped > 0
    wait_for(lambda: health_ok(sensor), 10, "/health")


def test_a_client_that_never_reads_is_cut_off_early(sensor: Sensor) -> None:
    port: int = sensor.udp_port  # type: ignore[attr-defined]
    token = cli_token(sensor, "crowd")
    with sensor.explained(), subscribe_stuck(sensor, token, port) as raw:
        send_udp(port, 14_000, b"s" * 200, rate=RATE)
        wait_idle(sensor)
        raw.sock.settimeout(5)
        queued = 0
        deadline = time.monotonic() + scaled(10)  # the backlog is there to read at once
        while time.monotonic() < deadline and queued < 14_000:
            payload = raw.read_frame().payload
            if b'"dropped"' in payload:
                break
            queued += b'"packet"' in payload
        # The outbox holds outbox_messages (4096) packets; the sockets should add little to it.
        assert queued < 4096 + 1500, f"{queued} packets were queued for a client that never read"
