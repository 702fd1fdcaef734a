"""Which config a command reads (`-c`, LEIREYE_CONFIG, configs/default.yaml), that it says so with
`-v` and in its errors, and where `leireye watch` connects when no URL is given."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leireye.cli.common import CONFIG_ENV, DEFAULT_CONFIG, choose_config
from leireye.cli.watch import WatchError, sensor_url, server_url
from leireye.client import DEFAULT_URL
from tests.waiting import scaled

REPO = Path(__file__).resolve().parents[2]


def test_the_option_wins_then_the_environment_then_the_default() -> None:
    env = {CONFIG_ENV: "/etc/leireye/env.yaml"}
    assert choose_config("mine.yaml", env).path == Path("mine.yaml")
    assert choose_config("mine.yaml", env).source == "-c"
    assert choose_config(None, env).path == Path("/etc/leireye/env.yaml")
    assert choose_config(None, env).source == CONFIG_ENV
    assert choose_config(None, {}).path == DEFAULT_CONFIG
    assert choose_config(None, {CONFIG_ENV: ""}).source == "default"


def test_a_missing_default_file_is_described_as_the_built_in_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert not choose_config(None, {}).builtin  # the repository has the file
    monkeypatch.chdir(tmp_path)
    choice = choose_config(None, {})
    assert choice.builtin
    assert "built-in defaults" in choice.describe()


def leireye(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEIREYE_")}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "leireye.cli", *args], cwd=cwd,
                          env=base | (env or {}), capture_output=True, text=True,
                          timeout=scaled(60), check=False)  # fmt: skip


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "other.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nweb:\n  port: 8123\n")
    return path


def test_leireye_config_sets_the_config_of_every_command_and_v_says_which(
    config_path: Path, tmp_path: Path
) -> None:
    out = leireye("user", "list", "-v", env={CONFIG_ENV: str(config_path)}, cwd=tmp_path)
    users = tmp_path / "state" / "users.yaml"
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"leireye: config: {config_path} (${CONFIG_ENV})",
        f"leireye: users file: {users}",
        f"leireye: no users file at {users} (the first `leireye run` creates it)"
        f" [config: {config_path} (${CONFIG_ENV})]",
    ]
    out = leireye("check-config", env={CONFIG_ENV: str(config_path)}, cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.splitlines()[0] == f"{config_path} (${CONFIG_ENV}): OK"


def test_the_option_wins_over_the_environment(config_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "broken.yaml"
    other.write_text("nonsense: 1\n")
    out = leireye("token", "--user", "admin", "-c", str(config_path), env={CONFIG_ENV: str(other)})
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"leireye: no users file at {tmp_path / 'state' / 'users.yaml'} (the first `leireye run`"
        f" creates it) [config: {config_path} (-c)]"
    ]


def test_without_any_config_a_command_says_it_used_the_built_in_defaults(tmp_path: Path) -> None:
    out = leireye("token", "--user", "nobody-here", "-v", cwd=tmp_path)
    assert out.stderr.splitlines()[0] == (
        f"leireye: config: the built-in defaults (no {DEFAULT_CONFIG} here; set -c or {CONFIG_ENV})"
    )


def watch_args(url: str | None = None, config: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(url=url, config=config, verbose=False)


def test_watch_takes_the_url_then_leireye_url_then_the_config_then_the_default(
    config_path: Path,
) -> None:
    env = {"LEIREYE_URL": "ws://env:1/ws/capture", CONFIG_ENV: str(config_path)}
    assert server_url(watch_args("ws://opt:2/ws/capture"), env) == "ws://opt:2/ws/capture"
    assert server_url(watch_args(), env) == "ws://env:1/ws/capture"
    assert server_url(watch_args(), {CONFIG_ENV: str(config_path)}) == (
        "ws://127.0.0.1:8123/ws/capture"
    )
    assert server_url(watch_args(config=str(config_path)), {}) == ("ws://127.0.0.1:8123/ws/capture")
    assert server_url(watch_args(), {}) == DEFAULT_URL


def test_watch_cannot_derive_a_url_from_port_zero(tmp_path: Path) -> None:
    path = tmp_path / "zero.yaml"
    path.write_text("web:\n  port: 0\n")
    with pytest.raises(WatchError, match=r"web\.port is 0"):
        server_url(watch_args(config=str(path)), {})


def test_a_wildcard_address_is_reached_on_loopback() -> None:
    assert sensor_url("0.0.0.0", 9000) == "ws://127.0.0.1:9000/ws/capture"
    assert sensor_url("::", 9000) == "ws://[::1]:9000/ws/capture"
    assert sensor_url("fe80::1", 9000) == "ws://[fe80::1]:9000/ws/capture"
    assert sensor_url("10.0.0.5", 80) == "ws://10.0.0.5:80/ws/capture"
