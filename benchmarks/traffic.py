"""Paced UDP traffic to 127.0.0.1 for the benchmarks (never any other address)."""

from __future__ import annotations

import socket
import time


def send_at(port: int, rate: int, seconds: float, payload: bytes) -> tuple[int, float]:
    """Send to 127.0.0.1:port at `rate`/s in 1 ms slices; return (sent, elapsed seconds)."""
    limit = int(rate * seconds)
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.setblocking(False)
        dest = ("127.0.0.1", port)
        start = time.perf_counter()
        while sent < limit:
            elapsed = time.perf_counter() - start
            if elapsed > seconds * 1.5:  # the sender cannot reach the rate: stop anyway
                break
            due = min(limit, int(elapsed * rate) + 1)
            while sent < due:
                try:
                    tx.sendto(payload, dest)
                except BlockingIOError:
                    break
                sent += 1
            if sent >= due:
                time.sleep(0.0005)
        return sent, time.perf_counter() - start
