"""Login and ticket storms against a live sensor: the supervisor's memory and threads, and how
long a legitimate login takes meanwhile.

    sudo .venv/bin/python benchmarks/bench_login_storm.py [--attackers 150] [--seconds 10]
        [--tickets 5000] [--json FILE]

A real `leireye run` (2 web workers, default `auth.*`) on loopback. The users file holds one
user with a legacy scrypt hash (so the same script measures a sensor from before argon2id; the
current one upgrades it at the warm-up login).

1. Login storm: `--attackers` threads, each bound to its own 127.0.1.x address, send failed
   logins back to back for `--seconds` (a fresh unknown name each time, which costs a
   verification like a wrong password), ignoring `Retry-After`. Meanwhile the legitimate user
   logs in once a second from the address it logged in from before (a *known* pair) and from
   a new address each time, and the same login goes straight to the supervisor's control
   socket (its share of the time, without the web workers).
2. Ticket storm: `--tickets` WebSocket handshakes with made-up `?ticket=` values, 200 at a
   time; the legitimate user logs in once a second meanwhile.

Reported: the supervisor's VmRSS before, at its peak and after each storm, its peak thread
count (sampled from /proc every 5 ms), the answers to the attackers, and each legitimate
login's status and latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import http.client
import json
import multiprocessing
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import connect

from leireye.accounts.users import new_generation
from tests.sensor import Sensor

PASSWORD = "legitimate-user-pw"
ATTACK_PROCS = 4


def legacy_users_file() -> str:
    salt = b"bench-login-salt"
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    encoded, salt_text = base64.b64encode(digest).decode(), base64.b64encode(salt).decode()
    return (f"next_id: 2\nusers:\n  - {{id: 1, username: admin, role: ADMIN, password_hash: "
            f"'scrypt$16384$8$1${encoded}', salt: '{salt_text}', "
            f"generation: '{new_generation()}'}}\n")  # fmt: skip


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} for {pid}")


class Sampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss_kib = self.threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.rss_kib = max(self.rss_kib, status_field(self.pid, "VmRSS"))
            self.threads = max(self.threads, status_field(self.pid, "Threads"))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def login(port: int, user: str, password: str, source: str) -> tuple[int, float]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120, source_address=(source, 0))
    try:
        body = json.dumps({"username": user, "password": password})
        conn.request("POST", "/api/auth/login", body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        reply.read()
        return reply.status, time.perf_counter() - started
    except OSError:
        return 0, time.perf_counter() - started
    finally:
        conn.close()


def control_login(control: Path) -> tuple[int, float]:
    """The supervisor's share: the same login sent straight to the control socket, as a web
    worker sends it (one JSON line, one reply line)."""
    started = time.perf_counter()
    request = {"op": "login", "username": "admin", "password": PASSWORD, "address": "127.0.0.1"}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(120)
        try:
            sock.connect(str(control))
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = json.loads(sock.makefile("rb").readline() or b"{}")
        except (OSError, ValueError):
            return 0, time.perf_counter() - started
    status = 200 if reply.get("ok") else int(reply.get("status", 0))
    return status, time.perf_counter() - started


def legit_logins(
    port: int, control: Path, stop: threading.Event, out: list[dict[str, Any]]
) -> None:
    fresh = 0
    while not stop.is_set():
        status, seconds = login(port, "admin", PASSWORD, "127.0.0.1")
        out.append({"from": "known", "status": status, "s": round(seconds, 3)})
        fresh += 1
        status, seconds = login(port, "admin", PASSWORD, f"127.0.2.{fresh}")
        out.append({"from": "new", "status": status, "s": round(seconds, 3)})
        status, seconds = control_login(control)
        out.append({"from": "control", "status": status, "s": round(seconds, 3)})
        stop.wait(1.0)


def attack(port: int, first: int, count: int, until: float, answers: Any) -> None:
    """One attacking process: `count` threads, addresses 127.0.1.(first+1)..., until `until`."""
    tally: Counter[int] = Counter()
    lock = threading.Lock()

    def one(index: int) -> None:
        attempt = 0
        while time.time() < until:
            attempt += 1
            status, _ = login(port, f"x{index}-{attempt}", "wrong guess", f"127.0.1.{index + 1}")
            with lock:
                tally[status] += 1

    threads = [threading.Thread(target=one, args=(first + i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answers.put(dict(tally))


def login_storm(port: int, control: Path, attackers: int, seconds: float) -> dict[str, Any]:
    """The attackers run in processes of their own, so their threads do not hold the GIL the
    legitimate login's timing runs under."""
    until = time.time() + 0.5 + seconds
    answers: multiprocessing.Queue[dict[int, int]] = multiprocessing.Queue()
    share = -(-attackers // ATTACK_PROCS)
    procs = [
        multiprocessing.Process(
            target=attack, args=(port, first, min(share, attackers - first), until, answers)
        )
        for first in range(0, attackers, share)
    ]
    for proc in procs:
        proc.start()
    time.sleep(0.5)  # a measurement pause: let the storm build before measuring the user
    stop = threading.Event()
    legit: list[dict[str, Any]] = []
    watcher = threading.Thread(target=legit_logins, args=(port, control, stop, legit))
    watcher.start()
    total: Counter[int] = Counter()
    for _ in procs:
        total.update(answers.get())
    stop.set()
    watcher.join()
    for proc in procs:
        proc.join()
    return {"attacker_answers": dict(total), "legit": legit}


def quiet(port: int, control: Path, rounds: int = 5) -> dict[str, Any]:
    """The reference: the same legitimate logins with no storm."""
    stop = threading.Event()
    legit: list[dict[str, Any]] = []
    watcher = threading.Thread(target=legit_logins, args=(port, control, stop, legit))
    watcher.start()
    while len(legit) < 3 * rounds:
        time.sleep(0.1)
    stop.set()
    watcher.join()
    return {"legit": legit}


async def bogus_handshakes(port: int, count: int) -> Counter[str]:
    limit = asyncio.Semaphore(200)
    outcomes: Counter[str] = Counter()

    async def one(i: int) -> None:
        async with limit:
            url = f"ws://127.0.0.1:{port}/ws/capture?ticket=bogus-{i:06d}-xxxxxxxxxxxxxxxxxxxxxxxxx"
            try:
                async with connect(url, open_timeout=60, close_timeout=10) as ws:
                    first = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    outcomes[first["type"]] += 1
            except Exception as exc:  # a refused or dropped handshake: counted by kind
                outcomes[type(exc).__name__] += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return outcomes


def ticket_storm(port: int, control: Path, count: int) -> dict[str, Any]:
    stop = threading.Event()
    legit: list[dict[str, Any]] = []
    watcher = threading.Thread(target=legit_logins, args=(port, control, stop, legit))
    watcher.start()
    outcomes = asyncio.run(bogus_handshakes(port, count))
    stop.set()
    watcher.join()
    return {"handshakes": dict(outcomes), "legit": legit}


def summary(legit: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for origin in ("known", "new", "control"):
        rows = [r for r in legit if r["from"] == origin]
        if rows:
            result[origin] = {
                "statuses": dict(Counter(r["status"] for r in rows)),
                "median_s": round(statistics.median(r["s"] for r in rows), 3),
                "max_s": max(r["s"] for r in rows),
            }
    return result


def measured(pid: int, storm: Any) -> dict[str, Any]:
    before = status_field(pid, "VmRSS")
    threads_before = status_field(pid, "Threads")
    with Sampler(pid) as sampler:
        result: dict[str, Any] = storm()
    time.sleep(1.0)  # a measurement pause: what the supervisor keeps once the storm is over
    result.update(
        rss_before_mib=round(before / 1024, 1),
        rss_peak_mib=round(sampler.rss_kib / 1024, 1),
        rss_after_mib=round(status_field(pid, "VmRSS") / 1024, 1),
        threads_before=threads_before,
        threads_peak=sampler.threads,
    )
    result["legit_summary"] = summary(result.pop("legit"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attackers", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tickets", type=int, default=5000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-login-"))
    sensor = Sensor(tmp, "--interface", "lo", "--bpf", "udp and dst port 9",
                    config="web: {port: 0, workers: 2}\n", users=legacy_users_file())  # fmt: skip
    try:
        port = sensor.web_port()
        warm = login(port, "admin", PASSWORD, "127.0.0.1")
        assert warm[0] == 200, f"warm-up login answered {warm[0]}"
        pid = sensor.proc.pid
        control = sensor.state_dir / "control.sock"
        report = {
            "quiet": measured(pid, lambda: quiet(port, control)),
            "login_storm": measured(
                pid, lambda: login_storm(port, control, args.attackers, args.seconds)
            ),
            "ticket_storm": measured(pid, lambda: ticket_storm(port, control, args.tickets)),
        }
    finally:
        sensor.kill()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
