"""Where Follow Stream gets a conversation's frames: the `FrameSource` protocol.

A source hands `follow` the frames that may belong to one conversation within a time range, in
capture order, lazily (`follow` skips the others, so a source may over-select). Two kinds:

- the live ring (`leireye.web.api.ringframes.RingFrames`): only the last few seconds to minutes,
  and only the first `ring.raw_bytes` of each frame, so longer frames leave gaps (`cut_at`);
- the packet store (`StoreFrames` below, over the store's reader): whole frames, for as long as
  the store keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from .follow import Conversation

Frame = tuple[int, int, bytes]  # (ts_ns, linktype, frame bytes)


@dataclass
class Frames:
    """What a source found: `frames` (an iterator, read once) and how complete they are."""

    frames: Iterable[Frame]
    source: str  # "ring" or "store"
    cut_at: int | None = None  # frames are kept only up to this many bytes (None: whole)


class FrameSource(Protocol):
    def conversation(
        self, conversation: Conversation, from_ns: int | None, to_ns: int | None
    ) -> Frames:
        """The frames that may belong to `conversation` captured in `[from_ns, to_ns]` (None:
        no bound on that side), in capture order."""
        ...


class StoredFrameLike(Protocol):
    @property
    def ts_ns(self) -> int: ...

    @property
    def linktype(self) -> int: ...

    @property
    def data(self) -> bytes: ...


class StoreReader(Protocol):
    def between(self, from_ns: int, to_ns: int) -> Iterable[StoredFrameLike]: ...


class StoreFrames:
    """A `FrameSource` over the packet store's reader (`PacketStore.between`): whole frames of
    the time range, every conversation's (`follow` picks its own)."""

    def __init__(self, reader: StoreReader) -> None:
        self.reader = reader

    def conversation(
        self, conversation: Conversation, from_ns: int | None, to_ns: int | None
    ) -> Frames:
        del conversation  # the store's flow index may narrow this later; follow filters
        return Frames(self._frames(from_ns or 0, to_ns or 2**63 - 1), "store")

    def _frames(self, from_ns: int, to_ns: int) -> Iterator[Frame]:
        for f in self.reader.between(from_ns, to_ns):
            yield f.ts_ns, f.linktype, f.data
