"""/api/stats/* (summary, protocols, top, timeline) and /metrics (Prometheus)."""

from __future__ import annotations

import time
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leireye.accounts.principal import Principal
from leireye.errors import LeirEyeError
from leireye.stats.layout import StatsSnapshot
from leireye.web import statsview
from leireye.web.api.context import (
    capture_status,
    context,
    require,
    require_whole,
    sensor_scope,
)
from leireye.web.api.errors import ApiError
from leireye.web.api.hosts import protocol_history
from leireye.web.api.prometheus import collect
from leireye.web.metrics import render_metrics
from leireye.web.sensors import narrow_stats

TIMELINE_MINUTES_MAX: Final = 60


def _snapshot(request: Request, who: Principal | None = None) -> StatsSnapshot:
    """The stats now; for `who` limited to some sensors, the sums of their sensors'
    (`sensors.narrow_stats`)."""
    hub = context(request).hub
    try:
        snapshot = hub.stats_series.read()
    except LeirEyeError as exc:
        raise ApiError(503, "SERVICE_UNAVAILABLE", f"Statistics are not readable: {exc}") from None
    scope = sensor_scope(request, who)
    return snapshot if scope is None else narrow_stats(snapshot, scope)


async def summary(request: Request) -> Response:
    who = require(request)
    data = statsview.summary(_snapshot(request, who), capture_status(request, who))
    data["connections"] = sum(context(request).hub.registry.totals().values())
    return JSONResponse(data)


async def protocols(request: Request) -> Response:
    if request.query_params:  # a time range: the stored chart, by sensor (api/hosts.py)
        return await protocol_history(request)
    who = require(request)
    return JSONResponse(statsview.protocols(_snapshot(request, who)))


async def top(request: Request) -> Response:
    require_whole(request)
    return JSONResponse(statsview.top(_snapshot(request)))


async def timeline(request: Request) -> Response:
    require_whole(request)  # the central's history: every sensor's traffic, second by second
    query = request.query_params
    unknown = sorted(set(query) - {"interval", "metric", "minutes"})
    if unknown:
        raise ApiError(400, "BAD_REQUEST", f"Unknown query parameter {unknown[0]!r}")
    try:
        interval_s = statsview.parse_interval(query.get("interval", "1s"))
    except ValueError as exc:
        raise ApiError(400, "BAD_REQUEST", str(exc)) from None
    metric = query.get("metric", "packets")
    if metric not in ("packets", "bytes"):
        raise ApiError(400, "BAD_REQUEST", "metric must be packets or bytes")
    minutes_text = query.get("minutes", "5")
    if not minutes_text.isdigit() or not 1 <= int(minutes_text) <= TIMELINE_MINUTES_MAX:
        raise ApiError(400, "BAD_REQUEST", f"minutes must be 1 to {TIMELINE_MINUTES_MAX}")
    hub = context(request).hub
    seconds = min(int(minutes_text) * 60, hub.config.stats.history_s)
    try:
        history = hub.stats_series.history(seconds)
    except LeirEyeError as exc:
        raise ApiError(503, "SERVICE_UNAVAILABLE", f"Statistics are not readable: {exc}") from None
    now_s = int(time.time())
    data = statsview.timeline(history, interval_s, metric, now_s, seconds)  # type: ignore[arg-type]
    return JSONResponse(data)


async def metrics(request: Request) -> Response:
    """Prometheus text format; needs a bearer token unless `web.metrics_public` (at a fleet
    central, the per-sensor lines are those of the caller's sensors)."""
    who = None if context(request).config.web.metrics_public else require(request)
    text = render_metrics(collect(context(request).hub, None if who is None else who.sensors))
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


ROUTES = [
    Route("/api/stats/summary", summary, methods=["GET"]),
    Route("/api/stats/protocols", protocols, methods=["GET"]),
    Route("/api/stats/top", top, methods=["GET"]),
    Route("/api/stats/timeline", timeline, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
