"""ICMP flows keyed by (folded type, identifier): frames made by hand, decoded by the sensor's
decoder, fed to a `FlowTable` (no sensor)."""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt

from leireye.config import FlowsConfig
from leireye.decode.decode import decode_batch
from leireye.flows.model import Flow
from leireye.flows.rows import to_flows
from leireye.flows.table import FlowTable
from leireye.record import LinkType
from leireye.web.api.flows import packet_ids
from tests.inprocess import Frames, InProcessSensor
from tests.traffic import frames as fb

A, B, A6, B6 = "10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"


def echo(src: str, dst: str, icmp_type: int, ident: int | None, seq: int = 1) -> bytes:
    body = b"" if ident is None else struct.pack("!HH", ident, seq) + b"payload"
    if ":" in src:
        return fb.ether(fb.ipv6(dpkt.icmp6.ICMP6(type=icmp_type, data=body), 58, src, dst), 0x86DD)
    return fb.ether(fb.ipv4(dpkt.icmp.ICMP(type=icmp_type, data=body), 1, src, dst), 0x0800)


def ping(ident: int, n: int, v6: bool = False) -> list[bytes]:
    """`n` requests from A to B, each answered."""
    (a, b), (req, rep) = ((A6, B6), (128, 129)) if v6 else ((A, B), (8, 0))
    out = []
    for seq in range(n):
        out += [echo(a, b, req, ident, seq), echo(b, a, rep, ident, seq)]
    return out


def flows_of(frames: list[bytes], batch: int = 0) -> list[Flow]:
    records = decode_batch(frames, range(1, len(frames) + 1), [len(f) for f in frames],
                           LinkType.EN10MB).records  # fmt: skip
    table = FlowTable(FlowsConfig(max_active=64))
    step = batch or len(records)
    for lo in range(0, len(records), step):
        table.ingest(records[lo : lo + step])
    table.end_all()
    flows = to_flows(table.take_ended())
    return sorted(flows, key=lambda f: (f.transport, -1 if f.icmp_id is None else f.icmp_id,
                                        f.orig_port or 0))  # fmt: skip


def summary(flows: list[Flow]) -> list[tuple[object, ...]]:
    return [(f.transport, f.orig_ip, f.icmp_id, f.orig_port, f.orig_pkts, f.resp_pkts)
            for f in flows]  # fmt: skip


def interleave(*runs: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for i in range(max(map(len, runs))):
        out += [run[i] for run in runs if i < len(run)]
    return out


def test_two_pings_at_once_are_two_flows_with_their_replies() -> None:
    frames = interleave(ping(7, 3), ping(9, 2), ping(7, 2, v6=True), ping(0, 1, v6=True))
    expected = [("ICMP", A, 7, 8, 3, 3), ("ICMP", A, 9, 8, 2, 2),
                ("ICMPv6", A6, 0, 128, 1, 1), ("ICMPv6", A6, 7, 128, 2, 2)]  # fmt: skip
    assert summary(flows_of(frames)) == expected
    for batch in (1, 3):  # a reply in another batch than its request finds its flow
        assert summary(flows_of(frames, batch)) == expected


def test_a_reply_seen_first_makes_the_replier_the_originator() -> None:
    flows = flows_of([echo(B, A, 0, 5), echo(A, B, 8, 5)])
    assert summary(flows) == [("ICMP", B, 5, 0, 1, 1)]


def test_messages_without_an_identifier_are_keyed_by_type_alone() -> None:
    unreachable = [echo(B, A, 3, None), echo(B, A, 3, None)]
    cut = echo(A, B, 8, 7)[: 14 + 20 + 4]  # an echo whose identifier was not captured
    flows = flows_of([*unreachable, cut, *ping(7, 1)])
    assert summary(flows) == [
        ("ICMP", B, None, 3, 2, 0), ("ICMP", A, None, 8, 1, 0), ("ICMP", A, 7, 8, 1, 1),
    ]  # fmt: skip


def test_a_ping_to_itself_is_one_flow() -> None:
    flows = flows_of([echo(A, A, 8, 3), echo(A, A, 0, 3), echo(A, A, 8, 4)])
    assert sorted((f.icmp_id, f.orig_pkts + f.resp_pkts) for f in flows) == [(3, 2), (4, 1)]


def test_the_identifier_is_not_a_port_of_the_flow() -> None:
    """The flow's ports stay the type and code of its first packet, whatever the identifier;
    a UDP flow has no identifier."""
    udp = fb.ether(fb.ipv4(fb.udp(4660, 4660), 17, A, B), 0x0800)
    flows = flows_of([udp, *ping(4660, 1)])
    assert summary(flows) == [("ICMP", A, 4660, 8, 1, 1), ("UDP", A, None, 4660, 1, 0)]
    assert (flows[0].resp_port, flows[1].resp_port) == (0, 4660)


def test_a_ping_flow_lists_its_own_packets_in_the_ring(tmp_path: Path) -> None:
    """`GET /api/flows/{uid}`'s packet ids: the other ping between the same hosts is not its."""
    frames = interleave(ping(7, 3), ping(9, 2))
    sensor = InProcessSensor(tmp_path, capacity=64)
    try:
        ids = sensor.write(Frames(LinkType.EN10MB, list(range(1, len(frames) + 1)), frames))
        flows = {f.icmp_id: f for f in flows_of(frames)}
        idents = [struct.unpack_from("!H", f, 14 + 20 + 4)[0] for f in frames]
        for ident in (7, 9):
            mine = [i for i, x in zip(ids, idents, strict=True) if x == ident]
            flow = flows[ident]
            assert packet_ids(sensor.hub.ring, flow, flow.first_ns) == mine
    finally:
        sensor.close()
