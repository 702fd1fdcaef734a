"""The flow layer's invariants for any input: the table conserves packets and bytes whatever the
batching, and the event ring's reader always has `seen + missed == published`."""

from __future__ import annotations

import itertools
import uuid
from functools import cache
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.config import FlowsConfig
from leireye.decode.decode import decode_batch
from leireye.flows.columns import flows_table, flows_table_from_rows
from leireye.flows.model import Flow
from leireye.flows.rows import END_REASONS, FLOW_ROW, TEXT_FIELDS, to_flows
from leireye.flows.table import FlowTable
from leireye.flows.tcpstate import CONN_STATES
from leireye.flows.view import STARTED, FlowView
from leireye.record import APP_LABELS, PROTO_LABELS, LinkType
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


# -- the store's direct path: rows -> Arrow, without a Flow per row -----------------------------


def _row_strategy() -> st.SearchStrategy[dict[str, Any]]:
    u64 = st.integers(0, 2**64 - 1)
    count = st.integers(0, 2**48)
    text = st.one_of(st.just(b""), st.text(max_size=30).map(lambda t: t.encode()),
                     st.binary(max_size=20))  # fmt: skip
    v4 = st.integers(0, 2**32 - 1).map(lambda v: (0, (0xFFFF << 32) | v))
    address = st.one_of(v4, st.tuples(u64, u64))
    return st.fixed_dictionaries({
        "uid": u64, "first_ns": st.integers(0, 2**62), "span": st.integers(0, 2**40),
        "orig": address, "resp": st.one_of(address, st.just((0, (0xFFFF << 32) | 1))),
        "orig_pkts": count, "orig_bytes": count, "resp_pkts": count, "resp_bytes": count,
        "vlan": st.sampled_from([0xFFFF, 0, 7, 4094]), "orig_port": st.integers(0, 65535),
        "resp_port": st.integers(0, 65535), "ip_version": st.sampled_from([4, 6]),
        "proto": st.integers(0, len(PROTO_LABELS) - 1), "app": st.integers(0, len(APP_LABELS) - 1),
        "has_ports": st.sampled_from([0, 1]), "conn_state": st.integers(0, len(CONN_STATES) - 1),
        "end_reason": st.integers(0, len(END_REASONS) - 1),
        "icmp_id": st.sampled_from([-1, 0, 7, 65535]),
        "history": st.text("ShADadFfRrTtCcWwIiQq^", max_size=13).map(str.encode),
        "texts": st.lists(text, min_size=len(TEXT_FIELDS), max_size=len(TEXT_FIELDS)),
    })  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(_row_strategy(), max_size=40))
def test_the_store_gets_the_same_table_from_rows_as_from_flows(
    rows: list[dict[str, object]],
) -> None:
    out = np.zeros(len(rows), dtype=FLOW_ROW)
    for i, r in enumerate(rows):
        row = out[i : i + 1]
        row["uid"], row["first_ns"] = r["uid"], r["first_ns"]
        row["last_ns"] = int(r["first_ns"]) + int(r["span"])
        (row["orig_hi"], row["orig_lo"]), (row["resp_hi"], row["resp_lo"]) = r["orig"], r["resp"]
        for name in ("orig_pkts", "orig_bytes", "resp_pkts", "resp_bytes", "vlan", "orig_port",
                     "resp_port", "ip_version", "proto", "app", "has_ports", "conn_state",
                     "end_reason", "history", "icmp_id"):  # fmt: skip
            row[name] = r[name]
        for name, value in zip(TEXT_FIELDS, r["texts"], strict=True):
            row[name] = value[: FLOW_ROW[name].itemsize]
    direct = flows_table_from_rows(out)
    via_flows = flows_table(to_flows(out))
    assert direct.schema == via_flows.schema
    for name in direct.column_names:
        assert direct.column(name).to_pylist() == via_flows.column(name).to_pylist(), name
