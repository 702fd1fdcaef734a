"""The flow store's `icmp_id` column, added after `sensor`: files written before it (with or
without `sensor`) read it as null beside new ones, in every query and after compaction."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from leireye.flows.compact import Compactor
from leireye.flows.history import FlowHistory
from leireye.flows.layout import BY_RESP, part_files
from leireye.flows.model import Flow
from leireye.flows.query import parse_flow_filter
from tests.unit.test_flowstore import HOUR_S, NOW_NS, NOW_S, SECOND, Clock, bare_flow, writer

HOUR_NS = HOUR_S * SECOND


def _write(directory: Path, flows: list[Flow], drop: list[str]) -> None:
    """One writer's files, rewritten without the columns `drop` (as an older store wrote)."""
    before = {p.path for p in part_files(directory, "flows")}
    w = writer(directory)
    w.add_flows(flows)
    w.close()
    for part in part_files(directory, "flows"):
        if part.path in before or not drop:
            continue
        for path in (part.path, directory / BY_RESP / part.path.parent.name / part.path.name):
            pq.write_table(pq.read_table(path).drop_columns(drop), path)


def _ping(uid: str, at_ns: int, **changes: object) -> Flow:
    return bare_flow(uid, transport="ICMP", orig_port=8, resp_port=0, first_ns=at_ns,
                     last_ns=at_ns, **changes)  # fmt: skip


def _store(directory: Path) -> dict[str, int | None]:
    """Three hours: one as written before `sensor`, one mixing files before `icmp_id` with a
    new one, one of files before `icmp_id` only. The ids each flow must read back."""
    h1, h2, h3 = (NOW_NS - k * HOUR_NS for k in (3, 2, 1))
    _write(directory, [bare_flow("Cold", first_ns=h1, last_ns=h1)], ["sensor", "icmp_id"])
    _write(directory, [_ping("Cmid", h2, sensor="east")], ["icmp_id"])
    _write(directory, [_ping("Cnew", h2 + SECOND, sensor="east", icmp_id=0)], [])
    _write(directory, [_ping("Clate", h3), bare_flow("Cudp", first_ns=h3, last_ns=h3)], ["icmp_id"])
    return {"Cold": None, "Cmid": None, "Cnew": 0, "Clate": None, "Cudp": None}


def _answers(directory: Path) -> list[object]:
    history = FlowHistory(directory)
    try:
        found: list[object] = []
        for spec in ({}, {"ip": "10.0.0.1"}, {"protocol": "icmp"}, {"sensor": "east"}):
            flows, total = history.flows(flt=parse_flow_filter(spec), limit=100, sort="start")
            found.append(([(f.uid, f.icmp_id, f.sensor) for f in flows], total))
        found += [[(f.uid, f.icmp_id) for f in history.flow(uid)] for uid in ("Cmid", "Cnew")]
        return found
    finally:
        history.close()


def test_old_files_read_icmp_id_as_null_before_and_after_compaction(tmp_path: Path) -> None:
    expected = _store(tmp_path)
    schemas = [pq.read_schema(p.path).names for p in part_files(tmp_path, "flows")]
    assert sum("icmp_id" not in names for names in schemas) == 3
    history = FlowHistory(tmp_path)
    try:
        flows, total = history.flows(limit=100)
        assert total == 5
        assert {f.uid: f.icmp_id for f in flows} == expected
        assert {f.uid: f.sensor for f in flows}["Cmid"] == "east"
    finally:
        history.close()
    before = _answers(tmp_path)
    assert before[-2:] == [[("Cmid", None)], [("Cnew", 0)]]
    compactor = Compactor(writer(tmp_path, Clock(NOW_S + 3 * HOUR_S), flush_s=30.0),
                          clock=Clock(NOW_S + 3 * HOUR_S))  # fmt: skip
    compactor.run_once()
    assert compactor.counts.hours == 3 and compactor.counts.failed == 0
    merged = [p for p in part_files(tmp_path, "flows") if p.kind == "merged"]
    assert len(merged) == 3
    assert all("icmp_id" in pq.read_schema(p.path).names for p in merged)
    assert _answers(tmp_path) == before
