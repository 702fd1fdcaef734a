"""The fleet central's data path against real parts: a real nats-server with JetStream, batches
published with nats-py, the real `leireye central` (supervisor, ingest, stats, web worker), its
ring read back from shared memory and its REST API over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import numpy as np
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from leireye.fleet.checkpoint import RESERVE
from leireye.fleet.journal import ENTRY, JOURNAL_FILE
from leireye.fleet.model import (
    H_LOST,
    SENSOR_TABLE_FILE,
    SensorTable,
    read_sensor_table,
    stream_name,
    subject,
)
from leireye.ring import Ring, RingReader
from tests.accounts import users_yaml
from tests.fleet.e2e import Stream, follow, key
from tests.fleet.natsutil_central import TS0, Fleet, free_tcp_port, nats_server
from tests.http import Http
from tests.sensor import SHM_DIR, Sensor
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the central drops root like a sensor"),
]

SILENT_AFTER_S = 3.0
RAW_BYTES = 64  # the central's; the sensors send 128
PASSWORD = "central-admin-1"


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with nats_server() as url:
        yield url


def test_a_central_started_before_nats_waits_for_it(tmp_path: Path) -> None:
    port = free_tcp_port()
    central = start_central(tmp_path, f"nats://127.0.0.1:{port}")
    try:
        with central.explained():
            block = central.status()
            wait_for(
                lambda: "Connect call failed" in block.read().last_error, 10, "the error shown"
            )
            with nats_server(port) as url:
                fleet = Fleet(url)
                fleet.create_streams("solo")
                fleet.publish_many([fleet.batch("solo", 1, 3), fleet.status("solo")])
                wait_packets(central, {"solo": 3}, "the packets once NATS is up")
                assert block.read().last_error == ""
            block.close()
    finally:
        central.kill()


def start_central(
    tmp: Path, url: str, state_dir: Path | None = None, sensors: tuple[str, ...] = ()
) -> Sensor:
    config = (
        f"ring: {{capacity: 1024, raw_bytes: {RAW_BYTES}}}\n"
        "central:\n"
        "  enabled: true\n"
        f"  nats: {{servers: ['{url}']}}\n"
        "  discover_s: 0.5\n"
        f"  silent_after_s: {SILENT_AFTER_S}\n"
        f"  sensors: {list(sensors)}\n"
    )
    users = users_yaml({"admin": ("ADMIN", PASSWORD)}) if state_dir is None else ""
    central = Sensor(tmp, config=config, users=users, command="central", state_dir=state_dir)
    central.web_port()
    return central


def table(central: Sensor) -> SensorTable | None:
    return read_sensor_table(central.state_dir / SENSOR_TABLE_FILE)


def sensor_state(central: Sensor, name: str) -> Any:
    found = table(central)
    return next((s for s in found.sensors if s.name == name), None) if found else None


def wait_packets(central: Sensor, expected: dict[str, int], what: str) -> SensorTable:
    def done() -> SensorTable | None:
        if central.proc.poll() is not None:
            raise AssertionError(f"central exited:\n{central.log}")
        found = table(central)
        got = {s.name: s.packets for s in found.sensors} if found else {}
        return found if found and all(got.get(k) == v for k, v in expected.items()) else None

    return wait_for(done, 20, what)


def ring_contents(central: Sensor) -> tuple[np.ndarray, np.ndarray, int]:
    """Every record of the central's ring (and its raw bytes), and the ring's base id."""
    ring = Ring.attach(f"{central.name}-ring")
    try:
        batch = RingReader(ring, "oldest", with_raw=True).read()
        assert batch.lost == 0 and batch.raw is not None
        return batch.records.copy(), batch.raw.copy(), ring.base_id
    finally:
        ring.close()


def sensor_ids(rows: np.ndarray) -> np.ndarray:
    return rows["ts_ns"] - TS0  # the sensor's own id (natsutil_central.records)


def test_central_ingests_counts_restarts_and_serves(tmp_path: Path, nats_url: str) -> None:
    fleet = Fleet(nats_url)
    fleet.create_streams("alpha", "beta")
    fleet.publish_many(
        [
            fleet.status("alpha"),
            fleet.status("beta"),
            fleet.stats("alpha", packets_total=85),
            fleet.batch("alpha", 1, 25),
            fleet.batch("beta", 1, 30),
            fleet.batch("alpha", 26, 25),
            ("beta", "packets", b"not a batch", {H_LOST: "x"}),  # malformed: counted, skipped
            fleet.batch("alpha", 56, 20, lost=5),  # 51..55: the sensor says it lost them
            fleet.batch("beta", 31, 20),
            fleet.batch("alpha", 86, 15),  # 76..85: gone, no header explains them
        ]
    )
    central = start_central(tmp_path, nats_url)
    second: Sensor | None = None
    try:
        with central.explained():
            found = wait_packets(central, {"alpha": 85, "beta": 50}, "both sensors' packets")
            alpha, beta = (next(s for s in found.sensors if s.name == n) for n in ("alpha", "beta"))
            assert {alpha.index, beta.index} == {1, 2}
            assert (alpha.lost, alpha.bad_batches, beta.lost, beta.bad_batches) == (15, 0, 0, 1)
            assert alpha.status and alpha.status["state"] == "capturing"
            assert alpha.stats == {"sensor": "alpha", "packets_total": 85}
            made = (central.state_dir / SENSOR_TABLE_FILE).stat()
            where = (central.state_dir / SENSOR_TABLE_FILE).parent.stat()
            web = pwd.getpwnam("leireye-web").pw_gid
            assert (made.st_mode & 0o777, made.st_gid) == (0o640, web)  # the workers read it
            assert (where.st_mode & 0o7777, where.st_uid, where.st_gid) == (
                0o2750, pwd.getpwnam("leireye").pw_uid, web)  # fmt: skip

            rows, raw, base = ring_contents(central)
            assert base == 0 and len(rows) == 135
            assert np.all(np.diff(rows["seq"].astype(np.int64)) == 1)  # ids increase, no hole
            for state, expected in ((alpha, _alpha_ids()), (beta, list(range(1, 51)))):
                mine = rows["sensor"] == state.index
                assert sensor_ids(rows[mine]).tolist() == expected  # each once, in order
                assert np.all(raw[mine] == (sensor_ids(rows[mine]) % 251)[:, None])  # cut to 64
            assert raw.shape[1] == RAW_BYTES

            block = central.status()  # written right after the table: wait for it
            status = wait_for(lambda: (st := block.read()).packets_captured == 135 and st, 5,
                              "the status block to count the packets")  # fmt: skip
            assert status.state == "capturing"
            assert status.kernel_drops == 15

            http = Http(central.web_port())
            login = http.post("/api/auth/login", {"username": "admin", "password": PASSWORD})
            assert login.status == 200, login.body
            http = http.with_token(login.json["access_token"])
            reply = http.get("/api/capture/packets?limit=1000")
            assert reply.status == 200, reply.body
            old_api = sorted(reply.json["packets"], key=lambda p: p["id"])
            assert [p["id"] for p in old_api] == rows["seq"].astype(int).tolist()

            # alpha is live while it publishes its status, and stops: silent within
            # silent_after_s + 1 s of its last message
            sent_ns = time.time_ns()
            fleet.publish_many([fleet.status("alpha", packets_captured=85)])
            fresh = wait_for(
                lambda: (st := sensor_state(central, "alpha")).last_message_ns >= sent_ns and st,
                5, "alpha's new status",
            )  # fmt: skip
            assert fresh.state == "live"
            last_ns = fresh.last_message_ns
            wait_for(lambda: sensor_state(central, "alpha").state == "silent",
                     SILENT_AFTER_S + 2, "alpha to go silent")  # fmt: skip
            silent_at = time.time_ns()
            assert (silent_at - last_ns) / 1e9 <= SILENT_AFTER_S + 1 + 0.5  # table: every 1 s

        assert central.stop(signal.SIGINT) == 0
        assert central.proc.stderr is not None and not central.late_imports()
        central.proc.stderr.close()
        old_last = int(rows["seq"][-1])
        old_rows, old_raw = rows, raw
        saved = json.loads((central.state_dir / "central/ids.json").read_text())
        assert (saved["next_id"], saved["clean"]) == (old_last + 1, True)  # exactly the next id
        journal = (central.state_dir / JOURNAL_FILE).stat()
        assert (journal.st_mode & 0o777, journal.st_gid) == (0o640, web)
        assert journal.st_size == 6 * ENTRY.itemsize  # one entry per batch in the ring

        # while the central is down, both sensors publish on
        fleet.publish_many(
            [fleet.batch("alpha", 101, 20), fleet.batch("beta", 51, 10), fleet.status("beta")]
        )
        second = start_central(tmp_path, nats_url, state_dir=central.state_dir)
        with second.explained():
            # counted once: the replayed packets are not counted again
            found = wait_packets(second, {"alpha": 105, "beta": 60}, "the packets sent meanwhile")
            names = {s.name: s.index for s in found.sensors}
            assert names == {"alpha": alpha.index, "beta": beta.index}  # indexes kept
            assert sensor_state(second, "alpha").lost == 15  # nothing new lost
            all_rows, all_raw, base = ring_contents(second)
            # the last run's packets are back, with their ids and contents (the journal)
            assert base == 0 and len(all_rows) == 135 + 30
            assert all_rows[:135].tobytes() == old_rows.tobytes()
            assert np.array_equal(all_raw[:135], old_raw)
            assert "replay: 135 packets of the last run back in the ring" in second.log
            http = Http(second.web_port())
            login = http.post("/api/auth/login", {"username": "admin", "password": PASSWORD})
            http = http.with_token(login.json["access_token"])
            reply = http.get(f"/api/capture/packets?limit=1000&after=0&before={old_last + 1}")
            assert sorted(reply.json["packets"], key=lambda p: p["id"]) == old_api
            # a client that was behind resumes at an old id: every packet once, none dropped
            stream = Stream()
            token = urllib.parse.quote(http.token or "")
            url = f"ws://127.0.0.1:{second.web_port()}/ws/capture?token={token}"
            assert asyncio.run(follow(url, stream, 100, lambda: stream.last_id >= old_last + 30))
            assert [p["id"] for p in stream.packets] == list(range(101, old_last + 31))
            assert [key(p) for p in stream.packets[: old_last - 100]] == [
                key(p) for p in old_api[100:]
            ]
            assert stream.dropped == []
            rows = all_rows[135:]  # the packets sent meanwhile: new ids after the old ones
            assert rows["seq"].astype(int).tolist() == list(range(old_last + 1, old_last + 31))
            assert sensor_ids(rows[rows["sensor"] == alpha.index]).tolist() == list(range(101, 121))
            assert sensor_ids(rows[rows["sensor"] == beta.index]).tolist() == list(range(51, 61))

            # a sensor that appears while the central runs is found within discover_s
            fleet.create_streams("gamma")
            fleet.publish_many([fleet.batch("gamma", 1, 7)])
            found = wait_packets(second, {"gamma": 7}, "the new sensor's packets")
            assert {s.name: s.index for s in found.sensors}["gamma"] == 3
            assert "heartbeat" not in second.log and "heartbeat" not in central.log

            # the ingest killed: the supervisor restarts it, the ring and its ids go on
            block = second.status()
            os.kill(block.read().pid, signal.SIGKILL)
            wait_for(lambda: block.read().restarts == 1, 10, "the ingest's restart")
            fleet.publish_many([fleet.batch("gamma", 8, 3)])
            wait_packets(second, {"gamma": 10}, "the packets after the ingest's restart")
            rows, _, _ = ring_contents(second)
            assert sensor_ids(rows[rows["sensor"] == 3]).tolist() == list(range(1, 11))
            assert np.all(np.diff(rows["seq"].astype(np.int64)) == 1)
            block.close()
    finally:
        if second is not None:
            second.kill()  # removes the shared state_dir
        else:
            central.kill()


def _alpha_ids() -> list[int]:
    return [*range(1, 51), *range(56, 76), *range(86, 101)]


def test_messages_a_dead_run_left_unacknowledged_are_read_at_once(
    tmp_path: Path, nats_url: str
) -> None:
    """A central that died after fetching batches and before acknowledging them (SIGKILL, power
    cut) leaves them pending on its consumer: the server would redeliver them only after
    ack_wait (30 s), behind newer ones. The next run reads them at once, in order, and loses
    nothing."""
    fleet = Fleet(nats_url)
    fleet.create_streams("delta")
    fleet.publish_many([fleet.batch("delta", 1 + 10 * k, 10) for k in range(3)])

    async def dead_run() -> None:  # the consumer as the central makes it: three fetched, one acked
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        config = ConsumerConfig(
            durable_name="leireye-central-central", ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, max_ack_pending=1024, ack_wait=30,
        )  # fmt: skip
        stream = stream_name("delta", "packets")
        sub = await js.pull_subscribe(
            subject("delta", "packets"), config.durable_name, stream=stream, config=config
        )
        msgs = await sub.fetch(3, timeout=5)
        assert len(msgs) == 3
        await msgs[0].ack_sync()
        await nc.close()

    asyncio.run(dead_run())
    central = start_central(tmp_path, nats_url, sensors=("delta",))
    try:
        with central.explained():
            found = wait_packets(central, {"delta": 20}, "the batches left unacknowledged")
            delta = next(s for s in found.sensors if s.name == "delta")
            assert (delta.lost, delta.missed_messages, delta.bad_batches) == (0, 0, 0)
            rows, _, _ = ring_contents(central)
            assert sensor_ids(rows).tolist() == list(range(11, 31))  # not the acked ones again
            assert "read again from 2" in central.log
    finally:
        central.kill()


def test_after_a_crash_a_client_resuming_gets_every_packet_once(
    tmp_path: Path, nats_url: str
) -> None:
    """The whole central SIGKILLed (supervisor and children at once: nothing stops cleanly)
    with batches journaled whose acknowledgement had not reached the server: on the same boot
    the next run replays the journal with the same ids and goes on right after it, the batches
    delivered again are acknowledged without being written or counted again, those written in
    the last second (not in the sensor table yet) are counted from the journal, and a client
    resuming with the last id it saw gets every later packet once, ids without a gap."""
    fleet = Fleet(nats_url)
    fleet.create_streams("kappa", "mu")
    fleet.publish_many([fleet.batch(n, 1 + 10 * k, 10) for k in range(3) for n in ("kappa", "mu")])
    central = start_central(tmp_path, nats_url, sensors=("kappa", "mu"))
    second: Sensor | None = None
    try:
        with central.explained():
            wait_packets(central, {"kappa": 30, "mu": 30}, "the first batches")
            table_then = (central.state_dir / SENSOR_TABLE_FILE).read_bytes()
            http = login(central)
            stream = Stream()  # a client reads everything so far, then goes away
            url = ws_url(central, http)
            assert asyncio.run(follow(url, stream, 0, lambda: stream.last_id >= 60))
            seen = stream.last_id
            assert seen == 60 and stream.dropped == []
            fleet.publish_many([fleet.batch("kappa", 31, 10), fleet.batch("mu", 31, 10, lost=2)])
            wait_packets(central, {"kappa": 40, "mu": 40}, "the batches the client did not read")
            old_api = http_packets(http, 0, 81)
            for name in ("kappa", "mu"):
                wait_for(lambda n=name: asyncio.run(_ack_floor(n, nats_url)) == 4, 10, "acks")
            old, _, _ = ring_contents(central)
        os.killpg(central.proc.pid, signal.SIGKILL)
        central.proc.wait(10)
        central._reader.join(10)
        assert central.proc.stderr is not None
        central.proc.stderr.close()
        for name in central.segments():  # the supervisor could not remove them
            (SHM_DIR / name).unlink(missing_ok=True)
        assert "clean" not in json.loads((central.state_dir / "central/ids.json").read_text())
        # the state a crash between the journal and the acknowledgements leaves: kappa's
        # batches 3 and 4 (ids 21..40) delivered and not acknowledged; and a crash within the
        # second after the batches 4 were written leaves the table without them
        asyncio.run(_deliver_again("kappa", nats_url, 3, 2))
        (central.state_dir / SENSOR_TABLE_FILE).write_bytes(table_then)
        fleet.publish_many([fleet.batch(n, 41, 10) for n in ("kappa", "mu")])
        second = start_central(tmp_path, nats_url, central.state_dir, sensors=("kappa", "mu"))
        with second.explained():
            http = login(second)
            url = ws_url(second, http)
            done = lambda: stream.last_id >= 100  # noqa: E731
            assert asyncio.run(asyncio.wait_for(follow(url, stream, seen, done), 20))
            again = stream.packets[60:]
            assert [p["id"] for p in again] == list(range(61, 101))  # no jump, no gap
            assert stream.dropped == []
            assert [key(p) for p in again[:20]] == [key(p) for p in old_api[60:]]
            rows, _, base = ring_contents(second)
            assert base == 0 and rows["seq"].astype(int).tolist() == list(range(1, 101))
            assert rows[:80].tobytes() == old.tobytes()  # the same packets under the same ids
            for name in ("kappa", "mu"):  # each packet once, in order
                index = sensor_state(second, name).index
                assert sensor_ids(rows[rows["sensor"] == index]).tolist() == list(range(1, 51))
            found = wait_packets(second, {"kappa": 50, "mu": 50}, "the counts")
            counts = {s.name: (s.lost, s.missed_messages) for s in found.sensors}
            assert counts == {"kappa": (0, 0), "mu": (2, 0)}  # mu's batch 4 said 2 lost
            assert "2 batches written in the last run's last second counted" in second.log
            assert "replay: 80 packets of the last run back in the ring" in second.log
            assert ("LEIREYE_kappa_PACKETS: 2 messages delivered to the last run and not "
                    "acknowledged: read again from 3") in second.log  # fmt: skip
    finally:
        (second or central).kill()


def test_after_a_power_cut_a_central_does_not_replay(tmp_path: Path, nats_url: str) -> None:
    """A central killed on another boot (a power cut: the journal's unsynced tail may be lost)
    cannot trust the journal's end: nothing is replayed and the ids continue above the
    reserved block, each packet once."""
    fleet = Fleet(nats_url)
    fleet.create_streams("iota")
    fleet.publish_many([fleet.batch("iota", 1 + 10 * k, 10) for k in range(3)])
    central = start_central(tmp_path, nats_url, sensors=("iota",))
    second: Sensor | None = None
    try:
        with central.explained():
            wait_packets(central, {"iota": 30}, "the first batches")
            wait_for(lambda: asyncio.run(_ack_floor("iota", nats_url)) == 3, 10, "the acks")
        os.killpg(central.proc.pid, signal.SIGKILL)
        central.proc.wait(10)
        central._reader.join(10)
        assert central.proc.stderr is not None
        central.proc.stderr.close()
        for name in central.segments():  # the supervisor could not remove them
            (SHM_DIR / name).unlink(missing_ok=True)
        ids = central.state_dir / "central/ids.json"
        saved = json.loads(ids.read_text())
        assert saved["next_id"] == 11 + RESERVE  # reserved before the first write, not clean
        ids.write_text(json.dumps({**saved, "boot_id": "another-boot"}))
        fleet.publish_many([fleet.batch("iota", 31, 10)])
        second = start_central(tmp_path, nats_url, central.state_dir, sensors=("iota",))
        with second.explained():
            found = wait_packets(second, {"iota": 40}, "the batch sent meanwhile")
            assert found.sensors[0].lost == 0
            rows, _, base = ring_contents(second)
            assert base == 10 + RESERVE and len(rows) == 10  # no replay, no duplicate
            assert rows["seq"].astype(int).tolist() == list(range(base + 1, base + 11))
            assert sensor_ids(rows).tolist() == list(range(31, 41))
            assert "replay" not in second.log
    finally:
        (second or central).kill()


def login(central: Sensor) -> Http:
    http = Http(central.web_port())
    reply = http.post("/api/auth/login", {"username": "admin", "password": PASSWORD})
    assert reply.status == 200, reply.body
    return http.with_token(reply.json["access_token"])


def ws_url(central: Sensor, http: Http) -> str:
    token = urllib.parse.quote(http.token or "")
    return f"ws://127.0.0.1:{central.web_port()}/ws/capture?token={token}"


def http_packets(http: Http, after: int, before: int) -> list[dict[str, Any]]:
    reply = http.get(f"/api/capture/packets?limit=1000&after={after}&before={before}")
    assert reply.status == 200, reply.body
    return sorted(reply.json["packets"], key=lambda p: p["id"])


async def _deliver_again(name: str, url: str, first_seq: int, count: int) -> None:
    """Leave the central's consumer of `name`'s packets as a run that died after handling
    messages `first_seq..` and before their acknowledgements reached the server: made again,
    acknowledged up to `first_seq - 1`, `count` more delivered and not acknowledged."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream, durable = stream_name(name, "packets"), "leireye-central-central"
        await js.delete_consumer(stream, durable)
        config = ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            max_ack_pending=1024, ack_wait=30,
        )  # fmt: skip
        sub = await js.pull_subscribe(subject(name, "packets"), durable, stream=stream,
                                      config=config)  # fmt: skip
        for msg in await sub.fetch(first_seq - 1, timeout=5):
            await msg.ack_sync()
        msgs = await sub.fetch(count, timeout=5)
        assert [m.metadata.sequence.stream for m in msgs] == list(
            range(first_seq, first_seq + count)
        )
        info = await sub.consumer_info()
        assert info.ack_floor is not None and info.ack_floor.stream_seq == first_seq - 1
        assert info.num_ack_pending == count
    finally:
        await nc.close()


