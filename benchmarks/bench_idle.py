"""What an idle sensor costs: CPU of each process of a real `leireye run` on `lo` with light
traffic and no client.

    sudo .venv/bin/python benchmarks/bench_idle.py [--rate 25] [--seconds 5] [--workers 2]

Starts the sensor (`tests.sensor.Sensor`: `--interface lo --bpf "udp and dst port P"`,
`web.workers` from `--workers`), waits until it captures and every web worker serves, sends UDP
to 127.0.0.1:P at `--rate` packets/s for a 2 s warm-up and then for `--seconds`, and reads each
process's CPU time (utime + stime, /proc/PID/stat) before and after that window. Processes are
named by the supervisor's own log (`web-0 started pid=N`). Prints percent of one core per
process; with `--json FILE` writes the figures too. No client connects: the web workers' share
is what the sensor costs while nobody watches.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_ws import cpu_seconds, load_average
from benchmarks.e2e_common import need_root
from tests.sensor import Sensor, free_udp_port, send_udp
from tests.waiting import wait_for

STARTED = re.compile(r" (\S+) started pid=(\d+)")
WARM_UP_S = 2.0  # after every worker serves: its first ticks, the sender's start


def roles(sensor: Sensor) -> dict[str, int]:
    """Each child's role and pid, the latest start of each role (from the supervisor's log)."""
    found = {"supervisor": sensor.proc.pid}
    for line in list(sensor.lines):
        if match := STARTED.search(line):
            found[match.group(1)] = int(match.group(2))
    return found


def measure(rate: int, seconds: float, workers: int) -> dict[str, float]:
    port = free_udp_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = f"web: {{port: 0, workers: {workers}}}\nstats: {{log_interval_s: 0}}\n"
        sensor = Sensor(Path(tmp), "--interface", "lo", "--bpf", f"udp and dst port {port}",
                        config=config)  # fmt: skip
        try:
            sensor.wait_capturing(sensor.status())
            sensor.web_port()
            lines = [f"web worker {index} serving" for index in range(workers)]
            wait_for(lambda: all(line in sensor.log for line in lines), 60, "every worker to serve")
            total = int(rate * (WARM_UP_S + seconds + 1))
            sender = threading.Thread(target=send_udp, args=(port, total, b"idle", rate))
            sender.start()
            time.sleep(WARM_UP_S)  # a benchmark's window, not a wait for an event
            pids = roles(sensor)
            before = {role: cpu_seconds(pid) for role, pid in pids.items()}
            start = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - start
            after = {role: cpu_seconds(pid) for role, pid in pids.items()}
            sender.join()
        finally:
            sensor.stop()
    return {role: 100 * (after[role] - before[role]) / elapsed for role in pids}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=25, help="UDP packets per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window")
    parser.add_argument("--workers", type=int, default=2, help="web workers")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not need_root("bench_idle"):
        return 2
    print(f"load average before: {load_average()}")
    shares = measure(args.rate, args.seconds, args.workers)
    print(f"{args.rate} packets/s on lo, no client, {args.seconds:.0f} s: % of one core")
    for role, share in sorted(shares.items()):
        print(f"  {role:<12} {share:6.2f}")
    web = [share for role, share in shares.items() if role.startswith("web-")]
    if web:
        print(f"  {'web (mean)':<12} {sum(web) / len(web):6.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rate": args.rate, "seconds": args.seconds,
                                         "percent_of_core": shares}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
