"""The account service: login limits before the password check, one answer for every failed
login, refresh-token rotation and revocation that survive a restart, single-use tickets.

Every login costs one scrypt (~50 ms): the users file is hashed once per module, and the limits
are lowered in the configuration wherever the default numbers are not the point of the test.
"""

from __future__ import annotations

import logging
import stat
import threading
from pathlib import Path

import jwt
import pytest

from leireye.accounts.limiter import FailureLimiter
from leireye.accounts.principal import AuthFailure, Principal
from leireye.accounts.service import AccountError, AccountService, Ticket, TokenPair
from leireye.accounts.tokens import BAD_CLAIMS, OLD_GENERATION, WRONG_KIND, Authenticator
from leireye.accounts.useredit import add_user, edit_users_file, remove_user, update_user
from leireye.accounts.users import UserStore, ensure_users_file
from leireye.config import Config, parse_config
from tests.accounts import users_yaml

SECRET = bytes(range(64))
START = 1_700_000_000.0
ALICE_PW = "alice's password"
BOB_PW = "bob's password!"
CAROL_PW = "carol's password"


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def users_text() -> str:
    return users_yaml(
        {"alice": ("ADMIN", ALICE_PW), "bob": ("ANALYST", BOB_PW), "carol": ("VIEWER", CAROL_PW)}
    )


@pytest.fixture
def users_path(tmp_path: Path, users_text: str) -> Path:
    path = tmp_path / "users.yaml"
    path.write_text(users_text)
    path.chmod(0o600)
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_service(
    users_path: Path, clock: FakeClock, config: Config | None = None, store: bool = True
) -> AccountService:
    store_path = users_path.with_name("refresh-tokens.json") if store else None
    return AccountService(config or Config(), SECRET, UserStore(users_path), store_path, clock)


def limits(per_user: int = 5, per_address: int = 20, window: int = 300) -> Config:
    return parse_config(
        {
            "auth": {
                "login_failures_per_user": per_user,
                "login_failures_per_address": per_address,
                "login_window_s": window,
            }
        }
    )


def gen(service: AccountService, user_id: int) -> str:
    """The user's generation now: what the access token a ticket is bought with carries."""
    user = service.users.get(user_id)
    assert user is not None
    return user.generation


def refused(call: object) -> AccountError:
    assert callable(call)
    with pytest.raises(AccountError) as info:
        call()
    return info.value


def signature(error: AccountError) -> tuple[int, str, str, float, str]:
    return error.status, error.code, error.detail, error.retry_after, str(error)


# -- login --------------------------------------------------------------------------------------


def test_login_returns_an_access_and_a_refresh_token_of_the_right_kinds(
    users_path: Path, clock: FakeClock
) -> None:
    service = make_service(users_path, clock)
    pair = service.login("bob", BOB_PW, "10.0.0.1")
    auth = Config().auth
    assert isinstance(pair, TokenPair)
    assert (pair.expires_in, pair.refresh_expires_in, pair.token_type) == (
        auth.access_ttl_s,
        auth.refresh_ttl_s,
        "bearer",
    )
    verifier = Authenticator(SECRET, UserStore(users_path))
    principal = verifier.verify(pair.access_token, clock())
    bob = verifier.users.by_username("bob")
    assert bob is not None
    assert principal == Principal(
        id=2, username="bob", role="ANALYST", expires_at=START + auth.access_ttl_s,
        generation=bob.generation,
    )  # fmt: skip
    result = verifier.verify_refresh(pair.refresh_token, clock())
    assert not isinstance(result, AuthFailure)
    assert result[0].id == 2 and result[1]
    # Neither token does the other's job.
    assert verifier.verify(pair.refresh_token, clock()) == AuthFailure(WRONG_KIND)
    assert verifier.verify_refresh(pair.access_token, clock()) == AuthFailure(WRONG_KIND)
    # The access token lives access_ttl_s, no longer.
    assert isinstance(verifier.verify(pair.access_token, START + auth.access_ttl_s), AuthFailure)


