"""The two layers stay apart: the library never imports the WebUI; the host glue holds no model code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST_MODULES = {"modules", "launch", "backend", "modules_forge", "webui", "clipcap_webui"}
MODEL_MODULES = {"torch", "open_clip", "transformers", "safetensors", "tokenizers"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_library_imports_no_host_module():
    offenders = {str(p.relative_to(ROOT)): sorted(imported_roots(p) & HOST_MODULES)
                 for p in (ROOT / "lib_clipcap").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_host_scripts_hold_no_model_code():
    scripts = sorted((ROOT / "scripts").glob("*.py"))
    if not scripts:
        pytest.skip("no scripts/ in this build")
    for p in scripts:
        assert not imported_roots(p) & MODEL_MODULES, f"{p.name} imports model libraries; move that into lib_clipcap"
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                assert not any("Module" in b for b in bases), f"{p.name}: {node.name} looks like model code"
