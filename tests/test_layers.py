"""The package's import graph: no cycles, no imports hidden in functions to dodge one, and the layering
rules of docs/architecture.md (analysis is pure, the database layer knows no one, the schema never
reaches for the process's wiring)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "graphql_api"

# Imports inside a function that are not about a cycle: optional or heavy dependencies loaded only when
# used, and the CLI, which imports each command's modules only when that command runs.
LAZY_ALLOWED = {
    ("graphql_api.services", "graphql_api.analysis.gemini"),  # google-genai only with GEMINI_API_KEY
    ("graphql_api.services", "graphql_api.analysis.batch"),
    ("graphql_api.services", "graphql_api.analysis.offline"),
}
LAZY_ALLOWED_MODULES = {"graphql_api.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(imports at module level, imports inside functions) of graphql_api modules, TYPE_CHECKING blocks left out."""
    tree = ast.parse(path.read_text())
    module = _module_name(path)
    top: set[str] = set()
    nested: set[str] = set()

    def targets(node: ast.AST) -> set[str]:
        found = set()
        if isinstance(node, ast.Import):
            found = {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                package = parts[: len(parts) - node.level + (path.name == "__init__.py")]
                base = ".".join(package + ([base] if base else []))
            # `from graphql_api.schema import types` imports the module types; `from x import name`, the module x.
            submodules = {f"{base}.{alias.name}" for alias in node.names
                          if (PACKAGE.parent / Path(*f"{base}.{alias.name}".split("."))).with_suffix(".py").exists()}
            found = submodules or {base}
        return {name for name in found if name == "graphql_api" or name.startswith("graphql_api.")}

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (nested if in_function else top).update(targets(child))
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    walk(tree, False)
    return top, nested


def _graph() -> dict[str, tuple[set[str], set[str]]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        if "static" in path.parts:
            continue
        modules[_module_name(path)] = _imports(path)
    return modules


GRAPH = _graph()


def _resolve(name: str) -> str:
    """An imported name's module: `graphql_api.schema.types.Agent` is not a module, `graphql_api.schema.types` is."""
    while name not in GRAPH and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def test_the_import_graph_has_no_cycles() -> None:
    edges = {m: {_resolve(t) for t in top} - {m} for m, (top, _) in GRAPH.items()}
    # A package imports its submodules' parents implicitly; `graphql_api` itself imports nothing here.
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if seen.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in seen:
                visit(nxt, path + [nxt])
        seen[node] = 2

    for module in sorted(edges):
        if module not in seen:
            visit(module, [module])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_import_hides_in_a_function() -> None:
    hidden = sorted(
        (module, _resolve(target))
        for module, (_, nested) in GRAPH.items()
        if module not in LAZY_ALLOWED_MODULES
        for target in nested
        if (module, _resolve(target)) not in LAZY_ALLOWED
    )
    assert hidden == []


@pytest.mark.parametrize(
    "layer, may_import",
    [
        ("graphql_api.analysis", {"graphql_api.analysis", "graphql_api.errors"}),  # pure: conversation + config in, outcome out
        ("graphql_api.db", {"graphql_api.config"}),
        ("graphql_api.errors", set()),
        ("graphql_api.inputs", {"graphql_api.errors"}),
        ("graphql_api.conversations", {"graphql_api.analysis"}),
        ("graphql_api.schema", {"graphql_api.schema", "graphql_api.analysis", "graphql_api.errors", "graphql_api.inputs",
                                "graphql_api.conversations", "graphql_api.agents", "graphql_api.analyses", "graphql_api.reruns",
                                "graphql_api.db", "graphql_api.config", "graphql_api.workspaces"}),
    ],
)
def test_layers_import_only_what_they_may(layer: str, may_import: set[str]) -> None:
    wrong = sorted(
        (module, target)
        for module, (top, nested) in GRAPH.items()
        if module == layer or module.startswith(layer + ".")
        for target in top | nested
        if not any(_resolve(target) == allowed or _resolve(target).startswith(allowed + ".") for allowed in may_import)
    )
    assert wrong == []


def test_only_the_cli_builds_the_app() -> None:
    importers = sorted(m for m, (top, nested) in GRAPH.items() if any(_resolve(t) == "graphql_api.app" for t in top | nested))
    assert importers == ["graphql_api.__main__"]
