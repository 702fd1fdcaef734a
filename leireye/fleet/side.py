"""What the publisher sends besides packets: stats, status and ended flows (`fleet.publish.*`).

Each is a JSON object with `sensor` (`model.json_message`), published from this task so that a
slow acknowledgement never holds up the packet batches:

- `stats`: the stats series' snapshot (`StatsSnapshot`'s fields), once a second;
- `status`: `capture` (the capture status, summed over the shards) and `publisher` (this
  process's `PublisherStatus`), once a second and at once when either changes state;
- `flows`: `{"sensor", "run", "missed", "flows": [...]}` (`flowmsg.encode_flows`), the flows
  that ended since the last message (each the flow store's `Flow` fields plus `sensor`),
  every second when there are
  any, as many messages (each within the server's max_payload) as it takes to catch up. These
  are data, not snapshots: each message waits for its acknowledgement and is sent again (same
  `Nats-Msg-Id`) until it gets one; flow events the flow process's event ring overwrote before
  they were read are counted in `missed` and in the status;
- `minutes` (on the `flows` subject and stream, header `LE-Content: minutes`):
  `{"sensor", "missed", "hosts": [...], "apps": [...]}` (`minutemsg.encode_minute_messages`),
  the host and app minutes of each file the flow process's store wrote since the last one sent
  (`minutes.MinuteFiles`), each file in as many messages as fit `max_payload`, every second when
  there are any. Data like the flows: each message waits for its acknowledgement, a file is
  sent again (same `Nats-Msg-Id`s, `S:minutes:<file>:<part>`) until all of it is acknowledged,
  then the cursor moves past it; rows too big for any message are counted in `missed` and in
  the status's `minutes_missed`, a file gone or unreadable counts one there.

Stats and status are snapshots: while NATS is away they are not sent (`messages_skipped`
counts them), the next one says everything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread  # noqa: F401  (asyncio.to_thread's pool: lazily, after the drop)
import logging
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
import nats.errors
import pyarrow as pa

from leireye.config import Config
from leireye.errors import LeirEyeError
from leireye.fleet.flowmsg import encode_flows
from leireye.fleet.minutemsg import encode_minute_messages
from leireye.fleet.minutes import Mark, MinuteFiles
from leireye.fleet.model import H_CONTENT, H_RUN, MINUTES, MSG_ID, json_message, subject
from leireye.flows.rows import to_flows
from leireye.flows.view import ENDED, FlowView
from leireye.ring.shardstatus import StatusSet
from leireye.ring.status import CaptureStatus
from leireye.stats.series import StatsSeries

if TYPE_CHECKING:
    from leireye.fleet.publisher import Publisher

log = logging.getLogger("leireye.fleet")

TICK_S: Final = 0.1
EVERY_S: Final = 1.0
FLOWS_MAX: Final = 4096  # flow events read per message
FLOW_MESSAGES_MAX: Final = 64  # flow messages a second at most
H_FLOW_CURSOR: Final = "LE-Flow-Cursor"
MINUTE_FILES_MAX: Final = 16  # minute files sent a second at most


class SidePublisher:
    def __init__(
        self,
        config: Config,
        publisher: Publisher,
        status_name: str,
        stats_name: str,
        flows_name: str | None,
    ) -> None:
        self.config = config
        self.publish = config.fleet.publish
        self.publisher = publisher
        self.sensor = publisher.sensor
        self.names = (status_name, stats_name, flows_name)
        self.statuses: StatusSet | None = None
        self.series: StatsSeries | None = None
        self.view: FlowView | None = None
        self.flows_message: tuple[bytes, dict[str, str], int, int] | None = None
        self.minutes: MinuteFiles | None = None
        self._stopped = False
        self._status_key: tuple[object, ...] = ()

    def stop(self) -> None:
        self._stopped = True

    async def run(self) -> None:
        next_second = 0.0
        try:
            while not self._stopped:
                now = time.monotonic()
                self._attach()
                second = now >= next_second
                if second:
                    next_second = now + EVERY_S
                if self.publisher.connected and self.publisher.prepared:  # streams there
                    await self._tick(second)
                elif second:
                    skipped = int(self.publish.stats) + int(self.publish.status)
                    status = self.publisher.status
                    self.publisher.update(messages_skipped=status.messages_skipped + skipped)
                await asyncio.sleep(TICK_S)
        finally:
            self._close()

    def _attach(self) -> None:
        status_name, stats_name, flows_name = self.names
        try:
            if self.statuses is None and self.publish.status:
                self.statuses = StatusSet.attach(status_name, self.publisher.ring.shards)
            if self.series is None and self.publish.stats:
                self.series = StatsSeries.attach(stats_name)
            if self.view is None and self.publish.flows and flows_name:
                self.view = FlowView.attach(flows_name)
            if self.minutes is None and self.view is not None:  # the flow process runs
                since_ns = time.time_ns() - int(self.config.fleet.streams.max_age_h * 3600e9)
                self.minutes = MinuteFiles(self.config.history_dir, since_ns)
        except LeirEyeError as exc:
            log.debug("fleet: waiting for a segment: %s", exc)

    def _close(self) -> None:
        for part in (self.statuses, self.series, self.view):
            if isinstance(part, StatusSet):
                for block in part.blocks:
                    block.close()
            elif part is not None:
                part.close()

    async def _tick(self, second: bool) -> None:
        nc = self.publisher.nc
        assert nc is not None
        try:
            if self.publish.status:
                capture = self.statuses.read() if self.statuses is not None else None
                key = self._key(capture)
                if second or key != self._status_key:
                    self._status_key = key
                    await nc.publish(subject(self.sensor, "status"), self._status(capture))
            if second and self.publish.stats and self.series is not None:
                snapshot = self.series.read()
                if snapshot.timestamp_ns:
                    payload = {"sensor": self.sensor, **msgspec.to_builtins(snapshot)}
                    await nc.publish(subject(self.sensor, "stats"), json_message(payload))
            if second and self.view is not None:
                for _ in range(FLOW_MESSAGES_MAX):  # until caught up with the event ring
                    await self._flows()
                    if self.publisher.status.flow_cursor >= self.view.event_seq:
                        break
            if second and self.minutes is not None:  # file work on a thread: packets go on
                files = self.minutes
                for mark in await asyncio.to_thread(files.new, MINUTE_FILES_MAX):
                    await self._minutes(files, mark)
        except (TimeoutError, nats.errors.Error, LeirEyeError, OSError) as exc:
            log.debug("fleet: side message not sent: %s", exc)

    def _key(self, capture: CaptureStatus | None) -> tuple[object, ...]:
        s = self.publisher.status
        state = (capture.state, capture.capturing, capture.last_error) if capture else ()
        return (*state, s.connected, s.last_error, tuple(s.stream_mismatch))

    def _status(self, capture: CaptureStatus | None) -> bytes:
        payload: dict[str, Any] = {
            "sensor": self.sensor,
            "capture": msgspec.to_builtins(capture) if capture is not None else None,
            "publisher": msgspec.to_builtins(self.publisher.status),
        }
        return json_message(payload)

    async def _flows(self) -> None:
        """Send the pending flows message, or make the next one; it stays pending until acked."""
        js = self.publisher.js
        assert js is not None and self.view is not None
        if self.flows_message is None:
            self.flows_message = self._next_flows()
            if self.flows_message is None:
                return
            if not self.flows_message[0]:  # only starts and updates: nothing to send
                self._flows_done()
                return
        body, headers, _, _ = self.flows_message
        timeout = self.config.fleet.ack_timeout_s
        await js.publish(subject(self.sensor, "flows"), body, timeout=timeout,
                         headers=dict(headers))  # fmt: skip
        self._flows_done()

    def _next_flows(self) -> tuple[bytes, dict[str, str], int, int] | None:
        """The next flows message (body, headers, cursor after it, events missed), made to fit
        the server's max_payload (fewer events when too big); None: no new event. An ended
        flow that alone does not fit is counted as missed, never sent."""
        assert self.view is not None and self.publisher.nc is not None
        cursor = self.publisher.status.flow_cursor
        limit = self.publisher.nc.max_payload - 4096
        count = FLOWS_MAX
        while True:
            events = self.view.events_after(cursor, count)
            if events.cursor == cursor:
                return None
            ended = events.rows[events.kinds == ENDED]
            missed = events.missed
            flows = to_flows(ended)
            run = self.publisher.run_id
            body = encode_flows(self.sensor, run, missed, flows) if flows else b""
            if len(body) <= limit:
                break
            if count == 1:  # one flow too big for any message
                missed, body = missed + len(flows), b""
                break
            count = max(1, count // 2)
        headers = {
            MSG_ID: f"{self.sensor}:{self.publisher.run_id}:flows:{events.cursor}",
            H_RUN: str(self.publisher.run_id),
            H_FLOW_CURSOR: str(events.cursor),
        }
        return body, headers, events.cursor, missed

    async def _minutes(self, files: MinuteFiles, mark: Mark) -> None:
        """Send one minute file (all its messages, each acknowledged), then move past it."""
        js, nc = self.publisher.js, self.publisher.nc
        assert js is not None and nc is not None
        try:
            hosts, apps = await asyncio.to_thread(files.read, mark)
        except (OSError, pa.ArrowException) as exc:  # gone (retention) or not Parquet
            log.warning("fleet: minute file %s not sent: %s", mark.name, exc)
            status = self.publisher.status
            self.publisher.update(minutes_missed=status.minutes_missed + 1)
            await asyncio.to_thread(files.done, mark)
            return
        limit = nc.max_payload - 4096
        bodies, missed = await asyncio.to_thread(
            encode_minute_messages, self.sensor, hosts, apps, limit
        )
        for part, body in enumerate(bodies):
            headers = {
                MSG_ID: f"{self.sensor}:minutes:{mark.name}:{part}",
                H_RUN: str(self.publisher.run_id),
                H_CONTENT: MINUTES,
            }
            await js.publish(subject(self.sensor, "flows"), body,
                             timeout=self.config.fleet.ack_timeout_s, headers=headers)  # fmt: skip
        status = self.publisher.status
        self.publisher.update(
            minutes_sent=status.minutes_sent + len(hosts) + len(apps) - missed,
            minutes_missed=status.minutes_missed + missed,
        )
        await asyncio.to_thread(files.done, mark)

    def _flows_done(self) -> None:
        assert self.flows_message is not None
        _, _, cursor, missed = self.flows_message
        status = self.publisher.status
        self.publisher.update(
            flow_cursor=cursor, flow_events_missed=status.flow_events_missed + missed
        )
        self.flows_message = None
