"""Ring reads into packet batches, and the batches between publish and acknowledgement.

Pure bookkeeping, no NATS in it (the publisher process is the shell around it):

- `Accumulator` gathers the records of ring reads until a batch is due (`batch_records`
  records, or the oldest is `batch_ms` old) and cuts them into batches. A batch covers the ids
  after the previous batch's last id up to its own last id; the ids of that range it does not
  hold (the ring overwrote them before they were read) are its `lost`, so over a run
  `sum(count) + sum(lost)` is exactly the last id sent.
- `Pending` is one batch published and not yet acknowledged; the publisher keeps them in order
  and publishes them again, same `Nats-Msg-Id`, when their fate is unknown.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leireye.fleet.model import encode_batch
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
    records: list[np.ndarray] = field(default_factory=list)
    raws: list[np.ndarray] = field(default_factory=list)
    count: int = 0
    since: float = 0.0  # when the oldest held record was read (monotonic s)

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
        n = min(limit, len(records))
        head, tail = records[:n], records[n:]
        self.records = [tail] if len(tail) else []
        if raw is not None:
            self.raws = [raw[n:]] if len(tail) else []
            raw = raw[:n]
        self.count = len(tail)
        first, last = int(head["seq"][0]), int(head["seq"][-1])
        lost = last - self.prev_last - n
        body, headers = encode_batch(self.sensor, head, raw, lost, run=self.run)
        self.prev_last = last
        return Pending(body, headers, first, last, n, lost)
