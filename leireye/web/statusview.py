"""The capture status as the web tier shows it: one mapping from `CaptureStatus`, read by all.

`capture_view` turns the status block's `CaptureStatus` into a `StatusView`: the WebSocket
`status` data (`wire.StatusData`, the spec's fields and ours) followed by the REST API's extra
fields. Everything that shows the capture status reads that one struct:

- `GET /api/capture/status`, and the reply to a capture start or stop (the supervisor's): the
  whole view, as JSON (`status_view`);
- the WebSocket `status` message: its `StatusData` fields (`status_message`);
- `GET /api/stats/summary`, `/health` and `/metrics`: the fields they name.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET

from leireye.fleet.status import PublisherStatus
from leireye.ring.status import CaptureStatus
from leireye.web.encode import iso_ms
from leireye.wire import FleetData, StatusData, StatusMessage


class StatusView(StatusData, frozen=True, kw_only=True):
    """`StatusData`, then: `linktype` (DLT_*, -1 before the source is open), `snaplen`,
    `bytes_captured` (wire lengths), `decode_errors` and their count `decode_errors_by_kind`,
    `restarts` (of the capture process, by the supervisor) and `pid` (null without a process)."""

    linktype: int
    snaplen: int
    bytes_captured: int
    decode_errors: int
    decode_errors_by_kind: dict[str, int]
    restarts: int
    pid: int | None


_DATA_FIELDS = StatusData.__struct_fields__


def fleet_data(fleet: PublisherStatus) -> FleetData:
    return FleetData(
        sensor=fleet.sensor,
        connected=fleet.connected,
        servers=fleet.servers,
        published_records=fleet.published_records,
        published_batches=fleet.published_batches,
        published_bytes=fleet.published_bytes,
        lost=fleet.lost,
        behind=fleet.behind,
        last_error=fleet.last_error or None,
        stream_mismatch=fleet.stream_mismatch,
    )


def capture_view(status: CaptureStatus, fleet: PublisherStatus | None = None) -> StatusView:
    return StatusView(
        is_capturing=status.capturing,
        interface=status.interface,
        started_at=iso_ms(status.started_at_ns) if status.started_at_ns > 0 else None,
        packets_captured=status.packets_captured,
        state=str(status.state),
        bpf=status.bpf,
        effective_bpf=status.effective_bpf,
        kernel_drops=status.kernel_drops,
        if_drops=status.if_drops,
        error=status.last_error or None,
        linktype=status.linktype,
        snaplen=status.snaplen,
        bytes_captured=status.bytes_captured,
        decode_errors=status.decode_errors,
        decode_errors_by_kind=status.decode_errors_by_kind,
        restarts=status.restarts,
        pid=status.pid or None,
        fleet=fleet_data(fleet) if fleet is not None else UNSET,
    )


def status_view(status: CaptureStatus) -> dict[str, Any]:
    """The REST API's capture status (a superset of the WebSocket `status` data), as JSON types."""
    view: dict[str, Any] = msgspec.to_builtins(capture_view(status))
    return view


def status_message(status: CaptureStatus, fleet: PublisherStatus | None = None) -> StatusMessage:
    view = capture_view(status, fleet)
    return StatusMessage(StatusData(**{name: getattr(view, name) for name in _DATA_FIELDS}))


def status_key(status: CaptureStatus, fleet: PublisherStatus | None = None) -> tuple[object, ...]:
    """What makes a status worth telling the clients: not its counters (the publisher's come
    along when something else changes)."""
    publisher = (fleet.connected, fleet.last_error, tuple(fleet.stream_mismatch)) if fleet else ()
    return (
        *publisher,
        status.state,
        status.capturing,
        status.interface,
        status.bpf,
        status.effective_bpf,
        status.last_error,
        status.started_at_ns,
    )
