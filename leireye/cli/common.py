"""What every command that reads a config shares: which file, and saying which one it was.

The config comes from `-c FILE`, else from the environment variable LEIREYE_CONFIG, else from
configs/default.yaml, which may be missing (run from anywhere): then the built-in defaults apply,
which equal that file. Every command that reads state says which config and which file it used
when asked (`-v`), and in its errors (`cli.main` adds the config to them).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from leireye.config import Config, load_config

DEFAULT_CONFIG: Final = Path("configs/default.yaml")
CONFIG_ENV: Final = "LEIREYE_CONFIG"


@dataclass(frozen=True)
class ConfigChoice:
    """The config file a command is to read, and why that one."""

    path: Path
    source: str  # "-c", "LEIREYE_CONFIG" or "default"

    @property
    def builtin(self) -> bool:
        """The default file is missing: the built-in defaults stand in for it."""
        return self.source == "default" and not self.path.exists()

    def describe(self) -> str:
        if self.builtin:
            return f"the built-in defaults (no {self.path} here; set -c or {CONFIG_ENV})"
        how = {"-c": "-c", CONFIG_ENV: f"${CONFIG_ENV}", "default": "the default"}[self.source]
        return f"{self.path} ({how})"


def choose_config(option: str | None, environ: Mapping[str, str] | None = None) -> ConfigChoice:
    """`-c` wins, then LEIREYE_CONFIG (when set and not empty), then configs/default.yaml."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if option:
        return ConfigChoice(Path(option), "-c")
    if env.get(CONFIG_ENV):
        return ConfigChoice(Path(env[CONFIG_ENV]), CONFIG_ENV)
    return ConfigChoice(DEFAULT_CONFIG, "default")


def load_cli_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    """The config the command's `-c`/LEIREYE_CONFIG names. Remembers the choice on `args`
    (`context`) for `cli.main` to name in an error, and says it with `-v`."""
    choice = choose_config(getattr(args, "config", None), environ)
    config = Config() if choice.builtin else load_config(choice.path)
    args.config_used = choice.describe()
    args.context = f"config: {args.config_used}"
    say(args, args.context)
    return config


def say(args: argparse.Namespace, line: str) -> None:
    """One line on stderr with `-v`: where a command reads and writes."""
    if getattr(args, "verbose", False):
        print(f"leireye: {line}", file=sys.stderr, flush=True)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """`-c FILE` and `-v`, for every command that reads a config."""
    parser.add_argument(
        "-c", "--config", help=f"YAML config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="say which config and files are used"
    )
