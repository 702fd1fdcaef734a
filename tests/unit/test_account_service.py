"""The account service: login back-off before the password check (that never locks a user out
from an address that did not fail), at most N verifications at once, one answer for every failed
login, legacy hashes upgraded, refresh-token rotation and revocation that survive a restart,
single-use signed tickets.

Every login costs one argon2id (~80 ms): the users file is hashed once per module, and the
limits are lowered in the configuration wherever the default numbers are not the point of the
test. The limiter's and the gate's own rules are tested in test_limiter.py and test_gate.py.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
import threading
from pathlib import Path

import jwt
import msgspec
import pytest

from leireye.accounts.passwords import verify_password
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
                "login_failures_per_user_address": per_user,
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


def test_five_failures_from_one_address_do_not_keep_the_user_out_from_another(
    users_path: Path, clock: FakeClock
) -> None:
    """The lockout finding: 5 wrong passwords for bob from one address made the right one from
    anywhere else a 429 for 300 s."""
    service = make_service(users_path, clock)  # the default: 5 free failures per pair
    for attempt in range(5):
        clock.now = START + attempt
        assert refused(lambda: service.login("bob", "wrong guess!", "10.6.6.6")).status == 401
    assert service.login("bob", BOB_PW, "10.0.0.9").access_token
    # The guessing address itself is slowed down, even with the right password...
    limited = refused(lambda: service.login("bob", BOB_PW, "10.6.6.6"))
    assert (limited.status, limited.code) == (429, "RATE_LIMITED")
    assert limited.retry_after == pytest.approx(1.0)  # 1 s after the 5th failure at START + 4
    # ... for a while only.
    clock.now = START + 5
    assert service.login("bob", BOB_PW, "10.6.6.6").access_token


def test_a_guess_a_minute_from_one_address_never_locks_the_admin_out(
    users_path: Path, clock: FakeClock
) -> None:
    service = make_service(users_path, clock)
    for minute in range(30):
        clock.now = START + 60 * minute
        error = refused(lambda: service.login("alice", "a guess a minute", "203.0.113.5"))
        assert error.status in (401, 429)
        if minute in (10, 29):
            assert service.login("alice", ALICE_PW, "10.0.0.1").access_token


def test_past_the_free_failures_each_one_doubles_the_wait_up_to_the_maximum(
    users_path: Path, clock: FakeClock
) -> None:
    config = parse_config({"auth": {"login_failures_per_user_address": 2,
                                    "login_backoff_max_s": 8, "login_window_s": 60}})  # fmt: skip
    service = make_service(users_path, clock, config)
    waits = []
    for _ in range(10):
        error = refused(lambda: service.login("bob", "wrong guess!", "10.0.0.1"))
        if error.status == 429:
            waits.append(error.retry_after)
            clock.now += error.retry_after
        else:
            waits.append(0)
    assert waits == [0, 0, 1, 0, 2, 0, 4, 0, 8, 0]
    assert refused(lambda: service.login("bob", BOB_PW, "10.0.0.1")).retry_after == 8  # capped
    clock.now += 60  # the window after the last failure: all forgotten
    assert service.login("bob", BOB_PW, "10.0.0.1").access_token


def test_the_pair_limit_ignores_the_case_of_the_name(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock, limits(per_user=2))
    refused(lambda: service.login("bob", "wrong guess!", "10.0.0.1"))
    refused(lambda: service.login("BoB", "wrong guess!", "10.0.0.1"))
    assert refused(lambda: service.login("bob", BOB_PW, "10.0.0.1")).status == 429
    assert service.login("bob", BOB_PW, "10.0.0.2").access_token


def test_the_address_limit_spans_usernames_but_spares_names_known_there(
    users_path: Path, clock: FakeClock
) -> None:
    service = make_service(users_path, clock, limits(per_user=5, per_address=3))
    assert service.login("alice", ALICE_PW, "192.0.2.7").access_token  # alice is known there
    for name in ("carol", "dave", "erin"):
        refused(lambda name=name: service.login(name, "a guess!", "192.0.2.7"))
    limited = refused(lambda: service.login("bob", BOB_PW, "192.0.2.7"))
    assert (limited.status, limited.code) == (429, "RATE_LIMITED")
    assert 0 < limited.retry_after <= 300
    assert service.login("alice", ALICE_PW, "192.0.2.7").access_token  # behind the same NAT
    assert service.login("bob", BOB_PW, "192.0.2.8").access_token  # another address


def test_an_ipv6_host_counts_as_its_64(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock, limits(per_user=2, per_address=100))
    refused(lambda: service.login("bob", "wrong guess!", "2001:db8:0:1::1"))
    refused(lambda: service.login("bob", "wrong guess!", "2001:db8:0:1::2"))
    assert refused(lambda: service.login("bob", BOB_PW, "2001:db8:0:1::ffff")).status == 429
    assert service.login("bob", BOB_PW, "2001:db8:0:2::1").access_token


def test_a_success_resets_the_pair_count(users_path: Path, clock: FakeClock) -> None:
    service = make_service(users_path, clock, limits(per_user=2))
    refused(lambda: service.login("bob", "wrong guess!", "10.0.0.1"))
    service.login("bob", BOB_PW, "10.0.0.1")
    refused(lambda: service.login("bob", "wrong guess!", "10.0.0.1"))
    # Without the reset this would be the pair's third attempt after two failures: 429.
    assert service.login("bob", BOB_PW, "10.0.0.1").access_token


def test_concurrent_guesses_get_no_more_password_checks_than_the_limit(
    users_path: Path, clock: FakeClock
) -> None:
    config = parse_config({"auth": {"login_failures_per_user_address": 2,
                                    "password_queue": 8, "password_wait_s": 30}})  # fmt: skip
    service = make_service(users_path, clock, config)
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


def test_a_busy_gate_answers_429_at_once_and_counts_no_failure(
    users_path: Path, clock: FakeClock
) -> None:
    config = parse_config({"auth": {"password_checks": 1, "password_queue": 0}})
    service = make_service(users_path, clock, config)
    with service.gate.slot():  # someone else's verification is running
        busy = refused(lambda: service.login("bob", BOB_PW, "10.0.0.1"))
    assert (busy.status, busy.code, busy.retry_after) == (429, "RATE_LIMITED", 1.0)
    assert "in progress" in busy.detail
    throttle = service.throttle
    assert len(throttle.by_pair) == len(throttle.by_address) == 0  # nothing was checked
    assert service.login("bob", BOB_PW, "10.0.0.1").access_token


def test_the_gate_follows_the_configuration(users_path: Path, clock: FakeClock) -> None:
    gate = make_service(users_path, clock).gate
    assert gate.slots == len(os.sched_getaffinity(0))
    assert (gate.queue, gate.wait_s) == (4, 1.0)
    config = parse_config({"auth": {"password_checks": 3, "password_queue": 7,
                                    "password_wait_s": 0.5}})  # fmt: skip
    gate = make_service(users_path, clock, config).gate
    assert (gate.slots, gate.queue, gate.wait_s) == (3, 7, 0.5)


def test_a_legacy_hash_is_replaced_at_the_first_successful_login(
    users_path: Path, clock: FakeClock
) -> None:
    service = make_service(users_path, clock)
    before = service.login("bob", BOB_PW, "10.0.0.1")
    ticket, _ = service.issue_ticket(2, gen(service, 2), START + 600)
    digest, salt = legacy_scrypt(BOB_PW)
    edit_users_file(users_path, lambda file: (msgspec.structs.replace(file, users=tuple(
        msgspec.structs.replace(u, password_hash=digest, salt=salt) if u.username == "bob" else u
        for u in file.users)), None))  # fmt: skip
    legacy = UserStore(users_path).get(2)
    assert legacy is not None and legacy.password_hash == digest
    refused(lambda: service.login("bob", "wrong guess!", "10.0.0.1"))
    assert UserStore(users_path).get(2) == legacy  # a failure changes nothing
    pair = service.login("bob", BOB_PW, "10.0.0.1")
    bob = UserStore(users_path).get(2)
    assert bob is not None and bob.salt == "" and "salt" not in users_path.read_text()
    assert bob.password_hash.startswith("$argon2id$v=19$")
    assert verify_password(BOB_PW, bob.password_hash)
    # Not a new password: the generation stays, and every token and ticket issued before works.
    assert bob.generation == legacy.generation
    for access in (pair.access_token, before.access_token):
        assert isinstance(service.verifier.verify(access, clock()), Principal)
    assert service.refresh(before.refresh_token).access_token
    assert service.redeem_ticket(ticket).generation == bob.generation
    assert service.login("bob", BOB_PW, "10.0.0.1").access_token
    assert UserStore(users_path).get(2) == bob  # re-hashed once


def legacy_scrypt(password: str) -> tuple[str, str]:
    salt = b"legacy-salt-0001"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return (f"scrypt$16384$8$1${base64.b64encode(digest).decode()}",
            base64.b64encode(salt).decode())  # fmt: skip


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
