"""The users file: who may hold a token, and with which role.

    next_id: 3
    users:
      - {id: 1, username: admin, role: ADMIN, password_hash: '$argon2id$v=19$m=19456,t=2,p=1$...',
         generation: 3q2-7wQW1nVbTqz0c9yHkA}
      - {id: 2, username: alice, role: ANALYST, password_hash: 'scrypt$16384$8$1$...',
         salt: '...', generation: ...}

It lives at `config.state_path(config.auth.users_file)`, is created on first run with one `admin`
user whose random password goes to a root-only file in `state_dir` (`FIRST_ADMIN_PASSWORD_FILE`;
only its argon2id hash is stored here, see `leireye.accounts.passwords`), mode 0600 and owned by
root: the unprivileged web workers never read it, they read a view of it without hashes that
the supervisor keeps (`leireye.accounts.userview`). Only root changes it afterwards: `leireye
user ...` and the supervisor, on behalf of `/api/users` (see `leireye.accounts.useredit`).

Every user has a password. Its hash is an argon2id PHC string with the salt inside; a hash made
before argon2id (`scrypt$n$r$p$<base64>`) keeps its base64 salt in `salt`, the one user field
that is optional (absent for argon2id hashes), and is replaced at the user's next login.

Identities are never reused, so a token can only ever name the user it was issued to:

- `next_id` is the id the next new user gets; it only grows, so a user removed and created again
  under the same name gets a new id (ids are never `max + 1`, which a removal would hand out
  again);
- `generation` is 16 random bytes (base64url), new for every user created and on every password
  set. Every token, refresh token and ticket carries the generation it was issued under and is
  refused once the user's differs: a new password ends them all, also when it was set with
  `leireye user passwd` in a shell. Replacing a legacy hash by an argon2id one at login is not a
  new password: it keeps the generation, and every token with it.

Tokens name a user by id; every verification looks the id up here, so removing a user or
changing a role takes effect on the next verification, without a restart (`UserStore` re-reads
the file when its inode, size or mtime changes).

While the file is missing or invalid, nobody is known: a typo locks everyone out (loudly, in the
log) rather than letting a user the operator just removed keep working.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Generic, Literal, Protocol, TypeVar

import msgspec
import yaml

from leireye.config import SensorName
from leireye.errors import ConfigError

log = logging.getLogger("leireye.accounts.users")

Role = Literal["ADMIN", "ANALYST", "VIEWER"]
ROLES: tuple[Role, ...] = ("ADMIN", "ANALYST", "VIEWER")

MAX_USERS_FILE_BYTES = 1 << 20
# In `state_dir`: the first run's `admin` password, mode 0600, owned by root (not the web user).
FIRST_ADMIN_PASSWORD_FILE = "initial-admin-password"

MAX_USER_ID = 2**31 - 1  # a token's `sub` is at most 10 digits
UserId = Annotated[int, msgspec.Meta(ge=1, le=MAX_USER_ID)]
Username = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
# A hash from before argon2id (leireye.accounts.passwords), the only kind with a `salt` field.
LEGACY_HASH_PREFIX = "scrypt$"
GENERATION_BYTES = 16
Generation = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{22}$")]


def new_generation() -> str:
    """A fresh random `generation`: 16 bytes, base64url without padding (22 characters)."""
    return secrets.token_urlsafe(GENERATION_BYTES)


class User(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    id: UserId
    username: Username
    role: Role
    # `$argon2id$...` (the salt inside, `salt` empty), or a legacy `scrypt$n$r$p$<base64>` with
    # its base64 salt in `salt` (leireye.accounts.passwords).
    password_hash: str
    # Random, new on creation and on every password set; every token carries it (module doc).
    generation: Generation
    salt: str = ""
    # At a fleet central: the sensors whose packets, stats and status this user may see (by
    # name); absent (None): every sensor (docs/security.md, "Users limited to sensors").
    sensors: tuple[SensorName, ...] | None = None


def user_view(user: Account) -> dict[str, object]:
    """A user as the API shows it: never the hash, the salt or the generation (`sensors` only
    for a user limited to some sensors)."""
    view: dict[str, object] = {"id": user.id, "username": user.username, "role": user.role}
    if user.sensors is not None:
        view["sensors"] = list(user.sensors)
    return view


class UsersFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # The id the next new user gets: above every id ever given, so none is handed out twice.
    next_id: Annotated[int, msgspec.Meta(ge=1, le=MAX_USER_ID + 1)]
    users: tuple[User, ...] = ()


EMPTY_USERS_FILE = UsersFile(next_id=1)


class UsersFileError(ConfigError):
    """The users file is unreadable, not valid YAML, or breaks the schema (the message names the
    path and the key)."""


def parse_users_file(data: object, source: str = "users file") -> UsersFile:
    """Validate an already-parsed YAML document; duplicate ids or usernames, and a `next_id`
    that is not above every id, are refused."""
    try:
        parsed = msgspec.convert(data, UsersFile, strict=True)
    except msgspec.ValidationError as exc:
        raise UsersFileError(f"{source}: {exc}") from None
    _check(parsed, source)
    return parsed


def _check(users_file: UsersFile, source: str) -> None:
    ids: set[int] = set()
    names: set[str] = set()
    for index, user in enumerate(users_file.users):
        if user.id >= users_file.next_id:
            raise UsersFileError(
                f"{source}: user id {user.id} is not below next_id {users_file.next_id} - "
                f"at $.users[{index}]"
            )
        if user.id in ids:
            raise UsersFileError(f"{source}: duplicate user id {user.id} - at $.users[{index}]")
        if user.username in names:
            raise UsersFileError(
                f"{source}: duplicate username {user.username!r} - at $.users[{index}]"
            )
        if user.password_hash.startswith(LEGACY_HASH_PREFIX) != bool(user.salt):
            raise UsersFileError(
                f"{source}: a salt goes with a legacy scrypt hash only (an argon2id hash holds "
                f"its own) - at $.users[{index}].salt"
            )
        ids.add(user.id)
        names.add(user.username)


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of `path`, refused (UsersFileError naming `what`) when unreadable or over
    `limit` bytes: a file that grew without bound costs a bounded read."""
    try:
        with path.open("rb") as file:
            raw = file.read(limit + 1)
    except OSError as exc:
        raise UsersFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(raw) > limit:
        raise UsersFileError(f"{what} {path} is larger than {limit} bytes")
    return raw


