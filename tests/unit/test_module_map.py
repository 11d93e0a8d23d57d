"""The module map of docs/architecture.md, kept true: which top-level package may import which
(every import, also those inside functions), and no import cycle between modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# package -> the project's packages it may import (third-party ones are not restricted here).
ALLOWED = {
    "include": {"include"},
    "spark_apps": {"include", "spark_apps"},
    "dags": {"include", "dags"},
    "plugins": {"include", "plugins"},
    "dashboard": {"include", "dashboard"},
    "devstack": {"include", "devstack"},  # an app's command line: include/spark/jobs.py
    "bench": {"include", "devstack", "bench"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from a import b`` counts ``a`` and ``a.b``)."""
    out: dict[str, set[str]] = {}
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            names: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module)
                    names.update(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
            out[module_name(path)] = {n for n in names if n.split(".")[0] in ALLOWED}
    return out


def test_each_package_imports_only_what_the_map_allows():
    wrong = sorted(
        f"{module} imports {name}"
        for module, names in imports().items()
        for name in names
        if name.split(".")[0] not in ALLOWED[module.split(".")[0]]
    )
    assert not wrong, wrong


def test_no_import_cycles():
    graph = imports()
    graph = {m: {n for n in names if n in graph and n != m} for m, names in graph.items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for dep in sorted(graph[module]):
            if seen.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in seen:
                visit(dep, [*path, dep])
        seen[module] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    assert not cycles, cycles
