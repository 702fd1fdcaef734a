"""The central's replay journal: where a restart goes on and what it replays (clean stop, crash,
power cut), the batches delivered again, and the file's bounds."""

from __future__ import annotations

import json
import resource
import signal
from pathlib import Path

import numpy as np

from leireye.fleet.checkpoint import (
    IDS_FILE,
    RESERVE,
    Checkpoint,
    IdCheckpoint,
    boot_id,
    write_next_id,
)
from leireye.fleet.ingest import _resume
from leireye.fleet.journal import (
    ENTRY,
    JOURNAL_FILE,
    SLACK,
    Journal,
    journaled_seqs,
    planned_resume,
    read_entries,
    resume_point,
)
from leireye.fleet.journal import replay_plan as plan
from leireye.fleet.tracker import SensorTrack
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


def test_where_a_central_goes_on_after_a_clean_stop_a_crash_or_a_power_cut() -> None:
    e = entries((1, 10, 1, 1), (11, 5, 2, 1), (16, 10, 1, 2))
    reserved = 26 + RESERVE
    clean = resume_point(e, Checkpoint(26, clean=True, boot_id="b1"), "b2", 100)
    assert (clean.plan["first_id"].tolist(), clean.next_id, clean.trusted) == (
        [1, 11, 16],
        26,
        True,
    )
    crash = resume_point(e, Checkpoint(reserved, boot_id="b1"), "b1", 100)  # a process killed
    assert (crash.plan["first_id"].tolist(), crash.next_id, crash.trusted) == (
        [1, 11, 16],
        26,
        True,
    )
    assert resume_point(e, Checkpoint(reserved, boot_id="b1"), "b1", 12).plan["seq"].tolist() == [2]
    for boot_then, boot_now in (("b1", "b2"), ("", ""), ("b1", "")):  # a power cut, or unknown
        cut = resume_point(e, Checkpoint(reserved, boot_id=boot_then), boot_now, 100)
        assert (cut.plan.size, cut.next_id, cut.trusted) == (0, reserved, False)
    empty = resume_point(e[:0], Checkpoint(reserved, boot_id="b1"), "b1", 100)
    assert (empty.plan.size, empty.next_id, empty.trusted) == (0, reserved, False)
    beyond = resume_point(e, Checkpoint(20, boot_id="b1"), "b1", 100)  # never: not trusted
    assert (beyond.plan.size, beyond.next_id, beyond.trusted) == (0, 26, False)
    # a clean stop whose journal does not end at its id: nothing replayed, no id reused
    short = resume_point(e[:2], Checkpoint(26, clean=True), "b1", 100)
    assert (short.plan.size, short.next_id) == (0, 26)


def test_redelivered_batches_are_known_by_their_highest_journaled_sequence() -> None:
    e = entries((1, 10, 1, 7), (11, 5, 2, 3), (16, 10, 1, 8), (26, 1, 2, 4))
    seqs = journaled_seqs(e)
    assert seqs == {1: 8, 2: 4}
    track = SensorTrack("a", 1, sequences={"packets": seqs[1]})
    assert [track.on_message("packets", q, 0) for q in (7, 8, 9)] == [False, False, True]
    assert track.missed_messages == 0


