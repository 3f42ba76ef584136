"""The package's imports point one way: no module imports, even late inside a function, a
module that imports it back (directly or through others)."""

from __future__ import annotations

import ast
from pathlib import Path

import ferkit

ROOT = Path(ferkit.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """ferkit modules imported anywhere in the file (function bodies included, TYPE_CHECKING not)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name in modules:
                found.add(name)
    return found


def _raw_graph() -> dict[str, set[str]]:
    """Every import, a submodule's import of its own package (``from ferkit.methods import x`` in
    ``ferkit.methods.ce``) included: the package's ``__init__`` may import that submodule back."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    return {m: _imports(p, modules) - {m} for m, p in files.items()}


def _graph() -> dict[str, set[str]]:
    graph = _raw_graph()
    for m in graph:  # importing a.b.c runs the __init__ of a.b as well; a package's __init__ is not its children
        graph[m] = {d for d in graph[m] if not m.startswith(d + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_even_inside_functions():
    assert _cycles(_raw_graph()) == []  # registries live in their own module, below the package's __init__


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lower_layers_never_import_upper_ones():
    graph = _graph()
    lower = ("ferkit.labels", "ferkit.data", "ferkit.models", "ferkit.zoo", "ferkit.errors", "ferkit.atomic",
             "ferkit.metrics", "ferkit.registry", "ferkit.torch_files")
    upper = ("ferkit.engine", "ferkit.methods", "ferkit.inference", "ferkit.evaluation", "ferkit.serve",
             "ferkit.experiments", "ferkit.cli")
    bad = sorted(f"{m} -> {d}" for m, deps in graph.items() if m.startswith(lower)
                 for d in deps if d.startswith(upper))
    assert bad == []
    engine_up = sorted(f"{m} -> {d}" for m, deps in graph.items() if m.startswith("ferkit.engine")
                       for d in deps if d.startswith(("ferkit.inference", "ferkit.evaluation", "ferkit.serve",
                                                      "ferkit.cli")))
    assert engine_up == []
    # ferkit.experiments (the grid runner) sits above engine / methods / evaluation / inference and below the cli
    experiments_up = sorted(f"{m} -> {d}" for m, deps in graph.items() if m.startswith("ferkit.experiments")
                            for d in deps if d.startswith(("ferkit.cli", "ferkit.serve")))
    assert experiments_up == []
    into_experiments = sorted(f"{m} -> {d}" for m, deps in graph.items()
                              if not m.startswith(("ferkit.experiments", "ferkit.cli"))
                              for d in deps if d.startswith("ferkit.experiments"))
    assert into_experiments == []
