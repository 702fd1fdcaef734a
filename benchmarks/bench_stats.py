"""How many records per second the stats accumulator ingests.

Batches of 4096 synthetic, realistic records (a Zipf-like mix of a few thousand hosts, mostly
TCP/UDP, bimodal sizes) arrive on a simulated clock at `--pps`; the accumulator closes a second
(and reduces its top tables) every `pps` records. Reported: ingest alone, and ingest with a frame
built every `update_ms` as the stats process does (top-N over the window, rates, totals).

    .venv/bin/python benchmarks/bench_stats.py [--records 4000000] [--pps 200000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from leireye.config import StatsConfig
from leireye.record import F_HAS_ADDR, F_HAS_PORTS, RECORD_DTYPE, App, Proto
from leireye.stats.accumulator import StatsAccumulator

BATCH = 4096
NS = 1_000_000_000


def realistic(n: int, seed: int = 1, hosts: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.zeros(n, RECORD_DTYPE)
    r["ts_ns"] = time.time_ns()
    r["proto"] = rng.choice(
        [Proto.TCP, Proto.UDP, Proto.ICMP, Proto.ARP, Proto.ICMPV6, Proto.OTHER],
        n,
        p=[0.62, 0.3, 0.03, 0.02, 0.02, 0.01],
    )
    r["app"] = rng.choice([App.NONE, App.TLS, App.HTTP, App.DNS, App.QUIC, App.SSH], n)
    r["wire_len"] = np.where(rng.random(n) < 0.45, rng.integers(60, 100, n), 1514)
    host = np.minimum(rng.zipf(1.3, n), hosts)
    v6 = rng.random(n) < 0.15
    r["src_hi"] = np.where(v6, 0x2001_0DB8_0000_0000, 0)
    r["src_lo"] = np.where(v6, host, 0xFFFF_0A00_0000 + host)
    r["dst_lo"] = 0xFFFF_C000_0200 + np.minimum(rng.zipf(1.5, n), 255)
    r["src_port"] = rng.integers(32768, 61000, n)
    r["dst_port"] = rng.choice([443, 80, 53, 22, 123, 8080, 5353], n)
    has_ports = np.isin(r["proto"], [Proto.TCP, Proto.UDP])
    r["flags"] = np.where(r["proto"] == Proto.OTHER, 0, F_HAS_ADDR) | np.where(
        has_ports, F_HAS_PORTS, 0
    )
    return r


def run(records: int, pps: int, frames: bool) -> float:
    config = StatsConfig()
    data = realistic(BATCH * 64)
    batches = [data[i : i + BATCH] for i in range(0, len(data), BATCH)]
    step = BATCH * NS // pps
    frame_every = config.update_ms * 1_000_000
    start_ns = 1_700_000_000 * NS
    acc = StatsAccumulator(config, start_ns)
    now, next_frame = start_ns, start_ns
    n = 0
    began = time.perf_counter()
    while n < records:
        for batch in batches:
            now += step
            acc.ingest(batch, now)
            if frames and now >= next_frame:
                acc.frame(now)
                acc.take_dirty()
                next_frame += frame_every
        n += len(data)
    return n / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=4_000_000)
    parser.add_argument("--pps", type=int, default=200_000, help="simulated arrival rate")
    args = parser.parse_args()
    for frames in (False, True):
        rate = run(args.records, args.pps, frames)
        what = "ingest + frame every update_ms" if frames else "ingest only"
        print(f"{what:32} {rate / 1e6:6.2f} M records/s  (batches of {BATCH}, at {args.pps} pps)")


if __name__ == "__main__":
    main()
