"""Who is on the other end of a connection: what authentication gives the session.

The auth layer (JWT) turns a token into a `Principal` or an `AuthFailure`; the session only ever
sees these two types, through one callable:

    Authenticate = Callable[[str, float], Principal | AuthFailure]   # (token, now) -> result

`now` and `expires_at` are Unix time in seconds (the wall clock, `time.time()`): the same clock
the session is driven with, and the one a JWT `exp` claim is written in.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated user, valid until `expires_at` (None: the token never expires)."""

    id: int
    username: str
    role: str
    expires_at: float | None
    # The user's `generation` the token (or ticket) was issued under: when the users file shows
    # another one (a new password, the user re-created), open connections are closed.
    generation: str
    # At a fleet central, the sensors this user may see (from the users file, like the role);
    # None: every one.
    sensors: tuple[str, ...] | None = None


class AuthFailure(msgspec.Struct, frozen=True):
    """A token that was refused. `reason` is for the server's log only ("expired", "bad
    signature", "unknown user"); the client is told nothing more than "Invalid or expired
    token"."""

    reason: str


Authenticate = Callable[[str, float], Principal | AuthFailure]
"""`(token, now) -> Principal | AuthFailure`. Must not raise for any token string."""

Admit = Callable[[Principal], bool]
"""Called once per connection, on its first successful authentication: True takes one of the
user's connection slots (the shell gives it back when the connection ends, if
`Session.admitted`); False refuses the connection (too many for this user)."""
