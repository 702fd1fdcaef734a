"""/api/hosts (every address seen, sortable), /api/hosts/{ip} (one address: totals, names,
peers, its applications over time) and the stored protocol chart behind /api/stats/protocols
when it is given a time range.

At a fleet central the store holds every sensor's host and app minutes (its ingest writes the
`minutes` messages), each with its `sensor`: an address seen by several sensors is shown once,
its counts summed over them (the same packet seen by two sensors counts twice), and `sensor`
(one name or a comma list, as for /api/flows) keeps the minutes of those sensors only. A user
limited to some sensors (`Principal.sensors`) sees the minutes of theirs only (naming another
is refused); on a lone sensor `sensor` may name the sensor itself, and such a user is refused
as before (the sensor's minutes are all its traffic)."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leireye.flows.history import HOST_SORTS, MINUTE_NS, STEPS_MAX
from leireye.flows.model import Host
from leireye.web.api.context import context, require
from leireye.web.api.errors import ApiError
from leireye.web.api.flows import flow_filter, narrowed
from leireye.web.api.history import PAGE_KEYS, number, page_of, refuse_unknown, run, store
from leireye.web.encode import iso_ms

DAY_NS: Final = 86400 * 10**9
CHART_STEPS: Final = 300  # without `step`: about this many intervals over the range


def _with_times(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("first_ns", "last_ns", "start_ns"):
        if isinstance(row.get(key), int):
            row[key.replace("_ns", "_seen" if key != "start_ns" else "")] = iso_ms(row[key])
    return row


def _live_host(request: Request, ip: str) -> Host | None:
    live = context(request).live_flows
    if live is None:
        return None
    return next((h for h in live.hosts() if h.ip == ip), None)


def _sensors(request: Request) -> tuple[str, ...] | None:
    """The sensors whose minutes the caller asked for and may see (None: every one)."""
    who = require(request)
    query = request.query_params
    asked = {"sensor": query["sensor"]} if "sensor" in query else {}
    return narrowed(request, who, flow_filter(asked)).sensor


def _step_ns(query: Any, from_ns: int, to_ns: int) -> int:
    """`step` in seconds (whole minutes), or one that gives about CHART_STEPS intervals."""
    if query.get("step"):
        return number(query, "step", 60, 31 * 86400, 60) * 10**9
    minutes = max(1, -(-(to_ns - from_ns) // (CHART_STEPS * MINUTE_NS)))
    return minutes * MINUTE_NS


async def list_hosts(request: Request) -> Response:
    sensors = _sensors(request)
    query = request.query_params
    refuse_unknown(query, (*PAGE_KEYS, "sensor"))
    history = store(request)
    page = page_of(query, history.rows_max)
    sort = page.sort or "bytes"
    if sort not in HOST_SORTS:
        raise ApiError(400, "BAD_REQUEST", f"sort must be one of {', '.join(HOST_SORTS)}")
    rows, total = await run(
        lambda: history.hosts(page.from_ns, page.to_ns, sort=sort, descending=page.descending,
                              limit=page.limit, offset=page.offset, sensors=sensors,
                              with_sensors=context(request).hub.sensors.central)
    )  # fmt: skip
    live = context(request).live_flows
    hosts = [] if live is None else await asyncio.to_thread(live.hosts)
    return JSONResponse(
        {
            "hosts": [_with_times(r) for r in rows],
            "total": total,
            "limit": page.limit,
            "offset": page.offset,
            "from": iso_ms(page.from_ns),
            "to": iso_ms(page.to_ns),
            # The flow process's live hosts (its snapshot, the top by bytes), not yet in a stored
            # minute: names seen seconds ago are here. null without a flow process.
            "live": None if live is None else [_with_times(msgspec.to_builtins(h)) for h in hosts],
        }
    )


async def get_host(request: Request) -> Response:
    sensors = _sensors(request)
    raw = request.path_params["ip"]
    try:
        ip = str(ipaddress.ip_address(raw))
    except ValueError:
        raise ApiError(400, "BAD_REQUEST", f"{raw[:40]!r} is not an IP address") from None
    query = request.query_params
    refuse_unknown(query, ("from", "to", "step", "sensor"))
    history = store(request)
    page = page_of(query, history.rows_max, default_span_ns=DAY_NS)
    step = _step_ns(query, page.from_ns, page.to_ns)
    found = await run(lambda: history.host(ip, page.from_ns, page.to_ns, step, sensors))
    live = await asyncio.to_thread(_live_host, request, ip)
    if found is None and live is None:
        raise ApiError(404, "NOT_FOUND", f"{ip} was not seen from {iso_ms(page.from_ns)}")
    body: dict[str, Any] = found or {"ip": ip, "summary": None, "apps": [], "peers": [],
                                     "series": []}  # fmt: skip
    if body["summary"] is not None:
        _with_times(body["summary"])
    body["series"] = [_with_times(r) for r in body["series"]]
    body["live"] = None if live is None else msgspec.to_builtins(live)
    body["from"], body["to"] = iso_ms(page.from_ns), iso_ms(page.to_ns)
    body["step_s"] = step // 10**9
    return JSONResponse(body)


async def protocol_history(request: Request) -> Response:
    """GET /api/stats/protocols?from&to&step&sensor: packets and bytes per app per interval."""
    sensors = _sensors(request)
    query = request.query_params
    refuse_unknown(query, ("from", "to", "step", "sensor"))
    history = store(request)
    page = page_of(query, history.rows_max)
    step = _step_ns(query, page.from_ns, page.to_ns)
    if (page.to_ns - page.from_ns) // step > STEPS_MAX:
        raise ApiError(400, "BAD_REQUEST", f"from..to holds more than {STEPS_MAX} steps")
    rows = await run(lambda: history.protocols(page.from_ns, page.to_ns, step, sensors))
    intervals: dict[int, dict[str, dict[str, int]]] = {}
    for row in rows:
        apps = intervals.setdefault(row["start_ns"], {})
        apps[row["app"]] = {"packets": row["packets"], "bytes": row["bytes"]}
    return JSONResponse(
        {
            "from": iso_ms(page.from_ns),
            "to": iso_ms(page.to_ns),
            "step_s": step // 10**9,
            "intervals": [
                {"start": iso_ms(start), "start_ns": start, "apps": apps}
                for start, apps in sorted(intervals.items())
            ],
        }
    )


ROUTES = [
    Route("/api/hosts", list_hosts, methods=["GET"]),
    Route("/api/hosts/{ip}", get_host, methods=["GET"]),
]