def load_users(path: str | Path) -> tuple[User, ...]:
    return load_users_file(path).users


def load_users_file(path: str | Path) -> UsersFile:
    path = Path(path)
    raw = read_bounded(path, MAX_USERS_FILE_BYTES, "users file")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsersFileError(f"users file {path}: not valid YAML: {exc}") from None
    return parse_users_file(data, f"users file {path}")


def dump_users_file(users_file: UsersFile) -> str:
    """The YAML text of a users file."""
    _check(users_file, "users")
    header = (
        "# LeirEye users: roles ADMIN, ANALYST, VIEWER. Tokens name users by id and carry their\n"
        "# generation; edit with `leireye user`, which keeps next_id and the generations.\n"
    )
    return header + yaml.safe_dump(msgspec.to_builtins(users_file), sort_keys=False)


def ensure_users_file(path: str | Path) -> str | None:
    """Create the users file with one `admin` user with a random password (mode 0600, owned by
    whoever runs this: root) unless it exists. Returns that password when the file was created
    here (for the caller to put in a root-only file, `write_first_admin_password`; the users
    file stores only its hash), else None. An existing file is validated, and made root's alone
    (`make_root_only`)."""
    from leireye.accounts.passwords import hash_password, random_password

    path = Path(path)
    if path.exists():
        load_users(path)
        make_root_only(path)
        return None
    password = random_password()
    admin = User(1, "admin", "ADMIN", hash_password(password), new_generation())
    text = dump_users_file(UsersFile(next_id=2, users=(admin,))).encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        created = write_private_file(path, text, None)
    except OSError as exc:
        raise UsersFileError(f"cannot create users file {path}: {exc.strerror}") from None
    if not created:
        load_users(path)
        return None
    log.info("created users file %s with user 'admin' (id 1, ADMIN)", path)
    return password


