#!/usr/bin/env python3
"""Write per-second packet counts by protocol to a CSV file (or stdout).

    export LEIREYE_TOKEN=$(leireye token --user admin)
    python examples/protocol_csv.py --url ws://127.0.0.1:8000/ws/capture -o counts.csv
    python examples/protocol_csv.py --seconds 60            # one minute to stdout

One row a second from the server's stats (`timestamp,packets_per_second,bytes_per_second,TCP,
UDP,...`); the protocol columns are those given with --protocols (default: the common ones).
Uses the blocking `iter_stats`, no asyncio needed.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

from leireye.client import iter_stats

COMMON = ["TCP", "UDP", "ICMP", "ICMPv6", "ARP", "OTHER"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws/capture")
    parser.add_argument("-o", "--output", help="CSV file (default: stdout)")
    parser.add_argument("--protocols", default=",".join(COMMON))
    parser.add_argument("--seconds", type=int, default=0, help="stop after N rows (0: never)")
    args = parser.parse_args()
    protocols = [p for p in args.protocols.split(",") if p]
    out = open(args.output, "a", newline="") if args.output else sys.stdout  # noqa: SIM115
    writer = csv.writer(out)
    if out is sys.stdout or out.tell() == 0:
        writer.writerow(["timestamp", "packets_per_second", "bytes_per_second", *protocols])
    rows = 0
    try:
        for s in iter_stats(args.url, token=os.environ["LEIREYE_TOKEN"], interval_ms=1000):
            counts = [s.protocols.get(p, 0) for p in protocols]
            writer.writerow([s.timestamp, s.packets_per_second, s.bytes_per_second, *counts])
            out.flush()
            rows += 1
            if args.seconds and rows >= args.seconds:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if out is not sys.stdout:
            out.close()


if __name__ == "__main__":
    main()
