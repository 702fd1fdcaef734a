"""Which part of `leireye` may import which: the layer contracts, checked over the AST.

`python -m tests.layers` (in `make lint` and CI) and `tests/unit/test_layers.py` (in `make test`)
name every import that breaks a contract and every import cycle, and fail; `--table` prints the
table that docs/architecture.md ("Layout") shows, and the unit test keeps the two the same.

What counts: every `import` and `from … import` of a module, at module level and inside functions
(a lazy import is still a dependency), relative ones resolved. `from pkg import name` depends on
`pkg.name` when that is a module, else on `pkg`; importing a submodule is not counted as importing
the `__init__` of its parents.

- The contracts hold for every import, those under `if TYPE_CHECKING:` included: a type named in
  a signature ties two layers together as much as a call does.
- Cycles are looked for among the imports that run, at module level and in functions, so not those
  under `if TYPE_CHECKING:` (they never execute, and are how two modules that name each other's
  types get typed). An import moved into a function to dodge a cycle hides it from Python, it does
  not remove it. One cycle is shown per strongly connected group of modules.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

# Event loops, servers and packet capture: only the shells (capture, control, web, client,
# supervisor, cli) use them; the pure core and the shared-memory stages do not.
SHELL_LIBRARIES = (
    "asyncio", "anyio", "pcap", "starlette", "uvicorn", "websockets", "wsproto", "nats",
)  # fmt: skip
# The package is the product: what only tests, benchmarks and examples use lives beside them.
OUTSIDE_PACKAGE = ("tests", "benchmarks", "scripts", "examples")
ADD_IT = "add it to a layer of LEIREYE in tests/layers.py (and to docs/architecture.md)"


@dataclass(frozen=True)
class Layer:
    name: str
    modules: tuple[str, ...]  # each covers its submodules, except the top-level package itself
    may_import: tuple[str, ...]  # other layers; a layer may always import itself
    why: str
    no_shell_libraries: bool = False


STAGES = ("decode", "ring", "stats", "flows", "store", "capture")
LEIREYE: tuple[Layer, ...] = (
    Layer("package", ("leireye",), (), "`leireye/__init__.py` holds only `__version__`", True),
    Layer("text", ("leireye.text",), (), "text helpers with no dependency, wire's included", True),
    Layer(
        "core",
        (
            "leireye.errors",
            "leireye.record",
            "leireye.config",
            "leireye.origins",
            "leireye.exitcodes",
        ),
        ("text",),
        "the error tree, the record dtype, the config schema and the exit codes sit below all",
        True,
    ),
    Layer(
        "process",
        ("leireye.logs", "leireye.privileges", "leireye.proctitle", "leireye.stopping"),
        (
            "core",
            "text",
        ),
        "the processes' plumbing: logging, dropping privileges, process titles, stop signals",
        True,
    ),
    Layer(
        "wire",
        ("leireye.wire",),
        ("text",),
        "shared by sensor and client: imports no other leireye",
        True,
    ),
    Layer(
        "decode",
        ("leireye.decode",),
        (
            "core",
            "text",
        ),
        "pure decoding sees no other stage",
        True,
    ),
    Layer(
        "ring",
        ("leireye.ring",),
        (
            "core",
            "text",
        ),
        "the shared memory knows no stage",
        True,
    ),
    Layer(
        "stats",
        ("leireye.stats",),
        ("core", "text", "process", "ring"),
        "a data-path stage: nothing above the ring",
        True,
    ),
    Layer(
        "flows",
        ("leireye.flows",),
        ("core", "text", "process", "ring", "decode"),
        "a data-path stage: conversations and hosts from the ring, and their history on disk",
        True,
    ),
    Layer(
        "store",
        ("leireye.store",),
        ("core", "text", "process", "ring", "decode"),
        "a data-path stage: whole frames on disk, their index and what reads them back",
        True,
    ),
    Layer(
        "capture",
        ("leireye.capture",),
        ("core", "text", "process", "decode", "ring"),
        "a data-path stage: nothing of web, accounts, control, client, supervisor, cli",
    ),
    Layer(
        "fleet",
        ("leireye.fleet",),
        ("core", "text", "process", "ring", "stats", "flows", "store"),
        "a shell over the stages: publishes a sensor's ring into NATS, ingests a fleet's",
    ),
    Layer(
        "accounts",
        ("leireye.accounts",),
        ("core", "text", "process"),
        "below the web tier and the control channel that use it",
        True,
    ),
    Layer(
        "tls",
        ("leireye.tls",),
        ("core", "text"),
        "the sensor's certificate: made, checked, loaded; below web, supervisor and cli",
        True,
    ),
    Layer(
        "control",
        ("leireye.control",),
        ("core", "text", "accounts"),
        "the supervisor's channel for the web workers; knows neither side",
    ),
    Layer(
        "web",
        ("leireye.web",),
        ("core", "text", "process", "wire", "accounts", "control", "tls", "fleet", *STAGES),
        "above the stages and accounts; below the supervisor",
    ),
    Layer(
        "client",
        ("leireye.client",),
        ("package", "text", "wire"),
        "sees only the wire schema (and the text helpers below it)",
    ),
    Layer(
        "supervisor",
        ("leireye.supervisor",),
        (
            "package",
            "text",
            "core",
            "process",
            "wire",
            "accounts",
            "control",
            "tls",
            "web",
            "fleet",
            *STAGES,
        ),
        "starts every process; only the CLI is above it",
    ),
    Layer(
        "cli",
        ("leireye.cli",),
        (
            "package",
            "text",
            "core",
            "process",
            "wire",
            "accounts",
            "tls",
            "client",
            "supervisor",
            "flows",
            "store",
            "fleet",
        ),
        "the top: the only code that prints and exits; nothing imports it",
    ),
)


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    importer: str
    target: str
    runs: bool  # False under `if TYPE_CHECKING:`


def modules_of(root: Path) -> dict[str, Path]:
    """Module name -> file, for every module of the package in directory `root`."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _shown(path: Path, root: Path) -> Path:
    return path.relative_to(root.parent)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and _is_type_checking(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        runs = id(node) not in type_only
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, module, alias.name, runs)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package[: len(package) - node.level + 1] + base.split(".")
                base = ".".join(part for part in parts if part)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                yield Import(path, node.lineno, module, target if target in modules else base, runs)


