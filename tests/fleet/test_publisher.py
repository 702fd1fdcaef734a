"""The publisher on a real sensor (veth pair, exact accounting) into a real nats-server: every
captured packet in the stream once and in order; NATS stopped and started again while the sensor
captures: what the ring still held is sent, the rest counted lost, exactly; the publisher
killed and restarted by the supervisor: it resumes without sending anything twice."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError
from websockets.asyncio.client import ClientConnection

from leireye.errors import RingError
from leireye.fleet.flowmsg import decode_flows
from leireye.fleet.model import H_CONTENT, MINUTES, Batch, decode_batch, stream_name
from leireye.fleet.status import PublisherStatus, StatusPage
from leireye.ring.shm import SHM_DIR
from tests.accounts import users_yaml
from tests.fleet.natsutil_pub import NatsServer, nats_server
from tests.http import Http
from tests.netns import VethPair, inject_frames, skip_unless_root, udp_frame, veth_pair
from tests.sensor import Sensor
from tests.waiting import scaled, wait_for
from tests.wsclient import client, recv_type, run

__all__ = ["nats_server"]

pytestmark = [pytest.mark.root, skip_unless_root]
PORT = 9999
SENSOR = "edge-1"
RAW_BYTES = 256
VIEWER = ("vic", "viewer-pass-3")


@pytest.fixture
def pair() -> Iterator[VethPair]:
    with veth_pair(ipv6=False) as pair:
        yield pair


def start_sensor(
    tmp_path: Path,
    pair: VethPair,
    server: NatsServer,
    capacity: int,
    fleet: str = "",
    more: str = "",
) -> Sensor:
    users = users_yaml({VIEWER[0]: ("VIEWER", VIEWER[1])})
    return Sensor(
        tmp_path, "--interface", pair.host_if, "--bpf", f"udp and dst port {PORT}",
        config=(
            f"ring: {{capacity: {capacity}, raw_bytes: {RAW_BYTES}}}\n"
            "flows: {enabled: false}\n" + more +
            f"fleet: {{enabled: true, sensor: {SENSOR}, batch_records: 256, max_pending: 8,"
            f" nats: {{servers: ['{server.url}']}}{fleet}}}\n"
        ),
        users=users,
    )  # fmt: skip


def frames(pair: VethPair, count: int, offset: int = 0) -> list[bytes]:
    return [udp_frame(pair, 20000, PORT, (offset + i).to_bytes(4, "big") * 8) for i in range(count)]


def page_of(sensor: Sensor) -> StatusPage:
    def attach() -> StatusPage | None:
        try:
            return StatusPage.attach(f"{sensor.name}-fleet")
        except RingError:
            return None

    return wait_for(attach, 20, "the publisher's status page")


def settled(page: StatusPage, captured: int, what: str) -> PublisherStatus:
    """The status once every captured id is published or counted lost."""

    def done() -> PublisherStatus | None:
        status = page.read()
        if status.published_records + status.lost >= captured and status.behind == 0:
            return status
        return None

    return wait_for(done, 60, what)


def stored(server: NatsServer) -> list[Batch]:
    """Every packet batch in the sensor's stream, in stream order."""

    async def read() -> list[Batch]:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            name = stream_name(SENSOR, "packets")
            info = await js.stream_info(name)
            out = []
            for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
                msg = await js.get_msg(name, seq=seq)
                out.append(decode_batch(SENSOR, msg.headers, msg.data or b""))
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def ids_of(batches: list[Batch]) -> list[int]:
    return [int(i) for b in batches for i in b.records["seq"]]


