"""`leireye token --user NAME [--ttl SECONDS] [-c CONFIG]`: print a token for a user.

Run it as the user that can read the secret (root, by default). It reads the same secret the
web workers verify with (creating it, like the first `leireye run`, when there is none yet) and
looks the user up in the users file; it never creates the users file (the supervisor does, owned
by the web user). Only the token goes to stdout, so `TOKEN=$(leireye token --user admin)` works.
"""

from __future__ import annotations

import argparse
import time

from leireye.accounts.tokens import issue_token, load_or_create_secret
from leireye.accounts.users import load_users
from leireye.cli.common import add_config_options, load_cli_config, say
from leireye.errors import LeirEyeError

MAX_TTL_S = 31_536_000


class TokenError(LeirEyeError):
    """No such user, or a token cannot be issued as asked."""


def cmd_token(args: argparse.Namespace) -> int:
    config = load_cli_config(args)
    ttl = config.auth.token_ttl_s if args.ttl is None else args.ttl
    if not 1 <= ttl <= MAX_TTL_S:
        raise TokenError(f"--ttl must be between 1 and {MAX_TTL_S} seconds")
    users_path = config.state_path(config.auth.users_file)
    say(args, f"users file: {users_path}")
    if not users_path.exists():
        raise TokenError(f"no users file at {users_path} (the first `leireye run` creates it)")
    user = next((u for u in load_users(users_path) if u.username == args.user), None)
    if user is None:
        raise TokenError(f"no user named {args.user!r} in {users_path}")
    secret = load_or_create_secret(config)
    print(issue_token(secret, user, ttl, time.time()))
    return 0


def add_token_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the `token` sub-command to `leireye`'s sub-parsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "token", help="print a JWT for a user of the users file"
    )
    parser.add_argument("--user", "-u", required=True, help="username in the users file")
    parser.add_argument("--ttl", type=int, help="validity in seconds (default: auth.token_ttl_s)")
    add_config_options(parser)
    parser.set_defaults(func=cmd_token)
    return parser
