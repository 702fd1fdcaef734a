"""What the central counts per sensor (leireye.fleet.tracker) and its id checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leireye.fleet.checkpoint import RESERVE, IdCheckpoint, boot_id, read_next_id, write_next_id
from leireye.fleet.discover import sensors_of
from leireye.fleet.model import BatchHeader, FleetError
from leireye.fleet.tracker import Fleet, SensorTrack


def header(first: int, last: int, lost: int = 0) -> BatchHeader:
    return BatchHeader("s", first, last, last - first + 1, lost, 0)


def test_lost_is_the_header_or_the_unexplained_gap() -> None:
    t = SensorTrack("s", 1)
    t.on_batch(header(1, 10, lost=3))  # the first batch: its header alone
    t.on_batch(header(11, 20))
    t.on_batch(header(26, 30, lost=5))  # the gap is the header's
    t.on_batch(header(41, 50, lost=2))  # a gap of 10, only 2 explained
    assert (t.packets, t.lost, t.last_id) == (35, 18, 50)
    t.on_batch(header(1, 5, lost=1))  # ids went back: the sensor restarted
    assert (t.packets, t.lost, t.last_id) == (40, 19, 5)


def test_stream_gaps_are_missed_messages_and_redeliveries_are_skipped() -> None:
    t = SensorTrack("s", 1)
    assert t.on_message("status", 7, 100)  # the first one sets the baseline
    assert t.on_message("status", 8, 200)
    assert not t.on_message("status", 8, 200)
    assert t.on_message("status", 12, 150)
    assert t.missed_messages == 3 and t.last_message_ns == 200
    t.sequences["packets"] = 4  # acknowledged before a restart
    assert t.on_message("packets", 6, 300) and t.missed_messages == 4


def test_states_and_indexes() -> None:
    fleet = Fleet(silent_after_s=2.0)
    a, new = fleet.add("a")
    assert new and a.index == 1
    b, _ = fleet.add("b")
    assert fleet.add("a") == (a, False) and b.index == 2
    a.last_message_ns = 10 * 10**9
    a.on_batch(header(1, 4), wire_bytes=600)
    a.on_batch(header(5, 5), wire_bytes=60)
    states = {s.name: s.state for s in fleet.table(11 * 10**9).sensors}
    assert states == {"a": "live", "b": "never"}
    assert fleet.table(13 * 10**9).sensors[0].state == "silent"
    again = Fleet(2.0, fleet.table(13 * 10**9))  # a restart: indexes and counters kept
    assert again.add("b") == (again.sensors["b"], False) and again.add("c")[0].index == 3
    assert (again.sensors["a"].packets, again.sensors["a"].bytes) == (5, 660)
    assert fleet.table(11 * 10**9).sensors[0].bytes == 660


def test_the_table_says_which_packets_message_its_counters_count_up_to() -> None:
    fleet = Fleet(silent_after_s=2.0)
    a, _ = fleet.add("a")
    assert fleet.table(0).sensors[0].packets_seq == -1  # nothing read: unknown
    a.on_message("packets", 5, 1)
    a.on_batch(header(1, 10))
    saved = fleet.table(0)
    assert (saved.sensors[0].packets, saved.sensors[0].packets_seq) == (10, 5)
    again = Fleet(2.0, saved)
    assert again.sensors["a"].counted_seq == 5
    assert again.table(0).sensors[0].packets_seq == 5  # kept until a message is read


def test_the_checkpoint_reserves_ahead_and_settles_exactly(tmp_path: Path) -> None:
    (tmp_path / "central").mkdir()
    assert read_next_id(tmp_path) == 1
    checkpoint = IdCheckpoint(tmp_path, 1)
    checkpoint.reserve(1)
    assert read_next_id(tmp_path) == 2 + RESERVE
    checkpoint.reserve(RESERVE)  # still below what is on disk: no write
    assert read_next_id(tmp_path) == 2 + RESERVE
    checkpoint.settle(42)
    saved = json.loads((tmp_path / "central/ids.json").read_text())
    assert saved == {"next_id": 42, "clean": True, "boot_id": boot_id()}
    assert (tmp_path / "central/ids.json").stat().st_mode & 0o777 == 0o640
    IdCheckpoint(tmp_path, 50)  # a ring ahead of the file moves the file
    assert read_next_id(tmp_path) == 50


def test_an_unusable_checkpoint_is_refused_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "central").mkdir()
    (tmp_path / "central/ids.json").write_text("{")
    with pytest.raises(FleetError, match=r"ids\.json"):
        read_next_id(tmp_path)
    write_next_id(tmp_path, 0)
    with pytest.raises(FleetError, match="next_id"):
        read_next_id(tmp_path)


def test_sensors_are_named_by_their_packets_streams() -> None:
    streams = {
        "LEIREYE_a_PACKETS",
        "LEIREYE_a_STATS",
        "LEIREYE_b-2_x_PACKETS",
        "OTHER",
        "LEIREYE__PACKETS",
    }
    assert sensors_of(streams) == ["a", "b-2_x"]
