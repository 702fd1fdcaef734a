"""At most N password verifications at once: bounded memory and CPU before authentication.

A verification costs ~19 MiB and ~80 ms of a core (argon2id, `leireye.accounts.passwords`).
Without a cap, 150 concurrent failed logins took the supervisor from 73 to 954 MiB. The gate lets
`slots` verifications run (about one per core: more only queue inside the CPU) and up to `queue`
more wait, each at most `wait_s`; any other is refused at once (`GateBusy`, answered 429 with
`Retry-After`), so a flood costs a refusal each, not a thread and a buffer each.

Two lanes: logins of a (user name, address) pair that has logged in before go ahead of everyone
else's and have their own `queue` places, so a flood of strangers' guesses leaves the regular
user one verification's wait away from logging in. Within a lane, first come first served.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator


class GateBusy(Exception):
    """Every slot is taken and the wait is full or over: try again in `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("too many password verifications in progress")
        self.retry_after_s = retry_after_s


class VerificationGate:
    def __init__(self, slots: int, queue: int, wait_s: float) -> None:
        if slots < 1 or queue < 0 or wait_s < 0:
            raise ValueError("a gate needs slots >= 1, queue >= 0 and wait_s >= 0")
        self.slots = slots
        self.queue = queue
        self.wait_s = wait_s
        self._cond = threading.Condition(threading.Lock())
        self._busy = 0
        self._lanes: tuple[deque[object], deque[object]] = (deque(), deque())  # known, others
        self.refused = 0  # counts, for the log and the tests
        self.served = 0
        self.peak_busy = 0

    @contextlib.contextmanager
    def slot(self, known: bool = False) -> Iterator[None]:
        """Hold one verification slot for the `with` block; GateBusy when none comes."""
        self._acquire(known)
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def busy(self) -> int:
        with self._cond:
            return self._busy

    def waiting(self) -> int:
        with self._cond:
            return len(self._lanes[0]) + len(self._lanes[1])

    def _acquire(self, known: bool) -> None:
        with self._cond:
            lane = self._lanes[0 if known else 1]
            if self._busy < self.slots and self._next() is None:
                self._take()
                return
            if len(lane) >= self.queue:
                self.refused += 1
                raise GateBusy(1.0)
            me = object()
            lane.append(me)
            deadline = time.monotonic() + self.wait_s
            try:
                while not (self._busy < self.slots and self._next() is me):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.refused += 1
                        raise GateBusy(1.0)
                    self._cond.wait(remaining)
                self._take()
            finally:
                lane.remove(me)
                self._cond.notify_all()  # the next in line may be able to go now

    def _next(self) -> object | None:
        for lane in self._lanes:
            if lane:
                return lane[0]
        return None

    def _take(self) -> None:
        self._busy += 1
        self.served += 1
        self.peak_busy = max(self.peak_busy, self._busy)
