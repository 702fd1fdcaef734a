"""The wall clock the sessions run on, watched for steps.

Sessions keep Unix time (`time.time()`), the clock of a token's `exp`. Their timers (the idle
and authentication deadlines, the stats interval, the rate limit's one-second windows) are
differences of that clock, so a step of the system clock (NTP correcting a clock that was minutes
off, an administrator running `date -s`) would fire every idle timeout at once when it jumps
forward, and freeze the timers (a client rate-limited for as long as the step) when it jumps
back. `WallClock` compares the wall clock with the monotonic one on every reading and, when
their difference moves by more than `STEP_S`, reports the step before handing out the new time,
so the caller can move those timers with it (`Session.clock_stepped`). Slow slewing (NTP's
usual correction, well under a millisecond per second) is followed silently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger("leireye.web.clock")

STEP_S: Final = 1.0  # a jump of the wall clock against the monotonic one that counts as a step


class WallClock:
    def __init__(
        self,
        on_step: Callable[[float], None],
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_step = on_step
        self._wall = wall
        self._monotonic = monotonic
        self._offset = wall() - monotonic()

    def __call__(self) -> float:
        """`time.time()`, after reporting a step since the last reading."""
        now = self._wall()
        offset = now - self._monotonic()
        step = offset - self._offset
        self._offset = offset
        if abs(step) > STEP_S:
            log.warning("the system clock stepped %+.1f s; moving connection timers with it", step)
            self._on_step(step)
        return now
