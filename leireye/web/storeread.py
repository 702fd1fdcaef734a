"""Packets read back from the packet store for the REST API: one whole frame for the detail,
and a time range, decoded and filtered, for exports and the history list.

The store keeps frames, not records. Filtering and the CSV/JSON/list rows need records, so the
frames of a range are decoded again with the capture's own decoder (`decode_batch`), `BATCH`
frames at a time, their `seq` set to their stored ids: the same records the capture made
(the decoder is deterministic), whether or not the ring still holds them. Nothing holds more
than one batch: a range of any length streams.

Store linktypes are LINKTYPE_* values (what the pcapng file says); the decoder and the detail
dissector read them as they read DLT_* values (the two differ only for ATM and raw IP, and raw
IP is understood under both numbers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np

from leireye.decode.decode import decode_batch
from leireye.store.reader import PacketStore, StoredFrame
from leireye.web.filters import PacketFilter

BATCH: Final = 1024


@dataclass(frozen=True)
class StoredBatch:
    """Matching packets of a range, in time order: records (RECORD_DTYPE, `seq` = id) and the
    whole frames, row for row, all of `linktype`."""

    linktype: int
    records: np.ndarray
    frames: list[bytes]


def records_of(frames: list[StoredFrame], linktype: int) -> np.ndarray:
    """The records the capture made for `frames` (all of `linktype`), `seq` their ids."""
    decoded = decode_batch(
        [f.data for f in frames], [f.ts_ns for f in frames], [f.wire_len for f in frames], linktype
    ).records
    decoded["seq"] = [f.id for f in frames]
    return decoded


def whole_frame(store: PacketStore, packet_id: int, ts_ns: int | None = None) -> StoredFrame | None:
    """The stored frame of `packet_id`; with `ts_ns` (the ring record's time), only when it
    is the same packet (ids start over with every run)."""
    found = store.frame(packet_id)
    if found is None or (ts_ns is not None and found.ts_ns != ts_ns):
        return None
    return found


def between(
    store: PacketStore,
    from_ns: int,
    to_ns: int,
    flt: PacketFilter,
    *,
    before: int | None = None,
    after: int | None = None,
    past: tuple[int, int] | None = None,
) -> Iterator[StoredBatch]:
    """The packets of `[from_ns, to_ns]` matching `flt`, in time order, one decoded batch at a
    time (batches change where the link type does); `before`/`after`: exclusive id bounds;
    `past`: only the packets after this `(time, id)` in that order (a page's cursor)."""
    pending: list[StoredFrame] = []
    if past is not None:
        from_ns = max(from_ns, past[0])
    for frame in store.between(from_ns, to_ns):
        if (before is not None and frame.id >= before) or (after is not None and frame.id <= after):
            continue
        if past is not None and (frame.ts_ns, frame.id) <= past:
            continue
        if pending and (len(pending) >= BATCH or frame.linktype != pending[0].linktype):
            yield _matching(pending, flt)
            pending = []
        pending.append(frame)
    if pending:
        yield _matching(pending, flt)


def _matching(frames: list[StoredFrame], flt: PacketFilter) -> StoredBatch:
    linktype = frames[0].linktype
    records = records_of(frames, linktype)
    keep = np.flatnonzero(flt.mask(records))
    return StoredBatch(linktype, records[keep], [frames[i].data for i in keep.tolist()])
