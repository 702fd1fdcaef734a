#!/usr/bin/env python3
"""Soak a real `leireye run`: steady traffic on lo, clients connecting and leaving, and the memory
of every process sampled until the end.

    sudo .venv/bin/python scripts/soak.py --minutes 30
    sudo .venv/bin/python scripts/soak.py --minutes 1          # the smoke

A sensor (2 web workers, capture on lo with a BPF for one UDP port) gets `--rate` packets/s;
`--clients` client slots each connect, subscribe (one packet per message or batches, a port or a
protocol filter), read for 2-20 s, ping, and leave, over and over; one more polls the REST API.
Every `--sample-s` seconds the private resident memory (`RssAnon`) of the supervisor, capture,
stats and each worker is read from /proc. After the warm-up (`--warmup-s`, default a fifth of the
run, at least 20 s) each process's must stay within `--tolerance` (10 %) of its first sample after
the warm-up; no process may be restarted, and the capture must not drop. Prints the table; exits
1 on any failure.

Why RssAnon and not VmRSS: VmRSS also counts the pages of the shared ring each process has
touched, which grows by the record size per packet until the ring wraps (262144 records: 2 min
at 2000 packets/s), then stays. That is the ring filling, not a leak; it is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from tests.http import Http  # noqa: E402
from tests.reliability.live import cli_token, current_pids, rss_kb, start, wait_roles  # noqa: E402
from tests.sensor import Sensor, free_udp_port, send_udp  # noqa: E402


@dataclass
class Load:
    connections: int = 0
    packets: int = 0
    dropped_notices: int = 0
    errors: list[str] = field(default_factory=list)
    rest_calls: int = 0


def traffic(port: int, rate: int, until: float) -> None:
    """`rate` packets/s in one-second slices until `until` (monotonic)."""
    while time.monotonic() < until:
        began = time.monotonic()
        send_udp(port, rate, b"soak" * 16, rate=rate * 1.25)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))  # pacing the sender


async def client_slot(url: str, port: int, until: float, load: Load, rng: random.Random) -> None:
    while time.monotonic() < until:
        stay = min(rng.uniform(2, 20), max(0.0, until - time.monotonic()))
        filters = {"port": port} if rng.random() < 0.7 else {"protocol": "UDP"}
        options = {"batch": rng.random() < 0.3}
        try:
            async with connect(url, open_timeout=10, close_timeout=5) as ws:
                load.connections += 1
                await ws.send(json.dumps({"type": "subscribe", "channel": "packets",
                                          "filters": filters, "options": options}))  # fmt: skip
                leave = time.monotonic() + stay
                next_ping = time.monotonic() + 5
                while time.monotonic() < leave:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), max(0.01, leave - time.monotonic()))
                    except TimeoutError:
                        break
                    message = json.loads(raw)
                    kind = message["type"]
                    if kind == "packet":
                        load.packets += 1
                    elif kind == "packets":
                        load.packets += len(message["data"])
                    elif kind == "dropped":
                        load.dropped_notices += 1
                    elif kind == "error":
                        load.errors.append(str(message))
                    if time.monotonic() > next_ping:
                        await ws.send(json.dumps({"type": "ping"}))
                        next_ping += 5
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            load.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(1)


async def rest_poller(http: Http, port: int, until: float, load: Load) -> None:
    paths = ["/api/stats/summary", f"/api/capture/packets?port={port}&limit=100",
             "/api/stats/top", "/api/capture/status", "/health"]  # fmt: skip
    while time.monotonic() < until:
        for path in paths:
            reply = await asyncio.to_thread(http.get, path)
            load.rest_calls += 1
            if reply.status != 200:
                load.errors.append(f"GET {path}: {reply.status}")
        await asyncio.sleep(2)


def sample(pids: dict[str, int], kind: str = "RssAnon") -> dict[str, int]:
    return {role: rss_kb(pid, kind) for role, pid in pids.items()}


def table(rows: dict[str, list[int]], first_after: int, times: list[float], tol: float) -> bool:
    ok = True
    head = f"{'process':<11}{'start':>9}{'warmed':>9}{'min':>9}{'max':>9}{'last':>9}{'growth':>9}"
    print(head + "   (RssAnon in MiB; growth = max after warm-up / first after warm-up)")
    for role, values in rows.items():
        after = values[first_after:]
        base = after[0]
        growth = max(after) / base - 1
        flat = growth <= tol
        ok &= flat
        print(
            f"{role:<11}"
            + "".join(
                f"{v / 1024:>9.1f}" for v in (values[0], base, min(after), max(after), after[-1])
            )
            + f"{growth * 100:>8.1f}%"
            + ("" if flat else "  <-- grew")
        )
    span = times[-1] - times[first_after] if len(times) > first_after else 0
    print(f"{len(times)} samples; {len(times) - first_after} after the warm-up over {span:.0f} s")
    return ok


async def soak(args: argparse.Namespace, sensor: Sensor, port: int) -> int:
    duration = args.minutes * 60
    warmup = args.warmup_s if args.warmup_s is not None else max(20.0, duration / 5)
    pids = wait_roles(sensor, 2)
    pids = {"supervisor": sensor.proc.pid, **{k: pids[k] for k in sorted(pids)}}
    users = [f"soak{i}" for i in range(args.clients)]
    urls = [f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token={cli_token(sensor, u)}"
            for u in users]  # fmt: skip
    http = Http(sensor.web_port(), cli_token(sensor, "admin"))
    status = sensor.status()
    drops_before = status.read().kernel_drops
    began = time.monotonic()
    until = began + duration
    load = Load()
    sender = threading.Thread(target=traffic, args=(port, args.rate, until), daemon=True)
    sender.start()
    rng = random.Random(args.seed)
    tasks = [asyncio.create_task(client_slot(u, port, until, load, random.Random(rng.random())))
             for u in urls]  # fmt: skip
    tasks.append(asyncio.create_task(rest_poller(http, port, until, load)))
    rows: dict[str, list[int]] = {role: [] for role in pids}
    times: list[float] = []
    first_after = -1
    while time.monotonic() < until:
        now = time.monotonic() - began
        for role, kb in sample(pids).items():
            rows[role].append(kb)
        times.append(now)
        if first_after < 0 and now >= warmup:
            first_after = len(times) - 1
        if args.verbose:
            print(f"{now:7.0f}s " + " ".join(f"{r}={v[-1] // 1024}M" for r, v in rows.items()),
                  flush=True)  # fmt: skip
        await asyncio.sleep(min(args.sample_s, max(0.0, until - time.monotonic())))
    await asyncio.gather(*tasks)
    sender.join(10)
    for role, kb in sample(pids).items():
        rows[role].append(kb)
    times.append(time.monotonic() - began)
    first_after = first_after if first_after >= 0 else len(times) - 1
    shmem = sample(pids, "RssShmem")
    total = sample(pids, "VmRSS")
    drops = status.read().kernel_drops - drops_before
    status.close()
    print(f"\nsoak: {args.minutes:g} min at {args.rate} packets/s, {args.clients} client slots; "
          f"warm-up {warmup:.0f} s")  # fmt: skip
    flat = table(rows, first_after, times, args.tolerance)
    print(
        "at the end, VmRSS (RssShmem: the ring and stats segments touched) in MiB: "
        + ", ".join(f"{r} {total[r] / 1024:.0f} ({shmem[r] / 1024:.0f})" for r in pids)
    )
    restarted = {r: p for r, p in current_pids(sensor).items() if pids.get(r) not in (None, p)}
    print(f"connections {load.connections}, packets received {load.packets}, dropped notices "
          f"{load.dropped_notices}, REST calls {load.rest_calls}, kernel drops {drops}, "
          f"restarts {restarted or 'none'}, client errors {len(load.errors)}")  # fmt: skip
    for error in load.errors[:5]:
        print(f"  {error}")
    failed = not flat or restarted or drops or "Traceback" in sensor.log or load.errors
    print("FAIL" if failed else "OK: RSS flat, no restarts, no drops, no errors")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=int, default=2000, help="packets/s")
    parser.add_argument("--clients", type=int, default=8, help="client slots")
    parser.add_argument("--sample-s", type=float, default=5)
    parser.add_argument("--warmup-s", type=float, default=None)
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    port = free_udp_port()
    users = {"admin": "ADMIN", **{f"soak{i}": "VIEWER" for i in range(args.clients)}}
    tmp = Path(tempfile.mkdtemp(prefix="leireye-soak-"))
    sensor = start(tmp, f"udp and dst port {port}", users, "web: {port: 0, workers: 2}\n")
    try:
        return asyncio.run(soak(args, sensor, port))
    finally:
        sensor.kill()


if __name__ == "__main__":
    sys.exit(main())
