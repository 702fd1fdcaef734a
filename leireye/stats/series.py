"""The statistics in shared memory: one writer (the stats process), any number of read-only
readers (the web workers), and a seqlock so a reader never sees half an update."""

from __future__ import annotations

import mmap
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from leireye.config import StatsConfig
from leireye.errors import RingError
from leireye.ring.shm import PAGE, Segment, attach_segment, create_segment, page_align
from leireye.stats.layout import (
    HISTORY_DTYPE,
    StatsSnapshot,
    decode_frame,
    frame_dtype,
    last_seconds,
)

MAGIC: Final = b"LEISTAT\x00"
SERIES_VERSION: Final = 1

_HEADER_FIELDS: Final = (
    ("magic", "S8", 0),
    ("version", "<u4", 8),
    ("dtype_crc", "<u4", 12),
    ("top_n", "<u4", 16),
    ("history_rows", "<u4", 20),
    ("frame_offset", "<u8", 24),
    ("frame_size", "<u4", 32),
    ("update_ms", "<u4", 36),
    ("history_offset", "<u8", 40),
    ("created_ns", "<i8", 48),
    ("top_window_s", "<u4", 56),
    ("seq", "<u8", 64),  # the seqlock, alone on its cache line
    ("writer_pid", "<u8", 128),
)
HEADER_DTYPE: Final = np.dtype(
    {
        "names": [f[0] for f in _HEADER_FIELDS],
        "formats": [f[1] for f in _HEADER_FIELDS],
        "offsets": [f[2] for f in _HEADER_FIELDS],
        "itemsize": 192,
    }
)
SEQ_WORD: Final = 64 // 8
DEFAULT_RETRY_S: Final = 0.1


def layout_crc(top_n: int) -> int:
    descr = repr((frame_dtype(top_n).descr, HISTORY_DTYPE.descr))
    return zlib.crc32(descr.encode()) & 0xFFFF_FFFF


@dataclass(frozen=True)
class SeriesLayout:
    top_n: int
    history_rows: int

    @property
    def frame_dtype(self) -> np.dtype[np.void]:
        return frame_dtype(self.top_n)

    @property
    def frame_offset(self) -> int:
        return PAGE

    @property
    def history_offset(self) -> int:
        return page_align(self.frame_offset + self.frame_dtype.itemsize)

    @property
    def size(self) -> int:
        return page_align(self.history_offset + self.history_rows * HISTORY_DTYPE.itemsize)

    @classmethod
    def for_config(cls, config: StatsConfig) -> SeriesLayout:
        return cls(top_n=config.top_n, history_rows=config.history_s + 1)


