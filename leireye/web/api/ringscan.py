"""Walking the ring for the REST API: the newest matching packets, or a range to export.

The ring is read in chunks (`copy_range`), never all at once; rows the capture overwrites while
we read are dropped by `copy_range` itself, so a scan only ever returns whole, valid records.

A scan that matches little walks the whole ring (262 144 records: ~0.1 s), so it never runs on
the event loop, where it would hold every WebSocket frame of the worker back: `run` hands it to
the worker's one scan thread (queries queue behind each other rather than multiply), and every
chunk ends with `time.sleep(0)`, which gives the GIL back so the loop waits at most about one
chunk (~1.5 ms) instead of the interpreter's 5 ms switch interval.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import numpy as np

from leireye.record import RECORD_DTYPE
from leireye.ring.ring import RingRead
from leireye.web.filters import PacketFilter

CHUNK = 4096
_T = TypeVar("_T")
_SCANS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leireye-ringscan")


async def run(fn: Callable[..., _T], *args: object) -> _T:
    """`fn(*args)` in the worker's scan thread (one at a time), awaited from the loop."""
    return await asyncio.get_running_loop().run_in_executor(_SCANS, functools.partial(fn, *args))


def _breathe() -> None:
    time.sleep(0)  # give the GIL back to the event loop between chunks


class RingView(Protocol):
    @property
    def oldest_id(self) -> int: ...

    @property
    def write_seq(self) -> int: ...

    def copy_range(self, first: int, last: int, with_raw: bool = False) -> RingRead: ...


def bounds(ring: RingView, after: int | None, before: int | None) -> tuple[int, int]:
    """The inclusive id range still held that lies strictly between `after` and `before`."""
    first = max(ring.oldest_id, 1, (after or 0) + 1)
    last = ring.write_seq if before is None else min(ring.write_seq, before - 1)
    return first, last


def newest(
    ring: RingView,
    flt: PacketFilter,
    limit: int,
    after: int | None = None,
    before: int | None = None,
) -> np.ndarray:
    """Up to `limit` matching records, newest first."""
    first, last = bounds(ring, after, before)
    found: list[np.ndarray] = []
    count = 0
    while last >= first and count < limit:
        start = max(first, last - CHUNK + 1)
        records = ring.copy_range(start, last).records
        picked = records[flt.mask(records)][::-1][: limit - count]
        found.append(picked)
        count += len(picked)
        last = start - 1
        _breathe()
    return np.concatenate(found) if found else np.empty(0, dtype=RECORD_DTYPE)


def start_for_newest(ring: RingView, flt: PacketFilter, limit: int, first: int, last: int) -> int:
    """The id from which a forward scan of `first..last` yields the newest `limit` matches."""
    count = 0
    while last >= first:
        start = max(first, last - CHUNK + 1)
        records = ring.copy_range(start, last).records
        ids = records["seq"][flt.mask(records)]
        if count + len(ids) >= limit:
            return int(ids[len(ids) - (limit - count)])
        count += len(ids)
        last = start - 1
        _breathe()
    return first


def forward(
    ring: RingView,
    flt: PacketFilter,
    first: int,
    last: int,
    limit: int,
    linktype: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(records, raw) chunks of matching packets in id order, at most `limit` in all; with
    `linktype`, only records of that link type (a pcap file has one)."""
    sent = 0
    cursor = first
    while sent < limit:
        cursor = max(cursor, ring.oldest_id)  # the capture may have overwritten what was next
        if cursor > last:
            break
        end = min(last, cursor + CHUNK - 1)
        batch = ring.copy_range(cursor, end, with_raw=True)
        cursor = end + 1
        records, raw = batch.records, batch.raw
        assert raw is not None
        mask = flt.mask(records)
        if linktype is not None:
            mask &= records["linktype"] == linktype
        rows = np.flatnonzero(mask)[: limit - sent]
        _breathe()
        if rows.size:
            yield records[rows], raw[rows]
            sent += int(rows.size)
