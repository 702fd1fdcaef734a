"""Any sequence of user edits keeps the users file sound: unique names and ids, a file that
loads back, fresh ids above every id ever given (a removed user's included), a new generation
with every new user and password, and never zero ADMINs once there was one.

Passwords are hashed at a cost of microseconds here (argon2id with t=1, m=8 KiB), not ~80 ms
each; the users drawn at first have legacy scrypt hashes with their salt, which a new password
replaces.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.accounts import useredit
from leireye.accounts.passwords import hash_password
from leireye.accounts.useredit import UserEditError, add_user, remove_user, update_user
from leireye.accounts.users import (
    ROLES,
    User,
    UsersFile,
    dump_users_file,
    new_generation,
    parse_users_file,
)

NAMES = ["admin", "alice", "bob", "Bob", "carol", "x" * 64]
BAD_NAMES = ["", "has space", "x" * 65, "semi;colon"]
ROLE_CHOICES = [*ROLES, "admin", "ROOT", ""]

names = st.sampled_from(NAMES + BAD_NAMES)
roles = st.sampled_from(ROLE_CHOICES)
keys = st.one_of(st.integers(min_value=-1, max_value=14), names)
GOOD_PASSWORD = "a long enough password"
passwords = st.one_of(st.just(GOOD_PASSWORD), st.text(max_size=7))

operations = st.one_of(
    st.tuples(st.just("add"), names, roles, passwords),
    st.tuples(st.just("update"), keys, st.one_of(st.none(), roles), st.none() | passwords),
    st.tuples(st.just("remove"), keys),
)


@st.composite
def initial_users(draw: st.DrawFn) -> UsersFile:
    chosen = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    ids = draw(
        st.lists(st.integers(1, 10), unique=True, min_size=len(chosen), max_size=len(chosen))
    )
    users = tuple(
        User(
            i,
            name,
            draw(st.sampled_from(ROLES)),
            password_hash="scrypt$2$8$1$eA==",
            salt="eA==",
            generation=new_generation(),
        )
        for i, name in zip(ids, chosen, strict=True)
    )
    return UsersFile(next_id=max(ids, default=0) + 1 + draw(st.integers(0, 3)), users=users)


CHEAP = functools.partial(hash_password, time_cost=1, memory_kib=8)


@contextmanager
def cheap_hashes() -> Iterator[None]:
    with mock.patch.object(useredit, "hash_password", CHEAP):
        yield


def apply(users: UsersFile, op: tuple[Any, ...]) -> tuple[UsersFile, User]:
    with cheap_hashes():
        match op:
            case ("add", name, role, password):
                return add_user(users, name, role, password)
            case ("update", key, role, password):
                return update_user(users, key, role=role, password=password)
            case ("remove", key):
                return remove_user(users, key)
    raise AssertionError(op)


def admins(users: tuple[User, ...]) -> int:
    return sum(1 for u in users if u.role == "ADMIN")


@settings(max_examples=200, deadline=None)
@given(initial_users(), st.lists(operations, max_size=30))
def test_any_edit_sequence_keeps_the_users_sound(
    start: UsersFile, ops: list[tuple[Any, ...]]
) -> None:
    current = start
    given_ids = {u.id for u in start.users}
    generations = {u.generation for u in start.users}
    for op in ops:
        try:
            after_file, user = apply(current, op)
        except UserEditError as exc:
            assert exc.kind in ("conflict", "not_found", "invalid")
            continue
        users, after = current.users, after_file.users
        assert len({u.id for u in after}) == len(after)
        assert len({u.username for u in after}) == len(after)
        assert all(u.id < after_file.next_id for u in after)
        assert after_file.next_id >= current.next_id
        if admins(users):
            assert admins(after) >= 1, op
        if op[0] == "add":
            assert len(after) == len(users) + 1 and after[-1] == user
            assert user.id not in given_ids and user.id == current.next_id
            assert user.generation not in generations
            given_ids.add(user.id)
            generations.add(user.generation)
        elif op[0] == "remove":
            assert len(after) == len(users) - 1 and user in users and user not in after
        else:
            assert len(after) == len(users) and user in after
            assert [u.id for u in after] == [u.id for u in users]
            assert [u.username for u in after] == [u.username for u in users]
            old = next(u for u in users if u.id == user.id)
            if op[3] is None:
                assert user.generation == old.generation
            else:
                assert user.generation not in generations
                generations.add(user.generation)
        # Whatever the edits did, the file they write loads back as the same file.
        assert parse_users_file(yaml.safe_load(dump_users_file(after_file))) == after_file
        current = after_file


def expected_refusal(users: tuple[User, ...], op: tuple[Any, ...]) -> str | None:
    """The kind of UserEditError a plain reading of the rules predicts, or None for success."""
    by_key = {u.username: u for u in users} | {u.id: u for u in users}
    match op:
        case ("add", name, role, password):
            if name not in NAMES:
                return "invalid"
            if role not in ROLES:
                return "invalid"
            if name in by_key:
                return "conflict"
            return None if password == GOOD_PASSWORD else "invalid"
        case ("update", key, role, password):
            user = by_key.get(key)
            if user is None:
                return "not_found"
            if role is not None and role not in ROLES:
                return "invalid"
            if role not in (None, "ADMIN") and user.role == "ADMIN" and admins(users) == 1:
                return "conflict"
            return None if password in (None, GOOD_PASSWORD) else "invalid"
        case ("remove", key):
            user = by_key.get(key)
            if user is None:
                return "not_found"
            return "conflict" if user.role == "ADMIN" and admins(users) == 1 else None
    raise AssertionError(op)


@settings(max_examples=200, deadline=None)
@given(initial_users(), st.lists(operations, max_size=30))
def test_each_edit_is_refused_exactly_when_the_rules_say(
    start: UsersFile, ops: list[tuple[Any, ...]]
) -> None:
    users = start
    for op in ops:
        expected = expected_refusal(users.users, op)
        try:
            users, _ = apply(users, op)
        except UserEditError as exc:
            assert exc.kind == expected, op
            assert str(exc)
        else:
            assert expected is None, op
