"""Follow Stream: one conversation's frames in, the payload each side sent out (`follow`).

The frames come in capture order, as `(ts_ns, linktype, frame bytes)`; frames of any other
conversation are skipped. UDP gives one segment per datagram, in capture order. TCP is
reassembled per direction, by sequence number:

- Sequence numbers are unwrapped to 64-bit offsets relative to the first one seen, each new one
  taken as the nearest to the highest offset so far (a 32-bit wrap, or a stream past 4 GiB, goes
  on counting). A SYN takes one number (its data, TCP Fast Open, starts at seq + 1) and fixes
  offset 0 of that direction; without a SYN the lowest offset seen is 0. A FIN takes one number
  after its data and ends the direction; a RST ends it too.
- Overlaps and retransmissions: **the first bytes received win**, as Wireshark's reassembly keeps
  the first copy. Bytes received again are counted (`retransmitted`), and those whose content
  differs from what was kept (`conflicts`), so a rewritten retransmission is visible, not lost.
- Out-of-order segments are placed at their offset; the bytes nobody sent us (lost before the
  capture point, or cut off a frame the ring stored short) are gaps: a segment with no data and
  `gap` bytes. A gap before a FIN is reported up to the FIN.
- The two directions are interleaved in the order their bytes became *deliverable* (in sequence
  after everything before them arrived), as Wireshark's Follow TCP Stream shows a conversation;
  each segment carries the capture time of its first byte (`ts_ns`).

Bounded: at most `max_bytes` payload bytes (both directions together) are returned; data past
that is dropped while reading (memory stays near `max_bytes`) and the stream says `truncated`.

Pure: no sockets, files or clocks. `payload.transport_payload` reads the headers.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from leireye.decode.detail import hex_dump
from leireye.record import TcpFlag

from .payload import TCP, UDP, Payload, transport_payload

Direction = Literal["client", "server"]
Endpoint = tuple[str, int]
CLIENT: Final = "client"
SERVER: Final = "server"
DEFAULT_MAX_BYTES: Final = 16 << 20
_WRAP: Final = 1 << 32
_HALF: Final = 1 << 31
_PRINTABLE: Final = bytes(b if 0x20 <= b < 0x7F or b in b"\t\n\r" else 0x2E for b in range(256))


@dataclass(frozen=True, slots=True)
class Conversation:
    """What to follow: the transport ("TCP" or "UDP") and its two ends, in either order."""

    transport: str
    a: Endpoint
    b: Endpoint


@dataclass(frozen=True, slots=True)
class Segment:
    """Payload bytes of one direction at byte `offset` of it, or (data empty) a gap of `gap`
    missing bytes there; `ts_ns` is the capture time of the frame that brought the first byte
    (for a gap, of the frame after it)."""

    direction: Direction
    offset: int
    data: bytes
    gap: int
    ts_ns: int


@dataclass
class Stream:
    """A reassembled conversation. `client` sent the SYN (or, without one seen, the first
    frame); `segments` interleave both directions (module docstring)."""

    transport: str  # "TCP" or "UDP"; "" when no TCP or UDP frame was found
    client: Endpoint | None
    server: Endpoint | None
    segments: list[Segment]
    frames: int = 0  # frames of this conversation
    skipped: int = 0  # frames of another conversation, or not TCP/UDP, or unreadable
    cut_frames: int = 0  # frames whose payload was cut short where they were stored
    retransmitted: int = 0  # TCP payload bytes received more than once
    conflicts: int = 0  # of those, bytes whose content differed from the copy kept
    truncated: bool = False  # more payload than `max_bytes`: the rest is not here
    max_bytes: int = DEFAULT_MAX_BYTES
    ended: dict[str, str] = field(default_factory=dict)  # direction -> "fin" | "rst"

    def data(self, direction: Direction | None = None) -> bytes:
        """The payload bytes of one direction (or of both, in segment order); gaps left out."""
        return b"".join(
            s.data for s in self.segments if direction is None or s.direction == direction
        )

    def gap_bytes(self, direction: Direction | None = None) -> int:
        return sum(s.gap for s in self.segments if direction is None or s.direction == direction)

    def payload_bytes(self, direction: Direction | None = None) -> int:
        return sum(
            len(s.data) for s in self.segments if direction is None or s.direction == direction
        )

    def text(self, direction: Direction | None = None) -> str:
        return ascii_text(self.data(direction))

    def hex(self, direction: Direction) -> str:
        return hex_dump(self.data(direction))


def ascii_text(data: bytes) -> str:
    """Wireshark's ASCII view: printable ASCII, tab, CR and LF as they are, every other byte '.'."""
    return data.translate(_PRINTABLE).decode("ascii")


