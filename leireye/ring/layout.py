"""The binary layout of a ring segment, and its validation on attach.

A segment is three regions, each starting on a 4 KiB page:

    offset 0               header      HEADER_DTYPE, one row, padded to 4096 bytes
    offset 4096            records     capacity x RECORD_DTYPE (256 bytes each)
    after the records      raw         capacity x raw_bytes (the first bytes of each frame)

Header fields, in order (little-endian):

    magic        8 bytes   b"LEIRING\\0"
    version      u4        LAYOUT_VERSION; bumped on any change to this file or to RECORD_DTYPE
    record_size  u4        RECORD_DTYPE.itemsize
    capacity     u8        number of record slots
    raw_bytes    u4        bytes kept per frame in the raw region (0: none)
    shard        u2        this segment's index among `shards` (multi-process capture)
    shards       u2        how many shards the run has (1 for a single capture process)
    dtype_crc    u4        CRC-32 of RECORD_DTYPE's description: catches a field renamed or
                           reordered without a version bump
    created_ns   i8        when the owner created the segment (time.time_ns)
    writer_pid   u8        the pid of the last process that opened a RingWriter
    base_id      u8        the id before the first record this ring holds (0: ids start at 1).
                           A fleet central starts each new ring after the ids its previous
                           ring handed out (docs/fleet-central.md); ids below `base_id + 1`
                           were never in this ring.
    write_start  u8        (own 64-byte line) the highest id the writer has begun to write
    write_seq    u8        (own 64-byte line) the highest id whose row is completely written

The header is written once by the owner before any other process attaches, so attachers can read
it without locking. Only `write_start`, `write_seq` and `writer_pid` change later, each an aligned
8-byte store. A ring created with a `base_id` starts with `write_start = write_seq = base_id`:
the first record it gets has id `base_id + 1` and, as everywhere, lives in slot
`(id - 1) % capacity`.
"""

from __future__ import annotations

import mmap
import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np

from leireye.errors import RingError
from leireye.record import RECORD_DTYPE
from leireye.ring.shm import PAGE, page_align

MAGIC: Final = b"LEIRING\x00"
LAYOUT_VERSION: Final = 3  # 2: `sensor` (u2) taken from `info`; 3: `base_id`

HEADER_DTYPE: Final = np.dtype(
    {
        "names": [
            "magic",
            "version",
            "record_size",
            "capacity",
            "raw_bytes",
            "shard",
            "shards",
            "dtype_crc",
            "created_ns",
            "writer_pid",
            "base_id",
            "write_start",
            "write_seq",
        ],
        "formats": [
            "S8",
            "<u4",
            "<u4",
            "<u8",
            "<u4",
            "<u2",
            "<u2",
            "<u4",
            "<i8",
            "<u8",
            "<u8",
            "<u8",
            "<u8",
        ],
        "offsets": [0, 8, 12, 16, 24, 28, 30, 32, 40, 48, 56, 64, 128],
        "itemsize": 192,
    }
)
# Offsets of the two counters in units of u8, for a plain uint64 view of the header page.
WRITE_START_WORD: Final = 64 // 8
WRITE_SEQ_WORD: Final = 128 // 8
BASE_ID_WORD: Final = 56 // 8


def record_dtype_crc() -> int:
    return zlib.crc32(repr(RECORD_DTYPE.descr).encode()) & 0xFFFF_FFFF


@dataclass(frozen=True)
class RingLayout:
    capacity: int
    raw_bytes: int
    shard: int = 0
    shards: int = 1

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise RingError(f"ring capacity must be positive, got {self.capacity}")
        if not 0 <= self.raw_bytes <= 65535:
            raise RingError(f"raw_bytes must be within 0..65535, got {self.raw_bytes}")
        if not 0 <= self.shard < self.shards:
            raise RingError(f"shard {self.shard} out of range for {self.shards} shards")

    @property
    def records_offset(self) -> int:
        return PAGE

    @property
    def raw_offset(self) -> int:
        return page_align(self.records_offset + self.capacity * RECORD_DTYPE.itemsize)

    @property
    def size(self) -> int:
        return page_align(self.raw_offset + self.capacity * self.raw_bytes)

    def write_header(self, buf: bytearray | mmap.mmap, created_ns: int, base_id: int = 0) -> None:
        header = np.ndarray((), dtype=HEADER_DTYPE, buffer=buf)
        header["magic"] = MAGIC
        header["version"] = LAYOUT_VERSION
        header["record_size"] = RECORD_DTYPE.itemsize
        header["capacity"] = self.capacity
        header["raw_bytes"] = self.raw_bytes
        header["shard"] = self.shard
        header["shards"] = self.shards
        header["dtype_crc"] = record_dtype_crc()
        header["created_ns"] = created_ns
        header["writer_pid"] = 0
        header["base_id"] = base_id
        header["write_start"] = base_id
        header["write_seq"] = base_id

    @classmethod
    def read_header(cls, buf: bytearray | bytes | mmap.mmap, name: str = "ring") -> RingLayout:
        """Validate a header and return the layout it describes; RingError says what is off."""
        if len(buf) < PAGE:
            raise RingError(f"{name}: segment too small for a ring header ({len(buf)} bytes)")
        header = np.ndarray((), dtype=HEADER_DTYPE, buffer=buf)
        magic = header["magic"].tobytes()
        if magic != MAGIC:
            raise RingError(f"{name}: not a LeirEye ring (bad magic {magic!r})")
        checks = (
            ("layout version", int(header["version"]), LAYOUT_VERSION),
            ("record size", int(header["record_size"]), RECORD_DTYPE.itemsize),
            ("record layout checksum", int(header["dtype_crc"]), record_dtype_crc()),
        )
        for what, found, expected in checks:
            if found != expected:
                raise RingError(f"{name}: {what} is {found}, this LeirEye expects {expected}")
        layout = cls(
            capacity=int(header["capacity"]),
            raw_bytes=int(header["raw_bytes"]),
            shard=int(header["shard"]),
            shards=int(header["shards"]),
        )
        if len(buf) < layout.size:
            raise RingError(f"{name}: segment is {len(buf)} bytes, its header needs {layout.size}")
        return layout
