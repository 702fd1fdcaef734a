"""The users view: what the web workers know of the users file, kept in step by the supervisor."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec
import pytest

from leireye.accounts.principal import AuthFailure, Principal
from leireye.accounts.tokens import OLD_GENERATION, UNKNOWN_USER, Authenticator, issue_token
from leireye.accounts.useredit import edit_users_file, update_user
from leireye.accounts.users import UsersFileError, load_users
from leireye.accounts.userview import (
    UsersViewWriter,
    ViewUser,
    load_users_view,
    view_store,
)
from tests.accounts import users_yaml

SECRET = bytes(range(64))
NOW = 1_700_000_000.0


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    users = tmp_path / "users.yaml"
    users.write_text(
        users_yaml({"admin": ("ADMIN", "admin password"), "bob": ("VIEWER", "bob password")})
    )
    return users, tmp_path / "users-view.json"


def test_the_view_holds_no_hash_and_no_salt(files: tuple[Path, Path]) -> None:
    users, view = files
    legacy = {"password_hash": "scrypt$16384$8$1$aGFzaA==", "salt": "c2FsdHNhbHQ="}  # bob's
    edit_users_file(users, lambda file: (msgspec.structs.replace(file, users=tuple(
        msgspec.structs.replace(u, **legacy) if u.username == "bob" else u
        for u in file.users)), None))  # fmt: skip
    assert UsersViewWriter(users, view, None).sync() is True
    text = view.read_text()
    assert "argon2" not in text and "scrypt" not in text and "salt" not in text
    assert "password" not in text
    for user in load_users(users):
        assert user.password_hash not in text
        assert not user.salt or user.salt not in text
    assert load_users_view(view) == tuple(
        ViewUser(u.id, u.username, u.role, u.generation) for u in load_users(users)
    )
    assert stat.S_IMODE(view.stat().st_mode) == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_the_view_is_roots_with_the_web_users_group(files: tuple[Path, Path]) -> None:
    users, view = files
    UsersViewWriter(users, view, 4321).sync()
    st = view.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 4321, 0o640)


def test_sync_rewrites_only_on_a_change(files: tuple[Path, Path]) -> None:
    users, view = files
    writer = UsersViewWriter(users, view, None)
    assert writer.sync() is True
    inode = view.stat().st_ino
    assert writer.sync() is False
    edit_users_file(users, lambda f: update_user(f, "bob", role="ANALYST"))
    assert writer.sync() is True
    assert view.stat().st_ino != inode  # replaced by a rename, never rewritten in place
    assert [u.role for u in load_users_view(view)] == ["ADMIN", "ANALYST"]
    assert not [p for p in view.parent.iterdir() if p.name.endswith(".tmp")]


def test_an_invalid_users_file_makes_a_view_that_knows_nobody(files: tuple[Path, Path]) -> None:
    users, view = files
    writer = UsersViewWriter(users, view, None)
    writer.sync()
    store = view_store(view)
    assert store.get(1) is not None
    users.write_text("users: [this is not a user]\n")
    writer.sync()
    with pytest.raises(UsersFileError, match="users file"):
        load_users_view(view)
    assert store.get(1) is None and store.error is not None


def test_a_worker_verifies_tokens_against_the_view(files: tuple[Path, Path]) -> None:
    """A new password (a new generation) in the users file ends the user's tokens in the
    workers once the supervisor has synced the view; so does a removal."""
    users, view = files
    writer = UsersViewWriter(users, view, None)
    writer.sync()
    auth = Authenticator(SECRET, view_store(view))
    bob = next(u for u in load_users(users) if u.username == "bob")
    token = issue_token(SECRET, bob, 600, NOW)
    principal = auth.verify(token, NOW)
    assert isinstance(principal, Principal) and principal.role == "VIEWER"
    edit_users_file(users, lambda f: update_user(f, "bob", password="bob's new password"))
    writer.sync()
    assert auth.verify(token, NOW) == AuthFailure(OLD_GENERATION)
    users.write_text(users_yaml({"admin": ("ADMIN", "admin password")}))
    writer.sync()
    assert auth.verify(token, NOW) == AuthFailure(UNKNOWN_USER)
