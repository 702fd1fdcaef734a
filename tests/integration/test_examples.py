"""The scripts in examples/ against a real sensor on `lo`: each one runs as a user would run it
(a subprocess with LEIREYE_TOKEN set) and prints what it promises."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dpkt
import dpkt.dns
import pytest

from tests.integration.test_js_client import needs_node, node_command
from tests.lines import Lines
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


def dns_query(name: str) -> None:
    query = dpkt.dns.DNS(id=4242, op=0x0100, qd=[dpkt.dns.DNS.Q(name=name, type=1)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(bytes(query), ("127.0.0.1", 53))


def test_dns_alert_reports_a_watched_domain(sensor: Sensor) -> None:
    cmd = [sys.executable, str(EXAMPLES / "dns_alert.py"), "--url", url(sensor), "evil.test"]
    example = Lines(cmd, env=env_for(sensor))
    try:
        example.wait_line(example.err, "watching DNS")  # subscribed: every query is seen now
        dns_query("fine.example.org")
        dns_query("www.evil.test")
        alert = example.wait_line(example.out, "www.evil.test")
        assert alert == "ALERT 127.0.0.1 asked A www.evil.test"
        assert not any("fine.example.org" in line for line in example.out)
    finally:
        example.stop()


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

    example = Lines([*command, str(EXAMPLES / "tls_sni.mjs"), url(sensor)], env=env_for(sensor),
                    cwd=str(ROOT))  # fmt: skip
    try:
        example.wait_line(example.err, "# watching TLS")  # subscribed: every hello is seen now
        send_hello()
        line = example.wait_line(example.out, "sni.leireye.test")
        assert line.endswith(" 127.0.0.1 -> sni.leireye.test"), line
    finally:
        example.stop()
