"""The WebSocket wire schema: every message either side may send, as msgspec structs.

This module is the one place that says what goes over `/ws/capture`; the session builds server
messages only from these structs (the per-packet hot path in `encode` writes the same JSON by hand
and its tests decode it back with `PacketMessage`). Messages are JSON text frames, one object each,
tagged by `"type"`.

Client messages (`ClientMessage`, decoded by `decode_client`):

    auth         token: str
    subscribe    channel: "packets" | "stats" | "flows", filters?: object | null,
                 options?: object | null,
                 since?: int >= 0 | null  (packets only: replay the ring after this packet id)
    unsubscribe  channel: "packets" | "stats" | "flows"
    ping         id?: any JSON value, echoed in the pong

Unknown top-level fields are ignored (forward compatibility, and the spec's TypeScript client
sends `filters: undefined`, which JSON drops, or `null` from other clients); unknown keys inside
`filters` and `options` are errors, since a misspelt filter would otherwise silently match
everything.

Server messages (`ServerMessage`; fields past the spec's are additions, and the spec's clients
ignore unknown fields and types):

    auth_success  user {id, username, role}, limits {...}, expires_at: ISO | null
    auth_error    message ("Invalid or expired token", "Authentication timeout", "Token expired")
    subscribed    channel, filters? (packets, flows: as applied), options {batch | format |
                  interval_ms}, since? (echoed when the subscription replays)
    unsubscribed  channel
    packet        data {id, timestamp, src_ip, dst_ip, src_port, dst_port, protocol, length,
                  flags, info, app, ip_version, vlan, sensor (at a fleet central only)}
    packets       data [packet data, ...]  (batch mode, at most max_message_bytes per message)
    packet_columns  (binary frame, msgpack; `options.format: "columns"`) the same fields as
                  `packet` for a batch of packets, column by column (`PacketColumns`)
    stats         data {packets_total, packets_per_second, bytes_per_second, protocols,
                  bytes_total, apps, kernel_drops, if_drops, ring_lost, decode_errors,
                  stream_lost, client_dropped, timestamp, by_sensor (at a fleet central only)}
    status        data {is_capturing, interface, started_at, packets_captured, state, bpf,
                  effective_bpf, kernel_drops, if_drops, error, central and sensors (at a
                  fleet central only)}
    pong          id? (the ping's, when it had one)
    error         code (`ErrorCode`), message, field? (the offending field or filter/option key)
    dropped       reason (`DropReason`), count, message: packets (or flow events, for the
                  `flow_*` reasons) this client will not get, placed in the stream where they
                  are missing
    flow          event ("started" | "updated" | "ended"), data (`FlowData`): the `flows`
                  channel (an addition to the spec)

Close codes (`CloseCode`):

    code  name                   when
    1000  NORMAL                 (reserved for the shell: a normal close it initiates)
    1001  GOING_AWAY             the server is shutting down (`Session.shutdown`)
    1009  MESSAGE_TOO_BIG        a client message over `limits.max_message_bytes`
    4000  IDLE_TIMEOUT           no client message (a ping counts) for `limits.idle_timeout_s`
    4001  AUTH_FAILED            an invalid or expired token (at connect or on re-auth)
    4002  AUTH_TIMEOUT           no successful `auth` within `auth.auth_timeout_s`
    4003  TOKEN_EXPIRED          the token expired during the connection without a re-auth
    4008  TOO_MANY_CONNECTIONS   the user already has `limits.connections_per_user` connections
    4013  NOT_READING            too many replies left unread (the control queue is full)
    4029  RATE_LIMITED           sustained abuse of `limits.messages_per_second`

Every close but 1000/1001/1009 is preceded by an `auth_error` or `error` message saying why.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, UnsetType

from leireye.text import truncate


class CloseCode(enum.IntEnum):
    """WebSocket close codes the session uses; the table is in the module docstring."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    IDLE_TIMEOUT = 4000
    AUTH_FAILED = 4001
    AUTH_TIMEOUT = 4002
    TOKEN_EXPIRED = 4003
    TOO_MANY_CONNECTIONS = 4008
    NOT_READING = 4013
    RATE_LIMITED = 4029


