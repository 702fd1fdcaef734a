"""The web tier's fleet awareness, pure parts: the sensor table reader, `sensor` filters (names,
lists, the user's sensors), and `sensor` in packet messages and binary columns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.accounts.principal import AuthFailure, Principal
from leireye.client.columns import arrays_of, decode_columns, packets_of
from leireye.config import LimitsConfig
from leireye.fleet.model import SensorState, SensorTable, write_sensor_table
from leireye.web.columns import encode_columns
from leireye.web.encode import PacketEncoder
from leireye.web.filters import FilterError, PacketFilter, parse_filters
from leireye.web.sensors import SensorDirectory, narrow_stats, narrow_status
from leireye.web.session import Session
from leireye.wire import PacketMessage
from tests.unit.test_web_encode import random_records, reference
from tests.unit.test_web_session import capture, snapshot


def state(name: str, index: int, **kw: object) -> SensorState:
    fields: dict[str, object] = dict(state="live", last_message_ns=0, packets=0, lost=0,
                                     bad_batches=0)  # fmt: skip
    fields.update(kw)
    return msgspec.convert({"name": name, "index": index, **fields}, SensorState)


def write(path: Path, *states: SensorState, bump: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sensor_table(path, SensorTable(updated_ns=1, sensors=list(states)))
    st = path.stat()  # a new mtime even within the file system's clock granularity
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000))


@pytest.fixture
def table(tmp_path: Path) -> Path:
    return tmp_path / "central" / "sensors.json"


def central(table: Path) -> SensorDirectory:
    directory = SensorDirectory(table)
    directory.refresh()
    return directory


def with_sensors(n: int, indexes: list[int], seed: int = 1) -> np.ndarray:
    r = random_records(n, seed)
    r["sensor"] = np.resize(np.array(indexes, dtype=np.uint16), n)
    return r


# -- the table reader -----------------------------------------------------------------------------


def test_the_table_is_read_when_it_changes_and_only_then(table: Path) -> None:
    directory = SensorDirectory(table)
    assert not directory.refresh() and directory.table is None  # not written yet
    assert directory.indexes(("east",)).size == 0
    write(table, state("east", 0), state("west", 1))
    assert directory.refresh()
    assert not directory.refresh()  # one stat, nothing read
    assert (directory.index_of("west"), directory.name_of(0)) == (1, "east")
    assert directory.json_names() == ['"east"', '"west"']
    write(table, state("east", 0), state("west", 1), state("north", 3), bump=5)
    assert directory.refresh() and directory.version == 2
    assert directory.json_names() == ['"east"', '"west"', "null", '"north"']
    assert directory.names() == ["east", "west", None, "north"]
    assert directory.indexes(("north", "east", "ghost")).tolist() == [0, 3]


def test_a_table_that_does_not_decode_keeps_the_last_good_one(table: Path) -> None:
    write(table, state("east", 0))
    directory = central(table)
    table.write_text("{not json")
    assert not directory.refresh()
    assert directory.error is not None and directory.index_of("east") == 0
    write(table, state("east", 0), state("west", 1), bump=9)
    assert directory.refresh() and directory.error is None and directory.index_of("west") == 1


def test_an_unknown_index_in_a_batch_looks_at_the_table_again(table: Path) -> None:
    write(table, state("east", 0))
    directory = central(table)
    write(table, state("east", 0), state("west", 1), bump=3)
    directory.resolve(np.array([0, 0], dtype=np.uint16))  # all known: no look
    assert directory.name_of(1) is None
    directory.resolve(np.array([0, 1], dtype=np.uint16))
    assert directory.name_of(1) == "west"


def test_states_are_those_the_user_may_see(table: Path) -> None:
    write(table, state("west", 1, stats={"packets_per_second": 5}), state("east", 0))
    directory = central(table)
    assert [s.name for s in directory.states()] == ["east", "west"]
    assert [s.name for s in directory.states(("west",))] == ["west"]
    assert not directory.sees_all(("west", "east"))  # a central's mixed views: nobody limited
    assert directory.sees_all(None)
    lone = SensorDirectory(None, "here")
    assert lone.sees_all(("here",)) and not lone.sees_all(("there",))
    assert not SensorDirectory(None, None).sees_all(("here",))


# -- filters --------------------------------------------------------------------------------------


def test_sensor_is_a_name_or_a_list_canonical_and_echoed(table: Path) -> None:
    directory = central(table)
    one = parse_filters({"sensor": "east"}, directory)
    assert isinstance(one, PacketFilter) and one.sensor == ("east",)
    assert one.as_dict() == {"sensor": "east"}
    two = parse_filters({"sensor": ["west", "east", "west"]}, directory)
    assert isinstance(two, PacketFilter) and two.as_dict() == {"sensor": ["east", "west"]}
    assert two == parse_filters({"sensor": ["east", "west"]}, directory)
    assert hash(two) == hash(parse_filters({"sensor": ["east", "west"]}, directory))


@pytest.mark.parametrize(
    "raw",
    ["no.dots", "", "-dash-first", "x" * 64, ["east", "bad name"], [], 7, [1], {"a": 1}],
)
def test_a_malformed_sensor_is_a_clear_error(table: Path, raw: object) -> None:
    error = parse_filters({"sensor": raw}, central(table))
    assert isinstance(error, FilterError) and error.field == "sensor"
    assert "sensor" in error.message


def test_a_lone_sensor_refuses_sensor_filters_but_its_own_name() -> None:
    for directory in (None, SensorDirectory(None, None), SensorDirectory(None, "here")):
        error = parse_filters({"sensor": "there"}, directory)
        assert isinstance(error, FilterError) and "not a fleet central" in error.message
    own = parse_filters({"sensor": "here"}, SensorDirectory(None, "here"))
    assert isinstance(own, PacketFilter)
    r = with_sensors(10, [0])
    assert own.mask(r).all()  # a lone sensor's records are all index 0
    unknown = parse_filters({"nope": 1})
    assert isinstance(unknown, FilterError) and "sensor" not in unknown.message.split("known:")[1]


def test_the_mask_is_the_named_sensors_and_a_new_name_matches_once_it_appears(
    table: Path,
) -> None:
    write(table, state("east", 0), state("west", 1))
    directory = central(table)
    r = with_sensors(30, [0, 1, 2])
    west = parse_filters({"sensor": "west", "min_length": 0}, directory)
    assert isinstance(west, PacketFilter)
    assert np.array_equal(west.mask(r), r["sensor"] == 1)
    both = parse_filters({"sensor": ["east", "north"]}, directory)
    assert isinstance(both, PacketFilter)
    assert np.array_equal(both.mask(r), r["sensor"] == 0)  # north is not in the table yet
    write(table, state("east", 0), state("west", 1), state("north", 2), bump=4)
    directory.refresh()
    assert np.array_equal(both.mask(r), r["sensor"] != 1)


def test_a_limited_user_is_narrowed_to_their_sensors(table: Path) -> None:
    write(table, state("east", 0), state("west", 1), state("north", 2))
    directory = central(table)
    r = with_sensors(30, [0, 1, 2])
    mine = parse_filters(None, directory, ("north", "west"))
    assert isinstance(mine, PacketFilter) and mine.as_dict() == {"sensor": ["north", "west"]}
    assert np.array_equal(mine.mask(r), r["sensor"] != 0)
    narrower = parse_filters({"sensor": "west", "port": 53}, directory, ("north", "west"))
    assert isinstance(narrower, PacketFilter) and narrower.sensor == ("west",)
    refused = parse_filters({"sensor": ["west", "east"]}, directory, ("north", "west"))
    assert isinstance(refused, FilterError) and refused.field == "sensor"
    assert "'east' is not one you may see" in refused.message
    # On a lone sensor a limited user sees its packets only when they name it.
    here = with_sensors(30, [0])  # every record of a lone sensor
    for own, expected in (("north", True), ("south", False), (None, False)):
        lone = parse_filters(None, SensorDirectory(None, own), ("north",))
        assert isinstance(lone, PacketFilter)
        assert lone.mask(here).all() == expected and lone.mask(here).any() == expected


# -- packet messages ------------------------------------------------------------------------------


def test_packets_carry_their_sensor_at_a_central_only(table: Path) -> None:
    write(table, state("east", 0), state("west", 1))
    directory = central(table)
    r = with_sensors(50, [0, 1, 5])
    encoder = PacketEncoder()
    lone = encoder.encode(r)
    assert all('"sensor"' not in m for m in lone)
    at_central = encoder.encode(r, directory.json_names())
    names = {0: "east", 1: "west", 5: None}
    decoder = msgspec.json.Decoder(PacketMessage, strict=True)
    for message, row in zip(at_central, r, strict=True):
        assert decoder.decode(message).data.sensor == names[int(row["sensor"])]
        assert json.loads(message)["data"] == {
            **reference(row),
            "sensor": names[int(row["sensor"])],
        }
    assert encoder.encode(r) == lone  # the memos of one kept apart from the other's


def test_binary_columns_carry_the_sensor_at_a_central_only(table: Path) -> None:
    write(table, state("east", 0), state("west", 1))
    directory = central(table)
    r = with_sensors(40, [1, 0, 7])
    plain = decode_columns(encode_columns(r))
    assert plain.sensor is msgspec.UNSET and "sensor" not in arrays_of(plain)
    columns = decode_columns(encode_columns(r, directory.names()))
    names = {0: "east", 1: "west", 7: None}
    expected = [names[int(i)] for i in r["sensor"]]
    assert [p.sensor for p in packets_of(columns)] == expected
    assert list(arrays_of(columns)["sensor"]) == expected


# -- the session ----------------------------------------------------------------------------------


def limited_session(directory: SensorDirectory, sensors: tuple[str, ...] | None) -> Session:
    principal = Principal(id=7, username="wes", role="VIEWER", expires_at=None,
                          generation="g" * 22, sensors=sensors)  # fmt: skip

    def authenticate(token: str, now: float) -> Principal | AuthFailure:
        return principal

    session = Session(limits=LimitsConfig(), authenticate=authenticate, admit=lambda p: True,
                      now=0.0, query_token="t", flows_enabled=True, sensors=directory)  # fmt: skip
    drain(session)
    return session


def drain(session: Session) -> list[dict[str, object]]:
    out = []
    while isinstance(item := session.next_outgoing(), str):
        out.append(json.loads(item))
    return out


def test_a_limited_session_subscribes_to_its_sensors_only(table: Path) -> None:
    write(table, state("east", 0), state("west", 1))
    session = limited_session(central(table), ("west",))
    session.receive(json.dumps({"type": "subscribe", "channel": "packets"}), 0.1)
    (reply,) = drain(session)
    assert reply["type"] == "subscribed" and reply["filters"] == {"sensor": "west"}
    session.receive(json.dumps({"type": "subscribe", "channel": "packets",
                                "filters": {"sensor": "east"}}), 0.2)  # fmt: skip
    (error,) = drain(session)
    assert error["type"] == "error" and error["code"] == "invalid_filter"
    assert error["field"] == "sensor"
    assert session.filter is not None and session.filter.sensor == ("west",)  # the old one stays
    session.receive(json.dumps({"type": "subscribe", "channel": "flows"}), 0.3)
    (refused,) = drain(session)
    assert refused["code"] == "invalid_channel" and session.flow_filter is None


def test_stats_and_status_at_a_central_show_the_users_sensors(table: Path) -> None:
    write(table, state("east", 0, stats={"packets_total": 3}),
          state("west", 1, state="silent", last_message_ns=2_000_000, packets=9, lost=1,
                stats={"packets_total": 4}))  # fmt: skip
    directory = central(table)
    session = limited_session(directory, ("west",))
    session.tick(0.5, snapshot(), capture())
    (status,) = drain(session)
    assert status["type"] == "status" and status["data"]["central"] is True
    assert status["data"]["sensors"] == [
        {"name": "west", "state": "silent", "last_message_ms": 2, "packets": 9, "lost": 1,
         "bad_batches": 0}
    ]  # fmt: skip
    session.tick(1.6, snapshot(), capture())
    (stats,) = drain(session)
    assert stats["type"] == "stats" and stats["data"]["by_sensor"] == {"west": {"packets_total": 4}}
    # The totals are west's, never the central's (1567): a silent sensor's rate counts 0.
    assert (stats["data"]["packets_total"], stats["data"]["packets_per_second"]) == (4, 0)
    assert status["data"]["packets_captured"] == 9 and status["data"]["kernel_drops"] == 1
    # A sensor changing state sends the status again.
    write(table, state("east", 0), state("west", 1, state="live"), bump=7)
    directory.refresh()
    session.tick(1.7, snapshot(), capture())
    (again,) = drain(session)
    assert again["type"] == "status" and again["data"]["sensors"][0]["state"] == "live"
    # Everyone sees every sensor; a lone sensor's messages have none of this.
    everyone = limited_session(directory, None)
    everyone.tick(0.5, snapshot(), capture())
    shown = drain(everyone)[0]["data"]
    assert [s["name"] for s in shown["sensors"]] == ["east", "west"]
    assert shown["packets_captured"] == 1567
    lone = limited_session(SensorDirectory(None, "here"), None)
    lone.tick(0.5, snapshot(), capture())
    lone.tick(1.6, snapshot(), capture())
    sent = drain(lone)
    assert [m["type"] for m in sent] == ["status", "stats"]
    assert "central" not in sent[0]["data"] and "sensors" not in sent[0]["data"]
    assert "by_sensor" not in sent[1]["data"]


def test_a_limited_users_totals_are_the_sums_over_their_sensors() -> None:
    east = state("east", 1, packets=30, bytes=3000, lost=2, stats={
        "packets_total": 100, "bytes_total": 9000, "packets_per_second": 5, "bytes_per_second": 50,
        "protocols": {"TCP": 5}, "protocols_total": {"TCP": 90, "UDP": 10}, "apps": {"TLS": 1},
        "apps_total": {"TLS": 9}, "kernel_drops": 3, "decode_errors": 1})  # fmt: skip
    west = state("west", 2, state="silent", packets=4, bytes=400, stats={
        "packets_total": 7, "packets_per_second": 2, "protocols": {"UDP": 2},
        "protocols_total": {"UDP": 7, "ICMP": "x"}, "kernel_drops": True,
        "bytes_total": "9"})  # fmt: skip
    never = state("north", 3, state="never")
    got = narrow_stats(snapshot(), [east, west, never])
    assert (got.packets_total, got.bytes_total, got.kernel_drops) == (107, 9000, 3)
    assert (got.packets_per_second, got.bytes_per_second) == (5, 50)  # live sensors only
    assert (got.if_drops, got.ring_lost, got.decode_errors) == (0, 0, 1)
    assert got.protocols == {"TCP": 5} and got.apps == {"TLS": 1}
    assert got.protocols_total == {"TCP": 90, "UDP": 17} and got.apps_total == {"TLS": 9}
    assert got.top_sources == got.top_destinations == got.top_ports == []
    assert not got.top_complete and got.timestamp_ns == snapshot().timestamp_ns
    assert narrow_stats(snapshot(), []).packets_total == 0

    central = capture(interface="fleet central main (3 sensors)", bytes_captured=99_999,
                      kernel_drops=40, if_drops=2, decode_errors=5)  # fmt: skip
    mine = narrow_status(central, [east, west])
    assert (mine.packets_captured, mine.bytes_captured, mine.kernel_drops) == (34, 3400, 2)
    assert (mine.if_drops, mine.decode_errors, mine.interface) == (0, 0, "fleet central main")
    assert mine.state == central.state and mine.started_at_ns == central.started_at_ns


NAMES = ("east", "west", "north", "south")
names = st.lists(st.sampled_from((*NAMES, "ghost", "bad.name")), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32),
    st.sets(st.sampled_from(NAMES), min_size=1),
    st.one_of(st.none(), st.sampled_from(NAMES), names),
    st.one_of(st.none(), st.integers(0, 65535)),
)
def test_no_filter_gets_a_limited_user_another_sensors_packet(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    allowed: set[str],
    asked: str | list[str] | None,
    port: int | None,
) -> None:
    path = tmp_path_factory.mktemp("t") / "sensors.json"
    write(path, *(state(n, i) for i, n in enumerate(NAMES[:3])))  # south: not in the table
    directory = central(path)
    r = with_sensors(64, [0, 1, 2, 3, 9], seed)
    parsed = parse_filters({"sensor": asked, "port": port}, directory, tuple(sorted(allowed)))
    if isinstance(parsed, FilterError):
        assert parsed.field == "sensor" and asked is not None
        return
    mine = [NAMES.index(n) for n in allowed if n != "south"]
    assert set(r["sensor"][parsed.mask(r)].tolist()) <= set(mine)