class StatsSeries:
    """A stats segment, mapped.

    Layout (little-endian), each region on a 4 KiB page:

        offset 0        header   HEADER_DTYPE, padded to a page
        offset 4096     frame    one row of frame_dtype(top_n): rates, totals, top tables
        next page       history  history_rows x HISTORY_DTYPE; row `s % history_rows` holds
                                 Unix second `s`, the frame's `current_second` is the open one

    Header: `magic` b"LEISTAT\\0"; `version` SERIES_VERSION; `dtype_crc` CRC-32 of the frame and
    history dtypes (catches a field or an enum that grew without a version bump); `top_n`,
    `history_rows`, `frame_offset`, `frame_size`, `history_offset` (checked against what this
    code computes); `update_ms`, `top_window_s`, `created_ns` for information; `seq`, alone on
    its 64-byte line, the seqlock; `writer_pid`, the last process that attached to write.

    Everything but `seq` and `writer_pid` is written once by the creator before anyone attaches.

    Write order of one `publish`, and why: `seq` becomes odd, then the frame and the changed
    history rows are copied, then `seq` becomes even (two more than before). A reader reads
    `seq`, retries while it is odd, copies what it wants, and reads `seq` again; equal values
    mean no publish overlapped the copy. Each `seq` store is one aligned 8-byte store, and the
    order of plain stores and of plain loads is kept by x86-64 (as for the ring); there are no
    memory barriers in Python. A writer that dies mid-publish leaves `seq` odd: readers then
    time out with RingError, and the next writer to attach makes it even again and republishes
    the whole series.
    """

    def __init__(self, segment: Segment, layout: SeriesLayout) -> None:
        self.segment = segment
        self.layout = layout
        buf = segment.buf
        self._header = np.ndarray((), HEADER_DTYPE, buffer=buf)
        self._words = np.ndarray((PAGE // 8,), np.uint64, buffer=buf)
        self._frame = np.ndarray((), layout.frame_dtype, buffer=buf, offset=layout.frame_offset)
        self._history = np.ndarray(
            (layout.history_rows,), HISTORY_DTYPE, buffer=buf, offset=layout.history_offset
        )

    @property
    def name(self) -> str:
        return self.segment.name

    @classmethod
    def create(
        cls,
        name: str,
        config: StatsConfig,
        *,
        mode: int = 0o600,
        owner: tuple[int, int] | None = None,
        created_ns: int | None = None,
    ) -> StatsSeries:
        """Create the segment (the owner: the supervisor) and write its header."""
        layout = SeriesLayout.for_config(config)
        segment = create_segment(name, layout.size, mode=mode, owner=owner)
        header = np.ndarray((), HEADER_DTYPE, buffer=segment.buf)
        header["magic"] = MAGIC
        header["version"] = SERIES_VERSION
        header["dtype_crc"] = layout_crc(layout.top_n)
        header["top_n"] = layout.top_n
        header["history_rows"] = layout.history_rows
        header["frame_offset"] = layout.frame_offset
        header["frame_size"] = layout.frame_dtype.itemsize
        header["history_offset"] = layout.history_offset
        header["update_ms"] = config.update_ms
        header["top_window_s"] = config.top_window_s
        header["created_ns"] = time.time_ns() if created_ns is None else created_ns
        del header
        series = cls(segment, layout)
        series._history["second"] = -1
        return series

    @classmethod
    def attach(cls, name: str, *, writable: bool = False) -> StatsSeries:
        """Map an existing segment, read-only unless `writable` (the stats process only)."""
        segment = attach_segment(name, writable=writable)
        try:
            layout = read_layout(segment.buf, name)
        except BaseException:
            segment.close()
            raise
        series = cls(segment, layout)
        if writable:
            if int(series._words[SEQ_WORD]) % 2:
                series._words[SEQ_WORD] += np.uint64(1)
            series._header["writer_pid"] = os.getpid()
        return series

    def check_config(self, config: StatsConfig) -> None:
        """Raise RingError unless the segment was made for `config`'s sizes."""
        expected = SeriesLayout.for_config(config)
        if expected != self.layout:
            raise RingError(
                f"{self.name}: stats segment holds {self.layout}, the configuration asks {expected}"
            )

    def publish(
        self, frame: np.ndarray, history: np.ndarray | None = None, rows: np.ndarray | None = None
    ) -> None:
        """Publish a frame, and the given `rows` of a series ring (all rows if `rows` is None)."""
        words = self._words
        seq = int(words[SEQ_WORD])
        words[SEQ_WORD] = seq + 1
        self._frame[...] = frame
        if history is not None:
            if rows is None:
                self._history[:] = history
            elif len(rows):
                self._history[rows] = history[rows]
        words[SEQ_WORD] = seq + 2

    def read_frame(self, retry_s: float = DEFAULT_RETRY_S) -> np.ndarray:
        """A consistent copy of the frame (a 0-d array of `frame_dtype(top_n)`)."""
        return self._consistent(lambda: self._frame.copy(), retry_s)

    def read(self, retry_s: float = DEFAULT_RETRY_S) -> StatsSnapshot:
        return decode_frame(self.read_frame(retry_s))

    def history(
        self, seconds: int, include_current: bool = False, retry_s: float = DEFAULT_RETRY_S
    ) -> np.ndarray:
        """The rows of the last `seconds` closed seconds, oldest first (see `last_seconds`)."""

        def copy() -> np.ndarray:
            current = int(self._frame["current_second"])
            return last_seconds(self._history, current, seconds, include_current)

        return self._consistent(copy, retry_s)

    def _consistent(self, copy: Callable[[], np.ndarray], retry_s: float) -> np.ndarray:
        words = self._words
        deadline = time.monotonic() + retry_s
        while True:
            before = int(words[SEQ_WORD])
            if before % 2 == 0:
                result = copy()
                if int(words[SEQ_WORD]) == before:
                    return result
            if time.monotonic() > deadline:
                raise RingError(f"{self.name}: the stats writer did not finish a publish in time")
            time.sleep(0)

    def close(self) -> None:
        """Drop the views and unmap (views must go first: see leireye.ring.shm). Idempotent."""
        if self.segment.buf.closed:
            return
        del self._header, self._words, self._frame, self._history
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()


def read_layout(buf: mmap.mmap | bytes | bytearray, name: str) -> SeriesLayout:
    """Validate a stats segment's header and return its layout; RingError says what is off."""
    size = len(buf)
    if size < PAGE:
        raise RingError(f"{name}: segment too small for a stats header ({size} bytes)")
    header = np.ndarray((), HEADER_DTYPE, buffer=buf)
    magic = header["magic"].tobytes()
    if magic != MAGIC:
        raise RingError(f"{name}: not a LeirEye stats segment (bad magic {magic!r})")
    if int(header["version"]) != SERIES_VERSION:
        raise RingError(
            f"{name}: stats layout version is {int(header['version'])}, "
            f"this LeirEye expects {SERIES_VERSION}"
        )
    top_n = int(header["top_n"])
    if not 1 <= top_n <= 255 or int(header["history_rows"]) < 1:
        raise RingError(f"{name}: stats header has impossible sizes")
    layout = SeriesLayout(top_n=top_n, history_rows=int(header["history_rows"]))
    checks = (
        ("layout checksum", int(header["dtype_crc"]), layout_crc(top_n)),
        ("frame offset", int(header["frame_offset"]), layout.frame_offset),
        ("frame size", int(header["frame_size"]), layout.frame_dtype.itemsize),
        ("history offset", int(header["history_offset"]), layout.history_offset),
    )
    for what, found, expected in checks:
        if found != expected:
            raise RingError(f"{name}: stats {what} is {found}, this LeirEye expects {expected}")
    if size < layout.size:
        raise RingError(f"{name}: segment is {size} bytes, its header needs {layout.size}")
    return layout
