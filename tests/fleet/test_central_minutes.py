"""Host and application minutes over a fleet, against real parts: a real sensor (veth pair,
its flow process, its publisher with packet publishing off) and a real `leireye central`
sharing a real nats-server. After traffic, the central's /api/hosts, /api/hosts/{ip} and
/api/stats/protocols show the sensor's own minutes (the counts its flow store holds), each
with its sensor; a user limited to another sensor sees none of them; a minutes message naming
another sensor is refused whole and counted; a killed publisher's successor sends the minutes
that came after, none twice."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leireye.fleet.minutemsg import encode_minutes
from leireye.fleet.model import H_CONTENT, MINUTES, MSG_ID, SENSOR_TABLE_FILE, read_sensor_table
from leireye.fleet.status import StatusPage
from leireye.flows.history import FlowHistory
from leireye.flows.model import HostMinute
from tests.fleet.natsutil_central import Fleet, nats_server
from tests.fleet.test_central_flows import login, start_central
from tests.http import assert_error
from tests.netns import VethPair, inject_frames, udp_frame, veth_pair
from tests.sensor import Sensor
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a sensor captures on a veth pair as root"),
]

PORT = 9998
SECOND = 10**9
FRAMES = 40


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with nats_server() as url:
        yield url


@pytest.fixture
def pair() -> Iterator[VethPair]:
    with veth_pair(ipv6=False) as pair:
        yield pair


def test_the_central_shows_a_sensors_hosts_and_protocols(
    tmp_path: Path, nats_url: str, pair: VethPair
) -> None:
    Fleet(nats_url).create_streams("west")
    central = start_central(tmp_path, nats_url, "east, west")
    sensor = Sensor(
        tmp_path, "--interface", pair.host_if, "--bpf", f"udp and dst port {PORT}",
        config=(
            "history: {flush_s: 1}\n"
            "flows: {idle_timeout_s: {udp: 1}}\n"
            "fleet: {enabled: true, sensor: east, publish: {packets: false},"
            f" nats: {{servers: ['{nats_url}']}}}}\n"
        ),
    )  # fmt: skip
    try:
        sensor.wait_capturing(sensor.status())
        start_s = time.time_ns() // SECOND - 120
        frames = [udp_frame(pair, 20000 + i % 4, PORT, b"minute %d" % i) for i in range(FRAMES)]
        inject_frames(pair.ns_if, frames, ns=pair.ns)
        span = f"from={start_s}&to={start_s + 600}"
        # the sensor's own store: its closed minutes (the quiet minute closes 5 s past its end)
        own = FlowHistory(sensor.state_dir / "flows")

        def stored(packets: int = FRAMES) -> dict[str, Any] | None:
            rows, _ = own.hosts(start_s * SECOND, (start_s + 600) * SECOND)
            found = {r["ip"]: r for r in rows}
            sender = found.get(pair.ns_ip)
            return found if sender and sender["pkts_sent"] == packets else None

        with sensor.explained(), central.explained():
            expected = wait_for(stored, 120, "the sensor's minutes in its own store")
            assert expected[pair.ns_ip]["bytes_sent"] == sum(len(f) for f in frames)
            assert expected[pair.host_ip]["pkts_recv"] == FRAMES
            admin = login(central, "admin")

            def listed() -> dict[str, Any] | None:
                reply = admin.get(f"/api/hosts?{span}")
                assert reply.status == 200, reply.body
                rows = {r["ip"]: r for r in reply.json["hosts"]}
                return rows if rows.keys() == expected.keys() else None

            try:
                hosts = wait_for(listed, 60, "the sensor's hosts at the central")
            except AssertionError as exc:  # say how far the minutes got
                page = StatusPage.attach(f"{sensor.name}-fleet")
                sent = page.read()
                page.close()
                table = read_sensor_table(central.state_dir / SENSOR_TABLE_FILE)
                raise AssertionError(
                    f"{exc}\npublisher: minutes_sent={sent.minutes_sent} missed="
                    f"{sent.minutes_missed} error={sent.last_error!r}\ncentral: {table}"
                ) from exc
            keys = ("pkts_sent", "bytes_sent", "pkts_recv", "bytes_recv", "first_ns", "last_ns")
            for ip, row in expected.items():
                assert {k: hosts[ip][k] for k in keys} == {k: row[k] for k in keys}
                assert hosts[ip]["sensors"] == ["east"]
            by_east = admin.get(f"/api/hosts?{span}&sensor=east").json
            assert by_east["total"] == len(expected) and by_east["live"] is None
            assert admin.get(f"/api/hosts?{span}&sensor=west").json["total"] == 0

            one = admin.get(f"/api/hosts/{pair.ns_ip}?{span}&step=60")
            assert one.status == 200, one.body
            assert one.json["summary"]["pkts_sent"] == FRAMES
            assert sum(r["bytes"] for r in one.json["series"]) == sum(len(f) for f in frames)
            assert {r["app"] for r in one.json["series"]} == {"UDP"}
            assert {p["ip"] for p in one.json["peers"]} == {pair.host_ip}  # from the flows

            def charted() -> dict[str, int] | None:
                reply = admin.get(f"/api/stats/protocols?{span}&step=60")
                assert reply.status == 200, reply.body
                apps: dict[str, int] = {}
                for interval in reply.json["intervals"]:
                    for label, counts in interval["apps"].items():
                        apps[label] = apps.get(label, 0) + counts["packets"]
                return apps or None

            assert wait_for(charted, 30, "the protocol chart") == {"UDP": FRAMES}

            wes = login(central, "wes")  # limited to west
            theirs = wes.get(f"/api/hosts?{span}")
            assert theirs.status == 200, theirs.body
            assert (theirs.json["hosts"], theirs.json["total"]) == ([], 0)
            assert_error(wes.get(f"/api/hosts?{span}&sensor=east"), 400, "INVALID_FILTER")
            assert_error(wes.get(f"/api/hosts/{pair.ns_ip}?{span}"), 404, "NOT_FOUND")
            chart = wes.get(f"/api/stats/protocols?{span}&step=60")
            assert chart.status == 200 and chart.json["intervals"] == [], chart.body

            # a minutes message on west's subject with a row of east's: refused whole, counted
            row = HostMinute(minute_ns=start_s // 60 * 60 * SECOND, ip="10.9.9.9", pkts_sent=1)
            body = encode_minutes("west", 0, [row], []).replace(
                b'"sensor":"west"}]', b'"sensor":"east"}]'
            )
            headers = {MSG_ID: "west:minutes:forged:0", H_CONTENT: MINUTES}
            Fleet(nats_url).publish_many([("west", "flows", body, headers)])
            path = central.state_dir / SENSOR_TABLE_FILE

            def counted() -> dict[str, tuple[int, int]] | None:
                table = read_sensor_table(path)
                got = {s.name: (s.minutes, s.bad_batches) for s in table.sensors} if table else {}
                return got if got.get("west") == (0, 1) else None

            table = wait_for(counted, 20, "the forged minutes message counted")
            assert table["east"][0] > 0 and table["east"][1] == 0
            assert admin.get(f"/api/hosts/10.9.9.9?{span}").status == 404
            page = StatusPage.attach(f"{sensor.name}-fleet")
            try:

                def arrived() -> bool:  # every row the publisher sent, received once
                    table = read_sensor_table(path)
                    east = [s.minutes for s in table.sensors if s.name == "east"] if table else []
                    return east == [page.read().minutes_sent]

                wait_for(arrived, 20, "the rows sent, received")
                assert page.read().minutes_missed == 0

                # the publisher killed: the next one goes on after the last file sent (a file
                # sent again would count in minutes_sent, though JetStream stores it once)
                old = page.read().pid
                os.kill(old, signal.SIGKILL)
                wait_for(lambda: page.read().pid not in (0, old) and page.read().connected, 30,
                         "the publisher restarted")  # fmt: skip
                inject_frames(pair.ns_if, frames, ns=pair.ns)
                twice = wait_for(lambda: stored(2 * FRAMES), 120, "the second minutes, stored")

                def caught_up() -> dict[str, Any] | None:
                    rows = {r["ip"]: r for r in admin.get(f"/api/hosts?{span}").json["hosts"]}
                    sender = rows.get(pair.ns_ip)
                    return rows if sender and sender["pkts_sent"] == 2 * FRAMES else None

                hosts = wait_for(caught_up, 60, "the second minutes at the central")
                for ip, row in twice.items():
                    assert {k: hosts[ip][k] for k in keys} == {k: row[k] for k in keys}
                wait_for(arrived, 20, "the rows sent after the restart, received once")
            finally:
                page.close()
            assert not sensor.late_imports() and not central.late_imports()
        own.close()
        sensor.stop()
    finally:
        sensor.kill()
        central.kill()
