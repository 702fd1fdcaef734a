"""The traffic of one demo site: real clients run inside a network namespace (`ip netns exec`).

    python -m leireye.fleet.labtraffic SERVER [--rate N] [--seconds S] [--seed K]

At `rate` actions a second, for `seconds` at most (then it stops by itself), each one of: an
HTTP GET of a random size from the site's web server, a DNS query for a random name, a TCP
connection to a closed port (answered with a reset). SERVER is the root namespace's end of the
site's veth pair, where `leireye.fleet.lab` serves HTTP on HTTP_PORT and DNS on DNS_PORT; so
every packet crosses the veth the site's sensor captures on. Failures are counted, and the
counts logged at the end (also on SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import socket
import struct
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Final

HTTP_PORT: Final = 8080
DNS_PORT: Final = 53
CLOSED_PORT: Final = 9  # discard: nothing listens there
NAMES: Final = ("www", "api", "cdn", "mail", "git", "time", "updates", "auth")
DOMAINS: Final = ("example.com", "example.org", "example.net")

log = logging.getLogger("leireye.fleet.labtraffic")


def dns_query(rng: random.Random) -> bytes:
    """One DNS query (A or AAAA) for a random name, as a stub resolver sends it."""
    name = f"{rng.choice(NAMES)}{rng.randrange(100)}.{rng.choice(DOMAINS)}"
    question = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    qtype = rng.choice((1, 28))
    header = struct.pack("!HHHHHH", rng.randrange(65536), 0x0100, 1, 0, 0, 0)
    return header + question + b"\x00" + struct.pack("!HH", qtype, 1)


def http_get(server: str, rng: random.Random) -> None:
    size = rng.choice((200, 1500, 20_000, 120_000))
    url = f"http://{server}:{HTTP_PORT}/bytes/{size}"
    with urllib.request.urlopen(url, timeout=2.0) as answer:
        answer.read()


def dns(server: str, rng: random.Random) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.sendto(dns_query(rng), (server, DNS_PORT))
        sock.recv(4096)


def refused(server: str, rng: random.Random) -> None:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        try:
            sock.connect((server, CLOSED_PORT))
        except ConnectionRefusedError:
            return


ACTIONS: Final = ((http_get, 5), (dns, 4), (refused, 1))


def run(server: str, rate: float, seconds: float, seed: int, stop: list[bool]) -> Counter[str]:
    rng = random.Random(seed)
    actions = [action for action, _ in ACTIONS]
    weights = [weight for _, weight in ACTIONS]
    counts: Counter[str] = Counter()
    start = time.monotonic()
    next_at = start
    while time.monotonic() - start < seconds and not stop:
        action = rng.choices(actions, weights)[0]
        try:
            action(server, rng)
            counts[action.__name__] += 1
        except (OSError, urllib.error.URLError) as exc:
            counts[f"{action.__name__} failed ({type(exc).__name__})"] += 1
        next_at += rng.expovariate(rate)
        time.sleep(max(0.0, next_at - time.monotonic()))  # pacing, not synchronisation
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m leireye.fleet.labtraffic")
    parser.add_argument("server", help="the address of the site's servers (the veth's far end)")
    parser.add_argument("--rate", type=float, default=20.0, help="actions per second")
    parser.add_argument("--seconds", type=float, default=3600.0, help="stop after this long")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.append(True))
    counts = run(args.server, args.rate, args.seconds, args.seed, stop)
    log.info("done: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
