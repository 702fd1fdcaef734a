"""pcapng as the packet store writes and reads it: the one place that knows that layout.

Each store file is one section (little-endian), one interface, then one Enhanced Packet Block
per frame, each carrying the frame's run-wide packet id in the standard `epb_packetid` option,
so a file alone says which packet is which (an index can always be rebuilt from it):

    Section Header Block      28 bytes  type 0x0A0D0D0A, byte-order magic 0x1A2B3C4D, 1.0,
                                        section length -1
    Interface Description     32 bytes  type 1, linktype (a LINKTYPE_*), snaplen,
                                        if_tsresol = 9 (nanoseconds), opt_endofopt
    Enhanced Packet Block     48 + caplen + pad bytes, per frame:
        0   type 6            4   block length     8   interface 0
        12  ts high (u4)      16  ts low (u4)      (Unix nanoseconds, split in two words)
        20  captured length   24  original length  28  the frame, zero-padded to 4 bytes
        then epb_packetid (code 5, length 8, the id as u8), opt_endofopt, the block length again

A block is whole when its trailing length equals its leading one: a crash can leave only the
last block of the last file cut, and `scan` stops before it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

SHB_TYPE: Final = 0x0A0D0D0A
IDB_TYPE: Final = 1
EPB_TYPE: Final = 6
BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
OPT_PACKETID: Final = 5

_SHB: Final = struct.Struct("<IIIHHqI")
_IDB: Final = struct.Struct("<IIHHIHHBxxxHHI")
EPB_HEAD: Final = np.dtype(
    [("type", "<u4"), ("length", "<u4"), ("interface", "<u4"), ("ts_high", "<u4"),
     ("ts_low", "<u4"), ("cap_len", "<u4"), ("wire_len", "<u4")]
)  # fmt: skip
EPB_TAIL: Final = np.dtype(
    [("code", "<u2"), ("size", "<u2"), ("id", "<u8"), ("end", "<u4"), ("length", "<u4")]
)
EPB_OVERHEAD: Final = EPB_HEAD.itemsize + EPB_TAIL.itemsize  # 48 bytes besides frame and pad
_HEAD_WORDS: Final = np.arange(EPB_HEAD.itemsize // 4)
_TAIL_WORDS: Final = np.arange(EPB_TAIL.itemsize // 4)
_FRAME_RUN: Final = np.array([False, True, False])  # a block: header, frame, padding and tail
_EPB_HEAD: Final = struct.Struct("<IIIIIII")
_EPB_ID: Final = struct.Struct("<HHQ")


def file_header(linktype: int, snaplen: int) -> bytes:
    """The section header and the interface description every store file starts with."""
    shb = _SHB.pack(SHB_TYPE, _SHB.size, BYTE_ORDER_MAGIC, 1, 0, -1, _SHB.size)
    idb = _IDB.pack(IDB_TYPE, _IDB.size, linktype, 0, snaplen, 9, 1, 9, 0, 0, _IDB.size)
    return shb + idb


def header_link(head: bytes) -> tuple[int, int] | None:
    """`(linktype, snaplen)` from a file's first bytes; None if it is not a store file."""
    if len(head) < _SHB.size + _IDB.size:
        return None
    kind, _, magic, *_ = _SHB.unpack_from(head, 0)
    idb = _IDB.unpack_from(head, _SHB.size)
    if kind != SHB_TYPE or magic != BYTE_ORDER_MAGIC or idb[0] != IDB_TYPE:
        return None
    return idb[2], idb[4]


HEADER_BYTES: Final = _SHB.size + _IDB.size


def packet_blocks(
    ids: npt.NDArray[np.uint64],
    ts_ns: npt.NDArray[np.int64],
    wire_lens: npt.NDArray[np.uint32],
    cap_lens: npt.NDArray[np.uint32],
    data: bytes,
    starts: npt.NDArray[np.uint64],
) -> tuple[bytes, npt.NDArray[np.int64]]:
    """The blocks of `n` frames (frame i is `data[starts[i] : starts[i] + cap_lens[i]]`) as one
    bytes object, and each block's offset within it.

    No Python runs per frame: the batch's blocks are laid out in one zeroed buffer (so padding
    and opt_endofopt are zeros already); the headers and the id options of all frames are two
    structured arrays, each scattered to its blocks as rows of 32-bit words (every block starts
    4-aligned); the frames' bytes are copied in one masked assignment, from one slice of `data`
    when the frames lie end to end there (as a frame segment hands them over), else gathered
    with one `np.take`. Raises ValueError if a frame lies outside `data`."""
    n = len(ids)
    cap = cap_lens.astype(np.int64)
    pad = -cap % 4
    length = EPB_OVERHEAD + cap + pad
    ends = np.cumsum(length)
    offsets = ends - length
    if n == 0:
        return b"", offsets
    ts = ts_ns.astype(np.int64).view(np.uint64)
    heads = np.zeros(n, dtype=EPB_HEAD)
    heads["type"] = EPB_TYPE
    heads["length"] = length
    heads["ts_high"] = ts >> np.uint64(32)
    heads["ts_low"] = ts & np.uint64(0xFFFF_FFFF)
    heads["cap_len"] = cap
    heads["wire_len"] = np.maximum(wire_lens.astype(np.int64), cap)
    tails = np.zeros(n, dtype=EPB_TAIL)
    tails["code"] = OPT_PACKETID
    tails["size"] = 8
    tails["id"] = ids
    tails["length"] = length
    out = np.zeros(int(ends[-1]), dtype=np.uint8)
    words = out.view("<u4")
    head_at = (offsets >> 2)[:, None] + _HEAD_WORDS
    tail_at = ((ends - EPB_TAIL.itemsize) >> 2)[:, None] + _TAIL_WORDS
    words[head_at] = heads.view("<u4").reshape(n, -1)
    words[tail_at] = tails.view("<u4").reshape(n, -1)
    runs = np.empty((n, 3), dtype=np.int64)  # the lengths of `_FRAME_RUN`'s parts
    runs[:, 0] = EPB_HEAD.itemsize
    runs[:, 1] = cap
    runs[:, 2] = pad + EPB_TAIL.itemsize
    out[np.repeat(np.tile(_FRAME_RUN, n), runs.ravel())] = _frame_bytes(data, starts, cap)
    return out.tobytes(), offsets


