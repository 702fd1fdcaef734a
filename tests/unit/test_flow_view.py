"""The flow view's shared memory (snapshot, event ring) and the host table, without a sensor."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from leireye.config import FlowsConfig
from leireye.decode.decode import decode_batch
from leireye.flows.hosts import MINUTE_NS, QUIET_GRACE_NS
from leireye.flows.live import LiveState
from leireye.flows.rows import FLOW_ROW
from leireye.flows.view import ENDED, STARTED, FlowView, host_rows
from tests.flowcheck import DATA_DIR, raw_rows, read_frames


@pytest.fixture
def views() -> Iterator[tuple[FlowView, FlowView]]:
    config = FlowsConfig(events=1024, snapshot_flows=5, snapshot_hosts=3)
    name = f"leireye-test-{uuid.uuid4().hex[:10]}-flows"
    owner = FlowView.create(name, config, owner=None)
    reader = FlowView.attach(name)
    yield owner, reader
    reader.close()
    owner.unlink()
    owner.close()


def rows(n: int, first_uid: int = 1) -> np.ndarray:
    out = np.zeros(n, dtype=FLOW_ROW)
    out["uid"] = np.arange(first_uid, first_uid + n)
    return out


def test_events_after_a_cursor_count_what_was_missed(views: tuple[FlowView, FlowView]) -> None:
    writer, reader = views
    writer.add_events(STARTED, rows(10))
    got = reader.events_after(0)
    assert (got.seqs.tolist(), got.missed, got.cursor) == (list(range(1, 11)), 0, 10)
    assert got.rows["uid"].tolist() == list(range(1, 11))
    writer.add_events(ENDED, rows(3000, 11))  # more than the ring holds
    later = reader.events_after(got.cursor, 100_000)
    assert len(later.seqs) == 1024
    assert len(later.seqs) + later.missed == 3000
    assert later.seqs[0] == 3010 - 1023 and set(later.kinds.tolist()) == {ENDED}
    assert reader.events_after(later.cursor).seqs.size == 0


def test_a_row_overwritten_under_the_reader_is_missed(views: tuple[FlowView, FlowView]) -> None:
    writer, reader = views
    writer.add_events(STARTED, rows(10))
    writer._events["seq"][5] = 0  # as a writer in the middle of that row leaves it
    got = reader.events_after(0)
    assert (len(got.seqs), got.missed) == (9, 1)


def test_snapshot_of_a_live_state(views: tuple[FlowView, FlowView]) -> None:
    writer, reader = views
    linktype, ts, wire, frames = read_frames(DATA_DIR / "mixed.pcap")
    state = LiveState(FlowsConfig(max_active=1024, max_hosts=256))
    state.feed(decode_batch(frames, ts, wire, linktype).records, raw_rows(frames))
    writer.publish(state.table.top_rows(5), host_rows(state.hosts, 3), {"records": 235})
    flows, hosts, counters = reader.snapshot()
    assert counters["records"] == 235 and len(flows) == 5 and len(hosts) == 3
    sizes = [f.orig_bytes + f.resp_bytes for f in reader.active()]
    assert sizes == sorted(sizes, reverse=True)
    everything = state.table.rows(np.flatnonzero(state.table.used))
    assert sizes[0] == max(everything["orig_bytes"] + everything["resp_bytes"])
    top = reader.hosts()
    assert top[0].ip == "10.77.1.1" and top[0].bytes_sent + top[0].bytes_recv > 0
    server = next(h for h in top if h.ip == "10.77.1.2")
    assert "example.org" in server.names


def test_hosts_count_both_directions_and_minutes() -> None:
    linktype, ts, wire, frames = read_frames(DATA_DIR / "http.pcap")
    state = LiveState(FlowsConfig(max_active=1024, max_hosts=256))
    records = decode_batch(frames, ts, wire, linktype).records
    state.feed(records, raw_rows(frames))
    state.end_all()
    state.take_ended()
    hosts = {h.ip: h for h in state.hosts.top(10)}
    client, server = hosts["10.77.1.1"], hosts["10.77.1.2"]
    assert (client.pkts_sent, client.bytes_sent) == (server.pkts_recv, server.bytes_recv)
    assert server.ports_served == [80] and client.ports_served == []
    assert client.peers == 1
    ((minute_hosts, apps),) = state.take_minutes(flush=True)
    ip_records = records[records["ip_version"] != 0]
    assert sum(a.packets for a in apps) == len(ip_records)
    assert sum(a.bytes for a in apps) == int(ip_records["wire_len"].sum())
    by_ip = {m.ip: m for m in minute_hosts}
    assert by_ip["10.77.1.1"].peers == ["10.77.1.2"]
    assert by_ip["10.77.1.1"].bytes_sent == client.bytes_sent


def test_a_quiet_network_closes_its_last_minute_by_the_clock() -> None:
    """The last busy minute is stored once the clock is past it (plus the grace for late
    records), not when the next packet arrives, which on a quiet network may be hours later."""
    linktype, ts, wire, frames = read_frames(DATA_DIR / "http.pcap")
    state = LiveState(FlowsConfig(max_active=1024, max_hosts=256))
    state.feed(decode_batch(frames, ts, wire, linktype).records, raw_rows(frames))
    end = (max(ts) // MINUTE_NS + 1) * MINUTE_NS  # the end of the packets' minute
    state.expire(end + QUIET_GRACE_NS - 1)
    assert state.take_minutes() == []  # late records may still come
    state.expire(end + QUIET_GRACE_NS)
    ((minute_hosts, apps),) = state.take_minutes()
    assert {m.ip for m in minute_hosts} >= {"10.77.1.1", "10.77.1.2", "fd77:1::1", "fd77:1::2"}
    assert all(m.minute_ns == end - MINUTE_NS for m in minute_hosts) and apps
    state.expire(end + 5 * MINUTE_NS)  # quiet minutes store nothing
    assert state.take_minutes(flush=True) == []


def test_host_eviction_is_counted() -> None:
    state = LiveState(FlowsConfig(max_active=1024, max_hosts=256))
    linktype, ts, wire, frames = read_frames(DATA_DIR / "mixed.pcap")
    records = decode_batch(frames, ts, wire, linktype).records
    for i in range(300):  # 300 clients, one packet each, to one server
        one = records[records["ip_version"] == 4][:1].copy()
        one["src_lo"] = np.uint64(0xFFFF_0A00_0000 + i)
        state.feed(one)
    assert state.hosts.active <= 256 and state.hosts.counts["evicted"] > 0
