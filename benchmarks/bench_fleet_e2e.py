"""A real sensor's publisher into a local JetStream, and a central's added latency, end to end.

    sudo .venv/bin/python benchmarks/bench_fleet_e2e.py [--seconds 5] [--rate 10000] [--json F]
    sudo .venv/bin/python benchmarks/bench_fleet_e2e.py --quick          # smoke, ~1 minute

Both parts run against a nats-server with JetStream started here (free ports, its store in a
temporary directory), on the realistic mix of `tests/traffic` (`e2e_common.mix_pcap`).

1. Throughput. A real `leireye run` replays the mix pcap at full speed, looped
   (`capture.replay: {speed: max, loop: true}`, store and flows off), first alone and then
   with `fleet.enabled`. Over `--seconds` after a warm-up, from the capture status block and the
   publisher's status page: records captured per second (alone, and with the publisher
   beside it), records published per second (acknowledged by JetStream), records the publisher
   lost (the ring overwrote them first) and how far behind it ended; the cores each process
   used (its CPU seconds over the window: the sensor's children and the nats-server; on a
   loaded machine a process may get less than the core it could use). Figures: published /
   captured in the same run (1.00: the publisher keeps up with the capture's own ceiling), and
   captured with the publisher / captured alone (what the publisher costs the capture here),
   and records per CPU second of the publisher / of the capture: the ratio that holds when
   the machine is loaded and neither gets a whole core.
2. Latency. A real `leireye run` captures live on a veth pair (tcpreplay of the mix at
   `--rate` from a namespace, `e2e_common.replay`), publishes to JetStream, and a real
   `leireye central` follows it. One WebSocket client (batch mode, no filter) is connected to
   the sensor and one to the central, in processes of their own, during the same replay:
   p50/p99 of receive time minus the packet's capture time (the `timestamp` it carries,
   millisecond resolution: each figure reads up to 1 ms high, alike for both). The sensor's
   client is the reference; the central's minus it is what the fleet adds.

The machine is shared: quote the ratios, which compare runs made side by side, rather than
the absolute rates (docs/performance.md, "Fleet").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.e2e_clients import ClientGroup, ClientPlan
from benchmarks.e2e_common import (
    USER,
    child_pids,
    cpu_seconds,
    fmt,
    jumbo,
    machine_line,
    mix_pcap,
    need_root,
    percentile,
    replay,
    terminate_on_sigterm,
    token,
    write_json,
)
from leireye.errors import RingError
from leireye.fleet.model import SENSOR_TABLE_FILE, read_sensor_table
from leireye.fleet.natsserver import NatsServer
from leireye.fleet.status import StatusPage
from tests.accounts import users_yaml
from tests.netns import veth_pair
from tests.sensor import Sensor
from tests.waiting import wait_for

SENSOR = "bench"
# The latency run's sensor has streams of its own: a new central reads a stream from its first
# message, and the throughput run's records (a replayed pcap's old timestamps) are not latency.
LATENCY_SENSOR = "bench-latency"
PASSWORD = "bench-password-1"
LIMITS = "limits: {connections_per_user: 100, messages_per_second: 1000}\n"


def fleet_yaml(url: str, sensor: str = SENSOR) -> str:
    return (
        f"fleet: {{enabled: true, sensor: {sensor}, nats: {{servers: ['{url}']}},"
        " streams: {max_gb: 0.5, max_age_h: 1.0}}\n"
    )


# -- 1. throughput ---------------------------------------------------------------------------


@dataclass
class Throughput:
    fleet: bool
    seconds: float
    captured_per_s: float
    published_per_s: float = 0.0
    lost_per_s: float = 0.0
    behind_at_end: int = 0
    bytes_per_record: float = 0.0
    cores: dict[str, float] = field(default_factory=dict)  # CPU s / window s, per process


def replay_sensor(tmp: Path, pcap: Path, raw_bytes: int, extra: str) -> Sensor:
    config = (
        f"capture: {{pcap: {pcap}, replay: {{speed: max, loop: true}}}}\n"
        f"ring: {{raw_bytes: {raw_bytes}}}\n"
        "store: {enabled: false}\nflows: {enabled: false}\n" + extra
    )
    return Sensor(tmp, config=config)


def fleet_page(sensor: Sensor) -> StatusPage:
    def attach() -> StatusPage | None:
        try:
            return StatusPage.attach(f"{sensor.name}-fleet")
        except RingError:
            return None

    return wait_for(attach, 30, "the publisher's status page")


def throughput(
    tmp: Path, pcap: Path, raw_bytes: int, nats: NatsServer | None, warmup: float, seconds: float
) -> Throughput:
    url = None if nats is None else nats.url
    sensor = replay_sensor(tmp, pcap, raw_bytes, fleet_yaml(url) if url else "")
    try:
        status = sensor.status()
        sensor.wait_capturing(status, 60)
        page = fleet_page(sensor) if url else None
        if page is not None:
            wait_for(lambda: page.read().published_records > 0, 60, "the first batch acked")
        time.sleep(warmup)  # the measuring window starts in the steady state
        pids = child_pids(sensor)
        if nats is not None and nats.proc is not None:
            pids["nats-server"] = nats.proc.pid
        roles = list(pids)
        t0, s0 = time.monotonic(), status.read()
        f0 = page.read() if page else None
        cpu0 = {r: cpu_seconds(pids[r]) for r in roles}
        time.sleep(seconds)
        t1, s1 = time.monotonic(), status.read()
        f1 = page.read() if page else None
        cpu = {r: cpu_seconds(pids[r]) - cpu0[r] for r in roles}
        span = t1 - t0
        captured = s1.packets_captured - s0.packets_captured
        result = Throughput(url is not None, span, captured / span)
        if f0 is not None and f1 is not None:
            published = f1.published_records - f0.published_records
            result.published_per_s = published / span
            result.lost_per_s = (f1.lost - f0.lost) / span
            result.behind_at_end = f1.behind
            if published:
                result.bytes_per_record = (f1.published_bytes - f0.published_bytes) / published
        result.cores = {r: cpu[r] / span for r in roles}
        return result
    finally:
        sensor.kill()


# -- 2. latency ------------------------------------------------------------------------------


@dataclass
class Latency:
    rate: int
    sent: int
    send_rate: float
    sensor_received: int
    central_received: int
    sensor_p50_ms: float
    sensor_p99_ms: float
    central_p50_ms: float
    central_p99_ms: float


def ws_url(node: Sensor) -> str:
    return f"ws://127.0.0.1:{node.web_port(90)}/ws/capture?token={token(node)}"


def summary(results: list[dict[str, Any]]) -> tuple[int, float, float]:
    got = sum(r["packets"] for r in results)
    lat = sorted(x for r in results for x in r["latencies"])
    return got, 1000 * percentile(lat, 0.5), 1000 * percentile(lat, 0.99)


def latency(tmp: Path, pcap: Path, url: str, rate: int, seconds: float, drain: float) -> Latency:
    users = users_yaml({USER: ("ADMIN", PASSWORD)})
    with veth_pair(ipv6=False) as pair:
        jumbo(pair)
        sensor = Sensor(
            tmp, "--interface", pair.host_if,
            config="store: {enabled: false}\nflows: {enabled: false}\n"
            + LIMITS
            + fleet_yaml(url, LATENCY_SENSOR),
            users=users,
        )  # fmt: skip
        central = Sensor(
            tmp,
            config=LIMITS + f"central: {{enabled: true, sensors: [{LATENCY_SENSOR}],"
            f" nats: {{servers: ['{url}']}}}}\n",
            users=users,
            command="central",
        )
        try:
            sensor.wait_capturing(sensor.status(), 60)
            table = central.state_dir / SENSOR_TABLE_FILE

            def live() -> bool:
                found = read_sensor_table(table)
                return found is not None and any(
                    s.name == LATENCY_SENSOR and s.state == "live" for s in found.sensors
                )

            wait_for(live, 90, "the central to see the sensor live")
            at_sensor = ClientPlan(ws_url(sensor), [None], batch=True)
            at_central = ClientPlan(ws_url(central), [None], batch=True)
            with ClientGroup(at_sensor) as near, ClientGroup(at_central) as far:
                near.ready()
                far.ready()
                sent = replay(pair, pcap, rate, int(rate * seconds))
                near_got, near50, near99 = summary(near.drain(1.0, drain))
                far_got, far50, far99 = summary(far.drain(1.0, drain))
        finally:
            central.kill()
            sensor.kill()
    return Latency(rate, sent.sent, sent.rate, near_got, far_got, near50, near99, far50, far99)


# -- report ----------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def print_throughput(alone: Throughput, fleet: Throughput) -> None:
    print("1. throughput: the mix pcap replayed at full speed, looped")
    print(f"{'':>24} {'captured/s':>11} {'published/s':>12} {'lost/s':>8} {'behind':>8}"
          f" {'B/record':>9}  cores used")  # fmt: skip
    for name, t in (("capture alone", alone), ("capture + publisher", fleet)):
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in t.cores.items())
        pub = f"{t.published_per_s:.0f}" if t.fleet else "-"
        print(f"{name:>24} {t.captured_per_s:>11.0f} {pub:>12} {t.lost_per_s:>8.0f}"
              f" {t.behind_at_end:>8} {t.bytes_per_record:>9.1f}  {cpu}")  # fmt: skip
    print(f"published / captured (same run): {ratio(fleet.published_per_s, fleet.captured_per_s)}")
    print(f"captured with publisher / alone: {ratio(fleet.captured_per_s, alone.captured_per_s)}")
    print(f"published / captured alone:      {ratio(fleet.published_per_s, alone.captured_per_s)}")
    capture = per_core(alone.captured_per_s, alone.cores.get("capture", 0.0))
    publisher = per_core(fleet.published_per_s, fleet.cores.get("publisher", 0.0))
    print(f"records per CPU second: capture {capture:.0f}, publisher {publisher:.0f};"
          f" publisher / capture {ratio(publisher, capture)}")  # fmt: skip


def per_core(rate: float, cores: float) -> float:
    return rate / cores if cores else 0.0


def print_latency(r: Latency) -> None:
    print(f"2. latency: tcpreplay at {r.rate}/s (sent {r.sent} at {r.send_rate:.0f}/s)")
    print(f"{'client at':>10} {'received':>9} {'p50 ms':>7} {'p99 ms':>7}")
    print(
        f"{'sensor':>10} {r.sensor_received:>9} {fmt(r.sensor_p50_ms):>7} {fmt(r.sensor_p99_ms):>7}"
    )
    print(f"{'central':>10} {r.central_received:>9} {fmt(r.central_p50_ms):>7}"
          f" {fmt(r.central_p99_ms):>7}")  # fmt: skip
    print(f"added by the fleet: p50 {fmt(r.central_p50_ms - r.sensor_p50_ms)} ms, p99"
          f" {fmt(r.central_p99_ms - r.sensor_p99_ms)} ms; central / sensor: p50"
          f" {ratio(r.central_p50_ms, r.sensor_p50_ms)}, p99"
          f" {ratio(r.central_p99_ms, r.sensor_p99_ms)}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput window")
    parser.add_argument("--warmup", type=float, default=2.0, help="before the window")
    parser.add_argument("--raw", type=int, default=256, help="ring.raw_bytes")
    parser.add_argument("--rate", type=int, default=10000, help="latency: packets/s")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--drain", type=float, default=5.0, help="delivery bound after a send")
    parser.add_argument("--parts", default="throughput,latency")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="smoke: short windows")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.latency_seconds, args.drain = 3.0, 2.0, 2.0, 3.0
    if not need_root("bench_fleet_e2e"):
        return 2
    terminate_on_sigterm()
    pcap = mix_pcap()
    print(f"bench_fleet_e2e: {pcap.name}; {machine_line()}")
    results: dict[str, Any] = {"args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="leireye-bench-fleet-") as tmp_name:
        tmp = Path(tmp_name)
        nats = NatsServer("bench", tmp / "nats")
        nats.start()
        try:
            if "throughput" in args.parts:
                alone = throughput(tmp, pcap, args.raw, None, args.warmup, args.seconds)
                fleet = throughput(tmp, pcap, args.raw, nats, args.warmup, args.seconds)
                print_throughput(alone, fleet)
                results["throughput"] = {"alone": asdict(alone), "fleet": asdict(fleet)}
            if "latency" in args.parts:
                lat = latency(tmp, pcap, nats.url, args.rate, args.latency_seconds, args.drain)
                print_latency(lat)
                results["latency"] = asdict(lat)
        finally:
            nats.kill()
    print(f"load average at the end: {machine_line()}")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
