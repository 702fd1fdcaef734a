"""Waiting on conditions in tests: poll with a deadline, never sleep as synchronisation.

Every timeout is multiplied by LEIREYE_TEST_TIMEOUT_SCALE (default 1) so a slow machine can
stretch them all at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

SCALE = float(os.environ.get("LEIREYE_TEST_TIMEOUT_SCALE", "1") or 1)


def scaled(seconds: float) -> float:
    return seconds * SCALE


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.01) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout`
    (scaled) seconds."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.1f}s waiting for {what}")
        time.sleep(interval)
