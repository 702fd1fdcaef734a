"""A sensor capturing on the interface that carries its own console (`lo`) does not capture its
own web traffic: a login's password, a WebSocket's `?token=`, its own port, unless
`capture.include_own_traffic` says so. Real `leireye run`, real clients, real packets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dpkt
import pytest

from leireye.client.auth import PasswordLogin
from tests.accounts import users_yaml
from tests.http import Http
from tests.sensor import Sensor, free_udp_port, send_udp
from tests.waiting import wait_for
from tests.wsclient import client, recv, recv_type

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
]

PASSWORDS = {"admin": "self-capture-admin-pw-1", "ana": "self-capture-analyst-pw-2"}
ROLES = {"admin": "ADMIN", "ana": "ANALYST"}


def users() -> str:
    return users_yaml({name: (ROLES[name], password) for name, password in PASSWORDS.items()})


def wide_filter(udp_port: int) -> str:
    """Every TCP packet on `lo` (the web port included, as far as this filter goes), and UDP to
    the test's own port."""
    return f"tcp or (udp and dst port {udp_port})"


class Run:
    def __init__(self, tmp: Path, config: str = "") -> None:
        self.udp_port = free_udp_port()
        self.sensor = Sensor(tmp, "--interface", "lo", "--bpf", wide_filter(self.udp_port),
                             config=config, users=users())  # fmt: skip
        self.web = self.sensor.web_port()  # web.port: 0, the supervisor's bound port
        self.sensor.wait_capturing(self.sensor.status())
        self.base = f"http://127.0.0.1:{self.web}"

    def head(self) -> int:
        return int(Http(self.web).get("/health").json["ring"]["last_id"])

    def log_in_everyone(self) -> dict[str, str]:
        """The admin through the project's client, the analyst through urllib, and a WebSocket
        with its token in the URL: the traffic that leaked."""
        admin = asyncio.run(PasswordLogin(self.base, "admin", PASSWORDS["admin"]).token())
        reply = Http(self.web).post(
            "/api/auth/login", {"username": "ana", "password": PASSWORDS["ana"]}
        )
        assert reply.status == 200, reply.body
        tokens = {"admin": admin, "ana": reply.json["access_token"]}

        async def websocket() -> dict[str, Any]:
            url = f"ws://127.0.0.1:{self.web}/ws/capture?token={tokens['ana']}"
            async with client(url) as ws:
                assert (await recv(ws))["type"] == "auth_success"
                return dict((await recv_type(ws, "status"))["data"])

        self.ws_status = asyncio.run(websocket())
        return tokens

    def captured_since(self, analyst: Http, head: int, marker: bytes) -> tuple[list[Any], bytes]:
        """The packets listed and the pcap exported after ring id `head`, once the UDP datagrams
        the test sends behind the logins are in (so everything before them is, too)."""
        send_udp(self.udp_port, 3, payload=marker)

        def listed() -> list[Any] | None:
            page = analyst.get(f"/api/capture/packets?after={head}&limit=1000").json["packets"]
            mine = [p for p in page if p["dst_port"] == self.udp_port]
            return page if len(mine) == 3 else None

        page: list[Any] = wait_for(listed, 20, "the test's UDP datagrams in the ring")
        export = analyst.get(f"/api/export/packets?format=pcap&after={head}")
        assert export.status == 200
        return page, export.body


def tcp_ports(pcap_bytes: bytes) -> set[int]:
    found: set[int] = set()
    for _, frame in dpkt.pcap.Reader(_File(pcap_bytes)):
        ip = dpkt.ethernet.Ethernet(frame).data
        if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.tcp.TCP):
            found |= {ip.data.sport, ip.data.dport}
    return found


class _File:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    r = Run(tmp_path_factory.mktemp("self-capture"))
    yield r
    r.sensor.kill()


def assert_nothing_of_the_sensor(run: Run, page: list[Any], pcap_bytes: bytes) -> None:
    assert not [p for p in page if run.web in (p["src_port"], p["dst_port"])]
    assert run.web not in tcp_ports(pcap_bytes)
    for password in PASSWORDS.values():
        assert password.encode() not in pcap_bytes
    assert b"/api/auth/login" not in pcap_bytes and b"?token=" not in pcap_bytes


def test_the_sensor_does_not_capture_its_own_web_traffic(run: Run) -> None:
    with run.sensor.explained():
        head = run.head()
        tokens = run.log_in_everyone()
        analyst = Http(run.web, tokens["ana"])
        page, pcap_bytes = run.captured_since(analyst, head, b"self-capture-marker")
        assert_nothing_of_the_sensor(run, page, pcap_bytes)
        assert b"self-capture-marker" in pcap_bytes  # the capture works
        for packet in page:  # and no packet's details show the sensor's traffic either
            detail = analyst.get(f"/api/capture/packets/{packet['id']}")
            if detail.status == 200:  # (404: overwritten since, on a busy shared `lo`)
                raw = bytes.fromhex(detail.json["raw_hex"])
                assert not any(pw.encode() in raw for pw in PASSWORDS.values())

        status = analyst.get("/api/capture/status").json
        assert status["bpf"] == wide_filter(run.udp_port)
        assert status["effective_bpf"].startswith(f"({wide_filter(run.udp_port)}) and not (tcp")
        assert f"dst port {run.web} and (dst host 127.0.0.1)" in status["effective_bpf"]
        assert run.ws_status["effective_bpf"] == status["effective_bpf"]
        assert run.ws_status["bpf"] == status["bpf"]


def test_a_capture_started_from_the_api_leaves_it_out_too(run: Run) -> None:
    with run.sensor.explained():
        admin = Http(run.web, asyncio.run(PasswordLogin(run.base, "admin",
                                                        PASSWORDS["admin"]).token()))  # fmt: skip
        run.udp_port = free_udp_port()
        started = admin.post(
            "/api/capture/start", {"interface": "lo", "filter": wide_filter(run.udp_port)}
        )
        assert started.status == 200, started.body
        assert started.json["bpf"] == wide_filter(run.udp_port)
        assert f"dst port {run.web} and" in started.json["effective_bpf"]
        head = run.head()
        tokens = run.log_in_everyone()
        page, pcap_bytes = run.captured_since(Http(run.web, tokens["ana"]), head, b"again")
        assert_nothing_of_the_sensor(run, page, pcap_bytes)
        assert b"again" in pcap_bytes


def test_include_own_traffic_captures_the_sensors_traffic(tmp_path: Path) -> None:
    run = Run(tmp_path, config="capture: {include_own_traffic: true}\n")
    try:
        with run.sensor.explained():
            head = run.head()
            tokens = run.log_in_everyone()
            analyst = Http(run.web, tokens["ana"])
            page, pcap_bytes = run.captured_since(analyst, head, b"own-marker")
            assert [p for p in page if p["dst_port"] == run.web]
            assert run.web in tcp_ports(pcap_bytes)
            assert PASSWORDS["admin"].encode() in pcap_bytes  # what the default protects
            status = analyst.get("/api/capture/status").json
            assert status["effective_bpf"] == status["bpf"] == wide_filter(run.udp_port)
    finally:
        run.sensor.kill()
