"""The users view: what the web workers may know of the users file, and nothing more.

The users file holds every password's scrypt hash and salt, so it is root's alone (0600). The
workers run unprivileged and still need the users to verify a token (id, username, role, and
the `generation` every token is bound to) and to close the WebSockets of a user removed or
given a new password. The supervisor (root) gives them this view of it:

    <state_dir>/users-view.json   mode 0640, root, group of web.user
    {"users": [{"id": 1, "username": "admin", "role": "ADMIN", "generation": "...",
                "sensors": null}],
     "error": null}

It is rewritten whenever the users file changes (the supervisor checks its inode, size and
mtime on every turn of its main loop, since `leireye user passwd` edits it from a shell, and
right after an edit it made itself): written to a temporary file and renamed into place, so a
worker reads the old view or the new one, never half of either. A users file that does not load
gives a view with no users and its `error`: every token is refused, as the supervisor refuses
them, until the file is fixed. A crash leaves at worst a stale `.users-view.json.*.tmp`, which
the next write replaces; the view itself is always whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Final

import msgspec

from leireye.accounts.users import (
    AccountStore,
    Generation,
    Role,
    User,
    UserId,
    Username,
    UsersFileError,
    load_users,
    read_bounded,
)
from leireye.config import SensorName

log = logging.getLogger("leireye.accounts.userview")

USERS_VIEW_FILE: Final = "users-view.json"
VIEW_MODE: Final = 0o640
MAX_VIEW_BYTES: Final = 1 << 20


class ViewUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: UserId
    username: Username
    role: Role
    generation: Generation
    sensors: tuple[SensorName, ...] | None = None  # the sensors a fleet central shows them


class UsersView(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    users: tuple[ViewUser, ...] = ()
    error: str | None = None  # the users file does not load: nobody is known


def view_of(users: tuple[User, ...]) -> UsersView:
    return UsersView(
        tuple(ViewUser(u.id, u.username, u.role, u.generation, u.sensors) for u in users)
    )


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(UsersView).decode


def load_users_view(path: str | Path) -> tuple[ViewUser, ...]:
    """The users of a view file; UsersFileError when it is unreadable, invalid, or says the
    users file does not load."""
    path = Path(path)
    raw = read_bounded(path, MAX_VIEW_BYTES, "users view")
    try:
        view = _decode(raw)
    except msgspec.DecodeError as exc:
        raise UsersFileError(f"users view {path}: {exc}") from None
    if view.error is not None:
        raise UsersFileError(view.error)
    return view.users


def view_store(path: str | Path) -> AccountStore[ViewUser]:
    """The users as a web worker knows them: from the view, re-read when it changes."""
    return AccountStore(path, load_users_view)


def write_users_view(path: Path, view: UsersView, group: int | None) -> None:
    """Replace `path` with `view` (mode 0640, group `group` when root), atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            if group is not None and os.geteuid() == 0:
                os.fchown(fd, 0, group)
            os.fchmod(fd, VIEW_MODE)
            data = memoryview(_encode(view))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class UsersViewWriter:
    """Keeps `view_path` in step with `users_path` (the supervisor's side). `sync` is cheap when
    nothing changed (one `stat`) and safe to call from several threads."""

    def __init__(self, users_path: Path, view_path: Path, group: int | None) -> None:
        self.users_path = users_path
        self.view_path = view_path
        self.group = group
        self._signature: tuple[int, int, int, int] | None = None
        self._lock = threading.Lock()

    def sync(self) -> bool:
        """Rewrite the view if the users file changed since the last write; True if it did."""
        with self._lock:
            try:
                st = os.stat(self.users_path)
                signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            except OSError:
                signature = (-1, -1, -1, -1)
            if signature == self._signature:
                return False
            try:
                view = view_of(load_users(self.users_path))
            except UsersFileError as exc:
                view = UsersView(error=str(exc))
            self._signature = signature
            try:
                write_users_view(self.view_path, view, self.group)
            except OSError as exc:  # tried again on the next change of the users file
                log.error("cannot write the users view %s: %s", self.view_path, exc.strerror)
                return False
            log.debug("users view %s: %d users", self.view_path, len(view.users))
            return True
