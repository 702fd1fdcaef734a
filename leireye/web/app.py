"""The Starlette application of one web worker: thin glue between sockets and the sans-IO session.

Each WebSocket connection gets two tasks. The receiver feeds every client frame to the session;
the sender drains the session's bounded outbox and is the only code that awaits `send`. A client
that does not read blocks only its own sender: its outbox fills, and the session skips packets
for it (and says how many) instead of letting memory grow or slowing anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from leireye.accounts.principal import AuthFailure, Principal
from leireye.web import console
from leireye.web.api import accounts, capture, flows, hosts, packets, sensors, stats, stream
from leireye.web.api.context import ApiContext, redeem_ticket, require, sensor_scope
from leireye.web.api.errors import EXCEPTION_HANDLERS
from leireye.web.guard import RequestGuard, machine_names
from leireye.web.hosts import HostPolicy
from leireye.web.hub import Connection, Hub, health_word
from leireye.web.origin import origin_allowed
from leireye.web.protocols import FRAME_EXTENSION
from leireye.web.proxies import trusted_networks
from leireye.wire import Close

log = logging.getLogger("leireye.web")


def build_app(api: ApiContext) -> Starlette:
    hub = api.hub
    allowed_origins = api.config.web.allowed_origins

    async def health(request: Request) -> JSONResponse:
        """Anyone may ask whether the sensor is healthy; only a user may see the details."""
        word = health_word(hub.status)
        code = 200 if word == "ok" else 503
        if request.headers.get("authorization") is None:
            return JSONResponse({"status": word}, status_code=code)
        who = require(request)
        return JSONResponse(hub.health(sensor_scope(request, who)), status_code=code)

    async def redeem(ticket: str) -> Principal | AuthFailure:
        return await redeem_ticket(api, ticket)

    async def capture_socket(websocket: WebSocket) -> None:
        scheme = "https" if websocket.url.scheme == "wss" else "http"
        origin = websocket.headers.get("origin")
        if not origin_allowed(origin, websocket.headers.get("host"), allowed_origins, scheme):
            log.warning("refused a WebSocket from origin %r", origin)
            await websocket.close(code=1008)  # before accept: uvicorn answers HTTP 403
            return
        ticket = websocket.query_params.get("ticket")
        preauth = await redeem(ticket) if ticket is not None else None
        await websocket.accept()
        conn = hub.open(websocket.query_params.get("token"), hub.clock(), preauth)
        try:
            await _serve(websocket, conn, hub.clock)
        finally:
            hub.close(conn)

    routes: list[BaseRoute] = [
        Route("/health", health),
        WebSocketRoute("/ws/capture", capture_socket),
        *accounts.ROUTES,
        *capture.ROUTES,
        *packets.ROUTES,
        *sensors.ROUTES,
        *stream.ROUTES,
        *flows.ROUTES,
        *hosts.ROUTES,
        *stats.ROUTES,
        *console.ROUTES,
    ]
    web = api.config.web
    guard = Middleware(
        RequestGuard,
        hosts=HostPolicy.build(web.allowed_hosts, machine_names(web.host)),
        proxies=trusted_networks(web.trusted_proxies),
    )
    app = Starlette(
        routes=routes,
        middleware=[
            guard,
            Middleware(console.SecurityHeaders),
            Middleware(_CountRequests, hub=hub),
        ],
        lifespan=hub.lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.api = api
    return app


class _CountRequests:
    """Counts HTTP requests for /metrics (WebSocket traffic has its own counters)."""

    def __init__(self, app: ASGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.hub.http_requests += 1
        await self.app(scope, receive, send)


async def _serve(websocket: WebSocket, conn: Connection, clock: Callable[[], float]) -> None:
    sender = asyncio.create_task(_send_loop(websocket, conn))
    try:
        while not sender.done():
            receive = asyncio.ensure_future(websocket.receive())
            done, _ = await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                break
            message: MutableMapping[str, Any] = receive.result()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            conn.receive(data, clock())
    except WebSocketDisconnect:
        pass
    finally:
        if not sender.done():
            sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await sender


async def _send_loop(websocket: WebSocket, conn: Connection) -> None:
    """A batch (`Frame`, shared by its filter group) goes out as the bytes framed once for the
    group when the server offers `FRAME_EXTENSION`, else as an ordinary ASGI message."""
    direct = FRAME_EXTENSION in (websocket.scope.get("extensions") or {})
    raw_send = websocket._send  # the ASGI send under Starlette's checks (for FRAME_EXTENSION)
    while True:
        item = conn.session.next_item()
        if item is None:
            conn.wake.clear()
            if (item := conn.session.next_item()) is None:
                await conn.wake.wait()
                continue
        if isinstance(item, Close):
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(code=item.code, reason=item.reason)
            return
        if isinstance(item, str):
            await websocket.send_text(item)
        elif direct:
            try:
                await raw_send({"type": FRAME_EXTENSION, "frame": item.wire()})
            except OSError as exc:
                raise WebSocketDisconnect(code=1006) from exc
        elif isinstance(item.payload, str):
            await websocket.send_text(item.payload)
        else:
            await websocket.send_bytes(item.payload)
        conn.sent += 1
