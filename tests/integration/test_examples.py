"""The scripts in examples/ against a real sensor on `lo`: each one runs as a user would run it
(a subprocess with LEIREYE_TOKEN set) and prints what it promises."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import dpkt
import dpkt.dns
import pytest

from tests.integration.test_js_client import needs_node, node_command
from tests.sensor import Sensor
from tests.traffic.payloads import Payloads
from tests.waiting import scaled

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    tmp = tmp_path_factory.mktemp("examples")
    s = Sensor(
        tmp, "--interface", "lo", "--bpf", "udp dst port 53 or tcp", config="web: {port: 0}\n"
    )
    s.web_port()
    s.wait_capturing(s.status())
    yield s
    s.kill()


def env_for(sensor: Sensor) -> dict[str, str]:
    token = subprocess.run(
        [sys.executable, "-m", "leireye.cli", "token", "--user", "admin", "-c",
         str(sensor.config_path)], capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    return {**os.environ, "LEIREYE_TOKEN": token, "PYTHONPATH": str(ROOT)}


def url(sensor: Sensor) -> str:
    return f"ws://127.0.0.1:{sensor.web_port()}/ws/capture"


def read_until(proc: subprocess.Popen[str], want: str, poke: object, timeout: float = 30) -> str:
    """Lines of `proc`'s stdout until one contains `want`; `poke()` (which sends the traffic the
    script waits for) is called before each wait, since the script may subscribe after the
    first try. Bounded by `timeout` (scaled)."""
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + scaled(timeout)
    seen = ""
    while time.monotonic() < deadline:
        poke()  # type: ignore[operator]
        step = time.monotonic() + 0.5
        while time.monotonic() < step:
            chunk = _read(proc.stdout)
            seen += chunk
            if want in seen:
                return seen
            if proc.poll() is not None:
                raise AssertionError(f"example exited {proc.returncode}: {seen}")
            time.sleep(0.02)
    raise AssertionError(f"no {want!r} in the example's output within {timeout}s: {seen!r}")


def _read(stream: IO[str]) -> str:
    try:
        return stream.read() or ""
    except (BlockingIOError, TypeError):
        return ""


def dns_query(name: str) -> None:
    query = dpkt.dns.DNS(id=4242, op=0x0100, qd=[dpkt.dns.DNS.Q(name=name, type=1)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(bytes(query), ("127.0.0.1", 53))


def test_dns_alert_reports_a_watched_domain(sensor: Sensor) -> None:
    cmd = [sys.executable, str(EXAMPLES / "dns_alert.py"), "--url", url(sensor), "evil.test"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(sensor))  # fmt: skip
    try:
        dns_query("fine.example.org")
        out = read_until(proc, "www.evil.test", lambda: dns_query("www.evil.test"))
        assert "ALERT 127.0.0.1" in out and "fine.example.org" not in out
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # reaps it and closes its pipes


def test_protocol_csv_writes_rows_per_second(sensor: Sensor, tmp_path: Path) -> None:
    output = tmp_path / "counts.csv"
    cmd = [sys.executable, str(EXAMPLES / "protocol_csv.py"), "--url", url(sensor),
           "--protocols", "UDP,TCP", "--seconds", "2", "-o", str(output)]  # fmt: skip
    subprocess.run(cmd, env=env_for(sensor), check=True, timeout=scaled(60), capture_output=True)
    rows = list(csv.reader(io.StringIO(output.read_text())))
    assert rows[0][:3] == ["timestamp", "packets_per_second", "bytes_per_second"]
    assert rows[0][3:] == ["UDP", "TCP"] and len(rows) == 3
    assert all(int(value) >= 0 for row in rows[1:] for value in row[1:])


@needs_node
def test_tls_sni_tails_client_hello_names(sensor: Sensor) -> None:
    command = node_command()
    assert command is not None
    hello = Payloads(7).client_hello("sni.leireye.test")

    def send_hello() -> None:
        with socket.create_server(("127.0.0.1", 0)) as server:
            port = server.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                conn, _ = server.accept()
                client.sendall(hello)
                conn.recv(65536)
                conn.close()

    proc = subprocess.Popen([*command, str(EXAMPLES / "tls_sni.mjs"), url(sensor)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(sensor), cwd=ROOT)  # fmt: skip
    try:
        out = read_until(proc, "sni.leireye.test", send_hello)
        assert "127.0.0.1 -> sni.leireye.test" in out
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # reaps it and closes its pipes
