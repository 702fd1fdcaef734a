"""A fleet central's web tier served by a real uvicorn: records of two sensors in a real ring, a
real sensor table file, real WebSocket and HTTP clients. A user limited to one sensor never gets
a packet of the other, on any channel or endpoint; everyone else gets each packet's sensor."""

from __future__ import annotations

import asyncio
import csv
import io
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import uvicorn

from leireye.accounts.useredit import add_user, edit_users_file
from leireye.fleet.model import SENSOR_TABLE_FILE, SensorTable, write_sensor_table
from leireye.web.worker import uvicorn_config
from tests.http import Http, assert_error
from tests.inprocess import USER_PASSWORD, InProcessSensor, read_pcap
from tests.waiting import scaled, wait_for
from tests.wsclient import client, closed_with, recv, recv_type, send

MIXED = read_pcap("mixed.pcap")
NAMES = {0: "east", 1: "west"}


class Served:
    """The in-process sensor's app behind a real uvicorn (the worker's own settings), on a
    thread with its own event loop, on a port the kernel chose."""

    def __init__(self, sensor: InProcessSensor) -> None:
        self.server = uvicorn.Server(uvicorn_config(sensor.config, sensor.app))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True
        )
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "uvicorn to start")

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(scaled(20))
        self.sock.close()


def table(*states: dict[str, Any]) -> SensorTable:
    return msgspec.convert({"updated_ns": 1, "sensors": list(states)}, SensorTable)


def sensor_state(name: str, index: int, **kw: Any) -> dict[str, Any]:
    base = {"name": name, "index": index, "state": "live", "packets": 100 + index, "lost": index,
            "last_message_ns": 1_700_000_000_000_000_000, "bad_batches": 0,
            "stats": {"packets_total": 10 + index, "packets_per_second": 5 + index}}  # fmt: skip
    return {**base, **kw}


