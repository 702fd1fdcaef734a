"""`leireye user add|list|passwd|remove`: manage the users file from the shell (as root).

Passwords come from a prompt (asked twice) or, with `--password-stdin`, from the first line of
standard input, so scripts never put one on a command line. Edits go through
`leireye.accounts.useredit` (locked, atomic); running web workers pick them up on the next
request, without a restart.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path

from msgspec import UNSET

from leireye.accounts.useredit import (
    UserEditError,
    add_user,
    edit_users_file,
    read_users_file,
    remove_user,
    update_user,
)
from leireye.accounts.users import ROLES, User, UsersFile
from leireye.accounts.userview import USERS_VIEW_FILE, UsersViewWriter
from leireye.cli.common import add_config_options, load_cli_config, say
from leireye.config import Config
from leireye.errors import LeirEyeError


class UserCommandError(LeirEyeError):
    """A `leireye user` command that cannot be carried out."""


def _config(args: argparse.Namespace) -> Config:
    config = load_cli_config(args)
    say(args, f"users file: {config.state_path(config.auth.users_file)}")
    return config


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        raw = sys.stdin.buffer.readline()
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        if not raw:
            raise UserCommandError("no password on standard input")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserCommandError("the password on standard input is not valid UTF-8") from None
    if not sys.stdin.isatty():
        raise UserCommandError("no terminal to ask for a password: use --password-stdin")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise UserCommandError("the two passwords differ")
    return first


def _sensors(text: str | None) -> list[str] | None:
    """`a,b` -> ["a", "b"]; `all` (or no option) -> None: every sensor."""
    if text is None or text.strip() == "all":
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def _scope(user: User) -> str:
    return "" if user.sensors is None else ", sensors " + ",".join(user.sensors)


def cmd_add(args: argparse.Namespace) -> int:
    config = _config(args)
    sensors = _sensors(args.sensors)
    password = _password(args)
    path = config.state_path(config.auth.users_file)
    user = _edit(config, lambda users: add_user(users, args.name, args.role, password, sensors))
    print(f"added {user.username} (id {user.id}, {user.role}{_scope(user)}) to {path}")
    return 0


def cmd_sensors(args: argparse.Namespace) -> int:
    config = _config(args)
    sensors = _sensors(args.sensors)
    user = _edit(config, lambda users: update_user(users, args.name, sensors=sensors))
    seen = "every sensor" if user.sensors is None else ",".join(user.sensors)
    print(f"{user.username} now sees {seen}; their open connections end now")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    config = _config(args)
    password = _password(args)
    user = _edit(config, lambda users: update_user(users, args.name, password=password))
    print(f"password of {user.username} changed; their earlier tokens and open sessions end now")
    return 0


def cmd_role(args: argparse.Namespace) -> int:
    config = _config(args)
    sensors = UNSET if args.sensors is None else _sensors(args.sensors)
    user = _edit(
        config, lambda users: update_user(users, args.name, role=args.role, sensors=sensors)
    )
    print(f"{user.username} is now {user.role}{_scope(user)}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    config = _config(args)
    user = _edit(config, lambda users: remove_user(users, args.name))
    print(f"removed {user.username} (id {user.id}); their tokens and open sessions end now")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    config = _config(args)
    path = config.state_path(config.auth.users_file)
    if not path.exists():
        raise UserCommandError(f"no users file at {path} (the first `leireye run` creates it)")
    try:
        users = read_users_file(path)
    except OSError as exc:
        raise UserCommandError(f"cannot read {path}: {exc.strerror}") from None
    print(f"{'ID':>4}  {'USERNAME':<24} {'ROLE':<8} SENSORS")
    for user in users:
        shown = "all" if user.sensors is None else ",".join(user.sensors)
        print(f"{user.id:>4}  {user.username:<24} {user.role:<8} {shown}")
    return 0


def _edit(config: Config, edit: Callable[[UsersFile], tuple[UsersFile, User]]) -> User:
    path = config.state_path(config.auth.users_file)
    try:
        user = edit_users_file(path, edit)
    except UserEditError as exc:
        raise UserCommandError(f"{exc} (in {path})") from None
    except OSError as exc:
        raise UserCommandError(f"cannot write {path}: {exc.strerror}") from None
    _refresh_users_view(config, path)
    return user


def _refresh_users_view(config: Config, users_file: Path) -> None:
    """Rewrite the running sensor's users view now, so that the web workers (which check it on
    every token they verify) end a removed user's or an old password's tokens at once, not on
    the supervisor's next turn. No view yet: no sensor has run here, nothing to tell."""
    view = config.state_path(USERS_VIEW_FILE)
    try:
        group = view.stat().st_gid
    except FileNotFoundError:
        return
    UsersViewWriter(users_file, view, group).sync()


_SENSORS_HELP = (
    "at a fleet central: the sensors this user may see, comma-separated, or `all` (the default)"
)


def add_user_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "user", help="manage the users who may log in"
    )
    sub = parser.add_subparsers(dest="user_command", required=True)

    def command(name: str, help_text: str, func: object) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        add_config_options(p)
        p.set_defaults(func=func)
        return p

    add = command("add", "add a user", cmd_add)
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument("--sensors", metavar="A,B", help=_SENSORS_HELP)
    passwd = command("passwd", "set a user's password", cmd_passwd)
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    role = command("role", "change a user's role", cmd_role)
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    role.add_argument("--sensors", metavar="A,B", help=_SENSORS_HELP)
    sensors = command("sensors", "limit a user to some fleet sensors (or `all`)", cmd_sensors)
    sensors.add_argument("name")
    sensors.add_argument("sensors", metavar="A,B|all")
    remove = command("remove", "remove a user", cmd_remove)
    remove.add_argument("name")
    command("list", "list the users", cmd_list)
    return parser
