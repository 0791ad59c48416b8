"""The layering of shared/STYLE.md, enforced: core modules import neither textual nor
twisted, and the UI imports neither twisted nor sklearn. Each check imports the
modules in a fresh interpreter and looks at what got loaded."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import netmon
from tests.conftest import ROOT

CORE = ["netmon.model", "netmon.pcapstream", "netmon.batch", "netmon.flows",
        "netmon.features", "netmon.cluster", "netmon.pcapwrite", "netmon.synth",
        "netmon.framering", "netmon.filterlang", "netmon.flowquery", "netmon.export",
        "netmon.dissect"]


def loaded_after_import(modules: list[str]) -> set[str]:
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    return set(json.loads(out))


def existing(modules: list[str]) -> list[str]:
    names = {m.name for m in pkgutil.iter_modules(netmon.__path__)}
    return [m for m in modules if m.split(".")[1] in names]


def test_core_modules_import_neither_textual_nor_twisted() -> None:
    loaded = loaded_after_import(existing(CORE))
    assert "textual" not in loaded
    assert "twisted" not in loaded


def test_ui_imports_neither_twisted_nor_sklearn() -> None:
    ui = [f"netmon.ui.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "netmon" / "ui")])]
    if not ui:
        pytest.skip("no netmon.ui package yet")
    loaded = loaded_after_import(["netmon.ui", *ui])
    assert "twisted" not in loaded
    assert "sklearn" not in loaded
