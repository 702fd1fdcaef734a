"""Fan-out: 1 / 10 / 100 / 500 subscribers with different filters at one fixed rate.

    sudo .venv/bin/python benchmarks/bench_fanout_ws.py [--rate 20000] [--json FILE]
    sudo .venv/bin/python benchmarks/bench_fanout_ws.py --quick      # CI smoke, ~20 s

A real `leireye run` (2 web workers) captures on the host end of a veth pair the benchmark
creates; tcpreplay sends the realistic mix from the namespace end at `--rate` for `--seconds`.
Subscriber i (batch mode) takes filter i mod 16 of `FILTERS` — protocols, applications, ports,
CIDRs of either end, combinations, one with none — so at S >= 16 every worker evaluates up to
16 distinct filters per ring batch. Clients run in `--client-procs` processes of their own.

Per step: connections per worker; messages/s per worker (`leireye_web_messages_sent_total`
from /metrics); packets/s delivered over all subscribers (client side) and per worker
(`leireye_web_packets_delivered_total`); skips (`dropped` notices) and ring laps; memory per
connection: the workers' RssAnon (their own pages; VmRSS would also count every page of the
shared ring a worker has touched) after connecting minus before, / S, and the same after the
traffic, when the outboxes have been used; CPU, as percent of one core per 100 k captured
packets/s, of the capture process, each worker and the clients; p50/p99 capture-to-client
latency measured on the first subscriber of each client process. Rates are over the time from
the first packet any subscriber received to the last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.e2e_clients import ClientGroup, ClientPlan
from benchmarks.e2e_common import (
    fmt,
    jumbo,
    machine_line,
    mix_pcap,
    need_root,
    percentile,
    replay,
    rss_kib,
    terminate_on_sigterm,
    write_json,
)
from benchmarks.e2e_leireye import LeirEyeRunner, cpu_share, delivery
from tests.netns import veth_pair

FILTERS: list[dict[str, Any] | None] = [
    {"protocol": "TCP"},
    {"protocol": "UDP"},
    {"protocol": "DNS"},
    {"protocol": "TLS"},
    {"port": 443},
    {"port": 53},
    {"dst_port": 80},
    {"dst_ip": "93.184.216.0/24"},
    {"src_ip": "10.0.1.0/28"},
    {"ip": "fd00::/8"},
    {"ip": "2001:db8::/32", "protocol": "TCP"},
    {"protocol": "TCP", "port": 443, "min_length": 200},
    {"protocol": "ARP"},
    {"protocol": "ICMPv6"},
    {"src_ip": "10.0.1.16/28", "dst_port": 53},
    None,
]


@dataclass
class Step:
    subs: int
    distinct_filters: int
    rate: int
    sent: int
    captured: int
    window_s: float
    connections: dict[str, float]
    messages_per_s: dict[str, float]
    worker_packets_per_s: dict[str, float]
    delivered_per_s: float
    skipped: int
    ring_lost: int
    kib_per_conn_idle: float
    kib_per_conn_after: float
    cpu_pct_per_100k: dict[str, float]
    p50_ms: float
    p99_ms: float


def workers_rss(runner: LeirEyeRunner) -> int:
    return sum(rss_kib(pid) for pid in runner.workers().values())


def warm_up(runner: LeirEyeRunner, rate: int) -> None:
    """One subscriber and a second of traffic, not reported: the first connection and the
    first packets of a worker allocate what every later one reuses (imports, encoder caches)."""
    with ClientGroup(ClientPlan(runner.ws_url, [None])) as clients:
        clients.ready()
        replay(runner.pair, runner.pcap, rate, rate)
        clients.drain(0.5, 5.0)


def wait_connections(runner: LeirEyeRunner, subs: int, timeout_s: float = 5.0) -> dict[str, float]:
    """Connections per worker once /metrics counts all `subs` (the gauge may lag a little)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = runner.connections()
        if sum(seen.values()) >= subs or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def run_step(runner: LeirEyeRunner, subs: int, rate: int, args: argparse.Namespace) -> Step:
    filters = [FILTERS[i % len(FILTERS)] for i in range(subs)]
    rss0 = workers_rss(runner)
    with ClientGroup(ClientPlan(runner.ws_url, filters), args.client_procs) as clients:
        clients.ready(300)
        connections = wait_connections(runner, subs)
        rss1 = workers_rss(runner)
        before = runner.snapshot(clients.pids)
        sent = replay(runner.pair, runner.pcap, rate, int(rate * args.seconds))
        results = clients.drain(1.0, args.drain)
        after = runner.snapshot(clients.pids)
        rss2 = workers_rss(runner)
    d = delivery(before, after)
    firsts = [r["first"] for r in results if r["first"]]
    window = max(max((r["last"] for r in results), default=0.0) - min(firsts, default=0.0), 1e-3)
    lat = sorted(x for r in results for x in r["latencies"])
    return Step(
        subs=subs,
        distinct_filters=len({repr(f) for f in filters}),
        rate=rate,
        sent=sent.sent,
        captured=d.captured,
        window_s=window,
        connections=connections,
        messages_per_s={w: v / window for w, v in d.messages.items()},
        worker_packets_per_s={w: v / window for w, v in d.delivered.items()},
        delivered_per_s=sum(r["packets"] for r in results) / window,
        skipped=sum(r["dropped_count"] for r in results),
        ring_lost=d.ring_lost,
        kib_per_conn_idle=(rss1 - rss0) / subs,
        kib_per_conn_after=(rss2 - rss0) / subs,
        cpu_pct_per_100k={k: cpu_share(v, d.captured) for k, v in d.cpu.items()},
        p50_ms=1000 * percentile(lat, 0.5),
        p99_ms=1000 * percentile(lat, 0.99),
    )


