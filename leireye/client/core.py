"""The client's pure parts: no socket, no event loop, no clock of its own.

- `Backoff`: the spec's reconnect schedule (1, 2, 5, 10, 30 s, then 30 s forever), with optional
  jitter from an injected random source.
- `ResumeCursor`: the `since` bookkeeping. It remembers the id of the last packet handed over and
  refuses ids at or below it, so a reconnect that resumes with `since=cursor.since()` neither
  loses a packet still in the ring nor repeats one.
- `Gap`: packets the caller will not get, made explicit (from `dropped` notices, or a reconnect
  that could not resume).
- `close_outcome`: what a close code means for the reconnect loop.
- `decode_server`: a server frame as a typed message of `leireye.wire`.
- `packet_filters`, `refresh_delay`, `http_base`: small helpers the shells share.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import msgspec

from leireye.client.errors import ProtocolError
from leireye.wire import CloseCode, ServerMessage

BACKOFF_S: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
PING_INTERVAL_S: Final = 30.0


class Backoff:
    """Delay before reconnect attempt `attempt` (0-based): `delays[attempt]`, the last delay
    once past the end, stretched by up to `jitter` (a fraction) drawn from `rng`."""

    def __init__(
        self,
        delays: Sequence[float] = BACKOFF_S,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not delays or any(d < 0 for d in delays):
            raise ValueError("delays must be a non-empty sequence of non-negative seconds")
        if not 0 <= jitter <= 1:
            raise ValueError("jitter must be a fraction from 0 to 1")
        self.delays = tuple(float(d) for d in delays)
        self.jitter = jitter
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        base = self.delays[min(max(attempt, 0), len(self.delays) - 1)]
        return base * (1 + self.jitter * self._rng.random()) if self.jitter else base


class Gap(msgspec.Struct, frozen=True):
    """Packets the caller will not receive, at this point of the stream.

    `reason`: `slow_consumer` (we read too slowly: the server skipped packets for us), `ring`
    (the server's reader was lapped by the capture), `resume` (records after our `since` were
    overwritten before the replay read them), or `reconnect` (the connection dropped before
    there was any id to resume from: the loss is unknown). `count` is the server's count (for
    `ring` and `resume` it counts ring records, matching the filter or not: an upper bound), or
    None when unknown. `after_id`: the id of the last packet delivered before the gap.

    In a flows stream, flow events: `flow_slow_consumer`, `flow_ring` (as the packets' two;
    `flow_ring` counts events matching the filter or not), or `reconnect` (count None).
    """

    reason: str
    count: int | None
    message: str
    after_id: int | None = None


RECONNECT_GAP_TEXT: Final = "disconnected before any packet id was known: packets may be missing"
FLOWS_RECONNECT_GAP_TEXT: Final = "disconnected: flow events may be missing"


class ResumeCursor:
    """The last packet id handed over, as the `since` of the next subscribe."""

    def __init__(self, since: int | None = None) -> None:
        if since is not None and since < 0:
            raise ValueError("since must be >= 0")
        self.last_id = since

    def accept(self, packet_id: int) -> bool:
        """True (and remember it) when `packet_id` is new; False for a repeat or an old id."""
        if self.last_id is not None and packet_id <= self.last_id:
            return False
        self.last_id = packet_id
        return True

    def since(self) -> int | None:
        return self.last_id


class Outcome(enum.Enum):
    """What to do after a connection closed."""

    RECONNECT = "reconnect"  # transient: back off, connect again, resume
    RENEW = "renew"  # the token expired: get a fresh one, then reconnect
    AUTH_FAILED = "auth_failed"  # the credentials are bad: raise AuthenticationError
    REFUSED = "refused"  # the server will refuse us again: raise ProtocolError


_REFUSED: Final = {
    CloseCode.MESSAGE_TOO_BIG,
    CloseCode.TOO_MANY_CONNECTIONS,
    CloseCode.RATE_LIMITED,
    1002,  # protocol error
    1003,  # unsupported data
    1007,  # invalid payload data
    1008,  # policy violation
}


def close_outcome(code: int | None) -> Outcome:
    """Idle timeout, auth timeout, not reading, going away, a crashed worker (1006, no code) or
    anything unknown: reconnect. 4001: the credentials are bad. 4003: renew the token."""
    if code == CloseCode.AUTH_FAILED:
        return Outcome.AUTH_FAILED
    if code == CloseCode.TOKEN_EXPIRED:
        return Outcome.RENEW
    if code in _REFUSED:
        return Outcome.REFUSED
    return Outcome.RECONNECT


_server_decoder: Final = msgspec.json.Decoder(ServerMessage)


def decode_server(frame: str | bytes) -> ServerMessage:
    """One server frame as a typed message; `ProtocolError` if it is not one."""
    try:
        message: ServerMessage = _server_decoder.decode(frame)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ProtocolError(f"unreadable server message: {exc}") from None
    return message


def packet_filters(
    *,
    protocol: str | None = None,
    port: int | None = None,
    src_ip: str | None = None,
    dst_ip: str | None = None,
    ip: str | None = None,
    src_port: int | None = None,
    dst_port: int | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    sensor: str | list[str] | None = None,
) -> dict[str, str | int | list[str]]:
    """The `filters` object of a packets subscribe: the given conditions only (`sensor`: a
    sensor name or a list of names, at a fleet central)."""
    given: dict[str, str | int | list[str] | None] = {
        "protocol": protocol,
        "port": port,
        "src_ip": src_ip,
        "dst_ip": dst_ip,
        "ip": ip,
        "src_port": src_port,
        "dst_port": dst_port,
        "min_length": min_length,
        "max_length": max_length,
        "sensor": sensor,
    }
    return {key: value for key, value in given.items() if value is not None}


def flow_filters(
    *,
    protocol: str | None = None,
    port: int | None = None,
    src_ip: str | None = None,
    dst_ip: str | None = None,
    ip: str | None = None,
    src_port: int | None = None,
    dst_port: int | None = None,
    min_bytes: int | None = None,
    min_duration_ms: int | None = None,
    state: str | None = None,
) -> dict[str, str | int]:
    """The `filters` object of a flows subscribe: the given conditions only (`src_*` is the
    originator, `dst_*` the responder)."""
    given: dict[str, str | int | None] = {
        "protocol": protocol,
        "port": port,
        "src_ip": src_ip,
        "dst_ip": dst_ip,
        "ip": ip,
        "src_port": src_port,
        "dst_port": dst_port,
        "min_bytes": min_bytes,
        "min_duration_ms": min_duration_ms,
        "state": state,
    }
    return {key: value for key, value in given.items() if value is not None}


def parse_iso(text: str) -> float:
    """An ISO-8601 UTC time of the server (`...Z`) as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def refresh_delay(expires_at: float, now: float, *, margin_s: float = 60.0) -> float:
    """Seconds from `now` until a token expiring at `expires_at` should be renewed: `margin_s`
    before expiry, or at 80 % of the remaining life for short tokens; never negative."""
    remaining = expires_at - now
    if remaining <= 0:
        return 0.0
    return max(0.0, remaining - min(margin_s, remaining * 0.2))


def http_base(ws_url: str) -> str:
    """`ws://host:port/ws/capture?x` -> `http://host:port` (wss -> https): where the REST API and
    `/health` live."""
    scheme, sep, rest = ws_url.partition("://")
    if not sep or scheme not in ("ws", "wss", "http", "https"):
        raise ValueError(f"not a ws:// or wss:// URL: {ws_url!r}")
    host = rest.split("/", 1)[0].split("?", 1)[0]
    return f"{'https' if scheme in ('wss', 'https') else 'http'}://{host}"
