"""The project's modules import one another one way: no cycle, counting every import.

Imports inside functions count too: an import moved into a function to dodge a cycle
still makes one. Imports under ``if TYPE_CHECKING:`` never run and are left out.
Layers (DESIGN.md): settings and pipelines import nothing of the project but the error
root; ``db`` never imports ``workers``, ``web`` or ``cli``; ``workers`` never imports
``web`` or ``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Top-level names that are the project's own code (tests and benchmarks excluded).
PACKAGES = ("settings", "pipelines", "errors", "db", "workers", "web", "cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    modules = {}
    for top in PACKAGES:
        single = ROOT / f"{top}.py"
        if single.exists():
            modules[top] = single
        for path in (ROOT / top).rglob("*.py") if (ROOT / top).is_dir() else ():
            if "migrations" not in path.parts:
                modules[_module_name(path)] = path
    return modules


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Return the project modules that ``path`` imports anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _executed_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {module for module in found if module in modules and module != name}


def _executed_nodes(tree: ast.AST) -> list[ast.AST]:
    """Return every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def import_graph() -> dict[str, set[str]]:
    """Return each project module's imports of other project modules."""
    modules = _project_modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_is_read_from_the_code() -> None:
    # Given the project's modules, then the graph sees their real imports.
    graph = import_graph()
    assert "db.engine" in graph["db"]
    assert "pipelines" in graph["db.jobs"]


def test_no_module_imports_itself_back_through_others() -> None:
    assert _cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_import_one_way() -> None:
    below = {
        "settings": {"errors"},
        "errors": set(),
        "pipelines": {"errors"},
        "db": {"settings", "pipelines", "errors", "db"},
        "workers": {"settings", "pipelines", "errors", "db", "workers"},
    }
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if (layer := module.split(".")[0]) in below and target.split(".")[0] not in below[layer]
    ]
    assert wrong == []
