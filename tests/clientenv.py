"""A live sensor for the client tests: capturing UDP to one port only, with a password user."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from leireye.accounts.tokens import issue_token, load_or_create_secret
from leireye.accounts.users import load_users
from leireye.config import load_config
from tests.sensor import Sensor, free_udp_port

PASSWORD = "correct horse battery staple"
FAST = (0.05, 0.1, 0.2, 0.5)  # backoff for tests: the spec's 1..30 s would only slow them down


class Live:
    """A sensor capturing UDP to one port only, so the ids of what a test sends are consecutive."""

    def __init__(self, tmp: Path, workers: int = 1) -> None:
        self.port = free_udp_port()
        config = f"web: {{port: 0, workers: {workers}}}\nauth: {{access_ttl_s: 10}}\n"
        bpf = f"udp and dst port {self.port}"
        self.sensor = Sensor(tmp, "--interface", "lo", "--bpf", bpf, config=config)
        self.web = self.sensor.web_port()
        self.sensor.wait_capturing(self.sensor.status())
        self.url = f"ws://127.0.0.1:{self.web}/ws/capture"
        conf = load_config(self.sensor.config_path)
        self.secret = load_or_create_secret(conf)
        users = load_users(self.sensor.state_dir / "users.yaml")
        self.admin = next(u for u in users if u.username == "admin")
        cmd = [sys.executable, "-m", "leireye.cli", "user", "add", "watcher", "--role", "VIEWER",
               "--password-stdin", "-c", str(self.sensor.config_path)]  # fmt: skip
        subprocess.run(cmd, input=f"{PASSWORD}\n", text=True, check=True, timeout=30)

    def token(self, ttl: int = 600) -> str:
        return issue_token(self.secret, self.admin, ttl, time.time())

    def ring_head(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web}/health", timeout=10) as r:
            return int(json.load(r)["ring"]["last_id"])

    def worker_pids(self) -> list[int]:
        return [int(line.split("pid=")[1]) for line in self.sensor.lines
                if "supervisor: web-" in line and "started pid=" in line]  # fmt: skip