def follow(
    frames: Iterable[tuple[int, int, bytes]],
    conversation: Conversation | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Stream:
    """Reassemble `conversation` from `frames` (consumed once, lazily); None follows the first
    TCP or UDP conversation found."""
    want: tuple[int, frozenset[Endpoint]] | None = None
    if conversation is not None:
        proto = TCP if conversation.transport.upper() == "TCP" else UDP
        want = (proto, frozenset((conversation.a, conversation.b)))
    packets: list[tuple[int, Payload]] = []
    skipped = 0
    for ts_ns, linktype, frame in frames:
        p = transport_payload(frame, linktype)
        if p is None:
            skipped += 1
            continue
        key = (p.proto, frozenset(p.endpoints))
        if want is None:
            want = key
        if key != want:
            skipped += 1
            continue
        packets.append((ts_ns, p))
    if not packets:
        return Stream("", None, None, [], skipped=skipped, max_bytes=max_bytes)
    client, server = _roles(packets)
    stream = Stream("TCP" if packets[0][1].proto == TCP else "UDP", client, server, [])
    stream.frames, stream.skipped, stream.max_bytes = len(packets), skipped, max_bytes
    stream.cut_frames = sum(1 for _, p in packets if p.missing)
    if packets[0][1].proto == UDP:
        _datagrams(stream, packets)
    else:
        _reassemble(stream, packets)
    return stream


def _roles(packets: list[tuple[int, Payload]]) -> tuple[Endpoint, Endpoint]:
    for _, p in packets:
        if p.proto == TCP and p.flags & TcpFlag.SYN:
            src, dst = p.endpoints
            return (dst, src) if p.flags & TcpFlag.ACK else (src, dst)
    return packets[0][1].endpoints


def _datagrams(stream: Stream, packets: list[tuple[int, Payload]]) -> None:
    offsets = {CLIENT: 0, SERVER: 0}
    room = stream.max_bytes
    for ts_ns, p in packets:
        direction: Direction = CLIENT if (p.src, p.sport) == stream.client else SERVER
        at = offsets[direction]
        data = p.data[:room]
        if data or not p.data:
            stream.segments.append(Segment(direction, at, data, 0, ts_ns))
        room -= len(data)
        if len(data) < len(p.data):
            stream.truncated = True
            return
        if p.missing:
            stream.segments.append(Segment(direction, at + len(data), b"", p.missing, ts_ns))
        offsets[direction] = at + len(data) + p.missing


class _Half:
    """One TCP direction: received pieces, non-overlapping, sorted by offset."""

    def __init__(self, limit: int) -> None:
        self.anchor: int | None = None  # the sequence number of offset 0 (first one seen)
        self.high = 0  # the highest offset seen, for unwrapping
        self.start: int | None = None  # offset of the first byte, once a SYN fixed it
        self.end: int | None = None  # offset after the last byte, once a FIN fixed it
        self.end_ts = 0
        self.limit = limit
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.data: list[bytes] = []
        self.ts: list[int] = []
        self.retransmitted = 0
        self.conflicts = 0
        self.dropped = False  # bytes past `limit` were seen
        self.cut_ts: dict[int, int] = {}  # offset where a cut frame's missing bytes start -> ts

    def offset(self, seq: int) -> int:
        if self.anchor is None:
            self.anchor = seq
            return 0
        delta = (seq - self.anchor - self.high + _HALF) % _WRAP - _HALF
        at = self.high + delta
        self.high = max(self.high, at)
        return at

    def add(self, at: int, data: bytes, ts_ns: int) -> None:
        base = self.start if self.start is not None else 0
        if at + len(data) > base + self.limit:
            self.dropped = True
            data = data[: max(0, base + self.limit - at)]
        if not data:
            return
        end = at + len(data)
        if not self.starts or at >= self.ends[-1]:
            self._insert(len(self.starts), at, data, ts_ns)
            return
        j = bisect_right(self.starts, at) - 1
        if j < 0 or self.ends[j] <= at:
            j += 1
        pos = at
        while pos < end:
            if j < len(self.starts) and self.starts[j] <= pos:
                stop = min(end, self.ends[j])
                kept = self.data[j][pos - self.starts[j] : stop - self.starts[j]]
                again = data[pos - at : stop - at]
                self.retransmitted += stop - pos
                if kept != again:
                    self.conflicts += sum(1 for x, y in zip(kept, again, strict=True) if x != y)
                pos = stop
                j += 1
            else:
                stop = min(end, self.starts[j]) if j < len(self.starts) else end
                self._insert(j, pos, data[pos - at : stop - at], ts_ns)
                pos = stop
                j += 1

    def _insert(self, j: int, at: int, data: bytes, ts_ns: int) -> None:
        self.starts.insert(j, at)
        self.ends.insert(j, at + len(data))
        self.data.insert(j, data)
        self.ts.insert(j, ts_ns)

    def pieces(self, direction: Direction) -> Iterator[tuple[int, Segment]]:
        """(deliverable time, segment) in offset order, gaps included, offsets from 0."""
        if not self.starts and self.start is None:
            return
        base = self.start if self.start is not None else self.starts[0]
        pos, ready = base, 0
        for at, end, data, ts in zip(self.starts, self.ends, self.data, self.ts, strict=True):
            if end <= base:
                continue
            if at < base:
                data, at = data[base - at :], base
            if at > pos:
                gap_ts = self.cut_ts.get(pos, ts)
                ready = max(ready, gap_ts)
                yield ready, Segment(direction, pos - base, b"", at - pos, gap_ts)
            ready = max(ready, ts)
            yield ready, Segment(direction, at - base, data, 0, ts)
            pos = end
        if self.end is not None and self.end > pos and not self.dropped:
            gap_ts = self.cut_ts.get(pos, self.end_ts)
            ready = max(ready, gap_ts)
            yield ready, Segment(direction, pos - base, b"", self.end - pos, gap_ts)


def _reassemble(stream: Stream, packets: list[tuple[int, Payload]]) -> None:
    halves = {CLIENT: _Half(stream.max_bytes), SERVER: _Half(stream.max_bytes)}
    for ts_ns, p in packets:
        direction = CLIENT if (p.src, p.sport) == stream.client else SERVER
        half = halves[direction]
        at = half.offset(p.seq)
        if p.flags & TcpFlag.SYN:
            at += 1
            if half.start is None:
                half.start = at
        if p.flags & TcpFlag.RST:
            stream.ended.setdefault(direction, "rst")
        if p.data:
            half.add(at, p.data, ts_ns)
        if p.missing:
            half.cut_ts.setdefault(at + len(p.data), ts_ns)
        if p.flags & TcpFlag.FIN and half.end is None:
            half.end, half.end_ts = at + len(p.data) + p.missing, ts_ns
            stream.ended[direction] = "fin"
    for half in halves.values():
        stream.retransmitted += half.retransmitted
        stream.conflicts += half.conflicts
        stream.truncated |= half.dropped
    merged = heapq.merge(
        halves[CLIENT].pieces(CLIENT), halves[SERVER].pieces(SERVER), key=lambda item: item[0]
    )
    _collect(stream, (segment for _, segment in merged))


def _collect(stream: Stream, segments: Iterator[Segment]) -> None:
    """Join runs of contiguous data of one direction into one segment; stop at `max_bytes`."""
    out = stream.segments
    room = stream.max_bytes
    run: list[bytes] = []
    head: Segment | None = None
    for seg in segments:
        if seg.data and len(seg.data) > room:
            seg = Segment(seg.direction, seg.offset, seg.data[:room], 0, seg.ts_ns)
            stream.truncated = True
        if head is not None and (seg.direction != head.direction or not seg.data):
            out.append(Segment(head.direction, head.offset, b"".join(run), 0, head.ts_ns))
            head, run = None, []
        if not seg.data:
            if seg.gap:
                out.append(seg)
            continue
        if head is None:
            head = seg
        run.append(seg.data)
        room -= len(seg.data)
        if room <= 0:
            stream.truncated |= any(s.data for s in segments)
            break
    if head is not None:
        out.append(Segment(head.direction, head.offset, b"".join(run), 0, head.ts_ns))
