"""/api/stream: Follow Stream, one TCP or UDP conversation reassembled (`leireye.store.follow`).

The handler reads the conversation (transport, two ends, time range) from the query, takes its
frames from `frame_source` and reassembles them in a thread, off the event loop. `frame_source`
is the one place that says where frames come from: today the live ring.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
from collections.abc import Mapping
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leireye.flows.model import Flow
from leireye.store.follow import Conversation, Endpoint, Stream, ascii_text, follow
from leireye.store.source import Frames, FrameSource, StoreFrames
from leireye.web.api.context import ApiContext, context, require_whole
from leireye.web.api.errors import ApiError
from leireye.web.api.ringframes import RingFrames
from leireye.web.encode import iso_ms

KEYS: Final = {"transport", "a", "b", "from", "to", "format", "direction", "encoding", "max_bytes"}
DIRECTIONS: Final = ("client", "server", "both")


def frame_source(ctx: ApiContext, from_ns: int | None, to_ns: int | None) -> FrameSource:
    """Where Follow Stream reads frames: the packet store (whole frames) when it is on and the
    request names a time range (a flow's stream always does); else the ring, whose frames are
    cut at `ring.raw_bytes` (shown as gaps). Without a range, the store would be read whole.
    When the store has none of the conversation's frames (not written yet, or the store is
    behind), `answer` reads the ring."""
    if ctx.packet_store is not None and from_ns is not None and to_ns is not None:
        return StoreFrames(ctx.packet_store)
    ring = ctx.hub.ring
    return RingFrames(ring, ring.raw_bytes)


def parse_endpoint(key: str, text: str) -> Endpoint:
    """`IP:PORT`, IPv6 as `[IP]:PORT`; the address in its canonical spelling."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if not sep or addr is None or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ApiError(
            400, "BAD_REQUEST", f"{key} must be IP:PORT ([IPv6]:PORT), not {text[:60]!r}"
        )
    return str(addr), int(port)


def parse_time(key: str, text: str | None) -> int | None:
    """ISO 8601 (a zone, or UTC), or Unix seconds; in nanoseconds."""
    if text is None or text == "":
        return None
    try:
        return _unix(text) if text[0].isdigit() and "-" not in text else _iso(text)
    except (ValueError, OverflowError):
        raise ApiError(400, "BAD_REQUEST", f"{key} must be ISO 8601 or Unix seconds") from None


def _unix(text: str) -> int:
    """Unix seconds to the nanosecond ("1795643042.695593001"), not through a float's 16
    digits; other spellings of a number ("1e9") through a float."""
    whole, _, frac = text.partition(".")
    if whole.isdigit() and (frac == "" or frac.isdigit()):
        return int(whole) * 1_000_000_000 + int((frac + "0" * 9)[:9])
    return int(float(text) * 1e9)


def _iso(text: str) -> int:
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def parse_query(
    query: Mapping[str, str], most: int
) -> tuple[Conversation, int | None, int | None, int]:
    unknown = sorted(set(query) - KEYS)
    if unknown:
        raise ApiError(400, "BAD_REQUEST", f"Unknown query parameter {unknown[0][:40]!r}")
    transport = query.get("transport", "tcp").upper()
    if transport not in ("TCP", "UDP"):
        raise ApiError(400, "BAD_REQUEST", "transport must be tcp or udp")
    if not query.get("a") or not query.get("b"):
        raise ApiError(400, "BAD_REQUEST", "a and b (the two ends, IP:PORT) are required")
    a, b = parse_endpoint("a", query["a"]), parse_endpoint("b", query["b"])
    from_ns, to_ns = parse_time("from", query.get("from")), parse_time("to", query.get("to"))
    max_bytes = most
    if query.get("max_bytes"):
        value = query["max_bytes"]
        if not value.isdigit() or not 1 <= int(value) <= most:
            raise ApiError(400, "BAD_REQUEST", f"max_bytes must be from 1 to {most}")
        max_bytes = int(value)
    return Conversation(transport, a, b), from_ns, to_ns, max_bytes


def reassemble(source: FrameSource, conv: Conversation, from_ns: int | None, to_ns: int | None,
               max_bytes: int) -> tuple[Stream, Frames]:  # fmt: skip
    found = source.conversation(conv, from_ns, to_ns)
    return follow(found.frames, conv, max_bytes), found


async def stream(request: Request) -> Response:
    require_whole(request, "ANALYST")
    ctx = context(request)
    conv, from_ns, to_ns, max_bytes = parse_query(request.query_params,
                                                  ctx.config.limits.follow_max_bytes)  # fmt: skip
    return await answer(request, conv, from_ns, to_ns, max_bytes)


