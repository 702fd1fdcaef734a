"""Reading the packet store for the API: what decoding stored frames again costs.

    .venv/bin/python benchmarks/bench_store_read.py [--packets N] [--repeat R]

A store of the realistic mix (`tests/traffic/mix.py`, written with the store's own writer) is
read back, warm (page cache), per packet:

- reference: `PacketStore.between` over the whole range (the frames, no records);
- range + decode + filter (`web.storeread.between`, a TCP filter): what an export by time and
  the history list pay;
- a pcap export of the range (the same, then the pcap records), consumed chunk by chunk;
- a JSON export of the range;
- a WebSocket resume from the store (`web.storereplay.StoreReplay`, ids read by id, decoded,
  filtered, encoded as `packet` messages), with no rate bound.

Each is printed as µs per packet and as a ratio to the reference measured in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_store import write_mix
from leireye.capture import pcapfile
from leireye.store.reader import PacketStore
from leireye.store.writer import StoreFiles
from leireye.web import export, storeread
from leireye.web.filters import PacketFilter, parse_filters
from leireye.web.frames import PacketRun
from leireye.web.storereplay import StoreReplay
from tests.traffic.mix import generate

END = 2**63 - 1


class _Sink:
    replaying = True
    columns = False

    def __init__(self) -> None:
        self.delivered = 0

    def outbox_room(self) -> int:
        return 1 << 30

    def replay_lost(self, lost: int) -> None:
        pass

    def deliver_run(self, run: PacketRun, *, lost: int = 0) -> None:
        self.delivered += len(run)


def best_of(repeat: int, run: object) -> float:
    assert callable(run)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="leireye-bench-storeread-", dir="/var/tmp"))
    try:
        mix = generate(args.packets, seed=15)
        files = StoreFiles(scratch, file_bytes=64 << 20, file_s=1e9, max_bytes=1 << 50,
                           max_age_s=1e12, run=1)  # fmt: skip
        last = write_mix(files, mix, 1, 0) - 1
        files.close()
        store = PacketStore(scratch)
        tcp = parse_filters({"protocol": "tcp"})
        assert isinstance(tcp, PacketFilter)
        n = last

        def raw() -> None:
            for _ in store.between(0, END):
                pass

        def decoded() -> None:
            for _ in storeread.between(store, 0, END, tcp):
                pass

        def pcap() -> None:
            batches = storeread.between(store, 0, END, PacketFilter())
            frames = ((b.records["ts_ns"], b.records["wire_len"], b.frames) for b in batches)
            for _ in pcapfile.pcap_chunks(frames, 1, 262144):
                pass

        def json_export() -> None:
            batches = ((b.records, None) for b in storeread.between(store, 0, END, PacketFilter()))
            for _ in export.json_stream(batches):
                pass

        def replay() -> None:
            sink = _Sink()
            r = StoreReplay(store, 1, 10**9, 0.0)
            now = 0.0
            while r.next_id <= last:
                now += 1.0
                r.step(sink, tcp.mask, lambda: last, now)

        reference = best_of(args.repeat, raw)
        print(f"store of {n:,} packets of the mix, "
              f"{sum(p.stat().st_size for p in scratch.glob('*.pcapng')) / 2**20:.1f} MiB; "
              f"µs per packet (best of {args.repeat}), ratio to the plain read:")  # fmt: skip
        rows = [("read frames (reference)", reference), ("read + decode + filter", best_of(
            args.repeat, decoded)), ("pcap export", best_of(args.repeat, pcap)),
            ("JSON export", best_of(args.repeat, json_export)),
            ("WebSocket resume from the store", best_of(args.repeat, replay))]  # fmt: skip
        for name, took in rows:
            print(f"  {name:34s} {took / n * 1e6:7.2f} µs  {took / reference:5.1f}x"
                  f"  ({n / took:,.0f} packets/s)")  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