class ErrorCode(enum.StrEnum):
    """The `code` of an `error` message."""

    MALFORMED_JSON = "malformed_json"  # not UTF-8 / not JSON / nested too deeply
    INVALID_MESSAGE = "invalid_message"  # a known type with a missing or mistyped field
    UNKNOWN_TYPE = "unknown_type"  # "type" missing, not a string, or not a client type
    AUTH_REQUIRED = "auth_required"  # anything but `auth` before authentication
    USER_MISMATCH = "user_mismatch"  # a re-auth token of another user (the old one stays)
    INVALID_CHANNEL = "invalid_channel"
    INVALID_FILTER = "invalid_filter"
    INVALID_OPTION = "invalid_option"
    RATE_LIMITED = "rate_limited"  # over messages_per_second: the message was not processed
    TOO_MANY_CONNECTIONS = "too_many_connections"  # then close 4008
    IDLE_TIMEOUT = "idle_timeout"  # then close 4000
    MESSAGE_TOO_BIG = "message_too_big"  # then close 1009
    NOT_READING = "not_reading"  # then close 4013
    INTERNAL_ERROR = "internal_error"  # a server message came out over max_message_bytes


class DropReason(enum.StrEnum):
    """The `reason` of a `dropped` message: packets this client will never receive."""

    RESUME = "resume"  # records after `since` were already overwritten in the ring
    RING = "ring"  # this worker fell a ring's length behind the capture
    SLOW_CONSUMER = "slow_consumer"  # this connection's outbox was full
    # The `flows` channel (counts of flow events, matching the filter or not for `flow_ring`):
    FLOW_RING = "flow_ring"  # this worker fell an event ring's length behind the flow process
    FLOW_SLOW_CONSUMER = "flow_slow_consumer"  # this connection's flow outbox was full


class Close(msgspec.Struct, frozen=True):
    """The one close a session ends with. `reason` is at most 123 UTF-8 bytes (RFC 6455)."""

    code: int
    reason: str


AUTH_ERROR_TEXT: Final = "Invalid or expired token"
# An open connection whose user was removed or renamed, or changed password, since it
# authenticated (then close 4001).
REVOKED_TEXT: Final = "Token revoked: the user was removed or changed password"

# -- client -> server ---------------------------------------------------------------------------

PacketId = Annotated[int, msgspec.Meta(ge=0)]


class AuthMessage(msgspec.Struct, frozen=True, tag="auth", tag_field="type"):
    token: str


class SubscribeMessage(msgspec.Struct, frozen=True, tag="subscribe", tag_field="type"):
    channel: str
    filters: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    since: PacketId | None = None


class UnsubscribeMessage(msgspec.Struct, frozen=True, tag="unsubscribe", tag_field="type"):
    channel: str


class PingMessage(msgspec.Struct, frozen=True, tag="ping", tag_field="type"):
    id: Any | UnsetType = UNSET


ClientMessage = AuthMessage | SubscribeMessage | UnsubscribeMessage | PingMessage
CLIENT_TYPES: Final = ("auth", "subscribe", "unsubscribe", "ping")

CHANNEL_PACKETS: Final = "packets"
CHANNEL_STATS: Final = "stats"
CHANNEL_FLOWS: Final = "flows"
CHANNELS: Final = (CHANNEL_PACKETS, CHANNEL_STATS, CHANNEL_FLOWS)

# -- server -> client ---------------------------------------------------------------------------


class UserInfo(msgspec.Struct, frozen=True):
    id: int
    username: str
    role: str


class LimitsInfo(msgspec.Struct, frozen=True):
    """The limits in force for this connection, so a client can pace itself."""

    connections_per_user: int
    messages_per_second: int
    max_message_bytes: int
    idle_timeout_s: float
    outbox_messages: int  # packets queued for this connection before it starts missing some
    stats_interval_ms: int  # the default interval of `stats`
    stats_interval_min_ms: int
    stats_interval_max_ms: int


class AuthSuccess(msgspec.Struct, frozen=True, tag="auth_success", tag_field="type"):
    """Sent on authentication and again on each successful re-auth. `expires_at`: when the
    token expires (ISO-8601 UTC); send a new `auth` before then to stay connected."""

    user: UserInfo
    limits: LimitsInfo
    expires_at: str | None


