"""Failed-login limiting: at most N failures per key (a username, an address) per window."""

from __future__ import annotations

from collections import deque


class FailureLimiter:
    """Sliding-window failure counts per key. Memory is bounded: at most `max_keys` keys are
    tracked (the oldest entries go first), each with at most `limit` timestamps."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, key: str, now: float) -> float:
        """0 when `key` may try now, else the seconds until its oldest failure leaves the
        window."""
        failures = self._failures.get(key)
        if failures is None:
            return 0.0
        self._prune(key, failures, now)
        if len(failures) < self.limit:
            return 0.0
        return max(0.0, failures[0] + self.window_s - now)

    def undo(self, key: str, when: float) -> None:
        """Take back one failure counted at `when` (an attempt counted before it was decided,
        that then succeeded)."""
        failures = self._failures.get(key)
        if failures is not None and when in failures:
            failures.remove(when)
            if not failures:
                del self._failures[key]

    def fail(self, key: str, now: float) -> None:
        failures = self._failures.pop(key, None)  # re-inserted last: dict order = recency
        if failures is None:
            failures = deque(maxlen=self.limit)
            while len(self._failures) >= self.max_keys:
                del self._failures[next(iter(self._failures))]
        failures.append(now)
        self._failures[key] = failures

    def succeed(self, key: str) -> None:
        self._failures.pop(key, None)

    def _prune(self, key: str, failures: deque[float], now: float) -> None:
        while failures and failures[0] + self.window_s <= now:
            failures.popleft()
        if not failures:
            del self._failures[key]