def test_a_journal_is_trusted_after_a_clean_stop_or_a_crash_on_this_boot(tmp_path: Path) -> None:
    (tmp_path / "central").mkdir()
    journal = Journal(tmp_path, 100, 1)
    checkpoint = IdCheckpoint(tmp_path, 1)
    checkpoint.reserve(10)
    journal.append(1, 10, 1, 7)  # before the ring write
    journal.append(11, 5, 1, 8)
    crash = planned_resume(tmp_path, 100)  # killed now, on this boot: everything is there
    assert (crash.plan["seq"].tolist(), crash.next_id, crash.trusted) == ([7, 8], 16, True)
    saved = json.loads((tmp_path / IDS_FILE).read_text())
    assert saved == {"next_id": 11 + RESERVE, "boot_id": boot_id()} and boot_id()
    write_next_id(tmp_path, 11 + RESERVE, boot="another boot")  # a power cut
    cut = planned_resume(tmp_path, 100)
    assert (cut.plan.size, cut.next_id, cut.trusted) == (0, 11 + RESERVE, False)
    journal.close()
    checkpoint.settle(16)
    assert planned_resume(tmp_path, 100).plan["seq"].tolist() == [7, 8]
    with (tmp_path / JOURNAL_FILE).open("ab") as out:
        out.write(b"\x01\x02\x03")  # a write cut short
    again = Journal(tmp_path, 100, 16)
    assert again.end == 16 and read_entries(tmp_path / JOURNAL_FILE).size == 2
    again.append(100, 1, 1, 9)  # ids skipped: what is before is stale
    assert read_entries(tmp_path / JOURNAL_FILE)["first_id"].tolist() == [100]
    again.close()
    # a run that goes on elsewhere (past the reservation) empties it before any id
    Journal(tmp_path, 100, 1000).close()
    assert read_entries(tmp_path / JOURNAL_FILE).size == 0


def test_a_journal_write_that_fails_empties_the_journal(tmp_path: Path) -> None:
    """The ids of a batch whose entry could not be written are not covered: the journal must
    not say the ids end before them (a crash would reuse them)."""
    (tmp_path / "central").mkdir()
    journal = Journal(tmp_path, 100, 1)
    journal.append(1, 10, 1, 1)
    journal.append(11, 10, 1, 2)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * ENTRY.itemsize, limits[1]))
    try:
        journal.append(21, 10, 1, 3)  # EFBIG, as a full disk
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert read_entries(tmp_path / JOURNAL_FILE).size == 0 and journal.end == 0
    journal.append(31, 10, 1, 4)  # covers again from here
    assert read_entries(tmp_path / JOURNAL_FILE)["first_id"].tolist() == [31]
    journal.close()


def test_the_journal_keeps_about_the_last_capacity_ids(tmp_path: Path) -> None:
    (tmp_path / "central").mkdir()
    journal = Journal(tmp_path, 1000, 1)
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


def test_an_ingest_restarted_into_its_ring_writes_a_batch_journaled_and_not_written(
    tmp_path: Path,
) -> None:
    """The supervisor restarts a killed ingest with the ring it had: the entry written ahead of
    a ring write that never happened is replayed first (trusted journal), else the ids go on
    after the ring's last."""
    (tmp_path / "central").mkdir()
    journal = Journal(tmp_path, 100, 1)
    IdCheckpoint(tmp_path, 1).reserve(15)
    journal.append(1, 10, 1, 7)
    journal.append(11, 5, 1, 8)  # killed before this one's ring write
    journal.close()
    layout = RingLayout(64, 0)
    ring = Ring.over(bytearray(layout.size), layout, base_id=0)
    writer = RingWriter(ring)
    writer.write(np.zeros(10, dtype=RECORD_DTYPE))  # 1..10
    resume = _resume(tmp_path, ring, writer)
    assert (resume.plan["seq"].tolist(), resume.next_id, resume.trusted) == ([8], 16, True)
    assert writer.next_id == 11
    write_next_id(tmp_path, 16 + RESERVE, boot="another boot")  # never with a live ring
    resume = _resume(tmp_path, ring, writer)
    assert (resume.plan.size, resume.next_id, writer.next_id) == (0, 11, 11)
    # an empty ring made at the reservation after a power cut: no replay, no skip
    fresh = Ring.over(bytearray(layout.size), layout, base_id=15 + RESERVE)
    resume = _resume(tmp_path, fresh, RingWriter(fresh))
    assert (resume.plan.size, resume.next_id, resume.trusted) == (0, 16 + RESERVE, False)