class AuthError(msgspec.Struct, frozen=True, tag="auth_error", tag_field="type"):
    message: str


class SubscribeOptions(msgspec.Struct, frozen=True, omit_defaults=True):
    """The applied options: `batch` for packets, `interval_ms` (after clamping) for stats,
    `interval_ms` for flows (the least time between two `updated` events of one flow; 0: each
    one the flow process makes)."""

    batch: bool | UnsetType = UNSET
    interval_ms: int | UnsetType = UNSET
    format: str | UnsetType = UNSET  # packets: "columns" when asked for (JSON is the default)


class Subscribed(msgspec.Struct, frozen=True, tag="subscribed", tag_field="type"):
    """`filters` (packets and flows) as applied: canonical names, normalised networks; `since`
    echoed when the subscription replays."""

    channel: str
    filters: dict[str, str | int | list[str]] | UnsetType = UNSET
    options: SubscribeOptions = SubscribeOptions()
    since: int | UnsetType = UNSET


class Unsubscribed(msgspec.Struct, frozen=True, tag="unsubscribed", tag_field="type"):
    channel: str


class PacketData(msgspec.Struct, frozen=True):
    """One packet. The spec's fields, then additions (`app`, `ip_version`, `vlan`).

    `id` is the ring sequence (use it as `since` to resume); `timestamp` is ISO-8601 UTC with
    milliseconds and `Z`; addresses are null for frames without any (ARP gives its protocol
    addresses); ports are null where the protocol has none; `protocol` is a `Proto` label;
    `length` is the length on the wire; `flags` are TCP flag names in header order (NS CWR ECE
    URG ACK PSH RST SYN FIN); `app` an `App` label or null; `ip_version` 4, 6 or null; `vlan` the
    outer VLAN id or null. `sensor`, at a fleet central only (absent elsewhere): the name of the
    sensor that captured it (null for the rare record whose sensor the central's table does not
    list yet).
    """

    id: int
    timestamp: str
    src_ip: str | None
    dst_ip: str | None
    src_port: int | None
    dst_port: int | None
    protocol: str
    length: int
    flags: list[str]
    info: str
    app: str | None
    ip_version: int | None
    vlan: int | None
    sensor: str | UnsetType | None = UNSET


class PacketMessage(msgspec.Struct, frozen=True, tag="packet", tag_field="type"):
    data: PacketData


class PacketsMessage(msgspec.Struct, frozen=True, tag="packets", tag_field="type"):
    """Batch mode (`options: {"batch": true}`): several packets, oldest first."""

    data: list[PacketData]


FORMAT_JSON: Final = "json"
FORMAT_COLUMNS: Final = "columns"


class PacketColumns(msgspec.Struct, frozen=True, tag="packet_columns", tag_field="type"):
    """A batch of packets in one binary frame (msgpack), column by column: `options.format:
    "columns"`. The same fields as `PacketData`; numbers as little-endian arrays of `count`
    items, texts as an index (`<u4`) into a table of the distinct values (`addresses` serves
    `src_ip` and `dst_ip`). Nulls: ports and `vlan` -1, `ip_version` 0, a table entry None.
    `timestamp_ms` is Unix milliseconds (`timestamp` is its ISO-8601 text). At a fleet central
    only: `sensor` (`<u4` into `sensors`, a name or None)."""

    count: int
    id: bytes  # <u8
    timestamp_ms: bytes  # <i8
    src_port: bytes  # <i4
    dst_port: bytes  # <i4
    length: bytes  # <u4
    ip_version: bytes  # u1
    vlan: bytes  # <i4
    src_ip: bytes  # <u4 into addresses
    dst_ip: bytes  # <u4 into addresses
    protocol: bytes  # <u4 into protocols
    flags: bytes  # <u4 into flag_sets
    info: bytes  # <u4 into infos
    app: bytes  # <u4 into apps
    addresses: list[str | None]
    protocols: list[str]
    flag_sets: list[list[str]]
    infos: list[str]
    apps: list[str | None]
    sensor: bytes | UnsetType = UNSET  # <u4 into sensors (a fleet central only)
    sensors: list[str | None] | UnsetType = UNSET


