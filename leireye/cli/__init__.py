"""`leireye`: the command line, one module per command. The only package that prints and exits.

run, check-config,  `run`      the sensor, validating its config, and the fingerprint of
tls-fingerprint                its TLS certificate
token               `token`    a JWT for a user, for scripts
user                `user`     the users file: add, list, passwd, role, remove
watch, stats        `watch`    the packet and stats streams of a running sensor
"""

from __future__ import annotations

import argparse
import sys

from leireye import __version__
from leireye.cli.run import add_run_parsers
from leireye.cli.token import add_token_parser
from leireye.cli.user import add_user_parser
from leireye.cli.watch import add_watch_parsers
from leireye.errors import LeirEyeError
from leireye.exitcodes import ExitCode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leireye", description="LeirEye network sensor")
    parser.add_argument("--version", action="version", version=f"leireye {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parsers(sub)
    add_token_parser(sub)
    add_user_parser(sub)
    add_watch_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except LeirEyeError as exc:
        print(f"leireye: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return code
