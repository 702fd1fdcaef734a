"""The messages an authenticated connection gets without asking: `stats` and `status`.

`stats` come every `interval_ms` (1000 by default, as the spec's clients expect; `subscribe`
to `stats` changes it within the configured range, `unsubscribe` stops them). `status` comes
right after authentication and whenever the capture's state, interface, BPF filter, start time
or error changes; counters alone never trigger one.

Both are queued as renderers, not text: the message is made when the socket is ready for it,
from the latest snapshot, and at most one of each waits in the outbox, so a client that reads
slowly gets fresh numbers rather than a backlog of old ones.

At a fleet central (`central` given: the sensor states this connection's user may see), `stats`
carry `by_sensor` and `status` carries `central` and `sensors`, and a sensor seen for the first
time or changing state (live, silent) sends `status` again. For a user limited to some sensors
(`scope` given) the totals in `stats` and the counters in `status` are those of their sensors
(`sensors.narrow_stats`, `sensors.narrow_status`), never the central's. On a sensor that
publishes into a fleet, `status` carries `fleet` (its publisher's state), sent again when that
changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec

from leireye.config import LimitsConfig
from leireye.fleet.model import SensorState
from leireye.fleet.status import PublisherStatus
from leireye.ring.status import CaptureStatus
from leireye.stats.layout import StatsSnapshot
from leireye.web.messages import clamp_interval, stats_message
from leireye.web.sensors import by_sensor, fleet_key, narrow_stats, narrow_status, sensor_infos
from leireye.web.statusview import status_key, status_message
from leireye.wire import ServerMessage

DEFAULT_STATS_INTERVAL_MS: Final = 1000

Push = Callable[[Callable[[], str | None]], None]
"""Queues a renderer as a control message."""
Render = Callable[[ServerMessage], str]
Counters = Callable[[], tuple[int, int]]
"""This connection's (stream_lost, client_dropped)."""
Central = Callable[[], list[SensorState]]
"""At a fleet central: the sensors this connection's user may see, as the table shows them now."""


class Feeds:
    def __init__(
        self, limits: LimitsConfig, push: Push, render: Render, counters: Counters
    ) -> None:
        self.limits = limits
        self.default_interval_ms = clamp_interval(DEFAULT_STATS_INTERVAL_MS, limits)
        self.interval_ms = self.default_interval_ms
        self.stats_on = True
        self.active = False  # the connection is authenticated and open
        self._push = push
        self._render = render
        self._counters = counters
        self._now = 0.0
        self._next_stats_at = 0.0
        self._stats: StatsSnapshot | None = None
        self._stats_queued = False
        self._status: CaptureStatus | None = None
        self._fleet: PublisherStatus | None = None
        self._status_sent: tuple[object, ...] | None = None
        self._status_queued = False
        self.central: Central | None = None  # set by the session at a central, once authenticated
        # set by the session for a user limited to some sensors: those whose sums they get
        self.scope: Central | None = None

    def start(self, now: float) -> None:
        """Authenticated: status now if one is known, stats from one interval on."""
        self.active = True
        self._now = now
        self._next_stats_at = now + self.interval_ms / 1000
        self._queue_status()

    def stop(self) -> None:
        self.active = False

    def shift(self, delta: float) -> None:
        """The clock stepped by `delta` seconds: the next stats keep their distance."""
        self._now += delta
        self._next_stats_at += delta

    def subscribe_stats(self, interval_ms: int, now: float) -> int:
        """Stats on, every `interval_ms` clamped to the configured range (returned)."""
        self.interval_ms = clamp_interval(interval_ms, self.limits)
        self.stats_on = True
        self._next_stats_at = now + self.interval_ms / 1000
        return self.interval_ms

    def unsubscribe_stats(self) -> None:
        self.stats_on = False

    def update(
        self,
        stats: StatsSnapshot | None,
        status: CaptureStatus | None,
        fleet: PublisherStatus | None = None,
    ) -> None:
        if stats is not None:
            self._stats = stats
        if status is not None:
            self._status = status
        if fleet is not None:
            self._fleet = fleet

    def tick(self, now: float) -> None:
        """Queue what is due at `now`."""
        self._now = now
        if not self.active:
            return
        self._queue_status()
        if (
            self.stats_on
            and now >= self._next_stats_at
            and self._stats is not None
            and not self._stats_queued
        ):
            self._stats_queued = True
            self._push(self._render_stats)
            interval = self.interval_ms / 1000
            self._next_stats_at += interval
            if self._next_stats_at <= now:  # fell behind: keep the interval from now on
                self._next_stats_at = now + interval

    def _queue_status(self) -> None:
        status = self._status
        if status is None or self._status_queued or self._status_key(status) == self._status_sent:
            return
        self._status_queued = True
        self._push(self._render_status)

    def _render_stats(self) -> str | None:
        self._stats_queued = False
        if self._stats is None or not self.stats_on or not self.active:
            return None
        stream_lost, client_dropped = self._counters()
        snapshot = self._stats if self.scope is None else narrow_stats(self._stats, self.scope())
        message = stats_message(
            snapshot, stream_lost=stream_lost, client_dropped=client_dropped, now=self._now
        )
        if self.central is not None:
            data = msgspec.structs.replace(message.data, by_sensor=by_sensor(self.central()))
            message = msgspec.structs.replace(message, data=data)
        return self._render(message)

    def _render_status(self) -> str | None:
        self._status_queued = False
        if self._status is None or not self.active:
            return None
        self._status_sent = self._status_key(self._status)
        status = self._status if self.scope is None else narrow_status(self._status, self.scope())
        message = status_message(status, self._fleet)
        if self.central is not None:
            sensors = sensor_infos(self.central())
            data = msgspec.structs.replace(message.data, central=True, sensors=sensors)
            message = msgspec.structs.replace(message, data=data)
        return self._render(message)

    def _status_key(self, status: CaptureStatus) -> tuple[object, ...]:
        key = status_key(status, self._fleet)
        return key if self.central is None else (*key, fleet_key(self.central()))
