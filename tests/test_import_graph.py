"""The package's shape: no import cycles, and no stage importing a later one.

Every import is counted: module level, inside functions, and under ``TYPE_CHECKING``. The
layer order is the one docs/architecture.md draws; a module may import its own subpackage
and any earlier layer, never a later one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "syncsvc"

LAYERS = (
    "core",
    "db",
    "observe",
    "embed",
    "providers",
    "store",
    "capture",
    "queue",
    "search",
    "jobs",
    "daemon",
    "web",
    "ops",
    "api",
    "integrations",
    "simulator",
    "cli",
)
"""Subpackages, lowest first. The modules at the package top (``syncsvc/__init__.py``,
``__main__``) are above them all."""

TOP = len(LAYERS)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).parts
        if relative[0] in ("migrations", "sql"):
            continue  # symlinks to the repository's alembic and SQL trees, not the package
        found[module_name(path)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[int, str]]:
    """(line, module) of every syncsvc module ``name`` imports, wherever the import is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" for alias in node.names] or [source]
            targets = [t if t in known else source for t in targets]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield node.lineno, target


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    edges: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        edges[name] = {}
        for line, target in imported(name, path, known):
            edges[name].setdefault(target, line)
    return edges


def layer(name: str) -> int:
    parts = name.split(".")
    if len(parts) < 3 and not (len(parts) == 2 and parts[1] in LAYERS):
        return TOP  # syncsvc, syncsvc.__main__
    return LAYERS.index(parts[1])


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_graph_is_read() -> None:
    edges = graph()
    # Sanity: the parser sees module-level, function-local and TYPE_CHECKING imports.
    assert "syncsvc.daemon.process" in edges["syncsvc.ops.wiring"]  # TYPE_CHECKING
    assert "syncsvc.capture.targets" in edges["syncsvc.ops.migrate"]  # inside a function
    assert "syncsvc.core.errors" in edges["syncsvc.db.database"]


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_every_subpackage_has_a_layer() -> None:
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(LAYERS)


def test_no_import_goes_up_the_layers() -> None:
    upward = [
        f"{name} (layer {LAYERS[layer(name)]}) imports {target} on line {line}"
        for name, targets in graph().items()
        if layer(name) < TOP
        for target, line in targets.items()
        if layer(target) > layer(name)
    ]
    assert upward == []


def test_only_the_wiring_and_the_cli_know_the_daemon() -> None:
    allowed = {"syncsvc.ops.wiring", "syncsvc.cli", "syncsvc.daemon"}
    users = sorted(
        name
        for name, targets in graph().items()
        if "syncsvc.daemon.process" in targets
        and not any(name == a or name.startswith(f"{a}.") for a in allowed)
    )
    assert users == []


def test_no_module_reaches_into_private_names() -> None:
    """``x._name`` only on ``self``/``cls``; no ``from syncsvc... import _name``."""
    reaches = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                reaches.append(f"{name}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("syncsvc"):
                reaches += [
                    f"{name}:{node.lineno} import {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert reaches == []
