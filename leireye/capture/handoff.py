"""The capture's side of the packet store: each batch's whole frames into the shard's frame
segment (`leireye/ring/frames.py`), after the ring write that gave them their ids.

A memory copy, never a wait: when the store writer lags, it is the store that loses frames
(and counts them), never the capture or the ring. Without a segment (the store disabled, or a
capture run by a test without one) this does nothing.
"""

from __future__ import annotations

import logging

from leireye.capture.pcapfile import file_linktype
from leireye.capture.source import CapturedFrames
from leireye.config import Config
from leireye.errors import RingError
from leireye.ring.frames import FrameAppender, FrameSegment, frames_name

log = logging.getLogger("leireye.capture")


class FrameHandoff:
    def __init__(self, segment: FrameSegment | None) -> None:
        self.segment = segment
        self.appender: FrameAppender | None = None

    @classmethod
    def open(cls, config: Config, ring_name: str, shard: int) -> FrameHandoff:
        """Attach the shard's frame segment (before dropping privileges)."""
        if not config.store.enabled:
            return cls(None)
        try:
            return cls(FrameSegment.attach(frames_name(ring_name, shard), writable=True))
        except RingError as exc:
            log.warning("whole frames will not reach the packet store: %s", exc)
            return cls(None)

    def start(self, linktype: int, snaplen: int) -> None:
        """The source is open: `linktype` as libpcap reports it (a DLT_*)."""
        if self.segment is not None:
            self.appender = FrameAppender(self.segment, file_linktype(linktype), snaplen)

    def append(self, first_id: int, batch: CapturedFrames) -> None:
        if self.appender is not None:
            self.appender.append(first_id, batch.ts_ns, batch.wire_lens, batch.frames)

    def close(self) -> None:
        self.appender = None
        if self.segment is not None:
            self.segment.close()
            self.segment = None
