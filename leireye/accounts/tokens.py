"""JWT tokens: the HS256 secret, issuing a token, and verifying one against the users file.

Verification trusts as little of the token as it can:

- the algorithm list is fixed to HS256 (never taken from the header), the key must be at least
  32 bytes (`enforce_minimum_key_length`), and anything that is not a compact HS256 token of a
  sane length (at most `MAX_TOKEN_CHARS`, a 43-character signature, canonical base64url, so
  exactly one string carries a given token, and a header and claims that are UTF-8 text) is
  refused before PyJWT parses it, so a 1 MB token costs a length check;
- PyJWT checks the signature, the `crit` header and that `exp`, `iat`, `sub` are present; the
  times are checked here, against the `now` the caller passes, because PyJWT reads its own clock
  and accepts `exp` given as a numeric string ("9999999999"). Every time claim must be a JSON
  integer;
- the token names a user by id, and that id must still be in the users file with the same
  username and the same `generation` (its `gen` claim; see `leireye.accounts.users`): a new
  password, or a user removed and created again, ends every token issued before, and a token
  without `gen` is refused. The role comes from the file, not the token: demoting or removing a
  user takes effect on the next verification of any token already issued. The token's `role`
  claim is informational only.

The client only ever sees `AUTH_FAILED_MESSAGE`. `AuthFailure.reason` is one of a few fixed
words (`REASONS`: "expired", "bad signature", "unknown user"...), for the server's log; the
details go to the log here, at DEBUG. Neither ever contains the token.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any, Final, Literal

import jwt

from leireye.accounts.principal import AuthFailure, Principal
from leireye.accounts.users import Account, AccountStore, User, write_private_file
from leireye.config import Config
from leireye.errors import ConfigError

log = logging.getLogger("leireye.accounts.tokens")

ALGORITHM: Final = "HS256"
AUTH_FAILED_MESSAGE: Final = "Invalid or expired token"
MIN_SECRET_BYTES: Final = 32
NEW_SECRET_BYTES: Final = 64
MAX_SECRET_BYTES: Final = 4096
MAX_TOKEN_CHARS: Final = 4096

# header.payload.signature, base64url without padding; an HS256 signature is 32 bytes = 43 chars.
_COMPACT_HS256: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}")
_USER_ID: Final = re.compile(r"[1-9][0-9]{0,9}")
_DECODE_OPTIONS: Final[Any] = {
    "require": ["exp", "iat", "sub"],
    "verify_signature": True,
    # Checked below against the caller's `now`, as integers.
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "enforce_minimum_key_length": True,
}


# -- the secret ---------------------------------------------------------------------------------


def load_or_create_secret(config: Config) -> bytes:
    """The HS256 secret: the bytes of the environment variable named by `auth.secret_env` when
    that is configured (it must then be set, with at least 32 bytes), else the content of
    `state_path(auth.secret_file)`, created with 64 random bytes, mode 0600, owned by whoever
    runs this (root: the supervisor creates it, a web worker reads it before dropping root) on
    first run.

    An existing secret file readable or writable by group or others is refused, not fixed: it
    may already have been copied, so the operator should replace it (which invalidates every
    token), not just chmod it. So is one owned by another unprivileged user, or shorter than
    32 bytes."""
    auth = config.auth
    if auth.secret_env is not None:
        value = os.environb.get(os.fsencode(auth.secret_env))
        if not value:
            raise ConfigError(
                f"auth.secret_env: the environment variable {auth.secret_env} is not set"
            )
        if len(value) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"auth.secret_env: the secret in {auth.secret_env} is {len(value)} bytes; "
                f"it must be at least {MIN_SECRET_BYTES}"
            )
        return bytes(value)
    path = config.state_path(auth.secret_file)
    secret = _read_secret_file(path)
    if secret is not None:
        return secret
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        created = write_private_file(path, secrets.token_bytes(NEW_SECRET_BYTES), None)
    except OSError as exc:
        raise ConfigError(f"cannot create secret file {path}: {exc.strerror}") from None
    if created:
        log.info("created a new JWT secret in %s", path)
    secret = _read_secret_file(path)
    if secret is None:
        raise ConfigError(f"secret file {path} disappeared while it was being created")
    return secret


def _read_secret_file(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"secret file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"secret file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}): it may have leaked. Delete it and "
                "restart to create a new one (every token is invalidated), or chmod 600 it"
            )
        if st.st_uid not in {0, os.geteuid()}:
            raise ConfigError(
                f"secret file {path} is owned by another user (uid {st.st_uid}; earlier "
                "versions gave it to the web user): every process of that account may have "
                "read it. Delete it and restart to create a new one (every token is invalidated)"
            )
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"secret file {path} holds {len(data)} bytes; it must hold at least "
            f"{MIN_SECRET_BYTES} (delete it to have a new one created)"
        )
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"secret file {path} is larger than {MAX_SECRET_BYTES} bytes")
    return data


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"an HS256 secret must be at least {MIN_SECRET_BYTES} bytes")


# -- tokens -------------------------------------------------------------------------------------


TokenKind = Literal["access", "refresh"]


def issue_token(
    secret: bytes,
    user: User,
    ttl_s: int,
    now: float,
    kind: TokenKind = "access",
    jti: str | None = None,
) -> str:
    """A token for `user`, valid from `now` (epoch seconds) for `ttl_s` seconds. Its `typ` claim
    says what it is for: an access token opens the API and the WebSocket; a refresh token only
    buys new tokens at POST /api/auth/refresh (a token without `typ` is an access token). Its
    `gen` claim binds it to the user's current generation."""
    _check_secret(secret)
    if ttl_s < 1:
        raise ValueError("ttl_s must be at least 1 second")
    issued = int(now)
    claims = {
        "sub": str(user.id),
        "username": user.username,
        "role": user.role,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "jti": jti or secrets.token_urlsafe(16),
        "typ": kind,
        "gen": user.generation,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


# `AuthFailure.reason`: one of these fixed words, never text taken from the token.
MALFORMED: Final = "malformed"
BAD_SIGNATURE: Final = "bad signature"
REFUSED_BY_PYJWT: Final = "invalid token"
EXPIRED: Final = "expired"
NOT_YET_VALID: Final = "not yet valid"
BAD_CLAIMS: Final = "bad claims"
UNKNOWN_USER: Final = "unknown user"
WRONG_KIND: Final = "wrong kind of token"
OLD_GENERATION: Final = "old generation"  # a new password, or the user was created again
REASONS: Final = frozenset(
    {
        MALFORMED, BAD_SIGNATURE, REFUSED_BY_PYJWT, EXPIRED, NOT_YET_VALID, BAD_CLAIMS,
        UNKNOWN_USER, WRONG_KIND, OLD_GENERATION,
    }
)  # fmt: skip


class _Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


class Authenticator:
    """Verifies tokens against the secret and the (live) users: the users file in the
    supervisor, the users view in a web worker."""

    def __init__(self, secret: bytes, users: AccountStore[Account], leeway_s: float = 0) -> None:
        _check_secret(secret)
        if leeway_s < 0:
            raise ValueError("leeway_s must not be negative")
        self._secret = secret
        self.users = users
        self.leeway_s = leeway_s

    def verify(self, token: str, now: float) -> Principal | AuthFailure:
        """The token's user, or a failure whose `reason` is one of `REASONS` (for the log; the
        client is only ever told `AUTH_FAILED_MESSAGE`). `now` is wall-clock time in epoch
        seconds (`time.time()`), not a monotonic clock. Never raises on any input."""
        try:
            return self._verify(token, now, "access")[0]
        except _Refused as exc:
            log.debug("token refused: %s (%s)", exc.reason, exc.detail)
            return AuthFailure(exc.reason)

    def verify_refresh(self, token: str, now: float) -> tuple[Principal, str] | AuthFailure:
        """A refresh token's user and its `jti` (which the caller checks against the tokens it
        issued and did not revoke), or a failure. Never raises."""
        try:
            principal, claims = self._verify(token, now, "refresh")
        except _Refused as exc:
            log.debug("refresh token refused: %s (%s)", exc.reason, exc.detail)
            return AuthFailure(exc.reason)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            return AuthFailure(BAD_CLAIMS)
        return principal, jti

    def _verify(self, token: str, now: float, kind: TokenKind) -> tuple[Principal, dict[str, Any]]:
        if not math.isfinite(now):
            raise _Refused(MALFORMED, f"the caller's clock reads {now!r}")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise _Refused(MALFORMED, "not a string, or too long")
        if not _COMPACT_HS256.fullmatch(token):
            raise _Refused(MALFORMED, "not a compact HS256 JWS")
        header, claims_part, signature = (_canonical_base64url(s) for s in token.split("."))
        if header is None or claims_part is None or signature is None:
            raise _Refused(MALFORMED, "not canonical base64url")
        if not (_utf8_json_text(header) and _utf8_json_text(claims_part)):
            raise _Refused(MALFORMED, "header or claims not UTF-8 JSON text")
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options=_DECODE_OPTIONS
            )
        except jwt.InvalidSignatureError:
            raise _Refused(BAD_SIGNATURE, "InvalidSignatureError") from None
        except jwt.PyJWTError as exc:
            detail = f"{type(exc).__name__}: {str(exc)[:200]!r}"
            raise _Refused(REFUSED_BY_PYJWT, detail) from None
        if claims.get("typ", "access") != kind:
            raise _Refused(WRONG_KIND, f"a {claims.get('typ')!r} token where {kind} is needed")
        return self._check_claims(claims, now), claims

    def _check_claims(self, claims: dict[str, Any], now: float) -> Principal:
        exp = _int_claim(claims, "exp")
        iat = _int_claim(claims, "iat")
        nbf = _int_claim(claims, "nbf") if "nbf" in claims else None
        leeway = self.leeway_s
        if exp <= now - leeway:
            raise _Refused(EXPIRED, f"exp {exp} <= now {now:.0f}")
        if iat > now + leeway:
            raise _Refused(NOT_YET_VALID, f"iat {iat} > now {now:.0f}")
        if nbf is not None and nbf > now + leeway:
            raise _Refused(NOT_YET_VALID, f"nbf {nbf} > now {now:.0f}")
        if exp <= iat:
            raise _Refused(BAD_CLAIMS, "exp is not after iat")
        sub = claims["sub"]
        if not isinstance(sub, str) or not _USER_ID.fullmatch(sub):
            raise _Refused(BAD_CLAIMS, "sub is not a user id")
        username = claims.get("username")
        if not isinstance(username, str):
            raise _Refused(BAD_CLAIMS, "no username claim")
        generation = claims.get("gen")
        if not isinstance(generation, str):
            raise _Refused(BAD_CLAIMS, "no gen claim")
        user = self.users.get(int(sub))
        if user is None:
            problem = self.users.error or "no such user in the users file"
            raise _Refused(UNKNOWN_USER, f"user id {sub}: {problem}")
        if user.username != username:
            raise _Refused(UNKNOWN_USER, f"user id {sub} is no longer {username!r}")
        if generation != user.generation:
            raise _Refused(OLD_GENERATION, f"user id {sub} has a new password or was re-created")
        if claims.get("role") != user.role:
            log.debug("user %s: role %s from the users file applies", user.username, user.role)
        return Principal(
            id=user.id, username=user.username, role=user.role, expires_at=float(exp),
            generation=user.generation, sensors=user.sensors,
        )  # fmt: skip


def _canonical_base64url(segment: str) -> bytes | None:
    """The bytes `segment` encodes, or None if it is not their one canonical encoding: the
    decoder ignores the spare low bits of the last character, so several strings decode to the
    same bytes; only the one encoding the issuer produced is accepted."""
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error:
        return None
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") == segment else None


def _utf8_json_text(raw: bytes) -> bool:
    """RFC 7519 says UTF-8. `json.loads` would also take UTF-16 or UTF-32 (it guesses from the
    NUL bytes, or a BOM) and import that codec then, in a worker whose installation may be
    unreadable; JSON text in UTF-8 has neither."""
    if b"\x00" in raw or raw.startswith(b"\xef\xbb\xbf"):
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _int_claim(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if type(value) is not int:
        raise _Refused(BAD_CLAIMS, f"{name} is not an integer")
    return value
