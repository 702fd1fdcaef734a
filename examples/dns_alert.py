#!/usr/bin/env python3
"""Alert on DNS queries for watched domains (and their subdomains).

    export LEIREYE_TOKEN=$(leireye token --user admin)
    python examples/dns_alert.py --url ws://127.0.0.1:8000/ws/capture example.org evil.test
    python examples/dns_alert.py --domains blocklist.txt     # one domain per line, # comments

Prints one line per matching query (`ALERT 10.0.0.5 asked A www.evil.test`) and keeps going
across sensor restarts; gaps in the stream are reported on stderr, and so is `watching DNS ...`
once the sensor has confirmed the subscription (every query from then on is seen).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys

from leireye.client import Gap, LeirEyeClient

QUERY = re.compile(r"^DNS query (\S+) (\S+)")


def load_domains(names: list[str], path: str | None) -> set[str]:
    domains = {n.lower().rstrip(".") for n in names}
    if path:
        with open(path, encoding="utf-8") as f:
            domains |= {ln.split("#")[0].strip().lower().rstrip(".") for ln in f} - {""}
    return domains


def watched(name: str, domains: set[str]) -> bool:
    labels = name.lower().rstrip(".").split(".")
    return any(".".join(labels[i:]) in domains for i in range(len(labels)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("domain", nargs="*")
    parser.add_argument("--domains", help="file with one domain per line")
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws/capture")
    args = parser.parse_args()
    domains = load_domains(args.domain, args.domains)
    if not domains:
        parser.error("no domains to watch")

    def on_gap(gap: Gap) -> None:
        print(f"warning: {gap.count or 'some'} packets missed ({gap.reason})", file=sys.stderr)

    token = os.environ["LEIREYE_TOKEN"]
    async with LeirEyeClient(args.url, token=token, on_gap=on_gap) as client:
        queries = await client.subscribe_packets(protocol="DNS")
        print(f"watching DNS for {len(domains)} domains", file=sys.stderr, flush=True)
        async for packet in queries:
            if (match := QUERY.match(packet.info)) and watched(match.group(2), domains):
                print(f"ALERT {packet.src_ip} asked {match.group(1)} {match.group(2)}", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