def test_every_failed_login_gets_the_same_answer(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock)
    wrong = refused(lambda: service.login("bob", "not bob's password", "10.0.0.1"))
    unknown = refused(lambda: service.login("mallory", BOB_PW, "10.0.0.2"))
    other = refused(lambda: service.login("carol", BOB_PW, "10.0.0.3"))
    case = refused(lambda: service.login("BOB", BOB_PW, "10.0.0.4"))
    assert signature(wrong) == (
        401,
        "INVALID_CREDENTIALS",
        "Invalid username or password",
        0,
        ("Invalid username or password"),
    )
    assert signature(wrong) == signature(unknown) == signature(other) == signature(case)


def test_the_sixth_attempt_within_the_window_is_limited_even_with_the_right_password(
    users_path: Path, clock: FakeClock
) -> None:
    service = make_service(users_path, clock)  # the default: 5 failures per user per 300 s
    for attempt in range(5):
        clock.now = START + attempt
        assert refused(lambda: service.login("bob", "wrong guess!", "10.0.0.1")).status == 401
    clock.now = START + 10
    limited = refused(lambda: service.login("bob", BOB_PW, "10.0.0.9"))
    assert (limited.status, limited.code) == (429, "RATE_LIMITED")
    assert limited.retry_after == pytest.approx(290)  # until the first failure leaves the window
    # Other users are not affected.
    assert service.login("alice", ALICE_PW, "10.0.0.1").access_token
    clock.now = START + 300  # the first failure has left the window
    assert service.login("bob", BOB_PW, "10.0.0.9").access_token


def test_the_user_limit_ignores_the_case_of_the_name(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock, limits(per_user=2))
    refused(lambda: service.login("bob", "wrong guess!", "10.0.0.1"))
    refused(lambda: service.login("BoB", "wrong guess!", "10.0.0.2"))
    assert refused(lambda: service.login("bob", BOB_PW, "10.0.0.3")).status == 429


def test_the_address_limit_spans_usernames(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock, limits(per_user=5, per_address=3))
    for name in ("carol", "dave", "erin"):
        refused(lambda name=name: service.login(name, "a guess!", "192.0.2.7"))
    limited = refused(lambda: service.login("bob", BOB_PW, "192.0.2.7"))
    assert (limited.status, limited.code) == (429, "RATE_LIMITED")
    assert 0 < limited.retry_after <= 300
    assert service.login("bob", BOB_PW, "192.0.2.8").access_token


def test_a_success_resets_the_user_count(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock, limits(per_user=2))
    refused(lambda: service.login("bob", "wrong guess!", "10.0.0.1"))
    service.login("bob", BOB_PW, "10.0.0.1")
    refused(lambda: service.login("bob", "wrong guess!", "10.0.0.1"))
    # Without the reset this would be the user's third attempt after two failures: 429.
    assert service.login("bob", BOB_PW, "10.0.0.1").access_token


def test_concurrent_guesses_get_no_more_password_checks_than_the_limit(
    users_path: Path, clock: FakeClock
) -> None:
    service = make_service(users_path, clock, limits(per_user=2, per_address=100))
    guesses = 8
    barrier = threading.Barrier(guesses)
    statuses: list[int] = []

    def guess(index: int) -> None:
        barrier.wait()
        statuses.append(refused(lambda: service.login("bob", f"guess {index}!", "10.0.0.1")).status)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(guesses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(401) <= 2
    assert statuses.count(429) == guesses - statuses.count(401)


def test_the_first_admin_can_log_in_with_the_password_shown_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "users.yaml"
    password = ensure_users_file(path)
    assert password is not None
    assert password not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_users_file(path) is None  # never shown twice
    service = make_service(path, clock)
    pair = service.login("admin", password, "127.0.0.1")
    principal = service.verifier.verify(pair.access_token, clock())
    assert isinstance(principal, Principal) and principal.role == "ADMIN"


# -- refresh, logout, forget --------------------------------------------------------------------


def test_refresh_rotates_the_refresh_token(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock)
    first = service.login("bob", BOB_PW, "10.0.0.1")
    clock.now += 60
    second = service.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    bob = service.verifier.users.by_username("bob")
    assert bob is not None
    assert service.verifier.verify(second.access_token, clock()) == Principal(
        id=2, username="bob", role="ANALYST", expires_at=clock() + Config().auth.access_ttl_s,
        generation=bob.generation,
    )  # fmt: skip
    again = refused(lambda: service.refresh(first.refresh_token))
    assert (again.status, again.code) == (401, "INVALID_TOKEN")
    third = service.refresh(second.refresh_token)
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)


