"""`leireye user ...` as an operator runs it: a real process, the password on standard input,
one line of error and a non-zero exit for every refusal, never a traceback."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from leireye.accounts.passwords import verify_password
from leireye.accounts.service import AccountError, AccountService
from leireye.accounts.tokens import load_or_create_secret
from leireye.accounts.users import User, UserStore, load_users
from leireye.config import load_config
from leireye.control.client import ControlClient
from leireye.control.handlers import ControlHandlers
from leireye.control.protocol import Login
from leireye.control.server import ControlServer, socket_path
from tests.waiting import scaled

REPO = Path(__file__).resolve().parents[2]
BOB_PW = "bob's first password"


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    path = tmp_path / "leireye.yaml"
    path.write_text(f"state_dir: {state}\n")
    return path


def users_file(config_path: Path) -> Path:
    return config_path.parent / "state" / "users.yaml"


def command(config_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "leireye.cli", "user", *args, "-c", str(config_path)]


def leireye_user(
    config_path: Path, *args: str, stdin: str | bytes = ""
) -> subprocess.CompletedProcess[bytes]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run(
        command(config_path, *args),
        input=data,
        capture_output=True,
        cwd=REPO,
        timeout=scaled(30),
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    return result.stdout.decode()


def by_name(config_path: Path) -> dict[str, User]:
    return {u.username: u for u in load_users(users_file(config_path))}


def test_add_list_passwd_role_remove(config_path: Path) -> None:
    path = users_file(config_path)
    out = ok(leireye_user(config_path, "add", "root", "--role", "ADMIN", "--password-stdin",
                          stdin="the root password\n"))  # fmt: skip
    assert out == f"added root (id 1, ADMIN) to {path}\n"
    out = ok(leireye_user(config_path, "add", "bob", "--role", "ANALYST", "--password-stdin",
                          stdin=BOB_PW + "\n"))  # fmt: skip
    assert out == f"added bob (id 2, ANALYST) to {path}\n"
    assert BOB_PW not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    if os.geteuid() == 0:  # root's alone: the workers read the supervisor's users view
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0)
    bob = by_name(config_path)["bob"]
    assert verify_password(BOB_PW, bob.password_hash, bob.salt)

    listing = ok(leireye_user(config_path, "list")).splitlines()
    assert listing[0].split() == ["ID", "USERNAME", "ROLE", "SENSORS"]
    assert [line.split() for line in listing[1:]] == [
        ["1", "root", "ADMIN", "all"],
        ["2", "bob", "ANALYST", "all"],
    ]
    first_generation = bob.generation

    # A password without a trailing newline is taken whole.
    out = ok(leireye_user(config_path, "passwd", "bob", "--password-stdin",
                          stdin="bob's second password"))  # fmt: skip
    assert out == "password of bob changed; their earlier tokens and open sessions end now\n"
    bob = by_name(config_path)["bob"]
    assert verify_password("bob's second password", bob.password_hash, bob.salt)
    assert not verify_password(BOB_PW, bob.password_hash, bob.salt)
    assert bob.generation != first_generation

    assert ok(leireye_user(config_path, "role", "bob", "VIEWER")) == "bob is now VIEWER\n"
    assert by_name(config_path)["bob"].role == "VIEWER"
    assert by_name(config_path)["bob"].password_hash == bob.password_hash
    assert by_name(config_path)["bob"].generation == bob.generation

    removed = ok(leireye_user(config_path, "remove", "bob"))
    assert removed == "removed bob (id 2); their tokens and open sessions end now\n"
    assert list(by_name(config_path)) == ["root"]
    listing = ok(leireye_user(config_path, "list")).splitlines()
    assert [line.split()[1] for line in listing[1:]] == ["root"]

    # A user limited to some fleet sensors (docs/security.md): stored sorted, shown, changed.
    out = ok(leireye_user(config_path, "add", "carol", "--role", "VIEWER", "--sensors",
                          "west,east", "--password-stdin", stdin="carol's password\n"))  # fmt: skip
    assert out == f"added carol (id 3, VIEWER, sensors east,west) to {path}\n"
    assert by_name(config_path)["carol"].sensors == ("east", "west")
    listing = ok(leireye_user(config_path, "list")).splitlines()
    assert listing[-1].split() == ["3", "carol", "VIEWER", "east,west"]
    out = ok(leireye_user(config_path, "sensors", "carol", "north"))
    assert out == "carol now sees north; their open connections end now\n"
    assert by_name(config_path)["carol"].sensors == ("north",)
    assert ok(leireye_user(config_path, "sensors", "carol", "all")).startswith(
        "carol now sees every"
    )
    assert by_name(config_path)["carol"].sensors is None
    bad = leireye_user(config_path, "sensors", "carol", "no.dots")
    assert bad.returncode != 0 and b"sensor name" in bad.stderr and b"Traceback" not in bad.stderr
    ok(leireye_user(config_path, "remove", "carol"))

    # bob again: a new id, not the removed bob's 2.
    out = ok(leireye_user(config_path, "add", "bob", "--role", "ADMIN", "--password-stdin",
                          stdin=BOB_PW + "\n"))  # fmt: skip
    assert out == f"added bob (id 4, ADMIN) to {path}\n"


def test_every_refusal_is_one_line_and_a_non_zero_exit(config_path: Path) -> None:
    ok(leireye_user(config_path, "add", "root", "--role", "ADMIN", "--password-stdin",
                    stdin="the root password\n"))  # fmt: skip
    ok(leireye_user(config_path, "add", "bob", "--role", "ANALYST"
                    , "--password-stdin", stdin=BOB_PW + "\n"))  # fmt: skip
    before = users_file(config_path).read_bytes()
    cases: list[tuple[list[str], str, str]] = [
        (["add", "bob", "--role", "VIEWER", "--password-stdin"], "another pw\n", "already"),
        (["add", "carol", "--role", "VIEWER", "--password-stdin"], "short\n", "at least 8"),
        (["add", "carol", "--role", "VIEWER", "--password-stdin"], "", "no password"),
        (["add", "carol", "--role", "VIEWER"], "", "--password-stdin"),
        (["add", "bad/name", "--role", "VIEWER", "--password-stdin"], "long enough\n", "username"),
        (["passwd", "ghost", "--password-stdin"], "long enough\n", "no such user"),
        (["role", "root", "VIEWER"], "", "last ADMIN"),
        (["remove", "ghost"], "", "no such user"),
        (["remove", "root"], "", "last ADMIN"),
    ]
    processes = [
        subprocess.Popen(
            command(config_path, *args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        for args, _, _ in cases
    ]
    for process, (args, stdin, needle) in zip(processes, cases, strict=True):
        out, err = process.communicate(stdin.encode(), timeout=scaled(30))
        text = err.decode()
        assert process.returncode != 0, args
        assert "Traceback" not in text, (args, text)
        assert text.count("\n") == 1 and text.startswith("leireye: "), (args, text)
        assert needle in text, (args, text)
        assert out == b"", args
        for password in ("another pw", "long enough", "short"):
            assert password not in text
    assert users_file(config_path).read_bytes() == before


def test_usage_errors_exit_non_zero_without_a_traceback(config_path: Path) -> None:
    for args in (["add", "carol", "--role", "ROOT"], ["add", "carol"], ["frobnicate"]):
        result = leireye_user(config_path, *args)
        assert result.returncode == 2
        assert b"Traceback" not in result.stderr
        assert b"usage:" in result.stderr
    assert not users_file(config_path).exists()


def test_a_bad_config_is_one_line(tmp_path: Path) -> None:
    config_path = tmp_path / "bad.yaml"
    config_path.write_text("state_dir: [not, a, string]\n")
    result = leireye_user(config_path, "list")
    assert result.returncode != 0
    assert result.stderr.decode().count("\n") == 1 and b"Traceback" not in result.stderr


def test_a_password_that_is_not_utf8_is_refused_in_one_line(config_path: Path) -> None:
    result = leireye_user(config_path, "add", "carol", "--role", "VIEWER", "--password-stdin",
                          stdin=b"abc\xffdefghij\n")  # fmt: skip
    assert result.returncode != 0
    assert b"Traceback" not in result.stderr
    assert result.stderr.decode() == (
        f"leireye: the password on standard input is not valid UTF-8 [config: {config_path} (-c)]\n"
    )
    assert not users_file(config_path).exists()


def test_a_password_ending_in_crlf_loses_only_the_line_ending(config_path: Path) -> None:
    ok(leireye_user(config_path, "add", "carol", "--role", "VIEWER", "--password-stdin",
                    stdin="carol's pässword\r\nignored second line\n"))  # fmt: skip
    carol = by_name(config_path)["carol"]
    assert verify_password("carol's pässword", carol.password_hash, carol.salt)


class NoCapture:
    def start_capture(self, interface: str | None, bpf: str | None) -> dict[str, object]:
        raise AssertionError("not used")

    def stop_capture(self) -> dict[str, object]:
        raise AssertionError("not used")


def test_a_password_changed_from_the_shell_revokes_refresh_tokens(config_path: Path) -> None:
    ok(leireye_user(config_path, "add", "bob", "--role", "ANALYST", "--password-stdin",
                    stdin=BOB_PW + "\n"))  # fmt: skip
    # The supervisor's side, as `Supervisor._start_control` builds it.
    config = load_config(config_path)
    state = Path(config.state_dir)
    short = Path(os.path.relpath(socket_path(state), Path.cwd()))  # Unix socket path limit
    path = users_file(config_path)
    accounts = AccountService(
        config,
        load_or_create_secret(config),
        UserStore(path),
        config.state_path("refresh-tokens.json"),
        clock=lambda: 1_700_000_000.0,
    )
    handlers = ControlHandlers(accounts, path, NoCapture())
    server = ControlServer(short, handlers, lambda: {os.getpid()})
    server.start()
    try:
        client = ControlClient(short, scaled(10))
        pair = asyncio.run(client.call(Login("bob", BOB_PW, "10.0.0.1")))
        assert isinstance(pair, dict)
        ok(leireye_user(config_path, "passwd", "bob", "--password-stdin",
                        stdin="a new password for bob\n"))  # fmt: skip
        with pytest.raises(AccountError) as info:
            accounts.refresh(pair["refresh_token"])
        assert info.value.code == "INVALID_TOKEN"
    finally:
        server.close()
