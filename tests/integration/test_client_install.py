"""The client installed alone, for real: a fresh virtualenv (no system site-packages) gets this
tree with `--no-deps`, plus msgspec and websockets only, as docs/clients.md tells a script user.

Slow (a virtualenv, a wheel build, ~10-30 s) and it needs the package index, or pip's cache, for
setuptools>=77 (the isolated build) and the two dependencies: the versions installed here, so a
machine that set up LeirEye usually has them cached.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from leireye.cli import SENSOR_MODULES
from tests.waiting import scaled

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The virtualenv's bin directory and pip's (verbose) output."""
    tmp = tmp_path_factory.mktemp("client-install")
    source = tmp / "leireye"  # a copy: a build in the checkout would leave build/ and egg-info
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "leireye", source / "leireye", ignore=ignore)
    base_python = Path(sys.base_prefix, "bin", "python3")  # the interpreter of this venv
    venv = tmp / "venv"
    subprocess.run([base_python, "-m", "venv", venv], check=True, timeout=scaled(120))
    wanted = [f"{name}=={importlib.metadata.version(name)}" for name in ("msgspec", "websockets")]
    pip = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-v", "--no-deps", source, *wanted],
        capture_output=True, text=True, timeout=scaled(300), env=_clean_env(),
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return venv / "bin", pip.stdout + pip.stderr


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("LEIREYE_")}  # fmt: skip


def run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(bin_dir / args[0]), *args[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=scaled(60),
                          cwd=bin_dir, env=_clean_env())  # fmt: skip


def test_the_build_prints_no_deprecation_warning(client_venv: tuple[Path, str]) -> None:
    _, output = client_venv
    assert "Deprecat" not in output and "deprecated" not in output, output


def test_the_venv_has_none_of_the_sensor_dependencies(client_venv: tuple[Path, str]) -> None:
    bin_dir, _ = client_venv
    probe = ("import importlib.util, json; print(json.dumps([m for m in "
             f"{sorted(SENSOR_MODULES)!r} if importlib.util.find_spec(m)]))")  # fmt: skip
    out = run(bin_dir, "python", "-c", probe)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_the_client_imports_and_its_metadata_keeps_the_sensor_in_its_extra(
    client_venv: tuple[Path, str],
) -> None:
    bin_dir, _ = client_venv
    code = ("import importlib.metadata, json, leireye.client; "
            "print(json.dumps(importlib.metadata.requires('leireye')))")  # fmt: skip
    out = run(bin_dir, "python", "-c", code)
    assert out.returncode == 0, out.stderr
    requires = [Requirement(r) for r in json.loads(out.stdout)]
    base = {r.name.lower() for r in requires if r.marker is None}
    assert base == {"msgspec", "websockets"}
    sensor = {name.lower() for name in SENSOR_MODULES.values()}
    for r in requires:
        if r.name.lower() in sensor:
            assert r.marker is not None and r.marker.evaluate({"extra": "sensor"}), r
            assert not r.marker.evaluate({"extra": ""}), r


def test_leireye_watch_works_and_run_names_the_extra(client_venv: tuple[Path, str]) -> None:
    bin_dir, _ = client_venv
    out = run(bin_dir, "leireye", "watch", "--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: leireye watch"), out.stderr
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        nowhere = f"ws://127.0.0.1:{s.getsockname()[1]}/ws/capture"
    out = run(bin_dir, "leireye", "watch", "--url", nowhere, "--token", "t")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"leireye: cannot connect to {nowhere}")
    out = run(bin_dir, "leireye", "run")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(
        "leireye run needs the sensor extra: pip install 'leireye[sensor]'"
    ), out.stderr
