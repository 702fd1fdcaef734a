"""Editing users: the pure rules (conflicts, validation, the last ADMIN) and the file (a lock
that loses no edit between processes, an atomic rename a reader never sees half of)."""

from __future__ import annotations

import functools
import multiprocessing
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import yaml

from leireye.accounts import useredit
from leireye.accounts.passwords import hash_password, verify_password
from leireye.accounts.useredit import (
    UserEditError,
    add_user,
    edit_users_file,
    read_users_file,
    rehash_user,
    remove_user,
    update_user,
)
from leireye.accounts.users import (
    MAX_USER_ID,
    UsersFile,
    dump_users_file,
    load_users,
    load_users_file,
    parse_users_file,
)
from tests.accounts import make_user
from tests.waiting import scaled

PW = "a good password"
ADMIN = make_user(1, "root", "ADMIN", PW)
ALICE = make_user(2, "alice", "ANALYST", PW)
VIEWER = make_user(5, "vic", "VIEWER", PW)
USERS = UsersFile(next_id=6, users=(ADMIN, ALICE, VIEWER))


def replaced(user: object, **changes: object) -> object:
    return msgspec.structs.replace(user, **changes)


@pytest.fixture
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Many edits in a row: an argon2id cost that takes microseconds (forked workers inherit
    it)."""
    cheap = functools.partial(hash_password, time_cost=1, memory_kib=8)
    monkeypatch.setattr(useredit, "hash_password", cheap)
    yield


def kind_of(call: object) -> str:
    assert callable(call)
    with pytest.raises(UserEditError) as info:
        call()
    return info.value.kind


# -- pure edits ---------------------------------------------------------------------------------


def test_add_gives_next_id_and_a_new_generation() -> None:
    users_file, new = add_user(USERS, "bob", "VIEWER", PW)
    assert users_file == UsersFile(next_id=7, users=(*USERS.users, new))
    assert (new.id, new.username, new.role) == (6, "bob", "VIEWER")
    assert new.generation not in {u.generation for u in USERS.users}
    assert add_user(UsersFile(next_id=1), "first", "ADMIN", PW)[1].id == 1


def test_a_removed_users_id_and_generation_are_never_given_again() -> None:
    """Remove the user with the highest id, add one with the same name: the new one gets
    another id (not max + 1, the removed one's) and another generation."""
    users_file, gone = remove_user(USERS, "vic")
    assert users_file.next_id == 6
    users_file, again = add_user(users_file, "vic", "ADMIN", PW)
    assert again.id == 6 != gone.id
    assert again.generation != gone.generation
    assert len({u.id for u in users_file.users}) == len(users_file.users)


def test_add_stores_only_the_password_hash() -> None:
    _, new = add_user(USERS, "bob", "ANALYST", "bobs password")
    assert new.salt == ""  # the salt is in the hash
    assert "bobs password" not in new.password_hash
    assert verify_password("bobs password", new.password_hash)


@pytest.mark.parametrize(
    ("username", "role", "password", "kind"),
    [
        ("alice", "VIEWER", PW, "conflict"),
        ("", "VIEWER", PW, "invalid"),
        ("has space", "VIEWER", PW, "invalid"),
        ("x" * 65, "VIEWER", PW, "invalid"),
        ("semi;colon", "VIEWER", PW, "invalid"),
        ("bob", "viewer", PW, "invalid"),
        ("bob", "ROOT", PW, "invalid"),
        ("bob", "VIEWER", "short", "invalid"),
        ("bob", "VIEWER", "", "invalid"),
    ],
)
def test_add_refusals(username: str, role: str, password: str, kind: str) -> None:
    assert kind_of(lambda: add_user(USERS, username, role, password)) == kind


def test_usernames_are_compared_exactly() -> None:
    _, new = add_user(USERS, "Alice", "VIEWER", PW)  # a different name from "alice"
    assert new.username == "Alice"
    assert add_user(USERS, "x" * 64, "VIEWER", PW)[1].username == "x" * 64


def test_update_by_id_or_name() -> None:
    users_file, changed = update_user(USERS, 2, role="VIEWER")
    assert changed == replaced(ALICE, role="VIEWER")  # same generation: tokens keep working
    assert users_file == UsersFile(next_id=6, users=(ADMIN, changed, VIEWER))
    users_file, changed = update_user(USERS, "vic", role="ADMIN")
    assert changed.role == "ADMIN" and users_file.users[2] is changed
    users_file, changed = update_user(USERS, "alice")  # nothing to change
    assert users_file == USERS and changed == ALICE


def test_update_password_replaces_the_hash_and_the_generation() -> None:
    users_file, changed = update_user(USERS, "alice", password="a new password")
    assert changed.role == "ANALYST"
    assert changed.salt == ""
    assert verify_password("a new password", changed.password_hash)
    assert changed.generation != ALICE.generation
    assert users_file.users[1] is changed and users_file.next_id == USERS.next_id
    _, again = update_user(users_file, "alice", password="a new password")
    assert again.generation != changed.generation  # the same password once more: new anyway


def test_a_new_password_drops_a_legacy_salt() -> None:
    legacy = replaced(ALICE, password_hash="scrypt$16384$8$1$AAAA", salt="c2FsdA==")
    users_file = UsersFile(next_id=6, users=(ADMIN, legacy, VIEWER))
    _, changed = update_user(users_file, "alice", password="a new password")
    assert changed.salt == "" and changed.password_hash.startswith("$argon2id$")


def test_a_rehash_replaces_only_the_hash_it_was_computed_for() -> None:
    """Not a password change: the generation (and every token with it) stays."""
    legacy = replaced(ALICE, password_hash="scrypt$16384$8$1$AAAA", salt="c2FsdA==")
    users_file = UsersFile(next_id=6, users=(ADMIN, legacy, VIEWER))
    new_file, changed = rehash_user(users_file, ALICE.id, "scrypt$16384$8$1$AAAA", "$argon2id$new")
    assert changed == replaced(ALICE, password_hash="$argon2id$new")  # no salt, same generation
    assert new_file == UsersFile(next_id=6, users=(ADMIN, changed, VIEWER))
    # The password was changed meanwhile (or the user removed): the rehash is dropped.
    assert rehash_user(users_file, ALICE.id, "scrypt$other", "$argon2id$new") == (users_file, None)
    assert rehash_user(users_file, 999, "scrypt$16384$8$1$AAAA", "$x") == (users_file, None)


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
    assert [u.username for u in one.users if u.role == "ADMIN"] == ["alice"]
    assert kind_of(lambda: remove_user(one, "alice")) == "conflict"
    demoted, _ = update_user(two, "root", role="VIEWER")
    assert kind_of(lambda: update_user(demoted, "alice", role="VIEWER")) == "conflict"


def test_without_any_admin_the_others_may_still_be_edited() -> None:
    users_file = UsersFile(next_id=6, users=(ALICE, VIEWER))
    users_file, _ = remove_user(users_file, "vic")
    users_file, _ = update_user(users_file, "alice", role="VIEWER")
    assert users_file.users == (replaced(ALICE, role="VIEWER"),)


def test_remove() -> None:
    users_file, gone = remove_user(USERS, "alice")
    assert gone is ALICE and users_file == UsersFile(next_id=6, users=(ADMIN, VIEWER))
    users_file, gone = remove_user(USERS, 5)
    assert gone is VIEWER and users_file == UsersFile(next_id=6, users=(ADMIN, ALICE))
    assert kind_of(lambda: remove_user(USERS, "ghost")) == "not_found"


def test_adding_past_the_largest_id_is_refused_and_leaves_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    root = make_user(MAX_USER_ID, "root", "ADMIN", PW)
    path.write_text(dump_users_file(UsersFile(next_id=MAX_USER_ID + 1, users=(root,))))
    with pytest.raises(UserEditError, match="every user id"):
        edit_users_file(path, lambda users: add_user(users, "bob", "VIEWER", PW))
    assert load_users(path) == (root,)


# -- the file -----------------------------------------------------------------------------------


def test_edit_creates_the_file_mode_0600_and_returns_the_result(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    assert read_users_file(path) == ()
    new = edit_users_file(path, lambda users: add_user(users, "root", "ADMIN", PW))
    assert (new.id, new.username, new.role) == (1, "root", "ADMIN")
    assert load_users_file(path) == UsersFile(next_id=2, users=(new,))
    assert read_users_file(path) == (new,)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_edit_replaces_the_file_by_rename_keeping_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(dump_users_file(USERS))
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
    path.write_text(dump_users_file(USERS))
    before = path.read_bytes(), path.stat().st_ino
    with pytest.raises(UserEditError) as info:
        edit_users_file(path, lambda users: remove_user(users, "root"))
    assert info.value.kind == "conflict"
    assert (path.read_bytes(), path.stat().st_ino) == before


def _add_many(path: str, worker: int, count: int) -> None:
    for index in range(count):
        name = f"w{worker}-{index}"
        edit_users_file(path, lambda users, name=name: add_user(users, name, "VIEWER", PW))


@pytest.mark.usefixtures("cheap_hashes")
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
    assert len({u.generation for u in users}) == 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.usefixtures("cheap_hashes")
def test_a_reader_never_sees_a_partial_file_while_writers_run(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(dump_users_file(UsersFile(next_id=2, users=(ADMIN,))))
    path.chmod(0o600)
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_add_many, args=(str(path), w, 15)) for w in range(2)]
    for process in writers:
        process.start()
    seen: set[int] = set()
    reads = 0
    while any(p.is_alive() for p in writers) or reads == 0:
        # No lock here: this is what a web worker's UserStore does.
        users = parse_users_file(yaml.safe_load(path.read_bytes())).users
        assert users[0] == ADMIN
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        seen.add(len(users))
        reads += 1
    for process in writers:
        process.join(scaled(60))
        assert process.exitcode == 0
    assert len(load_users(path)) == 31
    assert len(seen) > 1  # the reader did overlap the writers


@pytest.mark.usefixtures("cheap_hashes")
def test_threads_of_one_process_also_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    threads = [threading.Thread(target=_add_many, args=(str(path), w, 5)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(load_users(path)) == 20
