"""The flow process: read every shard of the ring into one flow table, publish, hand ended flows
and minute summaries to the sink.

One table for all shards (`MergedReader`), not one per capture shard: with `fanout_mode: hash`
the kernel keeps a connection on one shard, but `lb` and `cpu` spread the packets of one
connection over several, and even `hash` puts the two directions of a flow on different shards
on some kernels (the hash is not symmetric everywhere). One table sees every packet of a flow in
id order, so there is nothing to merge; it costs one core for the flow process, which keeps up
with several capture processes because it does no per-packet Python work (`table.py`).

The supervisor creates the view segment (`view.py`) and keeps it across restarts; this process
attaches it writable. A restarted process resumes after the last record id its predecessor
published (`read_id`, refreshed with each snapshot), so the packets still in the ring are read
again; the flows that were active in the dead process are lost (never ended to the sink), and
counted in `lost_on_restart`. Records the ring overwrote before they were read are counted in
`ring_lost`; flows ended early for room in `evicted`. All counters are in the view's header
and in a log line every `LOG_EVERY_S`.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from leireye.config import Config
from leireye.errors import RingError
from leireye.ring.ring import Start
from leireye.ring.shards import attach_when_ready
from leireye.stopping import StopEvent, StopFlag, stop_on_sigterm

from .compact import Compactor
from .live import LiveState
from .model import FlowSink
from .store import FlowStoreWriter
from .view import ENDED, STARTED, UPDATED, FlowView, host_rows

log = logging.getLogger("leireye.flows")

READ_MAX: Final = 65536
READS_PER_TICK: Final = 16
LOG_EVERY_S: Final = 10.0
POLL_S: Final = 0.02  # between reads when the ring is drained: 20 ms of traffic waits at most
EXPIRE_EVERY_S: Final = 0.5


def open_sink(config: Config) -> FlowStoreWriter:
    """The one place the flow process's sink is made: the flow store in `history.dir`."""
    history = config.history
    return FlowStoreWriter(
        config.history_dir,
        flows_days=history.flows_days,
        max_gb=history.max_gb,
        flush_s=history.flush_s,
    )


def run_flows(
    config: Config, ring_name: str, view_name: str, stop: StopEvent | None = None
) -> None:
    """Run until `stop` is set or SIGTERM arrives."""
    with stop_on_sigterm(stop) as stopping:
        view = FlowView.attach(view_name, writable=True)
        try:
            _run(config, ring_name, view, stopping)
        finally:
            view.close()


def _run(config: Config, ring_name: str, view: FlowView, stopping: StopFlag) -> None:
    cfg = config.flows
    period = cfg.update_ms / 1000
    ring = attach_when_ready(ring_name, stopping, period, log)
    if ring is None:
        return
    sink = open_sink(config)
    compactor = Compactor(sink)  # merges each finished hour's files, in a thread
    compactor.start()
    state = LiveState(cfg)
    counters = {name: view.counter(name) for name in ("ring_lost", "lost_on_restart", "starts")}
    resume = view.counter("read_id")
    if counters["starts"]:
        counters["lost_on_restart"] += view.counter("active_flows")
    counters["starts"] += 1
    start: Start = "oldest" if counters["starts"] == 1 else (resume + 1 if resume else "latest")
    try:
        reader = ring.reader(start, with_raw=True)
    except RingError:
        reader = ring.reader("oldest", with_raw=True)
    log.info("flows: reading ring %s from id %d", ring_name, reader.cursor)
    table = state.table
    last_wall = time.monotonic_ns()
    next_publish = next_update = next_log = next_expire = time.monotonic()
    updated_since = 0
    try:
        while not stopping():
            full = False
            for _ in range(READS_PER_TICK):
                batch = reader.read(READ_MAX)
                counters["ring_lost"] += batch.lost
                if len(batch.records):
                    state.feed(batch.records, batch.raw)
                    last_wall = time.monotonic_ns()
                full = len(batch.records) == READ_MAX
                if not full:
                    break
            tick = time.monotonic()
            if tick >= next_expire:  # a scan of the whole table: not at every poll
                state.expire(table.now_ns + (time.monotonic_ns() - last_wall))
                next_expire = tick + EXPIRE_EVERY_S
            _emit(state, view, sink)
            if cfg.event_interval_s and tick >= next_update:
                slots = table.touched_since(updated_since)
                updated_since = table.now_ns
                view.add_events(UPDATED, table.rows(slots[: cfg.events]))
                next_update = tick + cfg.event_interval_s
            if tick >= next_publish:
                _publish(state, view, counters, reader.cursor - 1)
                next_publish = tick + period
            if tick >= next_log:
                log.info("%s", log_line(state, counters))
                next_log = tick + LOG_EVERY_S
            if not full:
                stopping.wait(POLL_S)
    finally:
        state.end_all()
        _emit(state, view, sink, flush=True)
        compactor.stop()
        sink.flush()
        sink.close()
        _publish(state, view, counters, reader.cursor - 1)
        log.info("flows stopped: %s", log_line(state, counters))
        ring.close()


def _emit(state: LiveState, view: FlowView, sink: FlowSink, flush: bool = False) -> None:
    started = state.take_started()
    if len(started):
        view.add_events(STARTED, state.table.rows(started))
    ended = state.take_ended()
    if len(ended):
        view.add_events(ENDED, ended)
        sink.add_rows(ended)
    for hosts, apps in state.take_minutes(flush):
        sink.add_minute(hosts, apps)


def _publish(state: LiveState, view: FlowView, counters: dict[str, int], read_id: int) -> None:
    table, hosts, cfg = state.table, state.hosts, state.config
    counts = table.counts
    view.publish(
        table.top_rows(cfg.snapshot_flows),
        host_rows(hosts, cfg.snapshot_hosts),
        {
            **counters,
            "snapshot_ns": table.now_ns,
            "active_flows": table.active,
            "active_hosts": hosts.active,
            "records": counts["records"],
            "not_ip": counts["not_ip"],
            "started": counts["started"],
            "ended": counts["ended"],
            "evicted": counts["evicted"],
            "collisions": counts["collisions"] + hosts.counts["collisions"],
            "overflow": counts["overflow"],
            "hosts_evicted": hosts.counts["evicted"],
            "read_id": max(0, read_id),
        },
    )


def log_line(state: LiveState, counters: dict[str, int]) -> str:
    c = state.table.counts
    return (
        f"flows active={state.table.active} hosts={state.hosts.active} records={c['records']} "
        f"started={c['started']} ended={c['ended']} evicted={c['evicted']} "
        f"overflow={c['overflow']} collisions={c['collisions']} "
        f"ring_lost={counters['ring_lost']} lost_on_restart={counters['lost_on_restart']} "
        f"hosts_evicted={state.hosts.counts['evicted']}"
    )