def test_every_captured_packet_arrives_once_in_order(
    tmp_path: Path, pair: VethPair, nats_server: NatsServer
) -> None:
    sensor = start_sensor(tmp_path, pair, nats_server, capacity=1 << 14)
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        page = page_of(sensor)
        sent = frames(pair, 3000)
        inject_frames(pair.ns_if, sent, ns=pair.ns)
        wait_for(lambda: status.read().packets_captured >= len(sent), 30, "the capture")
        with sensor.explained():
            final = settled(page, len(sent), "every packet published")
        assert status.read().packets_captured == len(sent)
        assert (final.published_records, final.lost, final.last_id) == (len(sent), 0, len(sent))
        assert final.connected and final.stream_mismatch == [] and final.last_error == ""
        batches = stored(nats_server)
        assert ids_of(batches) == list(range(1, len(sent) + 1))
        assert sum(b.header.lost for b in batches) == 0
        assert all(b.header.count <= 256 for b in batches)
        raw = [bytes(row) for b in batches if b.raw is not None for row in b.raw]
        assert raw == [frame[:RAW_BYTES].ljust(RAW_BYTES, b"\0") for frame in sent]
        shown = metrics(sensor)
        assert f'leireye_fleet_connected{{sensor="{SENSOR}"}} 1' in shown
        assert re.search(rf"^leireye_fleet_published_records_total\S* {len(sent)}$", shown, re.M)
        page_file = (SHM_DIR / page.name).stat()
        assert stat.S_IMODE(page_file.st_mode) == 0o640  # the web user's group reads it
        assert page_file.st_uid == pwd.getpwnam("leireye").pw_uid  # capture.user writes it
        sensor.stop()
        assert sensor.segments() == []
    finally:
        sensor.kill()


def test_two_capture_shards_are_published_as_one_stream_of_ids(
    tmp_path: Path, pair: VethPair, nats_server: NatsServer
) -> None:
    more = "capture: {workers: 2}\n"
    sensor = start_sensor(tmp_path, pair, nats_server, capacity=1 << 13, more=more)
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        page = page_of(sensor)
        sent = [udp_frame(pair, 20000 + i % 32, PORT, i.to_bytes(4, "big")) for i in range(4000)]
        inject_frames(pair.ns_if, sent, ns=pair.ns)
        with sensor.explained():
            final = settled(page, len(sent), "both shards published")
        assert (final.published_records, final.lost) == (len(sent), 0)
        batches = stored(nats_server)
        assert ids_of(batches) == list(range(1, len(sent) + 1))
        payloads = sorted(bytes(row[42:46]) for b in batches if b.raw is not None for row in b.raw)
        assert payloads == sorted(i.to_bytes(4, "big") for i in range(len(sent)))
        assert f"{sensor.name}-ring-1" in sensor.segments()  # two shards indeed
        sensor.stop()
    finally:
        sensor.kill()


def test_nats_down_and_back_sends_what_the_ring_held_and_counts_the_rest(
    tmp_path: Path, pair: VethPair, nats_server: NatsServer
) -> None:
    capacity = 1024
    sensor = start_sensor(tmp_path, pair, nats_server, capacity=capacity)
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        page = page_of(sensor)
        first = frames(pair, 300)
        inject_frames(pair.ns_if, first, ns=pair.ns)
        with sensor.explained():
            settled(page, len(first), "the first packets published")
        nats_server.stop()
        wait_for(lambda: not page.read().connected, 20, "the publisher to see NATS gone")
        second = frames(pair, 4 * capacity, offset=len(first))  # laps the ring while NATS is away
        inject_frames(pair.ns_if, second, ns=pair.ns)
        captured = len(first) + len(second)
        wait_for(lambda: status.read().packets_captured >= captured, 30, "the capture")
        wait_for(lambda: page.read().behind == len(second), 20, "the status to show it behind")
        assert status.read().packets_captured == captured  # nothing dropped by the capture
        nats_server.start()
        with sensor.explained():
            final = settled(page, captured, "the publisher to catch up after NATS came back")
        assert final.published_records + final.lost == captured
        assert final.lost > 0 and final.connected
        batches = stored(nats_server)
        ids = ids_of(batches)
        assert ids == sorted(set(ids))  # in order, each once
        assert len(ids) == final.published_records
        assert sum(b.header.lost for b in batches) == final.lost
        assert batches[-1].header.last_id == captured
        held = set(range(captured - capacity + 1, captured + 1))
        assert held <= set(ids)  # what the ring held when NATS came back is all there
        sensor.stop()
    finally:
        sensor.kill()


