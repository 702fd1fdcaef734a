"""`leireye run` with `capture.workers: 2` on a veth pair: two capture processes in one
PACKET_FANOUT group, each frame captured once, ids unique and ordered, one shard restarted
alone, and one process where fanout does not apply (a pcap replay)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from leireye.capture.fanout import FanoutMode, join_fanout
from leireye.errors import RingError
from leireye.ring import Ring
from leireye.ring.shards import ShardSet, shard_name
from leireye.ring.shardstatus import StatusSet
from leireye.ring.status import CaptureStatus
from tests.http import Http
from tests.netns import VethPair, inject_frames, skip_unless_root, udp_frame, veth_pair
from tests.sensor import Sensor, SensorFactory
from tests.waiting import wait_for
from tests.wsclient import client, recv_type, run

pytestmark = [pytest.mark.root, skip_unless_root]
DATA = Path(__file__).resolve().parents[1] / "data"
PORT = 9999
FLOWS = 40


def udp_frames(pair: VethPair, count: int, first_sport: int = 20000) -> list[bytes]:
    """`count` UDP frames from the namespace end to the host end, over FLOWS source ports."""
    return [udp_frame(pair, first_sport + i % FLOWS, PORT, b"f" * 32) for i in range(count)]


def start_two(sensor_factory: SensorFactory, pair: VethPair, extra: str = "") -> Sensor:
    return sensor_factory(
        "--interface", pair.host_if, "--bpf", f"udp and dst port {PORT}",
        config=f"capture: {{workers: 2, fanout_mode: hash}}\n{extra}",
    )  # fmt: skip


def shard_statuses(sensor: Sensor) -> StatusSet:
    """Both shards' status blocks, once the supervisor has made them (shard 0's comes first)."""

    def attached() -> StatusSet | None:
        try:
            return StatusSet.attach(f"{sensor.name}-status", 2)
        except RingError:
            return None

    statuses: StatusSet = wait_for(attached, 30, "both shards' status blocks")
    return statuses


def wait_all_capturing(sensor: Sensor, statuses: StatusSet) -> list[CaptureStatus]:
    def capturing() -> list[CaptureStatus] | None:
        if sensor.proc.poll() is not None:
            raise AssertionError(f"sensor exited early:\n{sensor.log}")
        each = statuses.read_all()
        return each if all(s.capturing for s in each) else None

    found: list[CaptureStatus] = wait_for(capturing, 30, "both capture shards to capture")
    return found


def wait_accounted(statuses: StatusSet, total: int) -> CaptureStatus:
    def accounted() -> CaptureStatus | None:
        st = statuses.read()
        return st if st.packets_captured + st.kernel_drops >= total else None

    found: CaptureStatus = wait_for(accounted, 30, f"{total} frames captured or dropped")
    return found


def shard_ports(sensor: Sensor) -> list[set[int]]:
    """The source ports each shard's own ring holds."""
    ports = []
    for k in range(2):
        ring = Ring.attach(shard_name(f"{sensor.name}-ring", k))
        rows = ring.copy_rows(ring.oldest_id, ring.write_seq)
        ports.append({int(p) for p in rows.records["src_port"]})
        del rows
        ring.close()
    return ports


