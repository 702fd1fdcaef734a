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
    UsersFile,
    UsersFileError,
    UserStore,
    dump_users_file,
    ensure_users_file,
    load_users,
    load_users_file,
    new_generation,
    parse_users_file,
    write_first_admin_password,
    write_private_file,
)
from leireye.errors import ConfigError

SECRET = {"password_hash": "scrypt$16384$8$1$aGFzaA==", "salt": "c2FsdA=="}
ARGON2_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$" + "aGFzaA" * 7
GEN = "g" * 22
ADMIN = {"id": 1, "username": "admin", "role": "ADMIN", **SECRET, "generation": "a" * 22}
ALICE = {"id": 2, "username": "alice", "role": "ANALYST", **SECRET, "generation": GEN}


def user(user_id: int, username: str, role: str, generation: str = GEN) -> User:
    return User(user_id, username, role, generation=generation, **SECRET)


def parse_users(data: dict[str, object]) -> tuple[User, ...]:
    return parse_users_file({"next_id": 10, **data}).users


def write(path: Path, users: list[dict[str, object]], next_id: int = 10) -> None:
    path.write_text(yaml.safe_dump({"next_id": next_id, "users": users}))


def test_loads_users_and_roles(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    write(path, [ADMIN, ALICE])
    users = load_users(path)
    assert users == (user(1, "admin", "ADMIN", "a" * 22), user(2, "alice", "ANALYST"))
    assert load_users_file(path).next_id == 10


def test_generations_are_random_22_character_base64url() -> None:
    generations = {new_generation() for _ in range(100)}
    assert len(generations) == 100
    for generation in generations:
        (parsed,) = parse_users({"users": [{**ALICE, "generation": generation}]})
        assert parsed.generation == generation


def test_next_id_is_required_and_above_every_id() -> None:
    with pytest.raises(UsersFileError, match="next_id"):
        parse_users_file({"users": [ALICE]})
    with pytest.raises(
        UsersFileError, match=r"user id 2 is not below next_id 2 - at \$.users\[0\]"
    ):
        parse_users_file({"next_id": 2, "users": [ALICE]})
    assert parse_users_file({"next_id": 3, "users": [ALICE]}).next_id == 3
    assert parse_users_file({"next_id": 1}) == UsersFile(next_id=1)


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
        ([{k: v for k, v in ALICE.items() if k != "password_hash"}], "password_hash"),
        ([{k: v for k, v in ALICE.items() if k != "salt"}], "$.users[0].salt"),
        ([{**ALICE, "salt": ""}], "$.users[0].salt"),
        ([{**ALICE, "password_hash": ARGON2_HASH}], "$.users[0].salt"),
        ([{**ALICE, "password_hash": None}], "$.users[0].password_hash"),
        ([{k: v for k, v in ALICE.items() if k != "generation"}], "generation"),
        ([{**ALICE, "generation": "short"}], "$.users[0].generation"),
        ([{**ALICE, "generation": "g" * 21 + "="}], "$.users[0].generation"),
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


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("")
    with pytest.raises(UsersFileError):
        load_users(path)


def test_an_argon2id_user_has_no_salt_field() -> None:
    """The salt is inside an argon2id hash: such a user is written without `salt`, and read
    back with it empty. Only a legacy scrypt hash keeps one beside it."""
    argon = User(3, "carol", "VIEWER", ARGON2_HASH, GEN)
    assert argon.salt == ""
    text = dump_users_file(UsersFile(next_id=4, users=(user(2, "alice", "ANALYST"), argon)))
    data = yaml.safe_load(text)
    assert "salt" not in data["users"][1] and data["users"][0]["salt"] == SECRET["salt"]
    assert parse_users_file(data).users[1] == argon


def test_dump_round_trips() -> None:
    users_file = UsersFile(next_id=12, users=(user(1, "admin", "ADMIN"), user(7, "eve", "VIEWER")))
    assert parse_users_file(yaml.safe_load(dump_users_file(users_file))) == users_file


def test_ensure_creates_one_admin_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "users.yaml"
    old = os.umask(0)
    try:
        password = ensure_users_file(path)
    finally:
        os.umask(old)
    assert password is not None and len(password) >= 16
    users_file = load_users_file(path)
    (admin,) = users_file.users
    assert (admin.id, admin.username, admin.role, users_file.next_id) == (1, "admin", "ADMIN", 2)
    assert password not in path.read_text()
    assert verify_password(password, admin.password_hash, admin.salt)
    assert not verify_password(password + "x", admin.password_hash, admin.salt)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(path.parent.glob(".*tmp"))


def test_ensure_keeps_and_validates_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    write(path, [ALICE])
    assert ensure_users_file(path) is None
    assert load_users(path) == (user(2, "alice", "ANALYST"),)
    write(path, [ALICE, ALICE])
    with pytest.raises(UsersFileError, match="duplicate"):
        ensure_users_file(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_the_users_file_is_roots_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Created 0600 root:root; one an earlier version gave to the web user is taken back."""
    path = tmp_path / "users.yaml"
    ensure_users_file(path)
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    os.chown(path, 65534, 65534)
    path.chmod(0o644)
    assert ensure_users_file(path) is None
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    assert "now root's alone" in caplog.text


def test_write_private_file_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert write_private_file(path, b"one", None) is True
    assert write_private_file(path, b"two", None) is False
    assert path.read_bytes() == b"one"


def test_store_sees_a_removed_user_and_a_changed_role(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    write(path, [{**ADMIN, "generation": GEN}, ALICE])
    store = UserStore(path)
    assert store.get(2) == user(2, "alice", "ANALYST")
    write(path, [{**ADMIN, "generation": GEN}])
    assert store.get(2) is None
    write(path, [{**ADMIN, "generation": GEN, "role": "VIEWER"}])
    assert store.get(1) == user(1, "admin", "VIEWER")
    assert store.by_username("admin") == user(1, "admin", "VIEWER")
    assert store.users() == (user(1, "admin", "VIEWER"),)


def test_store_sees_an_edit_of_the_same_size(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    write(path, [{**ALICE, "role": "ADMIN"}])
    store = UserStore(path)
    write(path, [{**ALICE, "role": "ADMIN", "username": "bobby"}])
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert store.get(2) == user(2, "bobby", "ADMIN")


def test_store_knows_nobody_while_the_file_is_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "users.yaml"
    write(path, [ALICE])
    store = UserStore(path)
    write(path, [ALICE, {"id": 2}])
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


def test_the_first_admin_password_file_is_private_and_replaces_an_old_one(tmp_path: Path) -> None:
    path = tmp_path / "initial-admin-password"
    path.write_text("an old first run's password\n")
    path.chmod(0o644)
    old = os.umask(0)
    try:
        write_first_admin_password(path, "s3cret-first-password")
    finally:
        os.umask(old)
    assert path.read_text() == "s3cret-first-password\n"
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    with pytest.raises(UsersFileError, match="leireye user passwd admin"):
        write_first_admin_password(tmp_path / "missing" / "dir" / "f", "x" * 20)


@pytest.mark.parametrize("tty", [True, False])
def test_the_first_run_banner_shows_the_password_only_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tty: bool
) -> None:
    """stderr is also the log: the password reaches it only when a person is looking at it."""
    import io
    import types

    from leireye.cli.run import _show_first_admin
    from leireye.config import Config

    class Stderr(io.StringIO):
        def isatty(self) -> bool:
            return tty

    stderr = Stderr()
    monkeypatch.setattr("sys.stderr", stderr)
    path = tmp_path / "initial-admin-password"
    supervisor = types.SimpleNamespace(
        config=Config(state_dir=str(tmp_path)),
        first_admin_password="s3cret-first-password",
        first_admin_file=path,
    )
    _show_first_admin(supervisor)  # type: ignore[arg-type]
    text = stderr.getvalue()
    assert f"its password is in {path} (root only)" in text
    assert ("s3cret-first-password" in text) is tty
    assert supervisor.first_admin_password is None
    _show_first_admin(supervisor)  # type: ignore[arg-type]
    assert stderr.getvalue() == text  # once
