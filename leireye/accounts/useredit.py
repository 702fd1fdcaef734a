"""Changing the users file: add, re-role, re-password, remove — safely against concurrent edits.

The edits themselves are pure functions of the `UsersFile` (its users and `next_id`): a new
user takes `next_id` and a new `generation`, a new password brings a new `generation`, and a
removal leaves `next_id` as it is, so no id and no generation is ever handed out again.
`edit_users_file` applies one under an exclusive `flock` on a lock file beside the users file
(so `leireye user add` and an ADMIN's `POST /api/users` cannot lose each other's change),
writes the new text to a temporary file (mode 0600, root's) and renames it into place: the
supervisor, which re-reads the file when it changes (and rewrites the workers' users view from
it), sees the old content or the new one, never half of either.

Rules that protect the operator from locking themselves out: the last ADMIN can be neither
removed nor demoted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from leireye.accounts.passwords import PasswordError, hash_password
from leireye.accounts.users import (
    EMPTY_USERS_FILE,
    MAX_USER_ID,
    ROLES,
    Role,
    User,
    Username,
    UsersFile,
    dump_users_file,
    load_users,
    load_users_file,
    new_generation,
)
from leireye.config import SensorName
from leireye.errors import LeirEyeError

T = TypeVar("T")

EditKind = Literal["conflict", "not_found", "invalid"]


class UserEditError(LeirEyeError):
    """An edit that cannot be made; `kind` maps to HTTP 409, 404 or 422."""

    def __init__(self, kind: EditKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_username(username: str) -> str:
    try:
        return msgspec.convert(username, Username)
    except msgspec.ValidationError:
        raise UserEditError(
            "invalid", "a username is 1-64 characters of letters, digits and _ . @ -"
        ) from None


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise UserEditError("invalid", f"role must be one of {', '.join(ROLES)}")
    return role


def check_sensors(names: list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The sensors a user is limited to, sorted, each a valid sensor name (None: every sensor;
    an empty list is refused: a user who may see no sensor should be removed)."""
    if names is None:
        return None
    try:
        checked = msgspec.convert(list(names), list[SensorName])
    except msgspec.ValidationError:
        raise UserEditError(
            "invalid",
            "a sensor name is 1-63 letters, digits, _ and -, beginning with a letter or digit",
        ) from None
    if not checked:
        raise UserEditError("invalid", "give at least one sensor (or none at all: every sensor)")
    return tuple(sorted(set(checked)))


def find(users: tuple[User, ...], key: int | str) -> User:
    for user in users:
        if user.id == key or user.username == key:
            return user
    raise UserEditError("not_found", f"no such user: {key!r}")


def add_user(
    users_file: UsersFile,
    username: str,
    role: str,
    password: str,
    sensors: list[str] | tuple[str, ...] | None = None,
) -> tuple[UsersFile, User]:
    """A new user with the file's `next_id` and a new generation; `next_id` moves past it.
    `sensors`: the fleet sensors they may see (None: every one)."""
    username, role = check_username(username), check_role(role)
    limited = check_sensors(sensors)
    users = users_file.users
    if any(u.username == username for u in users):
        raise UserEditError("conflict", f"a user named {username!r} already exists")
    new_id = users_file.next_id
    if new_id > MAX_USER_ID:
        raise UserEditError("conflict", f"every user id up to {MAX_USER_ID} has been given out")
    new = User(new_id, username, role, _hash(password), new_generation(), sensors=limited)
    return UsersFile(next_id=new_id + 1, users=(*users, new)), new


def update_user(
    users_file: UsersFile,
    key: int | str,
    *,
    role: str | None = None,
    password: str | None = None,
    sensors: list[str] | tuple[str, ...] | UnsetType | None = UNSET,
) -> tuple[UsersFile, User]:
    """A new role (tokens keep working: the role is read from the file), a new password (with
    a new generation: every token issued before is refused), new `sensors` (None: every
    sensor; open connections of the user are closed when they change), or several."""
    users = users_file.users
    user = find(users, key)
    changed = user
    if role is not None:
        role = check_role(role)
        if user.role == "ADMIN" and role != "ADMIN" and _admins(users) == 1:
            raise UserEditError("conflict", "the last ADMIN cannot be demoted")
        changed = msgspec.structs.replace(changed, role=role)
    if not isinstance(sensors, UnsetType):
        changed = msgspec.structs.replace(changed, sensors=check_sensors(sensors))
    if password is not None:
        changed = msgspec.structs.replace(
            changed, password_hash=_hash(password), salt="", generation=new_generation()
        )
    new_users = tuple(changed if u is user else u for u in users)
    return msgspec.structs.replace(users_file, users=new_users), changed


def remove_user(users_file: UsersFile, key: int | str) -> tuple[UsersFile, User]:
    users = users_file.users
    user = find(users, key)
    if user.role == "ADMIN" and _admins(users) == 1:
        raise UserEditError("conflict", "the last ADMIN cannot be removed")
    new_users = tuple(u for u in users if u is not user)
    return msgspec.structs.replace(users_file, users=new_users), user


def rehash_user(
    users_file: UsersFile, user_id: int, old_hash: str, new_hash: str
) -> tuple[UsersFile, User | None]:
    """Replace a user's password hash with `new_hash`, a current hash of the same password, if
    it is still `old_hash` (not changed meanwhile); None when nothing was changed. Not a
    password change: the generation stays, and with it every token of the user; nothing else
    of the user changes either."""
    users = users_file.users
    user = next((u for u in users if u.id == user_id), None)
    if user is None or user.password_hash != old_hash:
        return users_file, None
    changed = msgspec.structs.replace(user, password_hash=new_hash, salt="")
    new_users = tuple(changed if u is user else u for u in users)
    return msgspec.structs.replace(users_file, users=new_users), changed


def _admins(users: tuple[User, ...]) -> int:
    return sum(1 for u in users if u.role == "ADMIN")


def _hash(password: str) -> str:
    try:
        return hash_password(password)
    except PasswordError as exc:
        raise UserEditError("invalid", str(exc)) from None


# -- the file -----------------------------------------------------------------------------------


def edit_users_file(
    path: str | Path,
    edit: Callable[[UsersFile], tuple[UsersFile, T]],
) -> T:
    """Apply `edit` to the users file under its lock and replace the file atomically; returns
    what `edit` returned beside the new file. A missing file starts empty (`next_id` 1)."""
    path = Path(path)
    with _locked(path):
        users_file = load_users_file(path) if path.exists() else EMPTY_USERS_FILE
        new_file, result = edit(users_file)
        _replace(path, dump_users_file(new_file).encode("utf-8"))
    return result


def read_users_file(path: str | Path) -> tuple[User, ...]:
    path = Path(path)
    with _locked(path):
        return load_users(path) if path.exists() else ()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _replace(path: Path, data: bytes) -> None:
    """Root's alone (0600, root:root, whoever owned it before: see `make_root_only`)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.edit")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if os.geteuid() == 0:
            os.fchown(fd, 0, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
