"""The central's replay journal: which entries a restart replays, and the file's bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leireye.fleet.checkpoint import IdCheckpoint
from leireye.fleet.journal import ENTRY, JOURNAL_FILE, SLACK, Journal, planned_replay, read_entries
from leireye.fleet.journal import replay_plan as plan
from leireye.record import RECORD_DTYPE
from leireye.ring import Ring, RingLayout, RingReader, RingWriter


def entries(*rows: tuple[int, int, int, int]) -> np.ndarray:
    return np.array([(f, c, s, 0, q) for f, c, s, q in rows], dtype=ENTRY)


def test_the_plan_is_the_contiguous_suffix_ending_at_the_next_id() -> None:
    e = entries((1, 10, 1, 1), (11, 5, 2, 1), (30, 10, 1, 2), (40, 10, 2, 2))
    assert plan(e, 50, 100)["first_id"].tolist() == [30, 40]  # 16..29 never journaled
    assert plan(e, 51, 100).size == 0  # not where the clean stop ended: nothing
    assert plan(e, 50, 15)["first_id"].tolist() == [40]  # at most capacity, whole entries
    assert plan(e, 50, 9).size == 0
    assert plan(e[:2], 16, 100)["first_id"].tolist() == [1, 11]
    assert plan(e[:0], 1, 100).size == 0


def test_a_journal_replays_only_after_a_clean_stop(tmp_path: Path) -> None:
    (tmp_path / "central").mkdir()
    checkpoint = IdCheckpoint(tmp_path, 1)
    journal = Journal(tmp_path, 100)
    checkpoint.reserve(10)
    journal.append(1, 10, 1, 7)
    journal.append(11, 5, 1, 8)
    assert planned_replay(tmp_path, 100).size == 0  # a crash now: no replay
    journal.close()
    checkpoint.settle(16)
    assert planned_replay(tmp_path, 100)["seq"].tolist() == [7, 8]
    with (tmp_path / JOURNAL_FILE).open("ab") as out:
        out.write(b"\x01\x02\x03")  # a write cut short
    again = Journal(tmp_path, 100)
    assert again.end == 16 and read_entries(tmp_path / JOURNAL_FILE).size == 2
    again.append(100, 1, 1, 9)  # ids skipped (a crash): what is before is stale
    assert read_entries(tmp_path / JOURNAL_FILE)["first_id"].tolist() == [100]
    again.close()


def test_the_journal_keeps_about_the_last_capacity_ids(tmp_path: Path) -> None:
    (tmp_path / "central").mkdir()
    journal = Journal(tmp_path, 1000)
    for k in range((2 * 1000 + SLACK) // 50 + 10):
        journal.append(1 + 50 * k, 50, 1, k + 1)
    kept = read_entries(tmp_path / JOURNAL_FILE)
    ids = int(kept["count"].sum())
    assert 1000 <= ids <= 2 * 1000 + SLACK + 50
    assert int(kept["first_id"][-1] + kept["count"][-1]) == journal.end
    assert np.all(kept["first_id"][1:] == kept["first_id"][:-1] + kept["count"][:-1])
    assert (tmp_path / JOURNAL_FILE).stat().st_mode & 0o777 == 0o640
    journal.close()


def test_ids_skipped_by_a_replay_are_read_as_lost() -> None:
    ring = Ring.over(bytearray(RingLayout(16, 0).size), RingLayout(16, 0), base_id=100)
    writer = RingWriter(ring)
    writer.write(np.zeros(3, dtype=RECORD_DTYPE))  # 101..103
    writer.skip_to(108)  # 104..107: not replayable
    assert writer.write(np.zeros(2, dtype=RECORD_DTYPE)) == 108
    reader = RingReader(ring, 101)
    first = reader.read()
    assert first.records["seq"].tolist() == [108, 109] and first.lost == 7
    assert reader.read_total + reader.lost_total == 109 - 100
    assert ring.get(102) is not None and ring.get(105) is None and ring.get(108) is not None
