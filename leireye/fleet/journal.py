"""The central's replay journal: which stream message each block of ring ids came from.

A central's ring is in shared memory and starts empty with every `leireye central`; its ids
continue (`leireye.fleet.checkpoint`). So that a client resuming with `since` after a central
restart, clean or not, still gets the packets the previous run held, the ingest writes, for
each packet batch, one fixed-size entry to `<state_dir>/central/journal` (mode 0640, in the
central's directory, so the web user's group) *before* it writes the batch to the ring:

    offset  size  field
    0       8     first_id   the central id of the batch's first record (little-endian u8)
    8       4     count      how many records (u4)
    12      2     sensor     the sensor table index (u2)
    14      2     (zero)
    16      8     seq        the message's sequence in `LEIREYE_<sensor>_PACKETS` (u8)

Entries follow in id order, each starting where the previous one ended. The order of the
writes is the design: the id reservation (`ids.json`), then the entry, then the ring write,
then the acknowledgement. So every id a reader could ever see is covered by an entry, and the
journal's end is the id the run would have handed out next, whenever it dies. A death between
the entry and the ring write leaves an entry for ids nobody saw; the next run replays it, so it
means what the journal says. A write of the journal that fails (disk full) empties the file
(`ftruncate`, which needs no space): what it no longer covers cannot be replayed, and an empty
journal is never trusted to say where the ids go on (below). When a run starts, the journal is
emptied as well unless it ends exactly where the run continues (a jump past the reservation, a
clean stop's id it does not reach), before any id is reserved or handed out: the journal never
describes ids of another line of runs.

The file is bounded: once it covers more than `2 * capacity + SLACK` ids it is rewritten (a
temporary file, fsync, rename) with only the entries of the last `capacity` ids. Appends are
not fsynced; a clean stop fsyncs before it writes its exact next id with `"clean": true`. A
partial entry at the end (a write cut short) is cut off on open.

Where the next run goes on (`resume_point`, the supervisor making the ring and the ingest both
ask it), with E the journal's end and N `ids.json`'s next id:

- after a clean stop: at N; when the journal ends exactly there (it was fsynced before N was
  written), its last packets are replayed;
- after a crash on the same kernel boot (`ids.json`'s `boot_id`; a process killed, the page
  cache holds every write the journal got): at E, with its suffix replayed. Every id a client
  saw is below E and comes back with the packet it had; nothing is skipped, nothing counted
  lost. The batches that were journaled and not acknowledged are delivered again by the
  consumers: the ingest knows them by their stream sequence (`journaled_seqs`: the highest
  journaled one per sensor) and acknowledges them without writing or counting them again;
- after a crash on another boot (a power cut: the journal's unsynced tail may be gone, so E
  may be below ids clients saw), or with an empty journal: at N, past the reservation, with no
  replay; the batches delivered again are ingested again with new ids. Replaying the part of
  the journal that reached the disk would give old ids their packets back, but nothing tells
  where that part ends against what clients saw, so it is not done: a client resuming with a
  `since` from before is told the ids up to the new ring's first as lost.

A replay holds at most `capacity` ids in whole entries: the contiguous suffix of the journal
ending at where the run goes on (`replay_plan`); the supervisor creates the ring with its base
just before it, and the ingest fetches each message by its stream sequence and writes it again,
so every record gets the id it had (`leireye.fleet.replay`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from leireye.fleet.checkpoint import Checkpoint, boot_id, read_checkpoint

log = logging.getLogger("leireye.ingest")

JOURNAL_FILE: Final = "central/journal"
ENTRY: Final = np.dtype([("first_id", "<u8"), ("count", "<u4"), ("sensor", "<u2"),
                         ("pad", "<u2"), ("seq", "<u8")])  # fmt: skip
SLACK: Final = 1 << 16


def read_entries(path: Path) -> np.ndarray:
    """Every whole entry of the journal at `path` (none when it does not exist)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return np.empty(0, dtype=ENTRY)
    whole = len(data) - len(data) % ENTRY.itemsize
    return np.frombuffer(data[:whole], dtype=ENTRY).copy()


def replay_plan(entries: np.ndarray, next_id: int, capacity: int) -> np.ndarray:
    """The entries to replay: the contiguous suffix ending at `next_id`, at most `capacity`
    ids in whole entries (none when the journal does not end exactly there)."""
    if not len(entries):
        return entries[:0]
    ends = entries["first_id"].astype(np.int64) + entries["count"].astype(np.int64)
    if int(ends[-1]) != next_id:
        return entries[:0]
    start = len(entries) - 1
    total = int(entries["count"][start])
    if total > capacity:
        return entries[:0]
    while start > 0:
        before = start - 1
        if int(ends[before]) != int(entries["first_id"][start]):
            break
        if total + int(entries["count"][before]) > capacity:
            break
        total += int(entries["count"][before])
        start = before
    return entries[start:]


