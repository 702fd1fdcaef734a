"""End to end under load: tcpreplay -> veth -> capture -> ring -> 2 web workers -> 10 subscribers,
beside two references on the same traffic and rates.

    sudo .venv/bin/python benchmarks/bench_e2e.py [--json FILE]   # full run, several minutes
    sudo .venv/bin/python benchmarks/bench_e2e.py --quick          # CI smoke, ~30 s

Builds a namespace and veth pair (`tests.netns.veth_pair`, IPv6 off: the link carries only
what tcpreplay sends), replays the realistic mix (`e2e_common.mix_pcap`) from the namespace end
at increasing rates and measures, per rate and per tool:

- `leireye`: a real `leireye run -i HOST_IF` (2 workers), 10 `websockets` subscribers in batch
  mode with no filter, in a separate process (`e2e_clients`). Sent (tcpreplay), captured and
  kernel drops (status block), ring laps (`leireye_web_ring_lost_total` of every worker plus
  `leireye_stats_ring_lost_total` and `leireye_flows_ring_lost_total`, from /metrics), what the
  packet store wrote and lost (its own loss: not part of "lossless"), packets each subscriber
  received (min/max), `slow_consumer` skips, p50/p99 of client receive time - packet
  `timestamp` (ms resolution).
- `leireye-columns`: the same with the subscribers asking for binary batches
  (`options.format: "columns"`).
- `leireye+rest`, `leireye-columns+rest`: the same while a thread sends `GET
  /api/capture/packets` with a filter that matches nothing (a walk of the whole ring), one
  query after the other, for the length of the send.
- `tcpdump`: `tcpdump -w /dev/null` with the same snaplen and a 64 MiB buffer, the libpcap
  ceiling: its own "captured" / "dropped by kernel" lines.
- `tshark`: `tshark -T ek -l` piped to `reference_broadcaster.py`, broadcasting every packet's
  JSON to 10 clients, "what many tools do"; latency from the EK `timestamp`.

A step is lossless when every packet sent reached every subscriber (tcpdump: was captured)
within `--drain` seconds of the end of the send, with no kernel drop, ring lap or skip. Each
tool steps up `--rates` until its first loss, then bisects between the last lossless and the
first lossy rate `--bisect` times. A step where tcpreplay fell short of the asked rate by more
than 10 % ends the search (the sender, not the tool, is the limit: the result reads `>=`).
CPU columns: percent of one core per 100 k packets/s (CPU seconds during the step / packets
captured * 1e7), from /proc/PID/stat of each process.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_ws import process_tree, tree_cpu
from benchmarks.e2e_clients import ClientGroup, ClientPlan
from benchmarks.e2e_common import (
    Replay,
    fmt,
    jumbo,
    machine_line,
    mix_pcap,
    need_root,
    percentile,
    replay,
    started,
    stop,
    terminate_on_sigterm,
    write_json,
)
from benchmarks.e2e_leireye import LeirEyeRunner, cpu_share, delivery
from tests.netns import VethPair, veth_pair

SNAPLEN = 1600
TCPDUMP_BLOCK_S = 1.5  # tcpdump's read timeout is 1 s; packets of an undelivered block go uncounted
SENDER_SHORT = 0.9  # tcpreplay reached less than this share of the asked rate: sender-limited


@dataclass
class Trial:
    tool: str
    rate: int
    sent: int
    send_rate: float
    captured: int
    kernel_drops: int
    ring_lost: int = 0
    skipped: int = 0
    delivered_min: int = 0
    delivered_max: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    cpu_pct_per_100k: dict[str, float] = field(default_factory=dict)
    subscribers: int = 0
    store_written: int = 0  # the packet store's frames (not part of `lossless`: its own loss)
    store_lost: int = 0

    @property
    def lossless(self) -> bool:
        delivered = self.subscribers == 0 or self.delivered_min == self.sent
        clean = self.kernel_drops == self.ring_lost == self.skipped == 0
        return delivered and clean and self.captured == self.sent

    @property
    def sender_limited(self) -> bool:
        return self.send_rate < SENDER_SHORT * self.rate


def read_until(stream: Any, pattern: str, timeout_s: float) -> re.Match[str]:
    """Read lines of a child's pipe until one matches `pattern` (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.2)
        if not ready:
            continue
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise RuntimeError(f"no line matching {pattern!r} within {timeout_s} s: {''.join(seen)}")


