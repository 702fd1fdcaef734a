"""Password hashes: salted scrypt, constant answers for anything unreadable, bounded cost.

Every scrypt costs ~50 ms, so one hash is made per module and reused wherever a test only needs
"some valid hash".
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pytest

from leireye.accounts.passwords import (
    MAX_PASSWORD_BYTES,
    MIN_PASSWORD_CHARS,
    PasswordError,
    check_new_password,
    hash_password,
    random_password,
    verify_dummy,
    verify_password,
)
from tests.waiting import scaled

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def stored() -> tuple[str, str]:
    return hash_password(PASSWORD)


def with_params(stored: tuple[str, str], n: object, r: object, p: object) -> str:
    digest = stored[0].split("$")[4]
    return f"scrypt${n}${r}${p}${digest}"


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def test_hash_has_the_documented_shape_and_never_holds_the_password(
    stored: tuple[str, str],
) -> None:
    password_hash, salt = stored
    scheme, n, r, p, digest = password_hash.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert len(base64.b64decode(digest, validate=True)) == 32
    assert len(base64.b64decode(salt, validate=True)) == 16
    for text in (password_hash, salt):
        assert PASSWORD not in text
        assert base64.b64encode(PASSWORD.encode()).decode() not in text


def test_the_same_password_hashes_differently_each_time(stored: tuple[str, str]) -> None:
    again = hash_password(PASSWORD)
    assert again[1] != stored[1]
    assert again[0] != stored[0]
    assert verify_password(PASSWORD, *again)


def test_verify_accepts_the_password_and_refuses_a_near_miss(stored: tuple[str, str]) -> None:
    assert verify_password(PASSWORD, *stored) is True
    assert verify_password(PASSWORD + " ", *stored) is False
    assert verify_password(PASSWORD.upper(), *stored) is False
    assert verify_password("", *stored) is False


def test_the_salt_is_part_of_the_hash(stored: tuple[str, str]) -> None:
    other_salt = base64.b64encode(b"\x00" * 16).decode()
    assert verify_password(PASSWORD, stored[0], other_salt) is False


GARBAGE = [
    "",
    "plain-text-password",
    "bcrypt$2b$12$abcdefghijklmnopqrstuv",
    "scrypt$16384$8$1",  # too few fields
    "scrypt$16384$8$1$x$y",  # too many fields
    "scrypt$lots$8$1$AAAA",
    "scrypt$16384$8$1$not*base64",
    "scrypt$16384$8$1$",  # empty digest
]


def test_garbage_hashes_are_refused_without_raising(stored: tuple[str, str]) -> None:
    for garbage in GARBAGE:
        assert verify_password(PASSWORD, garbage, stored[1]) is False, garbage
    assert verify_password(PASSWORD, stored[0], "not base64!") is False
    assert verify_password(PASSWORD, stored[0], "") is False


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


def test_absurd_cost_parameters_in_a_tampered_file_are_refused_quickly(
    stored: tuple[str, str],
) -> None:
    for n, r, p in ABSURD:
        started = time.monotonic()
        assert verify_password(PASSWORD, with_params(stored, n, r, p), stored[1]) is False
        assert time.monotonic() - started < scaled(2.0), (n, r, p)


@pytest.mark.parametrize(("n", "r"), [(2**16, 8), (2**19, 1), (2**14, 32)])
def test_parameters_at_the_memory_bound_are_refused_not_raised(
    stored: tuple[str, str], n: int, r: int
) -> None:
    assert verify_password(PASSWORD, with_params(stored, n, r, 1), stored[1]) is False


def test_unicode_passwords_round_trip() -> None:
    password = "pässwörd 🔑 пароль"
    password_hash, salt = hash_password(password)
    assert verify_password(password, password_hash, salt)
    assert not verify_password("passwörd 🔑 пароль", password_hash, salt)


def test_odd_input_to_verify_never_raises(stored: tuple[str, str]) -> None:
    assert verify_password("\ud800 lone surrogate", *stored) is False
    assert verify_password("x" * (MAX_PASSWORD_BYTES + 1), *stored) is False
    verify_dummy("\ud800" * 10)
    verify_dummy("x" * 100_000)


def test_verify_dummy_costs_about_one_verification(stored: tuple[str, str]) -> None:
    real = min(timed(lambda: verify_password("wrong password", *stored)) for _ in range(2))
    dummy = min(timed(lambda: verify_dummy("wrong password")) for _ in range(2))
    # Loose bounds (a loaded machine is noisy); a no-op or a double-cost dummy fails them.
    assert dummy > real / 10
    assert real > dummy / 10


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
