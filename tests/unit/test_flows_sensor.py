"""Flows carry `sensor`: the fleet's flows message (one encoder, one decoder), the store's
`sensor` column read beside files written before it existed, and the `sensor` filter."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest

from leireye.fleet.flowmsg import decode_flows, encode_flows
from leireye.fleet.model import FleetError
from leireye.flows.history import FlowHistory
from leireye.flows.layout import BY_RESP, part_files
from leireye.flows.model import Flow
from leireye.flows.query import FilterValueError, FlowFilter, parse_flow_filter
from tests.unit.test_flowstore import HOUR_S, NOW_NS, SECOND, bare_flow, full_flow, writer


def _legacy(directory: Path) -> None:
    """Rewrite every data file as the store wrote it before the `sensor` column (and the
    later `icmp_id`)."""
    for table in ("flows", BY_RESP):
        for part in part_files(directory, table):
            data = pq.read_table(part.path)
            pq.write_table(data.drop_columns(["sensor", "icmp_id"]), part.path)


def _store(directory: Path) -> None:
    """An old hour (no column), and a newer one with flows of two sensors and one without."""
    old = writer(directory)
    old.add_flows([bare_flow("Cold1", last_ns=NOW_NS - 3 * HOUR_S * SECOND,
                             first_ns=NOW_NS - 3 * HOUR_S * SECOND)])  # fmt: skip
    old.close()
    _legacy(directory)
    assert all("sensor" not in pq.read_schema(p.path).names for p in part_files(directory, "flows"))
    new = writer(directory)
    new.add_flows([
        full_flow("Ceast1", sensor="east"),
        bare_flow("Cwest1", sensor="west"),
        bare_flow("Cwest2", sensor="west", orig_ip="10.0.0.9"),
        bare_flow("Clone1"),
    ])  # fmt: skip
    new.close()


def test_old_files_read_as_sensor_null_beside_new_ones(tmp_path: Path) -> None:
    _store(tmp_path)
    history = FlowHistory(tmp_path)
    try:
        flows, total = history.flows(limit=100)
        assert total == 5
        assert {f.uid: f.sensor for f in flows} == {
            "Cold1": None, "Ceast1": "east", "Cwest1": "west", "Cwest2": "west", "Clone1": None,
        }  # fmt: skip
        assert history.flows(flt=parse_flow_filter({"sensor": "west"}))[1] == 2
        both = history.flows(flt=parse_flow_filter({"sensor": "west,east"}))[0]
        assert sorted(f.uid for f in both) == ["Ceast1", "Cwest1", "Cwest2"]
        listed = parse_flow_filter({"sensor": ["east"], "ip": "2001:db8::2"})
        assert [f.uid for f in history.flows(flt=listed)[0]] == ["Ceast1"]
        one = history.flows(flt=parse_flow_filter({"sensor": "west", "ip": "10.0.0.9"}))[0]
        assert [f.uid for f in one] == ["Cwest2"]  # the two-scan `ip` query, mixed files
        assert history.flows(flt=parse_flow_filter({"sensor": "north"})) == ([], 0)
        assert [f.sensor for f in history.flow("Cold1")] == [None]
        assert [f.sensor for f in history.flow("Ceast1")] == ["east"]
        found = history.host("10.0.0.1", NOW_NS - 4 * HOUR_S * SECOND, NOW_NS, 3600 * SECOND)
        assert found is not None and found["peers"][0]["flows"] == 3
    finally:
        history.close()


def test_a_store_of_old_files_only_answers_and_filters(tmp_path: Path) -> None:
    directory = tmp_path
    old = writer(directory)
    old.add_flows([bare_flow("Cold1"), full_flow("Cold2")])
    old.close()
    _legacy(directory)
    history = FlowHistory(directory)
    try:
        assert sorted(f.uid for f in history.flows()[0]) == ["Cold1", "Cold2"]
        assert history.flows(flt=parse_flow_filter({"sensor": "east"})) == ([], 0)
    finally:
        history.close()


def test_sensor_filter_values() -> None:
    flt = parse_flow_filter({"sensor": "b,a,b"})
    assert flt.sensor == ("a", "b") and flt.as_dict() == {"sensor": ["a", "b"]}
    assert flt.where() == ("sensor IN (?, ?)", ["a", "b"])
    assert flt.matches(bare_flow(sensor="a")) and not flt.matches(bare_flow())
    for bad in ("", "no.dots", "-dash", ["ok", 3], [], "x" * 64):
        if bad == "":
            assert parse_flow_filter({"sensor": bad}).sensor is None  # unset
            continue
        with pytest.raises(FilterValueError) as caught:
            parse_flow_filter({"sensor": bad})
        assert caught.value.key == "sensor"
    assert FlowFilter(sensor=()).where() == ("FALSE", [])  # a user limited to no sensor


def test_flows_message_round_trip_and_refusals() -> None:
    flows = [full_flow("Ca"), bare_flow("Cb")]
    body = encode_flows("east", 7, 3, flows)
    message = decode_flows("east", body)
    assert (message.sensor, message.run, message.missed) == ("east", 7, 3)
    assert [f.sensor for f in message.flows] == ["east", "east"]
    assert [msgspec.structs.replace(f, sensor=None) for f in message.flows] == flows
    with pytest.raises(FleetError, match="of sensor 'east' on 'west'"):
        decode_flows("west", body)
    bad_rows: list[bytes] = [
        b"not json",
        b"[]",
        b'{"sensor": "east", "run": 1, "missed": 0}',
        b'{"sensor": "east", "run": 1, "missed": -1, "flows": []}',
        b'{"sensor": "east", "run": 1, "missed": 0, "flows": [{"uid": 3}]}',
        encode_flows("east", 1, 0, [bare_flow()]).replace(b'"sensor":"east"}', b'"sensor":"x"}'),
        *(
            encode_flows("east", 1, 0, [bare_flow(**bad)])
            for bad in (
                {"orig_ip": "not-an-ip"},
                {"resp_ip": ""},
                {"orig_port": 70000},
                {"resp_port": -1},
                {"vlan": 4096},
                {"ip_version": 5},
                {"orig_bytes": -1},
                {"resp_pkts": 2**63},
                {"last_ns": NOW_NS - 10 * SECOND},
                {"orig_bytes": 2**62, "resp_bytes": 2**62},
            )
        ),
    ]
    for bad in bad_rows:
        with pytest.raises(FleetError):
            decode_flows("east", bad)


def test_flow_has_sensor_last() -> None:
    assert Flow.__struct_fields__[-1] == "sensor"
