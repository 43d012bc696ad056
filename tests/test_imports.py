"""No import cycle between runyard's modules, type-only imports included; no
module over 400 lines.

Every ``import`` statement counts, wherever it stands: at module level, under
``if TYPE_CHECKING:``, or inside a function. A function-local or type-only
import hides a cycle from the interpreter but not from a reader: the two
modules still need each other, so neither can be understood (or moved) alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import runyard

ROOT = Path(runyard.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The runyard modules ``path`` imports: ``from a.b import c`` names ``a.b.c``
    if that is a module, else ``a.b``. A package's ``__init__`` is not counted as
    an import of the package by its own submodules' relative imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_graph_sees_type_only_and_function_local_imports() -> None:
    """The checker itself: an import under TYPE_CHECKING and one inside a function both count."""
    graph = import_graph()
    assert "runyard.events.log" in graph["runyard.context"]  # only under TYPE_CHECKING
    assert "runyard.store" in graph["runyard.cli"]  # only inside _migrate()
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_module_imports_itself_through_others() -> None:
    """A cycle, even a type-only one, means two modules cannot be read or moved apart."""
    assert cycles(import_graph()) == []


MAX_LINES = 400


def test_no_module_passes_400_lines() -> None:
    """A module longer than that holds more than one concern: split it (issue 11)."""
    lengths = {module_name(path): len(path.read_text().splitlines()) for path in sorted(ROOT.rglob("*.py"))}
    assert {module: lines for module, lines in lengths.items() if lines > MAX_LINES} == {}