def _frame_bytes(
    data: bytes, starts: npt.NDArray[np.uint64], cap: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint8]:
    """The frames' bytes end to end: one slice of `data` if they lie so there, else a gather."""
    source = np.frombuffer(data, dtype=np.uint8)
    first = starts.astype(np.int64)
    if first.min() < 0 or int((first + cap).max()) > len(source):
        raise ValueError(f"a frame lies outside the {len(source)} bytes of its batch")
    total = int(cap.sum())
    if np.array_equal(first[1:], first[:-1] + cap[:-1]):
        return source[first[0] : first[0] + total]
    within = np.arange(total) - np.repeat(np.cumsum(cap) - cap, cap)
    return np.take(source, np.repeat(first, cap) + within)


@dataclass(frozen=True, slots=True)
class Block:
    """One packet of a file: where its block starts, and what it says."""

    offset: int
    id: int
    ts_ns: int
    wire_len: int
    data: bytes


def find(buf: bytes | memoryview, wanted: list[int], base: int = 0) -> list[Block]:
    """The blocks of the sorted ids `wanted` among the whole blocks at the start of `buf`
    (which starts at a block boundary). Ids increase within a file and are usually
    consecutive: the walk jumps by block lengths alone to where each id should be, checks the
    id found there, and only where ids skip (a loss, another shard's ids) walks block by block."""
    found: list[Block] = []
    unpack = struct.unpack_from
    at, end, here = 0, len(buf), None  # `here`: the id of the block at `at`, when known
    for target in wanted:
        while at + EPB_OVERHEAD <= end:
            if here is None:
                here = _id_at(buf, at, end)
                if here is None:
                    return found
            if here >= target:
                break
            jumped = at
            for _ in range(target - here):  # jump: lengths only
                length = unpack("<I", buf, jumped + 4)[0]
                if length < 12 or jumped + length > end:
                    break
                jumped += length
                if jumped + EPB_OVERHEAD > end:
                    break
            else:
                here = _id_at(buf, jumped, end)
                if here is not None and here <= target:
                    at = jumped
                    continue
            # ids skip (or the jump ran past the end): walk block by block instead
            return found + _walk(buf, wanted[wanted.index(target) :], base, end)
        if here == target:
            length = unpack("<I", buf, at + 4)[0]
            found += scan(buf[at : at + length], base + at)[0]
    return found


def _walk(buf: bytes | memoryview, wanted: list[int], base: int, end: int) -> list[Block]:
    """`find` for ids that skip: every block from the start, reading each one's id."""
    found: list[Block] = []
    at, k = 0, 0
    while at + EPB_OVERHEAD <= end and k < len(wanted):
        packet_id = _id_at(buf, at, end)
        if packet_id is None:
            break
        while k < len(wanted) and wanted[k] < packet_id:
            k += 1
        length = struct.unpack_from("<I", buf, at + 4)[0]
        if k < len(wanted) and wanted[k] == packet_id:
            found += scan(buf[at : at + length], base + at)[0]
            k += 1
        at += length
    return found


def _id_at(buf: bytes | memoryview, at: int, end: int) -> int | None:
    """The packet id of the block at `at`; None if it is not a whole packet block."""
    kind, length, *_, cap, _ = _EPB_HEAD.unpack_from(buf, at)
    if kind != EPB_TYPE or length < EPB_OVERHEAD or at + length > end:
        return None
    opt_at = at + 28 + cap + (-cap % 4)
    if opt_at + 12 > at + length:
        return None
    code, _, packet_id = _EPB_ID.unpack_from(buf, opt_at)
    return int(packet_id) if code == OPT_PACKETID else None


def scan(buf: bytes | memoryview, base: int = 0) -> tuple[list[Block], int]:
    """The whole packet blocks at the start of `buf` (which begins at a block boundary, at
    file offset `base`), and the offset just past the last whole one: where a cut block, or
    the end of what `buf` holds, begins. Other block kinds are skipped; garbage ends the scan."""
    blocks: list[Block] = []
    at, end = 0, len(buf)
    unpack_head, unpack_id = _EPB_HEAD.unpack_from, _EPB_ID.unpack_from
    while at + 12 <= end:
        kind, length = struct.unpack_from("<II", buf, at)
        if length < 12 or length % 4 or at + length > end:
            break
        if struct.unpack_from("<I", buf, at + length - 4)[0] != length:
            break
        if kind == EPB_TYPE and length >= EPB_OVERHEAD:
            _, _, _, high, low, cap, wire = unpack_head(buf, at)
            if 28 + cap + EPB_TAIL.itemsize > length:
                break
            opt_at = at + 28 + cap + (-cap % 4)
            code, size, packet_id = unpack_id(buf, opt_at)
            ts = (high << 32) | low
            if ts >= 1 << 63:
                ts -= 1 << 64
            blocks.append(
                Block(base + at, packet_id if code == OPT_PACKETID and size == 8 else 0, ts,
                      wire, bytes(buf[at + 28 : at + 28 + cap]))
            )  # fmt: skip
        elif kind not in (SHB_TYPE, IDB_TYPE, EPB_TYPE):
            break
        at += length
    return blocks, base + at
