"""/api/capture/packets (list, one packet's layers) and /api/export/packets (pcap, CSV, JSON)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping
from typing import Final

import msgspec
import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from leireye.accounts.principal import Principal
from leireye.capture import pcapfile
from leireye.decode.detail import describe_frame, hex_dump
from leireye.record import RECORD_DTYPE
from leireye.store.reader import PacketStore
from leireye.web import export, storeread
from leireye.web.api import ringscan
from leireye.web.api.context import (
    ApiContext,
    context,
    path_int,
    redeem_ticket,
    require,
    require_or_ticket,
)
from leireye.web.api.errors import ApiError
from leireye.web.api.stream import parse_time
from leireye.web.encode import PacketEncoder, encode_packets, iso_ms, packet_data
from leireye.web.filters import FilterError, PacketFilter, parse_filters
from leireye.web.sensors import SensorDirectory

FILTER_KEYS: Final = (
    "protocol", "src_ip", "dst_ip", "ip", "port", "src_port", "dst_port", "min_length",
    "max_length", "sensor",
)  # fmt: skip
_INT_KEYS: Final = {"port", "src_port", "dst_port", "min_length", "max_length"}
STORED_SNAPLEN: Final = 262144  # the pcap header of a stored export: capture.snaplen's largest
EXPORT_FORMATS: Final = {
    "pcap": "application/vnd.tcpdump.pcap",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
}


def query_filter(
    query: Mapping[str, str],
    allowed: tuple[str, ...],
    sensors: SensorDirectory | None = None,
    who: Principal | None = None,
) -> PacketFilter:
    """The subscription filter spelt in a query string (the same keys as the WebSocket's
    `filters`; `sensor=a,b` for several sensors); unknown parameters are refused rather than
    ignored, like misspelt filters. `who`: the caller, whose sensors (`Principal.sensors`) the
    filter is narrowed to."""
    unknown = sorted(set(query) - set(FILTER_KEYS) - set(allowed))
    if unknown:
        raise ApiError(400, "INVALID_FILTER", f"Unknown query parameter {unknown[0]!r}")
    spec: dict[str, object] = {}
    for key in FILTER_KEYS:
        value = query.get(key)
        if value is None or value == "":
            continue
        if key == "sensor":
            spec[key] = value.split(",")
        else:
            spec[key] = _int(key, value) if key in _INT_KEYS else value
    parsed = parse_filters(spec, sensors, None if who is None else who.sensors)
    if isinstance(parsed, FilterError):
        raise ApiError(400, "INVALID_FILTER", parsed.message)
    return parsed


def _int(key: str, value: str, low: int = 0, high: int = 2**63 - 1) -> int:
    if not value.isdigit() or len(value) > 19 or not low <= int(value) <= high:
        raise ApiError(400, "INVALID_FILTER", f"{key} must be an integer from {low} to {high}")
    return int(value)


def _optional_int(query: Mapping[str, str], key: str, low: int = 0) -> int | None:
    value = query.get(key)
    return None if value is None or value == "" else _int(key, value, low)


async def list_packets(request: Request) -> Response:
    who = require(request)
    ctx = context(request)
    query = request.query_params
    sensors = ctx.hub.sensors
    flt = query_filter(query, ("limit", "before", "after", "from", "to"), sensors, who)
    most = ctx.config.limits.api_packets_max
    limit = _optional_int(query, "limit", 1) or min(100, most)
    if limit > most:
        raise ApiError(400, "BAD_REQUEST", f"limit must be at most {most}")
    after, before = _optional_int(query, "after"), _optional_int(query, "before")
    from_ns, to_ns = parse_time("from", query.get("from")), parse_time("to", query.get("to"))
    if from_ns is not None or to_ns is not None:
        store = ctx.packet_store
        if store is None:
            raise ApiError(409, "CONFLICT", "A time range needs the packet store (store.enabled)")
        low, high = from_ns or 0, to_ns or 2**63 - 1
        body = await run_in_threadpool(_stored_list_body, store, flt, limit, low, high, after)
        return Response(body, media_type="application/json")
    names = sensors.json_names() if sensors.central else None
    body = await ringscan.run(_list_body, ctx.hub.ring, flt, limit, after, before, names)
    return Response(body, media_type="application/json")


_SCAN_ENCODER: Final = PacketEncoder()  # the scan thread's own (an encoder serves one thread)


def _list_body(
    ring: ringscan.RingView,
    flt: PacketFilter,
    limit: int,
    after: int | None,
    before: int | None,
    sensor_names: list[str] | None = None,
) -> str:
    """The list's JSON body (in the scan thread)."""
    records = ringscan.newest(ring, flt, limit, after, before)
    items = ",".join(packet_data(m) for m in _SCAN_ENCODER.encode(records, sensor_names))
    next_before = int(records["seq"][-1]) if len(records) == limit else None
    return (
        f'{{"packets":[{items}],"count":{len(records)},'
        f'"oldest_id":{ring.oldest_id},"newest_id":{ring.write_seq},'
        f'"next_before":{"null" if next_before is None else next_before}}}'
    )


