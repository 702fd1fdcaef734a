"""The users file: who may hold a token, and with which role.

    users:
      - {id: 1, username: admin, role: ADMIN}
      - {id: 2, username: alice, role: ANALYST}

It lives at `config.state_path(config.auth.users_file)`, is created on first run with one `admin`
user whose random password is shown once on the console (only its argon2id hash is stored, see
`leireye.accounts.passwords`), mode 0600 and owned by the web user (the unprivileged workers
re-read it). Only root changes it afterwards: `leireye user ...` and the supervisor, on behalf of
`/api/users` (see `leireye.accounts.useredit`). Tokens name a
user by id; every verification looks the id up here, so removing a user or changing a role takes
effect on the next verification, without a restart (`UserStore` re-reads the file when its
inode, size or mtime changes).

While the file is missing or invalid, nobody is known: a typo locks everyone out (loudly, in the
log) rather than letting a user the operator just removed keep working.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import yaml

from leireye.errors import ConfigError

log = logging.getLogger("leireye.accounts.users")

Role = Literal["ADMIN", "ANALYST", "VIEWER"]
ROLES: tuple[Role, ...] = ("ADMIN", "ANALYST", "VIEWER")

MAX_USERS_FILE_BYTES = 1 << 20

UserId = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
Username = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]


class User(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: UserId
    username: Username
    role: Role
    # `$argon2id$...` (salt inside), or a legacy `scrypt$n$r$p$<base64>` with its base64 salt
    # (leireye.accounts.passwords); None: this user cannot log in with a password (tokens from
    # `leireye token` still work).
    password_hash: str | None = None
    salt: str | None = None


def credential_of(user: User) -> str:
    """A short fingerprint of the user's password hash (not of the password). Every token
    carries the one its user had when it was issued: a password changed anywhere (the API, or
    `leireye user passwd` in a shell) ends every older access and refresh token."""
    return hashlib.sha256((user.password_hash or "-").encode()).hexdigest()[:16]


def user_view(user: User) -> dict[str, object]:
    """A user as the API shows it: never the hash or the salt."""
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "has_password": user.password_hash is not None,
    }


class UsersFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    users: tuple[User, ...] = ()


class UsersFileError(ConfigError):
    """The users file is unreadable, not valid YAML, or breaks the schema (the message names the
    path and the key)."""


def parse_users(data: object, source: str = "users file") -> tuple[User, ...]:
    """Validate an already-parsed YAML document; duplicate ids or usernames are refused."""
    try:
        parsed = msgspec.convert(data if data is not None else {}, UsersFile, strict=True)
    except msgspec.ValidationError as exc:
        raise UsersFileError(f"{source}: {exc}") from None
    _check_unique(parsed.users, source)
    return parsed.users


def _check_unique(users: Iterable[User], source: str) -> None:
    ids: set[int] = set()
    names: set[str] = set()
    for index, user in enumerate(users):
        if user.id in ids:
            raise UsersFileError(f"{source}: duplicate user id {user.id} - at $.users[{index}]")
        if user.username in names:
            raise UsersFileError(
                f"{source}: duplicate username {user.username!r} - at $.users[{index}]"
            )
        ids.add(user.id)
        names.add(user.username)


def load_users(path: str | Path) -> tuple[User, ...]:
    path = Path(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_USERS_FILE_BYTES + 1)
    except OSError as exc:
        raise UsersFileError(f"cannot read users file {path}: {exc.strerror}") from None
    if len(raw) > MAX_USERS_FILE_BYTES:
        raise UsersFileError(f"users file {path} is larger than {MAX_USERS_FILE_BYTES} bytes")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsersFileError(f"users file {path}: not valid YAML: {exc}") from None
    return parse_users(data, f"users file {path}")


def dump_users(users: Iterable[User]) -> str:
    """The YAML text of a users file (fields left at their default are omitted)."""
    users = tuple(users)
    _check_unique(users, "users")
    header = "# LeirEye users: roles ADMIN, ANALYST, VIEWER. Tokens name users by id.\n"
    body = yaml.safe_dump({"users": msgspec.to_builtins(users)}, sort_keys=False)
    return header + body


def ensure_users_file(path: str | Path, owner: tuple[int, int] | None = None) -> str | None:
    """Create the users file with one `admin` user with a random password (mode 0600, owned by
    `owner` = (uid, gid)) unless it exists. Returns that password when the file was created
    here (for the caller to show once; it is stored only as a hash), else None. An existing
    file is validated, not changed."""
    from leireye.accounts.passwords import hash_password, random_password

    path = Path(path)
    if path.exists():
        load_users(path)
        _warn_if_foreign(path, owner)
        return None
    password = random_password()
    admin = User(id=1, username="admin", role="ADMIN", password_hash=hash_password(password))
    text = dump_users((admin,)).encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        created = write_private_file(path, text, owner)
    except OSError as exc:
        raise UsersFileError(f"cannot create users file {path}: {exc.strerror}") from None
    if not created:
        load_users(path)
        return None
    log.info("created users file %s with user 'admin' (id 1, ADMIN)", path)
    return password


def _warn_if_foreign(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    st = os.stat(path)
    if st.st_uid != owner[0]:
        log.warning(
            "users file %s is owned by uid %d, not the web user (uid %d): the workers may not be "
            "able to re-read it",
            path,
            st.st_uid,
            owner[0],
        )


def write_private_file(path: Path, data: bytes, owner: tuple[int, int] | None) -> bool:
    """Write `data` to a new file at `path`, mode 0600, owned by `owner`; False if `path` already
    exists (left untouched). The content is complete before the name appears: it is written to
    a temporary file (O_EXCL) and hard-linked into place, so a concurrent reader never sees a
    half-written file and two creators cannot both win."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            if owner is not None:
                os.fchown(fd, owner[0], owner[1])
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return True


class UserStore:
    """The users file, re-read whenever it changes (checked with one `stat` per lookup)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._signature: tuple[int, int, int, int] | None = None
        self._by_id: dict[int, User] = {}
        self.error: str | None = None
        self.version = 0  # counts the reads of a changed file (so callers can tell a change)
        self.refresh()

    def refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._fail((-1, -1, -1, -1), f"cannot read users file {self.path}: {exc.strerror}")
            return
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if signature == self._signature:
            return
        try:
            users = load_users(self.path)
        except UsersFileError as exc:
            self._fail(signature, str(exc))
            return
        self._signature = signature
        self._by_id = {user.id: user for user in users}
        self.error = None
        self.version += 1
        log.info("users file %s: %d users", self.path, len(users))

    def _fail(self, signature: tuple[int, int, int, int], error: str) -> None:
        if signature != self._signature or self.error is None:
            log.error("%s; refusing every token until it is fixed", error)
        self._signature = signature
        self._by_id = {}
        self.error = error
        self.version += 1

    def get(self, user_id: int) -> User | None:
        self.refresh()
        return self._by_id.get(user_id)

    def by_username(self, username: str) -> User | None:
        self.refresh()
        return next((u for u in self._by_id.values() if u.username == username), None)

    def users(self) -> tuple[User, ...]:
        self.refresh()
        return tuple(self._by_id.values())
