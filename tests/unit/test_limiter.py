"""The login throttle's rules (pure, over a given clock): back-off per (user, address) and per
address, never a lock on a user name; known pairs spared the address rule; bounded memory."""

from __future__ import annotations

import pytest

from leireye.accounts.limiter import (
    Attempt,
    Backoff,
    KnownPairs,
    LoginThrottle,
    address_key,
    backoff_s,
)


def throttle(per_pair: int = 3, per_address: int = 5) -> LoginThrottle:
    return LoginThrottle(
        per_pair, per_address, window_s=300, backoff_first_s=1, backoff_max_s=60, remember_s=3600
    )


def fail(t: LoginThrottle, user: str, address: str, now: float) -> float:
    """One failed login; 0 when it was let through to the password check, else the wait."""
    attempt = t.begin(user, address, now)
    return 0.0 if isinstance(attempt, Attempt) else attempt


def succeed(t: LoginThrottle, user: str, address: str, now: float) -> bool:
    attempt = t.begin(user, address, now)
    if not isinstance(attempt, Attempt):
        return False
    t.succeeded(attempt, now)
    return True


def test_backoff_is_free_then_doubles_up_to_the_maximum() -> None:
    assert [backoff_s(n, 3, 1, 60) for n in range(12)] == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert [backoff_s(n, 1, 5, 60) for n in range(6)] == [0, 5, 10, 20, 40, 60]
    assert backoff_s(10**9, 3, 1, 300) == 300  # no overflow


def test_failures_of_a_user_from_one_address_do_not_touch_another_address() -> None:
    t = throttle()
    for _ in range(3):
        assert fail(t, "admin", "198.51.100.9", 0.0) == 0
    assert fail(t, "admin", "198.51.100.9", 0.0) == pytest.approx(1.0)  # backing off there
    assert succeed(t, "admin", "10.0.0.1", 0.0)  # the admin, elsewhere
    assert succeed(t, "Admin", "10.0.0.2", 0.0)


def test_an_attacker_at_one_guess_a_minute_never_locks_the_user_out() -> None:
    t = throttle()
    for minute in range(120):
        fail(t, "admin", "198.51.100.9", 60.0 * minute)
        assert succeed(t, "admin", "10.0.0.1", 60.0 * minute + 1)


def test_the_pair_waits_grow_and_a_success_clears_them() -> None:
    t = throttle()
    now = 0.0
    for _ in range(3):
        assert fail(t, "bob", "10.0.0.1", now) == 0
    waits = []
    for _ in range(4):
        wait = fail(t, "bob", "10.0.0.1", now)
        waits.append(wait)
        now += wait
        assert fail(t, "bob", "10.0.0.1", now) == 0
    assert waits == [1, 2, 4, 8]
    now += 16
    assert succeed(t, "bob", "10.0.0.1", now)
    assert t.by_pair.failures("bob\n10.0.0.1", now) == 0
    assert fail(t, "bob", "10.0.0.1", now) == 0


def test_the_address_rule_spans_names_and_spares_the_known_ones() -> None:
    t = throttle(per_pair=100, per_address=5)
    assert succeed(t, "carol", "192.0.2.7", 0.0)
    for index in range(5):
        assert fail(t, f"sprayed-{index}", "192.0.2.7", 1.0) == 0
    assert fail(t, "dave", "192.0.2.7", 1.0) == pytest.approx(1.0)  # a stranger there: waits
    assert succeed(t, "carol", "192.0.2.7", 1.0)  # carol logged in from there before
    assert succeed(t, "dave", "192.0.2.8", 1.0)  # dave, elsewhere


def test_a_success_does_not_wash_the_address_clean() -> None:
    t = throttle(per_pair=100, per_address=3)
    for index in range(3):
        fail(t, f"guess-{index}", "192.0.2.7", 0.0)
    now = 1.0  # the back-off of the address has passed
    assert succeed(t, "mallory", "192.0.2.7", now)  # the guesser's own account
    assert t.by_address.failures("192.0.2.7", now) == 3
    assert fail(t, "victim", "192.0.2.7", now) == 0  # the 4th failure of the address...
    assert fail(t, "victim2", "192.0.2.7", now) == pytest.approx(2.0)  # ... doubles its wait


def test_an_unchecked_attempt_counts_for_nothing() -> None:
    t = throttle()
    attempt = t.begin("bob", "10.0.0.1", 0.0)
    assert isinstance(attempt, Attempt) and not attempt.known
    t.unchecked(attempt)
    assert len(t.by_pair) == len(t.by_address) == 0


def test_failures_are_forgotten_a_window_after_the_last() -> None:
    t = throttle()
    for _ in range(3):
        fail(t, "bob", "10.0.0.1", 0.0)
    assert t.by_pair.failures("bob\n10.0.0.1", 299.9) == 3
    assert t.by_pair.failures("bob\n10.0.0.1", 600.0) == 0
    assert fail(t, "bob", "10.0.0.1", 600.0) == 0


def test_known_pairs_are_remembered_for_a_while_and_bounded() -> None:
    known = KnownPairs(remember_s=100, max_keys=3)
    known.add("a", 0.0)
    assert known.known("a", 99.0) and not known.known("a", 100.0)
    for key in ("b", "c", "d", "e"):
        known.add(key, 1.0)
    assert len(known) == 3 and "b" not in known


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("fe80::1%lo", "fe80::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("unknown", "unknown"),
        ("", ""),
    ],
)
def test_address_keys(address: str, key: str) -> None:
    assert address_key(address) == key


def test_backoff_undo_restores_the_previous_failure_time() -> None:
    b = Backoff(free=1, window_s=100, first_s=1, max_s=60)
    b.fail("k", 0.0)
    assert b.retry_after("k", 0.5) == pytest.approx(0.5)
    b.fail("k", 10.0)
    b.undo("k", 10.0)
    assert b.failures("k", 10.0) == 1
    assert b.retry_after("k", 10.0) == 0  # as before the undone attempt
    b.undo("k", 0.0)
    assert len(b) == 0
    b.undo("never seen", 0.0)
    b.succeed("never seen")


def test_backoff_tracks_at_most_max_keys_dropping_the_least_recent() -> None:
    b = Backoff(free=0, window_s=1000, first_s=1, max_s=60, max_keys=3)
    for key in ("a", "b", "c"):
        b.fail(key, 0.0)
    b.fail("a", 1.0)  # refreshes a: b is now the least recent
    b.fail("d", 2.0)
    assert b.failures("b", 3.0) == 0
    assert [b.failures(key, 3.0) for key in ("a", "c", "d")] == [2, 1, 1]
    for index in range(1000):
        b.fail(f"spray-{index}", 4.0)
    assert len(b) == 3
