"""For any interleaving of writes and reads: records seen + records lost == records written."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.record import RECORD_DTYPE
from leireye.ring import Ring, RingLayout, RingReader, RingWriter

ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(min_value=0, max_value=70)),
        st.tuples(st.just("read"), st.integers(min_value=1, max_value=70)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(min_value=1, max_value=40), operations=ops)
def test_seen_plus_lost_equals_written(capacity: int, operations: list[tuple[str, int]]) -> None:
    layout = RingLayout(capacity=capacity, raw_bytes=4)
    ring = Ring.over(bytearray(layout.size), layout)
    writer = RingWriter(ring)
    reader = RingReader(ring, "oldest")
    written = 0
    seen: list[int] = []
    for op, n in operations:
        if op == "write":
            recs = np.zeros(n, dtype=RECORD_DTYPE)
            recs["wire_len"] = np.arange(written + 1, written + n + 1)
            writer.write(recs, [bytes([k % 256]) * 3 for k in range(n)])
            written += n
        else:
            batch = reader.read(max_records=n)
            ids = batch.records["seq"].tolist()
            assert ids == list(range(batch.first_id, batch.first_id + len(ids)))
            assert batch.records["wire_len"].tolist() == ids  # content belongs to its id
            seen += ids
    while reader.backlog:
        seen += reader.read().records["seq"].tolist()
    assert len(seen) + reader.lost_total == written
    assert seen == sorted(set(seen))
    assert not seen or seen[-1] == written
