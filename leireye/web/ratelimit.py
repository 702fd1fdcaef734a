"""The per-connection message rate limit: a sliding one-second window, and when to give up.

Every client message counts (malformed ones too). A message is accepted while fewer than
`per_second` were accepted in the second before it; otherwise it is rejected: not processed, and
answered by at most one `rate_limited` error per second. A client is closed for abuse when

* it keeps being rejected for `abuse_seconds` (3 s): rejections less than a second apart form one
  episode, and an episode that lasts that long is sustained abuse; or
* it sends more than `abuse_factor` (10) times the limit within one second.

A burst over the limit followed by a pause is therefore only answered, never closed.
"""

from __future__ import annotations

import enum
from collections import deque


class Verdict(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"  # drop the message silently (an error was sent less than 1 s ago)
    REJECT_NOTIFY = "reject_notify"  # drop it and send one `rate_limited` error
    ABUSE = "abuse"  # close the connection


class RateLimiter:
    def __init__(self, per_second: int, abuse_seconds: float = 3.0, abuse_factor: int = 10):
        self.per_second = per_second
        self.abuse_seconds = abuse_seconds
        self.abuse_factor = abuse_factor
        self._accepted: deque[float] = deque()
        self._episode_start = 0.0
        self._last_reject: float | None = None
        self._last_notify: float | None = None
        self._window_start = 0.0
        self._window_rejects = 0

    def shift(self, delta: float) -> None:
        """The clock stepped by `delta` seconds: move every remembered time with it."""
        self._accepted = deque(t + delta for t in self._accepted)
        self._episode_start += delta
        self._window_start += delta
        if self._last_reject is not None:
            self._last_reject += delta
        if self._last_notify is not None:
            self._last_notify += delta

    def check(self, now: float) -> Verdict:
        """Count one message arriving at `now` (seconds, never decreasing)."""
        accepted = self._accepted
        while accepted and now - accepted[0] >= 1.0:
            accepted.popleft()
        if len(accepted) < self.per_second:
            accepted.append(now)
            return Verdict.ACCEPT
        if self._last_reject is None or now - self._last_reject >= 1.0:
            self._episode_start = now
        self._last_reject = now
        if now - self._window_start >= 1.0:
            self._window_start, self._window_rejects = now, 0
        self._window_rejects += 1
        if (
            now - self._episode_start >= self.abuse_seconds
            or self._window_rejects >= (self.abuse_factor - 1) * self.per_second
        ):
            return Verdict.ABUSE
        if self._last_notify is None or now - self._last_notify >= 1.0:
            self._last_notify = now
            return Verdict.REJECT_NOTIFY
        return Verdict.REJECT
