"""`scripts/soak.py --minutes 1`: opt-in (LEIREYE_SOAK=1), since it takes a minute of a core."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.live import ROOT_ONLY
from tests.waiting import scaled

pytestmark = [
    *ROOT_ONLY,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("LEIREYE_SOAK") != "1", reason="set LEIREYE_SOAK=1"),
]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


def test_a_one_minute_soak_keeps_memory_flat() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--minutes", "1"], capture_output=True,
                          text=True, timeout=scaled(240), check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: RSS flat" in done.stdout