def layer_of(module: str, layers: Sequence[Layer], package: str) -> Layer | None:
    best: Layer | None = None
    best_len = -1
    for layer in layers:
        for name in layer.modules:
            covers = module == name or (name != package and module.startswith(name + "."))
            if covers and len(name) > best_len:
                best, best_len = layer, len(name)
    return best


def contract_violations(root: Path, layers: Sequence[Layer]) -> Iterator[str]:
    package, modules = root.name, modules_of(root)
    for module, path in modules.items():
        own = layer_of(module, layers, package)
        if own is None:
            yield f"{_shown(path, root)}: {module} is in no layer: {ADD_IT}"
            continue
        for imp in imports_of(module, path, modules):
            where = f"{_shown(path, root)}:{imp.line}: {module} imports {imp.target}"
            top = imp.target.split(".")[0]
            if top in OUTSIDE_PACKAGE:
                yield f"{where}: the package must not import {top}/ (it is not installed)"
            elif own.no_shell_libraries and top in SHELL_LIBRARIES:
                yield f"{where}: {own.name} uses no event loop, server or pcap (only the shells do)"
            elif top == package:
                target = layer_of(imp.target, layers, package)
                if target is None:
                    yield f"{where}, which is in no layer: {ADD_IT}"
                elif target is not own and target.name not in own.may_import:
                    allowed = "only " + ", ".join(own.may_import) if own.may_import else "no other"
                    yield (
                        f"{where}: {own.name} may import {allowed} ({own.why}); "
                        f"{imp.target} is {target.name}"
                    )


def cycles(root: Path) -> Iterator[str]:
    """One cycle per strongly connected group of modules (Tarjan), over the imports that run."""
    modules = modules_of(root)
    edges: dict[str, dict[str, Import]] = {module: {} for module in modules}
    for module, path in modules.items():
        for imp in imports_of(module, path, modules):
            if imp.runs and imp.target in modules and imp.target != module:
                edges[module].setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group: list[str] = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for module in modules:
        if module not in index:
            visit(module)
    for group in groups:
        start, members = min(group), set(group)
        paths = {start: [start]}
        queue = [start]
        cycle: list[str] = []
        while queue and not cycle:  # breadth first: the shortest way back to `start`
            node = queue.pop(0)
            if start in edges[node]:
                cycle = [*paths[node], start]
            for nxt in sorted(edges[node]):
                if nxt in members and nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    queue.append(nxt)
        sites = ", ".join(
            f"{_shown(edges[a][b].path, root)}:{edges[a][b].line}" for a, b in pairwise(cycle)
        )
        yield f"import cycle: {' -> '.join(cycle)} ({sites})"


def check(root: Path, layers: Sequence[Layer]) -> list[str]:
    return [*contract_violations(root, layers), *cycles(root)]


def table(layers: Sequence[Layer]) -> str:
    rows = [
        "| layer | modules | may import (besides itself) | asyncio, pcap, servers | why |",
        "|---|---|---|---|---|",
    ]
    for layer in layers:
        modules = ", ".join(f"`{name}`" for name in layer.modules)
        allowed = ", ".join(layer.may_import) or "—"
        shell = "no" if layer.no_shell_libraries else "yes"
        rows.append(f"| {layer.name} | {modules} | {allowed} | {shell} | {layer.why} |")
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str]) -> int:
    if list(argv) == ["--table"]:
        print(table(LEIREYE), end="")
        return 0
    problems = check(Path(__file__).resolve().parents[1] / "leireye", LEIREYE)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"layers: {len(problems) or 'no'} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
