"""Shared pieces of the end-to-end benchmarks (`bench_e2e.py`, `bench_fanout_ws.py`).

Traffic is a generated realistic mix (`tests.traffic.mix.write_pcap`) replayed by tcpreplay
from inside a network namespace onto a veth pair the benchmark creates (`tests.netns.veth_pair`,
IPv6 off so the link carries nothing else): the sensor captures on the host end, where
`captured + kernel drops == sent` holds exactly. Nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_ws import USER, cpu_seconds, load_average, token
from leireye.capture.pcapfile import write_pcap
from leireye.record import LinkType
from tests.accounts import users_yaml
from tests.netns import VethPair
from tests.sensor import Sensor
from tests.traffic.mix import generate

__all__ = [
    "USER",
    "Replay",
    "cpu_seconds",
    "load_average",
    "percentile",
    "sensor_on",
    "token",
]

MIX_FRAMES = 50_000  # the pcap tcpreplay loops over
_STARTED = re.compile(r"(\S+) started pid=(\d+)")


def need_root(name: str) -> bool:
    if os.geteuid() != 0:
        print(f"{name}: live capture and network namespaces need root", file=sys.stderr)
        return False
    return True


def terminate_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, so the same `finally` blocks clean up as on Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def mix_pcap(frames: int = MIX_FRAMES, seed: int = 7) -> Path:
    """The realistic mix as a pcap, generated once and kept in /tmp. The 1 % of frames the mix
    cuts short (as a small snaplen would) are left out: on a link every frame is whole, and the
    kernel discards a frame cut inside its VLAN tag before any capture sees it."""
    path = Path(tempfile.gettempdir()) / f"leireye-bench-mix-{frames}-{seed}-whole.pcap"
    if not path.exists():
        mix = generate(frames, seed)
        whole = [i for i, frame in enumerate(mix.frames) if len(frame) == mix.wire_lens[i]]
        part = path.with_suffix(f".{os.getpid()}.part")
        write_pcap(
            part,
            [mix.ts_ns[i] for i in whole],
            [mix.wire_lens[i] for i in whole],
            [mix.frames[i] for i in whole],
            LinkType.EN10MB,
            65535,
        )
        part.rename(path)
    return path


# -- traffic ---------------------------------------------------------------------------------


def jumbo(pair: VethPair, mtu: int = 9000) -> None:
    """Raise the MTU of both ends: a veth drops a full-size frame carrying two VLAN tags (the
    mix has QinQ), which would make "sent" and "arrived" differ."""
    pair.run(["ip", "link", "set", "dev", pair.ns_if, "mtu", str(mtu)], check=True)
    subprocess.run(["ip", "link", "set", "dev", pair.host_if, "mtu", str(mtu)], check=True)


@dataclass(frozen=True)
class Replay:
    sent: int
    seconds: float
    failed: int

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def replay(
    pair: VethPair, pcap: Path, rate: int, count: int, frames_in_pcap: int = MIX_FRAMES
) -> Replay:
    """tcpreplay `count` frames of `pcap` (looped) at `rate` per second from the namespace end."""
    loops = math.ceil(1.1 * count / frames_in_pcap) + 1  # a few frames of the mix are left out
    cmd = ["tcpreplay", "-i", pair.ns_if, f"--pps={rate}", f"--limit={count}", "--no-flow-stats"]
    cmd += [f"--loop={loops}", "--preload-pcap", str(pcap)]
    res = pair.run(cmd, capture_output=True, text=True, timeout=60 + 3 * count / rate)
    if res.returncode != 0:
        raise RuntimeError(f"tcpreplay failed: {res.stderr.strip() or res.stdout.strip()}")
    actual = re.search(r"Actual: (\d+) packets .* sent in ([\d.]+) seconds", res.stdout)
    failed = re.search(r"Failed packets:\s+(\d+)", res.stdout)
    if actual is None:
        raise RuntimeError(f"cannot read tcpreplay's summary:\n{res.stdout}")
    return Replay(int(actual[1]), float(actual[2]), int(failed[1]) if failed else 0)


# -- the sensor --------------------------------------------------------------------------------


def sensor_on(
    interface: str, workers: int, tmp: Path, outbox: int = 4096, extra: str = ""
) -> Sensor:
    """A real `leireye run` capturing everything on `interface`, limits raised for benchmarks;
    `extra`: more YAML sections (e.g. `store: {enabled: false}`)."""
    config = (
        f"web: {{port: 0, workers: {workers}, outbox_messages: {outbox}}}\n"
        "stats: {log_interval_s: 0}\n"
        "limits: {connections_per_user: 5000, messages_per_second: 1000}\n"
        + (extra.strip() + "\n" if extra.strip() else "")
    )
    users = users_yaml({USER: ("ADMIN", "bench-password-1")})
    return Sensor(tmp, "--interface", interface, config=config, users=users)


def child_pids(sensor: Sensor) -> dict[str, int]:
    """role -> pid of the sensor's children (`capture`, `stats`, `web-0`, ...), from its log."""
    pids: dict[str, int] = {}
    for line in list(sensor.lines):
        if match := _STARTED.search(line):
            pids[match[1]] = int(match[2])
    return pids


def rss_kib(pid: int, field: str = "RssAnon") -> int:
    """Resident memory of `pid` in KiB. `RssAnon` by default: the process's own pages. VmRSS
    would also count every page of the shared ring the process has touched so far."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def scrape(base_url: str, bearer: str) -> dict[tuple[str, str], float]:
    """GET /metrics: {(name, labels): value}, labels as written (`worker="0"`)."""
    request = urllib.request.Request(f"{base_url}/metrics")
    request.add_header("Authorization", f"Bearer {bearer}")
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    samples: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        name, _, labels = head.partition("{")
        samples[(name, labels.rstrip("}"))] = float(value)
    return samples


def per_worker(samples: dict[tuple[str, str], float], name: str) -> dict[str, float]:
    """{worker: value} of one `leireye_web_*` family."""
    out: dict[str, float] = {}
    for (metric, labels), value in samples.items():
        if metric == name and (match := re.search(r'worker="([^"]*)"', labels)):
            out[match[1]] = value
    return out


def settled_status(status: Any, quiet_s: float = 0.4, timeout_s: float = 15.0) -> Any:
    """The capture status once captured + drops stopped moving for `quiet_s`."""
    last = status.read()
    since = deadline = time.monotonic()
    deadline += timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = status.read()
        if (now.packets_captured, now.kernel_drops) != (last.packets_captured, last.kernel_drops):
            since = time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
        last = now
    return last


# -- processes we start ------------------------------------------------------------------------


@contextlib.contextmanager
def started(cmd: list[str], **kw: Any) -> Iterator[subprocess.Popen[Any]]:
    """Popen in its own session; on exit SIGTERM, then SIGKILL, to that session only."""
    proc: subprocess.Popen[Any] = subprocess.Popen(cmd, start_new_session=True, **kw)
    try:
        yield proc
    finally:
        stop(proc, signal.SIGTERM)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGINT, wait_s: float = 10) -> int:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


# -- figures -----------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"results written to {path}")


def machine_line() -> str:
    return (
        f"{os.cpu_count()} cores, load average {load_average()}"
        " (figures taken while other work runs are noisy)"
    )
