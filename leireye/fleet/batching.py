"""Ring reads into packet batches, and the batches between publish and acknowledgement.

Pure bookkeeping, no NATS in it (the publisher process is the shell around it):

- `Accumulator` gathers the records of ring reads until a batch is due (`batch_records`
  records, or the oldest is `batch_ms` old) and cuts them into batches. A batch covers the ids
  after the previous batch's last id up to its own last id; the ids of that range it does not
  hold (the ring overwrote them before they were read) are its `lost`, so over a run
  `sum(count) + sum(lost)` is exactly the last id sent.
- A batch also fits `max_bytes` (the server's max_payload less room for the headers): when the
  records due do not fit once encoded, the batch is cut shorter and the rest stays held for the
  next one, each with its own `Nats-Msg-Id` (from its own first id). The first cut is guessed
  from the bytes per record of the last batch, so compressible traffic fills a message and an
  incompressible burst costs one encode more, not one per record.
- `recut` cuts a batch already encoded into pieces that fit a smaller cap (a failover reached a
  server with a smaller max_payload while it was in flight).
- `Pending` is one batch published and not yet acknowledged; the publisher keeps them in order
  and publishes them again, same `Nats-Msg-Id`, when their fate is unknown.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leireye.fleet.model import FleetError, decode_batch, encode_batch
from leireye.record import RECORD_DTYPE
from leireye.ring.ring import RingRead


@dataclass
class Pending:
    body: bytes
    headers: dict[str, str]
    first_id: int
    last_id: int
    count: int
    lost: int
    sent_at: float = 0.0
    future: asyncio.Future[Any] | None = None
    sends: int = 0


@dataclass
class Accumulator:
    sensor: str
    run: int
    batch_records: int
    prev_last: int  # the last id covered by the previous batch
    max_bytes: int | None = None  # the most an encoded body may weigh (None: no limit)
    records: list[np.ndarray] = field(default_factory=list)
    raws: list[np.ndarray] = field(default_factory=list)
    count: int = 0
    since: float = 0.0  # when the oldest held record was read (monotonic s)
    per_record: float = 0.0  # encoded bytes per record of the last batch (0: none yet)
    cuts: int = 0  # batches encoded again, shorter, to fit max_bytes

    def add(self, read: RingRead, now: float) -> None:
        if not len(read.records):
            return
        if not self.count:
            self.since = now
        self.records.append(read.records)
        if read.raw is not None:
            self.raws.append(read.raw)
        self.count += len(read.records)

    def due(self, now: float, batch_s: float) -> bool:
        return self.count >= self.batch_records or (self.count > 0 and now - self.since >= batch_s)

    def take(self, limit: int) -> Pending | None:
        """The next batch of at most `limit` records (None: nothing held)."""
        if not self.count:
            return None
        records = np.concatenate(self.records) if len(self.records) > 1 else self.records[0]
        raw = None
        if self.raws:
            raw = np.concatenate(self.raws) if len(self.raws) > 1 else self.raws[0]
        n = self._first_guess(min(limit, len(records)), raw)
        while True:
            head = records[:n]
            part = None if raw is None else raw[:n]
            lost = int(head["seq"][-1]) - self.prev_last - n
            body, headers = encode_batch(self.sensor, head, part, lost, run=self.run)
            if self.max_bytes is None or len(body) <= self.max_bytes:
                break
            if n == 1:
                raise FleetError(
                    f"one record encodes to {len(body)} bytes, above the {self.max_bytes} a "
                    "message may carry: raise the server's max_payload or lower ring.raw_bytes"
                )
            n = max(1, min(n - 1, n * self.max_bytes * 9 // (10 * len(body))))
            self.cuts += 1
        self.per_record = len(body) / n
        tail = records[n:]
        self.records = [tail] if len(tail) else []
        if raw is not None:
            self.raws = [raw[n:]] if len(tail) else []
        self.count = len(tail)
        first, last = int(head["seq"][0]), int(head["seq"][-1])
        self.prev_last = last
        return Pending(body, headers, first, last, n, lost)

    def _first_guess(self, n: int, raw: np.ndarray | None) -> int:
        """How many of `n` records to encode first: all when they fit unencoded or nothing is
        known yet, else as many as the last batch's bytes per record say fit, with a margin."""
        if self.max_bytes is None or not self.per_record:
            return n
        row = RECORD_DTYPE.itemsize + (0 if raw is None else int(raw.shape[1]))
        if n * row <= self.max_bytes:
            return n
        fits_raw = self.max_bytes // row  # fits whatever the compression does
        return min(n, max(1, fits_raw, int(0.9 * self.max_bytes / self.per_record)))


def recut(sensor: str, run: int, batch: Pending, max_bytes: int) -> list[Pending]:
    """`batch` as it is when it fits `max_bytes`, else its records in pieces that do, in order:
    the first keeps its first id (so its Nats-Msg-Id) and its `lost`, the others start after."""
    if len(batch.body) <= max_bytes:
        return [batch]
    decoded = decode_batch(sensor, batch.headers, batch.body)
    acc = Accumulator(sensor, run, batch.count, batch.last_id - batch.count - batch.lost, max_bytes)
    acc.add(RingRead(decoded.records, batch.first_id, batch.lost, decoded.raw), 0.0)
    pieces = []
    while (piece := acc.take(batch.count)) is not None:
        pieces.append(piece)
    return pieces
