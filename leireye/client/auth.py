"""Where the client's tokens come from, and the little HTTP it speaks (standard library only).

A `TokenSource` gives the token to authenticate with (`token()`) and, when it can, a fresh one
before the old expires or after the server closed with 4003 (`renew()`):

- `StaticToken`: one token, never renewed: the connection ends with `TokenExpired` at expiry.
- `CallableToken`: a function of yours (sync or async) called for every token needed.
- `PasswordLogin`: `POST /api/auth/login` with a username and password, then
  `POST /api/auth/refresh` with the refresh token (which the server replaces on every refresh);
  a refused refresh falls back to a new login.

HTTP goes through `urllib.request` in a worker thread: a JSON POST or GET is all the client needs.
Over https it trusts the server as `ClientTls` says (CA file or pinned fingerprint, checked
before the request, and so the password, is sent).
The login API answers errors as `{"detail", "error_code", "timestamp"}`; `detail` ends up in the
exception's message, the password never does.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from leireye.client.errors import (
    AuthenticationError,
    ClientError,
    ConnectionFailed,
    ProtocolError,
)
from leireye.client.tls import ClientTls

log = logging.getLogger("leireye.client")

HTTP_TIMEOUT_S = 10.0


class TokenSource(Protocol):
    renewable: bool

    async def token(self) -> str:
        """A token to authenticate a new connection with."""
        ...

    async def renew(self) -> str:
        """A fresh token (only called when `renewable`)."""
        ...


class StaticToken:
    renewable = False

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the token is empty")
        self._token = token

    async def token(self) -> str:
        return self._token

    async def renew(self) -> str:
        return self._token


TokenFunction = Callable[[], str | Awaitable[str]]


class CallableToken:
    renewable = True

    def __init__(self, function: TokenFunction) -> None:
        self._function = function

    async def token(self) -> str:
        value = self._function()
        if inspect.isawaitable(value):
            value = await value
        if not isinstance(value, str) or not value:
            raise AuthenticationError("the token function returned no token")
        return value

    async def renew(self) -> str:
        return await self.token()


class TokenPair(msgspec.Struct, frozen=True):
    """The login and refresh answer."""

    access_token: str
    refresh_token: str
    expires_in: float
    token_type: str = "bearer"


class PasswordLogin:
    """Log in with a username and password; renew with the refresh token."""

    renewable = True

    def __init__(
        self, base_url: str, username: str, password: str, *, tls: ClientTls | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self._tls = tls
        self._pair: TokenPair | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:
            if self._pair is None:
                await self._login()
            elif time.time() >= self._expires - 5:
                await self._refresh()
            assert self._pair is not None
            return self._pair.access_token

    async def renew(self) -> str:
        async with self._lock:
            await self._refresh()
            assert self._pair is not None
            return self._pair.access_token

    async def _login(self) -> None:
        body = {"username": self.username, "password": self._password}
        self._store(await post_json(f"{self.base_url}/api/auth/login", body, tls=self._tls))

    async def _refresh(self) -> None:
        if self._pair is None:
            return await self._login()
        try:
            body = {"refresh_token": self._pair.refresh_token}
            url = f"{self.base_url}/api/auth/refresh"
            self._store(await post_json(url, body, tls=self._tls))
        except AuthenticationError:  # revoked or expired refresh token: log in again
            await self._login()

    def _store(self, answer: Any) -> None:
        try:
            self._pair = msgspec.convert(answer, TokenPair)
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"unexpected answer from the login API: {exc}") from None
        self._expires = time.time() + self._pair.expires_in


async def post_json(
    url: str,
    body: dict[str, Any],
    timeout: float = HTTP_TIMEOUT_S,
    *,
    tls: ClientTls | None = None,
) -> Any:
    """POST `body` as JSON; the decoded JSON answer. 401/403 raise `AuthenticationError`, other
    HTTP errors and network failures `ConnectionFailed`."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    return await asyncio.to_thread(_exchange, request, timeout, tls)


async def get_json(
    url: str,
    timeout: float = HTTP_TIMEOUT_S,
    *,
    token: str | None = None,
    tls: ClientTls | None = None,
) -> Any:
    """GET `url` (with `token` as bearer when given); the decoded JSON answer, errors as in
    `post_json`."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(url, headers=headers)
    return await asyncio.to_thread(_exchange, request, timeout, tls)


def _exchange(request: urllib.request.Request, timeout: float, tls: ClientTls | None) -> Any:
    url = request.full_url
    urlopen = urllib.request.urlopen if tls is None else tls.opener().open
    try:
        with urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = _detail(exc)
        if exc.code in (401, 403):
            raise AuthenticationError(f"authentication failed: {detail} ({url})") from None
        raise ConnectionFailed(f"{url}: HTTP {exc.code}: {detail}", status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionFailed(f"cannot reach {url}: {reason}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise ProtocolError(f"{url}: the answer is not JSON") from None


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read() or b"null")
    except (ValueError, OSError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("detail"), str):
        return str(payload["detail"])
    return str(exc.reason)


async def ring_head(
    api_url: str,
    source: TokenSource,
    timeout: float = HTTP_TIMEOUT_S,
    *,
    tls: ClientTls | None = None,
) -> int | None:
    """The newest packet id now (`GET /health`, whose details need a token): where a packets
    iteration starts, so that a reconnect before the first matching packet still resumes from
    there; None when the server does not say."""
    try:
        token = await source.token()
        health = await get_json(f"{api_url}/health", timeout=timeout, token=token, tls=tls)
        last = health["ring"]["last_id"]
    except (ClientError, KeyError, TypeError) as exc:
        log.debug("no ring position from /health: %s", exc)
        return None
    return last if isinstance(last, int) and last >= 0 else None


def choose_token_source(
    token: str | Callable[[], str | Awaitable[str]] | None,
    username: str | None,
    password: str | None,
    source: TokenSource | None,
    api_url: str,
    tls: ClientTls | None = None,
) -> TokenSource:
    """The source `LeirEyeClient`'s credential arguments describe."""
    given = sum(x is not None for x in (token, username, source))
    if given != 1:
        raise ValueError("give exactly one of token=, username= (with password=), token_source=")
    if source is not None:
        return source
    if isinstance(token, str):
        return StaticToken(token)
    if token is not None:
        return CallableToken(token)
    if password is None:
        raise ValueError("username= needs password=")
    assert username is not None
    return PasswordLogin(api_url, username, password, tls=tls)
