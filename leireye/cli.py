"""`leireye`: the command line. The only module that prints and exits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from leireye import __version__
from leireye.config import Config, load_config, with_overrides
from leireye.errors import LeirEyeError
from leireye.logs import setup_logging
from leireye.tokencli import add_token_parser
from leireye.usercli import add_user_parser
from leireye.watchcli import add_watch_parsers

if TYPE_CHECKING:
    from leireye.supervisor import Supervisor

DEFAULT_CONFIG = Path("configs/default.yaml")


def load_cli_config(config_path: str) -> Config:
    """The `-c` file; the default path may be missing (run from anywhere): the built-in
    defaults equal configs/default.yaml."""
    path = Path(config_path)
    if not path.exists() and config_path == str(DEFAULT_CONFIG):
        return Config()
    return load_config(path)


def _load(args: argparse.Namespace) -> Config:
    config = load_cli_config(args.config)
    capture = {key: getattr(args, key, None) for key in ("interface", "bpf", "pcap")}
    web = {key: getattr(args, key, None) for key in ("port", "workers")}
    return with_overrides(config, capture=capture, web=web)


def cmd_run(args: argparse.Namespace) -> int:
    from leireye.supervisor import Supervisor

    config = _load(args)
    setup_logging(args.log_level or config.logging.level)
    return Supervisor(config, base_name=args.name).run(ready=_show_first_admin)


def _show_first_admin(supervisor: Supervisor) -> None:
    """On the very first run the supervisor made an `admin` with a random password: show it
    once, here on the console (only its hash is stored)."""
    password = supervisor.first_admin_password
    if password is None:
        return
    supervisor.first_admin_password = None
    users = supervisor.config.state_path(supervisor.config.auth.users_file)
    print(
        f"\n  First run: created user 'admin' (ADMIN) in {users}\n"
        f"  password: {password}\n"
        "  It is shown only this once. Change it with `leireye user passwd admin`.\n",
        file=sys.stderr,
        flush=True,
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    _load(args)
    print(f"{args.config}: OK")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leireye", description="LeirEye network sensor")
    parser.add_argument("--version", action="version", version=f"leireye {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="capture, decode and publish packets (as root)")
    run.add_argument("-c", "--config", default=str(DEFAULT_CONFIG), help="YAML config file")
    run.add_argument("--interface", "-i", help="capture interface (overrides capture.interface)")
    run.add_argument("--bpf", help="BPF filter expression (overrides capture.bpf)")
    run.add_argument("--pcap", help="replay this pcap file instead of capturing live")
    run.add_argument("--port", type=int, help="HTTP/WebSocket port (overrides web.port)")
    run.add_argument("--workers", type=int, help="web worker processes (overrides web.workers)")
    run.add_argument("--name", help="shared-memory name prefix (default: leireye-<pid>)")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(func=cmd_run)

    add_token_parser(sub)
    add_user_parser(sub)
    add_watch_parsers(sub)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("-c", "--config", default=str(DEFAULT_CONFIG))
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except LeirEyeError as exc:
        print(f"leireye: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
