"""The account service: log in, refresh, log out, and single-use WebSocket tickets.

It runs in one place only, the supervisor (through `leireye.control`), because its state must be
shared by every web worker: the refresh tokens that are still valid, the tickets not yet used,
and the failed-login counts. Access tokens stay stateless (each worker verifies them alone).

- Login checks the per-user and per-address failure limits *before* verifying the password, and
  answers every failure the same way (`INVALID_CREDENTIALS`), spending one scrypt even for an
  unknown name, so neither the answer nor its timing tells whether a user exists.
- A refresh token is a JWT (`typ: refresh`) whose `jti` must be in the store: refreshing rotates
  it (the old one stops working), logging out removes it, and a password change or removal of
  the user removes all of that user's — also when made in a shell with `leireye user`, because
  each entry remembers the user's `generation` it was issued under. The store is
  written to a root-only file on each change, so a restart of the sensor does not log everyone
  out, and a revoked token stays revoked.
- A ticket is 32 random bytes (base64url), valid once, for `auth.ticket_ttl_s`, tied to the
  access token it was bought with: it carries that token's generation, and the WebSocket it
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

from leireye.accounts.limiter import FailureLimiter
from leireye.accounts.passwords import verify_dummy, verify_password
from leireye.accounts.principal import AuthFailure
from leireye.accounts.tokens import Authenticator, issue_token
from leireye.accounts.users import User, UserStore
from leireye.config import Config
from leireye.errors import RefusedError

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
        window = self.auth.login_window_s
        self.by_user = FailureLimiter(self.auth.login_failures_per_user, window)
        self.by_address = FailureLimiter(self.auth.login_failures_per_address, window)
        self._refresh: dict[str, RefreshEntry] = self._load()
        self._tickets: dict[str, Ticket] = {}

    # -- login, refresh, logout -----------------------------------------------------------------

    def login(self, username: str, password: str, address: str) -> TokenPair:
        now = self.clock()
        user_key = f"user:{username.casefold()}"
        addr_key = f"addr:{address}"
        with self._lock:
            wait = max(
                self.by_user.retry_after(user_key, now), self.by_address.retry_after(addr_key, now)
            )
            if wait <= 0:
                # Count the attempt as failed before checking the password, so parallel guesses
                # cannot all pass the limit while their checks run; a success takes it back.
                self.by_user.fail(user_key, now)
                self.by_address.fail(addr_key, now)
        if wait > 0:
            log.warning("login for %r from %s refused: too many failures", username, address)
            raise AccountError(
                429, "RATE_LIMITED", "Too many failed logins; try again later", retry_after=wait
            )
        user = self.users.by_username(username)
        if user is None:
            verify_dummy(password)
            ok = False
        else:
            ok = verify_password(password, user.password_hash, user.salt)
        if not ok or user is None:
            log.warning("failed login for %r from %s", username, address)
            raise invalid_credentials()
        with self._lock:
            self.by_user.succeed(user_key)
            self.by_address.undo(addr_key, now)
            pair = self._issue(user, now)
        log.info("user %s logged in from %s", user.username, address)
        return pair

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
        ticket = secrets.token_urlsafe(32)
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
