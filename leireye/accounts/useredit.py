"""Changing the users file: add, re-role, re-password, remove — safely against concurrent edits.

The edits themselves are pure functions of the user tuple. `edit_users_file` applies one under
an exclusive `flock` on a lock file beside the users file (so `leireye user add` and an ADMIN's
`POST /api/users` cannot lose each other's change), writes the new text to a temporary file
(mode 0600, owned like the users file) and renames it into place: the web workers, which re-read
the file when it changes, see the old content or the new one, never half of either.

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

from leireye.accounts.passwords import hash_password
from leireye.accounts.users import ROLES, Role, User, Username, dump_users, load_users
from leireye.errors import LeirEyeError

T = TypeVar("T")

EditKind = Literal["conflict", "not_found", "invalid"]
MAX_USER_ID = 2**31 - 1  # the users file's bound (a token's `sub`)


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


def find(users: tuple[User, ...], key: int | str) -> User:
    for user in users:
        if user.id == key or user.username == key:
            return user
    raise UserEditError("not_found", f"no such user: {key!r}")


def add_user(
    users: tuple[User, ...], username: str, role: str, password: str | None
) -> tuple[tuple[User, ...], User]:
    username, role = check_username(username), check_role(role)
    if any(u.username == username for u in users):
        raise UserEditError("conflict", f"a user named {username!r} already exists")
    new_id = max((u.id for u in users), default=0) + 1
    if new_id > MAX_USER_ID:
        raise UserEditError("conflict", f"no user id is left above {MAX_USER_ID}")
    new = User(
        id=new_id,
        username=username,
        role=role,
        password_hash=_hash(password) if password is not None else None,
    )
    return (*users, new), new


def update_user(
    users: tuple[User, ...],
    key: int | str,
    *,
    role: str | None = None,
    password: str | None = None,
) -> tuple[tuple[User, ...], User]:
    user = find(users, key)
    changed = user
    if role is not None:
        role = check_role(role)
        if user.role == "ADMIN" and role != "ADMIN" and _admins(users) == 1:
            raise UserEditError("conflict", "the last ADMIN cannot be demoted")
        changed = msgspec.structs.replace(changed, role=role)
    if password is not None:
        changed = msgspec.structs.replace(changed, password_hash=_hash(password), salt=None)
    return tuple(changed if u is user else u for u in users), changed


def remove_user(users: tuple[User, ...], key: int | str) -> tuple[tuple[User, ...], User]:
    user = find(users, key)
    if user.role == "ADMIN" and _admins(users) == 1:
        raise UserEditError("conflict", "the last ADMIN cannot be removed")
    return tuple(u for u in users if u is not user), user


def rehash_user(
    users: tuple[User, ...], user_id: int, old_hash: str, new_hash: str
) -> tuple[tuple[User, ...], User | None]:
    """Replace a user's password hash with `new_hash`, a current hash of the same password, if
    it is still `old_hash` (not changed meanwhile); None when nothing was changed. Not a
    password change: nothing else of the user changes."""
    user = next((u for u in users if u.id == user_id), None)
    if user is None or user.password_hash != old_hash:
        return users, None
    changed = msgspec.structs.replace(user, password_hash=new_hash, salt=None)
    return tuple(changed if u is user else u for u in users), changed


def _admins(users: tuple[User, ...]) -> int:
    return sum(1 for u in users if u.role == "ADMIN")


def _hash(password: str) -> str:
    from leireye.accounts.passwords import PasswordError

    try:
        return hash_password(password)
    except PasswordError as exc:
        raise UserEditError("invalid", str(exc)) from None


# -- the file -----------------------------------------------------------------------------------


def edit_users_file(
    path: str | Path,
    edit: Callable[[tuple[User, ...]], tuple[tuple[User, ...], T]],
    owner: tuple[int, int] | None = None,
) -> T:
    """Apply `edit` to the users file under its lock and replace the file atomically; returns
    what `edit` returned beside the new users. A missing file starts empty."""
    path = Path(path)
    with _locked(path):
        users = load_users(path) if path.exists() else ()
        new_users, result = edit(users)
        _replace(path, dump_users(new_users).encode("utf-8"), owner)
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


def _replace(path: Path, data: bytes, owner: tuple[int, int] | None) -> None:
    if owner is None and path.exists():
        st = path.stat()
        owner = (st.st_uid, st.st_gid)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.edit")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, owner[0], owner[1])
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