COLUMN_TYPES: Final = {
    "id": "<u8", "timestamp_ms": "<i8", "src_port": "<i4", "dst_port": "<i4", "length": "<u4",
    "ip_version": "u1", "vlan": "<i4", "src_ip": "<u4", "dst_ip": "<u4", "protocol": "<u4",
    "flags": "<u4", "info": "<u4", "app": "<u4",
}  # fmt: skip
"""The array type of each column of `PacketColumns` (numpy spelling; `struct` letters: the
same sizes, little-endian). `sensor`, at a fleet central only, is `<u4` too."""


FLOW_EVENTS: Final = ("started", "updated", "ended")


class FlowData(msgspec.Struct, frozen=True):
    """One flow (`leireye.flows.model.Flow`'s fields, in its order, but `icmp_id` last), then
    `start` and `last` (ISO-8601 UTC texts of `first_ns` and `last_ns`) and `duration_ms`.
    Counters are of the flow's life so far (for an `active` end: since its previous record)."""

    uid: str
    vlan: int | None
    transport: str
    ip_version: int
    orig_ip: str
    orig_port: int | None
    resp_ip: str
    resp_port: int | None
    app: str | None
    first_ns: int
    last_ns: int
    orig_pkts: int
    orig_bytes: int
    resp_pkts: int
    resp_bytes: int
    conn_state: str | None
    history: str
    end_reason: str | None
    dns_query: str | None
    dns_rcode: str | None
    tls_sni: str | None
    tls_alpn: str | None
    http_host: str | None
    http_method: str | None
    http_path: str | None
    ssh_banner: str | None
    start: str
    last: str
    duration_ms: int
    icmp_id: int | None = None  # the Flow field, last: a default must follow the others


class FlowMessage(msgspec.Struct, frozen=True, tag="flow", tag_field="type"):
    """A flow event of the `flows` channel: `event` is one of `FLOW_EVENTS`."""

    event: str
    data: FlowData


class StatsData(msgspec.Struct, frozen=True):
    """The spec's four fields, then: totals, packets per second by application, and drops.
    `kernel_drops`/`if_drops`: the capture's since it started; `ring_lost`: records the stats
    process was lapped on; `decode_errors`; `stream_lost`: ring records this connection's stream
    skipped because they were overwritten first (live, or before a resume), matching or not;
    `client_dropped`: packets this connection
    missed because it read too slowly (also announced by `dropped`)."""

    packets_total: int
    packets_per_second: int
    bytes_per_second: int
    protocols: dict[str, int]
    bytes_total: int
    apps: dict[str, int]
    kernel_drops: int
    if_drops: int
    ring_lost: int
    decode_errors: int
    stream_lost: int
    client_dropped: int
    timestamp: str
    # At a fleet central only: each sensor's last published stats snapshot (its own fields, as
    # it sent them), by name; the totals above are the central's, over every sensor.
    by_sensor: dict[str, dict[str, Any]] | UnsetType = UNSET


class StatsMessage(msgspec.Struct, frozen=True, tag="stats", tag_field="type"):
    data: StatsData


class SensorInfo(msgspec.Struct, frozen=True):
    """A fleet sensor as a central's `status` shows it: `state` live, silent or never;
    `last_message_ms` Unix milliseconds of its last message (0: none yet); `packets` received;
    `lost` ids it could not send or that are missing; `bad_batches` messages not decodable."""

    name: str
    state: str
    last_message_ms: int
    packets: int
    lost: int
    bad_batches: int


class FleetData(msgspec.Struct, frozen=True):
    """The publisher of a sensor in a fleet (docs/fleet.md): its name, whether NATS is reached,
    the servers (no credentials), records, batches and bytes acknowledged, ids the ring
    overwrote before they went out (`lost`), ids captured and not yet out (`behind`), the last
    error (null when none) and each stream setting that differs from the config."""

    sensor: str
    connected: bool
    servers: list[str]
    published_records: int
    published_batches: int
    published_bytes: int
    lost: int
    behind: int
    last_error: str | None
    stream_mismatch: list[str]


