"""The store writer process: frames from every shard's frame segment into the store's files.

`run_store` is a child of the supervisor, run as `capture.user` (it owns the store directory);
the supervisor restarts it like the stats process. It attaches every capture shard's frame
segment (`leireye/ring/frames.py`) writable (for page 1, its status), takes stock of the files a
previous writer left (`StoreFiles.open_existing`: indexes recovered, a cut last block removed),
resumes each shard just after the last id on disk, and loops: read what each shard published,
append it to that shard's file, and every `FLUSH_S` save the indexes, apply retention and
publish the status.

What the store misses is counted in `frames_lost` (status, log, /metrics), never hidden:
frames the writer was lapped on (it fell more than the segment behind), frames overwritten while
it was down (a restart), frames the capture could not append, and frames that arrived while the
disk refused writes. A disk that fills or fails (`StoreFailed`) puts the store in state
`failed` with the reason; it tries again every `RETRY_S` (retention may have made room, or an
operator did).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from leireye.config import Config
from leireye.errors import LeirEyeError
from leireye.ring.frames import FrameReader, FrameSegment, frames_name
from leireye.ring.storestatus import StoreState, StoreStatus, read_status, write_status
from leireye.stopping import StopEvent, StopFlag, stop_on_sigterm
from leireye.store.writer import StoreFailed, StoreFiles

log = logging.getLogger("leireye.store")

FLUSH_S: Final = 0.5
RETRY_S: Final = 10.0
IDLE_S: Final = 0.01
READ_FRAMES: Final = 16384
READ_BYTES: Final = 16 << 20


@dataclass
class _Shard:
    segment: FrameSegment
    reader: FrameReader
    lost: int  # carried over from the previous writer's status
    written: int
    counted_drops: int  # the producer's `dropped` already added to `lost`


def run_store(
    config: Config, ring_name: str, shards: int, run: int, stop: StopEvent | None = None
) -> int:
    """Write until SIGTERM or `stop`; `run` names this sensor run in the file names."""
    with stop_on_sigterm(stop) as stopping:
        segments: list[FrameSegment] = []
        try:
            for k in range(shards):
                segments.append(FrameSegment.attach(frames_name(ring_name, k), writable=True))
            return _Writer(config, segments, run, stopping).run()
        except LeirEyeError as exc:
            log.error("store cannot start: %s", exc)
            return 1
        finally:
            for segment in segments:
                segment.close()


class _Writer:
    def __init__(
        self, config: Config, segments: list[FrameSegment], run: int, stopping: StopFlag
    ) -> None:
        store = config.store
        self.directory = Path(config.store_dir)
        self.stopping = stopping
        self.files = StoreFiles(
            self.directory, file_bytes=store.file_mb << 20, file_s=store.file_s,
            max_bytes=int(store.max_gb * (1 << 30)), max_age_s=store.max_age_h * 3600, run=run,
        )  # fmt: skip
        self.segments = segments
        self.shards: list[_Shard] = []
        self.state = StoreState.STARTING
        self.error = ""
        self.retry_at = 0.0

    def run(self) -> int:
        recovery = self.files.open_existing()
        if recovery.cut_bytes or recovery.rebuilt or recovery.unreadable:
            log.warning("store: recovered %s: %d bytes of a cut last packet removed, %d indexes "
                        "rebuilt%s", self.directory, recovery.cut_bytes, recovery.rebuilt,
                        "".join(f"; {u}" for u in recovery.unreadable))  # fmt: skip
        for segment in self.segments:
            self.shards.append(self._resume(segment, recovery.last_ids.get(segment.shard, 0)))
        self.state = StoreState.WRITING
        log.info("store: writing %s (%d files, %.1f MiB held)", self.directory,
                 len(self.files.closed), self.files.disk_bytes() / 2**20)  # fmt: skip
        next_flush = time.monotonic()
        try:
            while not self.stopping():
                moved = sum(self._drain(shard) for shard in self.shards)
                now = time.monotonic()
                if now >= next_flush:
                    self._flush(now)
                    next_flush = now + FLUSH_S
                if not moved:
                    self.stopping.wait(IDLE_S)
            for shard in self.shards:  # what the capture published before the stop
                self._drain(shard)
        finally:
            try:
                self.files.close()
            except OSError as exc:
                log.warning("store: closing the files: %s", exc)
            if self.state == StoreState.WRITING:
                self.state = StoreState.STOPPED
            self._publish()
        return 0

    def _resume(self, segment: FrameSegment, last_id: int) -> _Shard:
        previous = read_status(segment)
        reader = FrameReader(segment, 1)
        seq = reader.seek_after(last_id)
        expected = segment.disk_seq + 1
        if last_id and seq > 1:
            held = segment.entries[(seq - 2) % segment.slots]
            if int(held["id"]) == last_id:  # the last frame on disk is still held: no gap
                expected = seq
        gap = max(0, seq - expected)
        if gap:
            log.warning("store: shard %d: %d frames were overwritten before this writer read "
                        "them (a restart)", segment.shard, gap)  # fmt: skip
        return _Shard(segment, reader, previous.frames_lost + gap, previous.frames_written,
                      previous.producer_dropped)  # fmt: skip

    def _drain(self, shard: _Shard) -> int:
        batch = shard.reader.read(READ_FRAMES, READ_BYTES)
        shard.lost += batch.lost
        if not len(batch):
            if batch.lost and self.state != StoreState.FAILED:  # lapped: those will never come
                shard.segment.disk_seq = shard.reader.next_seq - 1
            return 0
        if self.state == StoreState.FAILED and time.monotonic() >= self.retry_at:
            self.state = StoreState.WRITING
            self.files.close()
            log.info("store: trying the disk again")
        if self.state == StoreState.FAILED:
            shard.lost += len(batch)
            return len(batch)
        try:
            self.files.write(shard.segment.shard, batch, *shard.segment.link)
        except StoreFailed as exc:
            self._fail(exc)
            shard.lost += len(batch)
            return len(batch)
        shard.written += len(batch)
        shard.segment.disk_seq = shard.reader.next_seq - 1
        return len(batch)

    def _flush(self, now: float) -> None:
        if self.state == StoreState.WRITING:
            try:
                self.files.flush()
            except StoreFailed as exc:
                self._fail(exc)
        else:
            self.files.enforce_retention()
        self._publish()

    def _fail(self, exc: StoreFailed) -> None:
        if self.state != StoreState.FAILED:
            log.error("store stopped: %s (the capture goes on; frames are lost to the store "
                      "and counted; trying again every %.0f s)", exc, RETRY_S)  # fmt: skip
        self.state = StoreState.FAILED
        self.error = str(exc)
        self.retry_at = time.monotonic() + RETRY_S
        try:
            self.files.close()
        except OSError:
            self.files.current.clear()

    def _publish(self) -> None:
        oldest, newest = self.files.time_span()
        common = StoreStatus(
            state=self.state, pid=os.getpid(), files=len(self.files.all_indexes()),
            disk_bytes=self.files.disk_bytes(), oldest_ns=oldest, newest_ns=newest,
            last_error=self.error if self.state == StoreState.FAILED else "",
        )  # fmt: skip
        for shard in self.shards:
            dropped = shard.segment.dropped
            shard.lost += dropped - shard.counted_drops
            shard.counted_drops = dropped
            write_status(shard.segment, msgspec.structs.replace(
                common, frames_written=shard.written, frames_lost=shard.lost,
                lag_frames=shard.reader.backlog, producer_dropped=dropped,
                bytes_written=self.files.bytes_written,
            ))  # fmt: skip