def conversation_of(flow: Flow) -> tuple[Conversation, int, int]:
    """A flow's conversation and time range, for `GET /api/flows/{uid}/stream` (the caller
    looks the flow up by uid, then calls `answer`); ValueError for a flow without ports."""
    if flow.transport not in ("TCP", "UDP") or flow.orig_port is None or flow.resp_port is None:
        raise ValueError(f"a {flow.transport} flow has no stream to follow")
    orig, resp = (flow.orig_ip, flow.orig_port), (flow.resp_ip, flow.resp_port)
    return Conversation(flow.transport, orig, resp), flow.first_ns, flow.last_ns


async def answer(request: Request, conv: Conversation, from_ns: int | None, to_ns: int | None,
                 max_bytes: int) -> Response:  # fmt: skip
    """The Follow Stream answer for `conv` (the caller checked the role): the query's
    `format`, `direction` and `encoding` say its shape."""
    query = request.query_params
    fmt, direction = query.get("format", "json"), query.get("direction", "both")
    encoding = query.get("encoding", "base64")
    if fmt not in ("json", "raw") or direction not in DIRECTIONS:
        raise ApiError(400, "BAD_REQUEST", "format must be json or raw, direction client, "
                       "server or both")  # fmt: skip
    if encoding not in ("base64", "text"):
        raise ApiError(400, "BAD_REQUEST", "encoding must be base64 or text")
    ctx = context(request)
    source = frame_source(ctx, from_ns, to_ns)
    st, found = await asyncio.to_thread(reassemble, source, conv, from_ns, to_ns, max_bytes)
    if not st.frames and not isinstance(source, RingFrames):  # not (yet) in the store
        ring = RingFrames(ctx.hub.ring, ctx.hub.ring.raw_bytes)
        st, found = await asyncio.to_thread(reassemble, ring, conv, from_ns, to_ns, max_bytes)
    if not st.frames:
        a, b = (f"{ip}:{port}" for ip, port in (conv.a, conv.b))
        raise ApiError(404, "NOT_FOUND", f"No {conv.transport} frames between {a} and {b} in "
                       f"the {found.source} for that time range")  # fmt: skip
    if fmt == "raw":
        return raw_response(st, direction)
    return JSONResponse(stream_body(st, found, encoding))


def raw_response(st: Stream, direction: str) -> Response:
    data = st.data(None if direction == "both" else direction)  # type: ignore[arg-type]
    client = st.client or ("", 0)
    name = f"stream-{client[0]}-{client[1]}-{direction}.bin".replace(":", "_")
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "no-store",
        "X-Stream-Truncated": "true" if st.truncated else "false",
        "X-Stream-Gap-Bytes": str(st.gap_bytes(None if direction == "both" else direction)),  # type: ignore[arg-type]
    }
    return Response(data, media_type="application/octet-stream", headers=headers)


def stream_body(st: Stream, found: Frames, encoding: str) -> dict[str, object]:
    incomplete = None
    if st.cut_frames and found.cut_at is not None:
        incomplete = (
            f"incomplete: {st.cut_frames} frame{'s' if st.cut_frames > 1 else ''} cut at "
            f"{found.cut_at} bytes in the {found.source} (the packet store keeps them whole)"
        )
    segments = []
    for s in st.segments:
        item: dict[str, object] = {"direction": s.direction, "offset": s.offset,
                                   "timestamp": iso_ms(s.ts_ns), "ts_ns": s.ts_ns}  # fmt: skip
        if s.gap:
            item["gap"] = s.gap
        elif encoding == "text":
            item["text"] = ascii_text(s.data)
        else:
            item["data"] = base64.b64encode(s.data).decode("ascii")
        segments.append(item)
    assert st.client is not None and st.server is not None
    return {
        "transport": st.transport,
        "client": {"ip": st.client[0], "port": st.client[1]},
        "server": {"ip": st.server[0], "port": st.server[1]},
        "source": found.source,
        "frames": st.frames,
        "client_bytes": st.payload_bytes("client"),
        "server_bytes": st.payload_bytes("server"),
        "gap_bytes": st.gap_bytes(),
        "retransmitted_bytes": st.retransmitted,
        "conflicting_bytes": st.conflicts,
        "cut_frames": st.cut_frames,
        "incomplete": incomplete,
        "truncated": st.truncated,
        "max_bytes": st.max_bytes,
        "ended": st.ended,
        "segments": segments,
    }


ROUTES = [Route("/api/stream", stream, methods=["GET"])]
