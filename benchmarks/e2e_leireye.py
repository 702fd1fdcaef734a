"""The sensor side of the end-to-end benchmarks: a real `leireye run` capturing on the host end
of a veth pair, and snapshots of everything it counts (status block, /metrics, CPU and RSS of
each child process from /proc) so a step is measured as the difference of two snapshots."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench_ws import tree_cpu
from benchmarks.e2e_common import (
    child_pids,
    cpu_seconds,
    per_worker,
    rss_kib,
    scrape,
    sensor_on,
    settled_status,
    token,
)
from tests.netns import VethPair

WEB_LOST = "leireye_web_ring_lost_total"
STATS_LOST = "leireye_stats_ring_lost_total"
SENT = "leireye_web_messages_sent_total"
DELIVERED = "leireye_web_packets_delivered_total"
CONNECTIONS = "leireye_web_connections"
FLOWS_LOST = "leireye_flows_ring_lost_total"
STORE_WRITTEN = "leireye_store_frames_written_total"
STORE_LOST = "leireye_store_frames_lost_total"


def cpu_share(cpu_s: float, packets: int) -> float:
    """Percent of one core per 100 k packets/s: CPU seconds per packet * 1e5 * 100."""
    return cpu_s / packets * 1e7 if packets else math.nan


@dataclass(frozen=True)
class Snapshot:
    status: Any
    metrics: dict[tuple[str, str], float]
    cpu: dict[str, float]  # role (capture, stats, web-0, ..., clients) -> CPU seconds
    rss_kib: dict[str, int]  # web-N -> resident set


@dataclass(frozen=True)
class Delta:
    captured: int
    kernel_drops: int
    ring_lost: int
    cpu: dict[str, float]
    messages: dict[str, float]  # worker -> messages sent
    delivered: dict[str, float]  # worker -> packets delivered (summed over subscribers)
    store_written: int  # frames the packet store wrote (0 when it is off)
    store_lost: int  # frames the packet store missed (counted by its writer)


def delivery(before: Snapshot, after: Snapshot) -> Delta:
    def grown(name: str) -> dict[str, float]:
        old = per_worker(before.metrics, name)
        return {w: v - old.get(w, 0.0) for w, v in per_worker(after.metrics, name).items()}

    def grown_one(name: str) -> float:
        return after.metrics.get((name, ""), 0) - before.metrics.get((name, ""), 0)

    stats_lost = after.metrics.get((STATS_LOST, ""), 0) - before.metrics.get((STATS_LOST, ""), 0)
    return Delta(
        captured=after.status.packets_captured - before.status.packets_captured,
        kernel_drops=after.status.kernel_drops - before.status.kernel_drops,
        ring_lost=int(sum(grown(WEB_LOST).values()) + stats_lost + grown_one(FLOWS_LOST)),
        cpu={k: after.cpu[k] - before.cpu.get(k, 0.0) for k in after.cpu},
        messages=grown(SENT),
        delivered=grown(DELIVERED),
        store_written=int(grown_one(STORE_WRITTEN)),
        store_lost=int(grown_one(STORE_LOST)),
    )


class LeirEyeRunner:
    """`leireye run -i HOST_IF` for the length of a `with` block."""

    def __init__(
        self,
        pair: VethPair,
        pcap: Path,
        workers: int,
        tmp: Path,
        outbox: int = 4096,
        extra: str = "",
    ) -> None:
        self.pair, self.pcap, self.tmp = pair, pcap, tmp
        self.sensor = sensor_on(pair.host_if, workers, tmp, outbox, extra)
        try:
            port = self.sensor.web_port(60)
            self.status = self.sensor.status()
            self.sensor.wait_capturing(self.status, 30)
            self.bearer = token(self.sensor)
        except BaseException:
            self.close()
            raise
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws/capture?token={self.bearer}"

    @property
    def pids(self) -> dict[str, int]:
        return child_pids(self.sensor)

    def workers(self) -> dict[str, int]:
        return {role: pid for role, pid in self.pids.items() if role.startswith("web-")}

    def snapshot(self, client_pids: list[int]) -> Snapshot:
        status = settled_status(self.status)
        cpu = {role: cpu_seconds(pid) for role, pid in self.pids.items()}
        cpu["clients"] = tree_cpu(client_pids)
        rss = {role: rss_kib(pid) for role, pid in self.workers().items()}
        return Snapshot(status, scrape(self.base_url, self.bearer), cpu, rss)

    def connections(self) -> dict[str, float]:
        return per_worker(scrape(self.base_url, self.bearer), CONNECTIONS)

    def close(self) -> None:
        self.sensor.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> LeirEyeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
