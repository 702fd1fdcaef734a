"""The packets of one filter group from one ring read, and the frames made of them once.

Why it is shaped so
-------------------
Every subscriber of a group (same filters, same options) gets the same packets from a read, so
whatever is made of them (the `packets` batches of a batch subscription, the binary batches of a
`format: "msgpack"` one, and the bytes of each WebSocket frame) is made once, on first use, kept
in the run, and queued by reference in every subscriber's outbox. A subscriber that can take only
part of a run (its outbox is nearly full, or the run overlaps packets it already has) gets frames
made for that part alone: the same messages the old per-session path made, at the old price, on
the rare step where it happens.

A server-to-client WebSocket frame is not masked, so the bytes of a frame are the same for every
connection: `Frame.wire()` makes them once (RFC 6455 §5.2: FIN + opcode, the 7/16/64-bit length,
the payload) and the shell writes them straight to each transport when the server lets it
(`protocols.FRAME_EXTENSION`), or sends the payload as an ordinary ASGI message otherwise.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np

from leireye.web.encode import batch_messages

OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2


def frame_header(opcode: int, size: int) -> bytes:
    """The header of one whole unmasked frame carrying `size` payload bytes."""
    first = 0x80 | opcode
    if size < 126:
        return bytes((first, size))
    if size < 65536:
        return struct.pack("!BBH", first, 126, size)
    return struct.pack("!BBQ", first, 127, size)


class Frame:
    """One stream message and how many packets it carries; its wire bytes made on first use.
    `payload` is a `str` (a text frame) or `bytes` (a binary frame)."""

    __slots__ = ("_wire", "count", "payload")

    def __init__(self, payload: str | bytes, count: int) -> None:
        self.payload = payload
        self.count = count
        self._wire: bytes | None = None

    def wire(self) -> bytes:
        if self._wire is None:
            payload = self.payload
            if isinstance(payload, str):
                data, opcode = payload.encode("utf-8", "surrogatepass"), OP_TEXT
            else:
                data, opcode = payload, OP_BINARY
            self._wire = frame_header(opcode, len(data)) + data
        return self._wire


BinaryBatcher = Callable[[np.ndarray, int], list[tuple[bytes, int]]]
"""Records -> binary batch messages of at most `max_bytes` each: (message, packets in it)."""


class PacketRun:
    """Packets that passed one filter, ids ascending: their `packet` messages (JSON text, made
    once per worker and shared), their records when a binary subscriber needs them, and the
    batch frames made of them, per kind, on first use."""

    __slots__ = ("_frames", "ids", "messages", "records")

    def __init__(
        self,
        ids: np.ndarray | Sequence[int],
        messages: Sequence[str] | None = None,
        records: np.ndarray | None = None,
    ) -> None:
        self.ids = np.asarray(ids, dtype=np.uint64)
        self.messages = messages
        self.records = records
        self._frames: dict[tuple[object, int], list[Frame]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index: slice | Sequence[int] | np.ndarray) -> PacketRun:
        """A run of some of these packets (frames made anew for it)."""
        if isinstance(index, slice):
            messages = None if self.messages is None else self.messages[index]
        else:
            index = np.asarray(index, dtype=np.intp)
            messages = None if self.messages is None else [self.messages[i] for i in index]
        records = None if self.records is None else self.records[index]
        return PacketRun(self.ids[index], messages, records)

    def json_batches(self, max_bytes: int) -> list[Frame]:
        """The `packets` messages of at most `max_bytes` each (`encode.batch_messages`)."""
        key = ("json", max_bytes)
        frames = self._frames.get(key)
        if frames is None:
            assert self.messages is not None, "a JSON batch needs the packet messages"
            frames = [Frame(t, n) for t, n in batch_messages(self.messages, max_bytes)]
            self._frames[key] = frames
        return frames

    def binary_batches(self, batcher: BinaryBatcher, max_bytes: int) -> list[Frame]:
        """The binary batch messages of at most `max_bytes` each, made by `batcher`."""
        key = (batcher, max_bytes)
        frames = self._frames.get(key)
        if frames is None:
            assert self.records is not None, "a binary batch needs the records"
            frames = [Frame(b, n) for b, n in batcher(self.records, max_bytes)]
            self._frames[key] = frames
        return frames
