"""Follow Stream's frames from the live ring (`RingFrames`, a `leireye.store.source.FrameSource`).

The ring is read in chunks, oldest to newest, and only the rows of the conversation (either
direction, matched on the record's addresses and ports) in the time range are kept. The ring
holds the first `raw_bytes` of each frame: longer frames come out cut (`Frames.cut_at`), and
`follow` turns what is missing into gaps.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from leireye.record import F_HAS_ADDR, F_HAS_PORTS
from leireye.store.follow import Conversation, Endpoint
from leireye.store.source import Frame, Frames
from leireye.web.api.ringscan import CHUNK, RingView
from leireye.web.filters import Mask, Network

_IP_PROTO = {"TCP": 6, "UDP": 17}


class RingFrames:
    def __init__(self, ring: RingView, raw_bytes: int) -> None:
        self.ring = ring
        self.raw_bytes = raw_bytes

    def conversation(
        self, conversation: Conversation, from_ns: int | None, to_ns: int | None
    ) -> Frames:
        frames = self._frames(conversation, from_ns, to_ns)
        return Frames(frames, "ring", cut_at=self.raw_bytes)

    def _frames(
        self, conversation: Conversation, from_ns: int | None, to_ns: int | None
    ) -> Iterator[Frame]:
        ring = self.ring
        cursor, last = max(ring.oldest_id, 1), ring.write_seq
        while cursor <= last:
            cursor = max(cursor, ring.oldest_id)  # the capture may have overwritten what was next
            end = min(last, cursor + CHUNK - 1)
            if cursor > end:
                break
            batch = ring.copy_range(cursor, end, with_raw=True)
            cursor = end + 1
            records, raw = batch.records, batch.raw
            assert raw is not None
            mask = _matches(records, conversation)
            if from_ns is not None:
                mask &= records["ts_ns"] >= from_ns
            if to_ns is not None:
                mask &= records["ts_ns"] <= to_ns
            for row in np.flatnonzero(mask).tolist():
                rec = records[row]
                keep = min(int(rec["cap_len"]), raw.shape[1])
                yield int(rec["ts_ns"]), int(rec["linktype"]), raw[row, :keep].tobytes()


def _matches(records: np.ndarray, conversation: Conversation) -> Mask:
    ip_proto = _IP_PROTO.get(conversation.transport.upper(), -1)
    m: Mask = (records["ip_proto"] == ip_proto) & ((records["flags"] & F_HAS_PORTS) != 0)
    m &= (records["flags"] & F_HAS_ADDR) != 0
    forward = _end(records, "src", conversation.a) & _end(records, "dst", conversation.b)
    backward = _end(records, "src", conversation.b) & _end(records, "dst", conversation.a)
    return m & (forward | backward)


def _end(records: np.ndarray, side: str, end: Endpoint) -> Mask:
    net = Network.parse(end[0])
    has = np.ones(len(records), dtype=bool)
    hi, lo = records[f"{side}_hi"], records[f"{side}_lo"]
    at = net.match(hi, lo, records["ip_version"], has)
    found: Mask = at & (records[f"{side}_port"] == end[1])
    return found