async def _ack_floor(name: str, url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(
            stream_name(name, "packets"), "leireye-central-central"
        )
        return info.ack_floor.stream_seq if info.ack_floor is not None else 0
    finally:
        await nc.close()


def test_a_replay_skips_what_is_gone_from_the_stream(tmp_path: Path, nats_url: str) -> None:
    """Messages gone from the stream since the clean stop are not replayed, and said so: those
    older than the stream's first message cut the replay to the suffix after them, one deleted
    inside leaves a hole of its ids; the rest comes back with its ids."""
    fleet = Fleet(nats_url)
    fleet.create_streams("lam")
    fleet.publish_many([fleet.batch("lam", 1 + 10 * k, 10) for k in range(5)])
    central = start_central(tmp_path, nats_url, sensors=("lam",))
    second: Sensor | None = None
    try:
        with central.explained():
            wait_packets(central, {"lam": 50}, "the batches")
            old, _, _ = ring_contents(central)
        assert central.stop(signal.SIGINT) == 0
        central._reader.join(10)
        assert central.proc.stderr is not None
        central.proc.stderr.close()

        async def retention() -> None:
            nc = await nats.connect(nats_url)
            js = nc.jetstream()
            await js.purge_stream(stream_name("lam", "packets"), seq=3)  # 1 and 2 gone
            await js.delete_msg(stream_name("lam", "packets"), 4)
            await nc.close()

        asyncio.run(retention())
        second = start_central(tmp_path, nats_url, central.state_dir, sensors=("lam",))
        with second.explained():
            wait_for(lambda: "replay: 20 packets of the last run" in second.log, 10, "the replay")
            assert "replay: 20 packets (ids 1..20) not replayed" in second.log
            assert "replay: ids 31..40 (LEIREYE_lam_PACKETS message 4) not replayed" in second.log
            ring = Ring.attach(f"{second.name}-ring")
            try:
                assert (ring.base_id, ring.write_seq) == (0, 50)
                held = [i for i in range(1, 51) if ring.get(i) is not None]
                assert held == [*range(21, 31), *range(41, 51)]
                for i in held:  # the same record under the same id
                    got = ring.get(i)
                    assert got is not None and got[0].tobytes() == old[i - 1].tobytes()
            finally:
                ring.close()
            assert sensor_state(second, "lam").packets == 50  # not counted again
    finally:
        (second or central).kill()
