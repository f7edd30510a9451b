"""The import rules of the two worlds, read from the source (ast), so a new module is checked unlisted.

- ``inference/`` (the worker) never imports bpy;
- ``operators/``, ``panels/`` and the extension's ``__init__`` (Blender's Python) never import the
  worker's stack: torch, cv2, scipy, librosa, mediapipe, pocketsphinx;
- nothing in ``operators/`` imports ``panels/`` (panels only draw; preferences are read through
  ``operators/prefs.py``);
- no import circles among the extension's modules, counting imports inside functions (a late import
  only hides a circle, it does not remove one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER_ONLY = {"torch", "cv2", "scipy", "librosa", "mediapipe", "pocketsphinx"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = [ROOT / "__init__.py"]
    for pkg in ("inference", "operators", "panels"):
        files += sorted((ROOT / pkg).rglob("*.py"))
    return {_module_name(p): p for p in files}


def _imports(name: str, path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """(imported name, line) for every import in the file; relative imports resolved to full names,
    ``from pkg import mod`` counted as an import of the module ``pkg.mod`` when it is one."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            for a in node.names:
                sub = f"{target}.{a.name}" if target else a.name
                if sub in modules:
                    out.append((sub, node.lineno))
    return [(t, n) for t, n in out if t]


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int]]]:
    src = _sources()
    return {name: _imports(name, path, set(src)) for name, path in src.items()}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_rules_see_every_module(graph):
    # A reader that found nothing would pass every rule below.
    assert "inference.protocol" in graph and "operators.prefs" in graph and "panels.preferences" in graph
    assert any(t == "bpy" for t, _ in graph["operators.prefs"])
    assert any(t == "inference.protocol" for t, _ in graph["operators.worker_client"])  # relative, resolved


def test_worker_never_imports_bpy(graph):
    bad = [
        f"{m}:{n} imports {t}"
        for m, deps in graph.items()
        if m.startswith("inference")
        for t, n in deps
        if _top(t) in {"bpy", "bmesh", "mathutils", "bpy_extras"}
    ]
    assert not bad, bad


def test_blender_side_never_imports_the_worker_stack(graph):
    bad = [
        f"{m}:{n} imports {t}"
        for m, deps in graph.items()
        if not m.startswith("inference")
        for t, n in deps
        if _top(t) in WORKER_ONLY
    ]
    assert not bad, bad


def test_operators_never_import_panels(graph):
    bad = [
        f"{m}:{n} imports {t}"
        for m, deps in graph.items()
        if m.startswith("operators")
        for t, n in deps
        if t == "panels" or t.startswith("panels.")
    ]
    assert not bad, bad


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles(graph):
    # ``from . import mod`` also names the package itself, whose __init__ imports its modules to
    # register them: an edge to one's own ancestor package is not a circle.
    edges = {
        m: {t for t, _ in deps if t in graph and t != m and not m.startswith(t + ".")} for m, deps in graph.items()
    }
    assert not _cycles(edges)
