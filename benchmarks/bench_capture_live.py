"""Live capture on `lo`: how many packets per second `run_capture` keeps up with.

    sudo .venv/bin/python benchmarks/bench_capture_live.py [--rates 10000,50000,...] [--seconds S]

Runs the real capture process (spawned, privileges dropped, real decoder, real ring) with a BPF
for one UDP port, sends UDP datagrams to 127.0.0.1 on that port at each rate for a bounded time
(and a bounded count), and prints per rate: sent, the send rate reached, captured, the kernel
drops (`ps_drop`) over that step, and the capture process's CPU time per captured packet. The
sender shares the machine with the capture: on 2 cores the send rate it reaches is part of the
result (`--senders 2` adds a second sender process). Only 127.0.0.1 is ever used.

`ps_recv` is not shown: on `lo` every packet passes the tap twice (out and in) and libpcap drops
one copy itself, so `ps_recv` counts each packet twice. Measured here: `ps_drop` does the same,
a packet dropped while the buffer is full counts twice (captured + ps_drop / 2 == sent).
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import socket
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.traffic import send_at
from leireye.capture.process import run_capture
from leireye.config import CaptureConfig, Config
from leireye.ring import Ring, RingLayout
from leireye.ring.shm import unlink_segment
from leireye.ring.status import CaptureStatus, StatusBlock
from leireye.supervisor import child_main


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send_parallel(
    port: int, rate: int, seconds: float, payload: bytes, senders: int
) -> tuple[int, float]:
    if senders == 1:
        return send_at(port, rate, seconds, payload)
    ctx = multiprocessing.get_context("fork")  # the parent holds no mapping the senders touch
    with ctx.Pool(senders) as pool:
        start = time.perf_counter()
        parts = pool.starmap(send_at, [(port, rate // senders, seconds, payload)] * senders)
        elapsed = time.perf_counter() - start
    return sum(p[0] for p in parts), elapsed


def settled(status: StatusBlock, quiet_s: float = 0.3, timeout_s: float = 10.0) -> CaptureStatus:
    """The status once captured + dropped stopped moving for `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    last = status.read()
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = status.read()
        moved = (now.packets_captured, now.kernel_drops) != (
            last.packets_captured,
            last.kernel_drops,
        )
        if moved:
            still_since = time.monotonic()
        elif time.monotonic() - still_since >= quiet_s:
            return now
        last = now
    return last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="10000,30000,60000,100000,150000,250000")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--snaplen", type=int, default=256)
    parser.add_argument("--buffer-mb", type=int, default=64)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--senders", type=int, default=1, help="sender processes")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (live capture)", file=sys.stderr)
        return 2

    base = f"leireye-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    ring_name, status_name = f"{base}-ring", f"{base}-status"
    Ring.create(ring_name, RingLayout(capacity=1 << 18, raw_bytes=128)).close()
    status = StatusBlock.create(status_name)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))  # a bound port: no ICMP unreachable per datagram
    port = rx.getsockname()[1]
    capture = CaptureConfig(
        interface="lo",
        bpf=f"udp and dst port {port}",
        snaplen=args.snaplen,
        buffer_mb=args.buffer_mb,
        user="nobody",
    )
    target = functools.partial(run_capture, state_dir=f"/tmp/{base}-state")
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(
        target=child_main,
        args=("capture", "WARNING", None, target, Config(capture=capture), ring_name, status_name),
    )
    proc.start()
    try:
        deadline = time.monotonic() + 20
        while status.read().state != "capturing":
            if proc.exitcode is not None or time.monotonic() > deadline:
                print(f"capture did not start: {status.read().last_error}", file=sys.stderr)
                return 1
            time.sleep(0.05)
        payload = b"b" * args.payload
        print(f"lo, snaplen {args.snaplen}, buffer {args.buffer_mb} MiB, payload {args.payload} B")
        print("drops: ps_drop; on lo a dropped packet is counted once per pass (out and in)")
        print(
            f"{'target/s':>10} {'sent':>9} {'sent/s':>9} {'captured':>9} {'drops':>8} "
            f"{'lost':>7} {'cpu us/pkt':>10}"
        )
        for rate in (int(r) for r in args.rates.split(",")):
            before = settled(status)
            cpu = cpu_seconds(proc.pid or 0)
            sent, elapsed = send_parallel(port, rate, args.seconds, payload, args.senders)
            after = settled(status)
            cpu = cpu_seconds(proc.pid or 0) - cpu
            captured = after.packets_captured - before.packets_captured
            drops = after.kernel_drops - before.kernel_drops
            lost = 1 - captured / sent if sent else 0.0
            per_packet = cpu / captured * 1e6 if captured else 0.0
            print(
                f"{rate:>10} {sent:>9} {sent / elapsed:>9.0f} {captured:>9} {drops:>8} "
                f"{lost:>7.2%} {per_packet:>10.2f}"
            )
    finally:
        proc.terminate()
        proc.join(10)
        rx.close()
        status.close()
        status.unlink()
        unlink_segment(ring_name)
        state = f"/tmp/{base}-state"
        if os.path.isdir(f"{state}/stuck"):
            os.rmdir(f"{state}/stuck")
        if os.path.isdir(state):
            os.rmdir(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
