"""/api/sensors: a fleet central's sensors, as its sensor table shows them (docs/api.md).

Each one as the central's ingest last wrote it (`leireye.fleet.model.SensorState`): its state,
counters, and the last `status` and `stats` it published. A user limited to some sensors sees
only those. On a lone sensor the list is empty and `central` false.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leireye.web.api.context import context, require


async def list_sensors(request: Request) -> Response:
    who = require(request)
    directory = context(request).hub.sensors
    directory.refresh()
    sensors: list[dict[str, Any]] = []
    for state in directory.states(who.sensors):
        item: dict[str, Any] = msgspec.to_builtins(state)
        item["last_message_ms"] = item.pop("last_message_ns") // 1_000_000
        del item["packets_seq"]  # the ingest's own bookkeeping
        sensors.append(item)
    table = directory.table
    body = {
        "central": directory.central,
        "updated_ms": table.updated_ns // 1_000_000 if table is not None else None,
        "error": directory.error,
        "sensors": sensors,
    }
    return JSONResponse(body)


ROUTES = [Route("/api/sensors", list_sensors, methods=["GET"])]
