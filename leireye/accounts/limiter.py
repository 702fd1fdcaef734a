"""Failed-login throttling that slows guessing without locking the real user out.

A lock per user name is a denial of service: five wrong passwords from anywhere, one request a
minute, keep `admin` out for good. So nothing here is keyed by the user name alone:

- per (user name, address): the first `per_pair` failures within the window are free; after
  that each failure doubles the wait before the next attempt of that pair (`backoff_first_s`,
  twice that, four times, ... up to `backoff_max_s`). A guesser at one address is slowed to
  one guess per `backoff_max_s`; the user, from any other address, is not affected;
- per address, over every user name: the same back-off after `per_address` failures (password
  spraying from one address), except for a user name that has logged in from that address
  before (a *known pair*, remembered `remember_s`): the colleagues behind a NAT gateway that a
  guesser shares keep logging in;
- failures are forgotten `window_s` after the last one; a success forgets the pair's failures
  (not the address's: a guesser's own account must not wash its address clean).

Guessing one user from many addresses is bounded by the number of addresses times `per_pair`
plus the back-off, and above all by how many verifications the sensor runs per second at all
(`leireye.accounts.gate`): with argon2id and two at a time, ~25 guesses/s for the whole sensor.

An attempt is counted as failed when it starts (so parallel guesses cannot all pass the limit
while their checks run); a success or an attempt that was never checked takes it back. Memory is
bounded: each table keeps at most `max_keys` keys, the least recently used go first. IPv6
addresses count per /64, the block one host usually holds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


def address_key(address: str) -> str:
    """The unit the per-address rules count: an IPv4 address, an IPv6 /64 (an IPv4-mapped IPv6
    address is its IPv4 address); anything else (a Unix socket, "unknown") as given."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def backoff_s(failures: int, free: int, first_s: float, max_s: float) -> float:
    """The wait after `failures` failures: none for the first `free`, then `first_s` doubling,
    at most `max_s`."""
    if failures < free:
        return 0.0
    return min(max_s, first_s * 2.0 ** min(failures - free, 62))


class _Entry:
    __slots__ = ("count", "last", "previous")

    def __init__(self, now: float) -> None:
        self.count = 0
        self.last = now
        self.previous = now


class Backoff:
    """Failure counts per key with exponential back-off (see the module's docstring)."""

    def __init__(
        self, free: int, window_s: float, first_s: float, max_s: float, max_keys: int = 100_000
    ) -> None:
        self.free = free
        self.window_s = window_s
        self.first_s = first_s
        self.max_s = max_s
        self.max_keys = max_keys
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def failures(self, key: str, now: float) -> int:
        entry = self._live(key, now)
        return 0 if entry is None else entry.count

    def retry_after(self, key: str, now: float) -> float:
        """0 when `key` may try now, else the seconds until it may."""
        entry = self._live(key, now)
        if entry is None:
            return 0.0
        return max(
            0.0, entry.last + backoff_s(entry.count, self.free, self.first_s, self.max_s) - now
        )

    def fail(self, key: str, now: float) -> None:
        entry = self._live(key, now)
        if entry is None:
            entry = _Entry(now)
        else:
            del self._entries[key]  # re-inserted last: dict order = recency
        while len(self._entries) >= self.max_keys:
            del self._entries[next(iter(self._entries))]
        entry.count += 1
        entry.previous, entry.last = entry.last, now
        self._entries[key] = entry

    def undo(self, key: str, when: float) -> None:
        """Take back one failure counted at `when` (an attempt counted before it was decided
        that then succeeded, or was never checked)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.count -= 1
        if entry.last == when:
            entry.last = entry.previous
        if entry.count <= 0:
            del self._entries[key]

    def succeed(self, key: str) -> None:
        self._entries.pop(key, None)

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.last >= self.window_s:
            del self._entries[key]
            return None
        return entry


class KnownPairs:
    """(user name, address) pairs that logged in successfully within the last `remember_s`."""

    def __init__(self, remember_s: float, max_keys: int = 100_000) -> None:
        self.remember_s = remember_s
        self.max_keys = max_keys
        self._seen: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: str) -> bool:
        return key in self._seen

    def known(self, key: str, now: float) -> bool:
        when = self._seen.get(key)
        if when is None:
            return False
        if now - when >= self.remember_s:
            del self._seen[key]
            return False
        return True

    def add(self, key: str, now: float) -> None:
        self._seen.pop(key, None)
        while len(self._seen) >= self.max_keys:
            del self._seen[next(iter(self._seen))]
        self._seen[key] = now


@dataclass(frozen=True)
class Attempt:
    """A login attempt let through, counted as failed until `LoginThrottle.succeeded`."""

    pair: str
    address: str
    started: float
    known: bool  # the pair has logged in before: its verification goes ahead of strangers'


class LoginThrottle:
    """The rules of the module's docstring, over one clock; not thread-safe (the account
    service holds its lock around each call)."""

    def __init__(
        self,
        per_pair: int,
        per_address: int,
        window_s: float,
        backoff_first_s: float,
        backoff_max_s: float,
        remember_s: float,
        max_keys: int = 100_000,
    ) -> None:
        self.by_pair = Backoff(per_pair, window_s, backoff_first_s, backoff_max_s, max_keys)
        self.by_address = Backoff(per_address, window_s, backoff_first_s, backoff_max_s, max_keys)
        self.known = KnownPairs(remember_s, max_keys)

    def begin(self, username: str, address: str, now: float) -> Attempt | float:
        """An `Attempt` to verify, counted as failed already; or the seconds to wait first."""
        addr = address_key(address)
        pair = f"{username.casefold()}\n{addr}"
        known = self.known.known(pair, now)
        wait = self.by_pair.retry_after(pair, now)
        if not known:
            wait = max(wait, self.by_address.retry_after(addr, now))
        if wait > 0:
            return wait
        self.by_pair.fail(pair, now)
        self.by_address.fail(addr, now)
        return Attempt(pair, addr, now, known)

    def succeeded(self, attempt: Attempt, now: float) -> None:
        self.by_pair.succeed(attempt.pair)
        self.by_address.undo(attempt.address, attempt.started)
        self.known.add(attempt.pair, now)

    def unchecked(self, attempt: Attempt) -> None:
        """The attempt was never verified (the sensor was busy): it counts for nothing."""
        self.by_pair.undo(attempt.pair, attempt.started)
        self.by_address.undo(attempt.address, attempt.started)
