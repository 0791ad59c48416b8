"""The layering, enforced three ways: import-linter's contracts in pyproject.toml (the
layers, what the UI and the pure layers may import), no import cycle between modules
(counting imports inside functions and under TYPE_CHECKING), and, at run time, what a
fresh interpreter has loaded after importing a layer."""

from __future__ import annotations

import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import netmon
from tests.conftest import ROOT

#: Packages below the sources: pure, usable from any thread that owns the object.
PURE = ["core", "ingest", "netflow", "names", "flows", "cluster", "export"]


def modules_of(*packages: str) -> list[str]:
    names = []
    for pkg in packages:
        path = [str(Path(netmon.__path__[0]) / pkg.replace(".", "/"))]
        names.append(f"netmon.{pkg}")
        names += [m.name for m in pkgutil.walk_packages(path, f"netmon.{pkg}.")]
    return names


def loaded_after_import(modules: list[str]) -> set[str]:
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    return set(json.loads(out))


def test_import_linter_contracts_are_kept() -> None:
    tool = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if tool is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    run = subprocess.run([tool, "--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_no_import_cycles_between_modules() -> None:
    graph = grimp.build_graph("netmon", cache_dir=None)
    mods = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            comp.append(v)
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for m in mods:
        if m not in index:
            visit(m)
    assert cycles == []


def test_pure_layers_load_neither_textual_nor_twisted() -> None:
    loaded = loaded_after_import(modules_of(*PURE))
    assert "textual" not in loaded
    assert "twisted" not in loaded


def test_ui_imports_neither_twisted_nor_sklearn() -> None:
    loaded = loaded_after_import(modules_of("ui"))
    assert "twisted" not in loaded
    assert "sklearn" not in loaded


def test_light_ui_modules_do_not_start_textual() -> None:
    # The package __init__ is lazy (PEP 562), so the formatters load alone.
    assert "textual" not in loaded_after_import(["netmon.ui.format"])
