"""`leireye fleet-demo`: refuses without root, and as root runs a fleet whose central sees every
sensor live, then Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from leireye.cli import COMMANDS, main
from leireye.exitcodes import ExitCode
from leireye.fleet.model import SENSOR_TABLE_FILE, read_sensor_table
from tests.netns import skip_unless_root
from tests.waiting import scaled, wait_for


def test_refuses_without_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["fleet-demo"]) == ExitCode.FAILED
    assert "must run as root" in capsys.readouterr().err


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="leireye-demo-test-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


@pytest.mark.root
@pytest.mark.slow
@skip_unless_root
@pytest.mark.skipif("central" not in COMMANDS, reason="`leireye central` is not built yet")
def test_demo_runs_a_fleet_and_cleans_up(demo_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "leireye.cli", "fleet-demo", "--sensors", "2", "--rate", "10",
         "--duration", "300", "--dir", str(demo_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []

    def collect() -> None:
        assert proc.stdout is not None
        lines.extend(line.rstrip("\n") for line in proc.stdout)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("Ctrl-C stops everything" in x for x in lines) or proc.poll(), 180,
                 "the demo to say it runs")  # fmt: skip
        assert proc.poll() is None, "\n".join(lines)
        text = "\n".join(lines)
        assert re.search(r"central\s+http://127\.0\.0\.1:\d+", text)
        assert "initial-admin-password" in text
        namespaces = re.findall(r"namespace (le-fleet-\d+-\d+)", text)
        assert len(namespaces) == 2
        table_path = demo_dir / "central" / SENSOR_TABLE_FILE

        def both_live() -> bool:
            table = read_sensor_table(table_path)
            return table is not None and sorted(
                s.name for s in table.sensors if s.state == "live" and s.packets > 0
            ) == ["sensor1", "sensor2"]

        wait_for(both_live, 120, "the central to see both sensors live with packets")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(scaled(60))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        reader.join(scaled(10))
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == ExitCode.INTERRUPTED, "\n".join(lines)
    for ns in namespaces:
        assert not Path("/run/netns", ns).exists()
    assert not any(str(demo_dir) in line for line in _processes())


def _processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()
