"""WebSocket tickets, signed so that a web worker refuses a made-up one without asking anyone.

A ticket reads `<nonce>.<expires_ms>.<user_id>.<mac>`: 16 random bytes (base64url), the Unix
time in milliseconds after which it is refused, the id of the user it was bought for, and
HMAC-SHA256 over those three and the `generation` of the access token it was bought with (see
`leireye.accounts.users`), under a key derived from the JWT secret (`ticket_key`: its own
purpose string, so no ticket is ever a valid MAC of anything else). The generation is signed,
not written: the ticket says nothing about it, and a worker checks it against the user's
generation in the users view it reads (`leireye.accounts.userview`), so a ticket bought before
a new password (or for a user since removed and created again) is refused there, unredeemed.

The supervisor issues it and keeps its grant (the user and generation, when the WebSocket must
re-authenticate) until it is redeemed, once. A worker checks the form, the MAC and the expiry
first (`TicketCheck`): a storm of bogus `?ticket=` handshakes costs each one an HMAC in the
worker and the supervisor nothing (before, each was a control-channel round trip and a thread
there). The worker also remembers every ticket it has passed on, until it expires, so a replay
to the same worker is refused locally too; only the first use on each worker reaches the
supervisor, whose single-use store decides, and checks the generation again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from typing import Final

NONCE_BYTES: Final = 16
_PURPOSE: Final = b"leireye websocket ticket v1"
_FORM: Final = re.compile(
    r"([A-Za-z0-9_-]{22})\.([1-9][0-9]{0,15})\.([1-9][0-9]{0,9})\.([A-Za-z0-9_-]{43})"
)
MAX_TICKET_CHARS: Final = 100

# The generation a user has now (None for no such user): the users file's, as the caller reads it.
GenerationOf = Callable[[int], str | None]


def ticket_key(secret: bytes) -> bytes:
    return hmac.new(secret, _PURPOSE, hashlib.sha256).digest()


def _mac(key: bytes, written: str, generation: str) -> str:
    signed = f"{written}.{generation}".encode("ascii", "replace")
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def make_ticket(key: bytes, expires_at: float, user_id: int, generation: str) -> str:
    """A ticket for `user_id`, valid until `expires_at` while the user's generation is
    `generation`."""
    nonce = base64.urlsafe_b64encode(secrets.token_bytes(NONCE_BYTES)).rstrip(b"=").decode()
    written = f"{nonce}.{int(expires_at * 1000)}.{user_id}"
    return f"{written}.{_mac(key, written, generation)}"


def ticket_valid(key: bytes, ticket: str, now: float, generation_of: GenerationOf) -> float | None:
    """The ticket's expiry (Unix seconds) when it is well-formed, signed with `key` for its
    user's generation of now (`generation_of`) and not expired at `now`; else None."""
    match = _FORM.fullmatch(ticket) if len(ticket) <= MAX_TICKET_CHARS else None
    if match is None:
        return None
    nonce, expires_ms, user_id, mac = match.groups()
    generation = generation_of(int(user_id))
    if generation is None:
        return None
    if not hmac.compare_digest(mac, _mac(key, f"{nonce}.{expires_ms}.{user_id}", generation)):
        return None
    expires_at = int(expires_ms) / 1000
    return expires_at if now < expires_at else None


class TicketCheck:
    """A worker's check before it asks the supervisor to redeem a ticket."""

    def __init__(
        self, secret: bytes, generation_of: GenerationOf, max_remembered: int = 100_000
    ) -> None:
        self._key = ticket_key(secret)
        self._generation_of = generation_of
        self.max_remembered = max_remembered
        self._passed: dict[str, float] = {}  # ticket -> its expiry, in the order passed on
        self.refused = 0

    def admit(self, ticket: str, now: float) -> bool:
        """True the first time this worker sees a genuine, unexpired ticket whose user still has
        the generation it was bought under: ask the supervisor. False otherwise (refuse the
        handshake without asking)."""
        expires_at = ticket_valid(self._key, ticket, now, self._generation_of)
        if expires_at is None or ticket in self._passed:
            self.refused += 1
            return False
        self._forget(now)
        self._passed[ticket] = expires_at
        return True

    def _forget(self, now: float) -> None:
        passed = self._passed
        while passed and (len(passed) >= self.max_remembered or next(iter(passed.values())) <= now):
            del passed[next(iter(passed))]
