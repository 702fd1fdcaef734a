"""Exact heavy hitters over a window of whole seconds, kept as sorted key tables.

A key is a pair of unsigned 64-bit numbers: an address as its `(hi, lo)` halves, or a port as
`(0, proto << 16 | port)` (a constant first half lets the sort use one key). `KeyTable` holds
unique keys with their packet and byte sums; `reduce_keys` builds one from raw columns with a
sort and `np.add.reduceat`, so no per-packet Python runs.

`TopWindow` collects the raw columns of the open second, reduces them to one table when the
second closes, and keeps the tables of the last `window_s` closed seconds. The top-N is computed
on demand from their union and cached until the next second closes: it changes once a second,
which is also how often a human reads it.

Memory and time are bounded by `max_keys`: a second with more distinct keys than that (a scan, a
flood with spoofed sources) keeps only its `max_keys` heaviest ones, and the window says so
(`complete` is False). Counts are then lower bounds, and a key that is light in every second but
heavy over the window can be missed; the heavy hitters of a flood still show.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

MAX_KEYS_PER_SECOND: Final = 4096
WELL_KNOWN_BELOW: Final = 1024
EPHEMERAL_FROM: Final = 32768  # Linux's default range starts here, Windows' and IANA's at 49152
_COMPACT_ROWS: Final = 1 << 17

U64 = np.ndarray[tuple[int], np.dtype[np.uint64]]


@dataclass(frozen=True)
class KeyTable:
    """Unique `(k1, k2)` keys, sorted, with packet and byte sums (all uint64 columns)."""

    k1: U64
    k2: U64
    packets: U64
    bytes: U64

    def __len__(self) -> int:
        return len(self.k1)

    @classmethod
    def empty(cls) -> KeyTable:
        z = np.zeros(0, np.uint64)
        return cls(z, z, z, z)

    @classmethod
    def concat(cls, tables: list[KeyTable]) -> KeyTable:
        if not tables:
            return cls.empty()
        return cls(
            np.concatenate([t.k1 for t in tables]),
            np.concatenate([t.k2 for t in tables]),
            np.concatenate([t.packets for t in tables]),
            np.concatenate([t.bytes for t in tables]),
        )

    def heaviest(self, n: int) -> KeyTable:
        """The `n` heaviest keys by packets, then bytes, then key (a total order, so the result
        does not depend on the input order)."""
        if len(self) > n:
            # Keep every key at least as heavy as the n-th by packets, then order those exactly.
            cut = np.partition(self.packets, len(self) - n)[len(self) - n]
            keep = np.flatnonzero(self.packets >= cut)
            table = self._take(keep)
        else:
            table = self
        order = np.lexsort((table.k2, table.k1, ~table.bytes, ~table.packets))[:n]
        return table._take(order)

    def _take(self, index: np.ndarray) -> KeyTable:
        return KeyTable(self.k1[index], self.k2[index], self.packets[index], self.bytes[index])


def reduce_keys(table: KeyTable) -> KeyTable:
    """Merge equal keys, summing their packets and bytes."""
    if len(table) == 0:
        return table
    if table.k1[0] == table.k1.min() == table.k1.max():  # one k1 (IPv4 only): a cheaper sort
        order = np.argsort(table.k2)
    else:
        order = np.lexsort((table.k2, table.k1))
    k1 = table.k1[order]
    k2 = table.k2[order]
    starts = np.empty(len(k1), dtype=bool)
    starts[0] = True
    np.not_equal(k1[1:], k1[:-1], out=starts[1:])
    starts[1:] |= k2[1:] != k2[:-1]
    first = np.flatnonzero(starts)
    return KeyTable(
        k1[first],
        k2[first],
        np.add.reduceat(table.packets[order], first),
        np.add.reduceat(table.bytes[order], first),
    )


class TopWindow:
    """The `top_n` heaviest keys over the last `window_s` closed seconds."""

    def __init__(self, window_s: int, top_n: int, max_keys: int = MAX_KEYS_PER_SECOND) -> None:
        self.window_s = window_s
        self.top_n = top_n
        self.max_keys = max(max_keys, top_n)
        self._pending: list[KeyTable] = []
        self._pending_rows = 0
        self._closed: deque[tuple[int, KeyTable, bool]] = deque()  # (second, table, complete)
        self._top: tuple[KeyTable, bool] | None = None

    def add(self, k1: np.ndarray, k2: np.ndarray, nbytes: np.ndarray) -> None:
        """Count one packet per row of the open second."""
        if len(k1) == 0:
            return
        ones = np.ones(len(k1), np.uint64)
        self._pending.append(
            KeyTable(k1.astype(np.uint64), k2.astype(np.uint64), ones, nbytes.astype(np.uint64))
        )
        self._pending_rows += len(k1)
        if self._pending_rows >= _COMPACT_ROWS:
            self._pending = [reduce_keys(KeyTable.concat(self._pending))]
            self._pending_rows = len(self._pending[0])

    def close_second(self, second: int) -> None:
        """Close `second` (the open one) with what was added since the last close."""
        table = reduce_keys(KeyTable.concat(self._pending))
        self._pending = []
        self._pending_rows = 0
        complete = len(table) <= self.max_keys
        if not complete:
            table = table.heaviest(self.max_keys)
        if len(table):
            self._closed.append((second, table, complete))
        self._expire(second + 1)
        self._top = None

    def skip_to(self, open_second: int) -> None:
        """Forget seconds that fell out of the window when `open_second` is the open one."""
        if self._expire(open_second):
            self._top = None

    def top(self, open_second: int) -> tuple[KeyTable, bool]:
        """`(table, complete)`: the heaviest keys of the closed seconds within the window before
        `open_second`, and whether no second in it was cut."""
        self.skip_to(open_second)
        if self._top is None:
            merged = reduce_keys(KeyTable.concat([t for _, t, _ in self._closed]))
            complete = all(c for _, _, c in self._closed)
            self._top = (merged.heaviest(self.top_n), complete)
        return self._top

    def _expire(self, open_second: int) -> bool:
        oldest = open_second - self.window_s
        dropped = False
        while self._closed and self._closed[0][0] < oldest:
            self._closed.popleft()
            dropped = True
        return dropped


def service_ports(sport: npt.NDArray[np.uint16], dport: npt.NDArray[np.uint16]) -> U64:
    """The port each packet is counted under in the top ports: its service's side, so that a
    download from :443 counts for 443 whichever way its packets go, not for the client's
    ephemeral port. The lower port when it is well-known (below 1024); else the lower port
    when the higher one is ephemeral (from 32768: 8080, 3389, 5060 against a client's port);
    else the destination port (two ephemeral ports, or two registered ones: no side is
    known to be the service)."""
    low = np.minimum(sport, dport).astype(np.uint64)
    high = np.maximum(sport, dport).astype(np.uint64)
    service = (low < WELL_KNOWN_BELOW) | ((high >= EPHEMERAL_FROM) & (low < EPHEMERAL_FROM))
    return np.where(service, low, dport.astype(np.uint64))
