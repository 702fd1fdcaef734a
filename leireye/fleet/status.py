"""The publisher's status: one shared-memory page, `NAME-fleet`.

The supervisor creates it (owner capture.user, group of web.user, mode 0640: the web workers
read it for `/metrics` and the `status` message, nobody else opens it) and unlinks it at the
end, so it outlives a restart of the publisher, which carries its counters on. The publisher
alone writes it, about once a second and on a change, under a seqlock as the store's status
page (`leireye/ring/storestatus.py`): seq (u8, odd while writing), body length (u4), then the
msgpack of `PublisherStatus` from byte 16. Nothing secret goes in: servers are shown without
user or password, errors are the client's words about the connection.
"""

from __future__ import annotations

import struct
import time
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import msgspec

from leireye.errors import RingError
from leireye.ring.shm import PAGE, Segment, attach_segment, create_segment


class PublisherStatus(msgspec.Struct, frozen=True, kw_only=True):
    sensor: str = ""
    pid: int = 0
    updated_ns: int = 0
    connected: bool = False
    servers: list[str] = msgspec.field(default_factory=list)  # without credentials
    run: int = 0  # the ring's creation time (ns): this run's batches carry it (LE-Run)
    published_records: int = 0  # acknowledged by JetStream, this run
    published_batches: int = 0
    published_bytes: int = 0  # message bodies as sent (compressed)
    lost: int = 0  # ids the ring overwrote before they were published, this run
    last_id: int = 0  # the last id of the last acknowledged batch
    behind: int = 0  # ids captured and neither published nor counted lost yet
    retries: int = 0  # batches published again (ack failed or timed out, reconnects)
    in_flight: int = 0  # batches published, not yet acknowledged
    messages_skipped: int = 0  # stats, status and flow messages not sent while disconnected
    flow_events_missed: int = 0  # flow events the event ring overwrote before we read them
    flow_cursor: int = 0  # the last flow event published (or skipped)
    minutes_sent: int = 0  # host and app minute rows published (acknowledged)
    minutes_missed: int = 0  # minute rows too big to send, and one per file gone or unreadable
    last_error: str = ""
    stream_mismatch: list[str] = msgspec.field(default_factory=list)


_SEQ: Final = struct.Struct("<Q")
_LEN: Final = struct.Struct("<I")
_BODY_AT: Final = 16
_TRIES: Final = 1000


def status_name(base: str) -> str:
    """The segment of the run whose segments are named `base-…`."""
    return f"{base}-fleet"


def public_server(url: str) -> str:
    """`nats://user:secret@host:4222` -> `nats://host:4222`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable server URL)"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, f"{host}{port}", parts.path, "", ""))


class StatusPage:
    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.name = segment.name

    @classmethod
    def create(
        cls, name: str, *, owner: tuple[int, int] | None = None, mode: int = 0o640
    ) -> StatusPage:
        return cls(create_segment(name, PAGE, mode=mode, owner=owner))

    @classmethod
    def attach(cls, name: str, *, writable: bool = False) -> StatusPage:
        return cls(attach_segment(name, writable=writable))

    def write(self, status: PublisherStatus) -> None:
        view = self.segment.buf
        status = msgspec.structs.replace(status, updated_ns=time.time_ns())
        body = msgspec.msgpack.encode(status)
        if len(body) > PAGE - _BODY_AT:
            short = [line[:200] for line in status.stream_mismatch[:8]]
            status = msgspec.structs.replace(
                status, last_error=status.last_error[:500], stream_mismatch=short
            )
            body = msgspec.msgpack.encode(status)
        (seq,) = _SEQ.unpack_from(view, 0)
        _SEQ.pack_into(view, 0, seq | 1)
        _LEN.pack_into(view, 8, len(body))
        view[_BODY_AT : _BODY_AT + len(body)] = body
        _SEQ.pack_into(view, 0, (seq | 1) + 1)

    def read(self) -> PublisherStatus:
        view = self.segment.buf
        for _ in range(_TRIES):
            (before,) = _SEQ.unpack_from(view, 0)
            if before & 1:
                continue
            (size,) = _LEN.unpack_from(view, 8)
            body = bytes(view[_BODY_AT : _BODY_AT + min(size, PAGE - _BODY_AT)])
            (after,) = _SEQ.unpack_from(view, 0)
            if before != after:
                continue
            if size == 0:
                return PublisherStatus()
            try:
                return msgspec.msgpack.decode(body, type=PublisherStatus)
            except msgspec.DecodeError as exc:
                raise RingError(f"{self.name}: unreadable publisher status") from exc
        raise RingError(f"{self.name}: the publisher status kept changing")

    def close(self) -> None:
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()
