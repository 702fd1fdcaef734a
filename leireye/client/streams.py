"""The subscriptions of one client and the routing of server messages to them.

A client has at most one packets, one stats and one flows subscription (the server keeps one
of each per connection). `Subscriptions` builds their subscribe messages (packets resume with
`since` = the last id received), matches each `subscribed` or `error` answer to the oldest
subscribe still unanswered (the server answers in order), and hands packets, gaps, stats and
flow events to the feeds the caller iterates. Packets that arrive between a subscribe and its
`subscribed` still belong to the previous subscription and are not handed over; the resume
replays what the new one wants.

Each stream also keeps its first answer (`live`): the client's `subscribe_packets` and
`subscribe_stats` return once the server confirmed the subscription, so that traffic the caller
causes afterwards is sure to be in the stream, and raise if it was refused instead.

Flow events do not resume: a flows stream subscribed again after a reconnect starts with a
`reconnect` gap (events may be missing), and `dropped` notices of a `flow_*` reason go to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Final

from leireye.client.columns import arrays_of, packets_of
from leireye.client.core import FLOWS_RECONNECT_GAP_TEXT, RECONNECT_GAP_TEXT, Gap, ResumeCursor
from leireye.client.errors import ClientError, SubscriptionError
from leireye.client.feed import Feed, FeedClosed
from leireye.wire import (
    FORMAT_COLUMNS,
    Dropped,
    ErrorMessage,
    FlowMessage,
    PacketColumns,
    PacketMessage,
    PacketsMessage,
    ServerMessage,
    StatsData,
    StatsMessage,
    Subscribed,
)

log = logging.getLogger("leireye.client")

PACKET_FEED_ITEMS: Final = 10_000
STATS_FEED_ITEMS: Final = 64
FLOW_FEED_ITEMS: Final = 10_000
# `error` codes that announce a close rather than answer a subscribe.
_NOT_ANSWERS: Final = frozenset(
    {"idle_timeout", "too_many_connections", "not_reading", "message_too_big", "internal_error"}
)


class FirstAnswer:
    """The first answer to a stream's subscribe. `wait()` returns once the server confirmed it
    (`subscribed`), or raises the reason it never will be: the refusal (`SubscriptionError`),
    the client's failure, or a `ClientError` when the client was closed. Answers after the first
    (each reconnect subscribes again) change nothing: the stream went live once, and the
    resume keeps it so."""

    def __init__(self) -> None:
        self._answered = asyncio.Event()
        self._error: BaseException | None = None

    def confirm(self) -> None:
        self._answered.set()

    def refuse(self, error: BaseException) -> None:
        if not self._answered.is_set():
            self._error = error
            self._answered.set()

    async def wait(self) -> None:
        await self._answered.wait()
        if isinstance(self._error, FeedClosed):
            raise ClientError("the client was closed before the subscription was confirmed")
        if self._error is not None:
            raise self._error


class PacketStream:
    """`binary`: ask for `format: "columns"` (binary batches); `columns`: hand them over as
    dicts of arrays (`columns.arrays_of`) rather than one `PacketData` per packet."""

    def __init__(
        self,
        filters: dict[str, str | int | list[str]],
        batch: bool,
        cursor: ResumeCursor,
        *,
        binary: bool = False,
        columns: bool = False,
    ) -> None:
        self.filters, self.batch, self.cursor = filters, batch, cursor
        self.binary, self.columns = binary or columns, columns
        self.feed: Feed[Any] = Feed(PACKET_FEED_ITEMS)
        self.live = FirstAnswer()
        self.sent = False  # subscribed on some connection already
        self.confirmed = False  # `subscribed` came back on this connection: packets are ours

    def end(self, error: BaseException) -> None:
        """No more items after those queued: `error` is raised after them (and by `live`)."""
        self.feed.fail(error)
        self.live.refuse(error)


class StatsStream:
    def __init__(self, interval_ms: int | None) -> None:
        self.interval_ms = interval_ms
        self.feed: Feed[StatsData] = Feed(STATS_FEED_ITEMS)
        self.live = FirstAnswer()
        self.confirmed = False

    def end(self, error: BaseException) -> None:
        self.feed.fail(error)
        self.live.refuse(error)


class FlowStream:
    def __init__(self, filters: dict[str, str | int], interval_ms: int | None) -> None:
        self.filters, self.interval_ms = filters, interval_ms
        self.feed: Feed[FlowMessage | Gap] = Feed(FLOW_FEED_ITEMS)
        self.live = FirstAnswer()
        self.sent = False
        self.confirmed = False

    def end(self, error: BaseException) -> None:
        self.feed.fail(error)
        self.live.refuse(error)


Stream = PacketStream | StatsStream | FlowStream


class Subscriptions:
    def __init__(self) -> None:
        self.packets: PacketStream | None = None
        self.stats: StatsStream | None = None
        self.flows: FlowStream | None = None
        self._pending: deque[Stream] = deque()

    def active(self) -> list[Stream]:
        return [s for s in (self.packets, self.stats, self.flows) if s is not None]

    def new_connection(self) -> None:
        self._pending.clear()
        for stream in self.active():
            stream.confirmed = False

    def fail(self, error: ClientError) -> None:
        for stream in self.active():
            stream.end(error)

    def finish(self) -> None:
        """The client was closed: the iterations end, a `subscribe_*` still waiting raises."""
        for stream in self.active():
            stream.end(FeedClosed())

    async def subscribe_message(self, stream: Stream) -> dict[str, Any]:
        """The subscribe to send for `stream` (now awaiting its answer). A packets stream that
        has no id to resume from on a later connection first gets a `reconnect` gap."""
        if isinstance(stream, StatsStream):
            options = {} if stream.interval_ms is None else {"interval_ms": stream.interval_ms}
            message: dict[str, Any] = {"type": "subscribe", "channel": "stats", "options": options}
        elif isinstance(stream, FlowStream):
            if stream.sent:
                await stream.feed.put(Gap("reconnect", None, FLOWS_RECONNECT_GAP_TEXT))
            stream.sent = True
            options = {} if stream.interval_ms is None else {"interval_ms": stream.interval_ms}
            message = {"type": "subscribe", "channel": "flows", "filters": stream.filters,
                       "options": options}  # fmt: skip
        else:
            since = stream.cursor.since()
            if since is None and stream.sent:
                await stream.feed.put(Gap("reconnect", None, RECONNECT_GAP_TEXT))
            stream.sent = True
            wanted: dict[str, Any] = {"batch": stream.batch}
            if stream.binary:
                wanted = {"format": FORMAT_COLUMNS}
            message = {"type": "subscribe", "channel": "packets", "filters": stream.filters,
                       "options": wanted, "since": since}  # fmt: skip
        stream.confirmed = False
        self._pending.append(stream)
        return message

    async def route(self, message: ServerMessage | PacketColumns) -> bool:
        """Hand `message` to its stream; False when it is none of theirs (status, auth, pong,
        an error that announces a close)."""
        packets = self.packets if self.packets is not None and self.packets.confirmed else None
        flows = self.flows if self.flows is not None and self.flows.confirmed else None
        if isinstance(message, FlowMessage):
            if flows is not None:
                await flows.feed.put(message)
        elif isinstance(message, Dropped) and message.reason.startswith("flow_"):
            if flows is not None:
                await flows.feed.put(Gap(message.reason, message.count, message.message))
        elif isinstance(message, PacketColumns):
            if packets is not None:
                await _route_columns(message, packets)
        elif isinstance(message, PacketsMessage | PacketMessage):
            if packets is not None:
                batch = message.data if isinstance(message, PacketsMessage) else [message.data]
                for packet in batch:
                    if packets.cursor.accept(packet.id):
                        await packets.feed.put(packet)
        elif isinstance(message, Dropped):
            if packets is not None:
                after = packets.cursor.last_id
                await packets.feed.put(Gap(message.reason, message.count, message.message, after))
        elif isinstance(message, StatsMessage):
            if self.stats is not None:
                self.stats.feed.put_latest(message.data)
        elif isinstance(message, Subscribed):
            if self._pending:
                stream = self._pending.popleft()
                stream.confirmed = True
                stream.live.confirm()
        elif isinstance(message, ErrorMessage) and message.code not in _NOT_ANSWERS:
            if not self._pending:
                return False
            field = message.field if isinstance(message.field, str) else None
            text = f"subscribe refused: {message.message}"
            error = SubscriptionError(text, code=message.code, field=field)
            self._pending.popleft().end(error)
        else:
            return False
        return True


async def _route_columns(message: PacketColumns, packets: PacketStream) -> None:
    """A binary batch: as arrays (the rows after the cursor), or packet by packet."""
    if not packets.columns:
        for packet in packets_of(message):
            if packets.cursor.accept(packet.id):
                await packets.feed.put(packet)
        return
    arrays = arrays_of(message)
    last = packets.cursor.last_id
    if last is not None and len(arrays["id"]) and int(arrays["id"][0]) <= last:
        keep = arrays["id"] > last
        arrays = {name: column[keep] for name, column in arrays.items()}
    if len(arrays["id"]):
        packets.cursor.accept(int(arrays["id"][-1]))
        await packets.feed.put(arrays)
