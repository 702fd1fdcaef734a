"""The batch pcapng block builder against the per-frame one it replaced: the same bytes for the
same frames (every length class, cut frames, odd times and ids, frames end to end as a frame
segment hands them over or scattered), and what tshark makes of a file of them."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from leireye.ring.frames import FrameAppender, FrameReader, FrameSegment, segment_size
from leireye.store import pcapng
from tests.pcapng_reference import reference_packet_blocks

T0 = 1_700_000_000_123_456_789
SNAPLEN = 1600
# 0..9 (every padding), the 4-byte edges, a full 1600 and a 9000-byte frame cut to 1600.
LENGTHS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 60, 61, 62, 63, 64, 1599, 1600, 1600, 1600, 1, 0, 3]
WIRE_EXTRA = {17: 9000 - 1600, 18: 2000 - 1600}  # snaplen-cut: longer on the wire


def frames_of(lengths: list[int], seed: int = 5) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(n) for n in lengths]


def said_wire(wire: list[int], frames: list[bytes]) -> list[int]:
    """The original lengths a file says: never below the captured one."""
    return [max(w, len(f)) for w, f in zip(wire, frames, strict=True)]


Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # ids .. starts


def columns(
    frames: list[bytes], wire: list[int], ts: list[int], ids: list[int], starts: list[int]
) -> Columns:
    """`packet_blocks`' arrays but `data`: ids, ts_ns, wire_lens, cap_lens, starts."""
    return (
        np.array(ids, dtype=np.uint64),
        np.array(ts, dtype=np.int64),
        np.array(wire, dtype=np.uint32),
        np.array([len(f) for f in frames], dtype=np.uint32),
        np.array(starts, dtype=np.uint64),
    )


def both(cols: Columns, data: bytes) -> tuple[bytes, np.ndarray]:
    """The new builder's blocks, checked equal to the per-frame builder's."""
    ids, ts, wire, cap, starts = cols
    new, new_offsets = pcapng.packet_blocks(ids, ts, wire, cap, data, starts)
    old, old_offsets = reference_packet_blocks(ids, ts, wire, cap, data, starts)
    assert new == old
    assert new_offsets.tolist() == old_offsets.tolist()
    assert new_offsets.dtype == old_offsets.dtype == np.int64
    return new, new_offsets


def test_a_segment_batch_of_every_length_class_is_byte_identical() -> None:
    frames = frames_of(LENGTHS)
    wire = [len(f) + WIRE_EXTRA.get(i, 0) for i, f in enumerate(frames)]
    wire[3] = 0  # a wire length below the captured one: the file says the captured one
    ts = [T0 + i * 977 for i in range(len(frames))]
    ts[5] = -1  # before 1970 and a high word of all ones
    ts[6] = (1 << 32) - 1  # low word full, high word 0
    size = 1 << 20
    segment = FrameSegment.over(bytearray(segment_size(size)), size)
    appender = FrameAppender(segment, 1, SNAPLEN)
    reader = FrameReader(segment, 1)
    first_id = (1 << 40) + 7  # ids past 32 bits: both words of epb_packetid
    appender.append(first_id, ts, wire, frames)
    batch = reader.read()
    e = batch.entries
    blob, offsets = pcapng.packet_blocks(
        e["id"], e["ts_ns"], e["wire_len"], e["cap_len"], batch.data, e["offset"]
    )
    old, old_offsets = reference_packet_blocks(
        e["id"], e["ts_ns"], e["wire_len"], e["cap_len"], batch.data, e["offset"]
    )
    assert blob == old and offsets.tolist() == old_offsets.tolist()
    blocks, end = pcapng.scan(blob)
    assert end == len(blob) and [b.offset for b in blocks] == offsets.tolist()
    assert [b.data for b in blocks] == frames
    assert [b.id for b in blocks] == list(range(first_id, first_id + len(frames)))
    assert [b.ts_ns for b in blocks] == ts
    assert [b.wire_len for b in blocks] == said_wire(wire, frames)


@pytest.mark.parametrize("seed", range(20))
def test_random_batches_end_to_end_or_scattered_are_byte_identical(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 300)
    lengths = [rng.choice([0, 1, 2, 3, 4, rng.randint(5, 200), 1600]) for _ in range(n)]
    frames = frames_of(lengths, seed)
    wire = [len(f) + rng.choice([0, 0, 4, 7400]) for f in frames]
    ts = sorted(rng.randint(-(1 << 62), 1 << 62) for _ in range(n))
    ids = [rng.randint(0, (1 << 64) - 1) for _ in range(n)]
    lead = rng.randbytes(rng.randint(0, 9))  # the batch's first frame need not start at 0
    data = lead + b"".join(frames)
    starts = np.cumsum([len(lead), *lengths[:-1]]).tolist()
    both(columns(frames, wire, ts, ids, starts), data)  # end to end: one slice
    order = list(range(n))
    rng.shuffle(order)  # scattered (and some twice): one gather
    picked = [order[k % n] for k in range(n + rng.randint(0, 5))]
    both(
        columns(
            [frames[k] for k in picked], [wire[k] for k in picked], [ts[k] for k in picked],
            [ids[k] for k in picked], [starts[k] for k in picked],
        ),
        data,
    )  # fmt: skip


def test_an_empty_batch_gives_no_bytes() -> None:
    blob, offsets = both(columns([], [], [], [], []), b"")
    assert blob == b"" and offsets.tolist() == []


@pytest.mark.parametrize("start", [-1, 5, 1 << 63])
def test_a_frame_outside_its_data_is_refused(start: int) -> None:
    frames = frames_of([4, 4])
    cols = columns(frames, [4, 4], [T0, T0], [1, 2], [0, start % (1 << 64)])
    with pytest.raises(ValueError, match="outside the 8 bytes"):
        pcapng.packet_blocks(*cols[:4], b"".join(frames)[:8], cols[4])


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_tshark_reads_every_length_class_with_its_id(tmp_path: Path) -> None:
    frames = frames_of(LENGTHS)
    wire = [len(f) + WIRE_EXTRA.get(i, 0) for i, f in enumerate(frames)]
    ids = list(range(1001, 1001 + len(frames)))
    ts = [T0 + i * 1000 for i in range(len(frames))]
    starts = np.cumsum([0, *LENGTHS[:-1]]).tolist()
    blob, _ = both(columns(frames, wire, ts, ids, starts), b"".join(frames))
    path = tmp_path / "mix.pcapng"
    path.write_bytes(pcapng.file_header(1, SNAPLEN) + blob)
    fields = ["frame.len", "frame.cap_len", "frame.time_epoch", "frame.packet_id"]
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=,",
         *(a for f in fields for a in ("-e", f))],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.splitlines()  # fmt: skip
    rows = [line.split(",") for line in out]
    assert [int(r[0]) for r in rows] == said_wire(wire, frames)
    assert [int(r[1]) for r in rows] == LENGTHS
    assert [r[2].replace(".", "")[-9:] for r in rows] == [f"{t % 10**9:09d}" for t in ts]
    assert [int(r[3]) for r in rows] == ids
