"""The flow layer's invariants for any input: the table conserves packets and bytes whatever the
batching, and the event ring's reader always has `seen + missed == published`."""

from __future__ import annotations

import itertools
import uuid
from functools import cache

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.config import FlowsConfig
from leireye.decode.decode import decode_batch
from leireye.flows.model import Flow
from leireye.flows.rows import FLOW_ROW, to_flows
from leireye.flows.table import FlowTable
from leireye.flows.view import STARTED, FlowView
from leireye.record import LinkType
from tests.flowcheck import raw_rows
from tests.traffic.mix import generate


@cache
def mix_records() -> tuple[np.ndarray, np.ndarray]:
    mix = generate(3000, seed=7)
    records = decode_batch(mix.frames, mix.ts_ns, mix.wire_lens, LinkType.EN10MB).records
    return records, raw_rows(mix.frames)


def flows_of(
    records: np.ndarray, raw: np.ndarray, cuts: list[int], capacity: int
) -> tuple[list[Flow], dict[str, int]]:
    table = FlowTable(FlowsConfig(max_active=capacity), uid_prefix=1)
    bounds = [0, *sorted(set(cuts)), len(records)]
    for lo, hi in itertools.pairwise(bounds):
        table.ingest(records[lo:hi], raw[lo:hi])
    table.end_all()
    return to_flows(table.take_ended()), table.counts


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 3000), max_size=12), st.sampled_from([1024, 4096]))
def test_packets_and_bytes_are_conserved_whatever_the_batches(
    cuts: list[int], capacity: int
) -> None:
    records, raw = mix_records()
    flows, counts = flows_of(records, raw, cuts, capacity)
    ip = records[records["ip_version"] != 0]
    dropped = counts["overflow"] + counts["collisions"]  # records no flow could take, counted
    assert sum(f.orig_pkts + f.resp_pkts for f in flows) + dropped == len(ip)
    assert counts["collisions"] == 0
    if dropped == 0:
        assert sum(f.orig_bytes + f.resp_bytes for f in flows) == int(ip["wire_len"].sum())
    if capacity == 4096:  # nothing evicted: the same flows as in one batch
        whole, _ = flows_of(records, raw, [], capacity)
        key = lambda f: repr((f.vlan, f.transport, f.orig_ip, f.orig_port, f.resp_ip, f.resp_port))  # noqa: E731
        assert sorted(map(key, flows)) == sorted(map(key, whole))
        same = {key(f): (f.orig_pkts, f.resp_pkts, f.history, f.conn_state) for f in whole}
        assert {key(f): (f.orig_pkts, f.resp_pkts, f.history, f.conn_state) for f in flows} == same


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 700), st.integers(1, 900)), min_size=1, max_size=20))
def test_event_readers_see_or_count_every_event(steps: list[tuple[int, int]]) -> None:
    name = f"leireye-test-{uuid.uuid4().hex[:10]}-flows"
    writer = FlowView.create(name, FlowsConfig(events=1024), owner=None)
    reader = FlowView.attach(name)
    try:
        cursor = published = seen = missed = 0
        last = 0
        for write, read in steps:
            writer.add_events(STARTED, np.zeros(write, dtype=FLOW_ROW))
            published += write
            got = reader.events_after(cursor, read)
            seqs = got.seqs.tolist()
            assert seqs == sorted(seqs) and (not seqs or seqs[0] > last)
            last = seqs[-1] if seqs else last
            seen += len(seqs)
            missed += got.missed
            cursor = got.cursor
        while cursor < published:
            got = reader.events_after(cursor, 1024)
            seen, missed, cursor = seen + len(got.seqs), missed + got.missed, got.cursor
        assert seen + missed == published
    finally:
        reader.close()
        writer.unlink()
        writer.close()