def settle_cpu(pids: list[int], quiet_s: float = 0.5, timeout_s: float = 30) -> None:
    """Wait (bounded) until `pids` stop using CPU: the tool has worked through its backlog."""
    last, since = tree_cpu(pids), time.monotonic()
    deadline = since + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = tree_cpu(pids)
        if now - last > 0.02:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def counted(text: str, what: str) -> int:
    match = re.search(rf"(\d+) packets? {what}", text)
    return int(match[1]) if match else 0


def tcpdump_trial(pair: VethPair, pcap: Path, rate: int, count: int) -> Trial:
    cmd = ["tcpdump", "-i", pair.host_if, "-n", "-s", str(SNAPLEN), "-B", "65536"]
    cmd += ["-w", "/dev/null"]
    with started(cmd, stderr=subprocess.PIPE, text=True) as proc:
        read_until(proc.stderr, r"listening on", 20)
        cpu0 = tree_cpu([proc.pid])
        sent = replay(pair, pcap, rate, count)
        time.sleep(TCPDUMP_BLOCK_S)  # libpcap hands over a partly filled block after its timeout
        settle_cpu([proc.pid])
        cpu = tree_cpu([proc.pid]) - cpu0
        stop(proc)
        text = proc.stderr.read()
    captured = counted(text, "captured")
    return Trial(
        "tcpdump", rate, sent.sent, sent.rate, captured, counted(text, "dropped by kernel"),
        cpu_pct_per_100k={"tcpdump": cpu_share(cpu, captured)},
    )  # fmt: skip


def tshark_trial(
    pair: VethPair, pcap: Path, rate: int, count: int, subs: int, drain_s: float
) -> Trial:
    cmd = ["tshark", "-i", pair.host_if, "-n", "-l", "-T", "ek", "-s", str(SNAPLEN), "-B", "64"]
    broadcaster = [sys.executable, str(ROOT / "benchmarks" / "reference_broadcaster.py")]
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    with started(cmd, **pipes) as tshark, started(broadcaster, stdin=tshark.stdout, **pipes) as bc:
        tshark.stdout.close()  # the broadcaster holds the read end now
        port = int(read_until(bc.stdout, r"listening on (\d+)", 20)[1])
        read_until(tshark.stderr, r"Capturing on", 30)
        plan = ClientPlan(f"ws://127.0.0.1:{port}/", [None] * subs, protocol="lines")
        with ClientGroup(plan) as clients:
            clients.ready()
            tools = [*process_tree(tshark.pid), bc.pid]
            cpu0 = tree_cpu(tools), tree_cpu(clients.pids)
            sent = replay(pair, pcap, rate, count)
            results = clients.drain(1.0, drain_s)
            cpu = tree_cpu(tools) - cpu0[0], tree_cpu(clients.pids) - cpu0[1]
        stop(tshark)
        text = tshark.stderr.read()
    return finish(
        Trial("tshark", rate, sent.sent, sent.rate, counted(text, "captured"),
              counted(text, "dropped")),
        results, {"tshark+broadcaster": cpu[0], "clients": cpu[1]},
    )  # fmt: skip


def finish(trial: Trial, results: list[dict[str, Any]], cpu: dict[str, float]) -> Trial:
    """Fill in what the subscribers saw and the CPU shares."""
    got = [r["packets"] for r in results]
    lat = sorted(x for r in results for x in r["latencies"])
    trial.subscribers = len(got)
    trial.delivered_min, trial.delivered_max = min(got, default=0), max(got, default=0)
    trial.skipped = sum(r["dropped_count"] for r in results)
    trial.p50_ms, trial.p99_ms = 1000 * percentile(lat, 0.5), 1000 * percentile(lat, 0.99)
    trial.cpu_pct_per_100k = {k: cpu_share(v, trial.captured) for k, v in cpu.items()}
    return trial


