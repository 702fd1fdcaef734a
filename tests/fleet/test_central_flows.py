"""Ended flows at a fleet central, against real parts: a real nats-server with JetStream, flows
messages published with nats-py in the publisher's own encoding (`flowmsg.encode_flows`, the
headers `side.py` sends), the real `leireye central` writing them into its flow store, and its
`/api/flows` over HTTP: every row with its `sensor`, the `sensor` filter, a user limited to one
sensor seeing that sensor's flows only."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from leireye.accounts.users import UsersFile, dump_users_file
from leireye.fleet.flowmsg import encode_flows
from leireye.fleet.model import H_RUN, MSG_ID, SENSOR_TABLE_FILE, read_sensor_table
from leireye.fleet.side import H_FLOW_CURSOR
from leireye.flows.model import Flow
from tests.accounts import make_user
from tests.fleet.natsutil_central import Fleet, nats_server
from tests.http import Http, assert_error
from tests.sensor import Sensor
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the central drops root like a sensor"),
]

PASSWORD = "central-admin-1"
SECOND = 10**9
T0 = (time.time_ns() // SECOND - 60) * SECOND  # recent: the store's retention keeps 7 days
RUN = T0 - 3600 * SECOND
SPAN = f"from={T0 // SECOND - 600}&to={T0 // SECOND + 600}"


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with nats_server() as url:
        yield url


def flow(uid: str, orig_ip: str, last_s: int, **changes: Any) -> Flow:
    values: dict[str, Any] = dict(
        uid=uid, vlan=None, transport="TCP", ip_version=4, orig_ip=orig_ip, orig_port=40000,
        resp_ip="192.0.2.80", resp_port=443, app="TLS", first_ns=T0 - 5 * SECOND,
        last_ns=T0 + last_s * SECOND, orig_pkts=3, orig_bytes=300, resp_pkts=4, resp_bytes=4000,
        conn_state="SF", history="ShADadFf", end_reason="fin", tls_sni=f"{uid}.example",
    )  # fmt: skip
    values.update(changes)
    return Flow(**values)


def flows_message(
    sensor: str, cursor: int, flows: list[Flow], missed: int = 0
) -> tuple[str, str, bytes, dict[str, str]]:
    """A `flows` message as the sensor's publisher sends it (side.SidePublisher._next_flows)."""
    headers = {
        MSG_ID: f"{sensor}:{RUN}:flows:{cursor}",
        H_RUN: str(RUN),
        H_FLOW_CURSOR: str(cursor),
    }
    return sensor, "flows", encode_flows(sensor, RUN, missed, flows), headers


def start_central(
    tmp: Path, url: str, sensors: str, flush_s: float = 1, state_dir: Path | None = None
) -> Sensor:
    """`sensors`: the central's `central.sensors` (the tests share one nats-server)."""
    config = (
        "ring: {capacity: 1024, raw_bytes: 64}\n"
        f"history: {{flush_s: {flush_s}}}\n"
        "central:\n"
        "  enabled: true\n"
        f"  nats: {{servers: ['{url}']}}\n"
        "  discover_s: 0.5\n"
        f"  sensors: [{sensors}]\n"
    )
    limited = msgspec.structs.replace(make_user(2, "wes", "ANALYST", PASSWORD), sensors=("west",))
    users = (make_user(1, "admin", "ADMIN", PASSWORD), limited)
    text = dump_users_file(UsersFile(next_id=3, users=users)) if state_dir is None else ""
    central = Sensor(tmp, config=config, users=text, command="central", state_dir=state_dir)
    central.web_port()
    return central


def login(central: Sensor, username: str) -> Http:
    http = Http(central.web_port())
    reply = http.post("/api/auth/login", {"username": username, "password": PASSWORD})
    assert reply.status == 200, reply.body
    return http.with_token(reply.json["access_token"])


def uids(reply: Any) -> dict[str, str | None]:
    assert reply.status == 200, reply.body
    return {row["uid"]: row.get("sensor", "ABSENT") for row in reply.json["flows"]}


