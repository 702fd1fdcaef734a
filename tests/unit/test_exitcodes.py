"""docs/architecture.md lists the exit codes `ExitCode` defines, with the same numbers."""

from __future__ import annotations

import re
from pathlib import Path

from leireye.exitcodes import ExitCode

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_the_documented_exit_codes_are_the_enum() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    rows = {
        name: int(code) for code, name in re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", text, re.M)
    }
    prose = {name: int(code) for code, name in re.findall(r"\b(\d+) \(`([A-Z_]+)`\)", text)}
    documented = rows | prose
    assert documented == {code.name: code.value for code in ExitCode}