class StatusData(msgspec.Struct, frozen=True):
    """The spec's four fields, then `state` (idle, starting, capturing, stopped, error,
    finished), `bpf` (the user's filter), `effective_bpf` (the filter the kernel runs: `bpf`
    with the sensor's own web traffic left out), the kernel's drop counters and the last
    `error` (null when none); `fleet` only on a sensor that publishes to a fleet."""

    is_capturing: bool
    interface: str
    started_at: str | None
    packets_captured: int
    state: str
    bpf: str
    effective_bpf: str
    kernel_drops: int
    if_drops: int
    error: str | None
    # At a fleet central only: `central` true and the sensors (those the user may see).
    central: bool | UnsetType = UNSET
    sensors: list[SensorInfo] | UnsetType = UNSET
    fleet: FleetData | UnsetType = UNSET


class StatusMessage(msgspec.Struct, frozen=True, tag="status", tag_field="type"):
    data: StatusData


class Pong(msgspec.Struct, frozen=True, tag="pong", tag_field="type"):
    id: Any | UnsetType = UNSET


class ErrorMessage(msgspec.Struct, frozen=True, tag="error", tag_field="type"):
    """`field`: the offending field when there is one: a top-level field (`channel`, `since`,
    `filters`) or a key inside `filters` or `options` (`port`, `src_ip`, `interval_ms`)."""

    code: str
    message: str
    field: str | UnsetType = UNSET


class Dropped(msgspec.Struct, frozen=True, tag="dropped", tag_field="type"):
    """`count` packets this client will not receive, placed where they are missing in the
    stream. For `resume` and `ring` the count is of ring records, matching the filter or not."""

    reason: str
    count: int
    message: str


ServerMessage = (
    AuthSuccess
    | AuthError
    | Subscribed
    | Unsubscribed
    | PacketMessage
    | PacketsMessage
    | FlowMessage
    | StatsMessage
    | StatusMessage
    | Pong
    | ErrorMessage
    | Dropped
)

# -- decoding and encoding -----------------------------------------------------------------------


class ProtocolError(msgspec.Struct, frozen=True):
    """Why a client message was refused: becomes an `error` message; the connection stays."""

    code: ErrorCode
    message: str
    field: str | None = None

    def to_message(self) -> ErrorMessage:
        return ErrorMessage(self.code, self.message, UNSET if self.field is None else self.field)


_decoder: Final = msgspec.json.Decoder(ClientMessage)
_encoder: Final = msgspec.json.Encoder()


def decode_client(frame: str | bytes) -> ClientMessage | ProtocolError:
    """One client frame (text, or bytes that should be UTF-8 JSON) as a typed message, or the
    reason it is not one."""
    try:
        data = frame.encode("utf-8") if isinstance(frame, str) else frame
    except UnicodeEncodeError:
        return ProtocolError(ErrorCode.MALFORMED_JSON, "Malformed JSON: not valid UTF-8 text")
    try:
        message: ClientMessage = _decoder.decode(data)
        return message
    except msgspec.ValidationError as exc:
        return _explain(data, str(exc))
    except msgspec.DecodeError as exc:
        return ProtocolError(ErrorCode.MALFORMED_JSON, f"Malformed JSON: {exc}")
    except RecursionError:
        return ProtocolError(ErrorCode.MALFORMED_JSON, "Malformed JSON: nested too deeply")


def _explain(data: bytes, detail: str) -> ProtocolError:
    """Tell an unknown or missing type apart from a bad field of a known type."""
    try:
        envelope = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):  # valid JSON by now; belt and braces
        envelope = None
    if not isinstance(envelope, dict):
        return ProtocolError(ErrorCode.INVALID_MESSAGE, "A message must be a JSON object")
    kind = envelope.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        shown = "missing" if kind is None else f"{_short(kind)} is not known"
        return ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"Message type {shown}; expected one of: {', '.join(CLIENT_TYPES)}",
            "type",
        )
    field = None
    if " - at `$." in detail:
        detail, _, path = detail.partition(" - at `$.")
        field = path.rstrip("`") or None
    elif detail.startswith("Object missing required field `"):
        field = detail.split("`")[1]
    return ProtocolError(ErrorCode.INVALID_MESSAGE, f"Invalid '{kind}' message: {detail}", field)


def _short(value: object) -> str:
    return truncate(repr(value), 40)


def encode(message: ServerMessage) -> bytes:
    """A server message as JSON (UTF-8)."""
    return _encoder.encode(message)