def leireye_trial(
    runner: LeirEyeRunner,
    rate: int,
    count: int,
    subs: int,
    drain_s: float,
    fmt: str = "json",
    rest: bool = False,
) -> Trial:
    plan = ClientPlan(runner.ws_url, [None] * subs, batch=True, format=fmt)
    with ClientGroup(plan) as clients:
        clients.ready()
        before = runner.snapshot(clients.pids)
        with rest_queries(runner) if rest else contextlib.nullcontext() as queries:
            sent: Replay = replay(runner.pair, runner.pcap, rate, count)
        results = clients.drain(1.0, drain_s)
        after = runner.snapshot(clients.pids)
    d = delivery(before, after)
    tool = "leireye" if fmt == "json" else f"leireye-{fmt}"
    if rest:
        tool += "+rest"
        sys.stderr.write(f"  REST: {queries} whole-ring queries during the send\n")
    trial = Trial(tool, rate, sent.sent, sent.rate, d.captured, d.kernel_drops, d.ring_lost)
    trial.store_written, trial.store_lost = d.store_written, d.store_lost
    return finish(trial, results, d.cpu)


class _Queries:
    def __init__(self) -> None:
        self.done = 0
        self.stop = threading.Event()

    def __str__(self) -> str:
        return str(self.done)


@contextlib.contextmanager
def rest_queries(runner: LeirEyeRunner) -> Iterator[_Queries]:
    """`GET /api/capture/packets` with a filter that matches nothing (a walk of the whole
    ring), one after the other, for the length of the block."""
    queries = _Queries()
    url = f"{runner.base_url}/api/capture/packets?protocol=ICMP&limit=1000"
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {runner.bearer}"})

    def loop() -> None:
        while not queries.stop.is_set():
            with urllib.request.urlopen(request, timeout=30) as reply:
                reply.read()
            queries.done += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield queries
    finally:
        queries.stop.set()
        thread.join(35)


def search(run: Callable[[int], Trial], rates: list[int], bisect: int) -> list[Trial]:
    """Step up `rates` until the first loss, then bisect; stop early when the sender falls short."""
    trials: list[Trial] = []
    good, bad = 0, 0
    for rate in rates:
        trials.append(report(run(rate)))
        if trials[-1].sender_limited:
            return trials
        if not trials[-1].lossless:
            bad = rate
            break
        good = rate
    for _ in range(bisect if bad else 0):
        mid = int(round((good + bad) / 2, -3 if bad - good > 4000 else -2))
        if mid in (good, bad):
            break
        trials.append(report(run(mid)))
        good, bad = (mid, bad) if trials[-1].lossless else (good, mid)
    return trials


def report(t: Trial) -> Trial:
    verdict = "lossless" if t.lossless else "LOSS"
    sys.stderr.write(
        f"  {t.tool} {t.rate}/s: sent {t.sent} captured {t.captured} drops {t.kernel_drops}"
        f" laps {t.ring_lost} skipped {t.skipped} delivered min {t.delivered_min}"
        + (f" store written {t.store_written} lost {t.store_lost}" if t.store_written else "")
        + f" -> {verdict}\n"
    )
    return t


def zero_loss_rate(trials: list[Trial]) -> tuple[int, bool]:
    """(highest lossless rate below the lowest lossy one, whether the sender was the limit)."""
    lossy = min((t.rate for t in trials if not t.lossless), default=None)
    ok = [t for t in trials if t.lossless and (lossy is None or t.rate < lossy)]
    best = max(ok, key=lambda t: t.rate, default=None)
    limited = any(t.sender_limited for t in trials) and lossy is None
    if best is None:
        return 0, limited
    return (int(best.send_rate) if best.sender_limited else best.rate), limited


