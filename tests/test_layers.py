"""The package's layers: every import (inside functions and under TYPE_CHECKING too) points down the order in LAYERS
(the layers of docs/DEVELOPING.md), and no modules import each other in a cycle. Computed from the source with
`ast`, so nothing here depends on what happens to be imported at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "alignctl"

# Lowest first. A module belongs to the longest prefix listed; imports within one layer are free (cycles aside).
LAYERS = (
    ("alignctl.errors", "alignctl.lazy", "alignctl.registry", "alignctl.jsonl", "alignctl.cache",
     "alignctl.constraints", "alignctl.ranks", "alignctl.conf"),  # foundation: no alignctl imports above it
    ("alignctl.divergences",),
    ("alignctl.kernels",),
    ("alignctl.objectives",),
    ("alignctl.models",),
    ("alignctl.rewards",),
    ("alignctl.data",),
    ("alignctl.eval",),
    ("alignctl.trainers",),
    ("alignctl.config",),
    ("alignctl.run",),
    ("alignctl.report",),
    ("alignctl.cli", "alignctl.__main__"),
)  # fmt: skip
MAX_TOP_LEVEL_MODULES = 8  # besides __init__ and __main__


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported alignctl module: first line}; `from a import b` counts as importing a.b when a.b is a
    module, else a; importing one's own parent package does not count (Python runs it first anyway)."""
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].setdefault(target, node.lineno)
    return graph


def layer(module: str) -> int:
    if module == "alignctl":  # the package's own __init__ imports nothing
        return 0
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    if rank is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py")
    return rank


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(import_graph(modules())) == []


def test_imports_point_down_the_layers():
    mods = modules()
    upward = [
        f"{mods[m].relative_to(PACKAGE.parent)}:{line} imports {t}"
        for m, targets in import_graph(mods).items() for t, line in targets.items() if layer(t) > layer(m)
    ]  # fmt: skip
    assert upward == []


def test_few_modules_stand_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The graph sees imports inside functions and under TYPE_CHECKING, relative ones too, and both checks fire."""
    pkg = tmp_path / "alignctl"
    (pkg / "run").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from alignctl.run import a\n")
    (pkg / "run" / "__init__.py").write_text("")
    (pkg / "run" / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n")
    (pkg / "run" / "b.py").write_text("from alignctl import errors\nfrom .a import x\n")
    graph = import_graph(modules(pkg))
    assert graph["alignctl.errors"] == {"alignctl.run.a": 2, "alignctl.run": 2}  # a package's __init__ runs too
    assert graph["alignctl.run.a"] == {"alignctl.run.b": 3}
    assert set(graph["alignctl.run.b"]) == {"alignctl.errors", "alignctl.run.a"}
    assert cycles(graph) == [["alignctl.errors", "alignctl.run.a", "alignctl.run.b"]]
    assert layer("alignctl.errors") < layer("alignctl.run.a")


@pytest.mark.parametrize("module", sorted(modules()))
def test_every_module_has_a_layer(module):
    layer(module)
