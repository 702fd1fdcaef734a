"""The central's replay journal: which stream message each block of ring ids came from.

A central's ring is in shared memory and starts empty with every `leireye central`; its ids
continue (`leireye.fleet.checkpoint`). So that a client resuming with `since` after a central
restart still gets the packets the previous run held, the ingest writes, for each packet batch
it puts in the ring (after the ring write, before the acknowledgement), one fixed-size entry to
`<state_dir>/central/journal` (mode 0640, in the central's directory, so the web user's group):

    offset  size  field
    0       8     first_id   the central id of the batch's first record (little-endian u8)
    8       4     count      how many records (u4)
    12      2     sensor     the sensor table index (u2)
    14      2     (zero)
    16      8     seq        the message's sequence in `LEIREYE_<sensor>_PACKETS` (u8)

Entries follow in id order, each starting where the previous one ended. The file is bounded:
once it covers more than `2 * capacity + SLACK` ids it is rewritten (a temporary file, fsync,
rename) with only the entries of the last `capacity` ids. Appends are not fsynced (a clean stop
fsyncs before it writes its exact next id): a tail lost in a power cut means less to replay,
never a wrong id, since a replay only happens when the journal ends exactly at the clean stop's
next id. A partial entry at the end (a write cut short) is cut off on open.

On start, after a clean stop (`ids.json` has `"clean": true`), `replay_plan` picks the
contiguous suffix of whole entries that ends at the saved next id and holds at most `capacity`
ids; the supervisor creates the ring with its base just before it, and the ingest fetches each
message by its stream sequence and writes it again, so every record gets the id it had. After a
crash there is no replay: ids above the journal's end may have been handed out for messages
that were not acknowledged and will be delivered again, so the ids jump past the reserved block
(`checkpoint.RESERVE`) as before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

import numpy as np

from leireye.fleet.checkpoint import read_checkpoint

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


def planned_replay(state_dir: Path, capacity: int) -> np.ndarray:
    """The entries a central starting now replays (none after a crash or on a first run)."""
    next_id, clean = read_checkpoint(state_dir)
    if not clean:
        return np.empty(0, dtype=ENTRY)
    return replay_plan(read_entries(state_dir / JOURNAL_FILE), next_id, capacity)


class Journal:
    """The ingest's writer: `append` per batch, `close` (fsync) on a clean stop."""

    def __init__(self, state_dir: Path, capacity: int) -> None:
        self.path = state_dir / JOURNAL_FILE
        self.capacity = capacity
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
        size = os.fstat(self.fd).st_size
        whole = size - size % ENTRY.itemsize
        if whole != size:  # a write cut short: the next entry must start on a boundary
            os.ftruncate(self.fd, whole)
        self.entries = whole // ENTRY.itemsize
        self.first_id = 0  # the first id the file covers (0: empty)
        self.end = 0  # the id after its last entry
        if self.entries:
            head = np.frombuffer(os.pread(self.fd, ENTRY.itemsize, 0), dtype=ENTRY)[0]
            tail = np.frombuffer(os.pread(self.fd, ENTRY.itemsize, whole - ENTRY.itemsize),
                                 dtype=ENTRY)[0]  # fmt: skip
            self.first_id = int(head["first_id"])
            self.end = int(tail["first_id"]) + int(tail["count"])

    def append(self, first_id: int, count: int, sensor: int, seq: int) -> None:
        entry = np.zeros(1, dtype=ENTRY)
        entry[0] = (first_id, count, sensor, 0, seq)
        if self.end and first_id != self.end:  # ids skipped (a crash): what is before is stale
            self._rewrite(np.empty(0, dtype=ENTRY))
        try:
            os.write(self.fd, entry.tobytes())
        except OSError as exc:  # the next entry finds a gap and starts the file over
            log.warning("journal %s: %s (less to replay after a restart)", self.path, exc)
            return
        if not self.first_id:
            self.first_id = first_id
        self.end = first_id + count
        self.entries += 1
        if self.end - self.first_id > 2 * self.capacity + SLACK:
            self._compact()

    def close(self) -> None:
        """Flush to disk (before the clean stop's next id is written) and close."""
        if self.fd < 0:
            return
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1

    def _compact(self) -> None:
        entries = read_entries(self.path)
        ends = entries["first_id"].astype(np.int64) + entries["count"].astype(np.int64)
        self._rewrite(entries[ends > self.end - self.capacity])

    def _rewrite(self, entries: np.ndarray) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with os.fdopen(fd, "wb") as out:
            out.write(entries.tobytes())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        self.entries = len(entries)
        self.first_id = int(entries["first_id"][0]) if len(entries) else 0
        self.end = int(entries["first_id"][-1] + entries["count"][-1]) if len(entries) else 0
