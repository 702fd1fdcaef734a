"""Blocking iteration for scripts without asyncio: `for p in iter_packets(url, token=...)`.

The client runs on its own event loop in a daemon thread, so its keep-alive, token renewal and
reconnects go on while the caller is busy with a packet. At most `buffer` items wait in between:
past that the thread stops reading (and the server reports what it had to skip, as gaps).
Breaking out of the loop (or closing the generator) closes the connection and joins the thread;
a `ClientError` in the thread is raised in the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any, TypeVar

from leireye.client.client import LeirEyeClient
from leireye.client.core import Gap
from leireye.wire import PacketData, StatsData

T = TypeVar("T")
_DONE = object()


def iter_packets(
    url: str, *, buffer: int = 1000, gaps: bool = False, client: dict[str, Any] | None = None,
    **filters: Any,
) -> Iterator[Any]:  # fmt: skip
    """Packets (and `Gap` items with `gaps=True`) matching `filters` (the keywords of
    `LeirEyeClient.packets`). Client options (`token=`, `username=`, `password=`, `backoff=`,
    ...) go in `client` or directly as keywords."""
    options, filters = _split(client, filters)

    def stream(c: LeirEyeClient) -> AsyncGenerator[PacketData | Gap, None]:
        return c.packets(gaps=True, **filters) if gaps else c.packets(**filters)

    return _iterate(url, options, stream, buffer)


def iter_stats(
    url: str, *, interval_ms: int | None = None, buffer: int = 64, **options: Any
) -> Iterator[StatsData]:
    return _iterate(url, options, lambda c: c.stats(interval_ms), buffer)


_CLIENT_OPTIONS = frozenset({
    "token", "username", "password", "token_source", "api_url", "reconnect", "backoff",
    "ping_interval", "open_timeout", "sleep", "on_gap", "on_status",
})  # fmt: skip


def _split(
    client: dict[str, Any] | None, given: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    options = dict(client or {})
    filters: dict[str, Any] = {}
    for key, value in given.items():
        (options if key in _CLIENT_OPTIONS else filters)[key] = value
    return options, filters


def _iterate(
    url: str,
    options: dict[str, Any],
    stream: Callable[[LeirEyeClient], AsyncGenerator[T, None]],
    buffer: int,
) -> Iterator[T]:
    items: queue.Queue[Any] = queue.Queue()
    loop = asyncio.new_event_loop()
    credits = asyncio.Semaphore(buffer)  # created outside a loop: binds on first use

    async def produce() -> None:
        try:
            async with LeirEyeClient(url, **options) as c, contextlib.aclosing(stream(c)) as it:
                async for item in it:
                    await credits.acquire()
                    items.put(item)
        except BaseException as exc:  # handed to the caller's thread, re-raised there
            items.put(exc)
        finally:
            items.put(_DONE)

    task = loop.create_task(produce())

    def run() -> None:
        loop.run_until_complete(task)
        loop.run_until_complete(loop.shutdown_asyncgens())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not _DONE:
            if isinstance(item, asyncio.CancelledError):
                break
            if isinstance(item, BaseException):
                raise item
            loop.call_soon_threadsafe(credits.release)
            yield item
    finally:
        if not task.done():
            loop.call_soon_threadsafe(task.cancel)
        thread.join()
        loop.close()