def write_two_sensors(sensor: InProcessSensor, start: int, count: int) -> np.ndarray:
    """`count` frames of mixed.pcap from `start`, alternately east's and west's, into the ring."""
    frames = MIXED.frames[start : start + count]
    records = type(MIXED)(MIXED.linktype, MIXED.ts_ns[start : start + count], frames).decode()
    records["sensor"] = np.resize(np.array([0, 1], dtype=np.uint16), len(records))
    first = sensor.writer.write(records, frames)
    records["seq"] = np.arange(first, first + len(records))
    return records


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessSensor, Served]]:
    state_dir: Path = tmp_path_factory.mktemp("central")
    sensor = InProcessSensor(state_dir, capacity=4096, central={"enabled": True})
    try:
        path = sensor.config.state_path(SENSOR_TABLE_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_sensor_table(path, table(sensor_state("east", 0), sensor_state("west", 1)))
        users = sensor.config.state_path(sensor.config.auth.users_file)
        edit_users_file(users, lambda u: add_user(u, "wes", "ANALYST", USER_PASSWORD, ["west"]))
        sensor.users_view.sync()
        sensor.capturing(MIXED, 0)
        served = Served(sensor)
        try:
            yield sensor, served
        finally:
            served.close()
    finally:
        sensor.close()


async def subscribe(ws: Any, token: str, **message: Any) -> dict[str, Any]:
    await send(ws, type="auth", token=token)
    await recv_type(ws, "auth_success")
    await send(ws, type="subscribe", channel="packets", **message)
    return await recv_type(ws, "subscribed")


async def packets_until(ws: Any, last_id: int) -> list[dict[str, Any]]:
    """Every packet up to the one with `last_id` (a ping's pong marks the end when the user
    gets none of the last ones: the server answers in order)."""
    got: list[dict[str, Any]] = []
    while True:
        message = await recv_type(ws, "packets")
        got += message["data"]
        if got and got[-1]["id"] >= last_id:
            return got


async def packets_before_pong(ws: Any) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while (message := await recv(ws))["type"] != "pong":
        if message["type"] in ("packet", "packets"):
            got += message["data"] if message["type"] == "packets" else [message["data"]]
    return got


def test_a_limited_user_gets_their_sensors_packets_only_live_and_replayed(
    central: tuple[InProcessSensor, Served],
) -> None:
    sensor, served = central
    url = f"ws://127.0.0.1:{served.port}/ws/capture"
    since = sensor.ring.write_seq
    early = write_two_sensors(sensor, 0, 40)  # before anyone subscribes: replayed with since
    written: dict[int, str] = {}

    async def go() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        async with client(url) as wes, client(url) as admin:
            echo = await subscribe(wes, sensor.token("wes"), since=since, options={"batch": True})
            assert echo["filters"] == {"sensor": "west"}
            await subscribe(admin, sensor.token("admin"), since=since, options={"batch": True})
            late = write_two_sensors(sensor, 40, 41)
            for records in (early, late):
                names = [NAMES[i] for i in records["sensor"].tolist()]
                written.update(zip(records["seq"].tolist(), names, strict=True))
            everything = await packets_until(admin, int(late["seq"][-1]))
            mine = await packets_until(wes, int(late["seq"][late["sensor"] == 1][-1]))
            # Whatever else was on its way to wes comes before the pong (one queue, in order).
            await send(wes, type="ping", id="end")
            mine += await packets_before_pong(wes)
            await send(wes, type="subscribe", channel="packets", filters={"sensor": "east"})
            refused = await recv_type(wes, "error")
            return everything, mine, refused

    everything, mine, refused = asyncio.run(go())
    assert [p["id"] for p in everything] == sorted(written)
    assert {p["sensor"] for p in everything} == {"east", "west"}
    assert all(p["sensor"] == written[p["id"]] for p in everything)
    assert {p["sensor"] for p in mine} == {"west"}
    assert [p["id"] for p in mine] == [p["id"] for p in everything if p["sensor"] == "west"]
    assert refused["code"] == "invalid_filter" and refused["field"] == "sensor"
    assert "'east' is not one you may see" in refused["message"]


def test_sensor_filters_and_the_central_status(central: tuple[InProcessSensor, Served]) -> None:
    sensor, served = central
    url = f"ws://127.0.0.1:{served.port}/ws/capture"
    sensor.publish_stats()

    async def go() -> dict[str, Any]:
        async with client(url) as ws:
            await send(ws, type="auth", token=sensor.token("wes"))
            await recv_type(ws, "auth_success")
            status = await recv_type(ws, "status")
            stats = await recv_type(ws, "stats", 5)
            async with client(url) as admin:
                await send(admin, type="auth", token=sensor.token("admin"))
                await recv_type(admin, "auth_success")
                admin_status = await recv_type(admin, "status")
                await send(admin, type="subscribe", channel="packets",
                           filters={"sensor": "no.such"})  # fmt: skip
                bad = await recv_type(admin, "error")
                echo = await subscribe(admin, sensor.token("admin"),
                                       filters={"sensor": ["west", "east", "north"]})  # fmt: skip
            return {"status": status, "stats": stats, "admin_status": admin_status, "bad": bad,
                    "echo": echo}  # fmt: skip

    got = asyncio.run(go())
    data = got["status"]["data"]
    assert data["central"] is True
    west = {"name": "west", "state": "live", "packets": 101, "lost": 1, "bad_batches": 0,
            "last_message_ms": 1_700_000_000_000}  # fmt: skip
    assert data["sensors"] == [west]
    assert got["stats"]["data"]["by_sensor"] == {"west": {"packets_total": 11,
                                                          "packets_per_second": 6}}  # fmt: skip
    assert [s["name"] for s in got["admin_status"]["data"]["sensors"]] == ["east", "west"]
    assert got["bad"]["code"] == "invalid_filter" and "not a sensor name" in got["bad"]["message"]
    # A name the table does not hold yet is accepted (it matches once the sensor appears).
    assert got["echo"]["filters"] == {"sensor": ["east", "north", "west"]}


def test_rest_packets_exports_sensors_and_metrics_follow_the_users_sensors(
    central: tuple[InProcessSensor, Served],
) -> None:
    sensor, served = central
    records = write_two_sensors(sensor, 0, 20)
    wes = Http(served.port, sensor.token("wes"))
    admin = Http(served.port, sensor.token("admin"))

    listed = wes.get("/api/capture/packets?limit=1000").json["packets"]
    assert listed and {p["sensor"] for p in listed} == {"west"}
    assert_error(wes.get("/api/capture/packets?sensor=east"), 400, "INVALID_FILTER")
    assert_error(admin.get("/api/capture/packets?sensor=bad.name"), 400, "INVALID_FILTER")
    east = admin.get("/api/capture/packets?sensor=east&limit=1000").json["packets"]
    assert east and {p["sensor"] for p in east} == {"east"}
    both = admin.get("/api/capture/packets?sensor=east,west&limit=1000").json["packets"]
    assert {p["sensor"] for p in both} == {"east", "west"}

    east_id = int(records["seq"][records["sensor"] == 0][-1])
    west_id = int(records["seq"][records["sensor"] == 1][-1])
    assert_error(wes.get(f"/api/capture/packets/{east_id}"), 404, "NOT_FOUND")
    assert wes.get(f"/api/capture/packets/{west_id}").json["summary"]["sensor"] == "west"
    assert admin.get(f"/api/capture/packets/{east_id}").json["summary"]["sensor"] == "east"

    exported = wes.get("/api/export/packets?format=csv")
    rows = list(csv.DictReader(io.StringIO(exported.body.decode())))
    assert rows and {r["sensor"] for r in rows} == {"west"}
    as_json = wes.get("/api/export/packets?format=json").json
    assert as_json and {p["sensor"] for p in as_json} == {"west"}

    sensors = wes.get("/api/sensors").json
    assert sensors["central"] is True and [s["name"] for s in sensors["sensors"]] == ["west"]
    assert sensors["sensors"][0]["stats"] == {"packets_total": 11, "packets_per_second": 6}
    assert [s["name"] for s in admin.get("/api/sensors").json["sensors"]] == ["east", "west"]
    assert_error(Http(served.port).get("/api/sensors"), 401, "AUTH_REQUIRED")

    metrics = wes.get("/metrics").body.decode()
    assert 'leireye_sensor_packets_total{sensor="west"} 101' in metrics
    assert 'sensor="east"' not in metrics
    assert 'leireye_sensor_up{sensor="east"} 1' in admin.get("/metrics").body.decode()

    for path in ("/api/flows/Cx/stream", "/api/stats/top"):
        assert_error(wes.get(path), 403, "FORBIDDEN")
    # hosts and the stored protocol chart are narrowed too (tests/fleet/test_central_minutes.py)
    assert wes.get("/api/hosts").json["total"] == 0
    assert_error(wes.get("/api/hosts?sensor=east"), 400, "INVALID_FILTER")
    # the flows list is narrowed to the user's sensors (tests/fleet/test_central_flows.py)
    assert wes.get("/api/flows").json["total"] == 0
    assert_error(wes.get("/api/flows/Cx"), 404, "NOT_FOUND")
    assert_error(wes.get("/api/flows?sensor=east"), 400, "INVALID_FILTER")


def test_leireye_watch_names_each_packets_sensor_and_takes_a_sensor_filter(
    central: tuple[InProcessSensor, Served],
) -> None:
    """`leireye watch` as a real subprocess against the central's uvicorn: `--since` replays
    what was written, `--sensor west` keeps west's packets, and each line names its sensor."""
    sensor, served = central
    since = sensor.ring.write_seq
    records = write_two_sensors(sensor, 0, 10)
    url = f"ws://127.0.0.1:{served.port}/ws/capture"

    def watch(*args: str) -> list[str]:
        command = [sys.executable, "-m", "leireye.cli", "watch", "--url", url,
                   "--token", sensor.token("admin"), "--since", str(since), *args]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=scaled(30))
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    west = watch("--sensor", "west", "--count", "5")
    assert len(west) == 5 and all(line.split()[1] == "west" for line in west), west
    both = watch("--sensor", "west,east", "--count", "10")
    expected = [NAMES[i] for i in records["sensor"].tolist()]
    assert [line.split()[1] for line in both] == expected