def _stored_list_body(
    store: PacketStore, flt: PacketFilter, limit: int, low: int, high: int, after: int | None
) -> str:
    """A page of a time range from the packet store, oldest first (in a thread). `after` is
    the last packet of the previous page: the page goes on after it in time order. (With several
    capture shards time order is not id order: skipping the ids up to it would skip, and repeat,
    packets of the other shards. A cursor the store no longer holds in the range, deleted by
    retention since, falls back to that.)"""
    found: list[np.ndarray] = []
    held = 0
    cursor = None if after is None else store.frame(after)
    if cursor is not None and not low <= cursor.ts_ns <= high:
        cursor = None  # another run's packet of that id (ids start over with every run)
    past = None if cursor is None else (cursor.ts_ns, cursor.id)
    skip = after if past is None else None
    for batch in storeread.between(store, low, high, flt, after=skip, past=past):
        found.append(batch.records[: limit - held])
        held += len(found[-1])
        if held >= limit:
            break
    records = np.concatenate(found) if found else np.zeros(0, dtype=RECORD_DTYPE)
    items = ",".join(packet_data(m) for m in PacketEncoder().encode(records))
    oldest = store.oldest()
    next_after = int(records["seq"][-1]) if len(records) == limit else None
    oldest_text = "null" if oldest is None else f'"{iso_ms(oldest)}"'
    return (
        f'{{"packets":[{items}],"count":{len(records)},"source":"store",'
        f'"store_oldest":{oldest_text},'
        f'"past_retention":{"true" if oldest is None or low < oldest else "false"},'
        f'"next_after":{"null" if next_after is None else next_after}}}'
    )


async def packet_detail(request: Request) -> Response:
    who = require(request, "ANALYST")
    packet_id = path_int(request, "packet_id")
    ctx = context(request)
    sensors = ctx.hub.sensors
    found = ctx.hub.ring.get(packet_id)
    if found is not None and not _may_see(who, sensors, int(found[0]["sensor"])):
        found = None  # another sensor's: as if it were not there
    store = ctx.packet_store
    stored = None
    if store is not None and (found is None or len(found[1]) < int(found[0]["cap_len"])):
        ts_ns = None if found is None else int(found[0]["ts_ns"])
        stored = await run_in_threadpool(storeread.whole_frame, store, packet_id, ts_ns)
    if stored is not None:
        record = storeread.records_of([stored], stored.linktype)[0]
        raw, linktype, source = stored.data, stored.linktype, "store"
    elif found is not None:
        record, raw = found
        linktype, source = int(record["linktype"]), "ring"
    else:
        where = "the ring or the packet store" if store is not None else "the ring"
        raise ApiError(
            404, "NOT_FOUND", f"Packet {packet_id} is not in {where} (gone, or not captured yet)"
        )
    names = sensors.json_names() if sensors.central else None
    summary = packet_data(encode_packets(np.array([record]), names)[0])
    wire_len = int(record["wire_len"])
    body = {
        "id": packet_id,
        "timestamp": iso_ms(int(record["ts_ns"])),
        "wire_length": wire_len,
        "captured_length": len(raw) if stored is not None else int(record["cap_len"]),
        "stored_length": len(raw),
        "truncated": len(raw) < wire_len,
        "source": source,
        "linktype": linktype,
        "layers": describe_frame(raw, linktype, wire_len),
        "raw_hex": raw.hex(),
        "hex_dump": hex_dump(raw),
    }
    body["summary"] = msgspec.json.decode(summary)
    return JSONResponse(body)