@dataclass(frozen=True)
class Resume:
    """Where a starting central goes on: `plan`, the entries to replay first (their ids end at
    `next_id`), then new ids from `next_id`; `trusted`: the journal covers every id handed out
    before (its entries' messages are not ingested again)."""

    plan: np.ndarray
    next_id: int
    trusted: bool


def journal_end(entries: np.ndarray) -> int:
    """The id after the journal's last entry (0 for an empty journal)."""
    return int(entries["first_id"][-1]) + int(entries["count"][-1]) if len(entries) else 0


def resume_point(entries: np.ndarray, saved: Checkpoint, boot: str, capacity: int) -> Resume:
    """Where a central goes on, from its journal's entries, `ids.json` and this kernel boot's
    id (see the module's docstring)."""
    end = journal_end(entries)
    if saved.clean:
        return Resume(replay_plan(entries, saved.next_id, capacity), saved.next_id, True)
    if boot and saved.boot_id == boot and 0 < end <= saved.next_id:
        return Resume(replay_plan(entries, end, capacity), end, True)
    return Resume(entries[:0], max(saved.next_id, end), False)


def planned_resume(state_dir: Path, capacity: int) -> Resume:
    """Where a central starting now goes on."""
    entries = read_entries(state_dir / JOURNAL_FILE)
    return resume_point(entries, read_checkpoint(state_dir), boot_id(), capacity)


def journaled_seqs(entries: np.ndarray) -> dict[int, int]:
    """The highest packets-stream sequence journaled per sensor index."""
    seqs: dict[int, int] = {}
    for sensor, seq in zip(entries["sensor"].tolist(), entries["seq"].tolist(), strict=True):
        seqs[sensor] = max(seqs.get(sensor, 0), seq)
    return seqs


class Journal:
    """The ingest's writer: `append` per batch before its ring write, `close` (fsync) on a
    clean stop. Opened before any id is reserved, with `next_id`, where this run's first entry
    will start (after its replay)."""

    def __init__(self, state_dir: Path, capacity: int, next_id: int) -> None:
        self.path = state_dir / JOURNAL_FILE
        self.capacity = capacity
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        size = os.fstat(self.fd).st_size
        whole = size - size % ENTRY.itemsize
        if whole != size:  # a write cut short: the next entry must start on a boundary
            os.ftruncate(self.fd, whole)
        self.first_id = 0  # the first id the file covers (0: empty)
        self.end = 0  # the id after its last entry
        if whole:
            head = np.frombuffer(os.pread(self.fd, ENTRY.itemsize, 0), dtype=ENTRY)[0]
            tail = np.frombuffer(os.pread(self.fd, ENTRY.itemsize, whole - ENTRY.itemsize),
                                 dtype=ENTRY)[0]  # fmt: skip
            self.first_id = int(head["first_id"])
            self.end = int(tail["first_id"]) + int(tail["count"])
        if self.end and self.end != next_id:  # another line of ids: it must not say where
            os.ftruncate(self.fd, 0)  # they go on (fails the start when it cannot be emptied)
            self.first_id = self.end = 0

    def append(self, first_id: int, count: int, sensor: int, seq: int) -> None:
        entry = np.zeros(1, dtype=ENTRY)
        entry[0] = (first_id, count, sensor, 0, seq)
        if self.end and first_id != self.end:  # ids skipped: what is before is stale
            self._empty()
        try:
            if os.write(self.fd, entry.tobytes()) != ENTRY.itemsize:
                raise OSError("short write")
        except OSError as exc:  # the ids written now are not covered: cover none
            log.warning("journal %s: %s (emptied: less to replay after a restart)", self.path, exc)
            self._empty()
            return
        if not self.first_id:
            self.first_id = first_id
        self.end = first_id + count
        if self.end - self.first_id > 2 * self.capacity + SLACK:
            try:
                self._compact()
            except OSError as exc:  # stays longer; tried again at the next append
                log.warning("journal %s: cannot compact: %s", self.path, exc)

    def close(self) -> None:
        """Flush to disk (before the clean stop's next id is written) and close."""
        if self.fd < 0:
            return
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1

    def _empty(self) -> None:
        try:
            os.ftruncate(self.fd, 0)
        except OSError as exc:  # a disk failing: a crash before the next append would go on
            log.error("journal %s: cannot empty it: %s", self.path, exc)  # at a stale end
        self.first_id = self.end = 0

    def _compact(self) -> None:
        entries = read_entries(self.path)
        ends = entries["first_id"].astype(np.int64) + entries["count"].astype(np.int64)
        kept = entries[ends > self.end - self.capacity]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "wb") as out:
            out.write(kept.tobytes())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        os.close(self.fd)
        self.fd = fd
        self.first_id = int(kept["first_id"][0])
