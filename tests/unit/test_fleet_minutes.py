"""A sensor's host and app minutes on their way to a fleet central: the `minutes` message
(encode, decode, refusals, cut to fit), the publisher's reading of the flow store's minute
files (`MinuteFiles`: new files, its cursor on disk), and the store's reads by sensor."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest

from leireye.fleet.minutemsg import decode_minutes, encode_minute_messages, encode_minutes
from leireye.fleet.minutes import CURSOR_FILE, MinuteFiles
from leireye.fleet.model import FleetError
from leireye.flows.columns import hosts_table
from leireye.flows.history import FlowHistory
from leireye.flows.model import AppMinute, HostMinute
from leireye.flows.store import write_atomically
from tests.unit.test_flowstore import HOUR_S, NOW_NS, SECOND, bare_flow, writer

MINUTE = NOW_NS // (60 * SECOND) * 60 * SECOND
SPAN = (NOW_NS - HOUR_S * SECOND, NOW_NS)


def host(ip: str = "10.0.0.1", **changes: object) -> HostMinute:
    values: dict[str, object] = dict(
        minute_ns=MINUTE, ip=ip, pkts_sent=2, bytes_sent=200, pkts_recv=1, bytes_recv=60,
        peers=["10.0.0.2", "2001:db8::9"], apps={"DNS": 60, "TLS": 200}, ports_served=[53],
        names=["one.example"],
    )  # fmt: skip
    values.update(changes)
    return HostMinute(**values)  # type: ignore[arg-type]


def app(label: str = "DNS", **changes: object) -> AppMinute:
    values: dict[str, object] = dict(minute_ns=MINUTE, app=label, packets=3, bytes=260)
    values.update(changes)
    return AppMinute(**values)  # type: ignore[arg-type]


def test_minutes_message_round_trip() -> None:
    hosts, apps = [host(), host("2001:db8::1", names=[])], [app(), app("TLS")]
    message = decode_minutes("east", encode_minutes("east", 4, hosts, apps))
    assert (message.sensor, message.missed) == ("east", 4)
    assert {h.sensor for h in message.hosts} | {a.sensor for a in message.apps} == {"east"}
    assert [msgspec.structs.replace(h, sensor=None) for h in message.hosts] == hosts
    assert [msgspec.structs.replace(a, sensor=None) for a in message.apps] == apps
    assert decode_minutes("east", b'{"sensor": "east", "missed": 0}').hosts == []


def test_a_bad_minutes_message_is_refused_whole() -> None:
    good = encode_minutes("east", 0, [host()], [app()])
    with pytest.raises(FleetError, match="of sensor 'east' on 'west'"):
        decode_minutes("west", good)
    bad_bodies: list[bytes] = [
        b"not json",
        b"[]",
        b'{"sensor": "east"}',
        b'{"sensor": "east", "missed": -1}',
        b'{"sensor": "east", "missed": 0, "hosts": [{"ip": 3}]}',
        good.replace(b'"sensor":"east"}]', b'"sensor":"west"}]', 1),  # a row of another sensor
        good.replace(b'"sensor":"east"}]}', b'"sensor":null}]}'),  # an app row of none
        *(
            encode_minutes("east", 0, [host(**bad)], [])
            for bad in (
                {"ip": "not-an-ip"},
                {"ip": ""},
                {"minute_ns": MINUTE + 1},
                {"minute_ns": -60 * SECOND},
                {"bytes_sent": -1},
                {"pkts_recv": 2**63},
                {"peers": ["10.0.0.2", "nope"]},
                {"peers": [f"10.1.{i // 256}.{i % 256}" for i in range(1025)]},
                {"ports_served": [70000]},
                {"ports_served": list(range(65))},
                {"names": [f"n{i}" for i in range(9)]},
                {"names": ["x" * 1025]},
                {"apps": {"x" * 33: 1}},
                {"apps": {"DNS": -5}},
            )
        ),
        *(
            encode_minutes("east", 0, [], [app(**bad)])
            for bad in (
                {"app": "x" * 33},
                {"packets": -1},
                {"bytes": 2**63},
                {"minute_ns": MINUTE + SECOND},
            )
        ),
    ]
    for bad in bad_bodies:
        with pytest.raises(FleetError):
            decode_minutes("east", bad)
    assert b'"sensor":"west"}]' in bad_bodies[5]


def test_minutes_are_cut_into_messages_that_fit() -> None:
    hosts = [host(f"10.0.{i // 250}.{i % 250 + 1}") for i in range(300)]
    apps = [app(f"L{i}") for i in range(20)]
    huge = host("10.9.9.9", peers=[f"2001:db8::{i:x}" for i in range(1024)])
    bodies, missed = encode_minute_messages("east", [*hosts[:150], huge, *hosts[150:]], apps, 8000)
    assert missed == 1 and len(bodies) > 4
    assert all(len(b) <= 8000 for b in bodies)
    decoded = [decode_minutes("east", b) for b in bodies]
    assert [m.missed for m in decoded] == [1] + [0] * (len(bodies) - 1)
    assert [h.ip for m in decoded for h in m.hosts] == [h.ip for h in hosts]
    assert [a.app for m in decoded for a in m.apps] == [a.app for a in apps]
    only_huge, missed = encode_minute_messages("east", [huge], [], 8000)
    assert missed == 1 and decode_minutes("east", only_huge[0]).missed == 1
    assert encode_minute_messages("east", [], [], 8000) == ([], 0)


def test_the_publisher_reads_each_new_minute_file_once_and_remembers(tmp_path: Path) -> None:
    store = writer(tmp_path)
    store.add_minute([host()], [app()])
    store.flush()
    files = MinuteFiles(tmp_path, since_ns=0)
    first = sorted(files.new(), key=lambda m: m.name, reverse=True)  # one mtime, maybe
    assert [m.name.split("/")[0] for m in first] == ["hosts", "apps"]
    assert files.read(first[0]) == ([host()], [])
    assert files.read(first[1]) == ([], [app()])
    files.done(first[0])
    assert files.new() == first[1:]
    assert os.stat(tmp_path / CURSOR_FILE).st_mode & 0o777 == 0o640
    again = MinuteFiles(tmp_path, since_ns=0)  # a restarted publisher
    assert again.new() == first[1:]
    again.done(first[1])
    store.add_minute([host("10.0.0.7", minute_ns=MINUTE + 60 * SECOND)], [])
    store.flush()
    (newer,) = again.new()
    assert again.read(newer)[0][0].ip == "10.0.0.7"
    assert MinuteFiles(tmp_path, since_ns=0).new() == [newer]
    (tmp_path / CURSOR_FILE).write_text("{broken")
    assert len(MinuteFiles(tmp_path, since_ns=0).new()) == 3  # no cursor: from since_ns
    assert MinuteFiles(tmp_path, since_ns=newer.mtime_ns + 1).new() == []
    os.unlink(tmp_path / newer.name)
    with pytest.raises(OSError):
        again.read(newer)


def test_minutes_by_sensor_at_a_central(tmp_path: Path) -> None:
    store = writer(tmp_path)
    store.add_flows(
        [
            bare_flow("Ce", orig_ip="10.0.0.1", resp_ip="10.0.0.2", sensor="east"),
            bare_flow("Cw", orig_ip="10.0.0.1", resp_ip="10.0.0.3", sensor="west"),
        ]
    )
    store.add_minute([host(sensor="east"), host("10.0.0.5", sensor="east")],
                     [app(sensor="east")])  # fmt: skip
    store.add_minute([host(bytes_sent=1000, sensor="west")], [app(bytes=40, sensor="west")])
    store.flush()
    # a hosts file written before the `sensor` column (a lone sensor's older files)
    old = hosts_table([host("10.0.0.9")]).drop_columns(["sensor"])
    folder = next((tmp_path / "hosts").iterdir())
    write_atomically(folder, f"part-{MINUTE}-{MINUTE}-1-99.parquet", old)
    assert "sensor" not in pq.read_schema(folder / f"part-{MINUTE}-{MINUTE}-1-99.parquet").names
    history = FlowHistory(tmp_path)

    def sent(sensors: list[str] | None) -> dict[str, int]:
        rows, total = history.hosts(*SPAN, sensors=sensors)
        assert total == len(rows)
        return {r["ip"]: r["bytes_sent"] for r in rows}

    assert sent(None) == {"10.0.0.1": 1200, "10.0.0.5": 200, "10.0.0.9": 200}  # summed
    assert sent(["east"]) == {"10.0.0.1": 200, "10.0.0.5": 200}
    assert sent(["west"]) == {"10.0.0.1": 1000}
    assert sent(["east", "west"]) == {"10.0.0.1": 1200, "10.0.0.5": 200}
    assert sent([]) == {}  # a user limited to no sensor
    seen, _ = history.hosts(*SPAN, with_sensors=True)  # at a central: who saw each
    assert {r["ip"]: r["sensors"] for r in seen} == {
        "10.0.0.1": ["east", "west"],
        "10.0.0.5": ["east"],
        "10.0.0.9": [],
    }
    seen, _ = history.hosts(*SPAN, sensors=["west"], with_sensors=True)
    assert [r["sensors"] for r in seen] == [["west"]]
    one = history.host("10.0.0.1", *SPAN, 60 * SECOND, ["west"])
    assert one is not None and one["summary"]["bytes_sent"] == 1000
    assert [p["ip"] for p in one["peers"]] == ["10.0.0.3"]
    assert {(r["app"], r["bytes"]) for r in one["series"]} == {("DNS", 60), ("TLS", 200)}
    assert history.host("10.0.0.5", *SPAN, 60 * SECOND, ["west"]) is None
    charts = [history.protocols(*SPAN, 60 * SECOND, s) for s in (None, ["east"], ["west"])]
    assert [sum(r["bytes"] for r in rows) for rows in charts] == [300, 260, 40]


def test_the_cursor_file_is_json(tmp_path: Path) -> None:
    store = writer(tmp_path)
    store.add_minute([], [app()])
    store.flush()
    files = MinuteFiles(tmp_path, since_ns=0)
    (mark,) = files.new()
    files.done(mark)
    assert json.loads((tmp_path / CURSOR_FILE).read_text()) == {
        "mtime_ns": mark.mtime_ns,
        "sent": [mark.name],
    }


def test_files_of_one_mtime_are_each_sent_once(tmp_path: Path) -> None:
    """The kernel's coarse file clock gives files written one after the other one mtime."""
    store = writer(tmp_path)
    for i in range(3):
        store.add_minute([host(f"10.0.0.{i + 1}")], [])
        store.flush()
    marks = MinuteFiles(tmp_path, since_ns=0).new()
    stamp = marks[0].mtime_ns
    for mark in marks:
        os.utime(tmp_path / mark.name, ns=(stamp, stamp))
    files = MinuteFiles(tmp_path, since_ns=0)
    newest_name_first = sorted(files.new(), key=lambda m: m.name, reverse=True)
    for i, mark in enumerate(newest_name_first):
        files.done(mark)
        assert len(files.new()) == 2 - i
        assert len(MinuteFiles(tmp_path, since_ns=0).new()) == 2 - i
