"""One connection's bounded outbox: what the session has decided to send, waiting for the socket.

Two queues, drained control first:

* `control` holds replies, errors, `auth_*`, `status` and `stats` (the last two as renderers, so
  a queued `stats` shows the freshest numbers when it is finally sent and never piles up). It is
  bounded by `control_limit`; a push over it is refused and the session closes the connection:
  a client that does not read the answers to its own requests cannot be served.
* `stream` holds `packet`/`packets` messages and `dropped` notices, bounded by `capacity` packets
  (a `packets` batch counts as the packets in it). When a live push does not fit, the outbox
  takes what fits and then *skips*: packets are counted, not queued, until the client has read
  the stream down to half its capacity; then one `dropped` notice with the count is queued
  exactly where the packets are missing, and streaming resumes. Replays never skip: they take
  only what fits (`push_replay` returns how many) and the session resumes from there later.

Packets arrive as a `frames.PacketRun` shared by the session's filter group: a run taken whole
queues the group's own batch frames (made once for all of it), a run taken in part gets frames
of its own, so what a client receives does not depend on who else shares its group.

Control first means a pong, an error or a status never waits behind thousands of packets, and
the stream's own order (packets, the notices that sit between them) is never disturbed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from leireye.web.frames import Frame, PacketRun
from leireye.wire import Close, Dropped, DropReason, encode

Renderer = Callable[[], str | None]
"""Makes a control message when it is sent; None: nothing to send any more (skipped)."""

Batcher = Callable[[PacketRun], list[Frame]]
"""A run's batch frames (made once per run and shared); None: one `packet` message each."""


class _Notice:
    __slots__ = ("count", "reason")

    def __init__(self, reason: DropReason, count: int) -> None:
        self.reason = reason
        self.count = count

    def render(self) -> str:
        what = {
            DropReason.RESUME: "records after `since` were already overwritten in the ring",
            DropReason.RING: "the server fell a ring's length behind the capture",
            DropReason.SLOW_CONSUMER: "packets were skipped because this client read too slowly",
            DropReason.FLOW_RING: "flow events were overwritten before this server read them",
            DropReason.FLOW_SLOW_CONSUMER: (
                "flow events were skipped because this client read too slowly"
            ),
        }[self.reason]
        return encode(Dropped(self.reason, self.count, f"{self.count} {what}")).decode()


class Outbox:
    """`slow_reason`: the reason of the notice after a skip (a session's flow events have an
    outbox of their own, whose skips are counted apart from packets')."""

    def __init__(
        self,
        capacity: int,
        control_limit: int,
        slow_reason: DropReason = DropReason.SLOW_CONSUMER,
    ) -> None:
        self.capacity = capacity
        self.slow_reason = slow_reason
        self.control_limit = control_limit
        self.queued = 0  # packets in `stream`
        self.dropped = 0  # packets skipped for this client, in all
        self.skipping = False
        self._missed = 0  # skipped since the last notice
        self._control: deque[str | Renderer | Close] = deque()
        self._stream: deque[str | Frame | _Notice] = deque()
        self._finished = False

    def __len__(self) -> int:
        return len(self._control) + len(self._stream)

    @property
    def control_size(self) -> int:
        return len(self._control)

    def room(self) -> int:
        """Packets that fit now (0 while skipping)."""
        return 0 if self.skipping or self._finished else self.capacity - self.queued

    def push_control(self, item: str | Renderer) -> bool:
        """Queue a control message; False when the control queue is full (nothing queued)."""
        if self._finished:
            return True
        if len(self._control) >= self.control_limit:
            return False
        self._control.append(item)
        return True

    def push_live(self, run: PacketRun, batcher: Batcher | None) -> None:
        """Queue live packets, skipping what does not fit (see the module docstring)."""
        if self._finished or not len(run):
            return
        if self.skipping:
            self._miss(len(run))
            return
        take = min(self.capacity - self.queued, len(run))
        self._append(run, take, batcher)
        if take < len(run):
            self.skipping = True
            self._miss(len(run) - take)

    def push_replay(self, run: PacketRun, batcher: Batcher | None) -> int:
        """Queue as many replayed packets as fit, in order; returns how many."""
        take = min(self.room(), len(run))
        self._append(run, take, batcher)
        return take

    def notice(self, reason: DropReason, count: int) -> None:
        """Queue a `dropped` notice at the current end of the stream (merged with a pending
        notice of the same reason right before it)."""
        if self._finished or count <= 0:
            return
        last = self._stream[-1] if self._stream else None
        if isinstance(last, _Notice) and last.reason == reason:
            last.count += count
        else:
            self._stream.append(_Notice(reason, count))

    def purge_stream(self) -> None:
        """Forget queued packets and notices (after an unsubscribe); counters stay."""
        self._stream.clear()
        self.queued = 0
        self.skipping = False
        self._missed = 0

    def finish(self, final: Sequence[str], close: Close) -> None:
        """Replace everything queued by `final` messages and the close; later pushes are
        ignored."""
        self.purge_stream()
        self._control = deque([*final, close])
        self._finished = True

    def pop(self) -> str | Frame | Close | None:
        """The next thing to send, control first; None when empty. A `Frame` is a batch
        shared with the other subscribers of the same group (send `payload` or `wire()`)."""
        while self._control:
            item = self._control.popleft()
            text = item if isinstance(item, str | Close) else item()
            if text is not None:
                return text
        if not self._stream:
            return None
        entry = self._stream.popleft()
        out: str | Frame
        if isinstance(entry, str):
            self.queued -= 1
            out = entry
        elif isinstance(entry, Frame):
            self.queued -= entry.count
            out = entry
        else:
            return entry.render()
        if self.skipping and self.queued <= self.capacity // 2:
            self.skipping = False
            self.notice(self.slow_reason, self._missed)
            self._missed = 0
        return out

    def _miss(self, count: int) -> None:
        self._missed += count
        self.dropped += count

    def _append(self, run: PacketRun, take: int, batcher: Batcher | None) -> None:
        """The first `take` packets of `run`: the run's shared frames when it is taken whole,
        frames of its own for a part."""
        if take <= 0:
            return
        part = run if take == len(run) else run.take(slice(0, take))
        if batcher is None:
            assert part.messages is not None
            self._stream.extend(part.messages)
        else:
            self._stream.extend(batcher(part))
        self.queued += take
