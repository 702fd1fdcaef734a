"""Password hashes: salted argon2id, legacy scrypt hashes still verified and marked for a
re-hash, constant answers for anything unreadable, bounded cost.

Every hash costs ~80 ms, so one hash is made per module and reused wherever a test only needs
"some valid hash".
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable

import pytest

from leireye.accounts.passwords import (
    MAX_PASSWORD_BYTES,
    MEMORY_KIB,
    MIN_PASSWORD_CHARS,
    TIME_COST,
    PasswordError,
    check_new_password,
    hash_password,
    map_large_allocations,
    needs_rehash,
    random_password,
    verify_dummy,
    verify_password,
)
from tests.waiting import scaled

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password(PASSWORD)


def legacy(password: str, n: int = 2**14, r: int = 8, p: int = 1) -> tuple[str, str]:
    """(password_hash, salt) as the scrypt version of this module wrote them."""
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${base64.b64encode(digest).decode()}", base64.b64encode(
        salt
    ).decode()


@pytest.fixture(scope="module")
def old() -> tuple[str, str]:
    return legacy(PASSWORD)


def with_params(old: tuple[str, str], n: object, r: object, p: object) -> str:
    digest = old[0].split("$")[4]
    return f"scrypt${n}${r}${p}${digest}"


def with_argon2_params(stored: str, params: str) -> str:
    parts = stored.split("$")
    parts[3] = params
    return "$".join(parts)


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def test_hash_has_the_documented_shape_and_never_holds_the_password(stored: str) -> None:
    empty, scheme, version, params, salt, digest = stored.split("$")
    assert (empty, scheme, version) == ("", "argon2id", "v=19")
    assert params == f"m={MEMORY_KIB},t={TIME_COST},p=1" == "m=19456,t=2,p=1"
    assert len(base64.b64decode(salt + "==")) == 16
    assert len(base64.b64decode(digest + "=")) == 32
    assert PASSWORD not in stored
    assert base64.b64encode(PASSWORD.encode()).decode().rstrip("=") not in stored


def test_the_same_password_hashes_differently_each_time(stored: str) -> None:
    again = hash_password(PASSWORD)
    assert again != stored
    assert again.split("$")[4] != stored.split("$")[4]  # the salt
    assert verify_password(PASSWORD, again)


def test_verify_accepts_the_password_and_refuses_a_near_miss(stored: str) -> None:
    assert verify_password(PASSWORD, stored) is True
    assert verify_password(PASSWORD + " ", stored) is False
    assert verify_password(PASSWORD.upper(), stored) is False
    assert verify_password("", stored) is False
    assert verify_password(PASSWORD, stored, "a salt field is ignored for argon2id") is True


def test_a_legacy_scrypt_hash_still_verifies_and_asks_for_a_rehash(
    old: tuple[str, str], stored: str
) -> None:
    assert verify_password(PASSWORD, *old) is True
    assert verify_password(PASSWORD + "!", *old) is False
    assert needs_rehash(old[0]) is True
    assert needs_rehash(stored) is False


def test_an_argon2id_hash_of_other_parameters_verifies_and_asks_for_a_rehash() -> None:
    from argon2 import PasswordHasher

    weaker = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    assert verify_password(PASSWORD, weaker) is True
    assert needs_rehash(weaker) is True


def test_the_salt_is_part_of_a_legacy_hash(old: tuple[str, str]) -> None:
    other_salt = base64.b64encode(b"\x00" * 16).decode()
    assert verify_password(PASSWORD, old[0], other_salt) is False


def test_a_legacy_hash_without_its_salt_never_matches(old: tuple[str, str]) -> None:
    assert verify_password(PASSWORD, old[0]) is False
    assert verify_password(PASSWORD, old[0], "") is False


GARBAGE = [
    "",
    "plain-text-password",
    "bcrypt$2b$12$abcdefghijklmnopqrstuv",
    "scrypt$16384$8$1",  # too few fields
    "scrypt$16384$8$1$x$y",  # too many fields
    "scrypt$lots$8$1$AAAA",
    "scrypt$16384$8$1$not*base64",
    "scrypt$16384$8$1$",  # empty digest
    "$argon2id$",
    "$argon2id$v=19$m=19456,t=2,p=1$",
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$not*base64",
    "$argon2id$v=19$m=19456,t=2,p=1$$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
]


def test_garbage_hashes_are_refused_without_raising(old: tuple[str, str]) -> None:
    for garbage in GARBAGE:
        assert verify_password(PASSWORD, garbage, old[1]) is False, garbage
        assert needs_rehash(garbage) in (True, False)
    assert verify_password(PASSWORD, old[0], "not base64!") is False
    assert verify_password(PASSWORD, old[0], "") is False


ABSURD = [
    (2**30, 8, 1),  # a gigantic N
    (2**40, 1, 1),
    (3 * 2**10, 8, 1),  # not a power of two
    (1, 8, 1),
    (0, 8, 1),
    (-(2**14), 8, 1),
    (2**14, 0, 1),
    (2**14, 1024, 1),  # a gigantic r
    (2**14, 8, 0),
    (2**14, 8, 2**20),  # a gigantic p
    (2**20, 8, 1),  # 1 GiB of memory
]
ABSURD_ARGON2 = [
    "m=4194304,t=2,p=1",  # 4 GiB
    "m=65537,t=2,p=1",  # just over the 64 MiB bound
    "m=19456,t=1000000,p=1",
    "m=19456,t=2,p=255",
    "m=19456,t=0,p=1",
    "m=1,t=2,p=1",
]


def test_absurd_cost_parameters_in_a_tampered_file_are_refused_quickly(
    old: tuple[str, str], stored: str
) -> None:
    for n, r, p in ABSURD:
        started = time.monotonic()
        assert verify_password(PASSWORD, with_params(old, n, r, p), old[1]) is False, (n, r, p)
        assert time.monotonic() - started < scaled(2.0), (n, r, p)
    for params in ABSURD_ARGON2:
        started = time.monotonic()
        assert verify_password(PASSWORD, with_argon2_params(stored, params)) is False, params
        assert time.monotonic() - started < scaled(2.0), params


@pytest.mark.parametrize(("n", "r"), [(2**16, 8), (2**19, 1), (2**14, 32)])
def test_parameters_at_the_memory_bound_are_refused_not_raised(
    old: tuple[str, str], n: int, r: int
) -> None:
    assert verify_password(PASSWORD, with_params(old, n, r, 1), old[1]) is False


def test_unicode_passwords_round_trip() -> None:
    password = "pässwörd 🔑 пароль"
    password_hash = hash_password(password)
    assert verify_password(password, password_hash)
    assert not verify_password("passwörd 🔑 пароль", password_hash)


def test_odd_input_to_verify_never_raises(stored: str, old: tuple[str, str]) -> None:
    for good in ((stored,), old):
        assert verify_password("\ud800 lone surrogate", *good) is False
        assert verify_password("x" * (MAX_PASSWORD_BYTES + 1), *good) is False
    verify_dummy("\ud800" * 10)
    verify_dummy("x" * 100_000)


def test_verify_dummy_costs_about_one_verification(stored: str) -> None:
    real = min(timed(lambda: verify_password("wrong password", stored)) for _ in range(2))
    dummy = min(timed(lambda: verify_dummy("wrong password")) for _ in range(2))
    # Loose bounds (a loaded machine is noisy); a no-op or a double-cost dummy fails them.
    assert dummy > real / 10
    assert real > dummy / 10


def test_large_allocations_can_be_mapped_on_this_glibc() -> None:
    assert map_large_allocations() is True


def test_new_password_rules() -> None:
    with pytest.raises(PasswordError, match="at least"):
        check_new_password("x" * (MIN_PASSWORD_CHARS - 1))
    check_new_password("x" * MIN_PASSWORD_CHARS)
    check_new_password("é" * (MAX_PASSWORD_BYTES // 2))
    with pytest.raises(PasswordError, match="at most"):
        check_new_password("é" * (MAX_PASSWORD_BYTES // 2 + 1))  # few chars, too many bytes
    with pytest.raises(PasswordError):
        hash_password("short")


def test_an_unencodable_password_is_a_password_error() -> None:
    with pytest.raises(PasswordError, match="Unicode"):
        check_new_password("abc\udcffdefghij")
    with pytest.raises(PasswordError):
        hash_password("\ud800" * 10)


def test_random_passwords_are_long_unambiguous_and_distinct() -> None:
    passwords = {random_password() for _ in range(50)}
    assert len(passwords) == 50
    for password in passwords:
        assert len(password) == 20
        assert password.isalnum() and password.isascii()
        assert not set(password) & set("0O1lI")
        check_new_password(password)
    assert len(random_password(32)) == 32
