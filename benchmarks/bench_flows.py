"""Flow table throughput: records ingested per second with a million active flows.

    .venv/bin/python benchmarks/bench_flows.py [--flows 1000000] [--records 1000000]

The records are the decoder's own output for the realistic generated mix (tests/traffic: its
transports, applications, flags and texts), with their addresses and ports rewritten so that
they belong to `--flows` conversations (each record keeps its kind; its direction is drawn at
random). The table is first filled with every flow, then timed on batches of `--batch` records
(the flow process's read size) drawn from those flows two ways:

- zipf: a Zipf(1.1) popularity over the flows (a few heavy conversations, a long tail: how real
  links look; ~the distinct flows per batch are printed);
- uniform: every record from a flow drawn uniformly (nearly every record of a batch hits a
  different flow: the worst case for a per-flow step).

References measured in the same run: a bare numpy pass on the same batches (sum of the wire
lengths grouped by a hash of the key columns, i.e. the vectorised floor of any flow table) and
the decoder itself on the mix (what one capture process can produce on one core), run in slices
between the table's batches so that both see the same load of a shared machine. Also: flows
ended per second (everything ended at the end, `end_all`, and turned into `Flow` structs) and
memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the traffic generator lives beside the tests
    sys.path.insert(0, str(ROOT))

import numpy as np

from leireye.config import FlowsConfig
from leireye.decode.decode import decode_batch
from leireye.flows.rows import to_flows
from leireye.flows.table import FlowTable
from leireye.record import F_HAS_ADDR, IPV4_MAPPED_LO, LinkType
from tests.traffic.mix import generate


def keyed(base: np.ndarray, flow_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copies of `base` records (cycled) rewritten to belong to the flows `flow_ids`."""
    out = base[(flow_ids % len(base)).astype(np.intp)]  # a flow keeps its kind of record
    f = flow_ids.astype(np.uint64)
    client = np.uint64(IPV4_MAPPED_LO) | (np.uint64(10 << 24) + (f >> np.uint64(4)))
    server = np.uint64(IPV4_MAPPED_LO) | np.uint64((192 << 24) | (168 << 16)) | (f & np.uint64(15))
    cport = (32768 + (f % np.uint64(28000))).astype(np.uint16)
    flip = rng.random(len(f)) < 0.5
    out["src_hi"] = out["dst_hi"] = 0
    out["src_lo"] = np.where(flip, server, client)
    out["dst_lo"] = np.where(flip, client, server)
    service = np.minimum(out["src_port"], out["dst_port"])
    out["src_port"] = np.where(flip, service, cport)
    out["dst_port"] = np.where(flip, cport, service)
    out["ip_version"] = np.where(out["ip_version"] == 0, 4, out["ip_version"])
    out["flags"] |= F_HAS_ADDR
    return out


def bare_pass(batch: np.ndarray) -> None:
    """The floor: hash the key columns, group, sum bytes per group."""
    h = batch["src_lo"] * np.uint64(0x9E3779B97F4A7C15) ^ batch["dst_lo"] * np.uint64(0xC2B2AE3D)
    h ^= (batch["src_port"].astype(np.uint64) << np.uint64(16)) | batch["dst_port"]
    _, inverse = np.unique(h, return_inverse=True)
    np.bincount(inverse, weights=batch["wire_len"])


class DecoderReference:
    """The decoder on the mix, run in slices between the table's batches, so that both are
    measured over the same stretch of a shared machine's time."""

    def __init__(self, frames: list[bytes], ts: list[int], wire: list[int]) -> None:
        self.frames, self.ts, self.wire = frames, ts, wire
        self.at = 0
        self.records = 0
        self.seconds = 0.0

    def step(self, n: int, chunk: int = 4096) -> None:
        while n > 0:
            lo = self.at
            hi = min(lo + min(chunk, n), len(self.frames))
            start = time.perf_counter()
            decode_batch(self.frames[lo:hi], self.ts[lo:hi], self.wire[lo:hi], LinkType.EN10MB)
            self.seconds += time.perf_counter() - start
            self.records += hi - lo
            n -= hi - lo
            self.at = 0 if hi == len(self.frames) else hi

    def rate(self) -> float:
        rate = self.records / self.seconds if self.seconds else 0.0
        self.records, self.seconds = 0, 0.0
        return rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=1_000_000, help="timed, per pattern")
    parser.add_argument("--batch", type=int, default=65536)
    parser.add_argument("--mix", type=int, default=100_000, help="decoded mix records to cycle")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    mix = generate(args.mix, seed=1)
    base = decode_batch(mix.frames, mix.ts_ns, mix.wire_lens, LinkType.EN10MB).records
    decoder = DecoderReference(mix.frames, mix.ts_ns, mix.wire_lens)
    base = base[base["ip_version"] != 0]
    base["ts_ns"] = 0
    config = FlowsConfig(max_active=args.flows + args.flows // 50, active_timeout_s=0)
    table = FlowTable(config)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fill = 0.0
    for lo in range(0, args.flows, args.batch):
        batch = keyed(base, np.arange(lo, min(lo + args.batch, args.flows)), rng)
        start = time.perf_counter()
        table.ingest(batch)
        fill += time.perf_counter() - start
        decoder.step(len(batch))
    decode_rate = decoder.rate()
    print(f"fill: {args.flows} new flows in {fill:.2f} s ({args.flows / fill / 1e3:.0f} k/s; "
          f"{args.flows / fill / decode_rate:.2f} of the decoder, {decode_rate / 1e3:.0f} k/s "
          f"meanwhile), active {table.active}")  # fmt: skip
    rss_fill = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grew = rss_fill - rss0
    print(
        f"memory: max RSS grew {grew / 1024:.0f} MiB while filling the table "
        f"({grew * 1024 / args.flows:.0f} bytes per flow, one batch included)"
    )
    zipf = (rng.zipf(1.1, args.records) - 1) % args.flows
    uniform = rng.integers(0, args.flows, args.records)
    for name, ids in (("zipf", zipf), ("uniform", uniform)):
        batches = [keyed(base, ids[lo : lo + args.batch], rng)
                   for lo in range(0, len(ids), args.batch)]  # fmt: skip
        distinct = np.mean([len(np.unique(ids[lo : lo + args.batch]))
                            for lo in range(0, len(ids), args.batch)])  # fmt: skip
        start = time.perf_counter()
        for batch in batches:
            bare_pass(batch)
        bare = args.records / (time.perf_counter() - start)
        took = 0.0
        for batch in batches:
            start = time.perf_counter()
            table.ingest(batch)
            took += time.perf_counter() - start
            decoder.step(len(batch))
        rate = args.records / took
        decode_rate = decoder.rate()
        print(
            f"{name}: {rate / 1e3:.0f} k records/s ingested ({distinct:.0f} distinct flows "
            f"per batch of {args.batch}); bare numpy pass {bare / 1e3:.0f} k/s; ratio "
            f"{rate / bare:.2f} of bare, {rate / decode_rate:.2f} of the decoder "
            f"({decode_rate / 1e3:.0f} k/s meanwhile)"
        )
    start = time.perf_counter()
    table.end_all()
    rows = table.take_ended()
    flows = to_flows(rows)
    took = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"ended {len(flows)} flows in {took:.2f} s ({len(flows) / took / 1e3:.0f} k/s, rows "
          f"and Flow structs); max RSS {rss / 1024:.0f} MiB ({(rss - rss0) / 1024:.0f} MiB "
          f"after the mix was made); counts {table.counts}")  # fmt: skip


if __name__ == "__main__":
    main()
