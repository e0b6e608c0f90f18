"""The shape the design asks for, checked on the source: the import graph of the
daemon package has no cycles, and only the worker imports the backends."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "daemon" / "rkllmd"


def _module(path: Path) -> str:
    parts = ["rkllmd", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """Modules of the package imported at module level (imports inside functions
    cannot form an import-time cycle)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield target
            # `from pkg import name` may name a submodule as well as an attribute.
            yield from (f"{target}.{alias.name}" for alias in node.names)


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        graph[_module(path)] = {m for m in _imports(path) if _exists(m)}
    return graph


def test_only_the_worker_imports_backends() -> None:
    offenders = sorted(
        f"{mod} imports {dep}"
        for mod, deps in _graph().items()
        if not mod.startswith(("rkllmd.backends", "rkllmd.worker"))
        for dep in deps
        if dep.startswith("rkllmd.backends")
    )
    assert offenders == []


def test_the_import_graph_has_no_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            # A package's __init__ importing its own modules is not a cycle back to it.
            if dep.startswith(node + "."):
                continue
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
