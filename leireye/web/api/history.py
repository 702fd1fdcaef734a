"""What the flow and host endpoints share: time ranges and pages from the query string, and
running a store query on a thread (DuckDB must not hold the event loop that serves the
WebSockets) with its errors as API errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from starlette.requests import Request

from leireye.flows.history import FlowHistory, HistoryError
from leireye.flows.query import parse_time_ns
from leireye.web.api.context import context
from leireye.web.api.errors import ApiError

T = TypeVar("T")

DEFAULT_SPAN_NS: Final = 3600 * 10**9  # without `from`: the last hour
PAGE_KEYS: Final = ("from", "to", "sort", "order", "limit", "offset")


def parse_time(key: str, text: str) -> int:
    """`from`/`to` in nanoseconds since the epoch (`query.parse_time_ns`); 400 when bad."""
    try:
        return parse_time_ns(text)
    except (ValueError, OverflowError) as exc:
        raise ApiError(400, "BAD_REQUEST", f"{key}: {exc}") from None


@dataclass(frozen=True)
class Page:
    from_ns: int
    to_ns: int
    sort: str | None
    descending: bool
    limit: int
    offset: int


def page_of(
    query: Mapping[str, str], rows_max: int, default_span_ns: int = DEFAULT_SPAN_NS
) -> Page:
    """The time range (default: the last hour up to now), sort, order and page asked for."""
    now = time.time_ns()
    to_ns = parse_time("to", query["to"]) if query.get("to") else now
    from_ns = parse_time("from", query["from"]) if query.get("from") else to_ns - default_span_ns
    if to_ns < from_ns:
        raise ApiError(400, "BAD_REQUEST", "to is before from")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "BAD_REQUEST", "order must be asc or desc")
    return Page(
        from_ns,
        to_ns,
        query.get("sort") or None,
        order == "desc",
        number(query, "limit", 1, rows_max, min(100, rows_max)),
        number(query, "offset", 0, 100_000, 0),
    )


def number(query: Mapping[str, str], key: str, low: int, high: int, default: int) -> int:
    text = query.get(key)
    if text is None or text == "":
        return default
    if not text.isdigit() or len(text) > 12 or not low <= int(text) <= high:
        raise ApiError(400, "BAD_REQUEST", f"{key} must be an integer from {low} to {high}")
    return int(text)


def refuse_unknown(query: Mapping[str, str], known: tuple[str, ...]) -> None:
    unknown = sorted(set(query) - set(known))
    if unknown:
        raise ApiError(400, "INVALID_FILTER", f"Unknown query parameter {unknown[0][:40]!r}")


def store(request: Request) -> FlowHistory:
    history = context(request).history
    if history is None:
        raise ApiError(503, "SERVICE_UNAVAILABLE", "This worker has no flow store")
    return history


async def run(call: Callable[[], T]) -> T:
    """`call` (a store query) on a thread; a bad argument is a 400, a query past
    `history.query_timeout_s` a 503."""
    try:
        return await asyncio.to_thread(call)
    except HistoryError as exc:
        if exc.timed_out:
            raise ApiError(503, "SERVICE_UNAVAILABLE", str(exc)) from None
        raise ApiError(400, "BAD_REQUEST", str(exc)) from None
