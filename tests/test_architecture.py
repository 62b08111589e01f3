"""The import graph of services/scoring, read from the source (ast, nothing is imported): no
cycle between modules, nothing outside the CLI imports it, and the gateway reaches the model
registry through its plain types only, never the SQL store."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "services"
# The gateway's wiring: the one gateway module that builds the registry store and hands it in.
GATEWAY_WIRING = "scoring.gateway.__main__"
# What the gateway may import from the registry: its plain types and the RoutingSource protocol.
GATEWAY_REGISTRY_API = "scoring.registry.types"
# Database libraries the gateway never touches itself.
DATABASE_LIBRARIES = ("sqlalchemy", "alembic")

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.Module, name: str, is_package: bool) -> Iterator[str]:
    """Every module name `tree` imports, at any depth (functions and TYPE_CHECKING included):
    `from a import b` yields `a.b` and `a` (which of them is a module is decided later)."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(root: Path) -> tuple[Graph, Graph]:
    """(edges between the modules under `root`, every import of each module) from the source."""
    trees = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        trees[name] = (ast.parse(path.read_text(), str(path)), path.name == "__init__.py")
    internal: Graph = {}
    everything: Graph = {}
    for name, (tree, is_package) in trees.items():
        targets = set(imported(tree, name, is_package))
        everything[name] = targets
        internal[name] = {t for t in targets if t in trees and t != name}
    return internal, everything


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def path_to(graph: Graph, start: str, forbidden: str) -> list[str] | None:
    """An import chain from `start` to `forbidden` or a module inside it (None: there is none)."""
    seen = {start}
    frontier = [[start]]
    while frontier:
        chain = frontier.pop(0)
        for nxt in sorted(graph.get(chain[-1], ())):
            if nxt == forbidden or nxt.startswith(forbidden + "."):
                return [*chain, nxt]
            if nxt not in seen:
                seen.add(nxt)
                frontier.append([*chain, nxt])
    return None


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.fixture(scope="module")
def graphs() -> tuple[Graph, Graph]:
    return import_graph(SOURCE)


def test_the_walk_sees_the_whole_package(graphs: tuple[Graph, Graph]) -> None:
    internal, _ = graphs
    assert {"scoring.gateway.servicer", "scoring.registry.store", "scoring.core.model_io"} <= set(
        internal
    )
    assert "scoring.core.model_io" in internal["scoring.gateway.routing"]


def test_no_import_cycle(graphs: tuple[Graph, Graph]) -> None:
    internal, _ = graphs
    assert cycles(internal) == [], "modules that import each other (directly or around a loop)"


def test_nothing_outside_the_cli_imports_it(graphs: tuple[Graph, Graph]) -> None:
    # The CLI is one module (scoring/cli.py) or a package (scoring/cli/): the same name either way.
    internal, _ = graphs
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in internal.items()
        if not in_package(module, "scoring.cli")
        for target in targets
        if in_package(target, "scoring.cli")
    )
    assert offenders == []


def test_the_gateway_reaches_the_registry_through_its_types_only(
    graphs: tuple[Graph, Graph],
) -> None:
    internal, everything = graphs
    gateway = sorted(
        m for m in internal if in_package(m, "scoring.gateway") and m != GATEWAY_WIRING
    )
    assert gateway, "no gateway modules found"
    problems = []
    for module in gateway:
        for target in sorted(everything[module]):
            registry_module = in_package(target, "scoring.registry") and target in internal
            if registry_module and target != GATEWAY_REGISTRY_API:
                problems.append(f"{module} imports {target}, not {GATEWAY_REGISTRY_API}")
            if any(in_package(target, lib) for lib in DATABASE_LIBRARIES):
                problems.append(f"{module} imports {target}")
        chain = path_to(internal, module, "scoring.registry.store")
        if chain is not None:
            problems.append(" -> ".join(chain))
    assert problems == []


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    # A small tree with each fault once: a cycle through a relative import, and a chain into a
    # forbidden module two hops away.
    pkg = tmp_path / "app"
    pkg.mkdir()
    files = {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "def f() -> None:\n    from app.a import x\n",
        "c.py": "import app.d\n",
        "d.py": "from app.store import Store\n",
        "store.py": "import sqlalchemy\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    internal, everything = import_graph(tmp_path)
    assert cycles(internal) == [["app.a", "app.b"]]
    assert path_to(internal, "app.c", "app.store") == ["app.c", "app.d", "app.store"]
    assert path_to(internal, "app.store", "app.c") is None
    assert "sqlalchemy" in everything["app.store"]
