"""/api/capture/*: interfaces, status, start and stop (ADMIN)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leireye.capture.interfaces import list_interfaces
from leireye.control.protocol import CaptureStart, CaptureStop
from leireye.errors import CaptureError
from leireye.web.api.context import access_token, capture_status, context, read_body, require
from leireye.web.api.errors import ApiError
from leireye.web.statusview import status_view


class StartBody(msgspec.Struct, forbid_unknown_fields=True):
    interface: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    filter: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


async def interfaces(request: Request) -> Response:
    require(request, "ADMIN")
    try:
        found = await asyncio.to_thread(list_interfaces)
    except CaptureError as exc:
        raise ApiError(503, "SERVICE_UNAVAILABLE", str(exc)) from None
    hub = context(request).hub
    hub.tick_status()
    status = hub.status
    current = status.interface if status is not None else None
    for entry in found:
        entry["capturing"] = bool(status and status.capturing and entry["name"] == current)
    return JSONResponse({"interfaces": found})


async def status(request: Request) -> Response:
    who = require(request)
    return JSONResponse(status_view(capture_status(request, who)))


async def start(request: Request) -> Response:
    require(request, "ADMIN")
    body = await read_body(request, StartBody)
    start = CaptureStart(access_token(request), body.interface, body.filter)
    data = await context(request).control.call(start)
    return JSONResponse(data)


async def stop(request: Request) -> Response:
    require(request, "ADMIN")
    data = await context(request).control.call(CaptureStop(access_token(request)))
    return JSONResponse(data)


ROUTES = [
    Route("/api/capture/interfaces", interfaces, methods=["GET"]),
    Route("/api/capture/status", status, methods=["GET"]),
    Route("/api/capture/start", start, methods=["POST"]),
    Route("/api/capture/stop", stop, methods=["POST"]),
]