def test_a_sensor_started_while_nats_is_away_publishes_from_its_first_packet(
    tmp_path: Path, pair: VethPair, nats_server: NatsServer
) -> None:
    nats_server.stop()
    sensor = start_sensor(tmp_path, pair, nats_server, capacity=1 << 12)
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        page = page_of(sensor)
        wait_for(lambda: page.read().last_error, 20, "the publisher to say NATS is not there")
        sent = frames(pair, 500)
        inject_frames(pair.ns_if, sent, ns=pair.ns)
        wait_for(lambda: status.read().packets_captured >= len(sent), 30, "the capture")
        wait_for(lambda: page.read().behind == len(sent), 20, "the status to show it behind")
        assert not page.read().connected
        nats_server.start()
        with sensor.explained():
            final = settled(page, len(sent), "the publisher to connect and publish")
        assert (final.published_records, final.lost, final.last_error) == (len(sent), 0, "")
        assert ids_of(stored(nats_server)) == list(range(1, len(sent) + 1))
        sensor.stop()
    finally:
        sensor.kill()


def test_a_killed_publisher_resumes_without_duplicates(
    tmp_path: Path, pair: VethPair, nats_server: NatsServer
) -> None:
    sensor = start_sensor(tmp_path, pair, nats_server, capacity=1 << 14)
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        page = page_of(sensor)
        sent = frames(pair, 12000)
        burst = threading.Thread(
            target=inject_frames, args=(pair.ns_if, sent), kwargs={"ns": pair.ns}
        )
        burst.start()
        try:  # killed in the middle of the burst, with batches in flight
            before = wait_for(lambda: _publishing(page, 1000), 30, "the first packets published")
            os.kill(before.pid, signal.SIGKILL)
        finally:
            burst.join()
        captured = len(sent)
        wait_for(lambda: page.read().pid not in (0, before.pid), 30, "a new publisher")
        with sensor.explained():
            final = settled(page, captured, "the new publisher to catch up")
        assert (final.published_records, final.lost) == (captured, 0)
        assert ids_of(stored(nats_server)) == list(range(1, captured + 1))
        assert sensor.log.count("publisher started pid=") == 2
        sensor.stop()
    finally:
        sensor.kill()


def test_nats_stopped_in_the_middle_of_a_burst_loses_no_order(
    tmp_path: Path, pair: VethPair, nats_server: NatsServer
) -> None:
    capacity = 1 << 13
    sensor = start_sensor(tmp_path, pair, nats_server, capacity=capacity)
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        page = page_of(sensor)
        sent = frames(pair, 30000)
        burst = threading.Thread(
            target=inject_frames, args=(pair.ns_if, sent), kwargs={"ns": pair.ns}
        )
        burst.start()
        try:
            wait_for(lambda: _publishing(page, 2000), 30, "the burst being published")
            nats_server.stop()  # batches in flight, more buffered in the client
            wait_for(lambda: not page.read().connected, 20, "the publisher to see NATS gone")
        finally:
            burst.join()
        wait_for(lambda: status.read().packets_captured >= len(sent), 30, "the capture")
        nats_server.start()
        with sensor.explained():
            final = settled(page, len(sent), "the publisher to catch up")
        batches = stored(nats_server)
        ids = ids_of(batches)
        assert ids == sorted(set(ids))  # in order, each once
        assert len(ids) == final.published_records
        assert final.published_records + final.lost == len(sent)
        assert sum(b.header.lost for b in batches) == final.lost
        assert set(range(len(sent) - capacity + 1, len(sent) + 1)) <= set(ids)
        sensor.stop()
    finally:
        sensor.kill()


