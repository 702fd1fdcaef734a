"""`leireye flows` and `leireye hosts` as an operator runs them: a real process over a store
the real writer made, found through the config's state_dir."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leireye.config import load_config
from leireye.flows.model import Flow, HostMinute
from leireye.flows.store import FlowStoreWriter

SECOND = 10**9
NOW_NS = time.time_ns()


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    path = root / "leireye.yaml"
    path.write_text(f"state_dir: {root / 'state'}\nhistory:\n  dir: store\n")
    w = FlowStoreWriter(load_config(path).history_dir, flows_days=7, max_gb=1)
    flows = [
        Flow(uid=f"C{i}", vlan=None, transport="UDP" if i % 2 else "TCP", ip_version=4,
             orig_ip=f"10.0.0.{i}", orig_port=5000 + i, resp_ip="10.0.0.53", resp_port=53,
             app="DNS" if i % 2 else None, first_ns=NOW_NS - (60 - i) * SECOND,
             last_ns=NOW_NS - (30 - i) * SECOND, orig_pkts=1, orig_bytes=70 + i, resp_pkts=1,
             resp_bytes=90, conn_state="SF", history="Dd", end_reason="idle")
        for i in range(1, 11)
    ]  # fmt: skip
    w.add_flows(flows)
    minute = NOW_NS // (60 * SECOND) * 60 * SECOND
    w.add_minute([HostMinute(minute_ns=minute, ip="10.0.0.53", bytes_recv=900,
                             names=["dns.example"]),
                  HostMinute(minute_ns=minute, ip="10.0.0.77", bytes_recv=5, sensor="east")],
                 [])  # fmt: skip
    w.close()
    return path


def leireye(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leireye.cli", *args, "-c", str(config_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_flows_prints_conn_log_lines(config_path: Path) -> None:
    done = leireye(config_path, "flows", "--protocol", "dns", "--sort", "bytes")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    fields = lines[0].split("\t")
    assert fields[0] == "#fields" and fields[1:4] == ["ts", "uid", "id.orig_h"]
    rows = [dict(zip(fields[1:], line.split("\t"), strict=True)) for line in lines[1:]]
    assert [r["uid"] for r in rows] == ["C9", "C7", "C5", "C3", "C1"]
    assert rows[0]["proto"] == "udp" and rows[0]["service"] == "dns"
    assert rows[0]["duration"] == "30.000000" and rows[0]["vlan"] == "-"


def test_flows_json_limit_and_range(config_path: Path) -> None:
    start = str(NOW_NS // SECOND - 3600)
    done = leireye(config_path, "flows", "--json", "--limit", "3", "--from", start, "--asc")
    assert done.returncode == 0, done.stderr
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert [f["uid"] for f in found] == ["C1", "C2", "C3"]
    assert found[0]["resp_port"] == 53
    old = leireye(config_path, "flows", "--to", "2020-01-01T00:00:00Z")
    assert old.returncode == 0 and old.stdout.count("\n") == 1  # the #fields line alone


def test_hosts(config_path: Path) -> None:
    done = leireye(config_path, "hosts", "--json")
    assert done.returncode == 0, done.stderr
    host, other = [json.loads(line) for line in done.stdout.splitlines()]
    assert host["ip"] == "10.0.0.53" and host["names"] == ["dns.example"]
    assert other["ip"] == "10.0.0.77"
    text = leireye(config_path, "hosts").stdout.splitlines()
    assert text[1].split("\t")[0] == "10.0.0.53" and text[1].endswith("dns.example")
    east = leireye(config_path, "hosts", "--json", "--sensor", "east")  # a central's minutes
    assert [json.loads(line)["ip"] for line in east.stdout.splitlines()] == ["10.0.0.77"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("flows", "--ip", "10.0.0.1'; --"), "ip"),
        (("flows", "--state", "NOPE"), "state"),
        (("flows", "--from", "yesterday"), "--from"),
        (("flows", "--limit", "0"), "--limit"),
        (("hosts", "--sort", "uid"), "--sort"),
        (("hosts", "--sensor", "no.dots"), "sensor"),
    ],
)
def test_bad_options_are_one_line_of_error(
    config_path: Path, args: tuple[str, ...], said: str
) -> None:
    done = leireye(config_path, *args)
    assert done.returncode == 2
    assert said in done.stderr and "Traceback" not in done.stderr