def print_trials(trials: list[Trial]) -> None:
    head = (
        f"{'tool':>8} {'rate/s':>7} {'sent':>8} {'sent/s':>7} {'captured':>8} {'k.drops':>7}"
        f" {'laps':>5} {'skip':>6} {'deliv min':>9} {'deliv max':>9} {'p50 ms':>6} {'p99 ms':>6}"
        f" {'ok':>4}  CPU % of a core per 100k pkt/s"
    )
    print(head)
    print("-" * len(head))
    for t in trials:
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in t.cpu_pct_per_100k.items())
        subs = t.subscribers > 0
        print(
            f"{t.tool:>8} {t.rate:>7} {t.sent:>8} {t.send_rate:>7.0f} {t.captured:>8}"
            f" {t.kernel_drops:>7} {t.ring_lost:>5} {t.skipped:>6}"
            f" {t.delivered_min if subs else '-':>9} {t.delivered_max if subs else '-':>9}"
            f" {fmt(t.p50_ms):>6} {fmt(t.p99_ms):>6} {'yes' if t.lossless else 'NO':>4}  {cpu}"
        )


def print_summary(by_tool: dict[str, list[Trial]]) -> dict[str, Any]:
    best = {tool: zero_loss_rate(trials) for tool, trials in by_tool.items()}
    mine = best.get("leireye", (0, False))[0]
    print(f"{'tool':>8} {'zero-loss rate/s':>17}  LeirEye / tool")
    summary: dict[str, Any] = {}
    for tool, (rate, limited) in best.items():
        shown = f"{'>=' if limited else ''}{rate}"
        ratio = f"{'<=' if limited else ''}{mine / rate:.2f}" if rate else "-"
        print(f"{tool:>8} {shown:>17}  {ratio}")
        summary[tool] = {"zero_loss_rate": rate, "sender_limited": limited}
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="5000,10000,20000,50000,100000,150000,200000,300000")
    parser.add_argument("--seconds", type=float, default=3.0, help="send time per step")
    parser.add_argument("--bisect", type=int, default=3, help="bisection steps after a loss")
    parser.add_argument("--subs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--drain", type=float, default=3.0, help="delivery bound after the send")
    parser.add_argument("--tools", default="leireye,tcpdump,tshark")
    parser.add_argument("--outbox", type=int, default=4096, help="web.outbox_messages (packets)")
    parser.add_argument(
        "--config", default="", help="more sensor YAML, e.g. 'store: {enabled: false}'"
    )
    parser.add_argument("--tshark-rates", default="500,1000,2000,5000,10000")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 2 rates, 1 s, no bisect")
    args = parser.parse_args()
    if args.quick:
        args.rates, args.tshark_rates, args.seconds, args.bisect = "2000,10000", "1000", 1.0, 0
    if not need_root("bench_e2e"):
        return 2
    terminate_on_sigterm()
    rates = [int(r) for r in args.rates.split(",")]
    tools = args.tools.split(",")
    pcap = mix_pcap()
    print(f"bench_e2e: tcpreplay of {pcap.name} onto a veth pair; {machine_line()}")
    by_tool: dict[str, list[Trial]] = {}
    with veth_pair(ipv6=False) as pair:
        jumbo(pair)
        for tool in ("leireye", "leireye-columns", "leireye+rest", "leireye-columns+rest"):
            if tool not in tools:
                continue
            fmt = "columns" if "columns" in tool else "json"
            runner = LeirEyeRunner(
                pair, pcap, args.workers, Path(tempfile.mkdtemp()), args.outbox, args.config
            )
            with runner:
                by_tool[tool] = search(
                    lambda r, runner=runner, fmt=fmt, rest="+rest" in tool: leireye_trial(
                        runner, r, int(r * args.seconds), args.subs, args.drain, fmt, rest
                    ), rates, args.bisect)  # fmt: skip
        if "tcpdump" in tools:
            by_tool["tcpdump"] = search(
                lambda r: tcpdump_trial(pair, pcap, r, int(r * args.seconds)), rates, args.bisect
            )
        if "tshark" in tools:
            ts_rates = [int(r) for r in args.tshark_rates.split(",")]
            by_tool["tshark"] = search(
                lambda r: tshark_trial(pair, pcap, r, int(r * args.seconds), args.subs,
                                       args.drain), ts_rates, args.bisect)  # fmt: skip
    print()
    print_trials([t for trials in by_tool.values() for t in trials])
    print()
    summary = print_summary(by_tool)
    print(f"load average at the end: {machine_line()}")
    write_json(
        args.json,
        {
            "args": vars(args),
            "summary": summary,
            "trials": [asdict(t) | {"lossless": t.lossless} for v in by_tool.values() for t in v],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
