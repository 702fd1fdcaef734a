"""A live sensor for the client tests: capturing UDP to one port only, with a password user."""

from __future__ import annotations

import json
import ssl
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

    def __init__(self, tmp: Path, workers: int = 1, tls: str = "null") -> None:
        self.port = free_udp_port()
        web = f"{{port: 0, workers: {workers}, tls: {tls}}}"
        config = f"web: {web}\nauth: {{access_ttl_s: 10}}\n"
        bpf = f"udp and dst port {self.port}"
        self.sensor = Sensor(tmp, "--interface", "lo", "--bpf", bpf, config=config)
        self.web = self.sensor.web_port()
        self.sensor.wait_capturing(self.sensor.status())
        secure = tls not in ("null", "off")
        self.url = f"{'wss' if secure else 'ws'}://127.0.0.1:{self.web}/ws/capture"
        self.api = f"{'https' if secure else 'http'}://127.0.0.1:{self.web}"
        # With tls: the certificate as the only CA (the test's own HTTP checks it like a client).
        self.cafile = self.sensor.state_dir / "tls-cert.pem" if secure else None
        context = ssl.create_default_context(cafile=str(self.cafile)) if secure else None
        self.ssl_context = context
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
        request = urllib.request.Request(f"{self.api}/health")
        request.add_header("Authorization", f"Bearer {self.token()}")  # the details need one
        with urllib.request.urlopen(request, timeout=10, context=self.ssl_context) as r:
            return int(json.load(r)["ring"]["last_id"])

    def worker_pids(self) -> list[int]:
        return [int(line.split("pid=")[1]) for line in self.sensor.lines
                if "supervisor: web-" in line and "started pid=" in line]  # fmt: skip
