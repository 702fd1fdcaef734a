"""The central's ingest process: every sensor's JetStream streams into the central's ring.

`leireye central` runs the sensor's web tier, stats process and ring, with this process in the
capture's place (docs/fleet-central.md). It starts as root only to map its segments and read
the NATS credentials into memory, then drops to `capture.user` and, on one asyncio loop:

- follows each sensor (`central.sensors`, or every sensor whose `LEIREYE_<S>_PACKETS` stream
  exists, looked for every `central.discover_s`) with one durable pull consumer per stream
  (`packets`, `flows`, `stats`, `status`), named `leireye-central-<central.name>`: a restarted
  central resumes after what it acknowledged;
- after a clean stop or a crash on the same boot, first counts the journaled batches the saved
  sensor table does not count yet (`replay.recount`), then puts the last run's packets back in
  the ring with their ids (`leireye.fleet.replay`, from the journal `leireye.fleet.journal`);
- notes each packet batch in the journal (first id, count, sensor, stream sequence), writes
  its records to the ring with `sensor` set to the sensor's index, then acknowledges the
  message (so a stop loses nothing: every message fetched is handled first). A SIGKILL before
  the acknowledgement is through leaves journaled messages the next run receives again at
  once: when the journal is trusted (same boot) they are known by their sequence, at most the
  highest journaled one of their sensor, and acknowledged without being written or counted
  again; a batch it cannot decode is counted and acknowledged (skipped);
- adds the ended flows of each `flows` message (`flowmsg.decode_flows`, each with its
  `sensor`) to the central's own flow store (`history.dir`, the flow process's
  `FlowStoreWriter` and layout; on a thread, one call at a time, so that a flush writing
  Parquet files does not hold the loop and its heartbeat), then acknowledges it: rows wait in
  memory for up to `history.flush_s` and a crash loses those (counted in the store's
  `losses.json`, as for a sensor's flow process); a message it cannot decode is counted in
  `bad_batches` and skipped; each message's `missed` is added to the sensor's `flows_missed`;
- likewise the host and app minutes of each `minutes` message (on the `flows` stream, header
  `LE-Content: minutes`; `minutemsg.decode_minutes`, each row with its `sensor`): into the
  store's `hosts/` and `apps/` tables, so that /api/hosts and the protocol chart answer over
  the fleet; their `missed` goes to the sensor's `minutes_missed`;
- keeps the last `stats` and `status` JSON of each sensor, counts what was lost
  (`leireye.fleet.tracker`), and writes the sensor table to `<state_dir>/central/sensors.json`
  once a second (at once for a new sensor, before any of its records is in the ring);
- publishes a capture status block as a capture would (`capturing`, packets = ingested,
  kernel drops = the fleet's lost records) and its heartbeat (every 0.1 s, from its own task).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Final, cast

import nats.errors
import nats.js.errors
import numpy as np
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from leireye.config import Config
from leireye.errors import LeirEyeError
from leireye.exitcodes import ExitCode
from leireye.fleet.checkpoint import IdCheckpoint
from leireye.fleet.connect import connect_options, load_secrets
from leireye.fleet.discover import fleet_streams, sensors_of
from leireye.fleet.flowmsg import decode_flows
from leireye.fleet.journal import (
    JOURNAL_FILE,
    Journal,
    Resume,
    journaled_seqs,
    planned_resume,
    read_entries,
)
from leireye.fleet.minutemsg import MinutesMessage, decode_minutes
from leireye.fleet.model import (
    H_CONTENT,
    H_LAST,
    MINUTES,
    SENSOR_TABLE_FILE,
    FleetError,
    Kind,
    decode_batch,
    read_sensor_table,
    stream_name,
    subject,
    write_sensor_table,
)
from leireye.fleet.replay import recount, replay
from leireye.fleet.tracker import Fleet, SensorTrack
from leireye.flows.compact import Compactor
from leireye.flows.model import Flow
from leireye.flows.store import FlowStoreWriter
from leireye.privileges import drop_privileges, lookup_user
from leireye.proctitle import set_title
from leireye.ring import Ring, RingWriter
from leireye.ring.status import CaptureState, CaptureStatus, StatusBlock, StatusReport
from leireye.stopping import StopEvent, StopFlag, stop_on_sigterm

log = logging.getLogger("leireye.ingest")

FOLLOWED: Final[tuple[Kind, ...]] = ("packets", "flows", "stats", "status")
FETCH_BATCH: Final = {"packets": 64, "flows": 16, "stats": 16, "status": 16}
DATA: Final[tuple[Kind, ...]] = ("packets", "flows")  # read from the start; the rest: the last
FETCH_TIMEOUT_S: Final = 0.5
TICK_S: Final = 0.1
TABLE_PERIOD_S: Final = 1.0
MAX_JSON_BYTES: Final = 1 << 20  # a stats or status message above this is counted, not kept
# imported lazily by nats-py and asyncio: loaded before the privilege drop
PRELOAD: Final = (
    "nats.js.kv", "nats.js.object_store", "asyncio.unix_events", "ssl", "zlib",
    "concurrent.futures.thread",  # asyncio.to_thread: the flow store's writes
)  # fmt: skip


def run_ingest(
    config: Config, ring_name: str, status_name: str, stop: StopEvent | None = None
) -> int:
    """Ingest until SIGTERM or `stop`; return the exit code (`ExitCode`)."""
    with stop_on_sigterm(stop) as flag:
        return _run(config, ring_name, status_name, flag)


def _run(config: Config, ring_name: str, status_name: str, stopping: StopFlag) -> int:
    set_title(f"leireye: ingest {config.central.name}", "leireye-ingest")
    try:
        block = StatusBlock.attach(status_name, writable=True)
    except LeirEyeError as exc:
        log.error("ingest cannot start: %s", exc)
        return ExitCode.FATAL
    report = StatusReport(block, CaptureStatus(
        state=CaptureState.STARTING, interface=f"fleet central {config.central.name}",
        linktype=1, snaplen=config.ring.raw_bytes, pid=os.getpid(), started_at_ns=time.time_ns(),
    ))  # fmt: skip
    ring: Ring | None = None
    store: FlowStoreWriter | None = None
    journal: Journal | None = None
    compactor: Compactor | None = None
    state_dir = Path(config.state_dir)
    try:
        try:
            ring = Ring.attach(ring_name, writable=True)
            saved = read_sensor_table(state_dir / SENSOR_TABLE_FILE)
            name = f"leireye-central-{config.central.name}"
            options = load_secrets(connect_options(config.central.nats, state_dir, name))
            drop_privileges(lookup_user(config.capture.user), preload=PRELOAD)
            writer = RingWriter(ring)
            resume = _resume(state_dir, ring, writer)
            plan = resume.plan
            journal = Journal(state_dir, ring.capacity, resume.next_id)  # before a reservation
            checkpoint = IdCheckpoint(state_dir, writer.next_id)
            history = config.history
            store = FlowStoreWriter(config.history_dir, flows_days=history.flows_days,
                                    max_gb=history.max_gb, flush_s=history.flush_s)  # fmt: skip
            compactor = Compactor(store)  # merges each finished hour's flows files
            compactor.start()
        except (LeirEyeError, OSError) as exc:
            log.error("ingest cannot start: %s", exc)
            report.update(state=CaptureState.ERROR, last_error=str(exc))
            return ExitCode.FATAL
        fleet = Fleet(config.central.silent_after_s, saved)
        # a trusted journal: the batches the table does not count yet are counted, and those
        # that come again are not written or counted again
        entries = read_entries(state_dir / JOURNAL_FILE)[: None if resume.trusted else 0]
        ingest = Ingest(config, writer, checkpoint, fleet, report, options, stopping, store,
                        journal, plan, entries)  # fmt: skip
        asyncio.run(ingest.run())
        return ExitCode.OK
    except Exception as exc:  # a bug: say so, leave a trace in the status, be restarted
        log.exception("ingest crashed")
        report.update(state=CaptureState.ERROR, capturing=False, last_error=f"crashed: {exc!r}")
        return ExitCode.ERROR
    finally:
        if compactor is not None:
            compactor.stop()
        if store is not None:
            try:
                store.close()  # the flows held in memory are written
            except OSError as exc:
                log.error("flow store: cannot write the last flows: %s", exc)
        if journal is not None and journal.fd >= 0:  # not closed by a clean stop
            with contextlib.suppress(OSError):
                os.close(journal.fd)
        if ring is not None:
            ring.close()
        block.close()


def _resume(state_dir: Path, ring: Ring, writer: RingWriter) -> Resume:
    """Where this ingest goes on (`journal.resume_point`). Into the empty ring the supervisor
    made for it: the planned replay when the ring starts at it, else new ids from the resume
    point (the journal changed in between). Into a ring holding packets (an ingest restarted by
    the supervisor: the ring outlives it): with a journal it can trust, the planned entries
    from the ring's next id on (a batch journaled and not yet written when the last ingest
    died, the rest of a replay cut short), else new ids from the resume point; without one,
    new ids after the ring's last (every id a reader saw is in the ring). Ids are never handed
    out twice."""
    resume = planned_resume(state_dir, ring.capacity)
    plan = resume.plan
    if writer.next_id != ring.base_id + 1:
        if not resume.trusted:
            return Resume(plan[:0], writer.next_id, False)
        plan = plan[plan["first_id"] >= writer.next_id]
    if len(plan) and int(plan["first_id"][0]) == writer.next_id:
        return Resume(plan, resume.next_id, resume.trusted)
    writer.skip_to(resume.next_id)
    return Resume(plan[:0], writer.next_id, resume.trusted)


class Ingest:
    def __init__(
        self,
        config: Config,
        writer: RingWriter,
        checkpoint: IdCheckpoint,
        fleet: Fleet,
        report: StatusReport,
        options: dict[str, Any],
        stopping: StopFlag,
        store: FlowStoreWriter,
        journal: Journal,
        plan: np.ndarray,
        entries: np.ndarray,
    ) -> None:
        self.config = config
        self.journal = journal
        self.plan = plan
        self.entries = entries  # the trusted journal's (none after a power cut)
        # sensor index -> its highest journaled packets sequence
        self.journaled = journaled_seqs(entries)
        # the id after the last one the journal's replay covers: a stop during the replay
        # still saves it (those ids were handed out in the last run)
        self.replay_end = int(plan["first_id"][-1] + plan["count"][-1]) if len(plan) else 0
        self.store = store
        self.store_lock = asyncio.Lock()
        self.central = config.central
        self.writer = writer
        self.raw_bytes = writer.ring.raw_bytes
        self.checkpoint = checkpoint
        self.fleet = fleet
        self.report = report
        self.options = options
        self.stopping = stopping
        self.state_dir = Path(config.state_dir)
        self.table_path = self.state_dir / SENSOR_TABLE_FILE
        self.durable = f"leireye-central-{config.central.name}"
        self.followers: dict[tuple[str, Kind], asyncio.Task[None]] = {}
        self.bytes = 0
        self.bad_logged: dict[str, int] = {}
        self.last_error = ""

    async def run(self) -> None:
        for name in self.central.sensors:
            self._track(name)
        heartbeat = asyncio.create_task(self._beat(), name="heartbeat")
        nc = await self._connect()
        if nc is None:
            heartbeat.cancel()
            self._finish()
            return
        try:
            js = nc.jetstream()
            if len(self.entries):
                await recount(js, self.entries, self.fleet, self.stopping)
            if len(self.plan):
                await replay(js, self.plan, self.fleet, self.writer, self.stopping)
            await self._loop(js)
        finally:
            heartbeat.cancel()
            if self.followers:  # each stops between two messages, within one fetch timeout
                await asyncio.wait(self.followers.values(), timeout=FETCH_TIMEOUT_S * 2)
            with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
                await nc.flush(1)  # the last acknowledgements reach the server
            with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
                await nc.close()
            self._finish()

    async def _connect(self) -> Client | None:
        """Connected, or None when asked to stop first. nats-py itself retries an unreachable
        server for ever (each failure reaches `_on_error`); an error it gives up on is retried
        here every 2 s."""
        while not self.stopping():
            connecting = asyncio.create_task(nats.connect(
                **self.options, error_cb=self._on_error, disconnected_cb=self._on_disconnect,
                reconnected_cb=self._on_reconnect,
            ))  # fmt: skip
            while not connecting.done():
                if self.stopping():
                    connecting.cancel()
                    return None
                await asyncio.wait({connecting}, timeout=TICK_S)
            try:
                return connecting.result()
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                self._set_error(f"NATS unreachable: {type(exc).__name__} {exc}")
                for _ in range(int(2 / TICK_S)):  # a retry pace that still sees a stop soon
                    if self.stopping():
                        return None
                    await asyncio.sleep(TICK_S)
        return None

    async def _beat(self) -> None:
        """The heartbeat: the event loop turns (a JetStream call that takes long does not stop
        it; a hang that holds the loop does, and the supervisor's SIGKILL follows)."""
        while True:
            self.report.block.beat()
            await asyncio.sleep(TICK_S)

    async def _on_error(self, exc: Exception) -> None:
        self._set_error(f"NATS: {exc}")  # logged when it changes, not at every retry

    async def _on_disconnect(self) -> None:
        self._set_error("NATS disconnected; reconnecting")

    async def _on_reconnect(self) -> None:
        log.info("NATS reconnected")
        self._set_error("")

    def _set_error(self, text: str) -> None:
        if text and text != self.last_error:
            log.warning("%s", text)
        self.last_error = text
        self.report.update(last_error=text)

    async def _loop(self, js: JetStreamContext) -> None:
        self._set_error("")
        self.report.update(state=CaptureState.CAPTURING, capturing=True)
        next_discover = next_table = 0.0
        while not self.stopping():
            now = time.monotonic()
            if now >= next_discover:
                await self._discover(js)
                next_discover = time.monotonic() + self.central.discover_s
            if now >= next_table:
                self._publish()
                await self._flush_flows()
                next_table = now + TABLE_PERIOD_S
            await asyncio.sleep(TICK_S)  # the loop's pace; the followers run meanwhile

    async def _flush_flows(self) -> None:
        """Write the flows held once `history.flush_s` has passed (on a thread, as
        `_store`). A store that cannot be written (disk full, permissions) keeps them and
        is tried again at the next tick; said in `last_error` (logged once per change)."""
        try:
            async with self.store_lock:
                await asyncio.to_thread(self.store.tick)
        except OSError as exc:
            self._set_error(f"flow store: cannot write: {exc}")
            return
        if self.last_error.startswith("flow store:"):
            self._set_error("")

    def _finish(self) -> None:
        self._publish(state=CaptureState.STOPPED, capturing=False)
        try:
            self.journal.close()  # on disk before the next id that makes it replayable
        except OSError as exc:
            log.error("journal: %s", exc)
        else:
            self.checkpoint.settle(max(self.writer.next_id, self.replay_end))
        log.info("ingest stopped: %d packets from %d sensors, %d lost", self.fleet.packets,
                 len(self.fleet.sensors), self.fleet.lost)  # fmt: skip

    def _publish(self, **changes: Any) -> None:
        write_sensor_table(self.table_path, self.fleet.table(time.time_ns()))
        self.report.update(
            packets_captured=self.fleet.packets, bytes_captured=self.bytes,
            kernel_drops=self.fleet.lost,
            interface=f"fleet central {self.central.name} ({len(self.fleet.sensors)} sensors)",
            **changes,
        )  # fmt: skip

    def _track(self, name: str) -> SensorTrack:
        track, new = self.fleet.add(name)
        if new:  # its index is saved before any record carries it
            write_sensor_table(self.table_path, self.fleet.table(time.time_ns()))
            log.info("sensor %s: index %d", name, track.index)
        return track

    # -- following streams --------------------------------------------------------------------

    async def _discover(self, js: JetStreamContext) -> None:
        """Start following every stream of every sensor that is not followed yet."""
        try:
            streams = await fleet_streams(js, self.central.sensors, FOLLOWED)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("cannot list the fleet's streams: %s", exc)
            return
        names = list(self.central.sensors) or sensors_of(streams)
        for name in names:
            for kind in FOLLOWED:
                task = self.followers.get((name, kind))
                if (task is None or task.done()) and stream_name(name, kind) in streams:
                    await self._follow(js, self._track(name), kind)

    async def _follow(self, js: JetStreamContext, track: SensorTrack, kind: Kind) -> None:
        stream = stream_name(track.name, kind)
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if kind in DATA else DeliverPolicy.LAST,
            max_ack_pending=1024,
            ack_wait=30,
        )
        try:
            sub = await js.pull_subscribe(
                subject(track.name, kind), durable=self.durable, stream=stream, config=config
            )
            info = await sub.consumer_info()
            floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
            delivered = info.delivered.stream_seq if info.delivered is not None else 0
            journaled = self.journaled.pop(track.index, 0) if kind == "packets" else 0
            if not delivered:  # a consumer made anew, perhaps with its stream: sequences
                journaled = 0  # may have started over
            if info.num_ack_pending:
                # a run that died with messages delivered and not acknowledged: the server
                # would redeliver them only after ack_wait, behind newer ones (which would
                # make them look lost). Start again right after the last acknowledged message.
                await sub.unsubscribe()
                await js.delete_consumer(stream, self.durable)
                if floor:
                    config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
                    config.opt_start_seq = floor + 1
                sub = await js.pull_subscribe(
                    subject(track.name, kind), durable=self.durable, stream=stream, config=config
                )
                log.info("%s: %d messages delivered to the last run and not acknowledged: "
                         "read again from %d", stream, info.num_ack_pending, floor + 1)  # fmt: skip
            # what it acknowledged before, or journaled (delivered again: acknowledged and
            # skipped); gaps count from there, and lost ids from that batch's last id
            seen = max(floor, journaled, track.sequences.get(kind, 0))
            if seen:
                track.sequences[kind] = seen
                if kind == "packets" and not track.last_id:
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        last = await js.get_msg(stream, seq=seen)
                        track.last_id = int((last.headers or {}).get(H_LAST, 0))
        except (TimeoutError, nats.errors.Error, ValueError) as exc:
            log.warning("cannot follow %s: %s", stream, exc)
            return
        log.info("following %s (acknowledged up to %d)", stream, floor)
        task = asyncio.create_task(self._pull(sub, track, kind), name=stream)
        self.followers[(track.name, kind)] = task

    async def _pull(self, sub: JetStreamContext.PullSubscription, track: SensorTrack,
                    kind: Kind) -> None:  # fmt: skip
        while not self.stopping():
            try:
                msgs = await sub.fetch(FETCH_BATCH[kind], timeout=FETCH_TIMEOUT_S)
            except TimeoutError:  # nats.errors.TimeoutError too: nothing new
                continue
            except nats.errors.ConnectionClosedError:
                return
            except nats.errors.Error as exc:
                log.warning("%s: fetch failed: %s", stream_name(track.name, kind), exc)
                await asyncio.sleep(FETCH_TIMEOUT_S)  # back off; the loop re-checks stopping
                continue
            # Every message fetched is handled and acknowledged, also when asked to stop: one
            # left unacknowledged would come back to the next run only after ack_wait, behind
            # newer ones, and be counted missed and lost there (its sequence skipped).
            for msg in msgs:
                try:
                    rows = await self._handle(track, kind, msg)
                    if rows:
                        await self._store(rows)
                except Exception:  # a bug on one message must not stop the sensor's stream
                    track.bad_batches += 1
                    log.exception("%s: message %d skipped", stream_name(track.name, kind),
                                  msg.metadata.sequence.stream)  # fmt: skip
                try:
                    await msg.ack()
                except nats.errors.Error as exc:  # redelivered later: skipped by its sequence
                    log.warning("%s: ack failed: %s", stream_name(track.name, kind), exc)

    # -- one message --------------------------------------------------------------------------

    async def _handle(
        self, track: SensorTrack, kind: Kind, msg: Msg
    ) -> list[Flow] | MinutesMessage | None:
        """One message; for a flows or minutes message, the rows to add to the store."""
        meta = msg.metadata
        stored_ns = int(meta.timestamp.timestamp() * 1e9)
        if not track.on_message(kind, meta.sequence.stream, stored_ns):
            return None  # delivered again, handled already
        if kind == "packets":
            self._packets(track, msg)
            return None
        if kind == "flows" and (msg.headers or {}).get(H_CONTENT) == MINUTES:
            return await self._minutes(track, msg)
        if kind == "flows":
            return self._flows(track, msg)
        payload = _json_object(msg.data)
        if payload is None:
            track.bad_batches += 1
            self._note_bad(track, f"{kind} message is not a JSON object")
        elif kind == "stats":
            track.stats = payload
        else:
            track.status = payload
        return None

    def _packets(self, track: SensorTrack, msg: Msg) -> None:
        try:
            batch = decode_batch(track.name, msg.headers, msg.data)
        except FleetError as exc:
            track.bad_batches += 1
            self._note_bad(track, str(exc))
            return
        records = batch.records
        records["sensor"] = track.index
        frames = None
        if batch.raw is not None and self.raw_bytes:
            # fixed-width bytes: the ring's raw slots cut or NUL-pad them to its raw_bytes
            frames = batch.raw.view(f"S{batch.raw.shape[1]}").reshape(-1)
        first = self.writer.next_id
        self.checkpoint.reserve(first + len(records) - 1)
        self.journal.append(first, len(records), track.index, msg.metadata.sequence.stream)
        written = self.writer.write(records, cast(Any, frames))
        assert written == first, f"wrote id {written}, the journal says {first}"
        wire_bytes = int(records["wire_len"].sum())
        self.bytes += wire_bytes
        track.on_batch(batch.header, wire_bytes)

    def _flows(self, track: SensorTrack, msg: Msg) -> list[Flow] | None:
        try:
            message = decode_flows(track.name, msg.data)
        except FleetError as exc:
            track.bad_batches += 1
            self._note_bad(track, str(exc))
            return None
        track.flows += len(message.flows)
        track.flows_missed += message.missed
        return message.flows

    async def _minutes(self, track: SensorTrack, msg: Msg) -> MinutesMessage | None:
        """A minutes message, checked on a thread: a full one (1 MB, ~2 500 host minutes with
        10 peers each) took 0.06 s to check here, 0.24 s when every address in it differs,
        which the loop and its heartbeat must not wait for."""
        try:
            message = await asyncio.to_thread(decode_minutes, track.name, msg.data)
        except FleetError as exc:
            track.bad_batches += 1
            self._note_bad(track, str(exc))
            return None
        track.minutes += len(message.hosts) + len(message.apps)
        track.minutes_missed += message.missed
        return message

    async def _store(self, rows: list[Flow] | MinutesMessage) -> None:
        """Add flows or minutes to the store (counted in its pending.json from then on) on a
        thread: a flush it makes writes Parquet files (~0.7 s for 50 000 flows), and the event
        loop and its heartbeat go on meanwhile. One store call at a time; a write that fails
        keeps the rows (tried again at the next flush) and is shown in `last_error`."""
        store = self.store
        if isinstance(rows, list):
            add = functools.partial(store.add_flows, rows)
        else:
            add = functools.partial(store.add_minute, rows.hosts, rows.apps)
        async with self.store_lock:
            try:
                await asyncio.to_thread(add)
            except OSError as exc:
                self._set_error(f"flow store: cannot write: {exc}")

    def _note_bad(self, track: SensorTrack, why: str) -> None:
        """Log the first bad message of a sensor and then every 100th: counted, not flooded."""
        seen = self.bad_logged.get(track.name, 0)
        self.bad_logged[track.name] = seen + 1
        if seen % 100 == 0:
            log.warning("sensor %s: message skipped (%d so far): %s", track.name,
                        track.bad_batches, why)  # fmt: skip


def _json_object(data: bytes) -> dict[str, Any] | None:
    if len(data) > MAX_JSON_BYTES:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
