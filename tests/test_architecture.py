"""The package's layers: a lower layer never imports a higher one (checked on every module's imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "artlab"

#: Bottom to top. A module may import its own area and any lower rank, never a higher or a sibling area
#: of the same rank (data and models are independent; training and analysis never import each other).
RANKS = {
    "artlab.version": 0, "artlab.io": 0, "artlab.cache": 0, "artlab.progress": 0, "artlab.lazy": 0,
    "artlab.data": 1, "artlab.models": 1,
    "artlab.plots": 2,  # drawing kit over tables and image files
    "artlab.runs": 3, "artlab.features": 3,  # the run store; pooled features with their disk cache
    "artlab.training": 4, "artlab.analysis": 4, "artlab.interpret": 4,  # side by side
    "artlab.experiments": 5,
    "artlab.widgets": 6,
    "artlab.tools": 7,  # tooling above the science layers: the headless notebook runner, below the cli that calls
    # it, and the plugin of artlab's own tests
    "artlab.cli": 8, "artlab.__main__": 9, "artlab": 9,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def area(module: str) -> str:
    """The layer area a module belongs to: the longest RANKS key that prefixes it."""
    candidates = [key for key in RANKS if module == key or module.startswith(key + ".")]
    if not candidates:
        raise AssertionError(f"{module} belongs to no layer: add it to RANKS in {__file__}")
    return max(candidates, key=len)


def imported_modules(path: Path) -> set[str]:
    """Every artlab module a file imports, at any depth (function-level imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level > 0:  # relative: resolve against this module
            base = path.relative_to(PACKAGE.parent).parent.parts
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            module = ".".join(base + tuple(filter(None, [node.module])))
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names
                                 if (PACKAGE.parent / module.replace(".", "/") / f"{alias.name}.py").is_file()
                                 or (PACKAGE.parent / module.replace(".", "/") / alias.name).is_dir()}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            folder = PACKAGE.parent / node.module.replace(".", "/")
            for alias in node.names:  # `from artlab import models` imports the subpackage artlab.models
                is_module = (folder / alias.name).is_dir() or (folder / f"{alias.name}.py").is_file()
                found.add(f"{node.module}.{alias.name}" if is_module else node.module)
    return {name for name in found if name == "artlab" or name.startswith("artlab.")}


def violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        mine = area(module)
        for target in imported_modules(path):
            theirs = area(target)
            if theirs == "artlab" and target == "artlab" and mine != "artlab":
                problems.append(f"{module} imports the package root (import the module it needs)")
            elif theirs != mine and RANKS[theirs] >= RANKS[mine]:
                problems.append(f"{module} (layer {mine}, rank {RANKS[mine]}) imports {target} "
                                f"(layer {theirs}, rank {RANKS[theirs]})")
    return problems


def import_graph() -> dict[str, set[str]]:
    """Every artlab module -> the artlab modules it imports, at any depth (function-level imports included)."""
    return {_module_name(path): imported_modules(path) - {_module_name(path)} for path in sorted(PACKAGE.rglob("*.py"))}


def circles() -> list[str]:
    """Import circles inside one area (A imports B, B imports A, at any depth), one line each: the shortest
    circle through the first module (by name) of each strongly connected group, e.g. "a -> b -> a"."""
    graph = import_graph()
    inside = {module: sorted(t for t in targets if t in graph and area(t) == area(module))
              for module, targets in graph.items()}
    found = []
    for group in _strongly_connected(inside):
        start = min(group)
        paths, queue = {start: [start]}, [start]  # breadth first from start, back to it within the group
        while queue:
            module = queue.pop(0)
            for target in inside[module]:
                if target == start:
                    queue = []
                    found.append(" -> ".join(paths[module] + [start]))
                    break
                if target in group and target not in paths:
                    paths[target] = paths[module] + [target]
                    queue.append(target)
    return sorted(found)


def _strongly_connected(graph: dict[str, list[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_layer_imports_a_higher_or_sibling_layer():
    assert violations() == []


def test_no_import_circle_inside_an_area():
    assert circles() == []


def test_every_module_belongs_to_a_layer():
    for path in PACKAGE.rglob("*.py"):
        area(_module_name(path))


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    """A data module importing training must be reported (the check can fail)."""
    fake = tmp_path / "artlab"
    (fake / "data").mkdir(parents=True)
    (fake / "training").mkdir()
    (fake / "data" / "bad.py").write_text("from artlab.training import train\n")
    (fake / "data" / "sneaky.py").write_text("from ..training import train\n")
    (fake / "training" / "__init__.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert violations() == ["artlab.data.bad (layer artlab.data, rank 1) imports artlab.training "
                            "(layer artlab.training, rank 4)",
                            "artlab.data.sneaky (layer artlab.data, rank 1) imports artlab.training "
                            "(layer artlab.training, rank 4)"]


def test_the_checker_catches_a_circle_inside_an_area(tmp_path, monkeypatch):
    """data.a imports data.b at module level, data.b imports data.c in a function and data.c imports data.a:
    one circle, reported from its first module; data.d importing data.a is outside it."""
    fake = tmp_path / "artlab"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "a.py").write_text("from artlab.data.b import thing\n")
    (fake / "data" / "b.py").write_text("def thing():\n    from . import c\n    return c\n")
    (fake / "data" / "c.py").write_text("import artlab.data.a\n")
    (fake / "data" / "d.py").write_text("from artlab.data import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert circles() == ["artlab.data.a -> artlab.data.b -> artlab.data.c -> artlab.data.a"]
    assert violations() == []  # within one area: the layer check alone does not see it


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_special_architectures_live_in_the_registry(name):
    """No `if name == ...` branches: what differs is data in the architecture's entry."""
    source = "".join(p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "registry.py")
    assert f'"{name}"' not in source and f"'{name}'" not in source


def test_public_api_names_resolve():
    import artlab

    for name in artlab.__all__:
        assert getattr(artlab, name) is not None, name
    from artlab import train

    assert callable(train) and train.__module__ == "artlab.training.api"