def test_a_hung_server_makes_the_batches_go_again_and_stored_once(
    tmp_path: Path, pair: VethPair, nats_server: NatsServer
) -> None:
    sensor = start_sensor(tmp_path, pair, nats_server, capacity=1 << 14, fleet=", ack_timeout_s: 1")
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        page = page_of(sensor)
        first = frames(pair, 500)
        inject_frames(pair.ns_if, first, ns=pair.ns)
        settled(page, len(first), "the first packets published")
        nats_server.pause()  # the connection stays up; no ack comes
        try:
            second = frames(pair, 3000, offset=len(first))
            inject_frames(pair.ns_if, second, ns=pair.ns)
            wait_for(lambda: "no ack for batch" in sensor.log, 30, "the acks to time out")
            stuck = page.read()
            assert stuck.in_flight > 0
        finally:
            nats_server.resume()  # it stores what it had, then sees the same batches again
        captured = len(first) + len(second)
        with sensor.explained():
            final = settled(page, captured, "the publisher to get its acks")
        assert (final.published_records, final.lost) == (captured, 0)
        assert final.last_error == "" and "checking the stream and publishing again" in sensor.log
        assert ids_of(stored(nats_server)) == list(range(1, captured + 1))
        sensor.stop()
    finally:
        sensor.kill()


def test_batches_lost_in_a_server_crash_are_published_again(
    tmp_path: Path, pair: VethPair, nats_server: NatsServer
) -> None:
    sensor = start_sensor(tmp_path, pair, nats_server, capacity=1 << 14, fleet=", ack_timeout_s: 1")
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        page = page_of(sensor)
        first = frames(pair, 500)
        inject_frames(pair.ns_if, first, ns=pair.ns)
        settled(page, len(first), "the first packets published")
        nats_server.pause()
        second = frames(pair, 3000, offset=len(first))
        inject_frames(pair.ns_if, second, ns=pair.ns)
        wait_for(lambda: page.read().in_flight > 0, 30, "batches in flight to the hung server")
        nats_server.kill()  # it never read them
        nats_server.start()
        captured = len(first) + len(second)
        with sensor.explained():
            final = settled(page, captured, "the publisher to publish them again")
        assert (final.published_records, final.lost) == (captured, 0)
        assert final.retries > 0
        assert ids_of(stored(nats_server)) == list(range(1, captured + 1))
        sensor.stop()
    finally:
        sensor.kill()


def _publishing(page: StatusPage, at_least: int) -> PublisherStatus | None:
    status = page.read()
    return status if status.published_records >= at_least else None


def test_ended_flows_are_published_with_their_sensor(
    tmp_path: Path, pair: VethPair, nats_server: NatsServer
) -> None:
    sensor = Sensor(
        tmp_path, "--interface", pair.host_if, "--bpf", f"udp and dst port {PORT}",
        config=(
            "flows: {idle_timeout_s: {udp: 1}}\n"
            f"fleet: {{enabled: true, sensor: {SENSOR},"
            f" nats: {{servers: ['{nats_server.url}']}}}}\n"
        ),
    )  # fmt: skip
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        page_of(sensor)
        sent = [udp_frame(pair, 20000 + i % 5, PORT, b"flow %d" % i) for i in range(50)]
        inject_frames(pair.ns_if, sent, ns=pair.ns)

        async def flows() -> list[dict[str, object]]:
            nc = await nats.connect(nats_server.url)
            try:
                js = nc.jetstream()
                name = stream_name(SENSOR, "flows")
                rows: list[dict[str, object]] = []
                try:
                    info = await js.stream_info(name)
                except NotFoundError:  # not made yet
                    return rows
                for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
                    stored = await js.get_msg(name, seq=seq)
                    if (stored.headers or {}).get(H_CONTENT) == MINUTES:
                        continue  # host and app minutes share the stream (test_central_minutes)
                    data = stored.data or b"{}"
                    message = json.loads(data)
                    assert message["sensor"] == SENSOR and message["missed"] == 0
                    assert len(decode_flows(SENSOR, data).flows) == len(message["flows"])
                    rows += message["flows"]
                return rows
            finally:
                await nc.close()

        with sensor.explained():
            rows = wait_for(lambda: (found := asyncio.run(flows())) and len(found) >= 5 and found,
                            30, "the ended flows in the stream")  # fmt: skip
        assert sorted(row["orig_port"] for row in rows) == [20000, 20001, 20002, 20003, 20004]
        assert {row["sensor"] for row in rows} == {SENSOR}
        assert sum(int(str(row["orig_pkts"])) for row in rows) == len(sent)
        sensor.stop()
    finally:
        sensor.kill()


