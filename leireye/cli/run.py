"""`leireye run` (the sensor) and `leireye check-config`."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from leireye.cli.common import add_config_options, load_cli_config
from leireye.config import Config, with_overrides
from leireye.errors import ConfigError
from leireye.logs import setup_logging

if TYPE_CHECKING:
    from leireye.supervisor import Supervisor


def _load(args: argparse.Namespace) -> Config:
    config = load_cli_config(args)
    capture = {key: getattr(args, key, None) for key in ("interface", "bpf", "pcap")}
    web = {key: getattr(args, key, None) for key in ("port", "workers")}
    return with_overrides(config, capture=capture, web=web)


def cmd_run(args: argparse.Namespace) -> int:
    from leireye.supervisor import Supervisor

    config = _load(args)
    if config.central.enabled:
        raise ConfigError(
            "this config is a fleet central's (central.enabled: true): start it with"
            " `leireye central -c FILE`, or set central.enabled to false for a sensor"
        )
    setup_logging(args.log_level or config.logging.level)
    return Supervisor(config, base_name=args.name).run(ready=show_first_run)


def show_first_run(supervisor: Supervisor) -> None:
    _show_new_certificate(supervisor)
    _show_first_admin(supervisor)


def _show_new_certificate(supervisor: Supervisor) -> None:
    """`web.tls: auto` just made a certificate: its fingerprint, once, on the console (later:
    `leireye tls-fingerprint`)."""
    fingerprint = supervisor.new_tls_fingerprint
    if fingerprint is None:
        return
    supervisor.new_tls_fingerprint = None
    print(
        "\n  web.tls: made a self-signed certificate. Its SHA-256 fingerprint:\n"
        f"  {fingerprint}\n"
        "  Compare it with what a browser shows, or pin it: `leireye watch --fingerprint ...`.\n",
        file=sys.stderr,
        flush=True,
    )


def _show_first_admin(supervisor: Supervisor) -> None:
    """On the very first run the supervisor made an `admin` with a random password and put it
    in a root-only file. Say where; show the password itself only on a terminal: stderr is also
    the log, and a log file is often readable by others."""
    password, path = supervisor.first_admin_password, supervisor.first_admin_file
    supervisor.first_admin_password = None
    if password is None or path is None:
        return
    users = supervisor.config.state_path(supervisor.config.auth.users_file)
    shown = f"  password: {password}\n" if sys.stderr.isatty() else ""
    print(
        f"\n  First run: created user 'admin' (ADMIN) in {users}; its password is in {path}"
        " (root only)\n"
        f"{shown}"
        "  Change it with `leireye user passwd admin`, then delete that file.\n",
        file=sys.stderr,
        flush=True,
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    from leireye.tls import cert_fingerprint, tls_paths

    config = _load(args)
    print(f"{args.config_used}: OK")
    paths = tls_paths(config)
    if paths is None:
        print(f"web.tls: off (plain HTTP on {config.web.host})")
    elif config.web.tls == "auto" and not paths.cert.exists():
        print(f"web.tls: {paths.cert} (made on the first run)")
    else:
        print(f"web.tls: {paths.cert} SHA-256 {cert_fingerprint(paths.cert)}")
    return 0


def cmd_tls_fingerprint(args: argparse.Namespace) -> int:
    from leireye.tls import cert_fingerprint, tls_paths

    config = _load(args)
    paths = tls_paths(config)
    if paths is None:
        raise ConfigError("web.tls is off in this config: there is no certificate")
    if not paths.cert.exists() and config.web.tls == "auto":
        raise ConfigError(f"web.tls: auto: no certificate yet ({paths.cert}): the first"
                          " `leireye run` makes it")  # fmt: skip
    print(cert_fingerprint(paths.cert))
    return 0


def add_run_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `run` and `check-config` to `leireye`'s sub-parsers."""
    run = subparsers.add_parser("run", help="capture, decode and publish packets (as root)")
    add_config_options(run)
    run.add_argument("--interface", "-i", help="capture interface (overrides capture.interface)")
    run.add_argument("--bpf", help="BPF filter expression (overrides capture.bpf)")
    run.add_argument("--pcap", help="replay this pcap file instead of capturing live")
    run.add_argument("--port", type=int, help="HTTP/WebSocket port (overrides web.port)")
    run.add_argument("--workers", type=int, help="web worker processes (overrides web.workers)")
    run.add_argument("--name", help="shared-memory name prefix (default: leireye-<pid>)")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(func=cmd_run)

    check = subparsers.add_parser("check-config", help="validate a config file and exit")
    add_config_options(check)
    check.set_defaults(func=cmd_check_config)

    fingerprint = subparsers.add_parser(
        "tls-fingerprint", help="print the SHA-256 fingerprint of the web.tls certificate"
    )
    add_config_options(fingerprint)
    fingerprint.set_defaults(func=cmd_tls_fingerprint)
