"""A user limited to some sensors never gets the central's own totals, against real parts: a
real nats-server, two sensors' packet batches and stats messages published with nats-py in
the publisher's encoding, the real `leireye central` ingesting them, and its REST API and
WebSocket. The limited user's totals are their sensor's, everywhere; an unlimited user's are
the central's (docs/fleet-central.md, "Users limited to some sensors")."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from leireye.accounts.users import UsersFile, dump_users_file
from leireye.fleet.model import SENSOR_TABLE_FILE, read_sensor_table
from tests.accounts import make_user
from tests.fleet.natsutil_central import Fleet, nats_server
from tests.http import Http, assert_error
from tests.sensor import Sensor
from tests.waiting import wait_for
from tests.wsclient import client, recv_type, send

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the central drops root like a sensor"),
]

PASSWORD = "central-admin-1"
RAW = 128  # each record's wire length (natsutil_central.records)
EAST_STATS = {"packets_total": 1000, "bytes_total": 90000, "packets_per_second": 50,
              "bytes_per_second": 4000, "protocols": {"TCP": 40}, "apps": {"TLS": 30},
              "protocols_total": {"TCP": 900, "UDP": 100}, "apps_total": {"TLS": 800},
              "kernel_drops": 9, "if_drops": 0, "ring_lost": 0, "decode_errors": 4}  # fmt: skip
WEST_STATS = {"packets_total": 7, "bytes_total": 700, "packets_per_second": 2,
              "bytes_per_second": 200, "protocols": {"UDP": 2}, "apps": {"DNS": 2},
              "protocols_total": {"UDP": 7}, "apps_total": {"DNS": 7}, "kernel_drops": 1,
              "if_drops": 0, "ring_lost": 0, "decode_errors": 0,
              "top_sources": [{"address": "10.9.9.9", "packets": 7, "bytes": 700}]}  # fmt: skip


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with nats_server() as url:
        yield url


def start_central(tmp: Path, url: str) -> Sensor:
    config = (
        "ring: {capacity: 1024, raw_bytes: 64}\n"
        "central:\n"
        "  enabled: true\n"
        f"  nats: {{servers: ['{url}']}}\n"
        "  discover_s: 0.5\n"
        "  silent_after_s: 3600\n"  # both stay live for the test: rates count live sensors
        "  sensors: [east, west]\n"
    )
    limited = msgspec.structs.replace(make_user(2, "wes", "ANALYST", PASSWORD), sensors=("west",))
    users = (make_user(1, "admin", "ADMIN", PASSWORD), limited)
    text = dump_users_file(UsersFile(next_id=3, users=users))
    central = Sensor(tmp, config=config, users=text, command="central")
    central.web_port()
    return central


def login(central: Sensor, username: str) -> tuple[Http, str]:
    http = Http(central.web_port())
    reply = http.post("/api/auth/login", {"username": username, "password": PASSWORD})
    assert reply.status == 200, reply.body
    token = reply.json["access_token"]
    return http.with_token(token), token


async def first_messages(url: str, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    async with client(url) as ws:
        await send(ws, type="auth", token=token)
        await recv_type(ws, "auth_success")
        status = await recv_type(ws, "status")
        stats = await recv_type(ws, "stats", 5)
        return status["data"], stats["data"]


def test_a_limited_user_gets_their_sensors_totals_never_the_centrals(
    tmp_path: Path, nats_url: str
) -> None:
    fleet = Fleet(nats_url)
    fleet.create_streams("east", "west")
    central = start_central(tmp_path, nats_url)
    try:
        with central.explained():
            fleet.publish_many([
                fleet.batch("east", 1, 30, raw_bytes=RAW),
                fleet.batch("west", 1, 5, lost=2, raw_bytes=RAW),
                fleet.stats("east", **EAST_STATS),
                fleet.stats("west", **WEST_STATS),
            ])  # fmt: skip
            path = central.state_dir / SENSOR_TABLE_FILE

            def received() -> bool:
                table = read_sensor_table(path)
                got = {s.name: (s.packets, s.bytes, s.stats is not None)
                       for s in (table.sensors if table else ())}  # fmt: skip
                return got == {"east": (30, 30 * RAW, True), "west": (5, 5 * RAW, True)}

            wait_for(received, 20, "both sensors' packets and stats in the table")
            admin, admin_token = login(central, "admin")
            wes, wes_token = login(central, "wes")

            def counted() -> dict[str, Any] | None:  # the central's stats process read the ring
                reply = admin.get("/api/stats/summary").json
                return reply if reply["packets_total"] == 35 else None

            whole = wait_for(counted, 20, "the central's stats to count every record")
            assert whole["bytes_total"] == 35 * RAW

            mine = wes.get("/api/stats/summary").json
            assert (mine["packets_total"], mine["bytes_total"]) == (7, 700)
            assert (mine["packets_per_second"], mine["bytes_per_second"]) == (2, 200)
            assert (mine["kernel_drops"], mine["decode_errors"]) == (1, 0)
            assert "sensors)" not in mine["interface"] and "(2 sensors)" in whole["interface"]
            protocols = wes.get("/api/stats/protocols").json
            assert protocols["protocols"] == {"per_second": {"UDP": 2}, "total": {"UDP": 7}}
            assert protocols["applications"] == {"per_second": {"DNS": 2}, "total": {"DNS": 7}}
            assert admin.get("/api/stats/protocols").json["protocols"]["per_second"] != {"UDP": 2}

            status = wes.get("/api/capture/status").json
            assert (status["packets_captured"], status["bytes_captured"]) == (5, 5 * RAW)
            assert status["kernel_drops"] == 2  # west's lost ids
            whole_status = admin.get("/api/capture/status").json
            assert (whole_status["packets_captured"], whole_status["kernel_drops"]) == (35, 2)

            assert_error(wes.get("/api/stats/timeline"), 403, "FORBIDDEN")
            assert admin.get("/api/stats/timeline").status == 200
            health = wes.get("/health").json
            assert "ring" not in health and health["capture"]["packets_captured"] == 5
            assert admin.get("/health").json["ring"]["last_id"] == 35

            metrics = wes.get("/metrics").body.decode()
            assert f'leireye_sensor_bytes_total{{sensor="west"}} {5 * RAW}' in metrics
            for name in ("leireye_capture_packets_total", "leireye_ring_written_total",
                         "leireye_packets_per_second", "leireye_web_"):  # fmt: skip
                assert name not in metrics
            assert 'sensor="east"' not in metrics
            every = admin.get("/metrics").body.decode()
            assert "leireye_capture_packets_total 35" in every
            assert f'leireye_sensor_bytes_total{{sensor="east"}} {30 * RAW}' in every

            url = f"ws://127.0.0.1:{central.web_port()}/ws/capture"
            status, stats = asyncio.run(first_messages(url, wes_token))
            assert [s["name"] for s in status["sensors"]] == ["west"]
            assert (status["packets_captured"], status["kernel_drops"]) == (5, 2)
            assert "sensors)" not in status["interface"]
            assert list(stats["by_sensor"]) == ["west"]
            assert (stats["packets_total"], stats["bytes_total"]) == (7, 700)
            assert (stats["packets_per_second"], stats["bytes_per_second"]) == (2, 200)
            assert stats["protocols"] == {"UDP": 2} and stats["apps"] == {"DNS": 2}
            assert (stats["kernel_drops"], stats["decode_errors"]) == (1, 0)
            status, stats = asyncio.run(first_messages(url, admin_token))
            assert status["packets_captured"] == 35 and stats["packets_total"] == 35
            assert sorted(stats["by_sensor"]) == ["east", "west"]
    finally:
        central.kill()
