"""The hub of one web worker: one ring reader, many sessions, each packet encoded once.

Why it is shaped so
-------------------
Every `poll_ms` the hub reads what the capture wrote since its last look, as one numpy batch.
Sessions with identical filters form one group; each distinct filter's mask is computed once
over the batch, the union of all masks is JSON-encoded once (one `packet` message per row), and
each session receives references to the already-encoded messages it wants, as one
`frames.PacketRun` per group: the batch frames of batch subscribers, and the bytes of each
frame, are made once per group and shared too. Subscribers of binary batches
(`format: "columns"`) get the group's records instead, and a read whose groups are all binary
makes no JSON at all. So the cost per batch grows with the number of distinct filters, not with
the number of subscribers.

A session that subscribes with `since` is first fed from its own ring reader, from `since + 1`
up to the hub's cursor, in bounded chunks, and only when it has caught up does it join its live
group. Each step reads the live batch first and lets replays run up to the end of it, and
delivers that batch only to the sessions that were live before the step: so no record falls
between replay and live, and the live rows of the step in which a replay ends wait in the
replay (which never skips) rather than meet an outbox its last chunk may have filled.
If the ring already overwrote part of what it asked for, the session is told how many first.

Replay never skips: when a session's outbox is full the replay pauses. Live delivery never waits:
a full outbox makes the session skip packets and count them (see `session.py`).

Every 100 ms the hub also reads the stats series and the capture status once, and gives each
session the clock tick that drives its timers (auth timeout, idle timeout, token expiry, stats
interval, status changes).

An idle sensor costs next to nothing: while no session is subscribed to packets the hub does
not read the ring at all (a look every 2 ms cost an idle worker ~9 % of a core at 25 packets/s),
and with no connection at all it ticks once a second (the status /health shows, the counters).
The live reader then stands still; the first subscription moves it to the ring's head at once,
while the `subscribe` message is handled and before its `subscribed` reply can leave, so every
packet captured after that reply reaches the subscriber, and `since` replays anything earlier.

At a fleet central (`central.enabled`) the ring holds every sensor's packets: the hub keeps the
central's sensor table (`sensors.SensorDirectory`, looked at on each tick, and again when a batch
shows a sensor it does not know yet), packet messages carry the sensor's name, and `sensor`
filters resolve through it. The packet store is not read there (its frames, decoded again, would
not know their sensor).

Flow events (the `flows` channel) come from the flow process's event ring, read the same way
only while some session is subscribed to flows: `flowfeed.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from leireye.accounts.principal import AuthFailure, Principal
from leireye.accounts.tickets import TicketCheck
from leireye.accounts.tokens import Authenticator, load_or_create_secret
from leireye.accounts.userview import USERS_VIEW_FILE, view_store
from leireye.config import Config
from leireye.errors import LeirEyeError
from leireye.exitcodes import ExitCode
from leireye.fleet.model import SensorState
from leireye.fleet.status import PublisherStatus
from leireye.flows.view import FlowView
from leireye.ring.shards import PacketReader, ShardSet
from leireye.ring.shardstatus import StatusSet
from leireye.ring.status import CaptureState, CaptureStatus
from leireye.ring.storemark import StoreMark
from leireye.stats.layout import StatsSnapshot
from leireye.stats.series import StatsSeries
from leireye.store.reader import PacketStore
from leireye.web.clock import WallClock
from leireye.web.encode import encode_packets
from leireye.web.filters import PacketFilter
from leireye.web.fleetview import FleetView
from leireye.web.flowfeed import FlowFeed
from leireye.web.frames import PacketRun
from leireye.web.registry import ConnectionRegistry
from leireye.web.sensors import SensorDirectory, narrow_status
from leireye.web.session import Session
from leireye.web.statusview import capture_view
from leireye.web.storereplay import StoreReplay
from leireye.web.storeview import StoreView

log = logging.getLogger("leireye.web")

TICK_S = 0.1
IDLE_TICK_S = 1.0  # with no connection at all: the status for /health, the counters
READ_MAX = 16384
REPLAY_CHUNK = 4096


@dataclass(eq=False)
class Connection:
    session: Session
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    replay: PacketReader | None = None
    from_store: StoreReplay | None = None  # a resume read from the packet store first
    sent: int = 0  # messages sent (counted by the shell's send loop)
    # Called when the session may have subscribed to packets (the hub starts reading the ring).
    on_subscribe: Callable[[], None] = lambda: None

    def receive(self, data: str | bytes, now: float) -> None:
        self.session.receive(data, now)
        if self.session.subscribed_packets or self.session.subscribed_flows:
            self.on_subscribe()
        self.wake.set()


class Hub:
    def __init__(
        self,
        config: Config,
        worker_index: int,
        ring: ShardSet,
        status: StatusSet,
        stats: StatsSeries,
        registry: ConnectionRegistry,
        authenticator: Authenticator,
        tickets: TicketCheck,
        flow_view: FlowView | None = None,
        fleet_name: str | None = None,
    ) -> None:
        self.config = config
        self.worker_index = worker_index
        self.ring = ring
        self.status_block = status
        self.stats_series = stats
        self.store = StoreView.of(ring)  # the packet store writer's status
        # The publisher's status (a sensor in a fleet); reads None when the fleet is off.
        self.fleet = FleetView(fleet_name if config.fleet.enabled else None)
        self.fleet_status: PublisherStatus | None = None
        # The packet store's reader (resume with `options.from_store`); None: store off, or a
        # fleet central (a frame decoded again from the store would not know its sensor).
        self.packet_store = (
            PacketStore(config.store_dir)
            if config.store.enabled and not config.central.enabled
            else None
        )
        self._store_mark: StoreMark | None = None  # how far the store is complete
        self.sensors = SensorDirectory.of(config)
        self.sensors.refresh()
        self.registry = registry
        self.authenticator = authenticator
        self.tickets = tickets
        self._users_version = authenticator.users.version
        # What every session is driven with (`time.time()`, steps announced to the sessions).
        self.clock = WallClock(self._clock_stepped)
        self.reader = ring.reader("latest")
        self.connections: set[Connection] = set()
        self.stats: StatsSnapshot | None = None
        self.status: CaptureStatus | None = None
        self.delivered = 0
        self.encoded = 0
        self.lost = 0
        self.closed_sent = 0  # messages and client drops of connections already closed
        self.closed_dropped = 0
        self.http_requests = 0
        # Reading the ring while some session is subscribed to packets; else the live reader
        # stands still and is moved to the head when the first one subscribes.
        self.reading = False
        # The `flows` channel: None when this sensor runs no flow process.
        self.flows = None if flow_view is None else FlowFeed(flow_view, config.flows.max_active)
        self._wakeup = asyncio.Event()

    @classmethod
    def attach(cls, config: Config, segments: dict[str, str], worker_index: int) -> Hub:
        """Map every segment (read-only but the registry) and read the secret (call while still
        root: the secret is root's alone). The users come from the supervisor's users view,
        which the worker re-reads as the web user."""
        ring = ShardSet.attach(segments["ring"])
        status = StatusSet.attach(segments["status"], ring.shards)
        stats = StatsSeries.attach(segments["stats"])
        registry = ConnectionRegistry.attach(segments["conns"], worker_index)
        secret = load_or_create_secret(config)
        users = view_store(config.state_path(USERS_VIEW_FILE))
        authenticator = Authenticator(secret, users)
        tickets = TicketCheck(secret, users.generation_of)
        flows = None
        if config.flows.enabled and segments.get("flows"):  # created by the supervisor
            flows = FlowView.attach(segments["flows"])
        return cls(
            config, worker_index, ring, status, stats, registry, authenticator, tickets, flows,
            segments.get("fleet"),
        )  # fmt: skip

    # -- connections --------------------------------------------------------------------------

    def open(
        self,
        query_token: str | None,
        now: float,
        query_auth: Principal | AuthFailure | None = None,
    ) -> Connection:
        limit = self.config.limits.connections_per_user
        session = Session(
            limits=self.config.limits,
            authenticate=self.authenticator.verify,
            admit=lambda principal: self.registry.try_acquire(principal.id, limit),
            auth_timeout_s=self.config.auth.auth_timeout_s,
            now=now,
            query_token=query_token,
            query_auth=query_auth,
            outbox_messages=self.config.web.outbox_messages,
            flows_enabled=self.flows is not None,
            sensors=self.sensors,
        )
        session.tick(now, self.stats, self.status, self.fleet_status)
        conn = Connection(session, on_subscribe=self._start_reading)
        self.connections.add(conn)
        self._wakeup.set()  # its timers need the fast tick
        return conn

    def close(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.closed_sent += conn.sent
        self.closed_dropped += conn.session.dropped
        session = conn.session
        if session.admitted and session.principal is not None:
            self.registry.release(session.principal.id)
            session.admitted = False

    # -- the loop -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run())
        task.add_done_callback(_exit_if_failed)
        try:
            yield
        finally:
            self.shutdown()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        poll_s = self.config.web.poll_ms / 1000
        next_tick = 0.0
        while True:
            if time.monotonic() >= next_tick:
                self.tick(self.clock())
                next_tick = time.monotonic() + (TICK_S if self.connections else IDLE_TICK_S)
            packets = any(conn.session.subscribed_packets for conn in self.connections)
            flows = self.flows is not None and any(
                conn.session.subscribed_flows for conn in self.connections
            )
            if flows:
                self.step_flows()
            elif self.flows is not None:
                self.flows.stop()  # nobody listens: the event ring is not read
            if packets:
                self._start_reading()
                self.step()
            else:
                self.reading = False  # nobody listens: no ring read until someone subscribes
            if packets or flows:
                await asyncio.sleep(poll_s)
                continue
            self._wakeup.clear()
            # (not wait_for: on 3.11 it can swallow a cancellation that meets the wake-up)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_tick - time.monotonic())):
                    await self._wakeup.wait()

    def _start_reading(self) -> None:
        """The first subscriber after an idle spell: live delivery starts at the ring's head,
        now, before the session's `subscribed` reply is sent (earlier packets: `since`); the
        same for the flow event ring."""
        flows = self.flows
        if (
            flows is not None
            and flows.cursor is None
            and any(conn.session.subscribed_flows for conn in self.connections)
        ):
            flows.start()
            self._wakeup.set()
        if not self.reading and any(c.session.subscribed_packets for c in self.connections):
            self.reader = self.ring.reader("latest")
            self.reading = True
            self._wakeup.set()

    def shutdown(self) -> None:
        for conn in list(self.connections):
            conn.session.shutdown()
            conn.wake.set()

    def tick(self, now: float) -> None:
        self.sensors.refresh()
        try:
            self.stats = self.stats_series.read()
            self.status = self.status_block.read()
        except LeirEyeError as exc:  # a writer died mid-update; try again next tick
            log.debug("tick: %s", exc)
        self.fleet_status = self.fleet.read()
        self._revoke_stale()
        for conn in list(self.connections):
            conn.session.tick(now, self.stats, self.status, self.fleet_status)
            conn.wake.set()
        self.registry.publish_counters(self.counters())

    def _revoke_stale(self) -> None:
        """When the users (view) changed, close the connections whose user is gone, renamed, has
        a new password or sees other sensors (one `stat` per tick otherwise). A users file that
        does not load refuses new tokens but cuts no open connection: a typo must not end every
        session."""
        users = self.authenticator.users
        users.refresh()
        if users.version == self._users_version:
            return
        self._users_version = users.version
        if users.error is not None:
            return
        for conn in list(self.connections):
            principal = conn.session.principal
            if principal is None or conn.session.closed is not None:
                continue
            user = users.get(principal.id)
            if (
                user is None
                or user.username != principal.username
                or user.generation != principal.generation
                or user.sensors != principal.sensors
            ):
                log.info("closing a connection of %r: removed, renamed, new password or sensors",
                         principal.username)  # fmt: skip
                conn.session.revoke()
                conn.wake.set()

    def _clock_stepped(self, delta: float) -> None:
        for conn in self.connections:
            conn.session.clock_stepped(delta)

    def tick_status(self) -> None:
        """Read the capture status now (an API request must not answer with a stale one)."""
        try:
            self.status = self.status_block.read()
        except LeirEyeError as exc:
            log.debug("status: %s", exc)

    def counters(self) -> dict[str, int]:
        live = self.connections
        return {
            "connections": len(live),
            "messages_sent": self.closed_sent + sum(c.sent for c in live),
            "packets_delivered": self.delivered,
            "packets_encoded": self.encoded,
            "client_dropped": self.closed_dropped + sum(c.session.dropped for c in live),
            "ring_lost": self.lost,
            "http_requests": self.http_requests,
        }

    def step_flows(self) -> None:
        """Hand the flow events published since the last step to the flows subscribers."""
        if self.flows is not None:
            self.flows.step(list(self.connections), time.monotonic())

    def step(self) -> None:
        """Read the new batch; advance replays to the hub's cursor, past that batch; fan the
        batch out to the sessions that were live before this step."""
        batch = self.reader.read(READ_MAX)
        if batch.lost:
            self.lost += batch.lost
            log.warning(
                "web worker %d fell behind the ring: %d lost", self.worker_index, batch.lost
            )
        groups = self._live_groups()
        for conn in list(self.connections):
            self._advance_replay(conn)
        if groups and (len(batch.records) or batch.lost):
            self._fanout(groups, batch.records, batch.lost)

    def _live_groups(self) -> dict[PacketFilter, list[Connection]]:
        groups: dict[PacketFilter, list[Connection]] = defaultdict(list)
        for conn in self.connections:
            session = conn.session
            if session.filter is not None and session.subscribed_packets and not session.replaying:
                groups[session.filter].append(conn)
        return groups

    def _fanout(
        self, groups: dict[PacketFilter, list[Connection]], records: np.ndarray, lost: int
    ) -> None:
        """Each group's run: the JSON of the rows some JSON subscriber wants (encoded once for
        all groups), the records when some subscriber of the group wants binary columns."""
        self.sensors.resolve(records["sensor"])
        masks = {flt: flt.mask(records) for flt in groups}
        json_masks = [m for flt, m in masks.items() if not _all_columns(groups[flt])]
        rows = np.flatnonzero(np.logical_or.reduce(json_masks)) if json_masks else _NO_ROWS
        messages = self.encode(records[rows]) if rows.size else []
        self.encoded += len(messages)
        position = np.full(len(records), -1, dtype=np.intp)
        position[rows] = np.arange(rows.size)
        for flt, conns in groups.items():
            picked = np.flatnonzero(masks[flt])
            if not picked.size and not lost:
                continue
            json = not _all_columns(conns)
            columns = any(conn.session.columns for conn in conns)
            run = PacketRun(
                records["seq"][picked],
                [messages[i] for i in position[picked].tolist()] if json else None,
                records[picked] if columns else None,
            )
            for conn in conns:
                conn.session.deliver_run(run, lost=lost)
                conn.wake.set()
            self.delivered += len(run) * len(conns)

    def encode(self, records: np.ndarray) -> list[str]:
        """`packet` messages of these records (with `sensor` at a fleet central)."""
        sensors = self.sensors
        return encode_packets(records, sensors.json_names() if sensors.central else None)

    def _advance_replay(self, conn: Connection) -> None:
        """Feed a resuming session from its own reader up to the hub's cursor, at most what its
        outbox takes now; hand it to the live groups when it has caught up."""
        session = conn.session
        if session.resume_from is not None:  # a (new) `since`: start over from there
            start = max(1, session.resume_from + 1)
            conn.replay = conn.from_store = None
            store = self.packet_store
            if session.from_store and store is not None and start < self.ring.whole_from:
                pps = self.config.limits.store_replay_pps
                conn.from_store = StoreReplay(store, start, pps, time.monotonic())
            else:
                conn.replay = self.ring.reader(min(start, self.reader.cursor))
            session.resume_from = None
        if conn.from_store is not None and not self._advance_store_replay(conn):
            return
        replay = conn.replay
        if replay is None:
            return
        end = self.reader.cursor  # the first id live delivery will bring
        flt = session.filter
        while flt is not None and session.replaying and replay.cursor < end:
            room = session.outbox_room()
            if room <= 0:
                break  # the client reads slowly: go on next step, never skip replayed packets
            batch = replay.read(min(REPLAY_CHUNK, room, end - replay.cursor))
            if batch.lost:
                session.replay_lost(batch.lost)
            records = batch.records
            self.sensors.resolve(records["sensor"])
            rows = np.flatnonzero(flt.mask(records)) if len(records) else np.empty(0, np.intp)
            if rows.size:
                picked = records[rows]
                messages = None if session.columns else self.encode(picked)
                session.deliver_run(PacketRun(picked["seq"], messages, picked))
            if not len(records) and not batch.lost:
                break
        if replay.cursor >= end or flt is None or not session.replaying:
            conn.replay = None
            session.replay_done()
        conn.wake.set()

    def _advance_store_replay(self, conn: Connection) -> bool:
        """Feed the session from the packet store (`storereplay.py`); True when the ring
        replay has taken over (`conn.replay`)."""
        replay, session = conn.from_store, conn.session
        assert replay is not None
        flt = session.filter
        margin = max(1, self.ring.capacity // 4)
        if flt is not None and session.replaying:
            now = time.monotonic()
            if not replay.done(self.ring.whole_from, self.reader.cursor, margin, now):
                replay.step(session, flt.mask, self._stored_through, now)
            if not replay.done(self.ring.whole_from, self.reader.cursor, margin, now):
                conn.wake.set()
                return False
            conn.replay = self.ring.reader(min(replay.next_id, self.reader.cursor))
        conn.from_store = None
        return True

    def _stored_through(self) -> int:
        """How far the packet store is complete (`ring/storemark.py`); 0 while the frame
        segments are not there (a replay then waits, and the ring takes over)."""
        if self._store_mark is None:
            segments = self.store.segments()
            if segments is None:
                return 0
            self._store_mark = StoreMark(self.ring, segments)
        return self._store_mark.read()

    def health(self, scope: list[SensorState] | None = None) -> dict[str, Any]:
        """`GET /health` for a caller with a token (a stranger only gets `status`). For a user
        limited to some sensors (`scope`: theirs), the capture counters are theirs, and the
        ring and shards, which count every sensor's records, are left out."""
        status = self.status
        if status is not None and scope is not None:
            status = narrow_status(status, scope)
        view = capture_view(status) if status is not None else None
        health: dict[str, Any] = {
            "status": health_word(status),
            "worker": self.worker_index,
            "pid": os.getpid(),
            "capture": {
                "state": view.state if view else "unknown",
                "is_capturing": bool(view and view.is_capturing),
                "interface": view.interface if view else None,
                "packets_captured": view.packets_captured if view else 0,
            },
            "connections": len(self.connections),
        }
        if scope is not None:
            return health
        health["capture"]["shards"] = self._shard_health()
        health["ring"] = {
            "capacity": self.ring.capacity,
            "fill": round(self.ring.fill, 4),
            "last_id": self.ring.last_id,
            "shards": self.ring.shards,
        }
        health["flows"] = self.flows.health() if self.flows is not None else {"enabled": False}
        return health

    def _shard_health(self) -> list[dict[str, Any]]:
        """Each capture shard's own counters (the `status` message carries their sum)."""
        try:
            shards = self.status_block.read_all()
        except LeirEyeError:
            return []
        laps = getattr(self.reader, "lapped", [0] * len(shards))
        views = [capture_view(status) for status in shards]
        return [
            {"shard": k, "pid": v.pid, "state": v.state, "packets_captured": v.packets_captured,
             "kernel_drops": v.kernel_drops, "if_drops": v.if_drops,
             "decode_errors": v.decode_errors, "ring_laps": laps[k] if k < len(laps) else 0}
            for k, v in enumerate(views)
        ]  # fmt: skip


_NO_ROWS: Final = np.empty(0, dtype=np.intp)


def _all_columns(conns: list[Connection]) -> bool:
    return all(conn.session.columns for conn in conns)


def health_word(status: CaptureStatus | None) -> str:
    """`ok`, or `unhealthy` (HTTP 503) while the capture status is unreadable or in error. A
    capture stopped on request, or a replay that reached its end, is healthy."""
    return "ok" if status is not None and status.state != CaptureState.ERROR else "unhealthy"


def _exit_if_failed(task: asyncio.Task[None]) -> None:
    """A worker whose hub loop died would keep accepting connections and stream nothing: exit
    instead, so the supervisor restarts it and clients reconnect (and resume with `since`)."""
    if task.cancelled() or task.exception() is None:
        return
    log.critical("hub loop failed; exiting so the supervisor restarts this worker",
                 exc_info=task.exception())  # fmt: skip
    os._exit(ExitCode.ERROR)