def write_first_admin_password(path: Path, password: str) -> None:
    """Put the first run's `admin` password in `path`, readable by its writer (root) alone:
    never in a log, which is often readable by others. A file left by an earlier first run
    (its users file since deleted) is replaced."""
    try:
        path.unlink(missing_ok=True)
        written = write_private_file(path, f"{password}\n".encode(), None)
    except OSError as exc:
        raise UsersFileError(
            f"cannot write the first admin password to {path}: {exc.strerror}; set one with "
            "`leireye user passwd admin`"
        ) from None
    if not written:
        raise UsersFileError(f"{path} appeared while the first admin password was written")


def make_root_only(path: Path) -> None:
    """When running as root, give `path` to root alone (mode 0600), saying so when it was not:
    an earlier version gave the users file to the web user, and whoever could write it may have
    added a user."""
    if os.geteuid() != 0:
        return
    st = os.stat(path)
    if st.st_uid == 0 and st.st_gid == 0 and not st.st_mode & 0o077:
        return
    log.warning("%s was owned by uid %d gid %d, mode %04o: now root's alone (0600); check its "
                "users", path, st.st_uid, st.st_gid, st.st_mode & 0o7777)  # fmt: skip
    os.chown(path, 0, 0)
    os.chmod(path, 0o600)


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


class Account(Protocol):
    """What verifying a token needs to know of a user: a `User` of the users file, or a
    `ViewUser` of the workers' users view (leireye.accounts.userview)."""

    @property
    def id(self) -> int: ...
    @property
    def username(self) -> str: ...
    @property
    def role(self) -> Role: ...
    @property
    def generation(self) -> str: ...
    @property
    def sensors(self) -> tuple[str, ...] | None: ...


A = TypeVar("A", bound=Account, covariant=True)


class AccountStore(Generic[A]):
    """The users, re-read whenever their file changes (checked with one `stat` per lookup):
    `UserStore` reads the users file (root), `leireye.accounts.userview.view_store` the
    workers' users view."""

    def __init__(self, path: str | Path, load: Callable[[Path], tuple[A, ...]]) -> None:
        self.path = Path(path)
        self._load = load
        self._signature: tuple[int, int, int, int] | None = None
        self._by_id: dict[int, A] = {}
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
            users = self._load(self.path)
        except UsersFileError as exc:
            self._fail(signature, str(exc))
            return
        self._signature = signature
        self._by_id = {user.id: user for user in users}
        self.error = None
        self.version += 1
        log.info("users %s: %d users", self.path, len(users))

    def _fail(self, signature: tuple[int, int, int, int], error: str) -> None:
        if signature != self._signature or self.error is None:
            log.error("%s; refusing every token until it is fixed", error)
        self._signature = signature
        self._by_id = {}
        self.error = error
        self.version += 1

    def get(self, user_id: int) -> A | None:
        self.refresh()
        return self._by_id.get(user_id)

    def generation_of(self, user_id: int) -> str | None:
        """The user's generation now (None for no such user)."""
        user = self.get(user_id)
        return None if user is None else user.generation

    def by_username(self, username: str) -> A | None:
        self.refresh()
        return next((u for u in self._by_id.values() if u.username == username), None)

    def users(self) -> tuple[A, ...]:
        self.refresh()
        return tuple(self._by_id.values())


class UserStore(AccountStore[User]):
    """The users file itself, hashes included (root only)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, load_users)
