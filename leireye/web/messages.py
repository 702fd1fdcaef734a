"""Server messages built from the sensor's own objects, and subscription options checked.

Pure functions between the domain (`Principal`, `StatsSnapshot`, the limits) and the wire schema
in `leireye.wire`; the session decides when to send, these decide what. (The capture status has
its own module, `statusview`, shared with the REST API.)
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from leireye.accounts.principal import Principal
from leireye.config import LimitsConfig
from leireye.flows.model import Flow
from leireye.stats.layout import StatsSnapshot
from leireye.text import truncate
from leireye.web.encode import iso_ms
from leireye.wire import (
    FORMAT_COLUMNS,
    FORMAT_JSON,
    AuthSuccess,
    ErrorCode,
    FlowData,
    LimitsInfo,
    ProtocolError,
    StatsData,
    StatsMessage,
    UserInfo,
)

QUOTED_CHARS: Final = 40
"""At most this many characters of a client's string (a name, a key) are quoted in a reply."""


def stats_message(
    snap: StatsSnapshot, *, stream_lost: int, client_dropped: int, now: float
) -> StatsMessage:
    """`now` (Unix seconds) stamps a snapshot that has no time of its own yet."""
    return StatsMessage(
        StatsData(
            packets_total=snap.packets_total,
            packets_per_second=snap.packets_per_second,
            bytes_per_second=snap.bytes_per_second,
            protocols=snap.protocols,
            bytes_total=snap.bytes_total,
            apps=snap.apps,
            kernel_drops=snap.kernel_drops,
            if_drops=snap.if_drops,
            ring_lost=snap.ring_lost,
            decode_errors=snap.decode_errors,
            stream_lost=stream_lost,
            client_dropped=client_dropped,
            timestamp=iso_ms(snap.timestamp_ns or int(now * 1e9)),
        )
    )


def auth_success(
    principal: Principal, limits: LimitsConfig, *, outbox_messages: int, stats_interval_ms: int
) -> AuthSuccess:
    expires = principal.expires_at
    return AuthSuccess(
        user=UserInfo(principal.id, principal.username, principal.role),
        limits=LimitsInfo(
            connections_per_user=limits.connections_per_user,
            messages_per_second=limits.messages_per_second,
            max_message_bytes=limits.max_message_bytes,
            idle_timeout_s=limits.idle_timeout_s,
            outbox_messages=outbox_messages,
            stats_interval_ms=stats_interval_ms,
            stats_interval_min_ms=limits.stats_interval_min_ms,
            stats_interval_max_ms=limits.stats_interval_max_ms,
        ),
        expires_at=None if expires is None else iso_ms(int(expires * 1e9)),
    )


def clamp_interval(ms: int, limits: LimitsConfig) -> int:
    return min(max(ms, limits.stats_interval_min_ms), limits.stats_interval_max_ms)


def packets_options(options: dict[str, Any]) -> tuple[bool, str, bool] | ProtocolError:
    """The `batch` flag (default false), the `format` (default "json") and the `from_store`
    flag (default false: a `since` older than the ring is served from the packet store) of a
    packets subscription; "columns" (binary batches) is always batched."""
    unknown = _unknown(options, "batch", "format", "from_store")
    if unknown is not None:
        return unknown
    batch = options.get("batch", False)
    if not isinstance(batch, bool):
        return ProtocolError(ErrorCode.INVALID_OPTION, "batch must be true or false", "batch")
    from_store = options.get("from_store", False)
    if not isinstance(from_store, bool):
        text = "from_store must be true or false"
        return ProtocolError(ErrorCode.INVALID_OPTION, text, "from_store")
    fmt = options.get("format", FORMAT_JSON)
    if fmt not in (FORMAT_JSON, FORMAT_COLUMNS):
        text = f"format must be {FORMAT_JSON!r} or {FORMAT_COLUMNS!r}"
        return ProtocolError(ErrorCode.INVALID_OPTION, text, "format")
    return batch or fmt == FORMAT_COLUMNS, fmt, from_store


def flow_data(flow: Flow, start: str | None = None, last: str | None = None) -> FlowData:
    """A `Flow` as the wire shows it: its fields, then `start`, `last` (the ISO texts of
    `first_ns` and `last_ns`: made here unless given) and `duration_ms`. The live flows
    channel is a lone sensor's (its own flow process): no `sensor` there."""
    fields = msgspec.structs.asdict(flow)
    del fields["sensor"]
    return FlowData(
        **fields,
        start=iso_ms(flow.first_ns) if start is None else start,
        last=iso_ms(flow.last_ns) if last is None else last,
        duration_ms=flow.duration_ns // 1_000_000,
    )


def flows_options(options: dict[str, Any]) -> int | ProtocolError:
    """The `interval_ms` of a flows subscription: the least time between two `updated` events
    of one flow (default 0: every one the flow process makes; at most one hour)."""
    unknown = _unknown(options, "interval_ms")
    if unknown is not None:
        return unknown
    interval = options.get("interval_ms", 0)
    if type(interval) is not int or not 0 <= interval <= FLOW_INTERVAL_MAX_MS:
        text = f"interval_ms must be an integer from 0 to {FLOW_INTERVAL_MAX_MS}"
        return ProtocolError(ErrorCode.INVALID_OPTION, text, "interval_ms")
    return interval


FLOW_INTERVAL_MAX_MS: Final = 3_600_000


def stats_options(options: dict[str, Any], current_ms: int) -> int | ProtocolError:
    """The requested `interval_ms` of a stats subscription (unclamped; default: current)."""
    unknown = _unknown(options, "interval_ms")
    if unknown is not None:
        return unknown
    interval = options.get("interval_ms", current_ms)
    if type(interval) is not int:
        return ProtocolError(
            ErrorCode.INVALID_OPTION, "interval_ms must be an integer", "interval_ms"
        )
    return interval


def _unknown(options: dict[str, Any], *allowed: str) -> ProtocolError | None:
    for key in options:
        if key not in allowed:
            shown = truncate(key, QUOTED_CHARS)
            takes = " and ".join(repr(a) for a in allowed)
            return ProtocolError(
                ErrorCode.INVALID_OPTION,
                f"Unknown option {shown!r}; this channel takes {takes}",
                shown,
            )
    return None
