"""The layout of ops/: layer packages that import only downwards, modules of a readable
size, and no import cycles between modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

OPS = Path(__file__).resolve().parents[2] / "ops"
#: Bottom to top: a module may import from its own layer and the layers before it.
LAYERS = ("base", "clients", "server", "release", "operations", "testing", "chaos")
#: Programs the toolkit runs as processes: they import nothing from the toolkit.
STANDALONE = "programs"
MAX_LINES = 600


def modules() -> dict[str, Path]:
    """Every module under ops/, by dotted name."""
    found = {}
    for path in sorted(OPS.rglob("*.py")):
        parts = path.relative_to(OPS.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def ops_imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The ops modules a file imports (`from ops.x import y` counts ops.x.y when that is
    a module, else ops.x)."""
    known = modules()
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ops"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ops"))
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 else None


def upward_imports(files: dict[str, Path]) -> list[str]:
    """`module -> imported` for every import of a higher layer or, from a program, of the
    toolkit at all."""
    found = []
    for name, path in files.items():
        layer = layer_of(name)
        for imported in sorted(ops_imports(path)):
            target = layer_of(imported)
            if layer == STANDALONE and imported != "ops.programs":
                found.append(f"{name} -> {imported}")
            elif layer in LAYERS and target in LAYERS:
                if LAYERS.index(target) > LAYERS.index(layer):
                    found.append(f"{name} -> {imported}")
            elif layer in LAYERS and target is None and imported != "ops":
                found.append(f"{name} -> {imported} (outside every layer)")
    return found


def test_every_module_sits_in_a_layer() -> None:
    loose = [
        name for name in modules() if name != "ops" and layer_of(name) not in (*LAYERS, STANDALONE)
    ]
    assert loose == []


def test_layers_import_only_downwards() -> None:
    assert upward_imports(modules()) == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    base = tmp_path / "errors.py"
    base.write_text("from ops.testing.load import drive\n")
    program = tmp_path / "gateway.py"
    program.write_text("import ops.base.errors\n")
    found = upward_imports({"ops.base.errors": base, "ops.programs.gateway": program})
    assert found == [
        "ops.base.errors -> ops.testing.load",
        "ops.programs.gateway -> ops.base.errors",
    ]


@pytest.mark.parametrize("name", [*sorted(modules()), "tasks"])
def test_modules_stay_readable(name: str) -> None:
    path = OPS.parent / "tasks.py" if name == "tasks" else modules()[name]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by job"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module-level import cycle, each once, as a path that returns to its start."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                key = frozenset(path)
                if key not in seen:
                    seen.add(key)
                    found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return found


def test_no_module_level_import_cycles() -> None:
    """Cycles through function-level imports are not looked for here: the layering test
    above counts those imports, and none of them is upward."""
    files = modules()
    graph = {
        name: {m for m in ops_imports(path, top_level_only=True) if m in files and m != name}
        for name, path in files.items()
    }
    assert cycles(graph) == []


def test_the_cycle_check_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