def test_refresh_refuses_an_access_token_and_garbage(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock)
    pair = service.login("bob", BOB_PW, "10.0.0.1")
    for token in (pair.access_token, "", "garbage", pair.refresh_token + "x"):
        error = refused(lambda token=token: service.refresh(token))
        assert (error.status, error.code) == (401, "INVALID_TOKEN")
    assert service.refresh(pair.refresh_token).access_token  # still unused, still good


def test_a_refresh_token_from_another_secret_is_refused(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock)
    other = AccountService(Config(), bytes(range(1, 65)), UserStore(users_path), None, clock).login(
        "bob", BOB_PW, "10.0.0.1"
    )
    assert refused(lambda: service.refresh(other.refresh_token)).code == "INVALID_TOKEN"


def test_a_refresh_token_expires(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock)
    pair = service.login("bob", BOB_PW, "10.0.0.1")
    clock.now += Config().auth.refresh_ttl_s
    assert refused(lambda: service.refresh(pair.refresh_token)).code == "INVALID_TOKEN"


def test_logout_revokes_the_refresh_token(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock)
    pair = service.login("bob", BOB_PW, "10.0.0.1")
    assert service.logout(pair.refresh_token, user_id=1) is False  # not alice's to revoke
    assert service.logout(pair.access_token, user_id=2) is False
    assert service.logout(pair.refresh_token, user_id=2) is True
    assert service.logout(pair.refresh_token, user_id=2) is False
    assert refused(lambda: service.refresh(pair.refresh_token)).code == "INVALID_TOKEN"


def test_forget_user_revokes_all_of_that_users_tokens_and_no_others(
    users_path: Path, clock: FakeClock
) -> None:
    service = make_service(users_path, clock)
    bobs = [service.login("bob", BOB_PW, "10.0.0.1") for _ in range(2)]
    alices = service.login("alice", ALICE_PW, "10.0.0.1")
    assert service.forget_user(2) == 2
    assert service.forget_user(2) == 0
    for pair in bobs:
        assert refused(lambda pair=pair: service.refresh(pair.refresh_token)).status == 401
    assert service.refresh(alices.refresh_token).access_token


def test_a_removed_user_can_no_longer_refresh(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock)
    pair = service.login("bob", BOB_PW, "10.0.0.1")
    edit_users_file(users_path, lambda users: remove_user(users, "bob"))
    assert refused(lambda: service.refresh(pair.refresh_token)).code == "INVALID_TOKEN"


def test_a_password_change_ends_every_older_token_of_that_user_only(
    users_path: Path, clock: FakeClock
) -> None:
    """Changed in a shell (`leireye user passwd`) or through the API, the users file is what
    both token kinds are checked against: the access token stops at once, not at its expiry."""
    service = make_service(users_path, clock)
    bobs, alices = service.login("bob", BOB_PW, "10.0.0.1"), service.login("alice", ALICE_PW, "x")
    verifier = Authenticator(SECRET, UserStore(users_path))
    assert isinstance(verifier.verify(bobs.access_token, clock.now), Principal)
    edit_users_file(users_path, lambda users: update_user(users, "bob", password="new one!"))
    refusal = verifier.verify(bobs.access_token, clock.now)
    assert isinstance(refusal, AuthFailure) and refusal.reason == OLD_GENERATION
    assert refused(lambda: service.refresh(bobs.refresh_token)).code == "INVALID_TOKEN"
    assert isinstance(verifier.verify(alices.access_token, clock.now), Principal)
    fresh = service.login("bob", "new one!", "10.0.0.1")
    assert isinstance(verifier.verify(fresh.access_token, clock.now), Principal)


def test_a_token_without_a_generation_is_refused(users_path: Path, clock: FakeClock) -> None:
    """No shim for tokens of an earlier build: without `gen` (with the old `crd`), refused."""
    claims = {"sub": "2", "username": "bob", "role": "ANALYST", "iat": int(clock.now),
              "exp": int(clock.now) + 60, "typ": "access", "crd": "0123456789abcdef"}  # fmt: skip
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    refusal = Authenticator(SECRET, UserStore(users_path)).verify(token, clock.now)
    assert refusal == AuthFailure(BAD_CLAIMS)


