"""/api/flows (active and ended flows: filters, time range, sort, pages) and /api/flows/{uid}.

Ended flows come from the flow store (`leireye.flows.history`, on a thread); active ones from
the flow process's live view (`ApiContext.live_flows`) when the worker has one. A flow's
packets are listed by ring id while the ring still holds them.

At a fleet central the store holds every sensor's ended flows (its ingest writes them), each
with its `sensor`: `sensor` filters them, and a user limited to some sensors
(`Principal.sensors`) gets the list narrowed to theirs (naming another is refused). A single
flow is theirs when its sensor is (404 otherwise), its packet ids its own sensor's; its
stream stays refused to such a user (`require_whole`: Follow Stream reads the ring by
addresses, across sensors). On a lone sensor `sensor` may name the sensor
itself only (it matches all), and a limited user is refused as before.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leireye.accounts.principal import Principal
from leireye.flows.model import Flow
from leireye.flows.query import FLOW_FILTER_KEYS, FilterValueError, FlowFilter, parse_flow_filter
from leireye.record import F_HAS_ICMP_ID
from leireye.web.api import ringscan, stream
from leireye.web.api.context import context, require, require_whole
from leireye.web.api.errors import ApiError
from leireye.web.api.history import PAGE_KEYS, page_of, refuse_unknown, run, store
from leireye.web.encode import iso_ms
from leireye.web.filters import FilterError, PacketFilter, parse_filters

PACKET_IDS_MAX: Final = 1000
_PORTED: Final = frozenset(("TCP", "UDP", "SCTP"))


def flow_view(flow: Flow, active: bool) -> dict[str, Any]:
    """A flow as the API shows it: its fields, ISO times, the duration and totals."""
    data: dict[str, Any] = msgspec.to_builtins(flow)
    data["first_seen"] = iso_ms(flow.first_ns)
    data["last_seen"] = iso_ms(flow.last_ns)
    data["duration_ms"] = flow.duration_ns / 1e6
    data["packets"] = flow.orig_pkts + flow.resp_pkts
    data["bytes"] = flow.orig_bytes + flow.resp_bytes
    data["active"] = active
    if flow.sensor is None:  # a lone sensor's flows: as before the fleet
        del data["sensor"]
    return data


def flow_filter(query: Any) -> FlowFilter:
    try:
        return parse_flow_filter({k: query[k] for k in FLOW_FILTER_KEYS if k in query})
    except FilterValueError as exc:
        raise ApiError(400, "INVALID_FILTER", str(exc)) from None


def narrowed(request: Request, who: Principal, flt: FlowFilter) -> FlowFilter:
    """`flt` as this worker can answer it for `who`: at a central, limited to their sensors;
    on a lone sensor, a `sensor` naming itself dropped (its store's flows carry none)."""
    sensors = context(request).hub.sensors
    if flt.sensor is not None and not sensors.central:
        if sensors.own is None or flt.sensor != (sensors.own,):
            this = f"; this is sensor {sensors.own!r}" if sensors.own else ""
            raise ApiError(400, "INVALID_FILTER", f"sensor: not a fleet central{this}")
        flt = dataclasses.replace(flt, sensor=None)
    allowed = who.sensors
    if sensors.sees_all(allowed):
        return flt
    if not sensors.central or allowed is None:
        require_whole(request)  # raises: no narrowing here
        return flt
    outside = sorted(set(flt.sensor or ()) - set(allowed))
    if outside:
        raise ApiError(
            400,
            "INVALID_FILTER",
            f"sensor {outside[0]!r} is not one you may see; yours: {', '.join(allowed)}",
        )
    return dataclasses.replace(flt, sensor=flt.sensor or tuple(sorted(set(allowed))))


def _active(request: Request) -> Sequence[Flow]:
    live = context(request).live_flows
    return () if live is None else live.active()


async def list_flows(request: Request) -> Response:
    who = require(request)
    query = request.query_params
    refuse_unknown(query, (*PAGE_KEYS, *FLOW_FILTER_KEYS, "status"))
    flt = narrowed(request, who, flow_filter(query))
    page = page_of(query, store(request).rows_max)
    status = query.get("status", "all")
    if status not in ("all", "active", "ended"):
        raise ApiError(400, "BAD_REQUEST", "status must be all, active or ended")
    history = store(request)
    active = await asyncio.to_thread(_active, request) if status != "ended" else ()
    rows, total = await run(
        lambda: history.flows(
            page.from_ns, page.to_ns, flt, sort=page.sort or "start",
            descending=page.descending, limit=page.limit, offset=page.offset, active=active,
            ended=status != "active",
        )
    )  # fmt: skip
    return JSONResponse(
        {
            "flows": [flow_view(f, f.end_reason is None) for f in rows],
            "total": total,
            "limit": page.limit,
            "offset": page.offset,
            "from": iso_ms(page.from_ns),
            "to": iso_ms(page.to_ns),
            "live": context(request).live_flows is not None,
            "lost": history.losses(),
        }
    )


async def _records(
    request: Request, uid: str, allowed: tuple[str, ...] | None = None
) -> list[tuple[Flow, bool]]:
    """A flow's records, oldest first: the stored ones (ended, or reported at the active
    timeout), then the live one (True) while it is active; of the sensors in `allowed` only
    (None: all). 404 when there is none."""
    if not 1 <= len(uid) <= 64 or not uid.isascii() or not uid.isprintable():
        raise ApiError(404, "NOT_FOUND", f"No such flow: {uid[:40]!r}")
    history = store(request)
    records = [(f, False) for f in await run(lambda: history.flow(uid))]
    live = [f for f in await asyncio.to_thread(_active, request) if f.uid == uid]
    records += [(f, True) for f in live]
    if allowed is not None:
        records = [(f, active) for f, active in records if f.sensor in allowed]
    if not records:
        raise ApiError(404, "NOT_FOUND", f"No such flow: {uid!r} (not active, not in the store)")
    return records


async def get_flow(request: Request) -> Response:
    who = require(request)
    sensors = context(request).hub.sensors
    allowed = None
    if not sensors.sees_all(who.sensors):
        if not sensors.central or who.sensors is None:
            require_whole(request)  # raises: no narrowing here
        allowed = who.sensors
    uid = request.path_params["uid"]
    records = await _records(request, uid, allowed)
    newest = records[-1][0]
    first_ns = records[0][0].first_ns
    ring = context(request).hub.ring
    index: int | None = None
    if sensors.central:  # its own sensor's packets only (none when its name is not known)
        index = sensors.index_of(newest.sensor) if newest.sensor else None
    ids: list[int] = []
    if index is not None or not sensors.central:
        ids = await asyncio.to_thread(packet_ids, ring, newest, first_ns, index)
    return JSONResponse(
        {
            "uid": uid,
            "flow": flow_view(newest, records[-1][1]),
            "records": [flow_view(f, active) for f, active in records],
            "packet_ids": ids,
            "packets_in_ring": len(ids),
        }
    )


def _directions(flow: Flow) -> list[PacketFilter]:
    """The two packet filters of a flow's directions (transport, addresses, ports)."""
    found: list[PacketFilter] = []
    for src, sport, dst, dport in (
        (flow.orig_ip, flow.orig_port, flow.resp_ip, flow.resp_port),
        (flow.resp_ip, flow.resp_port, flow.orig_ip, flow.orig_port),
    ):
        spec: dict[str, object] = {"src_ip": src, "dst_ip": dst}
        if flow.transport in _PORTED:
            spec.update(protocol=flow.transport, src_port=sport, dst_port=dport)
        elif flow.transport in ("ICMP", "ICMPv6"):
            spec["protocol"] = flow.transport
        parsed = parse_filters(spec)
        if isinstance(parsed, FilterError):
            return []
        found.append(parsed)
    return found


def packet_ids(
    ring: ringscan.RingView, flow: Flow, first_ns: int, sensor: int | None = None
) -> list[int]:
    """The ring ids of the flow's packets still in the ring (its 5-tuple, or its ICMP
    identifier, both ways, within its time span; at a central, of its sensor's index `sensor`
    only), oldest first, at most PACKET_IDS_MAX. A scan of the ring in chunks."""
    directions = _directions(flow)
    if not directions:
        return []
    first, last = ringscan.bounds(ring, None, None)
    out: list[np.ndarray] = []
    count = 0
    cursor = first
    while cursor <= last and count < PACKET_IDS_MAX:
        cursor = max(cursor, ring.oldest_id)
        end = min(last, cursor + ringscan.CHUNK - 1)
        if cursor > end:
            break
        records = ring.copy_range(cursor, end).records
        cursor = end + 1
        mask = directions[0].mask(records) | directions[1].mask(records)
        if flow.icmp_id is not None:  # a ping among others between the same hosts
            mask &= (records["flags"] & F_HAS_ICMP_ID) != 0
            mask &= records["src_port"] == flow.icmp_id
        mask &= (records["ts_ns"] >= first_ns) & (records["ts_ns"] <= flow.last_ns)
        if sensor is not None:
            mask &= records["sensor"] == sensor
        ids = records["seq"][mask][: PACKET_IDS_MAX - count]
        out.append(ids)
        count += len(ids)
    return [int(i) for i in np.concatenate(out)] if out else []


async def get_flow_stream(request: Request) -> Response:
    """Follow Stream of one flow: its conversation over the whole span of its records."""
    require_whole(request, "ANALYST")
    records = await _records(request, request.path_params["uid"])
    try:
        conv, _, last_ns = stream.conversation_of(records[-1][0])
    except ValueError as exc:
        raise ApiError(400, "BAD_REQUEST", str(exc)) from None
    max_bytes = context(request).config.limits.follow_max_bytes
    return await stream.answer(request, conv, records[0][0].first_ns, last_ns, max_bytes)


ROUTES = [
    Route("/api/flows", list_flows, methods=["GET"]),
    Route("/api/flows/{uid}", get_flow, methods=["GET"]),
    Route("/api/flows/{uid}/stream", get_flow_stream, methods=["GET"]),
]
