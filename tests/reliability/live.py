"""Helpers for the reliability suite's live tests: a sensor with known users, tokens, the pids of
its processes (read back from the supervisor's log) and their memory (from /proc)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import accounts
from tests.http import Http
from tests.sensor import Sensor
from tests.waiting import wait_for

ROOT_ONLY = [
    pytest.mark.reliability,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
]
PASSWORD = "reliability-pass-1"
_STARTED = re.compile(r"supervisor: (\S+) started pid=(\d+)")


def users_yaml(names: dict[str, str]) -> str:
    """A users file: name -> role, ids from 1 in order, every user with PASSWORD."""
    return accounts.users_yaml({name: (role, PASSWORD) for name, role in names.items()})


def start(tmp: Path, bpf: str, users: dict[str, str], config: str = "") -> Sensor:
    sensor = Sensor(tmp, "--interface", "lo", "--bpf", bpf, config=config, users=users_yaml(users))
    sensor.web_port()
    sensor.wait_capturing(sensor.status())
    return sensor


def cli_token(sensor: Sensor, user: str, ttl: int | None = None) -> str:
    """A token from `leireye token`, as a script user gets one."""
    cmd = [sys.executable, "-m", "leireye.cli", "token", "--user", user]
    cmd += ["-c", str(sensor.config_path), *(["--ttl", str(ttl)] if ttl else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.strip()


def login(sensor: Sensor, user: str) -> dict[str, str]:
    reply = Http(sensor.web_port()).post(
        "/api/auth/login", {"username": user, "password": PASSWORD}
    )
    assert reply.status == 200, reply.body
    pair: dict[str, str] = reply.json
    return pair


def started_pids(sensor: Sensor) -> dict[str, list[int]]:
    """role ("capture", "stats", "web-0", ...) -> every pid it was started with, in order."""
    found: dict[str, list[int]] = {}
    for line in list(sensor.lines):
        if match := _STARTED.search(line):
            found.setdefault(match.group(1), []).append(int(match.group(2)))
    return found


def current_pids(sensor: Sensor) -> dict[str, int]:
    """role -> its latest pid."""
    return {role: pids[-1] for role, pids in started_pids(sensor).items()}


def wait_roles(sensor: Sensor, workers: int) -> dict[str, int]:
    roles = {"capture", "stats", *(f"web-{i}" for i in range(workers))}
    found: dict[str, int] = wait_for(
        lambda: (pids := current_pids(sensor)) and roles <= set(pids) and pids,
        30,
        "every child to start",
    )
    wait_for(lambda: sum("serving on fd" in line for line in sensor.lines) >= workers, 30,
             "the web workers to serve")  # fmt: skip
    return found


def rss_kb(pid: int, kind: str = "VmRSS") -> int:
    """Resident memory of a live process, in KiB: `VmRSS` (all of it), `RssAnon` (its private
    heap: what a leak grows), `RssShmem` (the shared-memory segments it touched, which grow
    as the ring fills until it wraps) or `RssFile`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {kind} for pid {pid}")


def web_rss_kb(sensor: Sensor) -> dict[str, int]:
    return {role: rss_kb(pid) for role, pid in current_pids(sensor).items() if role[:4] == "web-"}


def health_ok(sensor: Sensor) -> bool:
    reply = Http(sensor.web_port()).get("/health", timeout=5)
    return reply.status == 200 and reply.json["status"] == "ok"
