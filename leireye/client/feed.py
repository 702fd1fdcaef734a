"""A bounded hand-over from the connection's reader to one consumer, with a terminal error.

`put` waits while the feed is full: the reader stops reading the socket, and a consumer that
falls behind makes the server skip packets for it (which it then reports as a `dropped`
notice, i.e. a `Gap`) instead of growing this process's memory. `put_latest` never waits and
drops the oldest item instead (for periodic snapshots such as stats). `fail` ends the feed with
an exception that `get` raises once the items before it have been taken; `finish` ends it with
`FeedClosed`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FeedClosed(Exception):
    """The client was closed: the consumer's iteration ends."""


class Feed(Generic[T]):
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._items: deque[T] = deque()
        self._more = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._end: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ended(self) -> bool:
        return self._end is not None

    async def put(self, item: T) -> None:
        while len(self._items) >= self.limit and self._end is None:
            self._room.clear()
            await self._room.wait()
        self._items.append(item)
        self._more.set()

    def put_latest(self, item: T) -> None:
        while len(self._items) >= self.limit:
            self._items.popleft()
        self._items.append(item)
        self._more.set()

    def fail(self, error: BaseException) -> None:
        if self._end is None:
            self._end = error
        self._more.set()
        self._room.set()

    def finish(self) -> None:
        self.fail(FeedClosed())

    async def get(self) -> T:
        while not self._items:
            if self._end is not None:
                raise self._end
            self._more.clear()
            await self._more.wait()
        item = self._items.popleft()
        if len(self._items) <= self.limit // 2:
            self._room.set()
        return item
