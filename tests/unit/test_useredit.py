"""Editing users: the pure rules (conflicts, validation, the last ADMIN) and the file (a lock
that loses no edit between processes, an atomic rename a reader never sees half of)."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
from pathlib import Path

import msgspec
import pytest
import yaml

from leireye.accounts.passwords import verify_password
from leireye.accounts.useredit import (
    UserEditError,
    add_user,
    edit_users_file,
    read_users_file,
    rehash_user,
    remove_user,
    update_user,
)
from leireye.accounts.users import User, dump_users, load_users, parse_users
from tests.waiting import scaled

ADMIN = User(1, "root", "ADMIN")
ALICE = User(2, "alice", "ANALYST")
VIEWER = User(5, "vic", "VIEWER")
USERS = (ADMIN, ALICE, VIEWER)


def kind_of(call: object) -> str:
    assert callable(call)
    with pytest.raises(UserEditError) as info:
        call()
    return info.value.kind


# -- pure edits ---------------------------------------------------------------------------------


def test_add_appends_a_user_with_an_id_above_every_existing_one() -> None:
    users, new = add_user(USERS, "bob", "VIEWER", None)
    assert users == (*USERS, new)
    assert new == User(6, "bob", "VIEWER")
    assert new.id > max(u.id for u in USERS)
    assert add_user((), "first", "ADMIN", None)[1].id == 1


def test_removing_the_highest_id_then_adding_gives_an_id_above_those_left() -> None:
    users, _ = remove_user(USERS, "vic")
    users, new = add_user(users, "bob", "VIEWER", None)
    assert new.id > max(u.id for u in users if u is not new)
    assert len({u.id for u in users}) == len(users)


def test_add_with_a_password_stores_only_its_hash() -> None:
    _, new = add_user(USERS, "bob", "ANALYST", "bobs password")
    assert new.password_hash is not None and new.salt is None  # the salt is in the hash
    assert "bobs password" not in new.password_hash
    assert verify_password("bobs password", new.password_hash)


@pytest.mark.parametrize(
    ("username", "role", "password", "kind"),
    [
        ("alice", "VIEWER", None, "conflict"),
        ("", "VIEWER", None, "invalid"),
        ("has space", "VIEWER", None, "invalid"),
        ("x" * 65, "VIEWER", None, "invalid"),
        ("semi;colon", "VIEWER", None, "invalid"),
        ("bob", "viewer", None, "invalid"),
        ("bob", "ROOT", None, "invalid"),
        ("bob", "VIEWER", "short", "invalid"),
        ("bob", "VIEWER", "", "invalid"),
    ],
)
def test_add_refusals(username: str, role: str, password: str | None, kind: str) -> None:
    assert kind_of(lambda: add_user(USERS, username, role, password)) == kind


def test_usernames_are_compared_exactly() -> None:
    _, new = add_user(USERS, "Alice", "VIEWER", None)  # a different name from "alice"
    assert new.username == "Alice"
    assert add_user(USERS, "x" * 64, "VIEWER", None)[1].username == "x" * 64


def test_update_by_id_or_name() -> None:
    users, changed = update_user(USERS, 2, role="VIEWER")
    assert changed == User(2, "alice", "VIEWER")
    assert users == (ADMIN, changed, VIEWER)
    users, changed = update_user(USERS, "vic", role="ADMIN")
    assert changed.role == "ADMIN" and users[2] is changed
    users, changed = update_user(USERS, "alice")  # nothing to change
    assert users == USERS and changed == ALICE


def test_update_password_replaces_the_hash() -> None:
    users, changed = update_user(USERS, "alice", password="a new password")
    assert changed.role == "ANALYST"
    assert changed.password_hash is not None and changed.salt is None
    assert verify_password("a new password", changed.password_hash)
    assert users[1] is changed


def test_a_rehash_replaces_only_the_hash_it_was_computed_for() -> None:
    legacy = msgspec.structs.replace(ALICE, password_hash="scrypt$16384$8$1$AAAA", salt="c2FsdA==")
    users = tuple(legacy if u is ALICE else u for u in USERS)
    new_users, changed = rehash_user(users, ALICE.id, "scrypt$16384$8$1$AAAA", "$argon2id$new")
    assert changed == msgspec.structs.replace(legacy, password_hash="$argon2id$new", salt=None)
    assert [u for u in new_users if u.id != ALICE.id] == [u for u in users if u.id != ALICE.id]
    # The password was changed meanwhile (or the user removed): the rehash is dropped.
    assert rehash_user(users, ALICE.id, "scrypt$other", "$argon2id$new") == (users, None)
    assert rehash_user(users, 999, "scrypt$16384$8$1$AAAA", "$argon2id$new") == (users, None)


def test_update_refusals() -> None:
    assert kind_of(lambda: update_user(USERS, "nobody", role="VIEWER")) == "not_found"
    assert kind_of(lambda: update_user(USERS, 99, role="VIEWER")) == "not_found"
    assert kind_of(lambda: update_user(USERS, "alice", role="SUPERUSER")) == "invalid"
    assert kind_of(lambda: update_user(USERS, "alice", password="short")) == "invalid"


def test_the_last_admin_can_be_neither_demoted_nor_removed() -> None:
    assert kind_of(lambda: update_user(USERS, "root", role="ANALYST")) == "conflict"
    assert kind_of(lambda: remove_user(USERS, 1)) == "conflict"
    update_user(USERS, "root", role="ADMIN")  # staying ADMIN is fine
    two, _ = update_user(USERS, "alice", role="ADMIN")
    one, _ = remove_user(two, "root")  # with a second ADMIN, the first may go
    assert [u.username for u in one if u.role == "ADMIN"] == ["alice"]
    assert kind_of(lambda: remove_user(one, "alice")) == "conflict"
    demoted, _ = update_user(two, "root", role="VIEWER")
    assert kind_of(lambda: update_user(demoted, "alice", role="VIEWER")) == "conflict"


def test_without_any_admin_the_others_may_still_be_edited() -> None:
    users = (ALICE, VIEWER)
    users, _ = remove_user(users, "vic")
    users, _ = update_user(users, "alice", role="VIEWER")
    assert users == (User(2, "alice", "VIEWER"),)


def test_remove() -> None:
    users, gone = remove_user(USERS, "alice")
    assert gone is ALICE and users == (ADMIN, VIEWER)
    users, gone = remove_user(USERS, 5)
    assert gone is VIEWER and users == (ADMIN, ALICE)
    assert kind_of(lambda: remove_user(USERS, "ghost")) == "not_found"


def test_adding_past_the_largest_id_is_refused_and_leaves_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(dump_users([User(2**31 - 1, "root", "ADMIN")]))
    with pytest.raises(UserEditError):
        edit_users_file(path, lambda users: add_user(users, "bob", "VIEWER", None))
    assert len(load_users(path)) == 1


# -- the file -----------------------------------------------------------------------------------


def test_edit_creates_the_file_mode_0600_and_returns_the_result(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    assert read_users_file(path) == ()
    new = edit_users_file(path, lambda users: add_user(users, "root", "ADMIN", None))
    assert new == User(1, "root", "ADMIN")
    assert load_users(path) == (new,)
    assert read_users_file(path) == (new,)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_edit_replaces_the_file_by_rename_keeping_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(dump_users(USERS))
    path.chmod(0o600)
    before = path.stat().st_ino
    edit_users_file(path, lambda users: remove_user(users, "vic"))
    assert path.stat().st_ino != before  # a new file, renamed into place
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_users(path) == (ADMIN, ALICE)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".edit"))
    assert leftovers == []


def test_a_refused_edit_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(dump_users(USERS))
    before = path.read_bytes(), path.stat().st_ino
    with pytest.raises(UserEditError) as info:
        edit_users_file(path, lambda users: remove_user(users, "root"))
    assert info.value.kind == "conflict"
    assert (path.read_bytes(), path.stat().st_ino) == before


def _add_many(path: str, worker: int, count: int) -> None:
    for index in range(count):
        name = f"w{worker}-{index}"
        edit_users_file(path, lambda users, name=name: add_user(users, name, "VIEWER", None))


def test_concurrent_processes_lose_no_edit(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_many, args=(str(path), w, 10)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(scaled(60))
        assert process.exitcode == 0
    users = load_users(path)
    assert len(users) == 40
    assert {u.username for u in users} == {f"w{w}-{i}" for w in range(4) for i in range(10)}
    assert sorted(u.id for u in users) == list(range(1, 41))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_reader_never_sees_a_partial_file_while_writers_run(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(dump_users([ADMIN]))
    path.chmod(0o600)
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_add_many, args=(str(path), w, 15)) for w in range(2)]
    for process in writers:
        process.start()
    seen: set[int] = set()
    reads = 0
    while any(p.is_alive() for p in writers) or reads == 0:
        # No lock here: this is what a web worker's UserStore does.
        users = parse_users(yaml.safe_load(path.read_bytes()))
        assert users[0] == ADMIN
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        seen.add(len(users))
        reads += 1
    for process in writers:
        process.join(scaled(60))
        assert process.exitcode == 0
    assert len(load_users(path)) == 31
    assert len(seen) > 1  # the reader did overlap the writers


def test_threads_of_one_process_also_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    threads = [threading.Thread(target=_add_many, args=(str(path), w, 5)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(load_users(path)) == 20
