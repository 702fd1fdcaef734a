"""The binary batch format (`format: "columns"`): every field of every row as JSON gives it, the
same packets, notices and drops as a JSON subscription through the hub, and the client's column
decoding equal to its per-packet decoding."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.client.columns import arrays_of, decode_columns, packets_of
from leireye.record import RECORD_DTYPE
from leireye.web.columns import column_batches, encode_columns
from leireye.web.hub import Connection
from leireye.wire import Close
from tests.inprocess import InProcessSensor, read_pcap
from tests.unit.test_web_encode import random_records, reference

MIXED = read_pcap("mixed.pcap")


def as_dicts(frame: bytes) -> list[dict[str, Any]]:
    """(`sensor` is left out unless set: a lone sensor's batches have none)"""
    return [
        {k: v for k, v in msgspec.structs.asdict(p).items() if v is not msgspec.UNSET}
        for p in packets_of(decode_columns(frame))
    ]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(0, 2**32))
def test_every_field_of_every_row_is_what_json_gives(n: int, seed: int) -> None:
    r = random_records(n, seed)
    assert as_dicts(encode_columns(r)) == [reference(row) for row in r]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 300), st.integers(0, 2**32))
def test_column_decoding_equals_packet_decoding(n: int, seed: int) -> None:
    columns = decode_columns(encode_columns(random_records(n, seed)))
    arrays = arrays_of(columns)
    packets = packets_of(columns)
    for name in ("id", "src_ip", "dst_ip", "protocol", "length", "flags", "info", "app"):
        assert list(arrays[name]) == [getattr(p, name) for p in packets], name
    for name in ("src_port", "dst_port", "vlan"):
        assert [None if v < 0 else v for v in arrays[name].tolist()] == [
            getattr(p, name) for p in packets
        ], name
    assert [v or None for v in arrays["ip_version"].tolist()] == [p.ip_version for p in packets]
    stamps = np.datetime_as_string(arrays["timestamp"], unit="ms")
    assert [f"{t}Z" for t in stamps] == [p.timestamp for p in packets]
    assert all(isinstance(a, np.ndarray) and len(a) == len(packets) for a in arrays.values())


@pytest.mark.parametrize("max_bytes", [1024, 4096, 65536])
def test_batches_stay_under_max_bytes_and_keep_every_row_in_order(max_bytes: int) -> None:
    r = random_records(3000, 7)
    r["info"] = [bytes([0xFF]) * 180 if i % 50 == 0 else x for i, x in enumerate(r["info"])]
    batches = column_batches(r, max_bytes)
    assert all(len(data) <= max_bytes for data, _ in batches)
    ids = [p["id"] for data, _ in batches for p in as_dicts(data)]
    assert ids == r["seq"].tolist()
    assert [n for _, n in batches] == [len(as_dicts(data)) for data, _ in batches]
    assert column_batches(np.zeros(0, RECORD_DTYPE), max_bytes) == []


# -- through the hub: the same stream as JSON -----------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Iterator[InProcessSensor]:
    s = InProcessSensor(tmp_path, capacity=1024, web={"outbox_messages": 16})
    try:
        yield s
    finally:
        s.close()


def stream(conn: Connection) -> list[Any]:
    """What the connection would send now, as packets (dicts) and notices, whatever the
    format."""
    out: list[Any] = []
    while (item := conn.session.next_outgoing()) is not None:
        assert not isinstance(item, Close), item
        if isinstance(item, bytes):
            out += as_dicts(item)
            continue
        message = json.loads(item)
        if message["type"] == "packet":
            out.append(message["data"])
        elif message["type"] == "packets":
            out += message["data"]
        elif message["type"] in ("dropped", "subscribed"):
            out.append({k: v for k, v in message.items() if k != "options"})
    return out


MODES: dict[str, dict[str, Any]] = {
    "json": {},
    "batch": {"batch": True},
    "columns": {"format": "columns"},
}


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"protocol": "udp"},
        {"protocol": "tcp"},
        {"port": 53},
        {"min_length": 200},
        {"max_length": 90},
        {"ip": "FIRST_SRC"},
        {"src_ip": "FIRST_SRC"},
        {"dst_ip": "FIRST_SRC", "protocol": "udp"},
    ],
)
def test_columns_deliver_what_json_delivers(
    small: InProcessSensor, filters: dict[str, Any]
) -> None:
    """Every format, live and resumed (`since`), read fast and slowly (so that packets are
    skipped and `dropped` counted): the same packets, fields, notices and counts."""
    sensor = small
    first = sensor.write(MIXED)
    address = next(a for i in first if (a := reference(sensor.record(i))["src_ip"]) is not None)
    wanted = {k: address if v == "FIRST_SRC" else v for k, v in filters.items()}
    sensor.hub.step()
    users = iter(["vic", "ana", "admin"] * 5)  # (5 connections per user at most)
    conns: dict[tuple[str, str, str], Connection] = {}
    for mode, options in MODES.items():
        for start in ("live", "since"):
            for pace in ("fast", "slow"):
                conn = sensor.hub.open(sensor.token(next(users)), sensor.hub.clock())
                subscribe = {"type": "subscribe", "channel": "packets", "filters": wanted,
                             "options": options}  # fmt: skip
                if start == "since":
                    subscribe["since"] = 5
                conn.receive(json.dumps(subscribe), time.time())
                conns[mode, start, pace] = conn
    got: dict[tuple[str, str, str], list[Any]] = {key: [] for key in conns}
    for step in range(8):
        sensor.write(MIXED)
        sensor.hub.step()
        for key, conn in conns.items():
            if key[2] == "fast" or step % 4 == 3:
                got[key] += stream(conn)
    for key, conn in conns.items():
        got[key] += stream(conn)
        got[key].append(("dropped", conn.session.dropped, conn.session.stream_lost))
    for start in ("live", "since"):
        for pace in ("fast", "slow"):
            json_stream = got["json", start, pace]
            assert len(json_stream) > 3
            assert got["batch", start, pace] == json_stream, (start, pace)
            assert got["columns", start, pace] == json_stream, (start, pace)
    assert got["json", "live", "slow"][-1][1] > 0, "the slow readers should have skipped some"
