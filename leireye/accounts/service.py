"""The account service: log in, refresh, log out, and single-use WebSocket tickets.

It runs in one place only, the supervisor (through `leireye.control`), because its state must be
shared by every web worker: the refresh tokens that are still valid, the tickets not yet used,
and the failed-login counts. Access tokens stay stateless (each worker verifies them alone).

- Login checks the failure back-off per (user, address) and per address *before* verifying the
  password (`leireye.accounts.limiter`: throttling that never locks a user out from an address
  that did not fail), runs at most a few verifications at once (`leireye.accounts.gate`: the
  rest wait briefly or get 429 at once), answers every failure the same way
  (`INVALID_CREDENTIALS`), spending one verification even for an unknown name, so neither the
  answer nor its timing tells whether a user exists, and replaces a hash of older parameters
  with a current one once the password is known to be right.
- A refresh token is a JWT (`typ: refresh`) whose `jti` must be in the store: refreshing rotates
  it (the old one stops working), logging out removes it, and a password change or removal of
  the user removes all of that user's — also when made in a shell with `leireye user`, because
  each entry remembers the user's `generation` it was issued under. The store is
  written to a root-only file on each change, so a restart of the sensor does not log everyone
  out, and a revoked token stays revoked.
- A ticket is signed (`leireye.accounts.tickets`, so workers refuse forged ones alone), valid
  once, for `auth.ticket_ttl_s`, tied to the access token it was bought with: it carries that
  token's generation (a new password voids it unredeemed), and the WebSocket it
  opens expires when that token does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec

from leireye.accounts.gate import GateBusy, VerificationGate
from leireye.accounts.limiter import Attempt, LoginThrottle
from leireye.accounts.passwords import hash_password, needs_rehash, verify_dummy, verify_password
from leireye.accounts.principal import AuthFailure
from leireye.accounts.tickets import make_ticket, ticket_key
from leireye.accounts.tokens import Authenticator, issue_token
from leireye.accounts.useredit import edit_users_file, rehash_user
from leireye.accounts.users import User, UserStore
from leireye.config import Config
from leireye.errors import LeirEyeError, RefusedError

log = logging.getLogger("leireye.accounts")

MAX_TICKETS = 100_000
MAX_REFRESH_TOKENS = 100_000


class AccountError(RefusedError):
    """A refused account operation, with the HTTP status and error code the API answers."""


def invalid_credentials() -> AccountError:
    return AccountError(401, "INVALID_CREDENTIALS", "Invalid username or password")


class TokenPair(msgspec.Struct, frozen=True):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"
    refresh_expires_in: int = 0


class Ticket(msgspec.Struct, frozen=True):
    user_id: int
    expires_at: float  # when the ticket itself stops being accepted
    session_expires_at: float  # when a WebSocket opened with it must re-authenticate
    generation: str  # the user's at issue: a new password, or a re-created user, voids it


class RefreshEntry(msgspec.Struct, frozen=True):
    user_id: int
    expires_at: float
    # The user's generation when the token was issued: a password changed anywhere (the API,
    # or `leireye user passwd` in a shell) ends every older refresh token.
    generation: str


def password_slots(setting: int | str) -> int:
    """`auth.password_checks`: a number, or "auto", one per usable core."""
    if isinstance(setting, int):
        return setting
    return max(1, len(os.sched_getaffinity(0)))


class AccountService:
    def __init__(
        self,
        config: Config,
        secret: bytes,
        users: UserStore,
        store_path: Path | None,
        clock: Callable[[], float],
    ) -> None:
        self.auth = config.auth
        self._secret = secret
        self.users = users
        self.verifier = Authenticator(secret, users)
        self.clock = clock
        self._store_path = store_path
        self._lock = threading.Lock()
        auth = self.auth
        self.throttle = LoginThrottle(
            auth.login_failures_per_user_address, auth.login_failures_per_address,
            auth.login_window_s, auth.login_backoff_first_s, auth.login_backoff_max_s,
            auth.refresh_ttl_s,
        )  # fmt: skip
        self.gate = VerificationGate(
            password_slots(auth.password_checks), auth.password_queue, auth.password_wait_s
        )
        self._ticket_key = ticket_key(secret)
        self._refresh: dict[str, RefreshEntry] = self._load()
        self._tickets: dict[str, Ticket] = {}

    # -- login, refresh, logout -----------------------------------------------------------------

    def login(self, username: str, password: str, address: str) -> TokenPair:
        now = self.clock()
        with self._lock:
            attempt = self.throttle.begin(username, address, now)
        if not isinstance(attempt, Attempt):
            log.warning("login for %r from %s refused: too many failures", username, address)
            raise AccountError(
                429, "RATE_LIMITED", "Too many failed logins; try again later", retry_after=attempt
            )
        try:
            with self.gate.slot(attempt.known):
                user = self._verified(username, password)
        except GateBusy as busy:
            with self._lock:
                self.throttle.unchecked(attempt)
            log.warning("login for %r from %s refused: %s", username, address, busy)
            raise AccountError(
                429, "RATE_LIMITED", "Too many logins in progress; try again shortly",
                retry_after=busy.retry_after_s,
            ) from None  # fmt: skip
        if user is None:
            log.warning("failed login for %r from %s", username, address)
            raise invalid_credentials()
        with self._lock:
            self.throttle.succeeded(attempt, self.clock())
            pair = self._issue(user, now)
        log.info("user %s logged in from %s", user.username, address)
        return pair

    def _verified(self, username: str, password: str) -> User | None:
        """The user when `password` is theirs (their hash brought up to date), else None."""
        user = self.users.by_username(username)
        if user is None:
            verify_dummy(password)
            return None
        if not verify_password(password, user.password_hash, user.salt):
            return None
        if needs_rehash(user.password_hash):
            user = self._rehash(user, password)
        return user

    def _rehash(self, user: User, password: str) -> User:
        """Store a current hash of the password just verified; on failure keep the old one. The
        generation stays: the user's tokens, refresh tokens and tickets keep working."""
        old = user.password_hash
        try:
            new = hash_password(password)
        except ValueError:  # a legacy password the rules of today refuse (e.g. too short)
            return user
        try:
            edit_users_file(self.users.path, lambda file: rehash_user(file, user.id, old, new))
        except (OSError, LeirEyeError) as exc:
            log.warning("cannot update the password hash of %s: %s", user.username, exc)
            return user
        self.users.refresh()
        log.info("password hash of %s brought up to date", user.username)
        return self.users.get(user.id) or user

    def refresh(self, refresh_token: str) -> TokenPair:
        now = self.clock()
        result = self.verifier.verify_refresh(refresh_token, now)
        if isinstance(result, AuthFailure):
            raise AccountError(401, "INVALID_TOKEN", "Invalid or expired refresh token")
        principal, jti = result
        with self._lock:
            entry = self._refresh.pop(jti, None)
            if entry is None or entry.user_id != principal.id:
                raise AccountError(401, "INVALID_TOKEN", "Invalid or expired refresh token")
            user = self.users.get(principal.id)
            if user is None or user.generation != entry.generation:
                self._save()
                raise AccountError(401, "INVALID_TOKEN", "Invalid or expired refresh token")
            return self._issue(user, now)

    def logout(self, refresh_token: str, user_id: int | None) -> bool:
        """Revoke `refresh_token` (which must belong to `user_id` when that is given); True
        when it was valid."""
        result = self.verifier.verify_refresh(refresh_token, self.clock())
        if isinstance(result, AuthFailure):
            return False
        principal, jti = result
        if user_id is not None and principal.id != user_id:
            return False
        with self._lock:
            found = self._refresh.pop(jti, None) is not None
            if found:
                self._save()
        return found

    def forget_user(self, user_id: int) -> int:
        """Revoke every refresh token of a user (removed, or given a new password)."""
        with self._lock:
            gone = [jti for jti, e in self._refresh.items() if e.user_id == user_id]
            for jti in gone:
                del self._refresh[jti]
            if gone:
                self._save()
        return len(gone)

    def _issue(self, user: User, now: float) -> TokenPair:
        auth = self.auth
        access = issue_token(self._secret, user, auth.access_ttl_s, now)
        jti = secrets.token_urlsafe(24)
        refresh = issue_token(self._secret, user, auth.refresh_ttl_s, now, "refresh", jti)
        self._prune(now)
        self._refresh[jti] = RefreshEntry(user.id, int(now) + auth.refresh_ttl_s, user.generation)
        while len(self._refresh) > MAX_REFRESH_TOKENS:
            del self._refresh[next(iter(self._refresh))]
        self._save()
        return TokenPair(access, refresh, auth.access_ttl_s, "bearer", auth.refresh_ttl_s)

    # -- tickets ------------------------------------------------------------------------------

    def issue_ticket(
        self, user_id: int, generation: str, session_expires_at: float
    ) -> tuple[str, int]:
        """A ticket for the holder of an access token of `user_id` issued under `generation`
        (the web worker verified that token just before asking)."""
        now = self.clock()
        ttl = self.auth.ticket_ttl_s
        ticket = make_ticket(self._ticket_key, now + ttl, user_id, generation)
        with self._lock:
            for old in [t for t, v in self._tickets.items() if v.expires_at <= now]:
                del self._tickets[old]
            while len(self._tickets) >= MAX_TICKETS:
                del self._tickets[next(iter(self._tickets))]
            self._tickets[ticket] = Ticket(user_id, now + ttl, session_expires_at, generation)
        return ticket, ttl

    def redeem_ticket(self, ticket: str) -> Ticket:
        """The ticket's grant, once; AccountError for an unknown, used or expired ticket."""
        with self._lock:
            grant = self._tickets.pop(ticket, None)
        if grant is None or grant.expires_at <= self.clock():
            raise AccountError(401, "INVALID_TICKET", "Invalid, used or expired ticket")
        user = self.users.get(grant.user_id)
        if user is None or user.generation != grant.generation:  # removed, new password
            raise AccountError(401, "INVALID_TICKET", "Invalid, used or expired ticket")
        return grant

    # -- persistence --------------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        for jti in [j for j, e in self._refresh.items() if e.expires_at <= now]:
            del self._refresh[jti]

    def _load(self) -> dict[str, RefreshEntry]:
        path = self._store_path
        if path is None or not path.exists():
            return {}
        try:
            data = msgspec.json.decode(path.read_bytes(), type=dict[str, RefreshEntry])
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("ignoring refresh-token store %s (%s): everyone logs in again", path, exc)
            return {}
        return data

    def _save(self) -> None:
        path = self._store_path
        if path is None:
            return
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(msgspec.json.encode(self._refresh))
            os.replace(tmp, path)
        except OSError as exc:
            log.error("cannot save refresh tokens to %s: %s", path, exc.strerror)
            with contextlib.suppress(OSError):
                tmp.unlink()