def test_central_stores_every_sensors_flows_with_their_sensor(
    tmp_path: Path, nats_url: str
) -> None:
    fleet = Fleet(nats_url)
    fleet.create_streams("east", "west")
    central = start_central(tmp_path, nats_url, "east, west")
    try:
        with central.explained():
            fleet.publish_many([
                flows_message("east", 10, [flow("Ceast1", "10.1.0.1", 1),
                                           flow("Ceast2", "10.1.0.2", 2)], missed=2),
                flows_message("west", 4, [flow("Cwest1", "10.2.0.1", 3)]),
                ("west", "flows", b'{"sensor": "west", "flows": "no"}', None),  # counted, skipped
                flows_message("west", 9, [flow("Cwest2", "10.2.0.2", 4)], missed=1),
            ])  # fmt: skip
            path = central.state_dir / SENSOR_TABLE_FILE

            def counted() -> dict[str, tuple[int, int, int]] | None:
                table = read_sensor_table(path)
                got = {s.name: (s.flows, s.flows_missed, s.bad_batches)
                       for s in (table.sensors if table else ())}  # fmt: skip
                return got if got == {"east": (2, 2, 0), "west": (2, 1, 1)} else None

            wait_for(counted, 20, "the flows counted per sensor")
            admin = login(central, "admin")
            expected = {"Ceast1": "east", "Ceast2": "east", "Cwest1": "west", "Cwest2": "west"}

            def listed() -> dict[str, str | None] | None:
                got = uids(admin.get(f"/api/flows?{SPAN}&limit=100"))
                return got if len(got) == 4 else None

            assert wait_for(listed, 20, "the flows in the central's store") == expected
            whole = admin.get(f"/api/flows?{SPAN}&sensor=east").json
            assert whole["total"] == 2 and whole["live"] is False
            row = whole["flows"][0]
            assert row["sensor"] == "east" and row["active"] is False
            assert row["tls_sni"] == f"{row['uid']}.example" and row["bytes"] == 4300
            assert uids(admin.get(f"/api/flows?{SPAN}&sensor=west,east")) == expected
            assert uids(admin.get(f"/api/flows?{SPAN}&sensor=west&ip=10.2.0.2")) == {
                "Cwest2": "west"
            }
            assert uids(admin.get(f"/api/flows?{SPAN}&sensor=north")) == {}
            assert_error(admin.get(f"/api/flows?{SPAN}&sensor=no.dots"), 400, "INVALID_FILTER")
            one = admin.get("/api/flows/Cwest1")
            assert one.status == 200 and one.json["flow"]["sensor"] == "west", one.body
            metrics = admin.get("/metrics")
            assert metrics.status == 200, metrics.body
            assert 'leireye_sensor_flows_total{sensor="east"} 2' in metrics.body.decode()

            wes = login(central, "wes")
            assert uids(wes.get(f"/api/flows?{SPAN}")) == {"Cwest1": "west", "Cwest2": "west"}
            assert uids(wes.get(f"/api/flows?{SPAN}&sensor=west")) == {
                "Cwest1": "west",
                "Cwest2": "west",
            }
            refused = assert_error(wes.get(f"/api/flows?{SPAN}&sensor=east"), 400, "INVALID_FILTER")
            assert "east" in refused["detail"]
            theirs = wes.get("/api/flows/Cwest1")
            assert theirs.status == 200 and theirs.json["flow"]["sensor"] == "west", theirs.body
            assert theirs.json["packet_ids"] == []  # no packet of west's in the ring
            assert_error(wes.get("/api/flows/Ceast1"), 404, "NOT_FOUND")  # as if not there
            assert_error(wes.get("/api/flows/Cwest1/stream"), 403, "FORBIDDEN")
            assert wes.get(f"/api/hosts?{SPAN}").json["total"] == 0  # no minutes sent here
            files = list((central.state_dir / "flows" / "flows").rglob("*.parquet"))
            assert files and all(f.stat().st_mode & 0o777 == 0o640 for f in files)
    finally:
        central.kill()


def test_a_stopped_central_writes_the_flows_it_held_and_resumes_after_them(
    tmp_path: Path, nats_url: str
) -> None:
    fleet = Fleet(nats_url)
    fleet.create_streams("north")
    central = start_central(tmp_path, nats_url, "north", flush_s=3600)  # held until the stop
    second: Sensor | None = None
    try:
        with central.explained():
            fleet.publish_many([flows_message("north", 1, [flow("Cn1", "10.3.0.1", 1)])])
            path = central.state_dir / SENSOR_TABLE_FILE

            def received() -> bool:
                table = read_sensor_table(path)
                return table is not None and [s.flows for s in table.sensors] == [1]

            wait_for(received, 20, "the first flow received")
            assert not list((central.state_dir / "flows").rglob("*.parquet"))  # still held
        assert central.stop(signal.SIGINT) == 0
        assert central.proc.stderr is not None and not central.late_imports()
        central.proc.stderr.close()
        assert list((central.state_dir / "flows" / "flows").rglob("*.parquet"))

        fleet.publish_many([flows_message("north", 2, [flow("Cn2", "10.3.0.2", 2)])])
        second = start_central(tmp_path, nats_url, "north", state_dir=central.state_dir)
        with second.explained():
            admin = login(second, "admin")

            def both() -> dict[str, str | None] | None:
                got = uids(admin.get(f"/api/flows?{SPAN}"))
                return got if len(got) >= 2 else None

            assert wait_for(both, 20, "both flows") == {"Cn1": "north", "Cn2": "north"}
            assert admin.get(f"/api/flows?{SPAN}").json["total"] == 2  # none read twice
            assert admin.get(f"/api/flows?{SPAN}").json["lost"] == {}
    finally:
        (second or central).kill()
