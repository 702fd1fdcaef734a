"""The users file: schema, duplicates, first-run creation, and live reloading."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from leireye.accounts.passwords import verify_password
from leireye.accounts.users import (
    User,
    UsersFileError,
    UserStore,
    dump_users,
    ensure_users_file,
    load_users,
    parse_users,
    write_private_file,
)
from leireye.errors import ConfigError

ALICE = {"id": 2, "username": "alice", "role": "ANALYST"}


def write(path: Path, users: list[dict[str, object]]) -> None:
    path.write_text(yaml.safe_dump({"users": users}))


def test_loads_users_and_roles(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    write(path, [{"id": 1, "username": "admin", "role": "ADMIN"}, ALICE])
    users = load_users(path)
    assert users == (User(1, "admin", "ADMIN"), User(2, "alice", "ANALYST"))


def test_password_fields_of_a_later_version_still_load() -> None:
    (user,) = parse_users({"users": [{**ALICE, "password_hash": "x$y", "salt": "s"}]})
    assert user.password_hash == "x$y" and user.salt == "s"


@pytest.mark.parametrize(
    ("users", "needle"),
    [
        ([{**ALICE, "admin": True}], "admin"),
        ([{**ALICE, "role": "ROOT"}], "$.users[0].role"),
        ([{**ALICE, "id": 0}], "$.users[0].id"),
        ([{**ALICE, "id": "2"}], "$.users[0].id"),
        ([{**ALICE, "username": "a b"}], "$.users[0].username"),
        ([{**ALICE, "username": ""}], "$.users[0].username"),
        ([{"id": 2, "role": "VIEWER"}], "username"),
    ],
)
def test_schema_errors_name_the_key(users: list[dict[str, object]], needle: str) -> None:
    with pytest.raises(UsersFileError, match=needle.replace("$", r"\$").replace("[", r"\[")):
        parse_users({"users": users})


def test_unknown_top_level_key_is_refused() -> None:
    with pytest.raises(UsersFileError, match="admins"):
        parse_users({"users": [], "admins": []})


def test_duplicate_ids_and_usernames_are_refused() -> None:
    with pytest.raises(UsersFileError, match=r"duplicate user id 2 - at \$.users\[1\]"):
        parse_users({"users": [ALICE, {**ALICE, "username": "bob"}]})
    with pytest.raises(UsersFileError, match="duplicate username 'alice'"):
        parse_users({"users": [ALICE, {**ALICE, "id": 3}]})


def test_users_file_errors_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("users: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_users(path)
    path.write_text("- just a list\n")
    with pytest.raises(UsersFileError):
        load_users(path)
    with pytest.raises(UsersFileError, match="cannot read"):
        load_users(tmp_path / "missing.yaml")


def test_an_empty_file_means_no_users(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("")
    assert load_users(path) == ()


def test_dump_round_trips() -> None:
    users = (User(1, "admin", "ADMIN"), User(7, "eve", "VIEWER", password_hash="h"))
    assert parse_users(yaml.safe_load(dump_users(users))) == users


def test_ensure_creates_one_admin_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "users.yaml"
    old = os.umask(0)
    try:
        password = ensure_users_file(path)
    finally:
        os.umask(old)
    assert password is not None and len(password) >= 16
    (admin,) = load_users(path)
    assert (admin.id, admin.username, admin.role) == (1, "admin", "ADMIN")
    assert admin.password_hash is not None and password not in path.read_text()
    assert verify_password(password, admin.password_hash, admin.salt)
    assert not verify_password(password + "x", admin.password_hash, admin.salt)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(path.parent.glob(".*tmp"))


def test_ensure_keeps_and_validates_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    write(path, [ALICE])
    assert ensure_users_file(path) is None
    assert load_users(path) == (User(2, "alice", "ANALYST"),)
    write(path, [ALICE, ALICE])
    with pytest.raises(UsersFileError, match="duplicate"):
        ensure_users_file(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_ensure_hands_the_file_to_the_web_user(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    ensure_users_file(path, owner=(65534, 65534))
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_write_private_file_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert write_private_file(path, b"one", None) is True
    assert write_private_file(path, b"two", None) is False
    assert path.read_bytes() == b"one"


def test_store_sees_a_removed_user_and_a_changed_role(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    write(path, [{"id": 1, "username": "admin", "role": "ADMIN"}, ALICE])
    store = UserStore(path)
    assert store.get(2) == User(2, "alice", "ANALYST")
    write(path, [{"id": 1, "username": "admin", "role": "ADMIN"}])
    assert store.get(2) is None
    write(path, [{"id": 1, "username": "admin", "role": "VIEWER"}])
    assert store.get(1) == User(1, "admin", "VIEWER")
    assert store.by_username("admin") == User(1, "admin", "VIEWER")
    assert store.users() == (User(1, "admin", "VIEWER"),)


def test_store_sees_an_edit_of_the_same_size(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    write(path, [{**ALICE, "role": "ADMIN"}])
    store = UserStore(path)
    write(path, [{**ALICE, "role": "ADMIN", "username": "bobby"}])
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert store.get(2) == User(2, "bobby", "ADMIN")


def test_store_knows_nobody_while_the_file_is_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "users.yaml"
    write(path, [ALICE])
    store = UserStore(path)
    path.write_text("users: [{id: 2, username: alice, role: ANALYST}, {id: 2}]\n")
    assert store.get(2) is None
    assert store.error is not None
    assert "refusing every token" in caplog.text
    write(path, [ALICE])
    assert store.get(2) is not None
    assert store.users() and not store.error
    path.unlink()
    assert store.get(2) is None
    assert "cannot read users file" in str(store.error)


def test_ensure_reports_an_unwritable_place(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsersFileError, match="cannot create users file"):
        ensure_users_file(blocker / "users.yaml")
