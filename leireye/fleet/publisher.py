"""The publisher process: this sensor's ring into NATS JetStream (docs/fleet.md, "Sensor side").

Why it is shaped so
-------------------
The publisher is one more ring reader, like the stats and flow processes: it maps the ring
read-only and runs as `capture.user`. The capture never waits for it. When NATS is slow or
down the publisher simply stops reading: it falls behind in the ring, keeps reconnecting, and
when NATS is back it catches up from where it was. What the ring overwrote meanwhile is counted,
id for id, and carried in the next batch's `LE-Lost` header, so for a run
`published + lost == captured` once it has caught up.

Order and exactly-once, with several batches in flight (`fleet.max_pending`):

- each batch carries `Nats-Msg-Id` (`S:run:first_id`): JetStream drops a second copy within the
  stream's duplicate window;
- each batch also carries `Nats-Expected-Last-Sequence`, the stream sequence it must follow:
  after a reconnect, a batch that was buffered by the client and reached the server before an
  earlier one lost on the old connection is refused instead of stored out of order;
- any doubt (an error ack, an ack not come in `fleet.ack_timeout_s`, a disconnection) is resolved
  the same way, by a *resync*: ask the stream for its last message, count the pending batches
  it already holds as published, and publish the rest again, in order, with the same ids.

A restarted publisher resumes after the last id its stream holds for this run (`LE-Last-Id` of
the last message, when its `LE-Run` is the ring's creation time), so nothing is sent twice; the
status page (`status.py`) carries its counters over.

Stats snapshots, the status and ended flows go out from their own task (`side.py`), every
second, never holding up the packets.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import encodings.idna  # noqa: F401  (a host name in a server URL: imported lazily by socket)
import importlib
import logging
import os
import ssl
import time
from pathlib import Path
from typing import Any, Final

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from leireye.config import Config
from leireye.errors import LeirEyeError
from leireye.exitcodes import ExitCode
from leireye.fleet.batching import Accumulator, Pending, recut
from leireye.fleet.connect import connect_options
from leireye.fleet.model import KINDS, FleetError, stream_name, subject
from leireye.fleet.resume import stored_after, stored_last
from leireye.fleet.side import SidePublisher
from leireye.fleet.status import PublisherStatus, StatusPage, public_server
from leireye.fleet.streams import ensure_streams
from leireye.record import RECORD_DTYPE
from leireye.ring.shards import PacketReader, ShardSet, attach_when_ready
from leireye.stopping import StopEvent, StopFlag, stop_on_sigterm

with contextlib.suppress(ImportError):  # nats-py imports it lazily for creds and nkey seeds
    importlib.import_module("nkeys")

log = logging.getLogger("leireye.fleet")

EXPECTED_LAST_SEQ: Final = "Nats-Expected-Last-Sequence"
READ_MAX: Final = 65536
LOG_EVERY_S: Final = 10.0
STATUS_EVERY_S: Final = 1.0
FINISH_S: Final = 0.5  # for the acks in flight, then to close: within the stop budget
IDLE_POLL_S: Final = 0.02  # between ring looks while there is nothing to send
FLOWING_S: Final = 1.0  # records read this recently: traffic flows, look every batch_ms
HEADROOM: Final = 4096  # bytes kept free under the server's max_payload for the headers


def run_publisher(
    config: Config,
    ring_name: str,
    status_name: str,
    stats_name: str,
    flows_name: str | None,
    fleet_name: str,
    stop: StopEvent | None = None,
) -> int | None:
    """Run until `stop` is set or SIGTERM arrives. A config that cannot work (a credentials
    file the process cannot read) ends it with ExitCode.FATAL: restarting would not help."""
    with stop_on_sigterm(stop) as stopping:
        page = StatusPage.attach(fleet_name, writable=True)
        try:
            ring = attach_when_ready(ring_name, stopping, 0.1, log)
            if ring is None:
                return None
            try:
                publisher = Publisher(config, ring, page, stopping)
                side = SidePublisher(config, publisher, status_name, stats_name, flows_name)
                asyncio.run(publisher.run(side))
            except FleetError as exc:
                log.error("fleet: %s", exc)
                return ExitCode.FATAL
            finally:
                ring.close()
        finally:
            page.close()
    return None


class Publisher:
    def __init__(self, config: Config, ring: ShardSet, page: StatusPage, stopping: StopFlag):
        fleet = config.fleet
        if fleet.sensor is None:
            raise FleetError("fleet.enabled needs fleet.sensor")
        self.config = config
        self.sensor: str = fleet.sensor
        self.ring = ring
        self.page = page
        self.stopping = stopping
        self.run_id = ring.rings[0].created_ns
        self.subject = subject(self.sensor, "packets")
        self.stream = stream_name(self.sensor, "packets")
        before = page.read()
        if before.run != self.run_id:  # a new run: nothing of the last one carries over
            before = PublisherStatus()
        self.status = msgspec_replace(
            before,
            sensor=self.sensor,
            pid=os.getpid(),
            run=self.run_id,
            connected=False,
            servers=[public_server(s) for s in fleet.nats.servers],
            in_flight=0,
        )
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.reader: PacketReader | None = None
        self.acc: Accumulator | None = None
        self.pending: collections.deque[Pending] = collections.deque()
        self.stream_seq = 0  # the stream sequence the next batch must follow
        self.resync_needed = False
        self.prepared = False  # the streams are made or checked once connected
        self.failures = 0  # resyncs in a row that did not get an ack through
        self.changed = True  # something the status message shows changed
        self.flowing_until = 0.0  # monotonic s: until then, look at the ring every batch_ms

    # -- status ---------------------------------------------------------------------------------

    def update(self, **fields: Any) -> None:
        before = self.status
        self.status = msgspec_replace(before, **fields)
        if any(getattr(before, k) != v for k, v in fields.items() if k in _SHOWN):
            self.changed = True

    def write_status(self) -> PublisherStatus:
        behind = 0
        if self.config.fleet.publish.packets:  # before the first connection too
            behind = max(0, self.ring.last_id - self.status.last_id)
        self.update(behind=behind, in_flight=len(self.pending))
        self.page.write(self.status)
        return self.status

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    # -- connection -----------------------------------------------------------------------------

    async def _connect(self) -> None:
        said: set[str] = set()  # errors logged since the last connection: each once

        async def error_cb(exc: Exception) -> None:
            words = _words(exc)
            if words not in said:  # not at every reconnect attempt (every 0.5 s)
                said.add(words)
                log.warning("fleet: NATS: %s", words)
            self.update(last_error=words)

        async def disconnected_cb() -> None:
            self.resync_needed = True
            self.update(connected=False)
            if not self.stopping():
                log.warning("fleet: disconnected from NATS; reading stops until it is back")

        async def reconnected_cb() -> None:
            said.clear()
            self.update(connected=True, last_error="")
            log.info("fleet: reconnected to NATS")

        try:
            options = connect_options(
                self.config.fleet.nats, Path(self.config.state_dir), f"leireye-{self.sensor}"
            )
        except (OSError, ssl.SSLError) as exc:  # a CA, certificate or key file
            raise FleetError(f"fleet.nats: {exc}") from None
        self.nc = await nats.connect(
            **options,
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
        )
        self.js = self.nc.jetstream(publish_async_max_pending=self.config.fleet.max_pending + 64)
        self.update(connected=True, last_error="")
        log.info("fleet: connected to NATS as sensor %s", self.sensor)

    async def _prepare(self) -> None:
        """Streams created or checked, then the reader placed after what the stream holds."""
        assert self.js is not None
        fleet = self.config.fleet
        kinds = tuple(kind for kind in KINDS if getattr(fleet.publish, kind))
        mismatch = await ensure_streams(self.js, self.sensor, fleet.streams, kinds)
        self.update(stream_mismatch=mismatch)
        self.prepared = True
        if not fleet.publish.packets:
            log.info("fleet: publishing no packets (fleet.publish.packets is false)")
            return
        last_seq, stored_last = await self._stored_last()
        start = max(stored_last, self.status.last_id) + 1
        if stored_last > self.status.last_id:
            await self._count_stored(last_seq, self.status.last_id)
        self.stream_seq = last_seq
        self.reader = self.ring.reader(start, with_raw=True)
        self.acc = Accumulator(
            self.sensor, self.run_id, fleet.batch_records, start - 1, self._max_body()
        )
        log.info("fleet: publishing %s from id %d (stream %s at sequence %d)", self.subject,
                 start, self.stream, last_seq)  # fmt: skip

    def _max_body(self) -> int:
        """The most a batch body may weigh: the server's max_payload (its INFO, so the one of
        the server connected now), less room for the headers. FleetError when not even one
        record with its raw bytes would fit, compressed or not: no batch could ever go."""
        assert self.nc is not None
        limit = self.nc.max_payload - HEADROOM
        row = RECORD_DTYPE.itemsize + self.ring.raw_bytes
        if limit < row:
            raise FleetError(
                f"the NATS server's max_payload ({self.nc.max_payload} bytes) is too small for "
                f"one record with its ring.raw_bytes ({row} bytes) and the headers "
                f"({HEADROOM} bytes): raise max_payload or lower ring.raw_bytes"
            )
        return limit

    async def _stored_last(self) -> tuple[int, int]:
        assert self.js is not None
        return await stored_last(self.js, self.stream, self.run_id)

    async def _count_stored(self, last_seq: int, known: int) -> None:
        """Batches the stream holds that the previous publisher did not see acknowledged (it
        died first): their records and losses into this run's counters."""
        assert self.js is not None
        found = await stored_after(self.js, self.stream, self.run_id, last_seq, known)
        s = self.status
        self.update(
            published_records=s.published_records + found.records,
            published_batches=s.published_batches + found.batches,
            published_bytes=s.published_bytes + found.bytes,
            lost=s.lost + found.lost,
            last_id=found.last_id,
        )

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, side: SidePublisher) -> None:
        side_task = asyncio.create_task(side.run())
        status_task = asyncio.create_task(self._status_loop())
        connect = asyncio.create_task(self._connect())
        try:
            while not self.stopping():
                if not connect.done():
                    await asyncio.sleep(0.05)
                    continue
                if connect.exception() is not None:
                    raise connect.exception()  # type: ignore[misc]
                await self.step()
        finally:
            side.stop()
            await self._drain()
            await self._finish(connect, side_task, status_task)

    async def _drain(self) -> None:
        """Asked to stop: what the capture wrote before it stopped (the supervisor stops the
        ring's writers first) goes out too, within FINISH_S; whatever is left is `behind`."""
        deadline = time.monotonic() + FINISH_S
        while (
            self.connected
            and self.prepared
            and not self.resync_needed
            and self.reader is not None
            and self.reader.backlog > 0
            and time.monotonic() < deadline
        ):
            await self.step()

    async def _status_loop(self) -> None:
        """The status page every second and the log line every LOG_EVERY_S, on their own:
        a request to a hung server must not freeze what the status shows."""
        next_log = 0.0
        while True:
            self.write_status()
            now = time.monotonic()
            if now >= next_log:
                log.info("%s", self.log_line())
                next_log = now + LOG_EVERY_S
            await asyncio.sleep(STATUS_EVERY_S)

    async def step(self) -> None:
        """One turn: settle acks, read and publish what there is room for, or wait a little."""
        batch_s = self.config.fleet.batch_ms / 1000
        try:
            if not self.prepared:
                if not self.connected:
                    await asyncio.sleep(0.05)
                    return
                await self._prepare()
            if self.reader is None:  # no packets to publish
                await asyncio.sleep(0.2)
                return
            if self.resync_needed:
                if not self.connected:
                    await asyncio.sleep(0.05)
                    return
                await self._resync()
            self._settle()
            busy = await self._fill(batch_s)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            self.update(last_error=_words(exc))
            self.resync_needed = True
            self.failures += 1
            log.warning("fleet: %s; trying again", _words(exc))
            await asyncio.sleep(min(5.0, 0.2 * self.failures))
            return
        if not busy:
            await asyncio.sleep(self._idle_s(batch_s))

    def _idle_s(self, batch_s: float) -> float:
        """How long to wait for more: until the held records' batch is due; with none held,
        `batch_ms` while traffic flows (a record waits at most about twice that), one idle poll
        after a quiet second (the first packet after a quiet spell waits at most that)."""
        acc = self.acc
        now = time.monotonic()
        if acc is not None and acc.count:
            return max(0.001, min(batch_s, acc.since + batch_s - now))
        if now < self.flowing_until:
            return min(batch_s, IDLE_POLL_S)
        return IDLE_POLL_S

    async def _fill(self, batch_s: float) -> bool:
        """Read and publish while there is room in flight; True when it did something."""
        assert self.reader is not None and self.acc is not None
        busy = False
        room = self.config.fleet.max_pending - len(self.pending)
        self.acc.max_bytes = self._max_body()  # a failover may have reached another server
        while room > 0 and self.connected and not self.resync_needed:
            now = time.monotonic()
            if self.acc.count < self.acc.batch_records:
                read = self.reader.read(min(READ_MAX, self.acc.batch_records - self.acc.count))
                self.acc.add(read, now)
                if len(read.records):
                    self.flowing_until = now + FLOWING_S
            if not self.acc.due(now, batch_s):
                break
            batch = self.acc.take(self.acc.batch_records)
            assert batch is not None
            self.pending.append(batch)  # first: a publish that raises leaves it to the resync
            await self._publish(batch)
            room -= 1
            busy = True
        return busy

    async def _publish(self, batch: Pending) -> None:
        assert self.js is not None
        headers = {**batch.headers, EXPECTED_LAST_SEQ: str(self.stream_seq)}
        batch.future = await self.js.publish_async(self.subject, batch.body, headers=headers)
        batch.sent_at = time.monotonic()
        batch.sends += 1
        self.stream_seq += 1
        if batch.sends > 1:
            self.update(retries=self.status.retries + 1)

    def _settle(self) -> None:
        """Count the acknowledged batches at the head; a failed or late one asks a resync."""
        now = time.monotonic()
        while self.pending:
            head = self.pending[0]
            future = head.future
            if future is None:  # its publish raised: the resync sends it
                self.resync_needed = True
                return
            if not future.done():
                timeout = self.config.fleet.ack_timeout_s
                if now - head.sent_at > timeout:
                    self._doubt(f"no ack for batch {head.first_id}..{head.last_id} in "
                                f"{timeout:g}s")  # fmt: skip
                return
            if future.cancelled() or future.exception() is not None:
                exc = future.exception() if not future.cancelled() else None
                self._doubt(f"batch {head.first_id}..{head.last_id}: {_words(exc)}")
                return
            ack = future.result()
            assert isinstance(ack, PubAck)
            self.pending.popleft()
            self._acked(head)
            self.failures = 0

    def _acked(self, batch: Pending) -> None:
        s = self.status
        self.update(
            published_records=s.published_records + batch.count,
            published_batches=s.published_batches + 1,
            published_bytes=s.published_bytes + len(batch.body),
            lost=s.lost + batch.lost,
            last_id=max(s.last_id, batch.last_id),
            last_error="",  # a batch got through: whatever went wrong is over
        )

    def _doubt(self, why: str) -> None:
        self.update(last_error=why)
        log.warning("fleet: %s; checking the stream and publishing again", why)
        self.resync_needed = True

    async def _resync(self) -> None:
        """What the stream holds decides: pending batches it has are published, the rest go
        again, in order, with the same ids."""
        assert self.js is not None
        for batch in self.pending:
            if batch.future is not None and not batch.future.done():
                batch.future.cancel()  # frees its slot in the client
        try:
            last_seq, stored_last = await self._stored_last()
        except NotFoundError:  # the stream was deleted: make it again
            mismatch = await ensure_streams(
                self.js, self.sensor, self.config.fleet.streams, ("packets",)
            )
            others = [m for m in self.status.stream_mismatch if not m.startswith(self.stream)]
            self.update(stream_mismatch=others + mismatch)
            last_seq, stored_last = await self._stored_last()
        while self.pending and self.pending[0].last_id <= stored_last:
            self._acked(self.pending.popleft())
        limit = self._max_body()  # the server now may take less than the one they were cut for
        if any(len(batch.body) > limit for batch in self.pending):
            pieces = [p for b in self.pending for p in recut(self.sensor, self.run_id, b, limit)]
            self.pending = collections.deque(pieces)
        self.stream_seq = last_seq
        self.resync_needed = False
        if self.failures:
            await asyncio.sleep(min(5.0, 0.2 * self.failures))
        self.failures += 1  # until an ack comes through
        for batch in self.pending:
            await self._publish(batch)

    async def _finish(self, *tasks: asyncio.Task[None]) -> None:
        """Give the batches in flight a moment to be acknowledged, then close."""
        deadline = time.monotonic() + FINISH_S
        while self.pending and self.connected and time.monotonic() < deadline:
            self._settle()
            if self.resync_needed:
                break
            await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeirEyeError, nats.errors.Error):
                await task
        self.write_status()
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self.nc.close(), FINISH_S)
        self.update(connected=False)
        self.write_status()
        log.info("fleet stopped: %s", self.log_line())

    def log_line(self) -> str:
        s = self.status
        return (
            f"fleet sensor={s.sensor} connected={int(s.connected)} "
            f"published={s.published_records} batches={s.published_batches} "
            f"bytes={s.published_bytes} lost={s.lost} behind={s.behind} retries={s.retries}"
        )


_SHOWN: Final = ("connected", "last_error", "stream_mismatch")


def msgspec_replace(status: PublisherStatus, **fields: Any) -> PublisherStatus:
    return msgspec.structs.replace(status, **fields)


def _words(exc: BaseException | None) -> str:
    """An error as the status shows it: its kind and message, never more than a line."""
    if exc is None:
        return "cancelled"
    text = str(exc).strip() or type(exc).__name__
    if type(exc).__name__ not in text:
        text = f"{type(exc).__name__}: {text}"
    return text.splitlines()[0][:300]