def test_two_shards_capture_every_frame_once_and_a_flow_stays_on_one(
    sensor_factory: SensorFactory,
) -> None:
    with veth_pair(ipv6=False) as pair:
        sensor = start_two(sensor_factory, pair)
        statuses = shard_statuses(sensor)
        pids = [s.pid for s in wait_all_capturing(sensor, statuses)]
        assert len(set(pids)) == 2
        sent = inject_frames(pair.ns_if, udp_frames(pair, 4000), ns=pair.ns)
        st = wait_accounted(statuses, sent)
        assert st.packets_captured + st.kernel_drops == sent
        each = statuses.read_all()
        assert all(s.packets_captured > 0 for s in each), each  # the kernel used both
        assert sum(s.packets_captured for s in each) == st.packets_captured

        shards = ShardSet.attach(f"{sensor.name}-ring")
        assert shards.shards == 2
        batch = shards.reader("oldest").read(100_000)
        ids = batch.records["seq"].tolist()
        assert len(ids) == st.packets_captured and batch.lost == 0
        assert ids == list(range(1, len(ids) + 1))  # unique, in order, no gap
        assert shards.last_id == len(ids)
        assert shards.get(ids[len(ids) // 2]) is not None
        del batch
        shards.close()

        first, second = shard_ports(sensor)
        assert first and second and not first & second  # hash mode: a flow on one shard
        assert first | second == set(range(20000, 20000 + FLOWS))
        statuses.close()
        assert sensor.stop(signal.SIGINT) == 0, sensor.log
        assert sensor.segments() == []


def test_a_killed_shard_is_restarted_alone_and_the_other_keeps_capturing(
    sensor_factory: SensorFactory,
) -> None:
    with veth_pair(ipv6=False) as pair:
        sensor = start_two(sensor_factory, pair, "supervisor: {restart_backoff_s: [2.0]}\n")
        statuses = shard_statuses(sensor)
        pid0, pid1 = (s.pid for s in wait_all_capturing(sensor, statuses))
        sent = inject_frames(pair.ns_if, udp_frames(pair, 500), ns=pair.ns)
        wait_accounted(statuses, sent)
        shards = ShardSet.attach(f"{sensor.name}-ring")
        reader = shards.reader("oldest")
        seen = reader.read().records["seq"].tolist()

        first_life = statuses.blocks[1].read()  # idle and fully counted: its final counters
        os.kill(pid1, signal.SIGKILL)
        wait_for(lambda: "capture-1 died" in sensor.log, 10, "the supervisor to see shard 1 die")
        before = statuses.blocks[0].read().packets_captured
        sent += inject_frames(pair.ns_if, udp_frames(pair, 500, 21000), ns=pair.ns)
        wait_for(  # shard 1 is still waiting for its restart: shard 0 takes everything
            lambda: statuses.blocks[0].read().packets_captured - before >= 500, 10, "shard 0"
        )

        def restarted() -> bool:
            st = statuses.blocks[1].read()
            return st.pid not in (0, pid1) and st.capturing

        wait_for(restarted, 30, "shard 1 to be restarted")
        assert statuses.blocks[0].read().pid == pid0  # the other shard was left alone
        sent += inject_frames(pair.ns_if, udp_frames(pair, 500, 22000), ns=pair.ns)
        earlier = first_life.packets_captured + first_life.kernel_drops
        st = wait_accounted(statuses, sent - earlier)
        assert st.packets_captured + st.kernel_drops + earlier == sent
        captured = st.packets_captured + first_life.packets_captured

        def caught_up() -> bool:
            seen.extend(reader.read().records["seq"].tolist())
            return len(seen) >= captured

        wait_for(caught_up, 10, "the reader to read every captured packet")
        assert seen == list(range(1, captured + 1)) and reader.lost_total == 0
        assert shards.last_id == captured
        assert statuses.blocks[1].read().restarts == 1
        assert statuses.blocks[0].read().restarts == 0
        assert sensor.log.count("capture-0 started pid=") == 1
        assert sensor.log.count("capture-1 started pid=") == 2
        shards.close()
        statuses.close()
        assert sensor.stop(signal.SIGTERM) == 0, sensor.log


def test_a_pcap_replay_with_two_workers_runs_one_process_and_says_so(
    sensor_factory: SensorFactory,
) -> None:
    path = DATA / "dns.pcap"
    sensor = sensor_factory(
        "--pcap", str(path), config="capture: {workers: 2, replay: {speed: max}}\n"
    )
    status = sensor.status()
    wait_for(lambda: status.read().state == "finished", 30, "the replay to finish")
    assert "capture.workers: 2 ignored" in status.read().last_error
    assert "capture.workers: 2 ignored" in sensor.log
    assert sensor.log.count("capture started pid=") == 1
    assert not any(name.endswith(("-ring-1", "-ring-ids")) for name in sensor.segments())
    status.close()
    assert sensor.stop() == 0, sensor.log


def test_a_group_the_kernel_refuses_leaves_one_process_capturing_and_says_so(
    sensor_factory: SensorFactory,
) -> None:
    """Another program holds the fanout group on this interface in another mode, so the kernel
    refuses our join (EINVAL): shard 0 captures every frame alone, shard 1 stops and is not
    restarted, and the status and the log say why."""
    group = 0xFEED
    with veth_pair(ipv6=False) as pair, pair.packet_socket(host_side=True) as holder:
        join_fanout(holder.fileno(), group, FanoutMode.CPU)
        sensor = sensor_factory(
            "--interface", pair.host_if, "--bpf", f"udp and dst port {PORT}",
            config=f"capture: {{workers: 2, fanout_mode: hash, fanout_group: {group}}}\n",
        )  # fmt: skip
        statuses = shard_statuses(sensor)
        wait_for(lambda: "is not needed: the kernel refused PACKET_FANOUT" in sensor.log, 30,
                 "shard 1 to give up")  # fmt: skip
        first, second = wait_for(
            lambda: (each := statuses.read_all())[0].capturing and each, 30, "shard 0 to capture"
        )
        assert "PACKET_FANOUT refused" in first.last_error and "one process" in first.last_error
        assert second.state == "stopped" and "PACKET_FANOUT refused" in second.last_error
        sent = inject_frames(pair.ns_if, udp_frames(pair, 500), ns=pair.ns)
        total = wait_accounted(statuses, sent)
        assert total.packets_captured + total.kernel_drops == sent
        assert statuses.read_all()[1].packets_captured == 0
        assert "PACKET_FANOUT refused" in total.last_error
        assert sensor.log.count("capture-1 started pid=") == 1  # not restarted
        statuses.close()


def test_records_of_both_shards_decode_like_one(sensor_factory: SensorFactory) -> None:
    """The merged stream carries whole records: ports, protocol and length of every frame."""
    with veth_pair(ipv6=False) as pair:
        sensor = start_two(sensor_factory, pair)
        statuses = shard_statuses(sensor)
        wait_all_capturing(sensor, statuses)
        sent = inject_frames(pair.ns_if, udp_frames(pair, 200), ns=pair.ns)
        wait_accounted(statuses, sent)
        shards = ShardSet.attach(f"{sensor.name}-ring")
        records = shards.reader("oldest").read().records
        assert np.all(records["dst_port"] == PORT)
        assert sorted(np.unique(records["src_port"]).tolist()) == list(range(20000, 20000 + FLOWS))
        del records
        shards.close()
        statuses.close()
        assert sensor.stop() == 0, sensor.log


def test_websocket_resume_and_rest_api_across_two_shards(sensor_factory: SensorFactory) -> None:
    """What clients see of two shards: one id sequence. A WebSocket that leaves and comes back
    with `since` gets every frame sent while it was away, once, in order; the REST API lists,
    details and exports packets of both shards."""
    with veth_pair(ipv6=False) as pair:
        sensor = start_two(sensor_factory, pair, "web: {port: 0, workers: 2}\n")
        statuses = shard_statuses(sensor)
        wait_all_capturing(sensor, statuses)
        token = subprocess.run(
            [sys.executable, "-m", "leireye.cli", "token", "--user", "admin", "-c",
             str(sensor.config_path)], capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        url = f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token={token}"
        subscribe = {"type": "subscribe", "channel": "packets", "filters": {"port": PORT},
                     "options": {"batch": True}}  # fmt: skip

        async def take(count: int, since: int | None) -> list[int]:
            async with client(url) as ws:
                await ws.send(json.dumps({**subscribe, "since": since}))
                await recv_type(ws, "subscribed")
                if since is None:  # live from here: now send the first burst
                    await asyncio.to_thread(
                        inject_frames, pair.ns_if, udp_frames(pair, count), ns=pair.ns
                    )
                ids: list[int] = []
                while len(ids) < count:
                    message = await recv_type(ws, "packets", timeout=20)
                    ids += [p["id"] for p in message["data"]]
                return ids

        first = run(take(500, None))
        assert first == list(range(first[0], first[0] + 500))
        sent = inject_frames(pair.ns_if, udp_frames(pair, 700, first_sport=30000), ns=pair.ns)
        wait_accounted(statuses, 500 + sent)
        assert statuses.read().kernel_drops == 0
        second = run(take(700, first[-1]))
        assert second == list(range(first[-1] + 1, first[-1] + 701))  # no gap, no repeat
        assert all(s.packets_captured > 0 for s in statuses.read_all())

        http = Http(sensor.web_port(), token)
        listed = http.get(f"/api/capture/packets?port={PORT}&limit=1000").json["packets"]
        assert [p["id"] for p in listed] == list(range(second[-1], second[-1] - 1000, -1))
        detail = http.get(f"/api/capture/packets/{first[0]}").json
        assert any(layer["layer"] == "UDP" for layer in detail["layers"])
        export = http.get(f"/api/export/packets?format=json&port={PORT}").json
        assert [p["id"] for p in export] == first + second
