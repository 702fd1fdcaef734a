"""The flow store read by a real `leireye run`'s web workers: they run as `web.user`, read a
store written by the flow process's user through the store's group permissions, query DuckDB
on a thread after dropping root, and import nothing late."""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Iterator

import pytest

from leireye.flows.model import AppMinute, Flow, HostMinute
from leireye.flows.store import FlowStoreWriter, prepare_history_dir
from tests.accounts import users_yaml
from tests.http import Http
from tests.sensor import Sensor

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the workers drop to web.user"),
]

SECOND = 10**9


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    users = users_yaml({"vic": ("VIEWER", "viewer-pass-3")})
    s = Sensor(tmp_path_factory.mktemp("flows"), "--interface", "lo", "--bpf", "udp port 9",
               users=users)  # fmt: skip
    try:
        s.web_port()
        yield s
    finally:
        s.kill()


def test_workers_read_the_store_as_the_web_user(sensor: Sensor) -> None:
    now = time.time_ns()
    minute = now // (60 * SECOND) * 60 * SECOND
    directory = sensor.state_dir / "flows"
    # What the supervisor and the flow process do: the directory made as root for the writer's
    # user and the web user's group, then files written (here by root, handed over after).
    writer = FlowStoreWriter(directory, flows_days=7, max_gb=1)
    writer.add_flows(
        [Flow(uid="Cint1", vlan=None, transport="UDP", ip_version=4, orig_ip="10.1.0.1",
              orig_port=5353, resp_ip="10.1.0.2", resp_port=53, app="DNS",
              first_ns=now - 5 * SECOND, last_ns=now - SECOND, orig_pkts=1, orig_bytes=80)]
    )  # fmt: skip
    writer.add_minute([HostMinute(minute_ns=minute, ip="10.1.0.1", bytes_sent=80)],
                      [AppMinute(minute_ns=minute, app="DNS", packets=1, bytes=80)])  # fmt: skip
    writer.close()
    prepare_history_dir(directory, pwd.getpwnam("leireye"), pwd.getpwnam("leireye-web").pw_gid)
    for path in directory.rglob("*.parquet"):
        assert path.stat().st_gid == pwd.getpwnam("leireye-web").pw_gid
        assert path.stat().st_mode & 0o007 == 0

    http = Http(sensor.web_port())
    login = http.post("/api/auth/login", {"username": "vic", "password": "viewer-pass-3"})
    http = Http(sensor.web_port(), login.json["access_token"])
    since = str(now // SECOND - 3600)
    flows = http.get(f"/api/flows?from={since}&ip=10.1.0.0/24")
    assert flows.status == 200, flows.body
    assert [f["uid"] for f in flows.json["flows"]] == ["Cint1"]
    assert http.get("/api/flows/Cint1").json["flow"]["app"] == "DNS"
    assert http.get(f"/api/hosts?from={since}").json["total"] == 1
    assert http.get(f"/api/hosts/10.1.0.1?from={since}").status == 200
    chart = http.get(f"/api/stats/protocols?from={since}&step=3600")
    assert chart.status == 200 and chart.json["intervals"][0]["apps"]["DNS"]["bytes"] == 80
    assert not sensor.late_imports(), sensor.late_imports()