def test_the_status_stream_says_who_and_how_far(
    tmp_path: Path, pair: VethPair, nats_server: NatsServer
) -> None:
    sensor = start_sensor(tmp_path, pair, nats_server, capacity=1 << 14)
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        page = page_of(sensor)
        inject_frames(pair.ns_if, frames(pair, 50), ns=pair.ns)
        settled(page, 50, "the packets published")

        async def last(kind: str) -> dict[str, object]:
            nc = await nats.connect(nats_server.url)
            try:
                msg = await nc.jetstream().get_last_msg(
                    stream_name(SENSOR, kind), f"leireye.{SENSOR}.{kind}"
                )
            except NotFoundError:  # none yet
                return {}
            else:
                return dict(json.loads(msg.data or b"{}"))
            finally:
                await nc.close()

        def published() -> dict[str, object] | None:
            found = asyncio.run(last("status"))
            publisher = found.get("publisher")
            done = isinstance(publisher, dict) and publisher.get("published_records") == 50
            return found if done else None

        found = wait_for(published, 20, "a status message with the packets")
        assert found["sensor"] == SENSOR
        capture = found["capture"]
        assert isinstance(capture, dict) and capture["packets_captured"] == 50
        stats = wait_for(lambda: asyncio.run(last("stats")), 20, "a stats message")
        assert stats["sensor"] == SENSOR and "packets_per_second" in stats
        sensor.stop()
    finally:
        sensor.kill()


def test_the_websocket_status_follows_the_publishers_connection(
    tmp_path: Path, pair: VethPair, nats_server: NatsServer
) -> None:
    sensor = start_sensor(tmp_path, pair, nats_server, capacity=1 << 12)
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        page = page_of(sensor)
        wait_for(lambda: page.read().connected, 20, "the publisher to connect")
        http = Http(sensor.web_port())
        login = http.post("/api/auth/login", {"username": VIEWER[0], "password": VIEWER[1]})
        url = f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token={login.json['access_token']}"

        async def fleet_of(ws: ClientConnection) -> dict[str, Any]:
            message = await recv_type(ws, "status", timeout=20)
            fleet: dict[str, Any] = message["data"]["fleet"]
            return fleet

        async def follow() -> None:
            async with client(url) as ws:
                first = await fleet_of(ws)
                while not first["connected"]:  # the worker's view from before it connected
                    first = await fleet_of(ws)
                assert first["sensor"] == SENSOR
                assert first["servers"] == [nats_server.url] and first["last_error"] is None
                nats_server.stop()
                gone = await fleet_of(ws)  # a change of the publisher's state is news
                assert gone["connected"] is False
                nats_server.start()
                back = await fleet_of(ws)
                while not back["connected"]:  # a new error while it reconnects is news too
                    back = await fleet_of(ws)
                assert back["connected"] is True

        with sensor.explained():
            run(follow())
        sensor.stop()
    finally:
        sensor.kill()


def metrics(sensor: Sensor) -> str:
    http = Http(sensor.web_port())
    token = http.post("/api/auth/login", {"username": VIEWER[0], "password": VIEWER[1]})
    assert token.status == 200, token.body
    reply = http.with_token(token.json["access_token"]).get("/metrics")
    assert reply.status == 200
    return reply.body.decode()


def test_an_unreadable_password_file_stops_the_sensor_with_its_name(tmp_path: Path) -> None:
    sensor = Sensor(
        tmp_path, "--interface", "lo",
        config=(
            "flows: {enabled: false}\nstore: {enabled: false}\n"
            f"fleet: {{enabled: true, sensor: {SENSOR}, nats: {{servers: ['nats://127.0.0.1:1'],"
            " user: bob, password_file: nats-password}}\n"
        ),
    )  # fmt: skip
    try:
        code = sensor.proc.wait(scaled(30))
        assert code != 0
        assert "fleet: nats.password_file:" in sensor.log and "nats-password" in sensor.log
        assert "publisher could not start" in sensor.log
    finally:
        sensor.kill()
