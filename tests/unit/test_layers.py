"""The layer contracts of tests/layers.py: leireye keeps them; a package breaking them is told."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.layers import LEIREYE, Layer, check, table

REPO = Path(__file__).resolve().parents[2]

LAYERS = (
    Layer("package", ("pkg",), (), "the root"),
    Layer("low", ("pkg.low",), (), "low is the bottom", no_shell_libraries=True),
    Layer("high", ("pkg.high",), ("low",), "high sits on low"),
)


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / "pkg"


def test_leireye_keeps_its_layers() -> None:
    problems = check(REPO / "leireye", LEIREYE)
    assert not problems, "\n".join(problems)


def test_the_architecture_doc_shows_the_table_the_check_enforces() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert table(LEIREYE) in doc, (
        "docs/architecture.md must show the output of `python -m tests.layers --table`"
    )


def test_a_package_that_keeps_its_layers_has_no_problem(tmp_path: Path) -> None:
    root = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low/__init__.py": "from pkg.low.a import A\n",
            "pkg/low/a.py": "A = 1\n",
            "pkg/high/__init__.py": "",
            "pkg/high/b.py": """
                import asyncio
                from ..low import a
                from . import c

                def later():
                    import pkg.low
            """,
            "pkg/high/c.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from pkg.high.b import later
            """,
        },
    )
    assert check(root, LAYERS) == []


def test_broken_contracts_and_cycles_are_reported_with_both_modules(tmp_path: Path) -> None:
    root = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/stray.py": "",
            "pkg/low/__init__.py": "",
            "pkg/low/a.py": """
                import asyncio
                import tests.waiting

                def lazy():
                    from pkg.high import b
            """,
            "pkg/low/typed.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from pkg.high.c import C
            """,
            "pkg/high/__init__.py": "",
            "pkg/high/b.py": "from pkg.low import a\n",
            "pkg/high/c.py": "from ..low import typed\nC = 1\n",
        },
    )
    assert sorted(check(root, LAYERS)) == sorted(
        [
            "pkg/stray.py: pkg.stray is in no layer: add it to a layer of LEIREYE in "
            "tests/layers.py (and to docs/architecture.md)",
            "pkg/low/a.py:2: pkg.low.a imports asyncio: low uses no event loop, server or pcap "
            "(only the shells do)",
            "pkg/low/a.py:3: pkg.low.a imports tests.waiting: the package must not import tests/ "
            "(it is not installed)",
            "pkg/low/a.py:6: pkg.low.a imports pkg.high.b: low may import no other "
            "(low is the bottom); pkg.high.b is high",
            "pkg/low/typed.py:4: pkg.low.typed imports pkg.high.c: low may import no other "
            "(low is the bottom); pkg.high.c is high",
            # The function-level import closes a cycle; the TYPE_CHECKING one does not.
            "import cycle: pkg.high.b -> pkg.low.a -> pkg.high.b (pkg/high/b.py:1, pkg/low/a.py:6)",
        ]
    )
