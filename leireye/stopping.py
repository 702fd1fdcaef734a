"""How a child process learns it should stop: SIGTERM, or an event its caller holds.

The signal handler only sets a flag; the process's own loop checks it at least once per poll
interval and winds down in order. SIGINT is ignored: a Ctrl-C in the terminal reaches the whole
process group, and only the supervisor acts on it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event as ProcessEvent
from types import FrameType
from typing import Any

StopEvent = threading.Event | ProcessEvent


class StopFlag:
    """True once SIGTERM arrived or the caller's event is set."""

    def __init__(self, stop: StopEvent | None = None) -> None:
        self.stop = stop
        self.signalled = False

    def __call__(self) -> bool:
        return self.signalled or (self.stop is not None and self.stop.is_set())

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, returning early when the caller's event is set."""
        if seconds <= 0:
            return
        if self.stop is not None:
            self.stop.wait(seconds)
        else:
            time.sleep(seconds)


@contextmanager
def stop_on_sigterm(stop: StopEvent | None = None) -> Iterator[StopFlag]:
    """A StopFlag set by SIGTERM while the block runs, with SIGINT ignored. The handlers are
    installed only from the main thread (tests run these loops in threads too) and restored."""
    flag = StopFlag(stop)
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, flag.on_signal)
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