def test_refresh_tokens_and_tickets_of_a_removed_then_re_created_user_are_refused(
    users_path: Path, clock: FakeClock
) -> None:
    """Remove carol (the highest id) and add her again as ADMIN with the same password: she
    gets another id, and nothing issued to the first carol works for the second."""
    service = make_service(users_path, clock)
    pair = service.login("carol", CAROL_PW, "10.0.0.1")
    old = service.users.by_username("carol")
    assert old is not None
    ticket, _ = service.issue_ticket(old.id, old.generation, START + 600)
    edit_users_file(users_path, lambda users: remove_user(users, "carol"))
    new = edit_users_file(users_path, lambda users: add_user(users, "carol", "ADMIN", CAROL_PW))
    assert new.id != old.id and new.generation != old.generation
    assert refused(lambda: service.refresh(pair.refresh_token)).code == "INVALID_TOKEN"
    assert refused(lambda: service.redeem_ticket(ticket)).code == "INVALID_TICKET"
    assert isinstance(service.verifier.verify(pair.access_token, clock()), AuthFailure)
    assert service.login("carol", CAROL_PW, "10.0.0.1").access_token


# -- persistence --------------------------------------------------------------------------------


def test_refresh_tokens_survive_a_restart_and_revocations_too(
    users_path: Path, clock: FakeClock
) -> None:
    service = make_service(users_path, clock)
    kept = service.login("bob", BOB_PW, "10.0.0.1")
    revoked = service.login("alice", ALICE_PW, "10.0.0.1")
    assert service.logout(revoked.refresh_token, user_id=1)
    store = users_path.with_name("refresh-tokens.json")
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    text = store.read_text()
    assert kept.refresh_token not in text and kept.access_token not in text

    restarted = make_service(users_path, clock)
    assert restarted.refresh(kept.refresh_token).access_token
    assert refused(lambda: restarted.refresh(revoked.refresh_token)).code == "INVALID_TOKEN"
    # The rotation made by the new service is saved too.
    again = make_service(users_path, clock)
    assert refused(lambda: again.refresh(kept.refresh_token)).code == "INVALID_TOKEN"


def test_without_a_store_a_restart_forgets_every_refresh_token(
    users_path: Path, clock: FakeClock
) -> None:
    pair = make_service(users_path, clock, store=False).login("bob", BOB_PW, "10.0.0.1")
    assert not users_path.with_name("refresh-tokens.json").exists()
    restarted = make_service(users_path, clock, store=False)
    assert refused(lambda: restarted.refresh(pair.refresh_token)).code == "INVALID_TOKEN"


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"[1, 2, 3]",
        b'{"jti": {"user_id": "two", "expires_at": 1}}',
        b'{"jti": {"user_id": 2, "expires_at": 1, "credential": "0123456789abcdef"}}',
        b"\xff",
    ],
)
def test_a_corrupt_store_is_ignored_with_a_warning(
    users_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    store = users_path.with_name("refresh-tokens.json")
    store.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="leireye.accounts"):
        service = make_service(users_path, clock, store=True)
    assert any(
        r.levelno == logging.WARNING and str(store) in r.getMessage() for r in caplog.records
    )
    assert service.forget_user(2) == 0  # starts empty


# -- tickets ------------------------------------------------------------------------------------


def test_a_ticket_is_good_once(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock, store=False)
    ticket, ttl = service.issue_ticket(2, gen(service, 2), START + 1800)
    assert ttl == Config().auth.ticket_ttl_s
    assert len(ticket) >= 40
    bob = service.users.get(2)
    assert bob is not None
    assert service.redeem_ticket(ticket) == Ticket(2, START + ttl, START + 1800, bob.generation)
    error = refused(lambda: service.redeem_ticket(ticket))
    assert (error.status, error.code) == (401, "INVALID_TICKET")


