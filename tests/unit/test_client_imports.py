"""The client and `leireye watch`/`stats` load nothing of the sensor, so they work from the base
install (`pip install leireye`, without the `sensor` extra: docs/clients.md).

Each check runs in a fresh interpreter: this one has long imported everything. The checks with
the sensor's modules made unimportable stand in for an install without them; the real install is
tests/integration/test_client_install.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from leireye.cli import SENSOR_MODULES
from tests.waiting import scaled

ROOT = Path(__file__).resolve().parents[2]
SENSOR_IMPORTS = frozenset(SENSOR_MODULES)
# What `leireye watch` may load besides the client: the command line's own modules and the
# (import-free) root of its errors and its exit codes.
CLI_MODULES = frozenset({"leireye.cli", "leireye.cli.__main__", "leireye.cli.watch",
                         "leireye.errors", "leireye.exitcodes"})  # fmt: skip

# Runs `leireye` with every sensor dependency unimportable, as on a client-only install.
WITHOUT_SENSOR = f"""
import importlib.abc, sys
class NoSensor(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {sorted(SENSOR_IMPORTS)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, NoSensor())
from leireye.cli import main
sys.exit(main(sys.argv[1:]))
"""


def python(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEIREYE_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=scaled(60))  # fmt: skip


def loaded_modules(tmp_path: Path, code: str) -> set[str]:
    """The modules loaded by the time `code` ends (also by SystemExit)."""
    out = tmp_path / "modules.json"
    record = (f"import atexit, json, sys; atexit.register(lambda: open({str(out)!r}, 'w')"
              ".write(json.dumps(sorted(sys.modules))))\n")  # fmt: skip
    result = python("-c", record + code)
    assert out.exists(), result.stderr
    return set(json.loads(out.read_text()))


def sensor_modules(modules: set[str]) -> set[str]:
    return {m for m in modules if m.partition(".")[0] in SENSOR_IMPORTS}


def leireye_modules(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "leireye" or m.startswith("leireye.")}


def test_importing_the_client_loads_only_the_client_and_the_wire_schema(tmp_path: Path) -> None:
    modules = loaded_modules(tmp_path, "import leireye.client")
    assert "leireye.client.client" in modules
    ours = leireye_modules(modules)
    assert {m for m in ours if not m.startswith("leireye.client.")} == {
        "leireye", "leireye.client", "leireye.wire", "leireye.text",  # wire's text helpers
    }  # fmt: skip
    assert sensor_modules(modules) == set()


def test_watch_help_loads_nothing_of_the_sensor(tmp_path: Path) -> None:
    code = ("import runpy, sys; sys.argv = ['leireye', 'watch', '--help']\n"
            "runpy.run_module('leireye.cli', run_name='__main__')")  # fmt: skip
    modules = loaded_modules(tmp_path, code)
    assert "leireye.cli.watch" in modules
    ours = leireye_modules(modules)
    extra = {m for m in ours - CLI_MODULES if not m.startswith("leireye.client.")}
    assert extra == {"leireye", "leireye.client", "leireye.wire", "leireye.text"}
    assert sensor_modules(modules) == set()


def test_watch_runs_without_the_sensor_and_its_errors_are_one_line() -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        nowhere = f"ws://127.0.0.1:{s.getsockname()[1]}/ws/capture"
    out = python("-c", WITHOUT_SENSOR, "watch", "--url", nowhere, "--token", "t")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"leireye: cannot connect to {nowhere}")
    out = python("-c", WITHOUT_SENSOR, "stats", "--url", nowhere)
    assert (out.returncode, out.stderr.splitlines()) == (2, [
        "leireye: no token: pass --token, set LEIREYE_TOKEN, or log in with --user"
    ])  # fmt: skip


def test_watch_reads_a_config_only_when_one_is_named_and_says_when_pyyaml_is_missing(
    tmp_path: Path,
) -> None:
    config = tmp_path / "sensor.yaml"
    config.write_text("web:\n  port: 8123\n")
    out = python("-c", WITHOUT_SENSOR, "watch", "-c", str(config), "--token", "t")
    assert (out.returncode, out.stderr.splitlines()) == (2, [
        f"leireye: reading the config {config} needs PyYAML (pip install 'leireye[sensor]'):"
        " or give the sensor's address with --url or LEIREYE_URL"
    ])  # fmt: skip


def test_sensor_commands_without_the_sensor_say_which_extra_to_install() -> None:
    for command in (["run"], ["check-config"], ["token", "--user", "admin"], ["user", "list"]):
        out = python("-c", WITHOUT_SENSOR, *command)
        assert out.returncode == 2, out.stderr
        line = f"leireye {command[0]} needs the sensor extra: pip install 'leireye[sensor]'"
        assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith(line), out.stderr
    out = python("-c", WITHOUT_SENSOR, "--help")
    assert out.returncode == 0, out.stderr
    listing = " ".join(out.stdout.split())
    assert "run (needs the sensor extra: leireye[sensor]) check-config (needs" in listing
    assert "watch print live packets, one line each" in listing


def test_the_sensor_modules_are_those_of_the_sensor_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = {Requirement(r).name.lower() for r in project["optional-dependencies"]["sensor"]}
    assert extra == {name.lower() for name in SENSOR_MODULES.values()}
    base = {Requirement(r).name.lower() for r in project["dependencies"]}
    assert base == {"msgspec", "websockets"}