async def export_packets(request: Request) -> Response:
    ctx = context(request)
    query = request.query_params
    ticket = query.get("ticket")
    if ticket is not None and request.headers.get("authorization") is None:
        who = await redeem_ticket(ctx, ticket)
        require_or_ticket(request, who, "ANALYST")
        assert isinstance(who, Principal)
    else:
        who = require(request, "ANALYST")
    fmt = query.get("format", "pcap")
    if fmt not in EXPORT_FORMATS:
        raise ApiError(400, "BAD_REQUEST", "format must be pcap, csv or json")
    sensors = ctx.hub.sensors
    keys = ("format", "limit", "before", "after", "from", "to", "ticket")
    flt = query_filter(query, keys, sensors, who)
    names = sensors.json_names() if sensors.central else None
    from_ns, to_ns = parse_time("from", query.get("from")), parse_time("to", query.get("to"))
    if from_ns is not None or to_ns is not None:
        return await _export_stored(ctx, fmt, flt, from_ns, to_ns, query)
    ring = ctx.hub.ring
    limit = _optional_int(query, "limit", 1) or ring.capacity
    first, last = ringscan.bounds(ring, _optional_int(query, "after"),
                                  _optional_int(query, "before"))  # fmt: skip
    first = await ringscan.run(ringscan.start_for_newest, ring, flt, limit, first, last)
    linktype = None
    if fmt == "pcap":
        default = ctx.hub.status.linktype if ctx.hub.status else 1
        linktype = await ringscan.run(_linktype, ring, first, last, default)
    chunks = ringscan.forward(ring, flt, first, last, limit, linktype)
    stream: Iterator[bytes]
    if fmt == "pcap":
        stream = export.pcap_stream(chunks, linktype or 1, ring.raw_bytes)
    elif fmt == "csv":
        stream = export.csv_stream(chunks, names)
    else:
        stream = export.json_stream(chunks, names)
    return StreamingResponse(stream, media_type=EXPORT_FORMATS[fmt], headers=_download(fmt))


def _may_see(who: Principal, sensors: SensorDirectory, index: int) -> bool:
    """Whether `who` may see a packet of the sensor at `index` of the ring's records."""
    return who.sensors is None or index in sensors.indexes(who.sensors).tolist()


def _download(fmt: str) -> dict[str, str]:
    stamp = dt.datetime.fromtimestamp(time.time(), dt.UTC).strftime("%Y%m%d-%H%M%S")
    name = f"leireye-{stamp}.{fmt}"
    return {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}


async def _export_stored(
    ctx: ApiContext,
    fmt: str,
    flt: PacketFilter,
    from_ns: int | None,
    to_ns: int | None,
    query: Mapping[str, str],
) -> Response:
    """An export of a time range: whole frames from the packet store, oldest first (with
    `limit`: the first `limit`), decoded again to filter them (`storeread`). The headers say
    where the store begins (`X-LeirEye-Store-Oldest`) and whether retention has already cut
    the range's start (`X-LeirEye-Past-Retention: true`)."""
    store = ctx.packet_store
    if store is None:
        raise ApiError(409, "CONFLICT", "An export by time needs the packet store (store.enabled)")
    limit = _optional_int(query, "limit", 1)
    after, before = _optional_int(query, "after"), _optional_int(query, "before")
    low, high = from_ns or 0, to_ns or 2**63 - 1
    oldest = await run_in_threadpool(store.oldest)
    headers = _download(fmt)
    headers["X-LeirEye-Past-Retention"] = "true" if oldest is None or low < oldest else "false"
    if oldest is not None:
        headers["X-LeirEye-Store-Oldest"] = iso_ms(oldest)
    batches = _first(storeread.between(store, low, high, flt, before=before, after=after), limit)
    stream: Iterator[bytes]
    if fmt == "pcap":
        dlt = ctx.hub.status.linktype if ctx.hub.status else 1
        linktype = pcapfile.file_linktype(dlt)
        frames = ((b.records["ts_ns"], b.records["wire_len"], b.frames) for b in batches
                  if b.linktype == linktype)  # fmt: skip
        stream = pcapfile.pcap_chunks(frames, linktype, STORED_SNAPLEN)
    else:
        rows = ((b.records, None) for b in batches)
        stream = export.csv_stream(rows) if fmt == "csv" else export.json_stream(rows)
    return StreamingResponse(stream, media_type=EXPORT_FORMATS[fmt], headers=headers)


def _first(
    batches: Iterator[storeread.StoredBatch], limit: int | None
) -> Iterator[storeread.StoredBatch]:
    if limit is None:
        yield from batches
        return
    for batch in batches:
        if len(batch.records) >= limit:
            yield storeread.StoredBatch(batch.linktype, batch.records[:limit], batch.frames[:limit])
            return
        limit -= len(batch.records)
        yield batch


def _linktype(ring: ringscan.RingView, first: int, last: int, default: int) -> int:
    """A pcap file has one link type: the one of the newest packet in range (the capture's
    current one); packets of another link type (before a change of interface) are left out."""
    if last < first:
        return default
    records = ring.copy_range(last, last).records
    return int(records["linktype"][0]) if len(records) else default


ROUTES = [
    Route("/api/capture/packets", list_packets, methods=["GET"]),
    Route("/api/capture/packets/{packet_id}", packet_detail, methods=["GET"]),
    Route("/api/export/packets", export_packets, methods=["GET"]),
]
