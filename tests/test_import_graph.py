"""The packages' import graph: no cycles, and the layers of docs/design.md.

Every import counts, at module level or inside a function (a function-local import
hides a cycle, it does not remove it), and so does ``importlib.import_module("literal")``.
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, to ``pkg``
otherwise.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("landscape", "distill", "cli")
FORBIDDEN = {
    "landscape": ("distill", "cli"),
    "distill": ("landscape", "cli"),
}
WINGS = (
    "operators", "curvature", "sharpness", "surface", "distributed", "compare", "pairs", "tracking"
)  # fmt: skip
"""landscape's wings, lowest first: a lower one never imports a higher one."""


def _module_names() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _module_names()


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute name ``node`` imports from, inside ``module``."""
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported(module: str, tree: ast.AST) -> set[str]:
    """Every name ``module`` imports, anywhere in its body."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                names.add(submodule if submodule in MODULES else source)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def _graph() -> dict[str, set[str]]:
    """Edges between the packages' modules (an import of a non-module is cut to its module)."""
    graph = {}
    for module, path in MODULES.items():
        targets = set()
        for name in _imported(module, ast.parse(path.read_text(), str(path))):
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

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
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, set(component)) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the first member of a strongly connected ``component``."""
    start = min(component)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for target in sorted(graph[path[-1]] & component):
            if target == start:
                return path + [start]
            if target not in seen:
                seen.add(target)
                paths.append(path + [target])
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def test_the_walk_sees_every_kind_of_import():
    source = """
from landscape.curvature import measure
from landscape.operators.base import CurvatureOperator
from .. import errors
def f():
    import distill.data
    importlib.import_module("cli.main")
"""
    found = _imported("landscape.operators.base", ast.parse(source))
    assert found == {
        "landscape.curvature.measure",
        "landscape.operators.base",
        "landscape.errors",
        "distill.data",
        "cli.main",
    }
    assert "landscape.curvature.measure" in _graph()["landscape.curvature.model"]


def test_the_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_layers_of_the_design():
    leaks = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in sorted(targets)
        for forbidden in FORBIDDEN.get(module.partition(".")[0], ())
        if target == forbidden or target.startswith(forbidden + ".")
    ]
    assert not leaks, "\n".join(leaks)


def test_lower_wings_of_landscape_never_import_higher_ones():
    def wing(module: str) -> int | None:
        parts = module.split(".")
        in_wing = parts[0] == "landscape" and len(parts) > 1 and parts[1] in WINGS
        return WINGS.index(parts[1]) if in_wing else None

    upward = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in sorted(targets)
        if wing(module) is not None and wing(target) is not None and wing(target) > wing(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_layer_names_a_higher_one_in_a_string():
    """A module path in a string is a dependency too (``"distill.losses"`` in a lookup)."""
    named = [
        f"{module} names {node.value!r}"
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        for forbidden in FORBIDDEN.get(module.partition(".")[0], ())
        if re.fullmatch(rf"{forbidden}(\.\w+)*", node.value)
    ]
    assert not named, "\n".join(named)
