"""Fanout without root: shard counts, the refused join, and the summed status of shards."""

from __future__ import annotations

import socket

import pytest

from leireye.capture.fanout import (
    FanoutJoin,
    FanoutMode,
    FanoutRefused,
    ShardSpec,
    capture_shards,
    shard_specs,
)
from leireye.config import parse_config
from leireye.errors import ConfigError
from leireye.ring.shardstatus import sum_statuses
from leireye.ring.status import CaptureState, CaptureStatus


@pytest.mark.parametrize(
    ("capture", "cores", "expected"),
    [
        ({}, 8, 1),
        ({"workers": 3}, 8, 3),
        ({"workers": "auto"}, 8, 7),
        ({"workers": "auto"}, 1, 1),
        ({"workers": 4, "pcap": "x.pcap"}, 8, 1),  # a replay is one process
    ],
)
def test_capture_shards(capture: dict[str, object], cores: int, expected: int) -> None:
    assert capture_shards(parse_config({"capture": capture}), cores) == expected


def test_specs_share_one_group_from_the_supervisor_pid() -> None:
    specs = shard_specs(parse_config({"capture": {"workers": 2, "fanout_mode": "lb"}}), 0x12345)
    assert [s.index for s in specs] == [0, 1]
    assert {(s.count, s.group, s.mode) for s in specs} == {(2, 0x2345, FanoutMode.LB)}


def test_a_fixed_group_replaces_the_pid_and_is_range_checked() -> None:
    config = parse_config({"capture": {"workers": 2, "fanout_group": 4242}})
    assert {s.group for s in shard_specs(config, 0x12345)} == {4242}
    with pytest.raises(ConfigError, match="fanout_group"):
        parse_config({"capture": {"fanout_group": 65536}})


def test_a_refused_join_leaves_shard_0_alone_and_stops_the_others() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # not AF_PACKET: refused
        first = FanoutJoin(ShardSpec(index=0, count=2, group=7), "eth9")
        first(sock.fileno())
        assert "PACKET_FANOUT refused on eth9" in first.refused
        assert "one process instead of 2" in first.refused
        with pytest.raises(FanoutRefused, match="refused"):
            FanoutJoin(ShardSpec(index=1, count=2, group=7), "eth9")(sock.fileno())
        sock.getsockname()  # the socket itself is still open


def test_statuses_of_shards_add_up() -> None:
    a = CaptureStatus(
        state=CaptureState.CAPTURING, capturing=True, interface="eth0", pid=10,
        bpf="udp", effective_bpf="(udp) and not (tcp port 8000)", started_at_ns=5,
        packets_captured=100, bytes_captured=1000, kernel_drops=2,
        if_drops=1, decode_errors=3, decode_errors_by_kind={"truncated": 3}, restarts=0,
        heartbeat_ns=50,
    )  # fmt: skip
    b = CaptureStatus(
        state=CaptureState.STOPPED, capturing=False, interface="eth0", pid=11,
        started_at_ns=4, packets_captured=50, bytes_captured=500, kernel_drops=5,
        decode_errors=1, decode_errors_by_kind={"truncated": 1, "malformed": 0}, restarts=2,
        last_error="PACKET_FANOUT refused",
    )  # fmt: skip
    total = sum_statuses([a, b])
    assert total.state == CaptureState.CAPTURING and total.capturing
    assert (total.packets_captured, total.bytes_captured) == (150, 1500)
    assert (total.kernel_drops, total.if_drops, total.decode_errors) == (7, 1, 4)
    assert total.decode_errors_by_kind == {"truncated": 4, "malformed": 0}
    assert (total.pid, total.started_at_ns, total.restarts) == (10, 4, 2)
    assert total.last_error == "shard 1: PACKET_FANOUT refused"
    assert total.heartbeat_ns == 50
    assert (total.bpf, total.effective_bpf) == (a.bpf, a.effective_bpf)
    assert sum_statuses([a]) is a


def test_drops_of_a_restarted_shard_are_added_not_subtracted() -> None:
    import uuid

    from leireye.ring.segments import StatusDrops
    from leireye.ring.status import StatusBlock

    name = f"leireye-test-{uuid.uuid4().hex[:10]}-status"
    blocks = [StatusBlock.create(n) for n in (name, f"{name}-1")]
    try:
        drops = StatusDrops(name, 2)
        blocks[0].write(CaptureStatus(kernel_drops=10, if_drops=1))
        blocks[1].write(CaptureStatus(kernel_drops=5))
        assert drops() == (15, 1)
        blocks[1].write(CaptureStatus(kernel_drops=2))  # shard 1 restarted: counts from 0
        blocks[0].write(CaptureStatus(kernel_drops=12, if_drops=1))
        assert drops() == (19, 1)
        drops._blocks.close()
    finally:
        for block in blocks:
            block.unlink()
            block.close()
