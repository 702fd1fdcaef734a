"""Password hashes: `hashlib.scrypt` with a per-user random salt, never plain text.

A user's `password_hash` field reads `scrypt$<n>$<r>$<p>$<base64 hash>` and `salt` holds the
base64 salt, so the cost parameters travel with each hash and can be raised later without
breaking existing users. Verification compares in constant time; `verify_dummy` spends the same
work for a user that does not exist, so the time of a failed login says nothing about the name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

SCHEME: Final = "scrypt"
N: Final = 2**14
R: Final = 8
P: Final = 1
DKLEN: Final = 32
SALT_BYTES: Final = 16
MAX_PASSWORD_BYTES: Final = 1024
MIN_PASSWORD_CHARS: Final = 8
_MAXMEM: Final = 64 * 1024 * 1024


class PasswordError(ValueError):
    """A password that may not be set (too short, too long)."""


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise PasswordError(f"a password must have at least {MIN_PASSWORD_CHARS} characters")
    try:
        encoded = password.encode("utf-8")
    except UnicodeEncodeError:
        raise PasswordError("a password must be valid Unicode text") from None
    if len(encoded) > MAX_PASSWORD_BYTES:
        raise PasswordError(f"a password must be at most {MAX_PASSWORD_BYTES} bytes")


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> tuple[str, str]:
    """(password_hash, salt) for a users-file entry."""
    check_new_password(password)
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password.encode("utf-8"), salt, n, r, p)
    encoded = base64.b64encode(digest).decode("ascii")
    return f"{SCHEME}${n}${r}${p}${encoded}", base64.b64encode(salt).decode("ascii")


def verify_password(password: str, password_hash: str, salt: str) -> bool:
    """True when `password` matches; False for a wrong password or a hash this code cannot
    read. Never raises."""
    parsed = _parse(password_hash, salt)
    raw = password.encode("utf-8", "surrogatepass")
    if parsed is None or len(raw) > MAX_PASSWORD_BYTES:
        verify_dummy(password)
        return False
    n, r, p, salt_bytes, expected = parsed
    try:
        digest = _scrypt(raw, salt_bytes, n, r, p)
    except ValueError:  # parameters OpenSSL refuses after all
        return False
    return hmac.compare_digest(digest, expected)


_DUMMY_SALT: Final = secrets.token_bytes(SALT_BYTES)


def verify_dummy(password: str) -> None:
    """The cost of one verification, for a name that has no hash to check against."""
    _scrypt(password.encode("utf-8", "surrogatepass")[:MAX_PASSWORD_BYTES], _DUMMY_SALT, N, R, P)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=DKLEN)


def _parse(password_hash: str, salt: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = password_hash.split("$")
    if len(parts) != 5 or parts[0] != SCHEME:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        expected = base64.b64decode(parts[4], validate=True)
        salt_bytes = base64.b64decode(salt, validate=True)
    except (ValueError, binascii.Error):
        return None
    # Refuse parameters that would let a tampered file make every login a denial of service.
    if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        return None
    # scrypt needs 128*r*(n + p + 2) bytes, a little over 128*r*n.
    if 128 * r * (n + p + 2) > _MAXMEM or not expected or not salt_bytes:
        return None
    return n, r, p, salt_bytes, expected


def random_password(chars: int = 20) -> str:
    """A password for a first-run account: letters and digits only, easy to copy."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(chars))
