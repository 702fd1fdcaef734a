"""The `flows` channel of one web worker: the flow process's event ring read once per poll.

Why it is shaped so
-------------------
The flow process publishes started, updated and ended events in a ring in shared memory
(`leireye/flows/view.py`). While at least one session of this worker is subscribed to flows, the
hub calls `step` every poll: one `events_after` read for all sessions, each distinct (filter,
`interval_ms`) group filtered once over the batch (`FlowFilter.mask`) and throttled once (its
`Throttle` holds when each flow last went through), the union of the events some group wants
turned into `flow` messages once (`rows.to_flows` is the costly part, per event), and each
session handed the same run of messages (`frames.PacketRun`, event numbers for ids). While no
session is subscribed the ring is not read, and the first subscriber starts at its head (as
for packets, no history: the REST API has the flows that ended before).

A worker that falls more than the ring's length behind gets `missed` from the read; every
subscriber is told (a `dropped` notice, reason `flow_ring`) where the events are missing. A
session whose own flow outbox is full skips and counts (`flow_slow_consumer`): one slow client
never holds back the read, nor another client.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from leireye.errors import LeirEyeError
from leireye.flows.rows import to_flows
from leireye.flows.view import EVENT_KINDS, FlowView
from leireye.web.flowfilter import FlowFilter, Throttle
from leireye.web.frames import PacketRun
from leireye.web.messages import flow_data
from leireye.wire import FlowMessage, encode

if TYPE_CHECKING:
    from leireye.web.hub import Connection

READ_MAX: Final = 8192  # events per read: more wait for the next poll

GroupKey = tuple[FlowFilter, int]


def flow_messages(kinds: np.ndarray, rows: np.ndarray) -> list[str]:
    """The `flow` messages of events (kinds from `flows.view`, `FLOW_ROW` rows). The ISO
    times are made for the whole batch at once (one at a time they cost more than the rest)."""
    starts, lasts = (_iso_ms(rows[name]) for name in ("first_ns", "last_ns"))
    return [
        encode(FlowMessage(EVENT_KINDS[kind], flow_data(flow, start, last))).decode()
        for kind, flow, start, last in zip(
            kinds.tolist(), to_flows(rows), starts, lasts, strict=True
        )
    ]


def _iso_ms(ns: np.ndarray) -> list[str]:
    """`encode.iso_ms` of every value."""
    ms = (ns // 1_000_000).astype("datetime64[ms]")
    return [text + "Z" for text in np.datetime_as_string(ms, unit="ms").tolist()]


class FlowFeed:
    def __init__(self, view: FlowView, max_flows: int) -> None:
        self.view = view
        self.max_flows = max_flows  # bounds each group's throttle (`flows.max_active`)
        self.cursor: int | None = None  # None: nobody listens, the ring is not read
        self.encoded = 0
        self.lost = 0
        self._throttles: dict[GroupKey, Throttle] = {}

    def start(self) -> None:
        """The first subscriber after an idle spell: from the events published from now on."""
        if self.cursor is None:
            self.cursor = self.view.event_seq

    def stop(self) -> None:
        self.cursor = None
        self._throttles.clear()

    def health(self) -> dict[str, Any]:
        """The flow process as `GET /health` shows it: whether it runs (its last writer's pid
        is alive), how often it started, its active flows and the events it published."""
        try:
            counters = self.view.snapshot(retry_s=0.01)[2]
        except LeirEyeError:  # a writer died mid-publish: it will be restarted
            counters = dict.fromkeys(("writer_pid", "starts", "active_flows"), 0)
        pid = counters["writer_pid"]
        return {
            "enabled": True,
            "running": pid > 0 and Path(f"/proc/{pid}").exists(),
            "starts": counters["starts"],
            "active_flows": counters["active_flows"],
            "events": self.view.event_seq,
        }

    def step(self, conns: Iterable[Connection], now: float) -> None:
        """Read the events after the cursor and hand each subscribed session its share."""
        self.start()
        assert self.cursor is not None
        groups: dict[GroupKey, list[Connection]] = defaultdict(list)
        for conn in conns:
            session = conn.session
            if session.flow_filter is not None and session.subscribed_flows:
                groups[session.flow_filter, session.flow_interval_ms].append(conn)
        for key in [k for k in self._throttles if k not in groups]:
            del self._throttles[key]
        events = self.view.events_after(self.cursor, READ_MAX)
        self.cursor = events.cursor
        self.lost += events.missed
        if not groups or not (len(events.seqs) or events.missed):
            return
        picks: dict[GroupKey, np.ndarray] = {}
        wanted = np.zeros(len(events.seqs), dtype=np.bool_)
        for key in groups:
            flt, interval = key
            rows = np.flatnonzero(flt.mask(events.rows))
            if interval and rows.size:
                throttle = self._throttles.get(key)
                if throttle is None:
                    throttle = self._throttles[key] = Throttle(interval, self.max_flows)
                rows = rows[throttle.passes(events.kinds[rows], events.rows["uid"][rows], now)]
            picks[key] = rows
            wanted[rows] = True
        union = np.flatnonzero(wanted)
        messages = flow_messages(events.kinds[union], events.rows[union]) if union.size else []
        self.encoded += len(messages)
        position = np.full(len(events.seqs), -1, dtype=np.intp)
        position[union] = np.arange(union.size)
        for key, conns_of in groups.items():
            rows = picks[key]
            if not rows.size and not events.missed:
                continue
            run = PacketRun(events.seqs[rows], [messages[i] for i in position[rows].tolist()])
            for conn in conns_of:
                conn.session.deliver_flows(run, lost=events.missed)
                conn.wake.set()
