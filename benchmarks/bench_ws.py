"""WebSocket fan-out and capture-to-client latency against a real `leireye run` on `lo`.

    sudo .venv/bin/python benchmarks/bench_ws.py [--workers 2] [--rate 50000] [--seconds 3]
    sudo .venv/bin/python benchmarks/bench_ws.py --quick      # CI smoke, ~10-20 s

Starts the sensor as a subprocess (`tests.sensor.Sensor`: `--interface lo --bpf "udp and dst
port P"`, `web.workers` from `--workers`, `limits.connections_per_user` raised), then:

1. Fan-out: for S subscribers (all on `filters: {port: P}`) in per-packet and batch mode, sends
   UDP to 127.0.0.1:P at `--rate` for `--seconds` and reports sent, captured (status block),
   packets delivered per subscriber (min / median), packets and messages received per second in
   total, `dropped` notices and the last `client_dropped` seen in `stats` (packets skipped
   because a client read too slowly), and the CPU seconds used by the sensor (all its
   processes), the client process(es) and the sender during the step. Every figure is also
   given as a ratio to the S=1 per-packet step.
2. Latency: 1 subscriber, per-packet mode, at a few rates: client receive time (`time.time()`)
   minus the packet's `timestamp` (capture time, ms resolution): p50 / p99 / max in ms.

Clients are asyncio `websockets` clients in `--client-procs` separate processes (default 1).
They count packets without decoding the JSON of `packet`/`packets` messages (prefix checks and
a substring count), so the client side costs as little as it can; `stats`/`dropped` messages
are decoded. The sender runs in this process. Everything shares the machine's cores with the
sensor (capture, stats, web workers): the CPU columns show who was busy. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec
import numpy as np

from benchmarks.traffic import send_at
from leireye.wire import PacketColumns
from tests.accounts import users_yaml
from tests.sensor import Sensor, free_udp_port

PACKET = '{"type":"packet",'
PACKETS = '{"type":"packets",'
ITEM = '{"id":'
TS_KEY = '"timestamp":"'
USER = "bench"
_columns_decoder = msgspec.msgpack.Decoder(PacketColumns)
DRAIN_MAX_S = 60.0  # after the sender stops, clients read on for at most this long


# -- clients (run in their own process) --------------------------------------------------------


class Counts:
    """What one subscriber received."""

    def __init__(self) -> None:
        self.packets = 0
        self.messages = 0
        self.dropped_notices = 0
        self.dropped_count = 0
        self.client_dropped = 0  # the last `stats` value
        self.stream_lost = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies: list[float] = []


_epoch_cache: dict[str, float] = {}


def capture_time(raw: str, at: int) -> float:
    """Epoch seconds of the ISO timestamp (`2026-01-02T03:04:05.678Z`) starting at `at`."""
    whole = raw[at : at + 19]
    base = _epoch_cache.get(whole)
    if base is None:
        base = dt.datetime.fromisoformat(whole).replace(tzinfo=dt.UTC).timestamp()
        if len(_epoch_cache) > 10_000:
            _epoch_cache.clear()
        _epoch_cache[whole] = base
    return base + int(raw[at + 20 : at + 23]) / 1000


async def subscriber(url: str, batch: bool, port: int, latency: bool, counts: Counts) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(url, open_timeout=30, close_timeout=2, max_size=None)
    deadline = time.monotonic() + 30
    while True:  # auth_success, then status/stats in some order
        message = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if message["type"] == "auth_success":
            break
        if message["type"] in ("auth_error", "error"):
            raise RuntimeError(f"server said {message}")
    subscribe: dict[str, Any] = {"type": "subscribe", "channel": "packets"}
    subscribe["filters"] = {"port": port}
    if batch:
        subscribe["options"] = {"batch": True}
    await ws.send(json.dumps(subscribe))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if message["type"] == "subscribed":
            return ws
        if message["type"] == "error":
            raise RuntimeError(f"subscribe refused: {message}")


async def read_loop(ws: Any, counts: Counts, latency: bool) -> None:
    from websockets.exceptions import ConnectionClosed

    with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
        async for raw in ws:
            now = time.time()
            if isinstance(raw, bytes):  # a `packet_columns` batch (options.format "columns")
                columns = _columns_decoder.decode(raw)
                counts.packets += columns.count
                counts.messages += 1
                counts.first = counts.first or now
                counts.last = now
                if latency:
                    stamps = np.frombuffer(columns.timestamp_ms, dtype="<i8")
                    counts.latencies += (now - stamps / 1000).tolist()
                continue
            if raw.startswith(PACKETS):
                n = raw.count(ITEM)
            elif raw.startswith(PACKET):
                n = 1
            else:
                message = json.loads(raw)
                kind = message["type"]
                if kind == "dropped":
                    counts.dropped_notices += 1
                    counts.dropped_count += message["count"]
                elif kind == "stats":
                    counts.client_dropped = message["data"]["client_dropped"]
                    counts.stream_lost = message["data"]["stream_lost"]
                continue
            counts.packets += n
            counts.messages += 1
            if not counts.first:
                counts.first = now
            counts.last = now
            if latency:
                at = raw.find(TS_KEY)
                while at >= 0:
                    at += len(TS_KEY)
                    counts.latencies.append(now - capture_time(raw, at))
                    at = raw.find(TS_KEY, at)


async def client_async(pipe: Connection, url: str, n: int, batch: bool, port: int, lat: bool):
    counts = [Counts() for _ in range(n)]
    gate = asyncio.Semaphore(20)

    async def one(c: Counts) -> Any:
        async with gate:
            return await subscriber(url, batch, port, lat, c)

    sockets = await asyncio.gather(*(one(c) for c in counts))
    tasks = [
        asyncio.create_task(read_loop(ws, c, lat)) for ws, c in zip(sockets, counts, strict=True)
    ]
    pipe.send("ready")
    try:
        # Wait for "drain" (the sender is done), then until no packet came for `idle` seconds.
        hard_stop = time.monotonic() + 120
        while not pipe.poll() and time.monotonic() < hard_stop:
            await asyncio.sleep(0.05)
        idle = pipe.recv() if pipe.poll() else 1.0
        hard_stop = time.monotonic() + DRAIN_MAX_S
        cut = True
        while time.monotonic() < hard_stop:
            last = max((c.last for c in counts), default=0.0)
            if time.time() - max(last, 0.0) > idle:
                cut = False
                break
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(
            *(asyncio.wait_for(ws.close(), 3) for ws in sockets), return_exceptions=True
        )
    return counts, cut


def client_main(pipe: Connection, url: str, n: int, batch: bool, port: int, lat: bool) -> None:
    try:
        counts, cut = asyncio.run(client_async(pipe, url, n, batch, port, lat))
        pipe.send(([c.__dict__ for c in counts], cut))
    except BaseException as exc:  # report it to the parent rather than hanging it
        with contextlib.suppress(Exception):
            pipe.send(f"error: {exc!r}")
        raise


# -- the parent: sensor, sender, measurement ----------------------------------------------------


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo and len(pids) < 100:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return pids


def tree_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_sensor(tmp: Path, workers: int, port: int) -> Sensor:
    config = (
        f"web: {{port: 0, workers: {workers}}}\n"
        "stats: {log_interval_s: 5}\n"
        "limits: {connections_per_user: 1000, messages_per_second: 1000}\n"
    )
    users = users_yaml({USER: ("ADMIN", "bench-password-1")})
    bpf = f"udp and dst port {port}"
    return Sensor(tmp, "--interface", "lo", "--bpf", bpf, config=config, users=users)


def token(sensor: Sensor) -> str:
    cmd = [sys.executable, "-m", "leireye.cli", "token", "--user", USER]
    cmd += ["-c", str(sensor.config_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30, cwd=ROOT)
    return out.stdout.strip()


def settle(status: Any, quiet_s: float = 0.3, timeout_s: float = 10.0) -> int:
    """packets_captured once it stopped moving for `quiet_s`."""
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = status.read().packets_captured
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.05)
    return last


def run_step(
    sensor: Sensor, status: Any, url: str, port: int, subs: int, batch: bool,
    rate: int, seconds: float, procs: int, latency: bool,
) -> dict[str, Any]:  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    procs = max(1, min(procs, subs))
    shares = [subs // procs + (i < subs % procs) for i in range(procs)]
    clients: list[tuple[Any, Connection]] = []
    try:
        for share in shares:
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=client_main, args=(theirs, url, share, batch, port, latency))
            p.start()
            clients.append((p, mine))
        for _, pipe in clients:
            if not pipe.poll(60):
                raise RuntimeError("clients did not connect within 60 s")
            if (msg := pipe.recv()) != "ready":
                raise RuntimeError(f"client process: {msg}")
        server_pids = process_tree(sensor.proc.pid)
        client_pids = [p.pid for p, _ in clients]
        captured0 = settle(status)
        cpu_s0, cpu_c0, cpu_t0 = tree_cpu(server_pids), tree_cpu(client_pids), time.process_time()
        sent, elapsed = send_at(port, rate, seconds, b"leireye-bench")
        cpu_tx = time.process_time() - cpu_t0
        for _, pipe in clients:
            pipe.send(1.0)  # drain: stop after 1 s without packets
        results: list[dict[str, Any]] = []
        cut = False
        for _, pipe in clients:
            if not pipe.poll(DRAIN_MAX_S + 30):
                raise RuntimeError("clients did not report in time")
            msg = pipe.recv()
            if isinstance(msg, str):
                raise RuntimeError(f"client process: {msg}")
            results += msg[0]
            cut = cut or msg[1]
        cpu_s, cpu_c = tree_cpu(server_pids) - cpu_s0, tree_cpu(client_pids) - cpu_c0
        captured = settle(status) - captured0
    finally:
        for p, pipe in clients:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
            pipe.close()
    delivered = sorted(r["packets"] for r in results)
    firsts = [r["first"] for r in results if r["first"]]
    window = max((r["last"] for r in results), default=0) - min(firsts, default=0)
    window = max(window, 1e-3)
    lat = sorted(x for r in results for x in r["latencies"])
    return {
        "subs": subs,
        "mode": "batch" if batch else "packet",
        "rate": rate,
        "sent": sent,
        "send_rate": sent / elapsed if elapsed else 0,
        "captured": captured,
        "min": delivered[0] if delivered else 0,
        "median": int(statistics.median(delivered)) if delivered else 0,
        "pkt_s": sum(delivered) / window,
        "msg_s": sum(r["messages"] for r in results) / window,
        "notices": sum(r["dropped_notices"] for r in results),
        "dropped": sum(r["dropped_count"] for r in results),
        "client_dropped": sum(r["client_dropped"] for r in results),
        "cpu_server": cpu_s,
        "cpu_client": cpu_c,
        "cpu_sender": cpu_tx,
        "window": window,
        "cut": cut,
        "lat": lat,
    }


def ratio(value: float, base: float) -> str:
    return f"x{value / base:.2f}" if base else "-"


def print_fanout(rows: list[dict[str, Any]]) -> None:
    base = rows[0]
    head = (
        f"{'S':>4} {'mode':>6} {'sent':>7} {'captured':>8} {'deliv min':>9} {'deliv med':>9}"
        f" {'(ratio)':>7} {'pkts/s total':>12} {'(ratio)':>7} {'msgs/s total':>12} {'(ratio)':>7}"
        f" {'recv s':>6} {'dropped':>7} {'notices':>7} {'cli_drop':>8}"
        f" {'cpu srv':>7} {'cpu cli':>7} {'cpu tx':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['subs']:>4} {r['mode']:>6} {r['sent']:>7} {r['captured']:>8} {r['min']:>9}"
            f" {r['median']:>9} {ratio(r['median'], base['median']):>7}"
            f" {r['pkt_s']:>12.0f} {ratio(r['pkt_s'], base['pkt_s']):>7}"
            f" {r['msg_s']:>12.0f} {ratio(r['msg_s'], base['msg_s']):>7}"
            f" {r['window']:>5.1f}{'*' if r['cut'] else ' '}"
            f" {r['dropped']:>7} {r['notices']:>7} {r['client_dropped']:>8}"
            f" {r['cpu_server']:>6.2f}s {r['cpu_client']:>6.2f}s {r['cpu_sender']:>5.2f}s"
        )


def print_latency(rows: list[dict[str, Any]]) -> None:
    head = f"{'rate/s':>7} {'sent':>7} {'captured':>8} {'received':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'dropped':>7}"  # noqa: E501
    print(head)
    print("-" * len(head))
    for r in rows:
        lat = r["lat"]
        if lat:
            p50, p99, mx = (1000 * lat[int(q * (len(lat) - 1))] for q in (0.5, 0.99, 1.0))
            figs = f"{p50:>7.1f} {p99:>7.1f} {mx:>7.1f}"
        else:
            figs = f"{'-':>7} {'-':>7} {'-':>7}"
        print(
            f"{r['rate']:>7} {r['sent']:>7} {r['captured']:>8} {r['median']:>8}"
            f" {figs} {r['dropped']:>7}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="web.workers (default 2)")
    ap.add_argument("--rate", type=int, default=50_000, help="fan-out send rate, packets/s")
    ap.add_argument("--seconds", type=float, default=3.0, help="send time per step")
    ap.add_argument("--subs", default="1,10,100", help="subscriber counts")
    ap.add_argument("--latency-rates", default="1000,10000,50000")
    ap.add_argument("--client-procs", type=int, default=1, help="client processes (default 1)")
    ap.add_argument("--quick", action="store_true", help="CI smoke: S in 1,10, 1 s, one rate")
    args = ap.parse_args()
    if args.quick:
        args.subs, args.seconds, args.rate, args.latency_rates = "1,10", 1.0, 10_000, "10000"
    subs = [int(s) for s in args.subs.split(",")]
    lat_rates = [int(r) for r in args.latency_rates.split(",") if r]
    if os.geteuid() != 0:
        print("bench_ws: live capture on lo needs root", file=sys.stderr)
        return 2

    port = free_udp_port()
    tmp = Path(tempfile.mkdtemp(prefix="leireye-bench-"))
    sensor = start_sensor(tmp, args.workers, port)
    sensor_name = sensor.name
    print("LeirEye WebSocket benchmark (live capture on lo, 127.0.0.1 only)")
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )
    print(
        f"config: web.workers={args.workers}, bpf 'udp and dst port {port}', filter port={port},"
        f" connections_per_user=1000, ring default, client processes={args.client_procs}"
    )
    print(f"sensor: --name {sensor_name}; load average at start: {load_average()}")
    print(f"fan-out: {args.rate} pps for {args.seconds} s per step, S in {subs}, packet & batch")
    print(f"latency: 1 subscriber, per-packet, {args.seconds} s at {lat_rates} pps")
    print()
    try:
        sensor.web_port(60)
        status = sensor.status()
        sensor.wait_capturing(status, 30)
        url = f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token={token(sensor)}"
        fanout = []
        for s in subs:
            for batch in (False, True):
                fanout.append(
                    run_step(
                        sensor,
                        status,
                        url,
                        port,
                        s,
                        batch,
                        args.rate,
                        args.seconds,
                        args.client_procs,
                        latency=False,
                    )
                )
                sys.stderr.write(f"  done: S={s} {'batch' if batch else 'packet'}\n")
        latency = []
        for rate in lat_rates:
            latency.append(
                run_step(sensor, status, url, port, 1, False, rate, args.seconds, 1, True)
            )
            sys.stderr.write(f"  done: latency at {rate} pps\n")
        print("Fan-out (deliv = packets received per subscriber; ratios vs the first row)")
        print_fanout(fanout)
        print(
            "recv s: first to last packet received over all clients (* = cut at the"
            f" {DRAIN_MAX_S:.0f} s drain bound); dropped: sum of `dropped` notice counts;"
            " cli_drop: sum of the last `client_dropped` seen in `stats`."
        )
        print()
        print("Capture-to-client latency (client time.time() - packet timestamp, ms resolution)")
        print_latency(latency)
        print()
        print(
            "cpu srv/cli/tx: CPU seconds used during the step by the sensor (capture, stats,"
            f" workers), the client process(es), the sender; {os.cpu_count()} cores in all."
        )
        print(f"load average at end: {load_average()} (other work on the machine skews figures)")
        return 0
    finally:
        sensor.kill()
        left = sensor.segments()  # should be none: the supervisor unlinks its segments
        for seg in left:
            with contextlib.suppress(OSError):
                os.unlink(f"/dev/shm/{seg}")
        if left:
            print(f"removed leftover segments: {left}", file=sys.stderr)
        with contextlib.suppress(OSError):
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()


if __name__ == "__main__":
    sys.exit(main())