def test_a_lone_sensor_is_unchanged_and_refuses_sensor_filters(tmp_path: Path) -> None:
    sensor = InProcessSensor(tmp_path / "lone")
    try:
        sensor.write(MIXED, 5)
        token = sensor.token("admin")
        listed = sensor.http("GET", "/api/capture/packets", token=token).json["packets"]
        assert len(listed) == 5 and all("sensor" not in p for p in listed)
        refused = sensor.http("GET", "/api/capture/packets?sensor=east", token=token)
        body = assert_error(refused, 400, "INVALID_FILTER")
        assert "not a fleet central" in body["detail"]
        refused = sensor.http("GET", "/api/flows?sensor=east", token=token)
        assert "not a fleet central" in assert_error(refused, 400, "INVALID_FILTER")["detail"]
        assert sensor.http("GET", "/api/sensors", token=token).json["central"] is False
    finally:
        sensor.close()


def test_an_admin_limits_a_user_and_their_open_connection_ends(
    central: tuple[InProcessSensor, Served],
) -> None:
    sensor, served = central
    admin = Http(served.port, sensor.token("admin"))
    new = {"username": "val", "role": "VIEWER", "password": USER_PASSWORD,
           "sensors": ["west", "east"]}  # fmt: skip
    made = admin.post("/api/users", new)
    assert made.status == 201, made.body
    assert made.json["sensors"] == ["east", "west"]
    user_id = made.json["id"]
    bad = admin.request("PATCH", f"/api/users/{user_id}", {"sensors": ["no.dots"]})
    assert bad.status == 422, bad.body
    token = sensor.token("val")
    assert Http(served.port, token).get("/api/auth/me").json["sensors"] == ["east", "west"]
    url = f"ws://127.0.0.1:{served.port}/ws/capture"

    async def go() -> tuple[dict[str, Any], Any]:
        async with client(url) as ws:
            echo = await subscribe(ws, token)
            changed = await asyncio.to_thread(
                admin.request, "PATCH", f"/api/users/{user_id}", {"sensors": ["east"]}
            )
            assert changed.status == 200 and changed.json["sensors"] == ["east"], changed.body
            return echo, await closed_with(ws)

    echo, closed = asyncio.run(go())
    assert echo["filters"] == {"sensor": ["east", "west"]}
    assert closed[0] == 4001
    everyone = admin.request("PATCH", f"/api/users/{user_id}", {"sensors": None})
    assert everyone.status == 200 and "sensors" not in everyone.json


def test_metrics_count_the_records_of_this_run_not_the_ids_before_it(tmp_path: Path) -> None:
    """A central's ring continues the ids of its previous run (`base_id`): /metrics and /health
    count the records this run wrote, and give the last id as an id."""
    sensor = InProcessSensor(tmp_path / "again", capacity=64, base_id=1000,
                             central={"enabled": True})  # fmt: skip
    try:
        assert sensor.write(MIXED, 5) == [1001, 1002, 1003, 1004, 1005]
        token = sensor.token("admin")
        lines = sensor.http("GET", "/metrics", token=token).body.decode().splitlines()
        assert "leireye_ring_written_total 5" in lines
        assert f"leireye_ring_fill_ratio {5 / 64}" in lines
        ring = sensor.http("GET", "/health", token=token).json["ring"]
        assert (ring["last_id"], ring["fill"]) == (1005, round(5 / 64, 4))
    finally:
        sensor.close()
