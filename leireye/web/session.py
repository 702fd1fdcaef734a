"""One WebSocket connection's protocol, as a sans-IO state machine.

Why it is shaped so
-------------------
Everything a connection must get right (authentication and its deadlines, re-auth before the
token expires, subscriptions and filters, resume, the rate limit, the idle timeout, the stats
clock, status changes, a slow client that must cost only itself) is decided here, with no socket,
task or clock inside. The shell feeds inputs and drains outputs:

    inputs   receive(text, now)             a client frame
             tick(now, stats, status)       the clock, with the latest stats and capture status
             deliver(ids, messages, lost)   packets matching `filter` (encoded once, shared)
             deliver_run(run, lost)         the same as a `frames.PacketRun`, whose batch
                                            frames are made once for its whole group
             deliver_flows(run, lost)       `flow` events matching `flow_filter` (and its
                                            group's throttle), encoded once, shared
             replay_lost(n), replay_done()  the two ends of a resume (below)
             shutdown()                     the server is stopping
    outputs  next_outgoing()                str (a JSON text frame), then one Close, then None
             next_item()                    the same, a shared batch as its `frames.Frame`

So every rule is a unit test, and Hypothesis can throw any sequence of inputs at a session and
check what must always hold: nothing raises, at most one Close, nothing after it, bounded queues,
no message over `max_message_bytes`.

The states are AWAITING_AUTH -> OPEN -> CLOSED. `TRANSITIONS` is the one table of which client
message types each state accepts and what handles them; a message type a state does not accept
is answered, never acted on (before authentication: `error` `auth_required`). Peer misbehaviour
gives an `error` (the connection stays usable) or an explanatory message plus a close; it never
raises. Our own misuse (a callback raising) does raise.

The clock is Unix time in seconds (`time.time()`), the clock of a token's `exp`; a clock that
goes back is treated as standing still. A step of the system clock is announced by the shell
(`clock_stepped`), and the timers move with it.

Resume, from the hub's side: `subscribe` with `since` sets `resume_from = since` and
`replaying`. The hub takes `resume_from` (sets it to None), reads the ring from `since + 1` in
steps of at most `outbox_room()` records, calls `replay_lost(n)` when the ring already overwrote
some (the client gets one `dropped` notice before the packets that follow), passes the matches to
`deliver`, and calls `replay_done()` when it reaches its live cursor; only then does it deliver
live packets to the session. Ids at or below the last one queued are dropped on the way in, so an
overlap between replay and live never duplicates a packet. A new `subscribe` with `since` during
a replay sets `resume_from` again: the hub should restart the replay from there. With
`options.from_store` (`from_store`), the hub feeds the part the ring no longer holds from the
packet store first (`storereplay.py`), through the same two ends.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
from msgspec import UNSET

from leireye.accounts.principal import Admit, Authenticate, AuthFailure, Principal
from leireye.config import LimitsConfig
from leireye.fleet.status import PublisherStatus
from leireye.ring.status import CaptureStatus
from leireye.stats.layout import StatsSnapshot
from leireye.text import truncate
from leireye.web.columns import column_batches
from leireye.web.encode import PACKET_MESSAGE_BOUND, PACKETS_PREFIX, utf8_size
from leireye.web.feeds import Feeds
from leireye.web.filters import FilterError, PacketFilter, parse_filters
from leireye.web.flowfilter import FlowFilter, parse_flow_filters
from leireye.web.frames import Frame, PacketRun
from leireye.web.messages import (
    QUOTED_CHARS,
    auth_success,
    flows_options,
    packets_options,
    stats_options,
)
from leireye.web.outbox import Outbox
from leireye.web.ratelimit import RateLimiter, Verdict
from leireye.web.sensors import SensorDirectory
from leireye.wire import (
    AUTH_ERROR_TEXT,
    CHANNEL_FLOWS,
    CHANNEL_PACKETS,
    CHANNEL_STATS,
    FORMAT_COLUMNS,
    REVOKED_TEXT,
    AuthError,
    AuthMessage,
    Close,
    CloseCode,
    DropReason,
    ErrorCode,
    ErrorMessage,
    PingMessage,
    Pong,
    ProtocolError,
    ServerMessage,
    Subscribed,
    SubscribeMessage,
    SubscribeOptions,
    Unsubscribed,
    UnsubscribeMessage,
    decode_client,
    encode,
)

FLOW_MESSAGE_BOUND: Final = 4096
"""No `flow` message is larger (its texts are cut to their `FLOW_ROW` columns; invalid UTF-8
becomes U+FFFD, control characters JSON escapes): below this `max_message_bytes`, each one is
measured."""

CONTROL_QUEUE_MIN: Final = 64
"""Unread control messages allowed (at least; twice the message rate when that is higher)."""


class State(enum.Enum):
    AWAITING_AUTH = "awaiting_auth"
    OPEN = "open"
    CLOSED = "closed"


class Session:
    def __init__(
        self,
        *,
        limits: LimitsConfig,
        authenticate: Authenticate,
        admit: Admit,
        now: float,
        auth_timeout_s: float = 10.0,
        query_token: str | None = None,
        query_auth: Principal | AuthFailure | None = None,
        outbox_messages: int = 4096,
        flows_enabled: bool = False,
        sensors: SensorDirectory | None = None,
    ) -> None:
        self.limits = limits
        # The fleet's sensors (`sensors.py`): at a central, what `sensor` filters resolve to
        # and what packets, stats and status carry; on a lone sensor, its own name only.
        self.sensors = sensors
        self.flows_enabled = flows_enabled  # a flow process runs (`flows.enabled`)
        self._authenticate = authenticate
        self._admit = admit
        self._now = now
        self._auth_deadline = now + auth_timeout_s
        self._last_heard = now
        self._state = State.AWAITING_AUTH
        self.principal: Principal | None = None
        self.admitted = False  # holds one of the user's connection slots
        self.auth_failure: AuthFailure | None = None  # the last refused token, for the log
        self.closed: Close | None = None
        self.filter: PacketFilter | None = None  # set while subscribed to packets
        self.batch_mode = False
        self.columns = False  # `format: "columns"`: binary batches (`columns.py`)
        self.resume_from: int | None = None  # a `since` for the hub to take (see above)
        self.from_store = False  # `options.from_store`: a `since` past the ring from the store
        self.replaying = False  # from `subscribe` with `since` until `replay_done()`
        self.stream_lost = 0  # ring records this stream skipped (overwritten first)
        self._last_id = 0  # the highest packet id queued or passed over
        control_limit = max(CONTROL_QUEUE_MIN, 2 * limits.messages_per_second)
        self._outbox = Outbox(outbox_messages, control_limit)
        # Flow events: an outbox of their own, drained in turn with the packets after control.
        self.flow_filter: FlowFilter | None = None  # set while subscribed to flows
        self.flow_interval_ms = 0
        self.flows_lost = 0  # flow events the worker's reader was lapped on, while subscribed
        self._flow_outbox = Outbox(outbox_messages, 0, DropReason.FLOW_SLOW_CONSUMER)
        self._flows_turn = False
        self._limiter = RateLimiter(limits.messages_per_second)
        self._feeds = Feeds(limits, self._push, self._render, self._counters)
        if query_token is not None:
            self._on_auth(AuthMessage(query_token))
        elif query_auth is not None:  # a ticket the shell already redeemed
            self._admit_principal(self._check_result(query_auth))

    # -- what the shell and the hub read -------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def subscribed_packets(self) -> bool:
        """Subscribed to packets (live, or replaying)."""
        return self._state is State.OPEN and self.filter is not None

    @property
    def subscribed_flows(self) -> bool:
        return self._state is State.OPEN and self.flow_filter is not None

    @property
    def flows_dropped(self) -> int:
        """Flow events this client missed because it read too slowly (or too large to send)."""
        return self._flow_outbox.dropped

    @property
    def dropped(self) -> int:
        """Packets this client missed because it read too slowly."""
        return self._outbox.dropped

    @property
    def queued(self) -> int:
        """Packets waiting in the outbox."""
        return self._outbox.queued

    @property
    def control_queued(self) -> int:
        return self._outbox.control_size

    def outbox_room(self) -> int:
        """Packets the outbox takes now without skipping: what one replay step may bring."""
        return self._outbox.room()

    def next_outgoing(self) -> str | bytes | Close | None:
        """The next message to send (text, or bytes for a binary frame), or the Close to end
        with, or None for nothing now."""
        item = self.next_item()
        return item.payload if isinstance(item, Frame) else item

    def next_item(self) -> str | Frame | Close | None:
        """`next_outgoing`, with a batch as the `Frame` its group shares (for the shell).
        Control first; then packets and flow events take turns, so neither starves the other."""
        flows = self._flow_outbox
        if (
            len(flows)
            and self.closed is None
            and not self._outbox.control_size
            and (self._flows_turn or not len(self._outbox))
        ):
            self._flows_turn = False
            return flows.pop()
        self._flows_turn = True
        return self._outbox.pop()

    # -- inputs --------------------------------------------------------------------------------

    def receive(self, frame: str | bytes, now: float) -> None:
        """A client frame: text as str, or bytes that should hold UTF-8 JSON."""
        if self.closed is not None:
            return
        self._advance(now)
        if self._check_deadlines():
            return
        limit = self.limits.max_message_bytes
        if len(frame) > limit or (isinstance(frame, str) and utf8_size(frame) > limit):
            error = ErrorMessage(ErrorCode.MESSAGE_TOO_BIG, f"Messages are limited to {limit} B")
            self._close(CloseCode.MESSAGE_TOO_BIG, "message too big", [error])
            return
        self._last_heard = self._now
        verdict = self._limiter.check(self._now)
        if verdict is Verdict.ABUSE:
            error = ErrorMessage(ErrorCode.RATE_LIMITED, "Too many messages for too long")
            self._close(CloseCode.RATE_LIMITED, "rate limit", [error])
            return
        if verdict is Verdict.REJECT_NOTIFY:
            per_second = self.limits.messages_per_second
            text = f"More than {per_second} messages per second; messages are being dropped"
            self._send(ErrorMessage(ErrorCode.RATE_LIMITED, text))
        if verdict is not Verdict.ACCEPT:
            return
        message = decode_client(frame)
        if isinstance(message, ProtocolError):
            self._send(message.to_message())
            return
        handler = TRANSITIONS.get((self._state, type(message)))
        if handler is None:
            text = 'Not authenticated: send {"type": "auth", "token": "..."} first'
            self._send(ErrorMessage(ErrorCode.AUTH_REQUIRED, text))
            return
        handler(self, message)

    def tick(
        self,
        now: float,
        stats: StatsSnapshot | None = None,
        status: CaptureStatus | None = None,
        fleet: PublisherStatus | None = None,
    ) -> None:
        """The clock, with the latest stats snapshot, capture status and publisher status
        (a sensor in a fleet) when there are."""
        if self.closed is not None:
            return
        self._advance(now)
        self._feeds.update(stats, status, fleet)
        if self._check_deadlines():
            return
        idle = self.limits.idle_timeout_s
        if self._now - self._last_heard >= idle:
            text = f"No message for {idle:g} s; send a ping to keep the connection open"
            error = ErrorMessage(ErrorCode.IDLE_TIMEOUT, text)
            self._close(CloseCode.IDLE_TIMEOUT, "idle timeout", [error])
            return
        self._feeds.tick(self._now)

    def deliver(
        self, ids: np.ndarray | Sequence[int], messages: Sequence[str], *, lost: int = 0
    ) -> None:
        """Packets that passed `filter`, ids ascending: live ones, or replayed ones between
        the hub taking `resume_from` and `replay_done()`. `lost`: ring records the hub's live
        reader was lapped on just before them. Ignored unless subscribed to packets.

        Live packets that do not fit in the outbox are skipped and counted; replayed ones
        should never overflow it (the hub reads at most `outbox_room()` records at a time), and
        are skipped and counted the same way if they do."""
        self.deliver_run(PacketRun(ids, messages), lost=lost)

    def deliver_run(self, run: PacketRun, *, lost: int = 0) -> None:
        """`deliver`, with the packets as a run that the other subscribers of the same group
        get too: when this session takes it whole, it queues the run's shared frames."""
        if not self.subscribed_packets:
            return
        if lost > 0:
            self.stream_lost += lost
            self._outbox.notice(DropReason.RING, lost)
        run = self._fresh(run)
        if not len(run):
            return
        self._last_id = int(run.ids[-1])
        batcher = (
            self._column_batches if self.columns else self._batches if self.batch_mode else None
        )
        taken = self._outbox.push_replay(run, batcher) if self.replaying else 0
        if taken < len(run):
            self._outbox.push_live(run if not taken else run.take(slice(taken, None)), batcher)

    def deliver_flows(self, run: PacketRun, *, lost: int = 0) -> None:
        """Flow events (`flow` messages, event numbers ascending) that passed `flow_filter` and
        the group's throttle. `lost`: events the worker's reader was lapped on before them
        (matching or not). What does not fit in the flow outbox is skipped and counted."""
        if not self.subscribed_flows:
            return
        if lost > 0:
            self.flows_lost += lost
            self._flow_outbox.notice(DropReason.FLOW_RING, lost)
        messages = run.messages
        limit = self.limits.max_message_bytes
        if messages is not None and limit < FLOW_MESSAGE_BOUND:
            keep = [i for i, m in enumerate(messages) if utf8_size(m) <= limit]
            self._flow_outbox.dropped += len(run) - len(keep)
            run = run if len(keep) == len(run) else run.take(keep)
        self._flow_outbox.push_live(run, None)

    def _batches(self, run: PacketRun) -> list[Frame]:
        return run.json_batches(self.limits.max_message_bytes)

    def _column_batches(self, run: PacketRun) -> list[Frame]:
        sensors = self.sensors
        if sensors is None or not sensors.central:
            return run.binary_batches(column_batches, self.limits.max_message_bytes)
        return run.binary_batches(sensors.column_batcher(), self.limits.max_message_bytes)

    def replay_lost(self, lost: int) -> None:
        """`lost` records after `since` were overwritten before the replay could read them:
        the client is told so before the replayed packets that follow."""
        if self.subscribed_packets and self.replaying and lost > 0:
            self.stream_lost += lost
            self._outbox.notice(DropReason.RESUME, lost)

    def replay_done(self) -> None:
        """The replay reached the hub's live cursor: from now on `deliver` brings live packets."""
        self.replaying = False

    def clock_stepped(self, delta: float) -> None:
        """The system clock jumped by `delta` seconds (`clock.WallClock`): the idle and
        authentication deadlines, the stats interval and the rate limit move with it, so a step
        neither fires them nor holds them back. A token's expiry is a date: it stays."""
        self._now += delta
        self._last_heard += delta
        self._auth_deadline += delta
        self._feeds.shift(delta)
        self._limiter.shift(delta)

    def revoke(self) -> None:
        """The user was removed or renamed, or changed password, since this connection
        authenticated: `auth_error` and close 4001, as for a refused token."""
        if self.closed is None and self.principal is not None:
            self._close(CloseCode.AUTH_FAILED, "token revoked", [AuthError(REVOKED_TEXT)])

    def shutdown(self, reason: str = "server shutting down") -> None:
        """Close with 1001; `reason` is cut to the 123 UTF-8 bytes a close frame allows."""
        cut = reason.encode("utf-8", "replace")[:123].decode("utf-8", "ignore")
        self._close(CloseCode.GOING_AWAY, cut, [])

    # -- handlers (see TRANSITIONS) ------------------------------------------------------------

    def _on_auth(self, message: AuthMessage) -> None:
        self._admit_principal(self._check_token(message.token))

    def _admit_principal(self, principal: Principal | None) -> None:
        if principal is None:
            return
        if not self._admit(principal):
            per_user = self.limits.connections_per_user
            name = truncate(principal.username, QUOTED_CHARS)
            text = f"Too many connections for user {name!r} (at most {per_user})"
            error = ErrorMessage(ErrorCode.TOO_MANY_CONNECTIONS, text)
            self._close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections", [error])
            return
        self.admitted = True
        self.principal = principal
        self._state = State.OPEN
        sensors = self.sensors
        allowed = principal.sensors
        if sensors is not None and sensors.central:
            self._feeds.central = lambda: sensors.states(allowed)
        if allowed is not None and (sensors is None or not sensors.sees_all(allowed)):
            self._feeds.scope = lambda: [] if sensors is None else sensors.states(allowed)
        self._send(self._auth_success())
        self._feeds.start(self._now)

    def _on_reauth(self, message: AuthMessage) -> None:
        principal = self._check_token(message.token)
        if principal is None:
            return
        assert self.principal is not None
        if principal.id != self.principal.id:
            text = "The token is for another user; the connection keeps its current one"
            self._send(ErrorMessage(ErrorCode.USER_MISMATCH, text, "token"))
            return
        if principal.sensors != self.principal.sensors:  # the sensors it may see changed
            self._close(CloseCode.AUTH_FAILED, "token revoked", [AuthError(REVOKED_TEXT)])
            return
        self.principal = principal
        self._send(self._auth_success())

    def _on_subscribe(self, message: SubscribeMessage) -> None:
        if message.channel == CHANNEL_PACKETS:
            self._subscribe_packets(message)
        elif message.channel == CHANNEL_STATS:
            self._subscribe_stats(message)
        elif message.channel == CHANNEL_FLOWS:
            self._subscribe_flows(message)
        else:
            self._channel_error(message.channel)

    def _subscribe_packets(self, message: SubscribeMessage) -> None:
        allowed = None if self.principal is None else self.principal.sensors
        parsed = parse_filters(message.filters, self.sensors, allowed)
        if isinstance(parsed, FilterError):
            self._send(ErrorMessage(ErrorCode.INVALID_FILTER, parsed.message, parsed.field))
            return
        options = packets_options(message.options or {})
        if isinstance(options, ProtocolError):
            self._send(options.to_message())
            return
        batch, fmt, self.from_store = options
        since = message.since
        self.filter, self.batch_mode, self.columns = parsed, batch, fmt == FORMAT_COLUMNS
        self.resume_from, self.replaying = since, since is not None
        if since is not None:
            self._last_id = min(self._last_id, since)
        echo = Subscribed(
            CHANNEL_PACKETS,
            parsed.as_dict(),
            SubscribeOptions(batch=batch, format=fmt if self.columns else UNSET),
            UNSET if since is None else since,
        )
        self._send(echo)

    def _subscribe_stats(self, message: SubscribeMessage) -> None:
        if message.filters is not None:
            text = "filters apply to the packets channel only"
            self._send(ErrorMessage(ErrorCode.INVALID_FILTER, text, "filters"))
            return
        if message.since is not None:
            text = "since applies to the packets channel only"
            self._send(ErrorMessage(ErrorCode.INVALID_MESSAGE, text, "since"))
            return
        interval = stats_options(message.options or {}, self._feeds.interval_ms)
        if isinstance(interval, ProtocolError):
            self._send(interval.to_message())
            return
        applied = self._feeds.subscribe_stats(interval, self._now)
        self._send(Subscribed(CHANNEL_STATS, options=SubscribeOptions(interval_ms=applied)))

    def _subscribe_flows(self, message: SubscribeMessage) -> None:
        if not self.flows_enabled:
            text = "The flows channel is off: this sensor runs no flow process (flows.enabled)"
            self._send(ErrorMessage(ErrorCode.INVALID_CHANNEL, text, "channel"))
            return
        allowed = None if self.principal is None else self.principal.sensors
        if allowed is not None and (self.sensors is None or not self.sensors.sees_all(allowed)):
            text = "Flows mix every sensor's traffic: a user limited to some sensors gets none"
            self._send(ErrorMessage(ErrorCode.INVALID_CHANNEL, text, "channel"))
            return
        if message.since is not None:
            text = "since applies to the packets channel only"
            self._send(ErrorMessage(ErrorCode.INVALID_MESSAGE, text, "since"))
            return
        parsed = parse_flow_filters(message.filters)
        if isinstance(parsed, FilterError):
            self._send(ErrorMessage(ErrorCode.INVALID_FILTER, parsed.message, parsed.field))
            return
        interval = flows_options(message.options or {})
        if isinstance(interval, ProtocolError):
            self._send(interval.to_message())
            return
        if self.flow_filter is not None:  # a new subscription: nothing of the old one queued
            self._flow_outbox.purge_stream()
        self.flow_filter, self.flow_interval_ms = parsed, interval
        options = SubscribeOptions(interval_ms=interval)
        self._send(Subscribed(CHANNEL_FLOWS, parsed.as_dict(), options))

    def _on_unsubscribe(self, message: UnsubscribeMessage) -> None:
        if message.channel == CHANNEL_PACKETS:
            self.filter, self.batch_mode, self.columns = None, False, False
            self.resume_from, self.replaying = None, False
            self._outbox.purge_stream()
        elif message.channel == CHANNEL_STATS:
            self._feeds.unsubscribe_stats()
        elif message.channel == CHANNEL_FLOWS:
            self.flow_filter, self.flow_interval_ms = None, 0
            self._flow_outbox.purge_stream()
        else:
            self._channel_error(message.channel)
            return
        self._send(Unsubscribed(message.channel))

    def _on_ping(self, message: PingMessage) -> None:
        pong = Pong(message.id)
        if len(encode(pong)) > self.limits.max_message_bytes:
            text = "The ping id is too large to echo"
            self._send(ErrorMessage(ErrorCode.INVALID_MESSAGE, text, "id"))
        else:
            self._send(pong)

    # -- helpers -------------------------------------------------------------------------------

    def _check_token(self, token: str) -> Principal | None:
        """The principal of a valid token; otherwise `auth_error`, close, and None."""
        return self._check_result(self._authenticate(token, self._now))

    def _check_result(self, result: Principal | AuthFailure) -> Principal | None:
        if isinstance(result, Principal) and (
            result.expires_at is None or result.expires_at > self._now
        ):
            return result
        self.auth_failure = result if isinstance(result, AuthFailure) else AuthFailure("expired")
        self._close(CloseCode.AUTH_FAILED, "authentication failed", [AuthError(AUTH_ERROR_TEXT)])
        return None

    def _check_deadlines(self) -> bool:
        """Close for a missed authentication deadline or an expired token; True if closed."""
        if self._state is State.AWAITING_AUTH and self._now >= self._auth_deadline:
            error = AuthError("Authentication timeout")
            self._close(CloseCode.AUTH_TIMEOUT, "authentication timeout", [error])
        elif self._state is State.OPEN and self.principal is not None:
            expires = self.principal.expires_at
            if expires is not None and self._now >= expires:
                error = AuthError("Token expired")
                self._close(CloseCode.TOKEN_EXPIRED, "token expired", [error])
        return self.closed is not None

    def _advance(self, now: float) -> None:
        if now > self._now:
            self._now = now

    def _close(self, code: CloseCode, reason: str, final: Sequence[ServerMessage]) -> None:
        if self.closed is not None:
            return
        self.closed = Close(int(code), reason)
        self._state = State.CLOSED
        self._feeds.stop()
        self._flow_outbox.purge_stream()
        self._outbox.finish([self._render(m) for m in final], self.closed)

    def _send(self, message: ServerMessage) -> None:
        self._push(self._render(message))

    def _push(self, item: str | Callable[[], str | None]) -> None:
        if not self._outbox.push_control(item):
            error = ErrorMessage(ErrorCode.NOT_READING, "Too many unread replies")
            self._close(CloseCode.NOT_READING, "client not reading", [error])

    def _render(self, message: ServerMessage) -> str:
        data = encode(message)
        if len(data) > self.limits.max_message_bytes:
            text = f"A {type(message).__name__} message exceeded max_message_bytes"
            data = encode(ErrorMessage(ErrorCode.INTERNAL_ERROR, text))
        return data.decode()

    def _counters(self) -> tuple[int, int]:
        return self.stream_lost, self.dropped

    def _auth_success(self) -> ServerMessage:
        assert self.principal is not None
        return auth_success(
            self.principal,
            self.limits,
            outbox_messages=self._outbox.capacity,
            stats_interval_ms=self._feeds.default_interval_ms,
        )

    def _channel_error(self, channel: str) -> None:
        shown = truncate(channel, QUOTED_CHARS)
        text = f"Unknown channel {shown!r}; expected 'packets', 'stats' or 'flows'"
        self._send(ErrorMessage(ErrorCode.INVALID_CHANNEL, text, "channel"))

    def _fresh(self, run: PacketRun) -> PacketRun:
        """Leave out packets at or below the last id queued or passed over, and (only with a
        max_message_bytes below PACKET_MESSAGE_BOUND) packets too large to send, counted as
        dropped. The run itself (and its shared frames) when nothing is left out."""
        if len(run) and int(run.ids[0]) <= self._last_id:
            start = int(np.searchsorted(run.ids, self._last_id, side="right"))
            run = run.take(slice(start, None))
        limit = self.limits.max_message_bytes
        if self.batch_mode:
            limit -= len(PACKETS_PREFIX) + 2
        messages = run.messages
        if limit >= PACKET_MESSAGE_BOUND or not len(run) or messages is None or self.columns:
            return run
        keep = [i for i, m in enumerate(messages) if utf8_size(m) <= limit]
        self._outbox.dropped += len(run) - len(keep)
        return run if len(keep) == len(run) else run.take(keep)


_Handler = Callable[[Session, Any], None]
TRANSITIONS: Final[dict[tuple[State, type], _Handler]] = {
    (State.AWAITING_AUTH, AuthMessage): Session._on_auth,
    (State.OPEN, AuthMessage): Session._on_reauth,
    (State.OPEN, SubscribeMessage): Session._on_subscribe,
    (State.OPEN, UnsubscribeMessage): Session._on_unsubscribe,
    (State.OPEN, PingMessage): Session._on_ping,
}
"""The allowed (state, client message type) pairs and their handlers; nothing else is acted on."""
