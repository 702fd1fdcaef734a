"""Helpers for starting and stopping capture on request: try the settings, wait for the status."""

from __future__ import annotations

import time
from collections.abc import Callable

from leireye.capture.ownfilter import OwnTraffic
from leireye.capture.source import open_source
from leireye.config import CaptureConfig
from leireye.ring.status import CaptureState, CaptureStatus

WAIT_S = 10.0


def open_check(capture: CaptureConfig, own: OwnTraffic | None = None) -> None:
    """Open the source the way the capture process will (interface, BPF with `own` left out)
    and close it again: CaptureError with libpcap's message when it cannot be opened. Needs
    the capture privilege."""
    source = open_source(capture, own=own)
    source.close()


def wait_status(
    read: Callable[[], CaptureStatus],
    done: Callable[[CaptureStatus], bool],
    timeout_s: float = WAIT_S,
) -> CaptureStatus:
    """The capture status once `done(status)` holds, or once the capture reports an error, or
    the last one read when `timeout_s` passes (the caller reports whatever it is)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = read()
        if done(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


__all__ = ["CaptureState", "open_check", "wait_status"]
