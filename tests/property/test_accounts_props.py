"""Any sequence of user edits keeps the users file sound: unique names and ids, a file that
loads back, fresh ids above every existing one, and never zero ADMINs once there was one.

No edit here hashes a password (~50 ms each): passwords are None or too short, which the edits
refuse before any hashing.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.accounts.useredit import UserEditError, add_user, remove_user, update_user
from leireye.accounts.users import ROLES, User, dump_users, parse_users

NAMES = ["admin", "alice", "bob", "Bob", "carol", "x" * 64]
BAD_NAMES = ["", "has space", "x" * 65, "semi;colon"]
ROLE_CHOICES = [*ROLES, "admin", "ROOT", ""]

names = st.sampled_from(NAMES + BAD_NAMES)
roles = st.sampled_from(ROLE_CHOICES)
keys = st.one_of(st.integers(min_value=-1, max_value=12), names)
short_passwords = st.one_of(st.none(), st.text(max_size=7))

operations = st.one_of(
    st.tuples(st.just("add"), names, roles, short_passwords),
    st.tuples(st.just("update"), keys, st.one_of(st.none(), roles), short_passwords),
    st.tuples(st.just("remove"), keys),
)


@st.composite
def initial_users(draw: st.DrawFn) -> tuple[User, ...]:
    chosen = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
    ids = draw(
        st.lists(st.integers(1, 10), unique=True, min_size=len(chosen), max_size=len(chosen))
    )
    return tuple(
        User(i, name, draw(st.sampled_from(ROLES))) for i, name in zip(ids, chosen, strict=True)
    )


def apply(users: tuple[User, ...], op: tuple[Any, ...]) -> tuple[tuple[User, ...], User]:
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
    start: tuple[User, ...], ops: list[tuple[Any, ...]]
) -> None:
    users = start
    for op in ops:
        try:
            after, user = apply(users, op)
        except UserEditError as exc:
            assert exc.kind in ("conflict", "not_found", "invalid")
            continue
        assert len({u.id for u in after}) == len(after)
        assert len({u.username for u in after}) == len(after)
        if admins(users):
            assert admins(after) >= 1, op
        if op[0] == "add":
            assert len(after) == len(users) + 1 and after[-1] == user
            assert all(user.id > u.id for u in users)
            assert user.password_hash is None  # only None reaches here
        elif op[0] == "remove":
            assert len(after) == len(users) - 1 and user in users and user not in after
        else:
            assert len(after) == len(users) and user in after
            assert [u.id for u in after] == [u.id for u in users]
            assert [u.username for u in after] == [u.username for u in users]
        # Whatever the edits did, the file they write loads back as the same users.
        assert parse_users(yaml.safe_load(dump_users(after))) == after
        users = after


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
            return None if password is None else "invalid"
        case ("update", key, role, password):
            user = by_key.get(key)
            if user is None:
                return "not_found"
            if role is not None and role not in ROLES:
                return "invalid"
            if role not in (None, "ADMIN") and user.role == "ADMIN" and admins(users) == 1:
                return "conflict"
            return None if password is None else "invalid"
        case ("remove", key):
            user = by_key.get(key)
            if user is None:
                return "not_found"
            return "conflict" if user.role == "ADMIN" and admins(users) == 1 else None
    raise AssertionError(op)


@settings(max_examples=200, deadline=None)
@given(initial_users(), st.lists(operations, max_size=30))
def test_each_edit_is_refused_exactly_when_the_rules_say(
    start: tuple[User, ...], ops: list[tuple[Any, ...]]
) -> None:
    users = start
    for op in ops:
        expected = expected_refusal(users, op)
        try:
            users, _ = apply(users, op)
        except UserEditError as exc:
            assert exc.kind == expected, op
            assert str(exc)
        else:
            assert expected is None, op
