"""What every API handler shares: the hub, the token verifier, the control client, and the
two rules of every request — who may make it, and how its body is read."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Final, TypeVar

import msgspec
from starlette.requests import Request

from leireye.accounts.principal import AuthFailure, Principal
from leireye.accounts.tokens import Authenticator
from leireye.config import Config
from leireye.control.client import ControlClient, ControlError
from leireye.control.protocol import RedeemTicket
from leireye.control.server import socket_path
from leireye.fleet.model import SensorState
from leireye.flows.history import FlowHistory
from leireye.flows.model import LiveFlows
from leireye.ring.status import CaptureStatus
from leireye.store.reader import PacketStore
from leireye.web.api.errors import ApiError
from leireye.web.hub import Hub
from leireye.web.sensors import narrow_status

T = TypeVar("T")
log = logging.getLogger("leireye.web")

RANK: Final = {"VIEWER": 0, "ANALYST": 1, "ADMIN": 2}
_BEARER: Final = {"WWW-Authenticate": "Bearer"}


@dataclass
class ApiContext:
    config: Config
    hub: Hub
    authenticator: Authenticator
    control: ControlClient
    history: FlowHistory | None = None  # the flow store (ended flows, host and app minutes)
    live_flows: LiveFlows | None = None  # the flow process's live view; None: history only
    packet_store: PacketStore | None = None  # whole frames on disk; None: `store.enabled` off

    @classmethod
    def for_worker(
        cls, config: Config, hub: Hub, live_flows: LiveFlows | None = None
    ) -> ApiContext:
        """What a web worker serves with: its hub, the hub's token verifier, a client of the
        supervisor's control socket in `state_dir`, the flow store's reader (whatever
        `flows.enabled` says: at a fleet central, where it is off, the ingest writes the
        sensors' ended flows into `history.dir`; an empty store just answers nothing), the flow
        process's live view when there is one (`leireye.flows.view`, attached by the worker),
        and the packet store's reader when the store is on."""
        history = FlowHistory(
            config.history_dir,
            timeout_s=config.history.query_timeout_s,
            rows_max=config.history.query_rows_max,
        )
        control = ControlClient(socket_path(config.state_dir))
        return cls(config, hub, hub.authenticator, control, history, live_flows, hub.packet_store)


async def redeem_ticket(ctx: ApiContext, ticket: str) -> Principal | AuthFailure:
    """Who a ticket (`POST /api/auth/ticket`) was bought for: checked here (form, MAC,
    expiry, not seen by this worker), then redeemed once by the supervisor."""
    hub = ctx.hub
    if not hub.tickets.admit(ticket, hub.clock()):  # forged, expired or seen here before
        return AuthFailure("bad ticket")
    try:
        grant = await ctx.control.call(RedeemTicket(ticket))
    except ControlError as exc:
        log.info("ticket refused: %s", exc.detail)
        return AuthFailure("bad ticket")
    assert isinstance(grant, dict)
    user = ctx.authenticator.users.get(int(grant["user_id"]))
    if user is None or user.generation != grant["generation"]:
        return AuthFailure("unknown user")
    expires = float(grant["session_expires_at"])
    return Principal(
        id=user.id, username=user.username, role=user.role, expires_at=expires,
        generation=user.generation, sensors=user.sensors,
    )  # fmt: skip


def require_or_ticket(request: Request, who: Principal | AuthFailure | None, role: str) -> None:
    """`require`, or, for a download a browser makes itself (no header), the redeemed ticket
    `who` of the request's `ticket` parameter."""
    if who is None:
        require(request, role)
        return
    if isinstance(who, AuthFailure):
        raise ApiError(401, "INVALID_TOKEN", "Invalid, used or expired ticket", _BEARER)
    if RANK.get(who.role, -1) < RANK[role]:
        raise ApiError(403, "FORBIDDEN", f"This needs the {role} role (you are {who.role})")


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.api
    return ctx


def capture_status(request: Request, who: Principal | None = None) -> CaptureStatus:
    """The capture status read now (not the hub's last tick); 503 while it is unreadable.
    For `who` limited to some sensors, its counters are those of their sensors
    (`sensors.narrow_status`)."""
    hub = context(request).hub
    hub.tick_status()
    if hub.status is None:
        raise ApiError(503, "SERVICE_UNAVAILABLE", "The capture status is not readable yet")
    scope = sensor_scope(request, who)
    return hub.status if scope is None else narrow_status(hub.status, scope)


def sensor_scope(request: Request, who: Principal | None) -> list[SensorState] | None:
    """None when `who` sees every sensor (or is None: a public view); else the sensors whose
    counters they get in place of the totals (docs/fleet-central.md)."""
    if who is None:
        return None
    directory = context(request).hub.sensors
    if directory.sees_all(who.sensors):
        return None
    directory.refresh()
    return directory.states(who.sensors)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "INVALID_TOKEN", "Authorization must be 'Bearer <token>'", _BEARER)
    return token.strip()


def access_token(request: Request) -> str:
    """The caller's bearer token, for a control request: the supervisor verifies it again
    (call `require` first, for the role)."""
    token = bearer_token(request)
    if token is None:
        raise ApiError(401, "AUTH_REQUIRED", "Authentication required", _BEARER)
    return token


def require(request: Request, role: str = "VIEWER") -> Principal:
    """The caller, authenticated by its bearer access token, holding at least `role`
    (VIEWER < ANALYST < ADMIN); 401 or 403 otherwise."""
    token = bearer_token(request)
    if token is None:
        raise ApiError(401, "AUTH_REQUIRED", "Authentication required", _BEARER)
    result = context(request).authenticator.verify(token, time.time())
    if isinstance(result, AuthFailure):
        raise ApiError(401, "INVALID_TOKEN", "Invalid or expired token", _BEARER)
    if RANK.get(result.role, -1) < RANK[role]:
        raise ApiError(403, "FORBIDDEN", f"This needs the {role} role (you are {result.role})")
    return result


def require_whole(request: Request, role: str = "VIEWER") -> Principal:
    """`require`, for a view that mixes every sensor's traffic (flows, hosts, top lists, Follow
    Stream): refused (403) to a user limited to some sensors (docs/security.md)."""
    who = require(request, role)
    if not context(request).hub.sensors.sees_all(who.sensors):
        shown = ", ".join(who.sensors or ())
        raise ApiError(
            403,
            "FORBIDDEN",
            f"This view mixes every sensor's traffic; you may see sensors {shown} only",
        )
    return who


async def read_body(request: Request, kind: type[T]) -> T:
    """The JSON body decoded into `kind`: 413 past `limits.api_max_body_bytes`, 415 for another
    content type, 400 for malformed JSON, 422 for the wrong shape (the message names the key)."""
    limit = context(request).config.limits.api_max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"The request body is over {limit} bytes")
    content_type = request.headers.get("content-type", "application/json")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "The body must be application/json")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", f"The request body is over {limit} bytes")
    try:
        return msgspec.json.decode(bytes(body), type=kind, strict=True)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "VALIDATION_ERROR", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "BAD_REQUEST", f"The body is not valid JSON: {exc}") from None


def path_int(request: Request, name: str) -> int:
    raw = request.path_params[name]
    if not raw.isdigit() or len(raw) > 19:
        raise ApiError(404, "NOT_FOUND", f"No such {name.removesuffix('_id')}: {raw[:40]!r}")
    return int(raw)
