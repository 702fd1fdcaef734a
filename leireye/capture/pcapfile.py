"""Classic pcap files as LeirEye writes them: the one place that knows their layout.

Every pcap LeirEye or its tests, scripts and benchmarks write goes through here: the frames a
stuck decoder was working on, the REST API's pcap export, generated traffic, fuzzing findings.

Layout (little-endian, the byte order the magic number is read in):

    file header, 24 bytes
        magic     u4  0xA1B2C3D4: microsecond timestamps; 0xA1B23C4D: nanosecond timestamps
        version   u2 u2  2.4
        thiszone  i4  0 (timestamps are UTC)
        sigfigs   u4  0
        snaplen   u4  the longest frame any record holds
        network   u4  the link type, a LINKTYPE_* value (not a DLT_*, see below)
    then per packet a 16-byte record header and its bytes
        ts_sec    u4  Unix seconds (clipped to 0 .. 2^32 - 1)
        ts_frac   u4  microseconds or nanoseconds within the second, as the magic says
        incl_len  u4  bytes stored after this header
        orig_len  u4  the frame's length on the wire (never less than incl_len)

DLT and LINKTYPE: libpcap hands out a live handle's link type as a DLT_* value, whose numbers
differ between systems for a few link types; a file holds the system-independent LINKTYPE_*
value. They are the same number except for those few, and on Linux the one that matters here is
raw IP: DLT_RAW is 12, LINKTYPE_RAW is 101 (`file_linktype`). libpcap maps 101 back to 12 when it
reads the file, so a replay of an export decodes like the live capture did.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

MAGIC_US: Final = 0xA1B2C3D4
MAGIC_NS: Final = 0xA1B23C4D
FILE_MAGICS: Final = frozenset(
    bytes.fromhex(h) for h in ["d4c3b2a1", "a1b2c3d4", "4d3cb2a1", "a1b23c4d", "0a0d0d0a"]
)
"""The first four bytes of a capture file libpcap reads: pcap (microsecond and nanosecond, both
byte orders) and pcapng (its section header block)."""

FILE_HEADER: Final = struct.Struct("<IHHiIII")
RECORD_HEADER_DTYPE: Final = np.dtype(
    [("ts_sec", "<u4"), ("ts_frac", "<u4"), ("incl_len", "<u4"), ("orig_len", "<u4")]
)

# libpcap's dlt_to_linktype() for the DLT_* values Linux numbers differently from LINKTYPE_*.
_DLT_TO_LINKTYPE: Final = {11: 100, 12: 101}  # ATM_RFC1483, RAW

Frames = Sequence[bytes | memoryview]
Ints = Sequence[int] | npt.NDArray[np.int64]


def file_linktype(dlt: int) -> int:
    """The LINKTYPE_* a file says for a link type libpcap reported as `dlt`."""
    return _DLT_TO_LINKTYPE.get(dlt, dlt)


def file_header(dlt: int, snaplen: int, *, nanoseconds: bool = False) -> bytes:
    """The 24-byte file header for frames of link type `dlt` (as libpcap reports it)."""
    magic = MAGIC_NS if nanoseconds else MAGIC_US
    return FILE_HEADER.pack(magic, 2, 4, 0, 0, snaplen, file_linktype(dlt))


def packet_records(
    ts_ns: Ints, wire_lens: Ints, frames: Frames, *, nanoseconds: bool = False
) -> bytes:
    """The records of `frames` (each stored whole), stamped `ts_ns` (Unix nanoseconds), with
    their wire lengths: one bytes object, headers built for the whole batch at once."""
    n = len(frames)
    if n == 0:
        return b""
    ts = np.asarray(ts_ns, dtype=np.int64)
    if nanoseconds:
        seconds, fraction = np.divmod(ts, 1_000_000_000)
    else:
        seconds, fraction = np.divmod(ts // 1000, 1_000_000)
    incl = np.fromiter((len(frame) for frame in frames), dtype=np.int64, count=n)
    heads = np.zeros(n, dtype=RECORD_HEADER_DTYPE)
    heads["ts_sec"] = np.clip(seconds, 0, 0xFFFF_FFFF)
    heads["ts_frac"] = fraction
    heads["incl_len"] = incl
    heads["orig_len"] = np.maximum(np.asarray(wire_lens, dtype=np.int64), incl)
    head_bytes = heads.tobytes()
    size = RECORD_HEADER_DTYPE.itemsize
    parts: list[bytes | memoryview] = []
    for i, frame in enumerate(frames):
        parts.append(head_bytes[i * size : (i + 1) * size])
        parts.append(frame)
    return b"".join(parts)


def pcap_chunks(
    batches: Iterable[tuple[Ints, Ints, Frames]],
    dlt: int,
    snaplen: int,
    *,
    nanoseconds: bool = False,
) -> Iterator[bytes]:
    """A pcap file as chunks: the file header, then the records of each `(ts_ns, wire_lens,
    frames)` batch (an empty batch yields nothing). Each chunk is made only when asked for, so a
    file of any size streams through the memory of one batch."""
    yield file_header(dlt, snaplen, nanoseconds=nanoseconds)
    for ts_ns, wire_lens, frames in batches:
        if len(frames):
            yield packet_records(ts_ns, wire_lens, frames, nanoseconds=nanoseconds)


def write_pcap(
    path: str | Path,
    ts_ns: Ints,
    wire_lens: Ints,
    frames: Frames,
    dlt: int,
    snaplen: int,
    *,
    nanoseconds: bool = False,
    exclusive: bool = False,
) -> None:
    """Write `frames` as one pcap file; `exclusive`: refuse to replace an existing file
    (FileExistsError)."""
    with open(path, "xb" if exclusive else "wb") as f:
        batches = [(ts_ns, wire_lens, frames)]
        for chunk in pcap_chunks(batches, dlt, snaplen, nanoseconds=nanoseconds):
            f.write(chunk)
