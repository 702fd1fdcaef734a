"""Users files for tests: every user with a password hash and a generation, `next_id` set."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from leireye.accounts.passwords import hash_password
from leireye.accounts.users import User, UsersFile, dump_users_file, new_generation


@functools.cache
def _hashed(password: str) -> str:
    return hash_password(password)  # argon2id costs ~80 ms: once per password per test run


def make_user(user_id: int, username: str, role: str, password: str) -> User:
    return User(user_id, username, role, _hashed(password), new_generation())


def users_yaml(users: Mapping[str, tuple[str, str]]) -> str:
    """The text of a users file: username -> (role, password), ids from 1 in order."""
    made = tuple(
        make_user(i, name, role, password)
        for i, (name, (role, password)) in enumerate(users.items(), start=1)
    )
    return dump_users_file(UsersFile(next_id=len(made) + 1, users=made))
