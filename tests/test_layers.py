"""The two layers stay apart: the library never imports the WebUI; the host glue holds no model code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from _pyast import parse_file

ROOT = Path(__file__).resolve().parents[1]
HOST_MODULES = {"modules", "launch", "backend", "modules_forge", "webui", "clipcap_webui"}
MODEL_MODULES = {"torch", "open_clip", "transformers", "safetensors", "tokenizers"}


def imported_roots(path: Path) -> set[str]:
    tree = parse_file(path)
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
        tree = parse_file(p)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                assert not any("Module" in b for b in bases), f"{p.name}: {node.name} looks like model code"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body (function-local imports count: they are how
    a cycle hides), except under ``if TYPE_CHECKING:``."""
    files = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = parse_file(path)
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = pkg
                for _ in range(max(node.level - 1, 0)):
                    base = base.rpartition(".")[0]
                base = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                if t in files and t != mod and not mod.startswith(t + ".") and not t.startswith(mod + "."):
                    graph[mod].add(t)
    return graph


@pytest.mark.parametrize("package", ["lib_clipcap", "clipcap_webui"])
def test_no_import_cycles(package):
    """A function-local import that dodges a cycle hides a design problem: the shared piece belongs a layer down."""
    graph = _import_graph(package)

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reach = {m: reachable(m) for m in graph}
    cycles = sorted({tuple(sorted(m for m in reach[a] if a in reach[m])) for a in graph if a in reach[a]})
    assert cycles == []


def _runtime_imports(path: Path, *, skip_main: bool = False) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved), ``TYPE_CHECKING`` blocks skipped
    (and ``if __name__ == "__main__":`` blocks with ``skip_main``)."""
    mod = _module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    tree = parse_file(path)
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and ("TYPE_CHECKING" in ast.unparse(node.test) or skip_main and "__main__" in ast.unparse(node.test))
            for n in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = pkg
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            base = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def test_model_core_never_imports_the_app_layer():
    """The app layer (lib_clipcap.app: cli, api, ui, server, service, security) sits on the core and the feature
    packages, never under them: what the subcommands share is lib_clipcap.cli_common, one level down. Only what
    starts the program (``__main__``, ``if __name__ == "__main__":`` blocks) may reach up into it."""
    offenders = {}
    for p in (ROOT / "lib_clipcap").rglob("*.py"):
        mod = _module_name(p)
        if mod.startswith("lib_clipcap.app") or p.stem == "__main__":
            continue
        bad = sorted(m for m in _runtime_imports(p, skip_main=True)
                     if m == "lib_clipcap.app" or m.startswith("lib_clipcap.app."))
        if bad:
            offenders[mod] = bad
    assert offenders == {}


def test_installed_code_never_needs_test_only_code():
    """devtools/ (reference loops, the local Ray cluster) and tools/ are not installed: nothing shipped imports them."""
    offenders = {}
    for package in ("lib_clipcap", "clipcap_webui", "scripts"):
        for p in (ROOT / package).rglob("*.py"):
            bad = sorted(m for m in _runtime_imports(p) if m.split(".")[0] in ("devtools", "tools", "tests"))
            if bad:
                offenders[str(p.relative_to(ROOT))] = bad
    assert offenders == {}


def _feature_packages() -> set[str]:
    return {p.parent.name for p in (ROOT / "lib_clipcap").glob("*/__init__.py") if p.parent.name != "app"}


def _route_paths(path: Path) -> list[str]:
    """The paths of the routes ``path`` declares (``@router.post("/batch", ...)`` and the like)."""
    out = []
    for node in ast.walk(parse_file(path)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("get", "post", "put", "delete", "patch", "api_route")
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                and node.args[0].value.startswith("/")):
            out.append(node.args[0].value)
    return out


def test_the_app_layer_composes_feature_routes_it_does_not_own_them():
    """A route named after a feature package (``/batch...``, ``/review...``) lives in that package's ``routes``
    module, which ``api.create_router`` calls; the API module itself declares only the app's own routes."""
    features = _feature_packages()
    assert {"batch", "review"} <= features
    owned = {p: _route_paths(ROOT / "lib_clipcap" / p / "routes.py")
             for p in features if (ROOT / "lib_clipcap" / p / "routes.py").is_file()}
    assert set(owned) >= {"batch", "review"}
    for pkg, paths in owned.items():
        assert paths and all(r.strip("/").split("/")[0] == pkg for r in paths), (pkg, paths)
    in_app = [r for p in (ROOT / "lib_clipcap" / "app").glob("*.py") for r in _route_paths(p)
              if r.strip("/").split("/")[0] in features]
    assert in_app == []


def test_route_modules_keep_their_annotations_resolvable():
    """FastAPI 0.94 (A1111) resolves route annotations when a route is created: a module declaring routes must not
    turn them into strings with ``from __future__ import annotations``."""
    modules = [ROOT / "lib_clipcap" / "app" / "api.py", *sorted((ROOT / "lib_clipcap").glob("*/routes.py"))]
    offenders = []
    for p in modules:
        tree = parse_file(p)
        if any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
               and any(a.name == "annotations" for a in n.names) for n in tree.body):
            offenders.append(str(p.relative_to(ROOT)))
    assert offenders == []
