"""Password hashes: argon2id (argon2-cffi) with a per-hash random salt, never plain text.

A user's `password_hash` is the PHC string `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`: the
salt and the cost parameters travel with each hash, so the cost can be raised later without
breaking existing users. The parameters are OWASP's first recommendation for argon2id (19 MiB,
2 passes, 1 lane): about as much memory per verification as the scrypt they replace (16 MiB),
at OWASP's strength, in ~80 ms here. Hashes made before, `scrypt$<n>$<r>$<p>$<base64>` with the
salt in the user's `salt` field, are still verified; `needs_rehash` tells the login to replace
one (or an argon2id hash of other parameters) with a current hash once the password is known.

Verification compares in constant time and never raises; parameters a tampered users file could
use to make every login a denial of service (gigabytes of memory, thousands of passes) are
refused before any work. `verify_dummy` spends the work of one verification for a user that does
not exist, so the time of a failed login says nothing about the name. How many verifications run
at once is the login's business (`leireye.accounts.gate`); `map_large_allocations` makes the
memory of each one go back to the system as soon as it is done.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import hashlib
import hmac
import secrets
from typing import Final

import argon2

SCHEME: Final = "argon2id"
TIME_COST: Final = 2
MEMORY_KIB: Final = 19 * 1024
PARALLELISM: Final = 1
HASH_BYTES: Final = 32
SALT_BYTES: Final = 16
MAX_PASSWORD_BYTES: Final = 1024
MIN_PASSWORD_CHARS: Final = 8
# The most one verification may cost, whatever the users file says (argon2id and scrypt alike).
MAX_MEMORY_BYTES: Final = 64 * 1024 * 1024
MAX_TIME_COST: Final = 16
MAX_PARALLELISM: Final = 4

LEGACY_SCHEME: Final = "scrypt"


def _hasher(time_cost: int, memory_kib: int) -> argon2.PasswordHasher:
    return argon2.PasswordHasher(
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=PARALLELISM,
        hash_len=HASH_BYTES,
        salt_len=SALT_BYTES,
        type=argon2.Type.ID,
    )


_HASHER: Final = _hasher(TIME_COST, MEMORY_KIB)


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


def hash_password(
    password: str, *, time_cost: int = TIME_COST, memory_kib: int = MEMORY_KIB
) -> str:
    """The `password_hash` of a users-file entry (the salt is in it: the entry has no `salt`).
    Other costs than today's are for tests that hash many passwords (`needs_rehash` is true of
    them)."""
    check_new_password(password)
    custom = (time_cost, memory_kib) != (TIME_COST, MEMORY_KIB)
    hasher = _hasher(time_cost, memory_kib) if custom else _HASHER
    return hasher.hash(password.encode("utf-8"))


def verify_password(password: str, password_hash: str, salt: str = "") -> bool:
    """True when `password` matches; False for a wrong password, or a hash this code cannot read
    or refuses to compute. Never raises. `salt` is read only for a legacy scrypt hash."""
    raw = password.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_PASSWORD_BYTES:
        verify_dummy(password)
        return False
    if password_hash.startswith(f"${SCHEME}$"):
        if not _sane_argon2(password_hash):
            verify_dummy(password)
            return False
        try:
            return _HASHER.verify(password_hash, raw)
        except (argon2.exceptions.Argon2Error, argon2.exceptions.InvalidHashError):
            return False  # a mismatch, or a hash argon2 cannot read
    parsed = _parse_scrypt(password_hash, salt)
    if parsed is None:
        verify_dummy(password)
        return False
    n, r, p, salt_bytes, expected = parsed
    try:
        digest = _scrypt(raw, salt_bytes, n, r, p, len(expected))
    except ValueError:  # parameters OpenSSL refuses after all
        return False
    return hmac.compare_digest(digest, expected)


def needs_rehash(password_hash: str) -> bool:
    """True for a hash to replace at the next successful login: a legacy scrypt hash, or an
    argon2id hash of other parameters than today's."""
    if not password_hash.startswith(f"${SCHEME}$"):
        return True
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except argon2.exceptions.InvalidHashError:
        return False


_DUMMY_HASH: Final = _HASHER.hash(secrets.token_bytes(16))


def verify_dummy(password: str) -> None:
    """The cost of one verification, for a name that has no hash to check against."""
    with contextlib.suppress(argon2.exceptions.VerificationError):
        _HASHER.verify(_DUMMY_HASH, password.encode("utf-8", "surrogatepass")[:MAX_PASSWORD_BYTES])


def _sane_argon2(password_hash: str) -> bool:
    try:
        params = argon2.extract_parameters(password_hash)
    except argon2.exceptions.InvalidHashError:
        return False
    return (
        params.type is argon2.Type.ID
        and 1 <= params.time_cost <= MAX_TIME_COST
        and 1 <= params.parallelism <= MAX_PARALLELISM
        and 8 * params.parallelism <= params.memory_cost <= MAX_MEMORY_BYTES // 1024
    )


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=MAX_MEMORY_BYTES, dklen=dklen)


def _parse_scrypt(password_hash: str, salt: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = password_hash.split("$")
    if len(parts) != 5 or parts[0] != LEGACY_SCHEME or not salt:
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
    if 128 * r * (n + p + 2) > MAX_MEMORY_BYTES or not expected or not salt_bytes:
        return None
    return n, r, p, salt_bytes, expected


def random_password(chars: int = 20) -> str:
    """A password for a first-run account: letters and digits only, easy to copy."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(chars))


_M_MMAP_THRESHOLD: Final = -3  # glibc's malloc.h
LARGE_ALLOCATION_BYTES: Final = 1 << 20


def map_large_allocations() -> bool:
    """Make glibc serve every allocation of `LARGE_ALLOCATION_BYTES` or more with its own mmap,
    unmapped when it is freed. Without this, glibc raises its mmap threshold after the first
    large free (up to 32 MiB), so each 16-19 MiB hash buffer lands in the arena of the thread
    that computed it and stays there: measured on a burst of verifications, 2 at a time by 16
    threads, 321 MiB kept after it; with it, 17 MiB (see docs/reliability.md). For a process
    that hashes passwords from many threads (the supervisor). False without glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION_BYTES))
    except (OSError, AttributeError):
        return False
