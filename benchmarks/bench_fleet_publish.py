"""How fast a sensor's records go into JetStream, and how many bytes each costs on the wire.

A realistic mix of frames (tests/traffic/mix.py) is decoded into records once, with the first
`--raw` bytes of each frame, and cut into batches of `--batch` records. Then, against a
nats-server with JetStream started here (free port, temporary file store):

  encode only         `encode_batch` (records + raw, zstd level 1): the publisher's CPU floor
  encode, no zstd     the same without compression (`compress=False`)
  publish, encoded    `encode_batch` + `publish_async` with `--pending` acks outstanding: what
                      the publisher does per batch
  publish, pre-encoded  the same bodies published again (into a fresh stream): NATS alone
  empty messages      as many messages, empty, with the same headers: the per-message cost

Records per second (best of `--repeat`) with each one's ratio to "encode only", and bytes per
record on the wire (compressed body + headers) against bytes per packet of the same frames in
a pcap file (whole frames, as the packet store keeps them) and in the ring (record + raw).

    .venv/bin/python benchmarks/bench_fleet_publish.py [--packets 100000] [--batch 4096]
        [--raw 256] [--pending 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the traffic generator lives beside the tests
    sys.path.insert(0, str(ROOT))

import nats
import numpy as np
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from leireye.capture import pcapfile
from leireye.decode.decode import decode_batch
from leireye.fleet.model import encode_batch, stream_name, subject
from leireye.fleet.natsserver import NatsServer
from leireye.record import RECORD_DTYPE, LinkType
from tests.traffic.mix import generate

SENSOR = "bench"


def make_records(packets: int, raw_bytes: int) -> tuple[np.ndarray, np.ndarray, Any]:
    mix = generate(packets, seed=7)
    records = decode_batch(mix.frames, mix.ts_ns, mix.wire_lens, LinkType.EN10MB).records
    records["seq"] = np.arange(1, packets + 1)
    raw = np.zeros((packets, raw_bytes), np.uint8)
    for index, frame in enumerate(mix.frames):
        head = frame[:raw_bytes]
        raw[index, : len(head)] = np.frombuffer(head, np.uint8)
    return records, raw, mix


def batches(records: np.ndarray, raw: np.ndarray, size: int) -> list[tuple[np.ndarray, Any]]:
    return [(records[lo : lo + size], raw[lo : lo + size]) for lo in range(0, len(records), size)]


def encode_all(
    parts: list[tuple[np.ndarray, Any]], compress: bool = True
) -> list[tuple[bytes, dict[str, str]]]:
    return [encode_batch(SENSOR, rec, raw, lost=0, compress=compress) for rec, raw in parts]


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


async def publish_run(
    jetstream: JetStreamContext,
    fresh_stream: Callable[[], Coroutine[Any, Any, str]],
    messages: Callable[[], Any],
) -> float:
    """Seconds to publish every (body, headers) `messages()` yields and have all acked."""
    subj = await fresh_stream()
    start = time.perf_counter()
    futures = [
        await jetstream.publish_async(subj, body, headers=headers) for body, headers in messages()
    ]
    await jetstream.publish_async_completed()
    elapsed = time.perf_counter() - start
    for future in futures:
        future.result()  # raises for any refused message
    return elapsed


async def measure(args: argparse.Namespace, url: str) -> None:
    records, raw, mix = make_records(args.packets, args.raw)
    parts = batches(records, raw, args.batch)
    n = len(records)

    def encode_only(compress: bool = True) -> float:
        start = time.perf_counter()
        encode_all(parts, compress)
        return time.perf_counter() - start

    encoded = encode_all(parts)  # also the warm-up
    t_encode = best(args.repeat, encode_only)
    t_plain = best(args.repeat, lambda: encode_only(compress=False))
    body_bytes = sum(len(body) for body, _ in encoded)
    header_bytes = sum(sum(len(k) + len(v) + 4 for k, v in h.items()) for _, h in encoded)
    biggest = max(len(body) for body, _ in encoded)

    nc = await nats.connect(url)
    if biggest > nc.max_payload:
        await nc.close()
        raise SystemExit(
            f"the largest batch body, {biggest:,} B, is above the server's max_payload"
            f" ({nc.max_payload:,} B): lower --batch or --raw, or raise max_payload"
        )
    jetstream = nc.jetstream(publish_async_max_pending=args.pending, timeout=30.0)
    counter = iter(range(1_000_000))

    async def fresh_stream() -> str:
        name = f"{stream_name(SENSOR, 'packets')}_{next(counter)}"
        subj = f"{subject(SENSOR, 'packets')}.{name}"
        await jetstream.add_stream(
            StreamConfig(name=name, subjects=[subj], storage=StorageType.FILE)
        )
        return subj

    async def timed(messages: Callable[[], Any]) -> float:
        return min(
            [await publish_run(jetstream, fresh_stream, messages) for _ in range(args.repeat)]
        )

    def encoding() -> Any:
        for rec, part_raw in parts:
            yield encode_batch(SENSOR, rec, part_raw, lost=0)

    t_publish = await timed(encoding)
    t_pre = await timed(lambda: iter(encoded))
    t_empty = await timed(lambda: ((b"", h) for _, h in encoded))
    limit = nc.max_payload
    await nc.close()

    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "mix.pcap"
        pcapfile.write_pcap(pcap, mix.ts_ns, mix.wire_lens, mix.frames, LinkType.EN10MB, 65535)
        pcap_bytes = pcap.stat().st_size

    rate_encode = n / t_encode
    print(f"{n:,} records in {len(parts)} batches of {args.batch}, raw {args.raw} B each,")
    print(f"{args.pending} acks outstanding at most, best of {args.repeat}")
    print(f"{'':<24}{'records/s':>14}{'x encode only':>16}{'messages/s':>14}")
    for label, seconds in (
        ("encode only", t_encode),
        ("encode, no zstd", t_plain),
        ("publish, encoded", t_publish),
        ("publish, pre-encoded", t_pre),
        ("empty messages", t_empty),
    ):
        print(
            f"{label:<24}{n / seconds:>14,.0f}{(n / seconds) / rate_encode:>16.2f}"
            f"{len(parts) / seconds:>14,.0f}"
        )
    per_record = (body_bytes + header_bytes) / n
    ring = RECORD_DTYPE.itemsize + args.raw
    print(f"bytes per record on the wire {per_record:8.1f}  (body {body_bytes / n:.1f}, "
          f"headers {header_bytes / n:.1f})")  # fmt: skip
    print(f"bytes per packet in pcap     {pcap_bytes / n:8.1f}  wire/pcap "
          f"{per_record / (pcap_bytes / n):.2f}")  # fmt: skip
    print(f"bytes per record in the ring {ring:8d}  wire/ring {per_record / ring:.2f}")
    print(f"largest batch body {biggest:,} B (the server's max_payload: {limit:,})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=4096, help="records per batch")
    parser.add_argument("--raw", type=int, default=256, help="raw bytes per record")
    parser.add_argument("--pending", type=int, default=64, help="acks outstanding at most")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        server = NatsServer("bench", Path(tmp))
        server.start()
        try:
            asyncio.run(measure(args, server.url))
        finally:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