def test_a_ticket_of_a_user_who_changed_password_or_left_is_refused(
    users_path: Path, clock: FakeClock
) -> None:
    service = make_service(users_path, clock)
    bobs, _ = service.issue_ticket(2, gen(service, 2), START + 600)
    carols, _ = service.issue_ticket(3, gen(service, 3), START + 600)
    edit_users_file(users_path, lambda users: update_user(users, "bob", password="new one!"))
    edit_users_file(users_path, lambda users: remove_user(users, "carol"))
    for ticket in (bobs, carols):
        assert refused(lambda t=ticket: service.redeem_ticket(t)).code == "INVALID_TICKET"
    fresh, _ = service.issue_ticket(2, gen(service, 2), START + 600)
    assert service.redeem_ticket(fresh).user_id == 2


def test_tickets_are_distinct_and_independent(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock, store=False)
    first, _ = service.issue_ticket(2, gen(service, 2), START + 60)
    second, _ = service.issue_ticket(1, gen(service, 1), START + 90)
    assert first != second
    assert service.redeem_ticket(second).user_id == 1
    assert service.redeem_ticket(first).user_id == 2


def test_a_ticket_expires(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock, store=False)
    ttl = Config().auth.ticket_ttl_s
    early, _ = service.issue_ticket(2, gen(service, 2), START + 1800)
    late, _ = service.issue_ticket(2, gen(service, 2), START + 1800)
    clock.now = START + ttl - 0.5
    assert service.redeem_ticket(early).user_id == 2
    clock.now = START + ttl
    assert refused(lambda: service.redeem_ticket(late)).code == "INVALID_TICKET"


@pytest.mark.parametrize("ticket", ["", "unknown", "A" * 43])
def test_an_unknown_ticket_is_refused(users_path: Path, clock: FakeClock, ticket: str) -> None:
    service = make_service(users_path, clock, store=False)
    service.issue_ticket(2, gen(service, 2), START + 60)
    assert refused(lambda: service.redeem_ticket(ticket)).code == "INVALID_TICKET"


# -- the failure limiter (pure) ---------------------------------------------------------------


def test_limiter_allows_limit_failures_then_waits_for_the_oldest_to_leave() -> None:
    limiter = FailureLimiter(limit=3, window_s=60)
    for t in (100.0, 110.0, 120.0):
        assert limiter.retry_after("k", t) == 0
        limiter.fail("k", t)
    assert limiter.retry_after("k", 125.0) == pytest.approx(35.0)
    assert limiter.retry_after("other", 125.0) == 0
    assert limiter.retry_after("k", 159.9) == pytest.approx(0.1)
    assert limiter.retry_after("k", 160.0) == 0  # the failure at 100 has left the window
    limiter.fail("k", 160.0)
    assert limiter.retry_after("k", 161.0) == pytest.approx(9.0)  # now 110 is the oldest


def test_limiter_success_forgets_the_key() -> None:
    limiter = FailureLimiter(limit=2, window_s=60)
    limiter.fail("k", 0.0)
    limiter.fail("k", 1.0)
    assert limiter.retry_after("k", 2.0) > 0
    limiter.succeed("k")
    assert limiter.retry_after("k", 2.0) == 0
    limiter.succeed("never seen")


def test_limiter_keeps_at_most_limit_timestamps_per_key() -> None:
    limiter = FailureLimiter(limit=3, window_s=1000)
    for t in range(100):
        limiter.fail("k", float(t))
    # Only the last three count: the wait ends when the failure at 97 leaves the window.
    assert limiter.retry_after("k", 100.0) == pytest.approx(97 + 1000 - 100)


def test_limiter_tracks_at_most_max_keys_dropping_the_least_recent() -> None:
    limiter = FailureLimiter(limit=1, window_s=1000, max_keys=3)
    for key in ("a", "b", "c"):
        limiter.fail(key, 0.0)
    limiter.fail("a", 1.0)  # refreshes a: b is now the least recent
    limiter.fail("d", 2.0)
    assert limiter.retry_after("b", 3.0) == 0
    assert all(limiter.retry_after(key, 3.0) > 0 for key in ("a", "c", "d"))
    for index in range(1000):
        limiter.fail(f"spray-{index}", 4.0)
    assert len(limiter._failures) == 3