def by_worker(values: dict[str, float], digits: int = 0) -> str:
    return "/".join(f"{values[w]:.{digits}f}" for w in sorted(values))


def print_steps(steps: list[Step]) -> None:
    head = (
        f"{'S':>4} {'filt':>4} {'sent':>7} {'captured':>8} {'conns/worker':>12}"
        f" {'msgs/s per worker':>17} {'pkts/s per worker':>17} {'delivered/s':>11}"
        f" {'skipped':>8} {'laps':>5} {'KiB/conn':>8} {'(after)':>8} {'p50 ms':>6} {'p99 ms':>6}"
        "  CPU % of a core per 100k pkt/s"
    )
    print(head)
    print("-" * len(head))
    for s in steps:
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in s.cpu_pct_per_100k.items())
        print(
            f"{s.subs:>4} {s.distinct_filters:>4} {s.sent:>7} {s.captured:>8}"
            f" {by_worker(s.connections):>12} {by_worker(s.messages_per_s):>17}"
            f" {by_worker(s.worker_packets_per_s):>17} {s.delivered_per_s:>11.0f}"
            f" {s.skipped:>8} {s.ring_lost:>5} {s.kib_per_conn_idle:>8.1f}"
            f" {s.kib_per_conn_after:>8.1f} {fmt(s.p50_ms):>6} {fmt(s.p99_ms):>6}  {cpu}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subs", default="1,10,100,500")
    parser.add_argument("--rate", type=int, default=20_000, help="packets/s sent")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--drain", type=float, default=10.0, help="delivery bound after the send")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="CI smoke: S in 1,10, 1 s")
    args = parser.parse_args()
    if args.quick:
        args.subs, args.rate, args.seconds, args.drain = "1,10", 5000, 1.0, 3.0
    if not need_root("bench_fanout_ws"):
        return 2
    terminate_on_sigterm()
    pcap = mix_pcap()
    print(f"bench_fanout_ws: {args.rate} packets/s of {pcap.name}; {machine_line()}")
    steps: list[Step] = []
    with veth_pair(ipv6=False) as pair:
        jumbo(pair)
        with LeirEyeRunner(pair, pcap, args.workers, Path(tempfile.mkdtemp())) as runner:
            warm_up(runner, args.rate)
            for subs in (int(s) for s in args.subs.split(",")):
                steps.append(run_step(runner, subs, args.rate, args))
                sys.stderr.write(f"  done: S={subs}\n")
    print()
    print_steps(steps)
    print(f"load average at the end: {machine_line()}")
    write_json(args.json, {"args": vars(args), "steps": [asdict(s) for s in steps]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
