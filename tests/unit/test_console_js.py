"""The console's pure JavaScript (sorting, views, time ranges, stacking, flow texts) under Node:
tests/js/console.mjs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.waiting import scaled

SCRIPT = Path(__file__).resolve().parents[1] / "js" / "console.mjs"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (scripts/setup.sh)")
def test_the_consoles_pure_modules() -> None:
    node = shutil.which("node")
    assert node is not None
    out = subprocess.run([node, str(SCRIPT)], capture_output=True, text=True, timeout=scaled(30))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
