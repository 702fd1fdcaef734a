"""What every command that reads a config shares: the default path and how `-c` is read."""

from __future__ import annotations

from pathlib import Path

from leireye.config import Config, load_config

DEFAULT_CONFIG = Path("configs/default.yaml")


def load_cli_config(config_path: str) -> Config:
    """The `-c` file; the default path may be missing (run from anywhere): the built-in
    defaults equal configs/default.yaml."""
    path = Path(config_path)
    if not path.exists() and config_path == str(DEFAULT_CONFIG):
        return Config()
    return load_config(path)
