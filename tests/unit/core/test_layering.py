"""Static rules over src/kelpie: layers import downwards only; time, randomness and ids are injected."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).parents[3] / "src" / "kelpie"

# Lower number = lower layer. A module may import its own layer and those below, never above.
LAYERS = {
    "errors": 0,
    "limits": 0,
    "env": 0,
    "ids": 0,
    "storage": 1,
    "actors": 2,
    "sandbox": 3,
    "memory": 4,
    "tools": 4,
    "llm": 4,
    "agents": 5,
    "server": 6,
    "client": 6,
    "integrations": 6,
    "cli": 7,
    "__main__": 7,
    # Beside everything: they may import any layer, and production layers never import them.
    "sim": 8,
    "bench": 8,
    "testing": 8,
}
BESIDE = {"sim", "bench", "testing"}

# Calls that production code must take from kelpie.env.Env instead.
BANNED_CALLS = {
    ("time", "time"),
    ("time", "sleep"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("uuid", "uuid4"),
    ("uuid", "uuid1"),
    ("asyncio", "sleep"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("random", "random"),
    ("random", "randint"),
    ("random", "choice"),
    ("random", "uniform"),
    ("random", "shuffle"),
}
ENV_MODULES = {"env"}  # where the real clock and randomness live


def layer_of(module_path: Path) -> str:
    relative = module_path.relative_to(SOURCE)
    return relative.parts[0].removesuffix(".py") if relative.parts[0] != "__init__.py" else "errors"


def imported_layers(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "kelpie" and len(parts) > 1:
                found.add(parts[1])
    return found


def python_files() -> list[Path]:
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 10, files
    return files


def test_layers_import_downwards_only() -> None:
    violations = []
    for path in python_files():
        layer = layer_of(path)
        assert layer in LAYERS, f"{path} is in no known layer; add {layer!r} to LAYERS"
        for imported in imported_layers(ast.parse(path.read_text())):
            assert imported in LAYERS, f"{path} imports unknown layer {imported!r}"
            if imported in BESIDE:
                if layer not in BESIDE | {"cli"}:  # the CLI runs bench and sim
                    violations.append(f"{path}: production layer {layer} imports {imported}")
            elif layer not in BESIDE and LAYERS[imported] > LAYERS[layer]:
                violations.append(f"{path}: {layer} imports the higher layer {imported}")
    assert violations == []


def test_time_randomness_and_ids_are_injected() -> None:
    violations = []
    for path in python_files():
        if layer_of(path) in ENV_MODULES | BESIDE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and (node.func.value.id, node.func.attr) in BANNED_CALLS
            ):
                violations.append(f"{path}:{node.lineno}: {node.func.value.id}.{node.func.attr}()")
    assert violations == []


def test_the_checks_can_fail(tmp_path: Path) -> None:
    tree = ast.parse("import time\nfrom kelpie.server import app\ntime.time()\n")
    assert imported_layers(tree) == {"server"}
    calls = [
        (node.func.value.id, node.func.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
    ]
    assert ("time", "time") in calls
    assert ("time", "time") in BANNED_CALLS
