"""`leireye central`: a fleet's central, the sensor's web tier over every sensor's streams."""

from __future__ import annotations

import argparse

from leireye.cli.common import add_config_options, load_cli_config
from leireye.cli.run import show_first_run
from leireye.config import with_overrides
from leireye.errors import ConfigError
from leireye.logs import setup_logging


def cmd_central(args: argparse.Namespace) -> int:
    from leireye.supervisor import Supervisor

    config = load_cli_config(args)
    config = with_overrides(
        config, web={key: getattr(args, key, None) for key in ("port", "workers")}
    )
    if not config.central.enabled:
        raise ConfigError(
            "this config has no central (central.enabled is not true): `leireye central` needs"
            " a central's config (see configs/central.yaml); a sensor runs with `leireye run`"
        )
    if config.fleet.enabled:
        raise ConfigError("a central does not publish to a fleet: set fleet.enabled to false")
    setup_logging(args.log_level or config.logging.level)
    return Supervisor(config, base_name=args.name).run(ready=show_first_run)


def add_central_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    central = subparsers.add_parser(
        "central", help="a fleet's central: every sensor's packets from NATS JetStream, one console"
    )
    add_config_options(central)
    central.add_argument("--port", type=int, help="HTTP/WebSocket port (overrides web.port)")
    central.add_argument("--workers", type=int, help="web worker processes (overrides web.workers)")
    central.add_argument("--name", help="shared-memory name prefix (default: leireye-<pid>)")
    central.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    central.set_defaults(func=cmd_central)
