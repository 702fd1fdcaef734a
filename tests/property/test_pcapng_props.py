"""The store's pcapng blocks: for any frames (any lengths, times, ids and places in the batch's
bytes), the batch builder writes exactly what the per-frame builder wrote, and `scan` reads
every frame back with its id."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.store import pcapng
from tests.pcapng_reference import reference_packet_blocks

frames_st = st.lists(
    st.tuples(
        st.binary(max_size=70) | st.sampled_from([b"", b"\x01", bytes(1600)]),
        st.integers(0, 2**32 - 1),  # wire length (any: below, equal to or above the frame's)
        st.integers(-(2**63), 2**63 - 1),  # ts_ns
        st.integers(0, 2**64 - 1),  # id
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(frames=frames_st, lead=st.binary(max_size=7), scattered=st.booleans(), seed=st.integers())
def test_batch_blocks_equal_the_per_frame_ones(
    frames: list[tuple[bytes, int, int, int]], lead: bytes, scattered: bool, seed: int
) -> None:
    data = lead + b"".join(f for f, *_ in frames)
    starts = np.cumsum([len(lead)] + [len(f) for f, *_ in frames])[:-1]
    order = np.arange(len(frames))
    if scattered:
        np.random.default_rng(seed % 2**32).shuffle(order)
    cols = (
        np.array([frames[k][3] for k in order], dtype=np.uint64),
        np.array([frames[k][2] for k in order], dtype=np.int64),
        np.array([frames[k][1] for k in order], dtype=np.uint32),
        np.array([len(frames[k][0]) for k in order], dtype=np.uint32),
        starts[order].astype(np.uint64),
    )
    blob, offsets = pcapng.packet_blocks(*cols[:4], data, cols[4])
    old, old_offsets = reference_packet_blocks(*cols[:4], data, cols[4])
    assert blob == old
    assert offsets.tolist() == old_offsets.tolist()
    blocks, end = pcapng.scan(blob)
    assert end == len(blob)
    assert [b.data for b in blocks] == [frames[k][0] for k in order]
    assert [b.id for b in blocks] == [frames[k][3] for k in order]
    assert [b.ts_ns for b in blocks] == [frames[k][2] for k in order]
