"""What the client raises on purpose: one small tree of its own.

    ClientError
    ├── AuthenticationError   the server (close 4001) or the login API (401/403) refused us
    │   └── TokenExpired      the token expired (close 4003) and there was no way to renew it
    ├── ConnectionFailed      no connection (refused, DNS, TLS, HTTP status at the handshake,
    │   │                     retries exhausted); `.status` holds an HTTP status when there was one
    │   └── CertificateMismatch  the server's certificate is not the pinned one (never retried)
    └── ProtocolError         the server refused what we sent or sent what we cannot read
        └── SubscriptionError an `error` answer to a subscribe (a bad filter or option)

Each carries `close_code` when a WebSocket close caused it. Transient closes (a restarted worker,
an idle timeout, the server going away) are never raised: the client reconnects.

The client installs without the sensor (docs/clients.md), so its root is not the sensor's
`leireye.errors.LeirEyeError`: the command line catches both.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of the client's errors."""

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class AuthenticationError(ClientError):
    """Bad credentials or token: retrying with the same ones cannot help."""


class TokenExpired(AuthenticationError):
    """The server closed with 4003 (token expired) and the token source could not renew it."""


class ConnectionFailed(ClientError):
    """The server could not be reached, or refused the handshake."""

    def __init__(
        self, message: str, *, close_code: int | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, close_code=close_code)
        self.status = status


class CertificateMismatch(ConnectionFailed):
    """The server's TLS certificate does not have the pinned fingerprint: nothing was sent."""


class ProtocolError(ClientError):
    """The server refused a message of ours (rate limit, size, connection limit), or sent
    something that is not a message of `leireye.wire`."""


class SubscriptionError(ProtocolError):
    """The server answered a subscribe with `error`: `code` (e.g. `invalid_filter`) and `field`
    (the offending filter or option key, when it named one)."""

    def __init__(self, message: str, *, code: str, field: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
