"""Hourly compaction of the flow store: the same answers before and after, at every crash
point, and with retention."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest

from leireye.flows.compact import PARTS_KEEP_S, Compactor
from leireye.flows.history import FLOW_SORTS, FlowHistory
from leireye.flows.layout import BY_RESP, hour_files, part_files
from leireye.flows.query import parse_flow_filter
from tests.unit.test_flowstore import HOUR_S, NOW_NS, NOW_S, SECOND, Clock, random_flows, writer

LATER_S = NOW_S + 3 * HOUR_S  # every hour of the store finished
SPECS = ({}, {"ip": "10.0.0.5"}, {"ip": "192.168.1.1"}, {"src_ip": "10.0.1.0/24"},
         {"protocol": "udp", "dst_port": "53"})  # fmt: skip
RANGES = ((None, None), (NOW_NS - 2 * HOUR_S * SECOND + 1234, NOW_NS - HOUR_S * SECOND // 3))


def build(directory: Path) -> None:
    """Four hours of flows, many parts each; one part without the `sensor` and `icmp_id` columns."""
    flows = random_flows(600, seed=5)
    w = writer(directory, Clock(), flush_s=30.0)
    for start in range(0, len(flows), 40):
        w.add_flows(flows[start : start + 40])
        w.flush()
    w.close()
    first = sorted(part_files(directory, "flows"), key=lambda p: p.path.name)[0]
    for table in ("flows", BY_RESP):  # as written before the columns
        path = directory / table / first.path.parent.name / first.path.name
        pq.write_table(pq.read_table(path).drop_columns(["sensor", "icmp_id"]), path)


def answers(directory: Path) -> list[Any]:
    history = FlowHistory(directory)
    found: list[Any] = []
    for spec in SPECS:
        flt = parse_flow_filter(spec)
        for low, high in RANGES:
            for sort in FLOW_SORTS:
                for descending in (True, False) if sort == "start" else (True,):
                    found.append(
                        history.flows(low, high, flt, sort=sort, descending=descending, limit=50)
                    )
            found.append(history.flows(low, high, flt, limit=20, offset=30))
    found.append(history.flow("C000007"))
    found.append(history.host("10.0.0.5", NOW_NS - 4 * HOUR_S * SECOND, NOW_NS, 600 * SECOND))
    history.close()
    return found


def compactor(directory: Path, clock: Clock) -> Compactor:
    return Compactor(writer(directory, clock, flush_s=30.0), clock=clock)


def kinds(directory: Path, table: str = "flows") -> list[str]:
    return sorted({p.name.split("-")[0] for p in (directory / table).glob("hour=*/*.parquet")})


def test_answers_are_the_same_before_and_after_and_parts_go_later(tmp_path: Path) -> None:
    build(tmp_path)
    before = answers(tmp_path)
    assert len(list(part_files(tmp_path, "flows"))) > 8
    clock = Clock(LATER_S)
    c = compactor(tmp_path, clock)
    c.run_once()
    assert c.counts.hours == len(list((tmp_path / "flows").iterdir())) == 4
    assert c.counts.rows == 600
    assert kinds(tmp_path) == kinds(tmp_path, BY_RESP) == ["merged", "part"]  # parts kept
    assert [p.kind for p in part_files(tmp_path, "flows")] == ["merged"] * 4
    assert answers(tmp_path) == before
    merged = next(iter(part_files(tmp_path, "flows"))).path
    assert pq.ParquetFile(merged).schema_arrow.names[-1] == "sensor"
    clock.now += PARTS_KEEP_S + 1
    c.run_once()
    assert kinds(tmp_path) == kinds(tmp_path, BY_RESP) == ["merged"]
    assert c.counts.hours == 4 and c.counts.parts_deleted > 16
    assert answers(tmp_path) == before
    assert oct(merged.stat().st_mode & 0o777) == "0o640"


def test_merged_files_have_row_groups_of_their_own_size_and_answer_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(tmp_path)
    before = answers(tmp_path)
    import leireye.flows.compact as compact

    monkeypatch.setattr(compact, "MERGED_ROW_GROUP_ROWS", 16)  # many groups per merged file
    compactor(tmp_path, Clock(LATER_S)).run_once()
    for table in ("flows", BY_RESP):
        for merged in (tmp_path / table).glob("hour=*/merged-*.parquet"):
            meta = pq.ParquetFile(merged).metadata
            rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            assert len(rows) > 3 and set(rows[:-1]) == {16} and 0 < rows[-1] <= 16
    assert answers(tmp_path) == before


def test_rows_filed_into_a_merged_hour_are_late_files_read_beside_it(tmp_path: Path) -> None:
    build(tmp_path)
    clock = Clock(LATER_S)
    c = compactor(tmp_path, clock)
    c.run_once()
    late = msgspec.structs.replace(random_flows(1, seed=99)[0], uid="Clate")
    w = writer(tmp_path, clock, flush_s=30.0)
    w.add_flows([late])
    w.close()
    assert "late" in kinds(tmp_path) and "late" in kinds(tmp_path, BY_RESP)
    assert FlowHistory(tmp_path).flow(late.uid) == [late]
    c.run_once()  # a merged hour is not merged again
    assert c.counts.hours == 4


def crash_states(base: Path, root: Path) -> dict[str, Path]:
    """The store as a crash at each step of a compaction leaves it."""
    states: dict[str, Path] = {}
    done = root / "merged-parts-left"  # step 3 not done
    shutil.copytree(base, done)
    compactor(done, Clock(LATER_S)).run_once()
    twin_only = root / "twin-only"  # between steps 1 and 2
    shutil.copytree(done, twin_only)
    for path in (twin_only / "flows").glob("hour=*/merged-*"):
        path.unlink()
    temporaries = root / "temporaries"  # within step 1
    shutil.copytree(twin_only, temporaries)
    for path in (temporaries / BY_RESP).glob("hour=*/merged-*"):
        path.rename(path.with_name(f".{path.name}.tmp"))
        shutil.copy(path.with_name(f".{path.name}.tmp"),
                    temporaries / "flows" / path.parent.name / f".{path.name}.tmp")  # fmt: skip
    half_deleted = root / "half-deleted"  # within step 3: the flows parts gone, not the twins'
    shutil.copytree(done, half_deleted)
    for path in (half_deleted / "flows").glob("hour=*/part-*"):
        path.unlink()
    states.update({p.name: p for p in (done, twin_only, temporaries, half_deleted)})
    return states


@pytest.mark.parametrize("state", ["merged-parts-left", "twin-only", "temporaries", "half-deleted"])
def test_a_crash_at_any_step_leaves_the_same_answers(tmp_path: Path, state: str) -> None:
    base = tmp_path / "base"
    build(base)
    before = answers(base)
    store = crash_states(base, tmp_path)[state]
    assert answers(store) == before  # read as the crash left it
    clock = Clock(LATER_S)
    c = compactor(store, clock)  # a restart: the writer cleans up, the compactor finishes
    assert not list(store.rglob(".*.tmp"))
    assert answers(store) == before
    c.run_once()
    clock.now += PARTS_KEEP_S + 1
    c.run_once()
    assert kinds(store) == kinds(store, BY_RESP) == ["merged"]
    assert answers(store) == before


def test_a_part_written_during_a_merge_makes_it_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(tmp_path)
    before = answers(tmp_path)
    c = compactor(tmp_path, Clock(LATER_S))
    import leireye.flows.compact as compact

    original = compact._write_stream
    hour = sorted((tmp_path / "flows").iterdir())[0]

    def meanwhile(folder: Path, name: str, batches: Any) -> Path:
        written = original(folder, name, batches)
        if folder == hour:  # the flows file of the first hour: a part arrives before its commit
            part = next(p for p in hour.iterdir() if p.name.startswith("part-"))
            shutil.copy(part, hour / part.name.replace(".parquet", "9999.parquet"))
        return written

    monkeypatch.setattr(compact, "_write_stream", meanwhile)
    c.run_once()
    assert c.counts.redone == 1 and c.counts.hours == 3
    assert [f.kind for f in hour_files(hour)] == ["part"] * len(list(hour.iterdir()))
    assert not list((tmp_path / BY_RESP / hour.name).glob("merged-*"))
    assert len(answers(tmp_path)) == len(before)


def test_retention_deletes_merged_hours_by_age_and_size(tmp_path: Path) -> None:
    build(tmp_path)
    clock = Clock(LATER_S)
    c = compactor(tmp_path, clock)
    clock.now += PARTS_KEEP_S + 1
    c.run_once()
    c.run_once()
    hours = sorted(p.name for p in (tmp_path / "flows").iterdir())
    w = writer(tmp_path, clock, flows_days=1.0)
    clock.now = NOW_S + 86400 - HOUR_S  # the two oldest hours ended a day ago
    assert w.enforce_retention() == hours[:2]
    sizes = [sum(f.stat().st_size for t in ("flows", BY_RESP, "hosts", "apps")
                 for f in (tmp_path / t / h).glob("*")) for h in hours[2:]]  # fmt: skip
    w.max_bytes = sizes[1] + 1
    assert w.enforce_retention() == hours[2:3]
    assert [p.path.parent.name for p in part_files(tmp_path, "flows")] == hours[3:]
    assert not (tmp_path / BY_RESP / hours[2]).exists()


def test_the_thread_stops_at_once(tmp_path: Path) -> None:
    c = compactor(tmp_path, Clock(LATER_S))
    c.start()
    c.stop(timeout_s=10.0)
    assert c._thread is not None and not c._thread.is_alive()
