"""Live capture on a veth pair with 1 and with 2 capture processes (PACKET_FANOUT), side by side.

    sudo .venv/bin/python benchmarks/bench_fanout.py [--rates 20000,50000,...] [--seconds S]
    sudo .venv/bin/python benchmarks/bench_fanout.py --smoke

Builds a throw-away network namespace joined by a veth pair (tests/netns.py), starts the real
capture processes (spawned, privileges dropped, real decoder, one ring shard each, the id
allocator when there are two) on the host end with a BPF for one UDP port, and sends Ethernet
frames from the namespace end at each rate, over 256 flows (so `hash` fanout spreads them):
with tcpreplay (`--sender tcpreplay`, the default when it is installed; ~600 k frames/s onto a
veth here with nobody capturing) or with a Python AF_PACKET socket (`--sender python`, ~300 k/s
at most). On a veth `captured + ps_drop == sent` exactly, so "lost" is exact. Prints per workers
and rate: sent, the send rate reached, captured, kernel drops, lost; and per workers the highest
rate that lost nothing. The sender shares the 2 cores with the capture: the rate it reaches is
part of the result. No traffic leaves the namespace pair.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from multiprocessing.process import BaseProcess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.e2e_common import replay
from leireye.capture.fanout import ShardSpec, shard_specs
from leireye.capture.pcapfile import write_pcap
from leireye.capture.process import run_capture
from leireye.config import CaptureConfig, Config
from leireye.ring import Ring, RingLayout
from leireye.ring.ids import IdAllocator
from leireye.ring.shards import ids_name, shard_name
from leireye.ring.shardstatus import StatusSet
from leireye.ring.shm import unlink_segment
from leireye.ring.status import CaptureStatus, StatusBlock
from leireye.supervisor import child_main
from tests.netns import VethPair, packet_socket, udp_frame, veth_pair

PORT = 9999
FLOWS = 256


def frames_for(pair: VethPair, payload: int) -> list[bytes]:
    return [udp_frame(pair, 10000 + i, PORT, b"b" * payload) for i in range(FLOWS)]


def send_frames(
    sock: socket.socket, frames: list[bytes], rate: int, seconds: float
) -> tuple[int, float]:
    """Send at `rate`/s in 1 ms slices for `seconds`; return (sent, elapsed seconds)."""
    limit = int(rate * seconds)
    sent = 0
    n = len(frames)
    start = time.perf_counter()
    while sent < limit:
        elapsed = time.perf_counter() - start
        if elapsed > seconds * 1.5:  # the sender cannot reach the rate: stop anyway
            break
        due = min(limit, int(elapsed * rate) + 1)
        while sent < due:
            try:
                sock.send(frames[sent % n])
            except BlockingIOError:
                break
            sent += 1
        if sent >= due:
            time.sleep(0.0005)
    return sent, time.perf_counter() - start


class Sender:
    """Frames from the namespace end at a rate: tcpreplay of a pcap of them, or a Python socket."""

    def __init__(self, pair: VethPair, frames: list[bytes], kind: str, workdir: Path) -> None:
        self.pair, self.frames, self.kind = pair, frames, kind
        self.sock: socket.socket | None = None
        self.pcap = workdir / "fanout-frames.pcap"
        if kind == "tcpreplay":  # Ethernet (linktype 1), 1 µs apart
            ts_ns = [i * 1000 for i in range(len(frames))]
            write_pcap(
                self.pcap, ts_ns, [len(f) for f in frames], frames, 1, 65535, nanoseconds=True
            )
        else:
            self.sock = packet_socket(pair.ns_if, pair.ns)
            self.sock.setblocking(False)

    def send(self, rate: int, seconds: float) -> tuple[int, float]:
        """(frames sent, seconds it took)."""
        if self.sock is not None:
            return send_frames(self.sock, self.frames, rate, seconds)
        done = replay(self.pair, self.pcap, rate, int(rate * seconds), len(self.frames))
        return done.sent, done.seconds

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def settled(statuses: StatusSet, quiet_s: float = 0.3, timeout_s: float = 10.0) -> CaptureStatus:
    """The summed status once captured + dropped stopped moving for `quiet_s`."""
    deadline = time.monotonic() + timeout_s
    last = statuses.read()
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = statuses.read()
        if (now.packets_captured, now.kernel_drops) != (last.packets_captured, last.kernel_drops):
            still_since = time.monotonic()
        elif time.monotonic() - still_since >= quiet_s:
            return now
        last = now
    return last


class Capture:
    """`workers` capture processes on `interface`, with their segments; a context manager."""

    def __init__(self, interface: str, workers: int, args: argparse.Namespace) -> None:
        self.base = f"leireye-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.ring, self.status = f"{self.base}-ring", f"{self.base}-status"
        capture = CaptureConfig(
            interface=interface, bpf=f"udp and dst port {PORT}", snaplen=args.snaplen,
            buffer_mb=args.buffer_mb, user="nobody", workers=workers,
        )  # fmt: skip
        self.config = Config(capture=capture)
        self.specs: list[ShardSpec] = shard_specs(self.config, os.getpid())
        self.names: list[str] = []
        for k in range(workers):
            layout = RingLayout(capacity=1 << 18, raw_bytes=128, shard=k, shards=workers)
            Ring.create(shard_name(self.ring, k), layout).close()
            StatusBlock.create(shard_name(self.status, k)).close()
            self.names += [shard_name(self.ring, k), shard_name(self.status, k)]
        if workers > 1:
            IdAllocator.create(ids_name(self.ring), workers).close()
            self.names.append(ids_name(self.ring))
        self.statuses = StatusSet.attach(self.status, workers)
        self.procs: list[BaseProcess] = []

    def __enter__(self) -> Capture:
        ctx = multiprocessing.get_context("spawn")
        state_dir = f"/tmp/{self.base}-state"
        for spec in self.specs:
            target = functools.partial(run_capture, state_dir=state_dir, shard=spec)
            proc = ctx.Process(
                target=child_main,
                args=("capture", "WARNING", None, target, self.config, self.ring, self.status),
            )
            proc.start()
            self.procs.append(proc)
        deadline = time.monotonic() + 20
        while not all(s.capturing for s in self.statuses.read_all()):
            if any(p.exitcode is not None for p in self.procs) or time.monotonic() > deadline:
                raise RuntimeError(f"capture did not start: {self.statuses.read().last_error}")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.join(10)
        self.statuses.close()
        for name in self.names:
            unlink_segment(name)
        for sub in ("stuck", ""):
            path = f"/tmp/{self.base}-state/{sub}".rstrip("/")
            if os.path.isdir(path):
                os.rmdir(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="20000,40000,60000,80000,100000,130000,160000")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--workers", default="1,2", help="capture process counts to compare")
    parser.add_argument("--snaplen", type=int, default=256)
    parser.add_argument("--buffer-mb", type=int, default=64)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="one tiny step each (CI)")
    parser.add_argument("--sender", choices=("tcpreplay", "python"),
                        default="tcpreplay" if shutil.which("tcpreplay") else "python")  # fmt: skip
    args = parser.parse_args()
    if args.smoke:
        args.rates, args.seconds = "2000", 0.3
    if os.geteuid() != 0:
        print("needs root (network namespace, live capture)", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",")]
    best: dict[int, int] = {}
    with veth_pair(ipv6=False) as pair, tempfile.TemporaryDirectory() as workdir:
        frames = frames_for(pair, args.payload)
        sender = Sender(pair, frames, args.sender, Path(workdir))
        print(f"veth, snaplen {args.snaplen}, buffer {args.buffer_mb} MiB, {len(frames[0])} B "
              f"frames, {FLOWS} flows, fanout hash, sender {args.sender}")  # fmt: skip
        print(f"{'workers':>7} {'target/s':>9} {'sent':>9} {'sent/s':>9} {'captured':>9} "
              f"{'drops':>8} {'lost':>7}")  # fmt: skip
        try:
            for workers in (int(w) for w in args.workers.split(",")):
                best[workers] = 0
                with Capture(pair.host_if, workers, args) as capture:
                    for rate in rates:
                        before = settled(capture.statuses)
                        sent, elapsed = sender.send(rate, args.seconds)
                        after = settled(capture.statuses)
                        captured = after.packets_captured - before.packets_captured
                        drops = after.kernel_drops - before.kernel_drops
                        lost = 1 - captured / sent if sent else 0.0
                        if captured == sent and rate > best[workers]:
                            best[workers] = int(sent / elapsed)
                        print(f"{workers:>7} {rate:>9} {sent:>9} {sent / elapsed:>9.0f} "
                              f"{captured:>9} {drops:>8} {lost:>7.2%}")  # fmt: skip
        finally:
            sender.close()
    for workers, rate in best.items():
        print(f"workers={workers}: highest rate with zero loss {rate}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
