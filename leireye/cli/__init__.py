"""`leireye`: the command line, one module per command. The only package that prints and exits.

run, check-config,  `run`      the sensor, validating its config, and the fingerprint of
tls-fingerprint                its TLS certificate
central             `central`  a fleet's central: every sensor's streams into one console
token               `token`    a JWT for a user, for scripts
user                `user`     the users file: add, list, passwd, role, remove
watch, stats        `watch`    the packet and stats streams of a running sensor
flows, hosts        `flows`    the flow store: ended flows (conn.log-like) and hosts
fleet-demo          `fleetdemo` a fleet on this machine: NATS, namespaces, sensors, a central

Only the module of the command being run is imported: `watch` and `stats` need the client alone
(`pip install leireye`), the others the sensor's dependencies (`pip install 'leireye[sensor]'`),
and without them say so instead of failing with a traceback. `leireye --help` lists every
command, importing each module that can be.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Final

from leireye import __version__
from leireye.client.errors import ClientError
from leireye.errors import LeirEyeError
from leireye.exitcodes import ExitCode

# (module, the function that adds its sub-parsers, the commands it adds), in `--help` order.
COMMAND_MODULES: Final = (
    ("leireye.cli.run", "add_run_parsers", ("run", "check-config", "tls-fingerprint")),
    ("leireye.cli.central", "add_central_parser", ("central",)),
    ("leireye.cli.token", "add_token_parser", ("token",)),
    ("leireye.cli.user", "add_user_parser", ("user",)),
    ("leireye.cli.watch", "add_watch_parsers", ("watch", "stats")),
    ("leireye.cli.flows", "add_flows_parsers", ("flows", "hosts")),
    ("leireye.cli.fleetdemo", "add_fleet_demo_parser", ("fleet-demo",)),
)
COMMANDS: Final = frozenset(name for _, _, names in COMMAND_MODULES for name in names)

# The top-level modules of the `sensor` extra's distributions (pyproject.toml).
SENSOR_MODULES: Final = {
    "pcap": "pypcap",
    "dpkt": "dpkt",
    "numpy": "numpy",
    "yaml": "PyYAML",
    "jwt": "PyJWT",
    "argon2": "argon2-cffi",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "wsproto": "wsproto",
    "cryptography": "cryptography",
    "setproctitle": "setproctitle",  # optional at run time (leireye.proctitle)
    "pyarrow": "pyarrow",
    "duckdb": "duckdb",
    "nats": "nats-py",
}
SENSOR_EXTRA_HINT: Final = "pip install 'leireye[sensor]'"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """`leireye`'s parser. Given a `command`, only its module is imported (the other commands
    are bare names: argparse only ever parses the chosen one); else every module that can be,
    for the full help."""
    parser = argparse.ArgumentParser(prog="leireye", description="LeirEye network sensor")
    parser.add_argument("--version", action="version", version=f"leireye {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module, function, names in COMMAND_MODULES:
        if command is not None and command not in names:
            for name in names:
                sub.add_parser(name)
            continue
        add_parsers: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], object]
        try:
            add_parsers = getattr(importlib.import_module(module), function)
        except ModuleNotFoundError as exc:
            if command is not None or missing_sensor_module(exc) is None:
                raise
            for name in names:
                sub.add_parser(name, help="(needs the sensor extra: leireye[sensor])")
            continue
        add_parsers(sub)
    return parser


def missing_sensor_module(exc: ModuleNotFoundError) -> str | None:
    """The sensor dependency whose absence `exc` reports, or None (then it is a bug)."""
    top = (exc.name or "").partition(".")[0]
    return top if top in SENSOR_MODULES else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The top-level options take no value: the first word is the command.
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    command = command if command in COMMANDS else None
    args = argparse.Namespace()
    try:
        args = build_parser(command).parse_args(argv)
        code: int = args.func(args)
    except (LeirEyeError, ClientError) as exc:
        context = getattr(args, "context", None)  # e.g. the config, once it has loaded
        print(f"leireye: {exc}" + (f" [{context}]" if context else ""), file=sys.stderr)
        return ExitCode.FAILED
    except ModuleNotFoundError as exc:
        missing = missing_sensor_module(exc)
        if missing is None:
            raise
        print(
            f"leireye {command} needs the sensor extra: {SENSOR_EXTRA_HINT}"
            f" ({SENSOR_MODULES[missing]} is not installed)",
            file=sys.stderr,
        )
        return ExitCode.FAILED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return code
