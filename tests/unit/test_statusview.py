"""One mapping of the capture status for the REST API, the WebSocket `status` message, the stats
summary, /health and /metrics."""

from __future__ import annotations

import json

import msgspec

from leireye.ring.status import CaptureState, CaptureStatus
from leireye.web.statusview import StatusView, capture_view, status_message, status_view
from leireye.wire import StatusData, encode

STARTED_NS = 1_705_746_600_000_000_000  # 2024-01-20T10:30:00Z


def capturing() -> CaptureStatus:
    return CaptureStatus(
        state=CaptureState.CAPTURING,
        capturing=True,
        interface="eth0",
        bpf="not port 22",
        linktype=1,
        snaplen=1600,
        pid=4242,
        started_at_ns=STARTED_NS,
        packets_captured=69,
        bytes_captured=9333,
        kernel_drops=3,
        if_drops=1,
        decode_errors=2,
        decode_errors_by_kind={"truncated": 2},
        last_error="",
        restarts=1,
    )


def test_the_rest_view_is_the_documented_shape() -> None:
    assert status_view(capturing()) == {
        "is_capturing": True,
        "interface": "eth0",
        "started_at": "2024-01-20T10:30:00.000Z",
        "packets_captured": 69,
        "state": "capturing",
        "bpf": "not port 22",
        "effective_bpf": "",
        "kernel_drops": 3,
        "if_drops": 1,
        "error": None,
        "linktype": 1,
        "snaplen": 1600,
        "bytes_captured": 9333,
        "decode_errors": 2,
        "decode_errors_by_kind": {"truncated": 2},
        "restarts": 1,
        "pid": 4242,
    }


def test_before_any_capture_process() -> None:
    view = status_view(CaptureStatus())
    assert view["state"] == "idle" and view["is_capturing"] is False
    assert view["started_at"] is None and view["error"] is None and view["pid"] is None
    assert view["linktype"] == -1


def test_the_websocket_status_is_the_views_leading_fields_and_nothing_more() -> None:
    status = msgspec.structs.replace(capturing(), state=CaptureState.ERROR, last_error="gone")
    view = status_view(status)
    sent = json.loads(encode(status_message(status)))
    assert sent["type"] == "status"
    # (`central` and `sensors` are a fleet central's only, `fleet` a publishing sensor's:
    # absent from a lone sensor's status)
    lone = [
        key for key in StatusData.__struct_fields__ if key not in ("central", "sensors", "fleet")
    ]
    assert list(sent["data"]) == lone
    assert sent["data"] == {key: view[key] for key in lone}
    assert sent["data"]["error"] == "gone"
    assert list(view)[: len(sent["data"])] == list(sent["data"])


def test_the_view_is_a_status_data() -> None:
    assert isinstance(capture_view(capturing()), StatusData)
    assert set(StatusView.__struct_fields__) > set(StatusData.__struct_fields__)
