"""The package tree is the architecture (docs/architecture.md): each layer imports only the layers
below it, and no module imports another that imports it back, at the top of a file or inside a
function. Imports under `if TYPE_CHECKING:` name types only and are left out."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

import simcost

PACKAGE = Path(simcost.__file__).parent
LAYERS = ["data", "errors", "files", "jit_helper", "numba_cache", "portable_math", "rng", "units", "yamlio", "catalog", "scenario", "workload", "perf", "cost", "engine", "cluster",
          "metrics", "simulation", "results", "analysis", "cli", "api", "api_plans"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, modules: set[str]) -> dict[str, int]:
    """{imported simcost module: line} of every import that runs (top level or lazy)."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test)
                 for n in ast.walk(node)}
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("simcost."):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found[sub if sub in modules else node.module] = node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("simcost."):
                    found[alias.name] = node.lineno
    return found


def import_graph() -> dict[str, dict[str, int]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {m: {d: line for d, line in runtime_imports(p, modules).items() if d in modules and d not in (m, "simcost")}
            for m, p in paths.items()}


def layer(module: str) -> str:
    return module.split(".")[1]


def test_every_package_is_a_known_layer():
    graph = import_graph()
    unknown = sorted({layer(m) for m in graph if m != "simcost"} - set(LAYERS))
    assert not unknown, f"packages missing from LAYERS and docs/architecture.md: {unknown}"


def test_no_layer_imports_a_layer_above_it():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [f"{m} line {line} imports {d}" for m, deps in import_graph().items() if m != "simcost"
              for d, line in deps.items() if rank[layer(d)] > rank[layer(m)]]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = {m: set(deps) for m, deps in import_graph().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path):
    """The graph reader finds lazy imports and skips TYPE_CHECKING ones (so the tests above can fail)."""
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from simcost.cli.main import main\n"
                   "def f():\n    from simcost.analysis.sweep import sweep\n")
    assert runtime_imports(src, {"simcost.analysis.sweep", "simcost.cli.main"}) == {"simcost.analysis.sweep": 5}


# What the repository's top level holds: the project's folders and files, nothing a run left behind
# (a run's figures once got committed there by `git add -A`).
TOP_LEVEL = {".ci", ".gitattributes", ".gitignore", "LICENSE", "README.md", "configs", "docs", "experiments",
             "mkdocs.yml", "pyproject.toml", "simcost", "tests"}


def test_the_top_level_holds_only_the_project():
    root = PACKAGE.parent
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: nothing tracked to check")
    stray = sorted({line.split("/", 1)[0] for line in listed.splitlines()} - TOP_LEVEL)
    assert not stray, f"tracked at the top level, not part of the project: {stray}"
