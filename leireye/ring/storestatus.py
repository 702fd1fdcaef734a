"""The store writer's status: page 1 of each frame segment (`leireye/ring/frames.py`).

The store writer alone writes it (under a seqlock: odd while writing), after each flush; the
web workers read it for `/metrics` (`leireye/web/storeview.py`); it outlives a restart of the
writer, which carries its counters on. Layout of the page: seq (u8), body length (u4), then the
msgpack of `StoreStatus` from byte 16.
"""

from __future__ import annotations

import enum
import struct
import time
from typing import Final

import msgspec

from leireye.errors import RingError
from leireye.ring.frames import FrameSegment
from leireye.ring.shm import PAGE


class StoreState(enum.StrEnum):
    """Stored by its value (msgpack)."""

    OFF = "off"  # no writer has run (or the store is disabled)
    STARTING = "starting"
    WRITING = "writing"
    FAILED = "failed"  # the disk filled or failed: see last_error; the capture goes on
    STOPPED = "stopped"


class StoreStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The store writer's view of one shard, in page 1 of its frame segment."""

    state: StoreState = StoreState.OFF
    pid: int = 0
    updated_ns: int = 0
    frames_written: int = 0  # to disk, by this shard, since the segment exists
    bytes_written: int = 0  # file bytes
    frames_lost: int = 0  # to the store only: the writer fell behind, restarted, or failed
    lag_frames: int = 0  # published by the capture, not yet read by the writer
    files: int = 0  # files in the store (all shards)
    disk_bytes: int = 0  # their total size
    oldest_ns: int = 0  # the oldest packet the store holds
    newest_ns: int = 0
    producer_dropped: int = 0  # the segment's `dropped` already counted in frames_lost
    last_error: str = ""


_STATUS_SEQ: Final = struct.Struct("<Q")
_STATUS_LEN: Final = struct.Struct("<I")
_STATUS_BODY_AT: Final = 16


def write_status(segment: FrameSegment, status: StoreStatus) -> None:
    """Seqlock: odd while writing, even after; readers retry on a change."""
    view = segment.status_view
    body = msgspec.msgpack.encode(msgspec.structs.replace(status, updated_ns=time.time_ns()))
    if len(body) > PAGE - _STATUS_BODY_AT:
        body = msgspec.msgpack.encode(msgspec.structs.replace(status, last_error="(too long)"))
    (seq,) = _STATUS_SEQ.unpack_from(view, 0)
    _STATUS_SEQ.pack_into(view, 0, seq | 1)
    _STATUS_LEN.pack_into(view, 8, len(body))
    view[_STATUS_BODY_AT : _STATUS_BODY_AT + len(body)] = body
    _STATUS_SEQ.pack_into(view, 0, (seq | 1) + 1)


def read_status(segment: FrameSegment) -> StoreStatus:
    view = segment.status_view
    for _ in range(1000):
        (before,) = _STATUS_SEQ.unpack_from(view, 0)
        if before & 1:
            continue
        (size,) = _STATUS_LEN.unpack_from(view, 8)
        body = bytes(view[_STATUS_BODY_AT : _STATUS_BODY_AT + min(size, PAGE - _STATUS_BODY_AT)])
        (after,) = _STATUS_SEQ.unpack_from(view, 0)
        if before == after:
            if size == 0:
                return StoreStatus()
            try:
                return msgspec.msgpack.decode(body, type=StoreStatus)
            except msgspec.DecodeError as exc:
                raise RingError(f"{segment.name}: unreadable store status") from exc
    raise RingError(f"{segment.name}: the store status kept changing")
